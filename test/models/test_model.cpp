// Models over the flat arena: parameter counts against PyTorch's, layout,
// initialisation, whole-model gradients against finite differences of the
// loss (checks how layers compose: residual adds, flatten, batch-norm,
// dropout), SGD against a scalar reference, learning-rate schedules.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "cpu/cpu_backend.h"
#include "models/kernel_math.h"
#include "models/optimizer.h"
#include "models/zoo.h"

using namespace tether;

namespace {

std::unique_ptr<Backend> cpu() {
  BackendOptions o;
  o.threads = 1;
  return make_cpu_backend(o);
}

std::unique_ptr<Model> build(const std::string& name, Shape in, Backend* be, int batch, int depth = 1, int width = 4,
                             int hidden = 512, float dropout = 0.0f) {
  ModelSpec s;
  s.name = name;
  s.depth = depth;
  s.width = width;
  s.hidden = hidden;
  s.dropout = dropout;
  auto m = make_model(s, in, 10);
  m->build(be, batch, 11);
  return m;
}

// Mean loss of the model at its current parameters on (x, y).
double loss_of(Model& m, const float* x, const int32_t* y, int n, uint64_t dropout_seed, float* stats) {
  Backend* be = m.backend();
  be->fill(2, 0.0f, stats);
  // forward_backward is the training-mode forward (same batch-norm and
  // dropout behaviour as the gradient we check); it also writes grads, so
  // callers take the analytical gradient before probing.
  m.forward_backward(x, y, n, dropout_seed, stats);
  float s[2];
  be->download(s, stats, sizeof s);
  return double(s[0]) / n;
}

}  // namespace

TEST_CASE("zoo: parameter counts match ../shared/peers/models.py") {
  auto be = cpu();
  CHECK(build("lenet", {1, 28, 28}, be.get(), 2)->trainable_count() == 454922);
  CHECK(build("mlp", {1, 28, 28}, be.get(), 2)->trainable_count() == 669706);
  auto r = build("resnet", {1, 28, 28}, be.get(), 2, 3, 16);   // ResNet-20 on one channel
  // stem 144 + 3 stages of 3 blocks; 1x1 shortcuts entering stages 2, 3; BN
  // weight+bias trainable, running stats in the averaged tail.
  CHECK(r->trainable_count() > 260000);
  CHECK(r->trainable_count() < 280000);
  CHECK(r->param_count() - r->trainable_count() > 0);
}

TEST_CASE("zoo: resnet builds for 28x28 and 32x32 inputs; lenet for 3x32x32") {
  auto be = cpu();
  CHECK_NOTHROW(build("resnet", {1, 28, 28}, be.get(), 2, 1, 4));
  CHECK_NOTHROW(build("resnet", {3, 32, 32}, be.get(), 2, 2, 4));
  CHECK(build("lenet", {3, 32, 32}, be.get(), 2)->trainable_count() == 3 * 25 * 32 + 32 + 51264 + 64 * 8 * 8 * 128 + 128 + 1290);
  ModelSpec bad;
  bad.name = "vgg";
  CHECK_THROWS_WITH(make_model(bad, {1, 28, 28}, 10), doctest::Contains("unknown name \"vgg\""));
}

TEST_CASE("arena: trainable parameters first, then the averaged buffers, no gaps") {
  auto be = cpu();
  auto m = build("resnet", {1, 28, 28}, be.get(), 2, 1, 4);
  size_t expect = 0;
  bool seen_buffer = false;
  std::vector<ParamView> sorted = m->views();
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
  for (const auto& v : sorted) {
    CHECK(v.offset == expect);
    expect += v.count;
    if (!v.trainable) seen_buffer = true;
    CHECK(!(v.trainable && seen_buffer));
    if (v.trainable) CHECK(v.offset + v.count <= m->trainable_count());
  }
  CHECK(expect == m->param_count());
  // Batch-norm: weight 1, bias 0, running_mean 0, running_var 1.
  auto p = m->download_params();
  for (const auto& v : m->views()) {
    if (v.name.find("running_var") != std::string::npos) CHECK(p[v.offset] == 1.0f);
    if (v.name.find("running_mean") != std::string::npos) CHECK(p[v.offset] == 0.0f);
  }
}

