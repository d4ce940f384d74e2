// The built-in models (models/zoo.cpp) keep their parameter layout, their
// initialisation and what a step computes. The constants were recorded from
// the zoo as it was before its models became layer declarations
// (models/layer_decl.h), with the RECORD line below (shown when a check fails); a change to the
// layout or the initialisation changes them. Layout and initialisation are
// integer hashes of host code (exact on every platform); the gradient of one
// batch is compared to 1e-6 relative (libm's exp/log may differ in the last
// bit between CPUs).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "cpu/cpu_backend.h"
#include "models/zoo.h"

using namespace tether;

namespace {

uint64_t fnv(uint64_t h, const void* p, size_t bytes) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

struct Case {
  const char* label;
  const char* name;
  Shape in;
  int depth, width, hidden;
  float dropout;
  uint64_t layout, init;
  double loss, grad_l1, grad_signed;
};

// Recorded by this test's RECORD message from the zoo before the change.
const Case kCases[] = {
    {"lenet 1x28x28", "lenet", {1, 28, 28}, 1, 16, 512, 0.0f,
     0x2f54728de88f4d87ull, 0xd5349ba7ce0b3254ull, 2.270312468210856, 930.99173100878215, 4.3334379576238717},
    {"lenet 3x32x32 dropout", "lenet", {3, 32, 32}, 1, 16, 512, 0.5f,
     0x200cee7a784ddc1full, 0xb4c83a09a7f34a53ull, 2.318359692891439, 1247.5034178056389, 0.96367218700423152},
    {"mlp hidden 64 dropout", "mlp", {1, 28, 28}, 1, 16, 64, 0.25f,
     0xd7c07703558c7974ull, 0x6fb044ff7b65f773ull, 2.380736986796061, 380.80717191323822, 2.4150401033964783},
    {"resnet d1 w4 1x28x28", "resnet", {1, 28, 28}, 1, 4, 512, 0.0f,
     0xdfc76bf8895d5ae9ull, 0xd567dc00f3ab5058ull, 2.2067503929138184, 81.937160873298126, 5.9105219768798634},
    {"resnet-20 3x32x32", "resnet", {3, 32, 32}, 3, 16, 512, 0.0f,
     0x3409304c8c57496aull, 0xba1dc7b0b0d0d864ull, 2.2796765963236489, 3721.1485782568761, -6.5519173136119813},
};

}  // namespace

TEST_CASE("zoo: built-in models keep their parameter layout, initialisation and gradients") {
  BackendOptions o;
  o.threads = 1;
  auto be = make_cpu_backend(o);
  for (const Case& c : kCases) {
    CAPTURE(c.label);
    ModelSpec spec;
    spec.name = c.name;
    spec.depth = c.depth;
    spec.width = c.width;
    spec.hidden = c.hidden;
    spec.dropout = c.dropout;
    const int n = 3;
    auto m = make_model(spec, c.in, 10);
    m->build(be.get(), n, 11);

    uint64_t layout = 0xcbf29ce484222325ull;
    for (const ParamView& v : m->views()) {
      const uint64_t fields[3] = {v.offset, v.count, v.trainable ? 1u : 0u};
      layout = fnv(layout, fields, sizeof fields);
    }
    const uint64_t totals[2] = {m->param_count(), m->trainable_count()};
    layout = fnv(layout, totals, sizeof totals);
    const std::vector<float> p = m->download_params();
    const uint64_t init = fnv(0xcbf29ce484222325ull, p.data(), p.size() * sizeof(float));

    // One training-mode step on a fixed batch: x_i = sin(0.37 i), labels i mod 10.
    std::vector<float> xh(size_t(n) * c.in.count());
    for (size_t i = 0; i < xh.size(); ++i) xh[i] = float(std::sin(0.37 * double(i)));
    const int32_t yh[n] = {3, 8, 1};
    DeviceBuffer<float> x(be.get(), xh.size()), stats(be.get(), 2);
    DeviceBuffer<int32_t> y(be.get(), n);
    be->upload(x.get(), xh.data(), xh.size() * sizeof(float));
    be->upload(y.get(), yh, sizeof yh);
    be->fill(2, 0.0f, stats.get());
    m->forward_backward(x.get(), y.get(), n, 7, stats.get());
    float s[2];
    be->download(s, stats.get(), sizeof s);
    std::vector<float> g(m->trainable_count());
    be->download(g.data(), m->grads(), g.size() * sizeof(float));
    double l1 = 0, signed_sum = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      l1 += std::fabs(double(g[i]));
      signed_sum += double(g[i]) * (double(i % 7) - 3.0);
    }
    const double loss = double(s[0]) / n;
    char record[160];
    std::snprintf(record, sizeof record, "0x%016llxull, 0x%016llxull, %.17g, %.17g, %.17g",
                  static_cast<unsigned long long>(layout), static_cast<unsigned long long>(init), loss, l1,
                  signed_sum);
    INFO("RECORD " << std::string(c.label) << ": " << record);
    CHECK(layout == c.layout);
    CHECK(init == c.init);
    CHECK(loss == doctest::Approx(c.loss).epsilon(1e-6));
    CHECK(l1 == doctest::Approx(c.grad_l1).epsilon(1e-6));
    CHECK(signed_sum == doctest::Approx(c.grad_signed).epsilon(1e-6));
  }
}
