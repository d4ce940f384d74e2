// The backend ops against references computed another way: forwards against
// naive float64 loops, backwards against float64 central differences of a
// float64 forward, the optimizer against PyTorch's formula written out, the
// sketch against a direct sum. Every case runs on every device of
// available_devices(): the CPU against the references, CUDA (when present)
// against the CPU's results.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>

#include "cpu/cpu_backend.h"
#include "models/kernel_math.h"
#include "test/test_util.h"

namespace tether {
namespace {

using testing::Arena;
using testing::backend;
using testing::check_grad;
using testing::numeric_grad;
using testing::on_devices;
using testing::Outputs;
using testing::random_floats;
using testing::to_double;
using Vec = std::vector<double>;

std::vector<float> to_float(const std::vector<int32_t>& v) {
  return std::vector<float>(v.begin(), v.end());
}

// Element-wise |got − want| <= rtol·scale + atol, scale given per element.
void check_close(const std::vector<float>& got, const Vec& want, const Vec& scale,
                 double rtol, double atol, const char* what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double s = scale.empty() ? std::fabs(want[i]) : scale[i];
    if (!(std::fabs(double(got[i]) - want[i]) <= rtol * s + atol)) {
      if (bad++ == 0) first = i;
    }
  }
  if (bad > 0) {
    INFO(bad << " mismatches, first at " << first << ": got " << got[first] << ", want "
              << want[first]);
    CHECK(bad == 0);
  }
}

Vec loss_weights(size_t count, uint64_t seed) {
  return to_double(random_floats(count, seed, -1.0f, 1.0f));
}

double weighted_sum(const Vec& c, const Vec& y) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += c[i] * y[i];
  return s;
}

// ---- references in float64 ----------------------------------------------------

// y(n,k,oh,ow); abs_sum (optional) gets Σ|x·w| + |b| per output, the scale of
// the float rounding error.
Vec conv_ref(const ConvShape& sh, const Vec& x, const Vec& w, const Vec* b,
             Vec* abs_sum = nullptr) {
  const int oh = sh.oh(), ow = sh.ow();
  Vec y(sh.out_count(), 0.0);
  if (abs_sum != nullptr) abs_sum->assign(y.size(), 0.0);
  for (int n = 0; n < sh.n; ++n)
    for (int k = 0; k < sh.k; ++k)
      for (int oy = 0; oy < oh; ++oy)
        for (int ox = 0; ox < ow; ++ox) {
          double s = b != nullptr ? (*b)[size_t(k)] : 0.0;
          double a = b != nullptr ? std::fabs((*b)[size_t(k)]) : 0.0;
          for (int c = 0; c < sh.c; ++c)
            for (int ky = 0; ky < sh.r; ++ky)
              for (int kx = 0; kx < sh.s; ++kx) {
                const int iy = oy * sh.stride - sh.pad + ky, ix = ox * sh.stride - sh.pad + kx;
                if (iy < 0 || iy >= sh.h || ix < 0 || ix >= sh.w) continue;
                const double p = x[((size_t(n) * sh.c + c) * sh.h + iy) * sh.w + ix] *
                                 w[((size_t(k) * sh.c + c) * sh.r + ky) * sh.s + kx];
                s += p;
                a += std::fabs(p);
              }
          const size_t o = ((size_t(n) * sh.k + k) * oh + oy) * ow + ox;
          y[o] = s;
          if (abs_sum != nullptr) (*abs_sum)[o] = a;
        }
  return y;
}

Vec linear_ref(int n, int in, int out, const Vec& x, const Vec& w, const Vec* b,
               Vec* abs_sum = nullptr) {
  Vec y(size_t(n) * out);
  if (abs_sum != nullptr) abs_sum->assign(y.size(), 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < out; ++j) {
      double s = b != nullptr ? (*b)[size_t(j)] : 0.0;
      double a = std::fabs(s);
      for (int q = 0; q < in; ++q) {
        const double p = x[size_t(i) * in + q] * w[size_t(j) * in + q];
        s += p;
        a += std::fabs(p);
      }
      y[size_t(i) * out + j] = s;
      if (abs_sum != nullptr) (*abs_sum)[size_t(i) * out + j] = a;
    }
  return y;
}

Vec pool_ref(PoolKind kind, const PoolShape& sh, const Vec& x) {
  const int oh = sh.oh(), ow = sh.ow();
  Vec y(sh.out_count());
  for (int p = 0; p < sh.n * sh.c; ++p)
    for (int oy = 0; oy < oh; ++oy)
      for (int ox = 0; ox < ow; ++ox) {
        double best = -std::numeric_limits<double>::infinity(), sum = 0.0;
        for (int ky = 0; ky < sh.kernel; ++ky)
          for (int kx = 0; kx < sh.kernel; ++kx) {
            const int iy = oy * sh.stride - sh.pad + ky, ix = ox * sh.stride - sh.pad + kx;
            if (iy < 0 || iy >= sh.h || ix < 0 || ix >= sh.w) continue;
            const double v = x[(size_t(p) * sh.h + iy) * sh.w + ix];
            best = std::max(best, v);
            sum += v;
          }
        y[(size_t(p) * oh + oy) * ow + ox] =
            kind == PoolKind::kMax ? best : sum / double(sh.kernel * sh.kernel);
      }
  return y;
}

// Training-mode batch norm; mean and biased var per channel out.
Vec bn_train_ref(const BatchNormShape& sh, const Vec& x, const Vec& gamma, const Vec& beta,
                 double eps, Vec* mean_out = nullptr, Vec* var_out = nullptr) {
  Vec y(x.size()), mean(size_t(sh.c), 0.0), var(size_t(sh.c), 0.0);
  const double m = double(sh.n) * sh.hw;
  for (int c = 0; c < sh.c; ++c) {
    for (int n = 0; n < sh.n; ++n)
      for (int j = 0; j < sh.hw; ++j) mean[size_t(c)] += x[(size_t(n) * sh.c + c) * sh.hw + j];
    mean[size_t(c)] /= m;
    for (int n = 0; n < sh.n; ++n)
      for (int j = 0; j < sh.hw; ++j) {
        const double d = x[(size_t(n) * sh.c + c) * sh.hw + j] - mean[size_t(c)];
        var[size_t(c)] += d * d;
      }
    var[size_t(c)] /= m;
    for (int n = 0; n < sh.n; ++n)
      for (int j = 0; j < sh.hw; ++j) {
        const size_t i = (size_t(n) * sh.c + c) * sh.hw + j;
        y[i] = (x[i] - mean[size_t(c)]) / std::sqrt(var[size_t(c)] + eps) * gamma[size_t(c)] +
               beta[size_t(c)];
      }
  }
  if (mean_out != nullptr) *mean_out = mean;
  if (var_out != nullptr) *var_out = var;
  return y;
}

