// lenet's training trajectory against PyTorch: the same initial weights
// (tether's, seed 1), the same batches (the first 20 × 64 Fashion-MNIST
// training images in file order, normalised as tether does), 20 steps of SGD
// (lr 0.05, momentum 0.9). The two runs part by chance: once a float
// rounding difference moves a ReLU or max-pool choice, the gradient goes
// elsewhere and the runs drift apart a little more every step. Measured:
// at most 1e-7 up to step 13 on one machine (AVX-512); on another (AVX2) at
// most 1.4e-6 up to step 8, then 1.2e-4 at step 9 and 1.9e-3 at step 13.
// So the losses recorded from PyTorch are checked to 1e-5 relative over the
// first 9 steps only (a momentum of 0.8991 instead of 0.9 is off by 1.6e-4
// at step 6); every one of the 20 steps is checked against PyTorch from
// tether's own state before it by test/models/torch_steps.py (the `torch
// reference: write lenet's steps` case below writes those states).
//
// The reference numbers below were recorded once with PyTorch by
// test/models/torch_reference.py, which reads the initial weights that the
// skipped test case at the end writes; torch is not needed to run this test.
// To re-record (say after a change of the initialisation):
//   /usr/bin/python3 test/models/torch_reference.py build/test/models/test_models
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cpu/cpu_backend.h"
#include "models/dataset.h"
#include "models/optimizer.h"
#include "models/layer_decl.h"
#include "models/zoo.h"

using namespace tether;

namespace {

constexpr uint64_t kInitSeed = 1;
constexpr int kBatch = 64;
constexpr int kSteps = 20;
constexpr float kLr = 0.05f, kMomentum = 0.9f;

// Mean cross-entropy of each step's batch before its update, from PyTorch
// (Debian's python3-torch 1.13.1+dfsg, which reports 1.13.0a0; CPU, float32,
// 2 threads) via torch_reference.py. The spike at step 13 is the real
// trajectory (lr 0.05 with momentum 0.9 from a fresh init), not a glitch.
constexpr double kTorchLosses[kSteps] = {
    2.31599045, 2.30054092, 2.27993345, 2.2342658,
    2.17614889, 2.08336115, 1.973943,   1.82112956,
    1.57354629, 1.33321702, 1.1650275,  1.24703109,
    1.91698349, 4.77921772, 1.69876337, 1.76564384,
    1.91251063, 1.99369442, 1.90699458, 1.79255652,
};

// Steps recorded losses are compared on (see the top of the file).
constexpr int kStableSteps = 9;

std::unique_ptr<Model> lenet(Backend* be) {
  ModelSpec spec;
  spec.name = "lenet";
  auto m = make_model(spec, Shape{1, 28, 28}, 10);
  m->build(be, kBatch, kInitSeed);
  return m;
}

// The 20 steps; before each one, on_step(step, loss of its batch, params,
// momentum buffer) with the state the step starts from; once more after the
// last (step 20, loss NaN). False when the dataset is not installed.
template <class OnStep>
bool lenet_steps(OnStep on_step) {
  if (!std::filesystem::exists(std::string(kFashionMnistDefaultPath) + "/train-images-idx3-ubyte.gz")) {
    MESSAGE("Debian's dataset-fashion-mnist is not installed: test not run");
    return false;
  }
  const Dataset train = load_mnist_dir(kFashionMnistDefaultPath).train;
  REQUIRE(train.count() >= size_t(kBatch * kSteps));
  BackendOptions o;
  o.threads = 1;   // 1 s; 2 threads took 5 s on a busy 2-core machine (OpenMP waits)
  auto be = make_cpu_backend(o);
  auto model = lenet(be.get());
  REQUIRE(model->trainable_count() == 454922);
  Sgd sgd(be.get(), model->trainable_count(), {kLr, kMomentum, 0.0f, false});
  DeviceBuffer<float> x(be.get(), size_t(kBatch) * train.image_bytes()), stats(be.get(), 2);
  DeviceBuffer<int32_t> y(be.get(), kBatch);
  std::vector<uint8_t> images(size_t(kBatch) * train.image_bytes());
  std::vector<int32_t> labels(kBatch);
  std::vector<uint32_t> idx(kBatch);
  for (int step = 0; step < kSteps; ++step) {   // batch `step`: images [64·step, 64·step + 64)
    for (int i = 0; i < kBatch; ++i) idx[size_t(i)] = uint32_t(step * kBatch + i);
    gather_batch(train, idx.data(), idx.size(), images.data(), labels.data());
    be->normalize_bytes(images.size(), images.data(), kFashionMnistMean, kFashionMnistStd, x.get());
    be->upload(y.get(), labels.data(), labels.size() * sizeof(int32_t));
    be->fill(2, 0.0f, stats.get());
    model->forward_backward(x.get(), y.get(), kBatch, 0, stats.get());
    float s[2];
    be->download(s, stats.get(), sizeof s);
    const double loss = double(s[0]) / kBatch;
    on_step(step, loss, *be, *model, sgd);
    sgd.step(kLr, model->grads(), model->params());
  }
  on_step(kSteps, std::nan(""), *be, *model, sgd);
  return true;
}

}  // namespace

