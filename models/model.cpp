#include "models/model.h"

#include <cmath>
#include <stdexcept>

#include "models/kernel_math.h"

namespace tether {

Model::Model(std::string name, std::unique_ptr<Sequential> net, Shape input, int classes)
    : name_(std::move(name)), net_(std::move(net)), input_(input), classes_(classes) {
  ParamRegistry reg;
  Shape out = net_->setup(input_, reg);
  if (out.count() != size_t(classes_)) {
    throw std::invalid_argument("model " + name_ + ": network ends in " + out.str() + ", expected " +
                                std::to_string(classes_) + " logits");
  }
  specs_ = reg.specs();
  arena_ = std::make_unique<ParamArena>(specs_);
}

std::vector<float> init_params(const std::vector<ParamSpec>& specs, const ParamArena& arena, uint64_t seed) {
  std::vector<float> host(arena.total_count(), 0.0f);
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamView& v = arena.views()[i];
    const ParamSpec& sp = specs[i];
    uint64_t stream = kmath::mix64(seed ^ kmath::mix64(i + 1));
    for (size_t j = 0; j < v.count; ++j) {
      float& x = host[v.offset + j];
      switch (sp.init) {
        case Init::kZero: x = 0.0f; break;
        case Init::kOne: x = 1.0f; break;
        case Init::kUniformFanIn: {
          // kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
          float bound = 1.0f / std::sqrt(float(sp.fan_in));
          x = (2.0f * kmath::uniform01(stream, j) - 1.0f) * bound;
          break;
        }
      }
    }
  }
  return host;
}

void Model::build(Backend* be, int max_batch, uint64_t init_seed) {
  if (max_batch <= 0) throw std::invalid_argument("model " + name_ + ": batch size must be > 0");
  be_ = be;
  max_batch_ = max_batch;
  params_ = DeviceBuffer<float>(be, arena_->total_count());
  grads_ = DeviceBuffer<float>(be, arena_->trainable_count());
  dlogits_ = DeviceBuffer<float>(be, size_t(max_batch) * classes_);
  arena_->set_base(params_.get(), grads_.get());
  net_->bind(*arena_);
  net_->allocate(be, max_batch);
  upload_params(init_params(specs_, *arena_, init_seed));
}

void Model::forward_backward(const float* x, const int32_t* labels, int n, uint64_t dropout_seed, float* stats) {
  if (n <= 0 || n > max_batch_) {
    throw std::invalid_argument("model " + name_ + ": batch of " + std::to_string(n) + " outside 1.." +
                                std::to_string(max_batch_));
  }
  RunContext ctx{be_, true, dropout_seed};
  const float* logits = net_->forward(ctx, x, n);
  be_->softmax_xent(n, classes_, logits, labels, dlogits_.get(), stats);
  net_->backward(ctx, dlogits_.get(), n, false);
}

void Model::evaluate(const float* x, const int32_t* labels, int n, float* stats) {
  if (n <= 0 || n > max_batch_) {
    throw std::invalid_argument("model " + name_ + ": batch of " + std::to_string(n) + " outside 1.." +
                                std::to_string(max_batch_));
  }
  RunContext ctx{be_, false, 0};
  const float* logits = net_->forward(ctx, x, n);
  be_->softmax_xent(n, classes_, logits, labels, nullptr, stats);
}

std::vector<float> Model::download_params() const {
  std::vector<float> host(param_count());
  be_->download(host.data(), params_.get(), host.size() * sizeof(float));
  return host;
}

void Model::upload_params(const std::vector<float>& host) {
  if (host.size() != param_count()) {
    throw std::invalid_argument("model " + name_ + ": " + std::to_string(host.size()) +
                                " parameters given, the arena holds " + std::to_string(param_count()));
  }
  be_->upload(params_.get(), host.data(), host.size() * sizeof(float));
}

std::string Model::summary() const {
  return name_ + ": " + std::to_string(trainable_count()) + " trainable parameters, " +
         std::to_string(param_count() - trainable_count()) + " averaged buffers; " + net_->describe();
}

}  // namespace tether