// Mean softmax cross-entropy over the batch.
double xent_ref(int n, int classes, const Vec& z, const std::vector<int32_t>& labels) {
  double total = 0.0;
  for (int i = 0; i < n; ++i) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int j = 0; j < classes; ++j) mx = std::max(mx, z[size_t(i) * classes + j]);
    double s = 0.0;
    for (int j = 0; j < classes; ++j) s += std::exp(z[size_t(i) * classes + j] - mx);
    total += mx + std::log(s) - z[size_t(i) * classes + labels[size_t(i)]];
  }
  return total / n;
}

const ConvShape kConvShapes[] = {
    // n  c   h   w   k  r  s  stride pad
    {2, 3, 7, 7, 4, 3, 3, 1, 1},
    {1, 1, 5, 5, 2, 5, 5, 1, 2},      // batch 1, pad 2
    {3, 2, 8, 7, 5, 3, 3, 2, 0},      // stride 2, pad 0, odd width
    {2, 4, 9, 9, 3, 5, 5, 2, 2},      // stride 2, pad 2
    {2, 3, 6, 5, 2, 1, 1, 1, 0},      // 1x1
    {2, 5, 11, 10, 6, 3, 2, 2, 1},    // r != s, stride 2, pad 1
    {1, 16, 13, 13, 17, 3, 3, 1, 1},  // odd channel counts
};

// ---- forward passes against float64 references --------------------------------

TEST_CASE("cpu_backend: devices under test") {
  const auto& devs = testing::devices();
  REQUIRE(!devs.empty());
  CHECK(devs.front() == "cpu");
  CHECK(backend("cpu").name() == "cpu");
  CHECK_FALSE(backend("cpu").is_device());
}

TEST_CASE("cpu_backend: memory is aligned, zeroed, and copies round-trip") {
  Backend& be = backend("cpu");
  for (size_t bytes : {size_t(0), size_t(1), size_t(63), size_t(4096), size_t(1) << 20}) {
    void* p = be.alloc_bytes(bytes);
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(p) % 64 == 0);
    const auto* c = static_cast<const unsigned char*>(p);
    bool zero = true;
    for (size_t i = 0; i < bytes; ++i) zero = zero && c[i] == 0;
    CHECK(zero);
    be.free_bytes(p);
  }
  on_devices(
      [](Backend& be) {
        Arena a(be);
        auto h = random_floats(1001, 7);
        float* d = a.put(h);
        float* e = a.zeros<float>(h.size());
        be.copy(e, d, h.size() * sizeof(float));
        return Outputs{a.get(e, h.size())};
      },
      [](const Outputs& o) { CHECK(o[0] == random_floats(1001, 7)); });
}

TEST_CASE("cpu_backend: conv2d_forward against a float64 loop") {
  for (const ConvShape& sh : kConvShapes) {
    for (bool bias : {true, false}) {
      CAPTURE(sh.n); CAPTURE(sh.c); CAPTURE(sh.h); CAPTURE(sh.w); CAPTURE(sh.k);
      CAPTURE(sh.r); CAPTURE(sh.s); CAPTURE(sh.stride); CAPTURE(sh.pad); CAPTURE(bias);
      const auto x = random_floats(sh.in_count(), 1);
      const auto w = random_floats(sh.weight_count(), 2);
      const auto b = random_floats(size_t(sh.k), 3);
      on_devices(
          [&](Backend& be) {
            Arena a(be);
            float* y = a.zeros<float>(sh.out_count());
            be.conv2d_forward(sh, a.put(x), a.put(w), bias ? a.put(b) : nullptr, y);
            return Outputs{a.get(y, sh.out_count())};
          },
          [&](const Outputs& o) {
            Vec scale;
            const Vec bd = to_double(b);
            const Vec want = conv_ref(sh, to_double(x), to_double(w), bias ? &bd : nullptr, &scale);
            check_close(o[0], want, scale, 1e-5, 1e-6, "conv2d y");
          });
    }
  }
}

TEST_CASE("cpu_backend: conv2d_forward at lenet's conv2 shape") {
  const ConvShape sh{2, 32, 14, 14, 64, 5, 5, 1, 2};
  const auto x = random_floats(sh.in_count(), 4);
  const auto w = random_floats(sh.weight_count(), 5, -0.1f, 0.1f);
  const auto b = random_floats(size_t(sh.k), 6);
  on_devices(
      [&](Backend& be) {
        Arena a(be);
        float* y = a.zeros<float>(sh.out_count());
        be.conv2d_forward(sh, a.put(x), a.put(w), a.put(b), y);
        return Outputs{a.get(y, sh.out_count())};
      },
      [&](const Outputs& o) {
        Vec scale;
        const Vec bd = to_double(b);
        const Vec want = conv_ref(sh, to_double(x), to_double(w), &bd, &scale);
        check_close(o[0], want, scale, 1e-5, 1e-6, "conv2d y");
      });
}

TEST_CASE("cpu_backend: linear_forward against a float64 loop") {
  struct S { int n, in, out; };
  for (S s : {S{1, 1, 1}, S{1, 7, 3}, S{5, 13, 9}, S{64, 3136, 128}, S{3, 128, 10}, S{0, 4, 3}}) {
    for (bool bias : {true, false}) {
      CAPTURE(s.n); CAPTURE(s.in); CAPTURE(s.out); CAPTURE(bias);
      const auto x = random_floats(size_t(s.n) * s.in, 11);
      const auto w = random_floats(size_t(s.out) * s.in, 12);
      const auto b = random_floats(size_t(s.out), 13);
      on_devices(
          [&](Backend& be) {
            Arena a(be);
            float* y = a.zeros<float>(size_t(s.n) * s.out);
            be.linear_forward(s.n, s.in, s.out, a.put(x), a.put(w), bias ? a.put(b) : nullptr, y);
            return Outputs{a.get(y, size_t(s.n) * s.out)};
          },
          [&](const Outputs& o) {
            Vec scale;
            const Vec bd = to_double(b);
            const Vec want = linear_ref(s.n, s.in, s.out, to_double(x), to_double(w),
                                        bias ? &bd : nullptr, &scale);
            check_close(o[0], want, scale, 1e-5, 1e-6, "linear y");
          });
    }
  }
}

