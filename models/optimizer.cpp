#include "models/optimizer.h"

#include <cmath>
#include <numbers>

namespace tether {

double LrSchedule::at(uint64_t step) const {
  // Step decay counts from step 0, so with step_every = one epoch the rate
  // drops at epoch boundaries whatever the warm-up; warm-up only ramps (it
  // scales the scheduled rate and does not shift the decay points).
  double lr = base_lr;
  if (kind == "cosine") {
    // Cosine spans [warmup_steps, total_steps]: it starts from base_lr where
    // the warm-up ends.
    uint64_t t = step > warmup_steps ? step - warmup_steps : 0;
    uint64_t span = total_steps > warmup_steps ? total_steps - warmup_steps : 1;
    double frac = std::min(1.0, double(t) / double(span));
    lr = min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(std::numbers::pi * frac));
  } else if (kind == "step" && step_every > 0) {
    lr = base_lr * std::pow(gamma, double(step / step_every));
  }
  if (warmup_steps > 0 && step < warmup_steps) lr *= double(step + 1) / double(warmup_steps);
  return lr;
}

Sgd::Sgd(Backend* be, size_t trainable_count, SgdOptions opts)
    : be_(be), opts_(opts), m_(be, trainable_count) {}

void Sgd::step(float lr, const float* grads, float* params) {
  be_->sgd_step(m_.size(), lr, opts_.momentum, opts_.weight_decay, opts_.nesterov, grads, m_.get(), params);
}

}  // namespace tether
