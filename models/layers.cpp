#include "models/layers.h"

#include <cmath>
#include <stdexcept>

namespace tether {

std::string Shape::str() const {
  return "(" + std::to_string(c) + "," + std::to_string(h) + "," + std::to_string(w) + ")";
}

int ParamRegistry::add(ParamSpec spec) {
  spec.name = prefix + spec.name;
  specs_.push_back(std::move(spec));
  return int(specs_.size()) - 1;
}

ParamArena::ParamArena(const std::vector<ParamSpec>& specs) {
  views_.resize(specs.size());
  // Two passes: trainable first so the optimizer and gradients cover one
  // prefix [0, trainable_count) of the arena.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].trainable != (pass == 0)) continue;
      views_[i] = ParamView{specs[i].name, total_, specs[i].count, specs[i].trainable};
      total_ += specs[i].count;
    }
    if (pass == 0) trainable_ = total_;
  }
}

float* ParamArena::grad(int id) const {
  const ParamView& v = views_[size_t(id)];
  if (!v.trainable) throw std::logic_error("parameter " + v.name + " is not trainable: it has no gradient");
  return grads_ + v.offset;
}

namespace {

// Output and input-gradient buffers every layer keeps.
struct Buffers {
  DeviceBuffer<float> y, dx;
  void allocate(Backend* be, size_t out_count, size_t in_count) {
    y = DeviceBuffer<float>(be, out_count);
    dx = DeviceBuffer<float>(be, in_count);
  }
};

class Linear : public Layer {
 public:
  Linear(int out, bool bias) : out_(out), bias_(bias) {}
  std::string kind() const override { return "linear"; }
  Shape setup(Shape in, ParamRegistry& reg) override {
    in_ = int(in.count());
    w_id_ = reg.add({"weight", size_t(out_) * in_, true, Init::kUniformFanIn, in_});
    if (bias_) b_id_ = reg.add({"bias", size_t(out_), true, Init::kUniformFanIn, in_});
    return Shape{out_, 1, 1};
  }
  void bind(const ParamArena& a) override {
    w_ = a.param(w_id_); dw_ = a.grad(w_id_);
    if (bias_) { b_ = a.param(b_id_); db_ = a.grad(b_id_); }
  }
  void allocate(Backend* be, int max_batch) override {
    buf_.allocate(be, size_t(max_batch) * out_, size_t(max_batch) * in_);
  }
  const float* forward(RunContext& ctx, const float* x, int n) override {
    x_ = x;
    ctx.be->linear_forward(n, in_, out_, x, w_, b_, buf_.y.get());
    return buf_.y.get();
  }
  const float* backward(RunContext& ctx, const float* dy, int n, bool need_dx) override {
    float* dx = need_dx ? buf_.dx.get() : nullptr;
    ctx.be->linear_backward(n, in_, out_, x_, w_, dy, dx, dw_, db_);
    return dx;
  }
  std::string describe() const override {
    return "linear " + std::to_string(in_) + "->" + std::to_string(out_);
  }

