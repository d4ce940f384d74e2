// Layers over the flat parameter arena.
//
// A layer declares its parameters while the model is built (ParamRegistry),
// then binds to its slices of one contiguous arena (ParamArena): trainable
// parameters first, then non-trainable averaged buffers such as batch-norm
// running statistics. Activations live in buffers the layer owns, sized for
// the largest batch. forward() remembers its input; backward() writes the
// parameter gradients into the gradient arena and returns d(input).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/backend.h"

namespace tether {

// Activation shape of one sample (C, H, W); a flat vector is (F, 1, 1).
struct Shape {
  int c = 0, h = 1, w = 1;
  size_t count() const { return size_t(c) * h * w; }
  std::string str() const;
};

enum class Init { kZero, kOne, kUniformFanIn };

struct ParamSpec {
  std::string name;     // "conv1.weight"
  size_t count = 0;
  bool trainable = true;
  Init init = Init::kZero;
  int fan_in = 1;       // for kUniformFanIn: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
};

// Collects parameter declarations; ids index into specs().
class ParamRegistry {
 public:
  int add(ParamSpec spec);
  const std::vector<ParamSpec>& specs() const { return specs_; }
  std::string prefix;   // prepended to names while a layer declares
 private:
  std::vector<ParamSpec> specs_;
};

// Where each declared parameter sits in the flat arena.
struct ParamView {
  std::string name;
  size_t offset = 0, count = 0;
  bool trainable = true;
};

class ParamArena {
 public:
  // Lays out trainable specs first (declaration order), then the rest.
  explicit ParamArena(const std::vector<ParamSpec>& specs);
  size_t total_count() const { return total_; }
  size_t trainable_count() const { return trainable_; }
  const std::vector<ParamView>& views() const { return views_; }
  // Base pointers (backend memory) set by Model once allocated.
  void set_base(float* params, float* grads) { params_ = params; grads_ = grads; }
  float* param(int id) const { return params_ + views_[size_t(id)].offset; }
  // Gradient slice of a trainable parameter (grads cover [0, trainable_count)).
  float* grad(int id) const;

 private:
  std::vector<ParamView> views_;
  size_t total_ = 0, trainable_ = 0;
  float* params_ = nullptr;
  float* grads_ = nullptr;
};

// Per-call state shared by all layers of a model.
struct RunContext {
  Backend* be = nullptr;
  bool training = true;
  uint64_t dropout_seed = 0;   // derived from (train seed, step) by the trainer
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string kind() const = 0;
  // Declares parameters and returns the output shape for input `in`.
  virtual Shape setup(Shape in, ParamRegistry& reg) = 0;
  virtual void bind(const ParamArena& arena) { (void)arena; }
  // Allocates activation buffers for batches of up to max_batch samples.
  virtual void allocate(Backend* be, int max_batch) = 0;
  // x: (n, in) in backend memory, alive until backward. Returns (n, out).
  virtual const float* forward(RunContext& ctx, const float* x, int n) = 0;
  // dy: (n, out). Writes parameter gradients; returns dx (n, in), or null
  // when need_dx is false.
  virtual const float* backward(RunContext& ctx, const float* dy, int n,
                                bool need_dx) = 0;
  // One line describing the layer: "conv2d 1->32 k5 s1 p2".
  virtual std::string describe() const { return kind(); }
};

// Layers run in order; itself a layer so blocks nest (residual bodies).
class Sequential : public Layer {
 public:
  Sequential& add(std::unique_ptr<Layer> layer);
  std::string kind() const override { return "sequential"; }
  Shape setup(Shape in, ParamRegistry& reg) override;
  void bind(const ParamArena& arena) override;
  void allocate(Backend* be, int max_batch) override;
  const float* forward(RunContext& ctx, const float* x, int n) override;
  const float* backward(RunContext& ctx, const float* dy, int n, bool need_dx) override;
  std::string describe() const override;
  size_t size() const { return layers_.size(); }
  bool empty() const { return layers_.empty(); }

 private:
  std::vector<std::unique_ptr<Layer>> layers_;
};

std::unique_ptr<Layer> make_linear(int out_features, bool bias = true);
std::unique_ptr<Layer> make_conv2d(int out_channels, int kernel, int stride,
                                   int pad, bool bias = true);
std::unique_ptr<Layer> make_relu();
std::unique_ptr<Layer> make_max_pool(int kernel, int stride, int pad = 0);
std::unique_ptr<Layer> make_avg_pool(int kernel, int stride, int pad = 0);
std::unique_ptr<Layer> make_global_avg_pool();
std::unique_ptr<Layer> make_batch_norm(float momentum = 0.1f, float eps = 1e-5f);
std::unique_ptr<Layer> make_flatten();
std::unique_ptr<Layer> make_dropout(float p);
// y = body(x) + shortcut(x); an empty shortcut is the identity.
std::unique_ptr<Layer> make_residual(std::unique_ptr<Sequential> body,
                                     std::unique_ptr<Sequential> shortcut);

}  // namespace tether
