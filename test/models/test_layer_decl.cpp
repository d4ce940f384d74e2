// Layer declarations (models/layer_decl.h): shapes inferred layer by layer,
// errors that name the layer's path and the shapes that do not fit,
// parameter counts in closed form, and the gradient of a declared model that
// uses every layer type against finite differences of its loss.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "cpu/cpu_backend.h"
#include "models/layer_decl.h"
#include "models/zoo.h"

using namespace tether;

namespace {

std::string error_of(const std::vector<LayerDecl>& decls, Shape in, int classes = 10) {
  try {
    build_layers(decls, in, classes, "model.layers");
  } catch (const ModelDeclError& e) {
    return e.what();
  }
  return "";
}

std::unique_ptr<Backend> cpu() {
  BackendOptions o;
  o.threads = 1;
  return make_cpu_backend(o);
}

}  // namespace

TEST_CASE("layer_decl: the zoo's lenet declared layer by layer is lenet") {
  const std::vector<LayerDecl> lenet = {
      conv2d_decl(32, 5, 1, 2), relu_decl(), maxpool2d_decl(2, 2), conv2d_decl(64, 5, 1, 2), relu_decl(),
      maxpool2d_decl(2, 2),     flatten_decl(), linear_decl(128), relu_decl(), linear_decl(10)};
  ModelSpec spec;
  spec.name = "lenet";
  CHECK(zoo_layers(spec, 10) == lenet);
  auto m = make_declared_model("custom", lenet, {1, 28, 28}, 10, "model.layers");
  CHECK(m->trainable_count() == 454922);
  // The resnet's first block of stage 2: stride 2, a 1x1 conv + bn shortcut.
  spec.name = "resnet";
  spec.depth = 1;
  spec.width = 4;
  const std::vector<LayerDecl> r = zoo_layers(spec, 10);
  REQUIRE(r.size() == 3 + 2 * 3 + 3);
  CHECK(r[5] == residual_decl({conv2d_decl(8, 3, 2, 1, false), batchnorm2d_decl(), relu_decl(),
                               conv2d_decl(8, 3, 1, 1, false), batchnorm2d_decl()},
                              {conv2d_decl(8, 1, 2, 0, false), batchnorm2d_decl()}));
  CHECK(r[3].shortcut.empty());   // stage 1 keeps the shape: identity
}

TEST_CASE("layer_decl: shapes are inferred; parameter counts in closed form") {
  // 3x32x32 -> conv 8 k3 s2 p1 (8,16,16) -> bn -> avgpool k3 s2 p1 (8,8,8)
  // -> residual [conv 8 k3 p1, bn] + identity -> maxpool k2 (8,4,4)
  // -> residual [conv 16 k1 s2] + [avgpool k2 s2, conv 16 k1] (16,2,2)
  // -> global_avgpool (16,1,1) -> dropout -> flatten -> linear 10
  const std::vector<LayerDecl> decls = {
      conv2d_decl(8, 3, 2, 1), batchnorm2d_decl(), avgpool2d_decl(3, 2, 1),
      residual_decl({conv2d_decl(8, 3, 1, 1, false), batchnorm2d_decl()}), relu_decl(), maxpool2d_decl(2, 2),
      residual_decl({conv2d_decl(16, 1, 2, 0)}, {avgpool2d_decl(2, 2), conv2d_decl(16, 1, 1, 0, false)}),
      global_avgpool_decl(), dropout_decl(0.25), flatten_decl(), linear_decl(10)};
  auto m = make_declared_model("custom", decls, {3, 32, 32}, 10, "model.layers");
  const size_t trainable = (8 * 3 * 9 + 8) + 2 * 8 + (8 * 8 * 9) + 2 * 8 + (16 * 8 + 16) + (16 * 8) + (16 * 10 + 10);
  CHECK(m->trainable_count() == trainable);
  CHECK(m->param_count() - m->trainable_count() == 2 * 8 + 2 * 8);   // two batch-norms' running statistics
}

