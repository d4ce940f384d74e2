// The CUDA backend against plain host references computed another way
// (double accumulation, naive loops, kernel_math.h on the CPU), with
// position-dependent inputs so an element landing in the wrong place cannot
// pass. Independent of the CPU backend: test/cpu's suite compares the two
// backends layer by layer on every available device.
//
// Without a CUDA device (or without the CUDA backend compiled in) every case
// says so in a MESSAGE and checks nothing.
#include <doctest/doctest.h>

#if TETHER_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/cpu_backend.h"
#include "gpu/cuda_backend.h"
#include "models/backend.h"
#include "models/kernel_math.h"

using tether::Backend;
using tether::BackendOptions;
using tether::ConvShape;
using tether::DeviceBuffer;
using tether::PoolKind;
using tether::PoolShape;
namespace km = tether::kmath;

namespace {

// The shared cuda:0 backend, or null (and a MESSAGE) when there is none.
Backend* gpu() {
  static std::string why;
  static std::unique_ptr<Backend> be = [] {
    std::unique_ptr<Backend> b;
    if (tether::cuda_device_count(&why) > 0) b = tether::make_cuda_backend(0, BackendOptions{});
    return b;
  }();
  static bool said = false;
  if (be == nullptr && !said) {
    said = true;
    MESSAGE("cuda cases skipped, no CUDA device: " << why);
  }
  return be.get();
}

#define GPU_OR_SKIP()        \
  Backend* be = gpu();       \
  if (be == nullptr) return; \
  (void)be

// Deterministic, position-dependent values in about [-1, 1].
std::vector<float> wave(size_t n, float phase) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(0.37f * float(i) + phase) * (1.0f + 0.001f * float(i % 97));
  return v;
}

template <typename T>
DeviceBuffer<T> up(Backend* be, const std::vector<T>& v) {
  DeviceBuffer<T> b(be, v.size());
  be->upload(b.get(), v.data(), v.size() * sizeof(T));
  return b;
}
template <typename T>
std::vector<T> down(Backend* be, const DeviceBuffer<T>& b) {
  std::vector<T> v(b.size());
  be->download(v.data(), b.get(), b.bytes());
  return v;
}

// |got - want| <= tol · (1 + |want|) everywhere; reports the first miss.
template <typename A, typename B>
void check_close(const std::vector<A>& got, const std::vector<B>& want, double tol,
                 const char* what) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    double g = double(got[i]), w = double(want[i]);
    if (!(std::abs(g - w) <= tol * (1.0 + std::abs(w)))) {
      FAIL_CHECK(what << "[" << i << "] = " << g << ", want " << w);
      return;
    }
  }
}

}  // namespace