TEST_CASE("init: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), deterministic in the seed") {
  auto be = cpu();
  auto a = build("lenet", {1, 28, 28}, be.get(), 2);
  auto b = build("lenet", {1, 28, 28}, be.get(), 2);
  CHECK(a->download_params() == b->download_params());
  auto p = a->download_params();
  for (const auto& v : a->views()) {
    int fan_in = v.name.rfind("0.", 0) == 0 ? 25 : v.name.rfind("3.", 0) == 0 ? 800 : v.name.rfind("7.", 0) == 0 ? 3136 : 128;
    double bound = 1.0 / std::sqrt(double(fan_in)), sum = 0, sq = 0, mx = 0;
    for (size_t i = 0; i < v.count; ++i) {
      double x = p[v.offset + i];
      sum += x;
      sq += x * x;
      mx = std::max(mx, std::fabs(x));
    }
    CAPTURE(v.name);
    CHECK(mx <= bound);
    if (v.count > 1000) {   // uniform: mean 0, variance bound²/3
      CHECK(std::fabs(sum / double(v.count)) < 0.05 * bound);
      CHECK(sq / double(v.count) == doctest::Approx(bound * bound / 3).epsilon(0.05));
    }
  }
}

TEST_CASE("model: whole-model gradient matches finite differences of the loss") {
  // Directional derivative along a random direction, central differences in
  // float32 with a step large enough to beat rounding: checks the
  // composition of every layer's backward (residual adds, flatten, BN).
  struct Case {
    std::string name;
    Shape in;
    float dropout;
  };
  for (const Case& c : {Case{"resnet", {1, 12, 12}, 0.0f}, Case{"lenet", {1, 12, 12}, 0.0f},
                        Case{"mlp", {1, 6, 6}, 0.3f}}) {
    CAPTURE(c.name);
    auto be = cpu();
    const int n = 4;
    auto m = build(c.name, c.in, be.get(), n, 1, 3, 24, c.dropout);
    std::vector<float> xh(size_t(n) * c.in.count());
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (auto& v : xh) v = g(rng);
    std::vector<int32_t> yh = {1, 7, 3, 3};
    DeviceBuffer<float> x(be.get(), xh.size()), stats(be.get(), 2);
    DeviceBuffer<int32_t> y(be.get(), 4);
    be->upload(x.get(), xh.data(), xh.size() * 4);
    be->upload(y.get(), yh.data(), 16);
    const uint64_t seed = 99;
    std::vector<float> p0 = m->download_params();
    loss_of(*m, x.get(), y.get(), n, seed, stats.get());
    std::vector<float> grad(m->trainable_count());
    be->download(grad.data(), m->grads(), grad.size() * 4);
    std::vector<float> dir(m->trainable_count());
    // Direction: the gradient plus as much noise (so the check is not only
    // along the gradient), unit length; the derivative is then large
    // enough to stand out of float32 rounding.
    double gn = 0;
    for (float v : grad) gn += double(v) * v;
    const double rms = std::sqrt(gn / double(grad.size()));
    double gd = 0, dn = 0;
    for (size_t i = 0; i < dir.size(); ++i) {
      dir[i] = float(grad[i] + rms * g(rng));
      dn += double(dir[i]) * dir[i];
    }
    for (size_t i = 0; i < dir.size(); ++i) {
      dir[i] = float(dir[i] / std::sqrt(dn));
      gd += double(dir[i]) * grad[i];
    }
    auto loss_at = [&](double t) {
      std::vector<float> p = p0;
      for (size_t i = 0; i < dir.size(); ++i) p[i] = float(double(p0[i]) + t * dir[i]);
      m->upload_params(p);
      double l = loss_of(*m, x.get(), y.get(), n, seed, stats.get());
      m->upload_params(p0);   // BN running statistics moved: restore
      return l;
    };
    const double h = 1e-2;
    double fd = (loss_at(h) - loss_at(-h)) / (2 * h);
    CAPTURE(gd);
    CAPTURE(fd);
    CHECK(std::fabs(fd - gd) <= 2e-2 * std::fabs(gd) + 1e-4);
  }
}