TEST_CASE("layer_decl: a declaration that does not fit names the layer's path and the shapes") {
  const Shape img{1, 28, 28};
  const std::vector<LayerDecl> head = {conv2d_decl(32, 5, 1, 2), relu_decl(), maxpool2d_decl(2, 2)};  // (32,14,14)
  auto with = [&](std::vector<LayerDecl> tail) {
    std::vector<LayerDecl> d = head;
    d.insert(d.end(), tail.begin(), tail.end());
    return d;
  };
  LayerDecl lin = linear_decl(10);
  lin.in = 3136;
  CHECK(error_of(with({flatten_decl(), lin}), img) ==
        "model.layers[4].in: expected 6272 inputs, got 3136 (the input of this layer is (6272,1,1))");
  LayerDecl conv = conv2d_decl(8, 3);
  conv.in = 16;
  CHECK(error_of(with({conv}), img) ==
        "model.layers[3].in: expected 32 input channels, got 16 (the input of this layer is (32,14,14))");
  CHECK(error_of(with({linear_decl(10)}), img) ==
        "model.layers[3]: linear expects a flat input (F,1,1), got (32,14,14); add {\"type\": \"flatten\"} before it");
  CHECK(error_of(with({conv2d_decl(8, 17, 1, 1)}), img) ==
        "model.layers[3].kernel: expected at most 16 (the input (32,14,14) with padding 1), got 17");
  CHECK(error_of(with({maxpool2d_decl(15, 1)}), img) ==
        "model.layers[3].kernel: expected at most 14 (the input (32,14,14) with padding 0), got 15");
  CHECK(error_of(with({avgpool2d_decl(3, 1, 2)}), img) == "model.layers[3].padding: expected at most kernel/2 = 1, got 2");
  CHECK(error_of(with({flatten_decl(), linear_decl(128)}), img) ==
        "model.layers[4].out: expected 10 (the data set's classes: the last layer gives the logits), got 128");
  CHECK(error_of(head, img) ==
        "model.layers: the last layer (model.layers[2]) gives (32,14,14) = 6272 values, expected 10 logits (the data "
        "set's classes); end with {\"type\": \"linear\", \"out\": 10}");
  CHECK(error_of(with({residual_decl({conv2d_decl(64, 3, 2, 1)})}), img) ==
        "model.layers[3]: the body (layers) gives (64,7,7) but the shortcut (none: the identity) gives (32,14,14); "
        "they are added, so they must agree");
  CHECK(error_of(with({residual_decl({conv2d_decl(64, 3, 2, 1)}, {conv2d_decl(64, 1, 1)})}), img) ==
        "model.layers[3]: the body (layers) gives (64,7,7) but the shortcut gives (64,14,14); they are added, so they "
        "must agree");
  // Paths inside a residual's lists.
  CHECK(error_of(with({residual_decl({relu_decl(), conv2d_decl(8, 30)})}), img) ==
        "model.layers[3].layers[1].kernel: expected at most 14 (the input (32,14,14) with padding 0), got 30");
  CHECK(error_of(with({residual_decl({relu_decl()}, {linear_decl(4)})}), img) ==
        "model.layers[3].shortcut[0]: linear expects a flat input (F,1,1), got (32,14,14); add {\"type\": \"flatten\"} "
        "before it");
  CHECK(error_of(with({residual_decl({})}), img) ==
        "model.layers[3].layers: expected a non-empty array of layers (the body), got []");
  CHECK(error_of({global_avgpool_decl()}, {3, 8, 9}) == "model.layers[0]: global_avgpool expects a square input (C,H,H), got (3,8,9)");
  CHECK(error_of({}, img) == "model.layers: expected a non-empty array of layers, got []");
  CHECK(error_of({dropout_decl(1.0)}, img) == "model.layers[0].p: expected a number in [0, 1), got 1");
  CHECK(error_of({conv2d_decl(8, 3, 0)}, img) == "model.layers[0].stride: expected an integer >= 1, got 0");
  CHECK(error_of({batchnorm2d_decl(0.1, 0.0)}, img) == "model.layers[0].eps: expected a number in (0, 1], got 0");
  CHECK(error_of({flatten_decl(), linear_decl(1 << 20), relu_decl(), linear_decl(4096), relu_decl(), linear_decl(10)},
                 img) == "model.layers: declares 5118144522 parameters, more than 2^31");
  CHECK(error_of({conv2d_decl(65536, 3, 1, 1)}, {1, 65, 65}) ==
        "model.layers[0]: gives (65536,65,65) = 276889600 values per sample, more than 2^28");
  // The zoo's models name theirs.
  ModelSpec spec;
  spec.name = "lenet";
  CHECK_THROWS_WITH(make_model(spec, {1, 3, 3}, 10),
                    "lenet.layers[5].kernel: expected at most 1 (the input (64,1,1) with padding 0), got 2");
}