TEST_CASE("lenet: its first 9 SGD steps on Fashion-MNIST match PyTorch's losses to 1e-5 relative") {
  double worst = 0;
  const bool ran = lenet_steps([&](int step, double loss, Backend&, Model&, Sgd&) {
    if (step >= kStableSteps) return;
    CAPTURE(step);
    CHECK(loss == doctest::Approx(kTorchLosses[step]).epsilon(1e-5));
    worst = std::max(worst, std::fabs(loss - kTorchLosses[step]) / kTorchLosses[step]);
  });
  if (ran) MESSAGE("largest relative difference over steps 0.." << kStableSteps - 1 << ": " << worst);
}

// Writes, before each of the 20 steps and after the last, lenet's
// parameters and SGD's momentum buffer (lenet-params.f32,
// lenet-momentum.f32: 21 blocks of 454,922 little-endian float32 each, arena
// order as below) and each step's loss (lenet-losses.f64, 20 doubles) to the
// current directory, for test/models/torch_steps.py. Skipped unless selected.
TEST_CASE("torch reference: write lenet's steps" * doctest::skip()) {
  std::ofstream params("lenet-params.f32", std::ios::binary), momentum("lenet-momentum.f32", std::ios::binary),
      losses("lenet-losses.f64", std::ios::binary);
  lenet_steps([&](int step, double loss, Backend& be, Model& model, Sgd& sgd) {
    const std::vector<float> p = model.download_params();
    std::vector<float> m(p.size());
    be.download(m.data(), sgd.momentum_buffer(), m.size() * sizeof(float));
    params.write(reinterpret_cast<const char*>(p.data()), std::streamsize(p.size() * sizeof(float)));
    momentum.write(reinterpret_cast<const char*>(m.data()), std::streamsize(m.size() * sizeof(float)));
    if (step < kSteps) losses.write(reinterpret_cast<const char*>(&loss), sizeof loss);
  });
  REQUIRE(params.good());
  REQUIRE(momentum.good());
  REQUIRE(losses.good());
}

// Writes lenet's initial parameters (seed 1, arena order: conv1 weight, bias,
// conv2 weight, bias, fc1 weight, bias, fc2 weight, bias; PyTorch's layouts)
// as little-endian float32 to lenet-init.f32 in the current directory, for
// torch_reference.py. Skipped unless selected: -tc="torch reference*" --no-skip
TEST_CASE("torch reference: write lenet's initial parameters" * doctest::skip()) {
  BackendOptions o;
  o.threads = 1;
  auto be = make_cpu_backend(o);
  auto model = lenet(be.get());
  std::vector<float> p = model->download_params();
  std::ofstream out("lenet-init.f32", std::ios::binary);
  out.write(reinterpret_cast<const char*>(p.data()), std::streamsize(p.size() * sizeof(float)));
  REQUIRE(out.good());
  for (const ParamView& v : model->views()) MESSAGE(v.name << " offset " << v.offset << " count " << v.count);
}

// A declared model (models/layer_decl.h) with the layer types lenet lacks:
// batch-norm (training statistics, running statistics with PyTorch's
// momentum and unbiased variance), padded average pooling (padding counted
// as zeros, PyTorch's count_include_pad), residual blocks with an identity
// and a strided 1x1 shortcut, global average pooling. 10 SGD steps on the
// same batches as above, then one evaluation-mode batch (images 640..703,
// normalised by the running statistics): the losses and the running
// statistics must agree with PyTorch's to 1e-4 relative. Measured: 1e-8 at
// step 0, growing to about 6e-5 at step 8 (float rounding amplified by the
// steps, as for lenet); the evaluation loss and the sums within 2e-5 (the
// variance sum within 4e-6, checked to 1e-5).
// Recorded by torch_reference.py like lenet's (the model is its `Declared`).
namespace {

constexpr int kDeclSteps = 10;
constexpr double kTorchDeclLosses[kDeclSteps] = {
    2.65365958, 2.63001609, 2.34231997, 2.12694764, 2.06132817,
    2.11745191, 1.85859764, 2.15959525, 1.99399889, 1.67267489,
};
constexpr double kTorchDeclEvalLoss = 2.0426929;
// Σ |running_mean| and Σ running_var over the model's five batch-norms after the steps.
constexpr double kTorchDeclMeanSum = 6.59872884, kTorchDeclVarSum = 31.9748596;

std::vector<LayerDecl> declared_layers() {
  auto conv = [](int out, int kernel, int stride, int pad) { return conv2d_decl(out, kernel, stride, pad, false); };
  return {conv(8, 3, 1, 1), batchnorm2d_decl(), relu_decl(), avgpool2d_decl(3, 2, 1),
          residual_decl({conv(16, 3, 2, 1), batchnorm2d_decl(), relu_decl(), conv(16, 3, 1, 1), batchnorm2d_decl()},
                        {conv(16, 1, 2, 0), batchnorm2d_decl()}),
          relu_decl(),
          residual_decl({conv(16, 3, 1, 1), relu_decl(), conv(16, 3, 1, 1), batchnorm2d_decl()}),
          relu_decl(), maxpool2d_decl(2, 2), global_avgpool_decl(), flatten_decl(), linear_decl(10)};
}

std::unique_ptr<Model> declared(Backend* be) {
  auto m = make_declared_model("custom", declared_layers(), Shape{1, 28, 28}, 10, "model.layers");
  m->build(be, kBatch, kInitSeed);
  return m;
}

}  // namespace

