// A model: a layer graph over one flat parameter arena, with softmax
// cross-entropy on top. The arena (trainable parameters first, then
// non-trainable averaged buffers) is what the optimizer steps and what the
// network layer sends as is.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/backend.h"
#include "models/layers.h"

namespace tether {

class Model {
 public:
  Model(std::string name, std::unique_ptr<Sequential> net, Shape input, int classes);

  // Lays out the arena, allocates parameters, gradients and activations on
  // `be` for batches up to max_batch, and initialises parameters from
  // init_seed (PyTorch's default scheme) on the host, then uploads them.
  void build(Backend* be, int max_batch, uint64_t init_seed);

  const std::string& name() const { return name_; }
  Shape input_shape() const { return input_; }
  int classes() const { return classes_; }
  int max_batch() const { return max_batch_; }
  size_t param_count() const { return arena_->total_count(); }       // whole arena
  size_t trainable_count() const { return arena_->trainable_count(); }
  const std::vector<ParamView>& views() const { return arena_->views(); }
  float* params() const { return params_.get(); }   // backend memory, param_count()
  float* grads() const { return grads_.get(); }     // backend memory, trainable_count()
  Backend* backend() const { return be_; }

  // Training: forward, softmax cross-entropy, backward into grads().
  // x (n, C, H, W) and labels (n) in backend memory; stats[0] += Σ loss,
  // stats[1] += correct.
  void forward_backward(const float* x, const int32_t* labels, int n,
                        uint64_t dropout_seed, float* stats);
  // Evaluation mode forward (batch-norm running statistics, no dropout).
  void evaluate(const float* x, const int32_t* labels, int n, float* stats);

  // Host copy of the parameter arena (for checkpoints and tests).
  std::vector<float> download_params() const;
  void upload_params(const std::vector<float>& host);
  std::string summary() const;

 private:
  std::string name_;
  std::unique_ptr<Sequential> net_;
  Shape input_;
  int classes_;
  int max_batch_ = 0;
  Backend* be_ = nullptr;
  std::vector<ParamSpec> specs_;
  std::unique_ptr<ParamArena> arena_;
  DeviceBuffer<float> params_, grads_, dlogits_;
};

// Host-side parameter initialisation (deterministic in seed, portable).
std::vector<float> init_params(const std::vector<ParamSpec>& specs,
                               const ParamArena& arena, uint64_t seed);

}  // namespace tether