TEST_CASE("sgd: momentum, Nesterov and weight decay match PyTorch's update rule") {
  auto be = cpu();
  for (bool nesterov : {false, true}) {
    const size_t n = 1001;
    std::vector<float> w(n), gr(n);
    for (size_t i = 0; i < n; ++i) {
      w[i] = std::sin(float(i));
      gr[i] = std::cos(float(i) * 0.7f);
    }
    DeviceBuffer<float> wd(be.get(), n), gd(be.get(), n);
    be->upload(wd.get(), w.data(), n * 4);
    be->upload(gd.get(), gr.data(), n * 4);
    Sgd sgd(be.get(), n, {0.1f, 0.9f, 0.01f, nesterov});
    std::vector<double> wr(w.begin(), w.end()), mr(n, 0.0);
    for (int step = 0; step < 3; ++step) {
      sgd.step(0.1f, gd.get(), wd.get());
      for (size_t i = 0; i < n; ++i) {   // torch.optim.SGD, dampening 0
        double gi = gr[i] + 0.01 * wr[i];
        mr[i] = 0.9 * mr[i] + gi;
        wr[i] -= 0.1 * (nesterov ? gi + 0.9 * mr[i] : mr[i]);
      }
    }
    std::vector<float> out(n);
    be->download(out.data(), wd.get(), n * 4);
    for (size_t i = 0; i < n; i += 97) CHECK(out[i] == doctest::Approx(wr[i]).epsilon(1e-5));
  }
}

TEST_CASE("schedule: warm-up, cosine and step decay") {
  LrSchedule s;
  s.base_lr = 0.1;
  s.warmup_steps = 10;
  s.total_steps = 110;
  CHECK(s.at(0) == doctest::Approx(0.01));
  CHECK(s.at(9) == doctest::Approx(0.1));
  CHECK(s.at(50) == doctest::Approx(0.1));
  s.kind = "cosine";
  s.min_lr = 0.0;
  CHECK(s.at(10) == doctest::Approx(0.1));
  CHECK(s.at(60) == doctest::Approx(0.05));
  CHECK(s.at(110) == doctest::Approx(0.0));
  CHECK(s.at(500) == doctest::Approx(0.0));
  s.kind = "step";
  s.step_every = 20;
  s.gamma = 0.5;
  CHECK(s.at(19) == doctest::Approx(0.1));
  CHECK(s.at(20) == doctest::Approx(0.05));     // decays count from step 0, not from warm-up's end
  CHECK(s.at(29) == doctest::Approx(0.05));
  CHECK(s.at(75) == doctest::Approx(0.0125));   // 3 decays (60 <= 75 < 80)
}

// The README's promise: `step_epochs` 1 drops the rate at epoch boundaries,
// whatever the warm-up. Closed form with 100 steps per epoch, warm-up half an
// epoch: lr(s) = base · gamma^floor(s / 100) · min(1, (s + 1) / 50).
TEST_CASE("schedule: step decay at epoch boundaries, counted from step 0; warm-up only ramps") {
  LrSchedule s;
  s.kind = "step";
  s.base_lr = 0.1;
  s.gamma = 0.1;
  s.step_every = 100;     // step_epochs 1
  s.warmup_steps = 50;    // warmup_epochs 0.5
  s.total_steps = 1000;
  auto closed = [](uint64_t st) {
    return 0.1 * std::pow(0.1, double(st / 100)) * std::min(1.0, double(st + 1) / 50.0);
  };
  // Warm-up ramp, then the boundary steps of epochs 1..3 and the half-epoch
  // points where a decay counted from the end of warm-up would fall.
  for (uint64_t st : {0, 24, 48, 49, 50, 99, 100, 101, 149, 150, 151, 199, 200, 249, 250, 299, 300}) {
    CAPTURE(st);
    CHECK(s.at(st) == doctest::Approx(closed(st)).epsilon(1e-12));
  }
  CHECK(s.at(0) == doctest::Approx(0.002));
  CHECK(s.at(99) == doctest::Approx(0.1));
  CHECK(s.at(100) == doctest::Approx(0.01));
  CHECK(s.at(149) == doctest::Approx(0.01));
  CHECK(s.at(200) == doctest::Approx(0.001));
  // A warm-up longer than step_every ramps the decayed rate.
  s.warmup_steps = 200;
  CHECK(s.at(149) == doctest::Approx(0.01 * 150.0 / 200.0));
  CHECK(s.at(199) == doctest::Approx(0.01));
  CHECK(s.at(200) == doctest::Approx(0.001));
}