TEST_CASE("cuda: name, device memory, zero-initialised allocation") {
  GPU_OR_SKIP();
  CHECK(be->name() == "cuda:0");
  CHECK(be->is_device());
  DeviceBuffer<float> z(be, 12345);
  std::vector<float> h = down(be, z);
  CHECK(std::all_of(h.begin(), h.end(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("cuda: upload/download round trips across staging-chunk boundaries") {
  GPU_OR_SKIP();
  const size_t chunk = (size_t(4) << 20) / sizeof(float);  // one pinned staging slot
  for (size_t n : {size_t(1), size_t(7), chunk - 1, chunk, chunk + 1, 3 * chunk + 5}) {
    CAPTURE(n);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = float(i) * 0.5f - 3.0f;
    auto d = up(be, v);
    CHECK(down(be, d) == v);
    DeviceBuffer<float> c(be, n);
    be->copy(c.get(), d.get(), n * sizeof(float));
    CHECK(down(be, c) == v);
  }
  // Odd byte counts.
  std::vector<uint8_t> bytes{1, 2, 3, 4, 5};
  auto db = up(be, bytes);
  CHECK(down(be, db) == bytes);
}

TEST_CASE("cuda: back-to-back uploads into one buffer are ordered with compute") {
  GPU_OR_SKIP();
  // upload A; y = A; upload B; y += B: the second upload must not overwrite
  // x before the first add has read it.
  const size_t n = 1 << 20;
  std::vector<float> a(n, 1.0f), b(n, 2.0f);
  DeviceBuffer<float> x(be, n), y(be, n);
  be->upload(x.get(), a.data(), n * sizeof(float));
  be->copy(y.get(), x.get(), n * sizeof(float));
  be->upload(x.get(), b.data(), n * sizeof(float));
  be->axpy(n, 1.0f, x.get(), y.get());
  std::vector<float> got = down(be, y);
  CHECK(std::all_of(got.begin(), got.end(), [](float v) { return v == 3.0f; }));
}

TEST_CASE("cuda: fill, axpy, scale, add, sub") {
  GPU_OR_SKIP();
  // 20M elements: more than one grid pass of the grid-stride loops.
  for (size_t n : {size_t(1), size_t(1000), size_t(20) << 20}) {
    CAPTURE(n);
    std::vector<float> a = wave(n, 0.1f), b = wave(n, 1.3f);
    auto da = up(be, a), db = up(be, b);
    DeviceBuffer<float> y(be, n);
    be->add(n, da.get(), db.get(), y.get());
    std::vector<float> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = a[i] + b[i];
    CHECK(down(be, y) == want);
    be->sub(n, da.get(), db.get(), y.get());
    for (size_t i = 0; i < n; ++i) want[i] = a[i] - b[i];
    CHECK(down(be, y) == want);
    be->scale(n, -0.75f, y.get());
    for (size_t i = 0; i < n; ++i) want[i] *= -0.75f;
    CHECK(down(be, y) == want);
    be->axpy(n, 0.3f, da.get(), y.get());
    for (size_t i = 0; i < n; ++i) want[i] += 0.3f * a[i];
    check_close(down(be, y), want, 1e-6, "axpy");
    be->fill(n, 2.5f, y.get());
    CHECK(down(be, y) == std::vector<float>(n, 2.5f));
  }
}

TEST_CASE("cuda: dot in double, deterministic; all_finite") {
  GPU_OR_SKIP();
  for (size_t n : {size_t(0), size_t(1), size_t(513), size_t(3) << 20}) {
    CAPTURE(n);
    std::vector<float> a = wave(n, 0.2f), b = wave(n, 2.1f);
    auto da = up(be, a), db = up(be, b);
    double want = 0.0;
    for (size_t i = 0; i < n; ++i) want += double(a[i]) * double(b[i]);
    double got = be->dot(n, da.get(), db.get());
    CHECK(got == doctest::Approx(want).epsilon(1e-12).scale(1.0));
    CHECK(be->dot(n, da.get(), db.get()) == got);  // same bits
    CHECK(be->all_finite(n, da.get()));
  }
  std::vector<float> v = wave(1000, 0.0f);
  auto dv = up(be, v);
  CHECK(be->all_finite(v.size(), dv.get()));
  float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  be->upload(dv.get() + 999, &nan, sizeof(float));
  CHECK_FALSE(be->all_finite(v.size(), dv.get()));
  CHECK(be->all_finite(999, dv.get()));
  be->upload(dv.get() + 999, &v[999], sizeof(float));
  be->upload(dv.get(), &inf, sizeof(float));
  CHECK_FALSE(be->all_finite(v.size(), dv.get()));
}

TEST_CASE("cuda: sgd_step matches kmath::sgd_element on the host") {
  GPU_OR_SKIP();
  const size_t n = 100003;
  for (bool nesterov : {false, true}) {
    for (float momentum : {0.0f, 0.9f}) {
      CAPTURE(nesterov);
      CAPTURE(momentum);
      std::vector<float> w = wave(n, 0.5f), m = wave(n, 1.5f), g = wave(n, 2.5f);
      auto dw = up(be, w), dm = up(be, m), dg = up(be, g);
      for (int step = 0; step < 3; ++step) {
        be->sgd_step(n, 0.05f, momentum, 5e-4f, nesterov, dg.get(), dm.get(), dw.get());
        for (size_t i = 0; i < n; ++i) km::sgd_element(0.05f, momentum, 5e-4f, nesterov, g[i], m[i], w[i]);
      }
      check_close(down(be, dw), w, 1e-6, "w");
      check_close(down(be, dm), m, 1e-6, "m");
    }
  }
}

TEST_CASE("cuda: dropout draws kmath's mask") {
  GPU_OR_SKIP();
  const size_t n = 50001;
  std::vector<float> x = wave(n, 0.3f);
  auto dx = up(be, x);
  DeviceBuffer<float> mask(be, n), y(be, n);
  for (float p : {0.0f, 0.25f, 0.5f}) {
    CAPTURE(p);
    be->dropout_forward(n, p, 77, dx.get(), mask.get(), y.get());
    std::vector<float> wm(n), wy(n);
    for (size_t i = 0; i < n; ++i) {
      wm[i] = km::dropout_mask(77, i, p);
      wy[i] = x[i] * wm[i];
    }
    CHECK(down(be, mask) == wm);
    CHECK(down(be, y) == wy);
  }
  CHECK_THROWS_AS(be->dropout_forward(n, 1.0f, 1, dx.get(), mask.get(), y.get()),
                  std::invalid_argument);
}

TEST_CASE("cuda: count_sketch matches a host CountSketch in double") {
  GPU_OR_SKIP();
  for (int buckets : {1, 64, 1024, 10000}) {  // 10000: the global-atomics path
    for (size_t n : {size_t(0), size_t(5), size_t(1) << 20}) {
      CAPTURE(buckets);
      CAPTURE(n);
      std::vector<float> x = wave(n, 0.9f);
      auto dx = up(be, x);
      DeviceBuffer<float> out(be, size_t(buckets));
      be->fill(size_t(buckets), 123.0f, out.get());  // overwritten, not accumulated
      be->count_sketch(n, dx.get(), 99, buckets, out.get());
      std::vector<double> want(size_t(buckets), 0.0);
      for (size_t i = 0; i < n; ++i) {
        want[km::sketch_bucket(99, i, uint32_t(buckets))] += double(km::sketch_sign(99, i)) * x[i];
      }
      check_close(down(be, out), want, 1e-5, "sketch");
    }
  }
}

TEST_CASE("cuda: normalize_bytes") {
  GPU_OR_SKIP();
  const size_t n = 28 * 28 * 64 + 3;
  std::vector<uint8_t> bytes(n);
  for (size_t i = 0; i < n; ++i) bytes[i] = uint8_t((i * 37 + 11) % 256);
  DeviceBuffer<float> dst(be, n);
  be->normalize_bytes(n, bytes.data(), 0.2860f, 0.3530f, dst.get());
  // The same host bytes again: the staging buffer is reused in stream order.
  DeviceBuffer<float> dst2(be, n);
  std::vector<uint8_t> bytes2(bytes.rbegin(), bytes.rend());
  be->normalize_bytes(n, bytes2.data(), 0.2860f, 0.3530f, dst2.get());
  std::vector<float> want(n), want2(n);
  for (size_t i = 0; i < n; ++i) {
    want[i] = km::normalize_byte(bytes[i], 0.2860f, 1.0f / 0.3530f);
    want2[i] = km::normalize_byte(bytes2[i], 0.2860f, 1.0f / 0.3530f);
  }
  check_close(down(be, dst), want, 1e-6, "normalize");
  check_close(down(be, dst2), want2, 1e-6, "normalize2");
}

TEST_CASE("cuda: softmax_xent and argmax_rows against double references") {
  GPU_OR_SKIP();
  for (int classes : {1, 10, 100}) {
    for (int n : {1, 37, 256}) {
      CAPTURE(classes);
      CAPTURE(n);
      std::vector<float> logits = wave(size_t(n) * classes, 0.4f);
      for (float& v : logits) v *= 4.0f;
      std::vector<int32_t> labels(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) labels[size_t(i)] = (i * 7 + 3) % classes;
      // A tie in row 0: the first maximum must win in both backends.
      if (classes >= 8) {
        logits[3] = 50.0f;
        logits[7] = 50.0f;
      }
      auto dl = up(be, logits);
      auto dlab = up(be, labels);
      DeviceBuffer<float> dlogits(be, logits.size()), stats(be, 2);
      DeviceBuffer<int32_t> pred(be, size_t(n));
      be->softmax_xent(n, classes, dl.get(), dlab.get(), dlogits.get(), stats.get());
      be->softmax_xent(n, classes, dl.get(), dlab.get(), nullptr, stats.get());  // accumulates
      be->argmax_rows(n, classes, dl.get(), pred.get());

      double loss = 0.0;
      int correct = 0;
      std::vector<double> grad(logits.size());
      std::vector<int32_t> want_pred(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        const float* z = &logits[size_t(i) * classes];
        int best = 0;
        for (int j = 1; j < classes; ++j) best = z[j] > z[best] ? j : best;
        want_pred[size_t(i)] = best;
        double mx = z[best], sum = 0.0;
        for (int j = 0; j < classes; ++j) sum += std::exp(double(z[j]) - mx);
        loss += std::log(sum) + mx - double(z[labels[size_t(i)]]);
        correct += best == labels[size_t(i)];
        for (int j = 0; j < classes; ++j) {
          grad[size_t(i) * classes + j] =
              (std::exp(double(z[j]) - mx) / sum - (j == labels[size_t(i)] ? 1.0 : 0.0)) / n;
        }
      }
      std::vector<float> st = down(be, stats);
      CHECK(st[0] == doctest::Approx(2.0 * loss).epsilon(1e-5));
      CHECK(st[1] == float(2 * correct));
      check_close(down(be, dlogits), grad, 1e-5, "dlogits");
      CHECK(down(be, pred) == want_pred);
      if (classes >= 8) CHECK(want_pred[0] == 3);
    }
  }
}

TEST_CASE("cuda: softmax_xent reports a label out of range at the next wait") {
  GPU_OR_SKIP();
  std::vector<float> logits = wave(4 * 10, 0.0f);
  std::vector<int32_t> labels{1, 2, 10, 3};
  auto dl = up(be, logits);
  auto dlab = up(be, labels);
  DeviceBuffer<float> stats(be, 2);
  be->softmax_xent(4, 10, dl.get(), dlab.get(), nullptr, stats.get());
  std::string what;
  try {
    be->synchronize();
  } catch (const std::invalid_argument& e) {
    what = e.what();
  }
  CHECK(what.find("label 10 of row 2") != std::string::npos);
  CHECK_NOTHROW(be->synchronize());  // reported once; the backend stays usable
}

namespace {

// Naive conv in double: y = conv(x, w) + b, and the three gradients.
struct ConvRef {
  std::vector<double> y, dx, dw, db;
};
ConvRef conv_ref(const ConvShape& s, const std::vector<float>& x, const std::vector<float>& w,
                 const std::vector<float>& b, const std::vector<float>& dy) {
  ConvRef r;
  const int oh = s.oh(), ow = s.ow();
  r.y.assign(s.out_count(), 0.0);
  r.dx.assign(s.in_count(), 0.0);
  r.dw.assign(s.weight_count(), 0.0);
  r.db.assign(size_t(s.k), 0.0);
  for (int n = 0; n < s.n; ++n)
    for (int k = 0; k < s.k; ++k)
      for (int oy = 0; oy < oh; ++oy)
        for (int ox = 0; ox < ow; ++ox) {
          size_t yi = ((size_t(n) * s.k + k) * oh + oy) * ow + ox;
          double acc = b[size_t(k)];
          double g = dy[yi];
          r.db[size_t(k)] += g;
          for (int c = 0; c < s.c; ++c)
            for (int ky = 0; ky < s.r; ++ky)
              for (int kx = 0; kx < s.s; ++kx) {
                int iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                size_t xi = ((size_t(n) * s.c + c) * s.h + iy) * s.w + ix;
                size_t wi = ((size_t(k) * s.c + c) * s.r + ky) * s.s + kx;
                acc += double(x[xi]) * w[wi];
                r.dx[xi] += g * w[wi];
                r.dw[wi] += g * x[xi];
              }
          r.y[yi] = acc;
        }
  return r;
}

}  // namespace

TEST_CASE("cuda: conv2d forward and backward against naive loops") {
  GPU_OR_SKIP();
  const ConvShape shapes[] = {
      {2, 3, 7, 6, 4, 3, 3, 2, 1},   // odd sizes, stride 2, padding
      {3, 8, 16, 16, 16, 3, 3, 1, 1},
      {2, 5, 4, 4, 3, 1, 1, 1, 0},   // 1x1
      {1, 1, 28, 28, 6, 5, 5, 1, 0}, // LeNet's first layer
  };
  for (const ConvShape& s : shapes) {
    CAPTURE(s.n);
    CAPTURE(s.c);
    CAPTURE(s.h);
    CAPTURE(s.k);
    CAPTURE(s.r);
    CAPTURE(s.stride);
    CAPTURE(s.pad);
    std::vector<float> x = wave(s.in_count(), 0.1f), w = wave(s.weight_count(), 0.7f),
                       b = wave(size_t(s.k), 1.9f), dy = wave(s.out_count(), 2.3f);
    ConvRef ref = conv_ref(s, x, w, b, dy);
    auto dx_in = up(be, x), dw_in = up(be, w), db_in = up(be, b), ddy = up(be, dy);
    DeviceBuffer<float> y(be, s.out_count()), dx(be, s.in_count()), dw(be, s.weight_count()),
        db(be, size_t(s.k));
    for (int rep = 0; rep < 2; ++rep) {  // the second call uses the cached plan
      be->conv2d_forward(s, dx_in.get(), dw_in.get(), db_in.get(), y.get());
      be->conv2d_backward(s, dx_in.get(), dw_in.get(), ddy.get(), dx.get(), dw.get(), db.get());
      // cuDNN may pick FFT or Winograd algorithms: a looser bound than GEMM's.
      check_close(down(be, y), ref.y, 5e-4, "y");
      check_close(down(be, dx), ref.dx, 5e-4, "dx");
      check_close(down(be, dw), ref.dw, 5e-4, "dw");
      check_close(down(be, db), ref.db, 5e-4, "db");
    }
    // No bias, no dx.
    be->conv2d_forward(s, dx_in.get(), dw_in.get(), nullptr, y.get());
    std::vector<double> ynb = ref.y;
    const size_t plane = size_t(s.oh()) * s.ow();
    for (size_t i = 0; i < ynb.size(); ++i) ynb[i] -= b[(i / plane) % size_t(s.k)];
    check_close(down(be, y), ynb, 5e-4, "y without bias");
    be->conv2d_backward(s, dx_in.get(), dw_in.get(), ddy.get(), nullptr, dw.get(), nullptr);
    check_close(down(be, dw), ref.dw, 5e-4, "dw alone");
  }
  ConvShape bad{1, 1, 2, 2, 1, 5, 5, 1, 0};
  DeviceBuffer<float> t(be, 64);
  CHECK_THROWS_AS(be->conv2d_forward(bad, t.get(), t.get(), nullptr, t.get()),
                  std::invalid_argument);
}

TEST_CASE("cuda: linear forward and backward against naive loops") {
  GPU_OR_SKIP();
  struct Dims {
    int n, in, out;
  };
  for (Dims d : {Dims{5, 7, 3}, Dims{64, 300, 33}, Dims{1, 1, 1}}) {
    CAPTURE(d.n);
    CAPTURE(d.in);
    CAPTURE(d.out);
    std::vector<float> x = wave(size_t(d.n) * d.in, 0.2f), w = wave(size_t(d.out) * d.in, 1.1f),
                       b = wave(size_t(d.out), 2.2f), dy = wave(size_t(d.n) * d.out, 3.3f);
    std::vector<double> y(size_t(d.n) * d.out), dx(size_t(d.n) * d.in, 0.0),
        dw(size_t(d.out) * d.in, 0.0), db(size_t(d.out), 0.0);
    for (int i = 0; i < d.n; ++i)
      for (int o = 0; o < d.out; ++o) {
        double acc = b[size_t(o)];
        double g = dy[size_t(i) * d.out + o];
        db[size_t(o)] += g;
        for (int k = 0; k < d.in; ++k) {
          acc += double(x[size_t(i) * d.in + k]) * w[size_t(o) * d.in + k];
          dx[size_t(i) * d.in + k] += g * w[size_t(o) * d.in + k];
          dw[size_t(o) * d.in + k] += g * x[size_t(i) * d.in + k];
        }
        y[size_t(i) * d.out + o] = acc;
      }
    auto gx = up(be, x), gw = up(be, w), gb = up(be, b), gdy = up(be, dy);
    DeviceBuffer<float> gy(be, y.size()), gdx(be, dx.size()), gdw(be, dw.size()),
        gdb(be, db.size());
    be->linear_forward(d.n, d.in, d.out, gx.get(), gw.get(), gb.get(), gy.get());
    be->linear_backward(d.n, d.in, d.out, gx.get(), gw.get(), gdy.get(), gdx.get(), gdw.get(),
                        gdb.get());
    check_close(down(be, gy), y, 1e-4, "y");
    check_close(down(be, gdx), dx, 1e-4, "dx");
    check_close(down(be, gdw), dw, 1e-4, "dw");
    check_close(down(be, gdb), db, 1e-4, "db");
  }
}

TEST_CASE("cuda: TF32 option opens and stays close to fp32") {
  GPU_OR_SKIP();
  BackendOptions o;
  o.tf32 = true;
  auto t = tether::make_cuda_backend(0, o);
  const int n = 32, in = 256, out = 64;
  std::vector<float> x = wave(size_t(n) * in, 0.2f), w = wave(size_t(out) * in, 1.1f);
  auto gx = up(t.get(), x), gw = up(t.get(), w);
  DeviceBuffer<float> gy(t.get(), size_t(n) * out);
  t->linear_forward(n, in, out, gx.get(), gw.get(), nullptr, gy.get());
  std::vector<double> want(size_t(n) * out);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < out; ++j) {
      double acc = 0.0;
      for (int k = 0; k < in; ++k) acc += double(x[size_t(i) * in + k]) * w[size_t(j) * in + k];
      want[size_t(i) * out + j] = acc;
    }
  check_close(down(t.get(), gy), want, 2e-2, "tf32 y");
}

TEST_CASE("cuda: relu forward and backward") {
  GPU_OR_SKIP();
  const size_t n = 10007;
  std::vector<float> x = wave(n, 0.6f), dy = wave(n, 1.6f);
  x[0] = 0.0f;
  auto gx = up(be, x), gdy = up(be, dy);
  DeviceBuffer<float> y(be, n), dx(be, n);
  be->relu_forward(n, gx.get(), y.get());
  be->relu_backward(n, y.get(), gdy.get(), dx.get());
  std::vector<float> wy(n), wdx(n);
  for (size_t i = 0; i < n; ++i) {
    wy[i] = x[i] > 0.0f ? x[i] : 0.0f;
    wdx[i] = wy[i] > 0.0f ? dy[i] : 0.0f;
  }
  CHECK(down(be, y) == wy);
  CHECK(down(be, dx) == wdx);
  be->relu_forward(n, gx.get(), gx.get());  // in place
  CHECK(down(be, gx) == wy);
}

TEST_CASE("cuda: max and average pooling against naive loops") {
  GPU_OR_SKIP();
  const PoolShape shapes[] = {{2, 3, 8, 6, 2, 2, 0}, {2, 2, 7, 5, 3, 2, 1}, {1, 4, 9, 9, 3, 3, 0}};
  for (const PoolShape& s : shapes) {
    for (PoolKind kind : {PoolKind::kMax, PoolKind::kAvg}) {
      CAPTURE(s.h);
      CAPTURE(s.kernel);
      CAPTURE(s.stride);
      CAPTURE(s.pad);
      CAPTURE(int(kind));
      std::vector<float> x = wave(s.in_count(), 0.8f), dy = wave(s.out_count(), 1.8f);
      const int oh = s.oh(), ow = s.ow();
      std::vector<float> wy(s.out_count());
      std::vector<int32_t> warg(s.out_count());
      std::vector<double> wdx(s.in_count(), 0.0);
      for (int p = 0; p < s.n * s.c; ++p)
        for (int oy = 0; oy < oh; ++oy)
          for (int ox = 0; ox < ow; ++ox) {
            size_t o = (size_t(p) * oh + oy) * ow + ox;
            float best = -std::numeric_limits<float>::infinity(), sum = 0.0f;
            int32_t bi = -1;
            for (int ky = 0; ky < s.kernel; ++ky)
              for (int kx = 0; kx < s.kernel; ++kx) {
                int iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                int32_t i = int32_t((size_t(p) * s.h + iy) * s.w + ix);
                sum += x[size_t(i)];
                if (bi < 0 || x[size_t(i)] > best) {
                  best = x[size_t(i)];
                  bi = i;
                }
              }
            float area = float(s.kernel * s.kernel);
            wy[o] = kind == PoolKind::kMax ? best : sum * (1.0f / area);
            warg[o] = bi;
            if (kind == PoolKind::kMax) {
              wdx[size_t(bi)] += dy[o];
            } else {
              for (int ky = 0; ky < s.kernel; ++ky)
                for (int kx = 0; kx < s.kernel; ++kx) {
                  int iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
                  if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                  wdx[(size_t(p) * s.h + iy) * s.w + ix] += double(dy[o]) / area;
                }
            }
          }
      auto gx = up(be, x), gdy = up(be, dy);
      DeviceBuffer<float> y(be, s.out_count()), dx(be, s.in_count());
      DeviceBuffer<int32_t> arg(be, s.out_count());
      int32_t* ap = kind == PoolKind::kMax ? arg.get() : nullptr;
      be->pool_forward(kind, s, gx.get(), y.get(), ap);
      be->pool_backward(kind, s, gdy.get(), ap, dx.get());
      check_close(down(be, y), wy, 1e-6, "y");
      if (kind == PoolKind::kMax) CHECK(down(be, arg) == warg);
      check_close(down(be, dx), wdx, 1e-5, "dx");
    }
  }
}

TEST_CASE("cuda: batch norm train, eval and backward against double formulas") {
  GPU_OR_SKIP();
  struct Bn {
    int n, c, hw;
  };
  for (Bn s : {Bn{4, 3, 5}, Bn{16, 8, 1}, Bn{8, 16, 64}}) {
    CAPTURE(s.n);
    CAPTURE(s.c);
    CAPTURE(s.hw);
    const tether::BatchNormShape sh{s.n, s.c, s.hw};
    const size_t cnt = sh.count(), m = size_t(s.n) * s.hw;
    std::vector<float> x = wave(cnt, 0.3f), dy = wave(cnt, 1.7f);
    for (size_t i = 0; i < cnt; ++i) x[i] = 2.0f * x[i] + 0.5f;
    std::vector<float> gamma = wave(size_t(s.c), 0.9f), beta = wave(size_t(s.c), 2.9f);
    std::vector<float> rmean(size_t(s.c), 0.1f), rvar(size_t(s.c), 0.9f);
    const float momentum = 0.1f, eps = 1e-5f;

    std::vector<double> wy(cnt), wmean(size_t(s.c)), winv(size_t(s.c)), wrm(size_t(s.c)),
        wrv(size_t(s.c)), wdx(cnt), wdg(size_t(s.c)), wdb(size_t(s.c)), wye(cnt);
    auto at = [&](int i, int ch, int j) { return (size_t(i) * s.c + ch) * s.hw + j; };
    for (int ch = 0; ch < s.c; ++ch) {
      double sum = 0, sq = 0;
      for (int i = 0; i < s.n; ++i)
        for (int j = 0; j < s.hw; ++j) sum += x[at(i, ch, j)];
      double mean = sum / double(m);
      for (int i = 0; i < s.n; ++i)
        for (int j = 0; j < s.hw; ++j) sq += (x[at(i, ch, j)] - mean) * (x[at(i, ch, j)] - mean);
      double inv = 1.0 / std::sqrt(sq / double(m) + eps);
      wmean[size_t(ch)] = mean;
      winv[size_t(ch)] = inv;
      wrm[size_t(ch)] = (1 - momentum) * 0.1 + momentum * mean;
      wrv[size_t(ch)] = (1 - momentum) * 0.9 + momentum * sq / double(m - 1);  // unbiased
      double sdy = 0, sdyx = 0;
      for (int i = 0; i < s.n; ++i)
        for (int j = 0; j < s.hw; ++j) {
          size_t k = at(i, ch, j);
          double xh = (x[k] - mean) * inv;
          wy[k] = gamma[size_t(ch)] * xh + beta[size_t(ch)];
          sdy += dy[k];
          sdyx += dy[k] * xh;
        }
      wdg[size_t(ch)] = sdyx;
      wdb[size_t(ch)] = sdy;
      double einv = 1.0 / std::sqrt(double(wrv[size_t(ch)]) + eps);
      for (int i = 0; i < s.n; ++i)
        for (int j = 0; j < s.hw; ++j) {
          size_t k = at(i, ch, j);
          double xh = (x[k] - mean) * inv;
          wdx[k] = gamma[size_t(ch)] * inv / double(m) * (double(m) * dy[k] - sdy - xh * sdyx);
          wye[k] = gamma[size_t(ch)] * (x[k] - wrm[size_t(ch)]) * einv + beta[size_t(ch)];
        }
    }
    auto gx = up(be, x), gdy = up(be, dy), gg = up(be, gamma), gb = up(be, beta),
         grm = up(be, rmean), grv = up(be, rvar);
    DeviceBuffer<float> y(be, cnt), smean(be, size_t(s.c)), sinv(be, size_t(s.c)), dx(be, cnt),
        dg(be, size_t(s.c)), dbt(be, size_t(s.c)), ye(be, cnt);
    be->batchnorm_forward_train(sh, gx.get(), gg.get(), gb.get(), momentum, eps, grm.get(),
                                grv.get(), smean.get(), sinv.get(), y.get());
    be->batchnorm_backward(sh, gx.get(), gg.get(), gdy.get(), smean.get(), sinv.get(), dx.get(),
                           dg.get(), dbt.get());
    be->batchnorm_forward_eval(sh, gx.get(), gg.get(), gb.get(), grm.get(), grv.get(), eps,
                               ye.get());
    check_close(down(be, y), wy, 1e-4, "y");
    check_close(down(be, smean), wmean, 1e-5, "save_mean");
    check_close(down(be, sinv), winv, 1e-4, "save_invstd");
    check_close(down(be, grm), wrm, 1e-5, "running_mean");
    check_close(down(be, grv), wrv, 1e-5, "running_var");
    check_close(down(be, dx), wdx, 1e-4, "dx");
    check_close(down(be, dg), wdg, 1e-4, "dgamma");
    check_close(down(be, dbt), wdb, 1e-4, "dbeta");
    check_close(down(be, ye), wye, 1e-4, "eval y");
  }
}

TEST_CASE("cuda: PinnedStager snapshots on download and orders uploads before compute") {
  GPU_OR_SKIP();
  const size_t n = (size_t(3) << 20) + 17;
  tether::PinnedStager st(*be, n);
  CHECK(st.capacity() == n);
  CHECK(st.ready());  // nothing issued yet
  std::vector<float> v = wave(n, 0.25f);
  auto dv = up(be, v);
  st.begin_download(dv.get(), n);
  be->fill(n, -1.0f, dv.get());  // overwrite at once: the snapshot was taken
  st.wait();
  CHECK(st.ready());
  CHECK(std::equal(v.begin(), v.end(), st.host()));

  // Upload, then compute that reads the destination.
  for (size_t i = 0; i < n; ++i) st.host()[i] = float(i % 1000);
  DeviceBuffer<float> acc(be, n);
  be->fill(n, 1.0f, acc.get());
  st.begin_upload(dv.get(), n);
  be->axpy(n, 2.0f, dv.get(), acc.get());
  st.wait();
  std::vector<float> got = down(be, acc);
  bool ok = true;
  for (size_t i = 0; i < n && ok; ++i) ok = got[i] == 1.0f + 2.0f * float(i % 1000);
  CHECK(ok);

  // Several rounds in a row, as the trainer does.
  for (int r = 0; r < 4; ++r) {
    be->fill(n, float(r), dv.get());
    st.begin_download(dv.get(), n);
    st.wait();
    CHECK(st.host()[n - 1] == float(r));
  }
  CHECK_THROWS_AS(st.begin_download(dv.get(), n + 1), std::invalid_argument);
  auto cpu = tether::make_cpu_backend(BackendOptions{});
  CHECK_THROWS_AS(tether::PinnedStager(*cpu, 16), std::invalid_argument);
}

#else  // !TETHER_HAVE_CUDA

TEST_CASE("cuda backend tests") {
  MESSAGE("skipped: tether was built without the CUDA backend");
}

#endif