 private:
  int in_ = 0, out_;
  bool bias_;
  int w_id_ = -1, b_id_ = -1;
  float *w_ = nullptr, *b_ = nullptr, *dw_ = nullptr, *db_ = nullptr;
  const float* x_ = nullptr;
  Buffers buf_;
};

class Conv2d : public Layer {
 public:
  Conv2d(int k, int kernel, int stride, int pad, bool bias)
      : bias_(bias) {
    sh_.k = k; sh_.r = kernel; sh_.s = kernel; sh_.stride = stride; sh_.pad = pad;
  }
  std::string kind() const override { return "conv2d"; }
  Shape setup(Shape in, ParamRegistry& reg) override {
    sh_.c = in.c; sh_.h = in.h; sh_.w = in.w; sh_.n = 1;
    if (sh_.oh() <= 0 || sh_.ow() <= 0) {
      throw std::invalid_argument("conv2d: kernel " + std::to_string(sh_.r) + " does not fit input " + in.str());
    }
    int fan_in = sh_.c * sh_.r * sh_.s;
    w_id_ = reg.add({"weight", sh_.weight_count(), true, Init::kUniformFanIn, fan_in});
    if (bias_) b_id_ = reg.add({"bias", size_t(sh_.k), true, Init::kUniformFanIn, fan_in});
    return Shape{sh_.k, sh_.oh(), sh_.ow()};
  }
  void bind(const ParamArena& a) override {
    w_ = a.param(w_id_); dw_ = a.grad(w_id_);
    if (bias_) { b_ = a.param(b_id_); db_ = a.grad(b_id_); }
  }
  void allocate(Backend* be, int max_batch) override {
    ConvShape s = sh_;
    s.n = max_batch;
    buf_.allocate(be, s.out_count(), s.in_count());
  }
  const float* forward(RunContext& ctx, const float* x, int n) override {
    x_ = x;
    ConvShape s = sh_;
    s.n = n;
    ctx.be->conv2d_forward(s, x, w_, b_, buf_.y.get());
    return buf_.y.get();
  }
  const float* backward(RunContext& ctx, const float* dy, int n, bool need_dx) override {
    ConvShape s = sh_;
    s.n = n;
    float* dx = need_dx ? buf_.dx.get() : nullptr;
    ctx.be->conv2d_backward(s, x_, w_, dy, dx, dw_, db_);
    return dx;
  }
  std::string describe() const override {
    return "conv2d " + std::to_string(sh_.c) + "->" + std::to_string(sh_.k) + " k" +
           std::to_string(sh_.r) + " s" + std::to_string(sh_.stride) + " p" + std::to_string(sh_.pad);
  }

 private:
  ConvShape sh_;
  bool bias_;
  int w_id_ = -1, b_id_ = -1;
  float *w_ = nullptr, *b_ = nullptr, *dw_ = nullptr, *db_ = nullptr;
  const float* x_ = nullptr;
  Buffers buf_;
};

class Relu : public Layer {
 public:
  std::string kind() const override { return "relu"; }
  Shape setup(Shape in, ParamRegistry&) override { per_ = in.count(); return in; }
  void allocate(Backend* be, int max_batch) override {
    buf_.allocate(be, per_ * max_batch, per_ * max_batch);
  }
  const float* forward(RunContext& ctx, const float* x, int n) override {
    ctx.be->relu_forward(per_ * n, x, buf_.y.get());
    return buf_.y.get();
  }
  const float* backward(RunContext& ctx, const float* dy, int n, bool need_dx) override {
    if (!need_dx) return nullptr;
    ctx.be->relu_backward(per_ * n, buf_.y.get(), dy, buf_.dx.get());
    return buf_.dx.get();
  }

 private:
  size_t per_ = 0;
  Buffers buf_;
};

class Pool : public Layer {
 public:
  Pool(PoolKind kind, int kernel, int stride, int pad, bool global)
      : kind_(kind), global_(global) {
    sh_.kernel = kernel; sh_.stride = stride; sh_.pad = pad;
  }
  std::string kind() const override {
    if (global_) return "global_avg_pool";
    return kind_ == PoolKind::kMax ? "max_pool" : "avg_pool";
  }
  Shape setup(Shape in, ParamRegistry&) override {
    sh_.c = in.c; sh_.h = in.h; sh_.w = in.w; sh_.n = 1;
    if (global_) {
      if (in.h != in.w) throw std::invalid_argument("global_avg_pool: needs a square input, got " + in.str());
      sh_.kernel = in.h; sh_.stride = in.h; sh_.pad = 0;
    }
    if (sh_.oh() <= 0 || 2 * sh_.pad > sh_.kernel) {
      throw std::invalid_argument(kind() + ": window " + std::to_string(sh_.kernel) + " does not fit input " + in.str());
    }
    return Shape{sh_.c, sh_.oh(), sh_.ow()};
  }
  void allocate(Backend* be, int max_batch) override {
    PoolShape s = sh_;
    s.n = max_batch;
    buf_.allocate(be, s.out_count(), s.in_count());
    if (kind_ == PoolKind::kMax) argmax_ = DeviceBuffer<int32_t>(be, s.out_count());
  }
  const float* forward(RunContext& ctx, const float* x, int n) override {
    PoolShape s = sh_;
    s.n = n;
    ctx.be->pool_forward(kind_, s, x, buf_.y.get(), argmax_.get());
    return buf_.y.get();
  }
  const float* backward(RunContext& ctx, const float* dy, int n, bool need_dx) override {
    if (!need_dx) return nullptr;
    PoolShape s = sh_;
    s.n = n;
    ctx.be->pool_backward(kind_, s, dy, argmax_.get(), buf_.dx.get());
    return buf_.dx.get();
  }
  std::string describe() const override {
    return kind() + " k" + std::to_string(sh_.kernel) + " s" + std::to_string(sh_.stride);
  }

