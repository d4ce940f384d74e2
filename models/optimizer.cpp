#include "models/optimizer.h"

#include <cmath>
#include <numbers>

namespace tether {

double LrSchedule::at(uint64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) {
    return base_lr * double(step + 1) / double(warmup_steps);
  }
  uint64_t t = step - warmup_steps;
  if (kind == "cosine") {
    uint64_t span = total_steps > warmup_steps ? total_steps - warmup_steps : 1;
    double frac = std::min(1.0, double(t) / double(span));
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(std::numbers::pi * frac));
  }
  if (kind == "step" && step_every > 0) {
    return base_lr * std::pow(gamma, double(t / step_every));
  }
  return base_lr;
}

Sgd::Sgd(Backend* be, size_t trainable_count, SgdOptions opts)
    : be_(be), opts_(opts), m_(be, trainable_count) {}

void Sgd::step(float lr, const float* grads, float* params) {
  be_->sgd_step(m_.size(), lr, opts_.momentum, opts_.weight_decay, opts_.nesterov, grads, m_.get(), params);
}

}  // namespace tether
