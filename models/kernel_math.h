// Element-level math written once for the host and the device. The CPU
// backend calls these in its loops; CUDA kernels call them per thread; tests
// check them on the CPU. Nothing here allocates or branches on the backend.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define TETHER_HD __host__ __device__ __forceinline__
#else
#define TETHER_HD inline
#endif

namespace tether::kmath {

// SplitMix64 finaliser: a counter-based hash, identical on host and device.
TETHER_HD uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform float in [0, 1) from (seed, index), 24 random bits.
TETHER_HD float uniform01(uint64_t seed, uint64_t index) {
  return float(mix64(seed ^ mix64(index)) >> 40) * (1.0f / 16777216.0f);
}

// Inverted-dropout mask value for element i.
TETHER_HD float dropout_mask(uint64_t seed, uint64_t i, float p) {
  return uniform01(seed, i) < p ? 0.0f : 1.0f / (1.0f - p);
}

// CountSketch bucket and sign of coordinate i.
TETHER_HD uint32_t sketch_bucket(uint64_t seed, uint64_t i, uint32_t buckets) {
  return uint32_t(mix64(seed ^ mix64(2 * i)) % buckets);
}
TETHER_HD float sketch_sign(uint64_t seed, uint64_t i) {
  return (mix64(seed ^ mix64(2 * i + 1)) & 1u) ? 1.0f : -1.0f;
}

// One SGD element (PyTorch's torch.optim.SGD, dampening 0).
TETHER_HD void sgd_element(float lr, float momentum, float weight_decay,
                           bool nesterov, float g, float& m, float& w) {
  g += weight_decay * w;
  float step = g;
  if (momentum != 0.0f) {
    m = momentum * m + g;
    step = nesterov ? g + momentum * m : m;
  }
  w -= lr * step;
}

TETHER_HD float normalize_byte(uint8_t b, float mean, float inv_std) {
  return (float(b) * (1.0f / 255.0f) - mean) * inv_std;
}

}  // namespace tether::kmath