 private:
  PoolKind kind_;
  bool global_;
  PoolShape sh_;
  Buffers buf_;
  DeviceBuffer<int32_t> argmax_;
};

class BatchNorm : public Layer {
 public:
  BatchNorm(float momentum, float eps) : momentum_(momentum), eps_(eps) {}
  std::string kind() const override { return "batch_norm"; }
  Shape setup(Shape in, ParamRegistry& reg) override {
    sh_.c = in.c; sh_.hw = in.h * in.w;
    size_t c = size_t(in.c);
    gamma_id_ = reg.add({"weight", c, true, Init::kOne, 1});
    beta_id_ = reg.add({"bias", c, true, Init::kZero, 1});
    mean_id_ = reg.add({"running_mean", c, false, Init::kZero, 1});
    var_id_ = reg.add({"running_var", c, false, Init::kOne, 1});
    return in;
  }
  void bind(const ParamArena& a) override {
    gamma_ = a.param(gamma_id_); dgamma_ = a.grad(gamma_id_);
    beta_ = a.param(beta_id_); dbeta_ = a.grad(beta_id_);
    mean_ = a.param(mean_id_); var_ = a.param(var_id_);
  }
  void allocate(Backend* be, int max_batch) override {
    BatchNormShape s = sh_;
    s.n = max_batch;
    buf_.allocate(be, s.count(), s.count());
    save_mean_ = DeviceBuffer<float>(be, size_t(sh_.c));
    save_invstd_ = DeviceBuffer<float>(be, size_t(sh_.c));
  }
  const float* forward(RunContext& ctx, const float* x, int n) override {
    x_ = x;
    BatchNormShape s = sh_;
    s.n = n;
    if (ctx.training) {
      ctx.be->batchnorm_forward_train(s, x, gamma_, beta_, momentum_, eps_, mean_, var_,
                                      save_mean_.get(), save_invstd_.get(), buf_.y.get());
    } else {
      ctx.be->batchnorm_forward_eval(s, x, gamma_, beta_, mean_, var_, eps_, buf_.y.get());
    }
    return buf_.y.get();
  }
  const float* backward(RunContext& ctx, const float* dy, int n, bool) override {
    BatchNormShape s = sh_;
    s.n = n;
    ctx.be->batchnorm_backward(s, x_, gamma_, dy, save_mean_.get(), save_invstd_.get(),
                               buf_.dx.get(), dgamma_, dbeta_);
    return buf_.dx.get();
  }
  std::string describe() const override { return "batch_norm " + std::to_string(sh_.c); }

