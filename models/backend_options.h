#pragma once
namespace tether {
struct BackendOptions {
  int threads = 0;     // CPU threads (0 = every core)
  bool tf32 = false;   // CUDA: allow TF32 tensor-core math (off: exact fp32)
};
}  // namespace tether
