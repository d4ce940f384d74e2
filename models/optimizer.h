// SGD with momentum, Nesterov and weight decay over the trainable prefix of
// the flat arena, and the learning-rate schedule (warm-up, then constant,
// cosine or step decay).
#pragma once

#include <cstdint>
#include <string>

#include "models/backend.h"

namespace tether {

struct SgdOptions {
  float lr = 0.05f;
  float momentum = 0.9f;
  float weight_decay = 0.0f;
  bool nesterov = false;
};

struct LrSchedule {
  std::string kind = "constant";   // "constant" | "cosine" | "step"
  double base_lr = 0.05;
  uint64_t warmup_steps = 0;       // linear ramp: steps 0..warmup_steps-1 get (step+1)/warmup_steps
                                   // of the scheduled rate
  uint64_t total_steps = 1;        // cosine: decays to min_lr at total_steps
  double min_lr = 0.0;
  uint64_t step_every = 0;         // step: × gamma at every multiple of step_every, counted
                                   // from step 0 (not from the end of warm-up)
  double gamma = 0.1;
  // Learning rate for 0-based global step `step`.
  double at(uint64_t step) const;
};

class Sgd {
 public:
  Sgd(Backend* be, size_t trainable_count, SgdOptions opts);
  // params[0, n) -= lr * update(grads) ; momentum state kept here.
  void step(float lr, const float* grads, float* params);
  float* momentum_buffer() const { return m_.get(); }   // backend memory
  size_t count() const { return m_.size(); }
  const SgdOptions& options() const { return opts_; }

 private:
  Backend* be_;
  SgdOptions opts_;
  DeviceBuffer<float> m_;
};

}  // namespace tether