struct PoolCase { PoolKind kind; PoolShape sh; };
const PoolCase kPoolCases[] = {
    {PoolKind::kMax, {2, 3, 8, 8, 2, 2, 0}},
    {PoolKind::kMax, {1, 2, 7, 9, 3, 2, 1}},   // odd sizes, overlapping, pad 1
    {PoolKind::kMax, {2, 2, 6, 6, 3, 1, 1}},   // stride 1, overlapping
    {PoolKind::kMax, {3, 2, 5, 5, 2, 2, 0}},   // odd input: last row/col dropped
    {PoolKind::kAvg, {2, 3, 8, 8, 2, 2, 0}},
    {PoolKind::kAvg, {1, 2, 7, 9, 3, 2, 1}},   // padding counted as zeros
    {PoolKind::kAvg, {2, 4, 7, 7, 7, 1, 0}},   // global average pooling, kernel = H
    {PoolKind::kAvg, {2, 2, 6, 6, 3, 1, 1}},
};

TEST_CASE("cpu_backend: pool_forward (max, avg, global avg) against a float64 loop") {
  for (const PoolCase& pc : kPoolCases) {
    const PoolShape& sh = pc.sh;
    CAPTURE(int(pc.kind)); CAPTURE(sh.n); CAPTURE(sh.c); CAPTURE(sh.h); CAPTURE(sh.w);
    CAPTURE(sh.kernel); CAPTURE(sh.stride); CAPTURE(sh.pad);
    const auto x = random_floats(sh.in_count(), 21);
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* y = a.zeros<float>(sh.out_count());
          int32_t* arg = pc.kind == PoolKind::kMax ? a.zeros<int32_t>(sh.out_count()) : nullptr;
          be.pool_forward(pc.kind, sh, a.put(x), y, arg);
          return Outputs{a.get(y, sh.out_count())};
        },
        [&](const Outputs& o) {
          const Vec want = pool_ref(pc.kind, sh, to_double(x));
          check_close(o[0], want, {}, pc.kind == PoolKind::kMax ? 0.0 : 1e-6, 1e-7, "pool y");
        });
  }
}

TEST_CASE("cpu_backend: max pooling ties go to the first element, NaN propagates") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int kernel : {2, 3}) {  // 2: the 2x2/stride-2 kernel, 3: the general loop
    CAPTURE(kernel);
    const PoolShape sh{1, 1, 2 * kernel, kernel, kernel, kernel, 0};  // two windows
    std::vector<float> x(sh.in_count(), 1.0f);           // window 0: all tied
    x[size_t(kernel * kernel + 1)] = nan;                // window 1: NaN second
    x[size_t(kernel * kernel + 2)] = 5.0f;
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* y = a.zeros<float>(2);
          int32_t* arg = a.zeros<int32_t>(2);
          float* dx = a.zeros<float>(x.size());
          be.pool_forward(PoolKind::kMax, sh, a.put(x), y, arg);
          be.pool_backward(PoolKind::kMax, sh, a.put(std::vector<float>{2.0f, 3.0f}), arg, dx);
          return Outputs{a.get(y, 2), a.get(dx, x.size())};
        },
        [&](const Outputs& o) {
          CHECK(o[0][0] == 1.0f);
          CHECK(std::isnan(o[0][1]));
          std::vector<float> want(x.size(), 0.0f);
          want[0] = 2.0f;                              // first of the tied
          want[size_t(kernel * kernel + 1)] = 3.0f;    // the NaN
          CHECK(o[1] == want);
        });
  }
}

TEST_CASE("cpu_backend: batchnorm train and eval, running statistics") {
  const BatchNormShape shapes[] = {{4, 3, 5}, {7, 2, 1}, {2, 5, 9}, {64, 16, 49}};
  for (const BatchNormShape& sh : shapes) {
    CAPTURE(sh.n); CAPTURE(sh.c); CAPTURE(sh.hw);
    const float momentum = 0.1f, eps = 1e-5f;
    const auto x = random_floats(sh.count(), 31, -2.0f, 3.0f);
    const auto gamma = random_floats(size_t(sh.c), 32, 0.5f, 1.5f);
    const auto beta = random_floats(size_t(sh.c), 33);
    const auto rmean0 = random_floats(size_t(sh.c), 34);
    const auto rvar0 = random_floats(size_t(sh.c), 35, 0.5f, 2.0f);
    const size_t c = size_t(sh.c);
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* rm = a.put(rmean0);
          float* rv = a.put(rvar0);
          float* sm = a.zeros<float>(c);
          float* si = a.zeros<float>(c);
          float* y = a.zeros<float>(sh.count());
          float* ye = a.zeros<float>(sh.count());
          float* dx = a.put(x);
          float* dg = a.put(gamma);
          float* db = a.put(beta);
          be.batchnorm_forward_train(sh, dx, dg, db, momentum, eps, rm, rv, sm, si, y);
          be.batchnorm_forward_eval(sh, dx, dg, db, rm, rv, eps, ye);
          return Outputs{a.get(y, sh.count()), a.get(rm, c), a.get(rv, c),
                         a.get(sm, c), a.get(si, c), a.get(ye, sh.count())};
        },
        [&](const Outputs& o) {
          Vec mean, var;
          const Vec g = to_double(gamma), b = to_double(beta);
          const Vec y = bn_train_ref(sh, to_double(x), g, b, eps, &mean, &var);
          const double m = double(sh.n) * sh.hw;
          Vec rm(c), rv(c), invstd(c), ye(sh.count());
          for (size_t ch = 0; ch < c; ++ch) {
            rm[ch] = (1.0 - momentum) * rmean0[ch] + momentum * mean[ch];
            rv[ch] = (1.0 - momentum) * rvar0[ch] + momentum * var[ch] * m / (m - 1.0);
            invstd[ch] = 1.0 / std::sqrt(var[ch] + eps);
          }
          for (int n = 0; n < sh.n; ++n)
            for (size_t ch = 0; ch < c; ++ch)
              for (int j = 0; j < sh.hw; ++j) {
                const size_t i = (size_t(n) * c + ch) * sh.hw + j;
                ye[i] = (x[i] - double(o[1][ch])) / std::sqrt(double(o[2][ch]) + eps) * g[ch] + b[ch];
              }
          check_close(o[0], y, {}, 1e-5, 1e-5, "train y");
          check_close(o[1], rm, {}, 1e-5, 1e-6, "running mean");
          check_close(o[2], rv, {}, 1e-5, 1e-6, "running var (unbiased)");
          check_close(o[3], mean, {}, 1e-5, 1e-6, "saved mean");
          check_close(o[4], invstd, {}, 1e-5, 1e-6, "saved invstd");
          check_close(o[5], ye, {}, 1e-5, 1e-5, "eval y");
        });
  }
}