TEST_CASE("declared model (batchnorm2d, avgpool2d, residual, global_avgpool): 10 SGD steps match PyTorch") {
  if (!std::filesystem::exists(std::string(kFashionMnistDefaultPath) + "/train-images-idx3-ubyte.gz")) {
    MESSAGE("Debian's dataset-fashion-mnist is not installed: test not run");
    return;
  }
  const Dataset train = load_mnist_dir(kFashionMnistDefaultPath).train;
  REQUIRE(train.count() >= size_t(kBatch * (kDeclSteps + 1)));
  BackendOptions o;
  o.threads = 1;
  auto be = make_cpu_backend(o);
  auto model = declared(be.get());
  Sgd sgd(be.get(), model->trainable_count(), {kLr, kMomentum, 0.0f, false});
  DeviceBuffer<float> x(be.get(), size_t(kBatch) * train.image_bytes()), stats(be.get(), 2);
  DeviceBuffer<int32_t> y(be.get(), kBatch);
  std::vector<uint8_t> images(size_t(kBatch) * train.image_bytes());
  std::vector<int32_t> labels(kBatch);
  std::vector<uint32_t> idx(kBatch);
  auto load = [&](int batch) {   // images [64·batch, 64·batch + 64)
    for (int i = 0; i < kBatch; ++i) idx[size_t(i)] = uint32_t(batch * kBatch + i);
    gather_batch(train, idx.data(), idx.size(), images.data(), labels.data());
    be->normalize_bytes(images.size(), images.data(), kFashionMnistMean, kFashionMnistStd, x.get());
    be->upload(y.get(), labels.data(), labels.size() * sizeof(int32_t));
    be->fill(2, 0.0f, stats.get());
  };
  auto loss = [&]() {
    float s[2];
    be->download(s, stats.get(), sizeof s);
    return double(s[0]) / kBatch;
  };
  for (int step = 0; step < kDeclSteps; ++step) {
    load(step);
    model->forward_backward(x.get(), y.get(), kBatch, 0, stats.get());
    CAPTURE(step);
    CHECK(loss() == doctest::Approx(kTorchDeclLosses[step]).epsilon(1e-4));
    sgd.step(kLr, model->grads(), model->params());
  }
  load(kDeclSteps);
  model->evaluate(x.get(), y.get(), kBatch, stats.get());
  CHECK(loss() == doctest::Approx(kTorchDeclEvalLoss).epsilon(1e-4));
  const std::vector<float> p = model->download_params();
  double mean_sum = 0, var_sum = 0;
  for (const ParamView& v : model->views()) {
    double* sum = v.name.find("running_mean") != std::string::npos  ? &mean_sum
                  : v.name.find("running_var") != std::string::npos ? &var_sum
                                                                     : nullptr;
    if (sum == nullptr) continue;
    for (size_t i = 0; i < v.count; ++i) *sum += std::fabs(double(p[v.offset + i]));
  }
  char sums[96];
  std::snprintf(sums, sizeof sums, "mean_sum %.9g var_sum %.9g", mean_sum, var_sum);
  INFO(sums);
  CHECK(mean_sum == doctest::Approx(kTorchDeclMeanSum).epsilon(1e-4));
  // Tighter: the running variance must be the unbiased one (PyTorch's).
  // Measured 4e-6 relative; the biased one is off by 5e-5.
  CHECK(var_sum == doctest::Approx(kTorchDeclVarSum).epsilon(1e-5));
}

// Writes the declared model's initial parameters (seed 1, arena order:
// every weight and bias in declaration order, then every batch-norm's
// running_mean and running_var) to declared-init.f32, for
// torch_reference.py. Skipped unless selected (see above).
TEST_CASE("torch reference: write the declared model's initial parameters" * doctest::skip()) {
  BackendOptions o;
  o.threads = 1;
  auto be = make_cpu_backend(o);
  auto model = declared(be.get());
  std::vector<float> p = model->download_params();
  std::ofstream out("declared-init.f32", std::ios::binary);
  out.write(reinterpret_cast<const char*>(p.data()), std::streamsize(p.size() * sizeof(float)));
  REQUIRE(out.good());
  for (const ParamView& v : model->views()) MESSAGE(v.name << " offset " << v.offset << " count " << v.count);
}