 private:
  float momentum_, eps_;
  BatchNormShape sh_;
  int gamma_id_ = -1, beta_id_ = -1, mean_id_ = -1, var_id_ = -1;
  float *gamma_ = nullptr, *beta_ = nullptr, *dgamma_ = nullptr, *dbeta_ = nullptr;
  float *mean_ = nullptr, *var_ = nullptr;
  const float* x_ = nullptr;
  Buffers buf_;
  DeviceBuffer<float> save_mean_, save_invstd_;
};

// NCHW is already row-major per sample: flattening moves no data.
class Flatten : public Layer {
 public:
  std::string kind() const override { return "flatten"; }
  Shape setup(Shape in, ParamRegistry&) override { return Shape{int(in.count()), 1, 1}; }
  void allocate(Backend*, int) override {}
  const float* forward(RunContext&, const float* x, int) override { return x; }
  const float* backward(RunContext&, const float* dy, int, bool need_dx) override {
    return need_dx ? dy : nullptr;
  }
};

class Dropout : public Layer {
 public:
  explicit Dropout(float p) : p_(p) {
    if (!(p >= 0.0f && p < 1.0f)) throw std::invalid_argument("dropout: p must be in [0, 1), got " + std::to_string(p));
  }
  std::string kind() const override { return "dropout"; }
  Shape setup(Shape in, ParamRegistry& reg) override {
    per_ = in.count();
    // A per-layer salt from the layer's name path keeps masks independent.
    salt_ = 0xcbf29ce484222325ull;
    for (char ch : reg.prefix) salt_ = (salt_ ^ uint8_t(ch)) * 0x100000001b3ull;
    return in;
  }
  void allocate(Backend* be, int max_batch) override {
    buf_.allocate(be, per_ * max_batch, per_ * max_batch);
    mask_ = DeviceBuffer<float>(be, per_ * max_batch);
  }
  const float* forward(RunContext& ctx, const float* x, int n) override {
    active_ = ctx.training && p_ > 0.0f;
    if (!active_) return x;
    seed_ = ctx.dropout_seed ^ salt_;
    ctx.be->dropout_forward(per_ * n, p_, seed_, x, mask_.get(), buf_.y.get());
    return buf_.y.get();
  }
  const float* backward(RunContext& ctx, const float* dy, int n, bool need_dx) override {
    if (!need_dx) return nullptr;
    if (!active_) return dy;
    // The mask is a pure function of (seed, i): drawing it again with the
    // forward's seed and applying it to dy gives dx = dy * mask exactly.
    ctx.be->dropout_forward(per_ * n, p_, seed_, dy, mask_.get(), buf_.dx.get());
    return buf_.dx.get();
  }
  std::string describe() const override { return "dropout p=" + std::to_string(p_); }

 private:
  float p_;
  size_t per_ = 0;
  bool active_ = false;
  uint64_t salt_ = 0, seed_ = 0;
  Buffers buf_;
  DeviceBuffer<float> mask_;
};

class Residual : public Layer {
 public:
  Residual(std::unique_ptr<Sequential> body, std::unique_ptr<Sequential> shortcut)
      : body_(std::move(body)), shortcut_(std::move(shortcut)) {}
  std::string kind() const override { return "residual"; }
  Shape setup(Shape in, ParamRegistry& reg) override {
    std::string base = reg.prefix;
    reg.prefix = base + "body.";
    Shape a = body_->setup(in, reg);
    reg.prefix = base + "shortcut.";
    Shape b = shortcut_->empty() ? in : shortcut_->setup(in, reg);
    reg.prefix = base;
    if (a.c != b.c || a.h != b.h || a.w != b.w) {
      throw std::invalid_argument("residual: body output " + a.str() + " differs from shortcut output " + b.str());
    }
    in_ = in.count();
    out_ = a.count();
    return a;
  }
  void bind(const ParamArena& a) override { body_->bind(a); shortcut_->bind(a); }
  void allocate(Backend* be, int max_batch) override {
    body_->allocate(be, max_batch);
    shortcut_->allocate(be, max_batch);
    buf_.allocate(be, out_ * max_batch, in_ * max_batch);
  }
  const float* forward(RunContext& ctx, const float* x, int n) override {
    const float* a = body_->forward(ctx, x, n);
    const float* b = shortcut_->empty() ? x : shortcut_->forward(ctx, x, n);
    ctx.be->add(out_ * n, a, b, buf_.y.get());
    return buf_.y.get();
  }
  const float* backward(RunContext& ctx, const float* dy, int n, bool need_dx) override {
    const float* da = body_->backward(ctx, dy, n, need_dx);
    const float* db = shortcut_->empty() ? (need_dx ? dy : nullptr) : shortcut_->backward(ctx, dy, n, need_dx);
    if (!need_dx) return nullptr;
    ctx.be->add(in_ * n, da, db, buf_.dx.get());
    return buf_.dx.get();
  }
  std::string describe() const override {
    return "residual [" + body_->describe() + "] + [" + (shortcut_->empty() ? std::string("identity") : shortcut_->describe()) + "]";
  }