TEST_CASE("cpu_backend: relu forward and backward") {
  for (size_t count : {size_t(1), size_t(17), size_t(100003)}) {
    CAPTURE(count);
    const auto x = random_floats(count, 41);
    const auto dy = random_floats(count, 42);
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* y = a.zeros<float>(count);
          float* dx = a.zeros<float>(count);
          be.relu_forward(count, a.put(x), y);
          be.relu_backward(count, y, a.put(dy), dx);
          return Outputs{a.get(y, count), a.get(dx, count)};
        },
        [&](const Outputs& o) {
          Vec y(count), dx(count);
          for (size_t i = 0; i < count; ++i) {
            y[i] = x[i] > 0 ? x[i] : 0.0;
            dx[i] = x[i] > 0 ? dy[i] : 0.0;
          }
          check_close(o[0], y, {}, 0.0, 0.0, "relu y");
          check_close(o[1], dx, {}, 0.0, 0.0, "relu dx");
        });
  }
}

TEST_CASE("cpu_backend: dropout draws kernel_math's mask") {
  for (float p : {0.0f, 0.25f, 0.5f}) {
    const size_t count = 50001;
    const uint64_t seed = 99;
    CAPTURE(p);
    const auto x = random_floats(count, 43);
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* mask = a.zeros<float>(count);
          float* y = a.zeros<float>(count);
          be.dropout_forward(count, p, seed, a.put(x), mask, y);
          return Outputs{a.get(mask, count), a.get(y, count)};
        },
        [&](const Outputs& o) {
          size_t dropped = 0;
          bool same = true;
          for (size_t i = 0; i < count; ++i) {
            const float m = kmath::dropout_mask(seed, i, p);
            same = same && o[0][i] == m && o[1][i] == x[i] * m;
            dropped += m == 0.0f ? 1 : 0;
          }
          CHECK(same);
          CHECK(std::fabs(double(dropped) / count - p) < 0.01);
        });
  }
}

TEST_CASE("cpu_backend: softmax_xent loss, accuracy and dlogits") {
  struct S { int n, classes; };
  for (S s : {S{1, 1}, S{1, 10}, S{7, 3}, S{64, 10}, S{5, 1000}}) {
    CAPTURE(s.n); CAPTURE(s.classes);
    auto z = random_floats(size_t(s.n) * s.classes, 51, -4.0f, 4.0f);
    if (s.n == 64) z[5] = 80.0f;  // large logit: the max must be subtracted
    std::vector<int32_t> labels(size_t(s.n));
    for (int i = 0; i < s.n; ++i) labels[size_t(i)] = (i * 7 + 3) % s.classes;
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* dz = a.zeros<float>(z.size());
          float* stats = a.put(std::vector<float>{1.5f, 2.0f});  // accumulates
          be.softmax_xent(s.n, s.classes, a.put(z), a.put(labels), dz, stats);
          int32_t* pred = a.zeros<int32_t>(size_t(s.n));
          be.argmax_rows(s.n, s.classes, a.put(z), pred);
          return Outputs{a.get(dz, z.size()), a.get(stats, 2),
                         to_float(a.get(pred, size_t(s.n)))};
        },
        [&](const Outputs& o) {
          const Vec zd = to_double(z);
          Vec dz(z.size());
          int correct = 0;
          for (int i = 0; i < s.n; ++i) {
            int best = 0;
            double mx = zd[size_t(i) * s.classes], sum = 0.0;
            for (int j = 1; j < s.classes; ++j) {
              if (zd[size_t(i) * s.classes + j] > mx) mx = zd[size_t(i) * s.classes + j], best = j;
            }
            correct += best == labels[size_t(i)] ? 1 : 0;
            CHECK(o[2][size_t(i)] == float(best));
            for (int j = 0; j < s.classes; ++j) sum += std::exp(zd[size_t(i) * s.classes + j] - mx);
            for (int j = 0; j < s.classes; ++j) {
              const double prob = std::exp(zd[size_t(i) * s.classes + j] - mx) / sum;
              dz[size_t(i) * s.classes + j] = (prob - (j == labels[size_t(i)] ? 1.0 : 0.0)) / s.n;
            }
          }
          const double loss_sum = xent_ref(s.n, s.classes, zd, labels) * s.n;
          check_close(o[0], dz, {}, 1e-5, 1e-7, "dlogits");
          CHECK(o[1][0] == doctest::Approx(1.5 + loss_sum).epsilon(1e-5));
          CHECK(o[1][1] == float(2 + correct));
        });
  }
}