TEST_CASE("layer_decl: a declared model with every layer type: gradient matches finite differences") {
  // Same check as test_model.cpp's, on a declaration the zoo does not make:
  // padded average pooling, global average pooling, a residual with a
  // pooling shortcut, batch-norm on a flat input, dropout.
  const std::vector<LayerDecl> decls = {
      conv2d_decl(4, 3, 1, 1), batchnorm2d_decl(), relu_decl(), avgpool2d_decl(3, 2, 1),
      residual_decl({conv2d_decl(6, 3, 2, 1), relu_decl()}, {maxpool2d_decl(2, 2), conv2d_decl(6, 1, 1, 0, false)}),
      global_avgpool_decl(), flatten_decl(), batchnorm2d_decl(), dropout_decl(0.3), linear_decl(5)};
  auto be = cpu();
  const int n = 4;
  const Shape in{2, 8, 8};
  auto m = make_declared_model("custom", decls, in, 5, "model.layers");
  m->build(be.get(), n, 5);
  std::vector<float> xh(size_t(n) * in.count());
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (auto& v : xh) v = g(rng);
  const std::vector<int32_t> yh = {0, 4, 2, 2};
  DeviceBuffer<float> x(be.get(), xh.size()), stats(be.get(), 2);
  DeviceBuffer<int32_t> y(be.get(), n);
  be->upload(x.get(), xh.data(), xh.size() * 4);
  be->upload(y.get(), yh.data(), yh.size() * 4);
  const uint64_t seed = 17;
  auto loss = [&]() {
    be->fill(2, 0.0f, stats.get());
    m->forward_backward(x.get(), y.get(), n, seed, stats.get());
    float s[2];
    be->download(s, stats.get(), sizeof s);
    return double(s[0]) / n;
  };
  const std::vector<float> p0 = m->download_params();
  loss();
  std::vector<float> grad(m->trainable_count());
  be->download(grad.data(), m->grads(), grad.size() * 4);
  // Direction: the gradient plus as much noise, unit length.
  double gn = 0;
  for (float v : grad) gn += double(v) * v;
  const double rms = std::sqrt(gn / double(grad.size()));
  std::vector<double> dir(grad.size());
  double dn = 0, gd = 0;
  for (size_t i = 0; i < dir.size(); ++i) {
    dir[i] = grad[i] + rms * g(rng);
    dn += dir[i] * dir[i];
  }
  for (size_t i = 0; i < dir.size(); ++i) {
    dir[i] /= std::sqrt(dn);
    gd += dir[i] * grad[i];
  }
  auto loss_at = [&](double t) {
    std::vector<float> p = p0;
    for (size_t i = 0; i < dir.size(); ++i) p[i] = float(double(p0[i]) + t * dir[i]);
    m->upload_params(p);
    const double l = loss();
    m->upload_params(p0);   // batch-norm running statistics moved: restore
    return l;
  };
  const double h = 1e-2;
  const double fd = (loss_at(h) - loss_at(-h)) / (2 * h);
  CAPTURE(gd);
  CAPTURE(fd);
  CHECK(std::fabs(gd) > 1e-3);
  CHECK(std::fabs(fd - gd) <= 2e-2 * std::fabs(gd) + 1e-4);
}