 private:
  std::unique_ptr<Sequential> body_, shortcut_;
  size_t in_ = 0, out_ = 0;
  Buffers buf_;
};

}  // namespace

Sequential& Sequential::add(std::unique_ptr<Layer> layer) {
  layers_.push_back(std::move(layer));
  return *this;
}

Shape Sequential::setup(Shape in, ParamRegistry& reg) {
  std::string base = reg.prefix;
  for (size_t i = 0; i < layers_.size(); ++i) {
    reg.prefix = base + std::to_string(i) + ".";
    in = layers_[i]->setup(in, reg);
  }
  reg.prefix = base;
  return in;
}

void Sequential::bind(const ParamArena& arena) {
  for (auto& l : layers_) l->bind(arena);
}

void Sequential::allocate(Backend* be, int max_batch) {
  for (auto& l : layers_) l->allocate(be, max_batch);
}

const float* Sequential::forward(RunContext& ctx, const float* x, int n) {
  for (auto& l : layers_) x = l->forward(ctx, x, n);
  return x;
}

const float* Sequential::backward(RunContext& ctx, const float* dy, int n, bool need_dx) {
  // Layers before the first one that has parameters or needs dx still need
  // their dx only when the caller wants it; inner layers always pass it on.
  for (size_t i = layers_.size(); i-- > 0;) {
    bool want = need_dx || i > 0;
    dy = layers_[i]->backward(ctx, dy, n, want);
  }
  return dy;
}

std::string Sequential::describe() const {
  std::string s;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (i > 0) s += ", ";
    s += layers_[i]->describe();
  }
  return s;
}

std::unique_ptr<Layer> make_linear(int out, bool bias) { return std::make_unique<Linear>(out, bias); }
std::unique_ptr<Layer> make_conv2d(int out, int kernel, int stride, int pad, bool bias) {
  return std::make_unique<Conv2d>(out, kernel, stride, pad, bias);
}
std::unique_ptr<Layer> make_relu() { return std::make_unique<Relu>(); }
std::unique_ptr<Layer> make_max_pool(int kernel, int stride, int pad) {
  return std::make_unique<Pool>(PoolKind::kMax, kernel, stride, pad, false);
}
std::unique_ptr<Layer> make_avg_pool(int kernel, int stride, int pad) {
  return std::make_unique<Pool>(PoolKind::kAvg, kernel, stride, pad, false);
}
std::unique_ptr<Layer> make_global_avg_pool() {
  return std::make_unique<Pool>(PoolKind::kAvg, 1, 1, 0, true);
}
std::unique_ptr<Layer> make_batch_norm(float momentum, float eps) {
  return std::make_unique<BatchNorm>(momentum, eps);
}
std::unique_ptr<Layer> make_flatten() { return std::make_unique<Flatten>(); }
std::unique_ptr<Layer> make_dropout(float p) { return std::make_unique<Dropout>(p); }
std::unique_ptr<Layer> make_residual(std::unique_ptr<Sequential> body, std::unique_ptr<Sequential> shortcut) {
  return std::make_unique<Residual>(std::move(body), std::move(shortcut));
}

}  // namespace tether