TEST_CASE("cpu_backend: sgd_step matches torch.optim.SGD's formula") {
  struct S { float lr, momentum, wd; bool nesterov; };
  for (S s : {S{0.1f, 0.0f, 0.0f, false}, S{0.05f, 0.9f, 0.0f, false},
              S{0.05f, 0.9f, 5e-4f, false}, S{0.01f, 0.9f, 1e-3f, true}}) {
    const size_t count = 40007;
    CAPTURE(s.lr); CAPTURE(s.momentum); CAPTURE(s.wd); CAPTURE(s.nesterov);
    const auto w0 = random_floats(count, 61);
    const auto grads = random_floats(3 * count, 62);
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* w = a.put(w0);
          float* m = a.zeros<float>(count);
          float* g = a.put(grads);
          for (int t = 0; t < 3; ++t) {
            be.sgd_step(count, s.lr, s.momentum, s.wd, s.nesterov, g + size_t(t) * count, m, w);
          }
          return Outputs{a.get(w, count), a.get(m, count)};
        },
        [&](const Outputs& o) {
          // torch/optim/sgd.py (dampening 0), written out per element in float
          std::vector<float> w = w0, buf(count, 0.0f);
          for (int t = 0; t < 3; ++t) {
            for (size_t i = 0; i < count; ++i) {
              float d_p = grads[size_t(t) * count + i];
              if (s.wd != 0.0f) d_p = d_p + s.wd * w[i];
              if (s.momentum != 0.0f) {
                buf[i] = t == 0 ? d_p : buf[i] * s.momentum + d_p;
                d_p = s.nesterov ? d_p + s.momentum * buf[i] : buf[i];
              }
              w[i] = w[i] - s.lr * d_p;
            }
          }
          check_close(o[0], to_double(w), {}, 1e-6, 1e-7, "weights");
          if (s.momentum != 0.0f) check_close(o[1], to_double(buf), {}, 1e-6, 1e-7, "momentum");
        });
  }
}

TEST_CASE("cpu_backend: vector algebra (fill, axpy, scale, add, sub, dot, all_finite)") {
  for (size_t count : {size_t(0), size_t(1), size_t(31), size_t(100003)}) {
    CAPTURE(count);
    const auto x = random_floats(count, 71);
    const auto y0 = random_floats(count, 72);
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* dx = a.put(x);
          float* dy = a.put(y0);
          float* s = a.zeros<float>(count);
          float* d = a.zeros<float>(count);
          float* f = a.zeros<float>(count);
          be.add(count, dx, dy, s);
          be.sub(count, dx, dy, d);
          be.fill(count, 2.5f, f);
          be.axpy(count, -0.75f, dx, dy);
          be.scale(count, 3.0f, dx);
          const double dot = be.dot(count, dx, dy);
          return Outputs{a.get(s, count), a.get(d, count), a.get(f, count),
                         a.get(dy, count), a.get(dx, count), {float(dot)}};
        },
        [&](const Outputs& o) {
          Vec s(count), d(count), f(count, 2.5), y(count), sx(count);
          double dot = 0.0, scale = 0.0;
          for (size_t i = 0; i < count; ++i) {
            s[i] = double(x[i]) + y0[i];
            d[i] = double(x[i]) - y0[i];
            y[i] = y0[i] + -0.75f * x[i];
            sx[i] = 3.0f * x[i];
          }
          for (size_t i = 0; i < count; ++i) {
            dot += double(float(sx[i])) * double(o[3][i]);
            scale += std::fabs(sx[i] * y[i]);
          }
          check_close(o[0], s, {}, 1e-7, 0.0, "add");
          check_close(o[1], d, {}, 1e-7, 0.0, "sub");
          check_close(o[2], f, {}, 0.0, 0.0, "fill");
          check_close(o[3], y, {}, 1e-6, 1e-7, "axpy");
          check_close(o[4], sx, {}, 1e-7, 0.0, "scale");
          CHECK(std::fabs(o[5][0] - dot) <= 1e-6 * scale + 1e-30);
        });
  }
  Backend& be = backend("cpu");
  Arena a(be);
  const size_t n = 100003;
  auto v = random_floats(n, 73);
  CHECK(be.all_finite(0, a.put(v)));
  CHECK(be.all_finite(n, a.put(v)));
  for (size_t pos : {size_t(0), size_t(5000), n - 1}) {
    for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN()}) {
      auto w = v;
      w[pos] = bad;
      CAPTURE(pos);
      CHECK_FALSE(be.all_finite(n, a.put(w)));
    }
  }
  // dot is the double sum of float products
  const auto u = random_floats(n, 74);
  double want = 0.0;
  for (size_t i = 0; i < n; ++i) want += double(v[i]) * double(u[i]);
  CHECK(be.dot(n, a.put(v), a.put(u)) == doctest::Approx(want).epsilon(1e-12));
}

TEST_CASE("cpu_backend: count_sketch against a direct sum") {
  for (size_t count : {size_t(0), size_t(5), size_t(100000), size_t(454922)}) {
    for (int buckets : {1, 7, 1024}) {
      CAPTURE(count); CAPTURE(buckets);
      const uint64_t seed = 1234;
      const auto x = random_floats(count, 81);
      on_devices(
          [&](Backend& be) {
            Arena a(be);
            float* out = a.put(std::vector<float>(size_t(buckets), 9.0f));  // overwritten
            be.count_sketch(count, a.put(x), seed, buckets, out);
            return Outputs{a.get(out, size_t(buckets))};
          },
          [&](const Outputs& o) {
            Vec want(size_t(buckets), 0.0), scale(size_t(buckets), 0.0);
            for (size_t i = 0; i < count; ++i) {
              const uint32_t b = kmath::sketch_bucket(seed, i, uint32_t(buckets));
              want[b] += double(kmath::sketch_sign(seed, i)) * x[i];
              scale[b] += std::fabs(x[i]);
            }
            check_close(o[0], want, scale, 1e-6, 0.0, "sketch");
          },
          // float atomics on a device add in any order: compare against the sum of |x|
          1e-3);
    }
  }
}

TEST_CASE("cpu_backend: normalize_bytes") {
  std::vector<uint8_t> bytes(70001);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t((i * 37) % 256);
  on_devices(
      [&](Backend& be) {
        Arena a(be);
        float* y = a.zeros<float>(bytes.size());
        be.normalize_bytes(bytes.size(), bytes.data(), 0.2860f, 0.3530f, y);
        return Outputs{a.get(y, bytes.size())};
      },
      [&](const Outputs& o) {
        Vec want(bytes.size());
        for (size_t i = 0; i < bytes.size(); ++i) want[i] = (bytes[i] / 255.0 - 0.2860) / 0.3530;
        check_close(o[0], want, {}, 1e-5, 1e-6, "normalized");
      });
}

// ---- backward passes against float64 central differences ----------------------

TEST_CASE("cpu_backend: linear_backward against finite differences") {
  struct S { int n, in, out; };
  for (S s : {S{1, 3, 2}, S{4, 7, 5}, S{6, 16, 9}}) {
    CAPTURE(s.n); CAPTURE(s.in); CAPTURE(s.out);
    const auto x = random_floats(size_t(s.n) * s.in, 101);
    const auto w = random_floats(size_t(s.out) * s.in, 102);
    const auto b = random_floats(size_t(s.out), 103);
    const Vec c = loss_weights(size_t(s.n) * s.out, 104);
    std::vector<float> dy(c.begin(), c.end());
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* dx = a.zeros<float>(x.size());
          float* dw = a.zeros<float>(w.size());
          float* db = a.zeros<float>(b.size());
          float* dw2 = a.zeros<float>(w.size());
          be.linear_backward(s.n, s.in, s.out, a.put(x), a.put(w), a.put(dy), dx, dw, db);
          be.linear_backward(s.n, s.in, s.out, a.put(x), a.put(w), a.put(dy), nullptr, dw2, nullptr);
          return Outputs{a.get(dx, x.size()), a.get(dw, w.size()), a.get(db, b.size()),
                         a.get(dw2, w.size())};
        },
        [&](const Outputs& o) {
          Vec xd = to_double(x), wd = to_double(w), bd = to_double(b);
          auto loss = [&] { return weighted_sum(c, linear_ref(s.n, s.in, s.out, xd, wd, &bd)); };
          const Vec gw = numeric_grad(wd, loss);
          check_grad(o[0], numeric_grad(xd, loss), "dx");
          check_grad(o[1], gw, "dw");
          check_grad(o[2], numeric_grad(bd, loss), "db");
          check_grad(o[3], gw, "dw without dx, db");
        });
  }
}

TEST_CASE("cpu_backend: conv2d_backward against finite differences") {
  for (const ConvShape& sh : kConvShapes) {
    if (sh.c * sh.k > 100) continue;  // keep the float64 differences fast
    CAPTURE(sh.n); CAPTURE(sh.c); CAPTURE(sh.h); CAPTURE(sh.w); CAPTURE(sh.k);
    CAPTURE(sh.r); CAPTURE(sh.s); CAPTURE(sh.stride); CAPTURE(sh.pad);
    const auto x = random_floats(sh.in_count(), 111);
    const auto w = random_floats(sh.weight_count(), 112);
    const auto b = random_floats(size_t(sh.k), 113);
    const Vec c = loss_weights(sh.out_count(), 114);
    std::vector<float> dy(c.begin(), c.end());
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* dx = a.zeros<float>(x.size());
          float* dw = a.zeros<float>(w.size());
          float* db = a.zeros<float>(b.size());
          float* dw2 = a.zeros<float>(w.size());
          be.conv2d_backward(sh, a.put(x), a.put(w), a.put(dy), dx, dw, db);
          be.conv2d_backward(sh, a.put(x), a.put(w), a.put(dy), nullptr, dw2, nullptr);
          return Outputs{a.get(dx, x.size()), a.get(dw, w.size()), a.get(db, b.size()),
                         a.get(dw2, w.size())};
        },
        [&](const Outputs& o) {
          Vec xd = to_double(x), wd = to_double(w), bd = to_double(b);
          auto loss = [&] { return weighted_sum(c, conv_ref(sh, xd, wd, &bd)); };
          const Vec gw = numeric_grad(wd, loss);
          check_grad(o[0], numeric_grad(xd, loss), "dx");
          check_grad(o[1], gw, "dw");
          check_grad(o[2], numeric_grad(bd, loss), "db");
          check_grad(o[3], gw, "dw without dx, db");
        });
  }
}

TEST_CASE("cpu_backend: conv2d_backward at lenet's conv2 shape against float64 sums") {
  // Too large for finite differences: the exact gradient sums in float64.
  const ConvShape sh{2, 32, 14, 14, 64, 5, 5, 1, 2};
  const auto x = random_floats(sh.in_count(), 121);
  const auto w = random_floats(sh.weight_count(), 122, -0.1f, 0.1f);
  const auto dy = random_floats(sh.out_count(), 123);
  on_devices(
      [&](Backend& be) {
        Arena a(be);
        float* dx = a.zeros<float>(x.size());
        float* dw = a.zeros<float>(w.size());
        float* db = a.zeros<float>(size_t(sh.k));
        be.conv2d_backward(sh, a.put(x), a.put(w), a.put(dy), dx, dw, db);
        return Outputs{a.get(dx, x.size()), a.get(dw, w.size()), a.get(db, size_t(sh.k))};
      },
      [&](const Outputs& o) {
        const int oh = sh.oh(), ow = sh.ow();
        Vec dx(x.size(), 0.0), dw(w.size(), 0.0), db(size_t(sh.k), 0.0);
        for (int n = 0; n < sh.n; ++n)
          for (int k = 0; k < sh.k; ++k)
            for (int oy = 0; oy < oh; ++oy)
              for (int ox = 0; ox < ow; ++ox) {
                const double g = dy[((size_t(n) * sh.k + k) * oh + oy) * ow + ox];
                db[size_t(k)] += g;
                for (int ci = 0; ci < sh.c; ++ci)
                  for (int ky = 0; ky < sh.r; ++ky)
                    for (int kx = 0; kx < sh.s; ++kx) {
                      const int iy = oy - sh.pad + ky, ix = ox - sh.pad + kx;
                      if (iy < 0 || iy >= sh.h || ix < 0 || ix >= sh.w) continue;
                      const size_t xi = ((size_t(n) * sh.c + ci) * sh.h + iy) * sh.w + ix;
                      const size_t wi = ((size_t(k) * sh.c + ci) * sh.r + ky) * sh.s + kx;
                      dx[xi] += g * w[wi];
                      dw[wi] += g * x[xi];
                    }
              }
        check_grad(o[0], dx, "dx", 1e-5, 1e-5);
        check_grad(o[1], dw, "dw", 1e-5, 1e-5);
        check_grad(o[2], db, "db", 1e-5, 1e-5);
      });
}

TEST_CASE("cpu_backend: relu_backward against finite differences") {
  const size_t count = 301;
  auto x = random_floats(count, 131);
  for (float& v : x) v = v >= 0 ? v + 0.05f : v - 0.05f;  // away from the kink
  const Vec c = loss_weights(count, 132);
  std::vector<float> dy(c.begin(), c.end());
  on_devices(
      [&](Backend& be) {
        Arena a(be);
        float* y = a.zeros<float>(count);
        float* dx = a.zeros<float>(count);
        be.relu_forward(count, a.put(x), y);
        be.relu_backward(count, y, a.put(dy), dx);
        return Outputs{a.get(dx, count)};
      },
      [&](const Outputs& o) {
        Vec xd = to_double(x);
        auto loss = [&] {
          double s = 0.0;
          for (size_t i = 0; i < count; ++i) s += c[i] * std::max(xd[i], 0.0);
          return s;
        };
        check_grad(o[0], numeric_grad(xd, loss), "dx");
      });
}

TEST_CASE("cpu_backend: pool_backward (max, avg, global avg) against finite differences") {
  for (const PoolCase& pc : kPoolCases) {
    const PoolShape& sh = pc.sh;
    CAPTURE(int(pc.kind)); CAPTURE(sh.n); CAPTURE(sh.c); CAPTURE(sh.h); CAPTURE(sh.w);
    CAPTURE(sh.kernel); CAPTURE(sh.stride); CAPTURE(sh.pad);
    // Distinct values 0.01 apart, shuffled: the perturbation never changes an argmax.
    std::vector<float> x(sh.in_count());
    std::vector<size_t> order(x.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::mt19937 rng(141);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i = 0; i < x.size(); ++i) x[order[i]] = -1.0f + 0.01f * float(i);
    const Vec c = loss_weights(sh.out_count(), 142);
    std::vector<float> dy(c.begin(), c.end());
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* y = a.zeros<float>(sh.out_count());
          int32_t* arg = pc.kind == PoolKind::kMax ? a.zeros<int32_t>(sh.out_count()) : nullptr;
          float* dx = a.put(std::vector<float>(x.size(), 7.0f));  // overwritten
          be.pool_forward(pc.kind, sh, a.put(x), y, arg);
          be.pool_backward(pc.kind, sh, a.put(dy), arg, dx);
          return Outputs{a.get(dx, x.size())};
        },
        [&](const Outputs& o) {
          Vec xd = to_double(x);
          auto loss = [&] { return weighted_sum(c, pool_ref(pc.kind, sh, xd)); };
          check_grad(o[0], numeric_grad(xd, loss, 1e-4), "dx");
        });
  }
}

TEST_CASE("cpu_backend: batchnorm_backward against finite differences") {
  const BatchNormShape shapes[] = {{4, 3, 5}, {6, 2, 1}, {2, 3, 7}};
  for (const BatchNormShape& sh : shapes) {
    CAPTURE(sh.n); CAPTURE(sh.c); CAPTURE(sh.hw);
    const float eps = 1e-5f;
    const auto x = random_floats(sh.count(), 151, -2.0f, 2.0f);
    const auto gamma = random_floats(size_t(sh.c), 152, 0.5f, 1.5f);
    const auto beta = random_floats(size_t(sh.c), 153);
    const Vec cw = loss_weights(sh.count(), 154);
    std::vector<float> dy(cw.begin(), cw.end());
    const size_t c = size_t(sh.c);
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* rm = a.zeros<float>(c);
          float* rv = a.zeros<float>(c);
          float* sm = a.zeros<float>(c);
          float* si = a.zeros<float>(c);
          float* y = a.zeros<float>(sh.count());
          float* dxp = a.put(x);
          float* gp = a.put(gamma);
          be.batchnorm_forward_train(sh, dxp, gp, a.put(beta), 0.1f, eps, rm, rv, sm, si, y);
          float* dx = a.zeros<float>(sh.count());
          float* dg = a.zeros<float>(c);
          float* db = a.zeros<float>(c);
          be.batchnorm_backward(sh, dxp, gp, a.put(dy), sm, si, dx, dg, db);
          return Outputs{a.get(dx, sh.count()), a.get(dg, c), a.get(db, c)};
        },
        [&](const Outputs& o) {
          Vec xd = to_double(x), gd = to_double(gamma), bd = to_double(beta);
          auto loss = [&] { return weighted_sum(cw, bn_train_ref(sh, xd, gd, bd, eps)); };
          check_grad(o[0], numeric_grad(xd, loss), "dx");
          check_grad(o[1], numeric_grad(gd, loss), "dgamma");
          check_grad(o[2], numeric_grad(bd, loss), "dbeta");
        });
  }
}

TEST_CASE("cpu_backend: dropout backward (same seed on dy) against finite differences") {
  const size_t count = 257;
  const float p = 0.3f;
  const uint64_t seed = 5;
  const auto x = random_floats(count, 161);
  const Vec c = loss_weights(count, 162);
  std::vector<float> dy(c.begin(), c.end());
  on_devices(
      [&](Backend& be) {
        Arena a(be);
        float* mask = a.zeros<float>(count);
        float* y = a.zeros<float>(count);
        float* dx = a.zeros<float>(count);
        be.dropout_forward(count, p, seed, a.put(x), mask, y);
        be.dropout_forward(count, p, seed, a.put(dy), mask, dx);  // dx = dy · mask
        return Outputs{a.get(dx, count), a.get(mask, count)};
      },
      [&](const Outputs& o) {
        Vec xd = to_double(x);
        const std::vector<float>& mask = o[1];
        auto loss = [&] {
          double s = 0.0;
          for (size_t i = 0; i < count; ++i) s += c[i] * xd[i] * mask[i];
          return s;
        };
        check_grad(o[0], numeric_grad(xd, loss), "dx");
      });
}

TEST_CASE("cpu_backend: softmax_xent dlogits against finite differences") {
  struct S { int n, classes; };
  for (S s : {S{1, 4}, S{5, 10}, S{3, 2}}) {
    CAPTURE(s.n); CAPTURE(s.classes);
    const auto z = random_floats(size_t(s.n) * s.classes, 171, -3.0f, 3.0f);
    std::vector<int32_t> labels(size_t(s.n));
    for (int i = 0; i < s.n; ++i) labels[size_t(i)] = (3 * i + 1) % s.classes;
    on_devices(
        [&](Backend& be) {
          Arena a(be);
          float* dz = a.zeros<float>(z.size());
          float* stats = a.zeros<float>(2);
          be.softmax_xent(s.n, s.classes, a.put(z), a.put(labels), dz, stats);
          return Outputs{a.get(dz, z.size())};
        },
        [&](const Outputs& o) {
          Vec zd = to_double(z);
          auto loss = [&] { return xent_ref(s.n, s.classes, zd, labels); };
          check_grad(o[0], numeric_grad(zd, loss), "dlogits");
        });
  }
}

// ---- determinism and argument checks -----------------------------------------

TEST_CASE("cpu_backend: bit-identical results run to run at a fixed thread count") {
  // lenet's conv2 and fc1 at batch 16: oneDNN's reductions, our sketch and dot.
  const ConvShape sh{16, 32, 14, 14, 64, 5, 5, 1, 2};
  const auto x = random_floats(sh.in_count(), 181);
  const auto w = random_floats(sh.weight_count(), 182, -0.1f, 0.1f);
  const auto b = random_floats(size_t(sh.k), 183);
  const auto dy = random_floats(sh.out_count(), 184);
  const auto fx = random_floats(size_t(16) * 3136, 185);
  const auto fw = random_floats(size_t(128) * 3136, 186, -0.05f, 0.05f);
  const auto fdy = random_floats(size_t(16) * 128, 187);
  auto run = [&](Backend& be) {
    Arena a(be);
    float* y = a.zeros<float>(sh.out_count());
    float* dx = a.zeros<float>(x.size());
    float* dw = a.zeros<float>(w.size());
    float* db = a.zeros<float>(b.size());
    float* fy = a.zeros<float>(size_t(16) * 128);
    float* fdx = a.zeros<float>(fx.size());
    float* fdw = a.zeros<float>(fw.size());
    float* fdb = a.zeros<float>(128);
    float* sk = a.zeros<float>(1024);
    be.conv2d_forward(sh, a.put(x), a.put(w), a.put(b), y);
    be.conv2d_backward(sh, a.put(x), a.put(w), a.put(dy), dx, dw, db);
    be.linear_forward(16, 3136, 128, a.put(fx), a.put(fw), nullptr, fy);
    be.linear_backward(16, 3136, 128, a.put(fx), a.put(fw), a.put(fdy), fdx, fdw, fdb);
    be.count_sketch(fw.size(), a.put(fw), 77, 1024, sk);
    const double d = be.dot(fw.size(), a.put(fw), fdw);
    return Outputs{a.get(y, sh.out_count()), a.get(dx, x.size()), a.get(dw, w.size()),
                   a.get(db, b.size()), a.get(fy, size_t(16) * 128), a.get(fdx, fx.size()),
                   a.get(fdw, fw.size()), a.get(fdb, 128), a.get(sk, 1024), {float(d)}};
  };
  for (int threads : {1, 2}) {
    CAPTURE(threads);
    BackendOptions opts;
    opts.threads = threads;
    auto be1 = make_cpu_backend(opts);
    auto be2 = make_cpu_backend(opts);
    const Outputs first = run(*be1);
    const Outputs again = run(*be1);   // cached primitives
    const Outputs fresh = run(*be2);   // a new backend
    for (size_t i = 0; i < first.size(); ++i) {
      CAPTURE(i);
      CHECK(std::memcmp(first[i].data(), again[i].data(), first[i].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(first[i].data(), fresh[i].data(), first[i].size() * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("cpu_backend: bad arguments throw std::invalid_argument") {
  Backend& be = backend("cpu");
  std::vector<float> buf(4096);
  std::vector<int32_t> ibuf(4096);
  float* p = buf.data();
  CHECK_THROWS_AS(be.conv2d_forward(ConvShape{1, 1, 3, 3, 1, 5, 5, 1, 0}, p, p, nullptr, p),
                  std::invalid_argument);  // kernel larger than the input
  CHECK_THROWS_AS(be.conv2d_forward(ConvShape{1, 1, 3, 3, 1, 1, 1, 0, 0}, p, p, nullptr, p),
                  std::invalid_argument);  // stride 0
  CHECK_THROWS_AS(be.pool_forward(PoolKind::kMax, PoolShape{1, 1, 4, 4, 2, 2, 0}, p, p, nullptr),
                  std::invalid_argument);  // max pooling without argmax
  CHECK_THROWS_AS(be.pool_forward(PoolKind::kAvg, PoolShape{1, 1, 4, 4, 2, 2, 2}, p, p, nullptr),
                  std::invalid_argument);  // pad > kernel / 2
  CHECK_THROWS_AS(be.dropout_forward(4, 1.0f, 1, p, p, p), std::invalid_argument);
  ibuf[0] = 10;
  CHECK_THROWS_AS(be.softmax_xent(1, 10, p, ibuf.data(), p, p), std::invalid_argument);
  CHECK_THROWS_AS(be.count_sketch(4, p, 1, 0, p), std::invalid_argument);
  CHECK_THROWS_AS(be.batchnorm_forward_train(BatchNormShape{1, 2, 1}, p, p, p, 0.1f, 1e-5f, p, p,
                                             p, p, p),
                  std::invalid_argument);  // one value per channel
  BackendOptions bad;
  bad.threads = -1;
  CHECK_THROWS_AS(make_cpu_backend(bad), std::invalid_argument);
}

TEST_CASE("cpu_backend: threads = 0 uses every core and computes the same values") {
  const ConvShape sh{3, 4, 9, 9, 5, 3, 3, 1, 1};
  const auto x = random_floats(sh.in_count(), 191);
  const auto w = random_floats(sh.weight_count(), 192);
  auto run = [&](Backend& be) {
    Arena a(be);
    float* y = a.zeros<float>(sh.out_count());
    be.conv2d_forward(sh, a.put(x), a.put(w), nullptr, y);
    return a.get(y, sh.out_count());
  };
  BackendOptions all;
  all.threads = 0;
  auto be = make_cpu_backend(all);
  Vec scale;
  const Vec want = conv_ref(sh, to_double(x), to_double(w), nullptr, &scale);
  check_close(run(*be), want, scale, 1e-5, 1e-6, "conv2d y, threads = 0");
}

}  // namespace
}  // namespace tether
