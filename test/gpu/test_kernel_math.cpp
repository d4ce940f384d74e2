// models/kernel_math.h on the CPU: the element math the CUDA kernels and the
// CPU backend share. Each property is checked against something computed
// another way: published SplitMix64 outputs, binomial and chi-square bounds,
// CountSketch's norm-preservation in expectation, and PyTorch's SGD written
// out in double.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "models/kernel_math.h"

namespace km = tether::kmath;

namespace {

// Pearson chi-square of `counts` against a uniform expectation.
double chi_square(const std::vector<double>& counts, double total) {
  double expected = total / double(counts.size());
  double chi = 0.0;
  for (double c : counts) chi += (c - expected) * (c - expected) / expected;
  return chi;
}
// A loose upper bound for a chi-square with `df` degrees of freedom: mean + 6 sd.
double chi_bound(size_t df) { return double(df) + 6.0 * std::sqrt(2.0 * double(df)); }

}  // namespace

TEST_CASE("mix64 is SplitMix64: published outputs for seed 0") {
  // SplitMix64 (Vigna) seeded with 0 emits these; mix64(k·γ) is its k-th output.
  const uint64_t gamma = 0x9e3779b97f4a7c15ull;
  CHECK(km::mix64(0) == 0xe220a8397b1dcdafull);
  CHECK(km::mix64(gamma) == 0x6e789e6aa1b965f4ull);
  CHECK(km::mix64(2 * gamma) == 0x06c45d188009454full);
}

TEST_CASE("uniform01: range, resolution, mean and uniformity") {
  const uint64_t n = 1 << 20;
  const int bins = 64;
  for (uint64_t seed : {uint64_t(0), uint64_t(1), uint64_t(0xdeadbeef)}) {
    CAPTURE(seed);
    std::vector<double> hist(bins, 0.0);
    double sum = 0.0;
    bool in_range = true, on_grid = true;
    for (uint64_t i = 0; i < n; ++i) {
      float u = km::uniform01(seed, i);
      in_range = in_range && u >= 0.0f && u < 1.0f;
      double scaled = double(u) * 16777216.0;  // 24 random bits
      on_grid = on_grid && scaled == std::floor(scaled);
      sum += u;
      hist[size_t(u * bins)] += 1.0;
    }
    CHECK(in_range);
    CHECK(on_grid);
    double sd_mean = std::sqrt(1.0 / 12.0 / double(n));
    CHECK(std::abs(sum / double(n) - 0.5) < 6.0 * sd_mean);
    CHECK(chi_square(hist, double(n)) < chi_bound(bins - 1));
  }
}

TEST_CASE("uniform01: neighbouring indices and seeds are uncorrelated") {
  const uint64_t n = 1 << 18;
  double sxy = 0.0, sxs = 0.0;
  for (uint64_t i = 0; i < n; ++i) {
    double a = km::uniform01(7, i) - 0.5, b = km::uniform01(7, i + 1) - 0.5;
    double c = km::uniform01(8, i) - 0.5;
    sxy += a * b;
    sxs += a * c;
  }
  // Each product has variance 1/144; 6 sd of the mean.
  double bound = 6.0 * std::sqrt(1.0 / 144.0 / double(n));
  CHECK(std::abs(sxy / double(n)) < bound);
  CHECK(std::abs(sxs / double(n)) < bound);
}

TEST_CASE("dropout_mask: drop rate, kept value, expectation") {
  const uint64_t n = 200000;
  for (float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
    CAPTURE(p);
    const float kept = 1.0f / (1.0f - p);
    uint64_t dropped = 0;
    bool values_ok = true;
    double mean = 0.0;
    for (uint64_t i = 0; i < n; ++i) {
      float m = km::dropout_mask(42, i, p);
      if (m == 0.0f) {
        ++dropped;
      } else {
        values_ok = values_ok && m == kept;
      }
      mean += m;
    }
    CHECK(values_ok);
    double rate = double(dropped) / double(n);
    double sd = std::sqrt(double(p) * (1.0 - double(p)) / double(n));
    CHECK(std::abs(rate - double(p)) <= 6.0 * sd + 1e-12);
    // Inverted dropout keeps E[mask] = 1.
    double sd_mask = double(kept) * sd;
    CHECK(std::abs(mean / double(n) - 1.0) <= 6.0 * sd_mask + 1e-12);
  }
}

TEST_CASE("dropout_mask: different seeds draw different masks") {
  const uint64_t n = 100000;
  const float p = 0.5f;
  uint64_t differ = 0;
  for (uint64_t i = 0; i < n; ++i) differ += km::dropout_mask(1, i, p) != km::dropout_mask(2, i, p);
  // Independent masks differ with probability 2p(1-p) = 0.5.
  double rate = double(differ) / double(n);
  CHECK(std::abs(rate - 0.5) < 6.0 * std::sqrt(0.25 / double(n)));
  // Same seed, same mask.
  for (uint64_t i = 0; i < 1000; ++i) CHECK(km::dropout_mask(9, i, p) == km::dropout_mask(9, i, p));
}

TEST_CASE("sketch_bucket: in range and uniform; sketch_sign: balanced and independent of bucket") {
  const uint64_t n = 1 << 20;
  for (uint32_t buckets : {1u, 7u, 1024u}) {
    CAPTURE(buckets);
    std::vector<double> hist(buckets, 0.0);
    std::vector<double> sign_sum(buckets, 0.0);
    bool in_range = true;
    uint64_t plus = 0;
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t b = km::sketch_bucket(123, i, buckets);
      float s = km::sketch_sign(123, i);
      in_range = in_range && b < buckets;
      if (b < buckets) {
        hist[b] += 1.0;
        sign_sum[b] += s;
      }
      plus += s > 0.0f;
      if (s != 1.0f && s != -1.0f) in_range = false;
    }
    CHECK(in_range);
    if (buckets > 1) CHECK(chi_square(hist, double(n)) < chi_bound(buckets - 1));
    double sd = std::sqrt(0.25 / double(n));
    CHECK(std::abs(double(plus) / double(n) - 0.5) < 6.0 * sd);
    // Signs balanced within every bucket: Σ_b (sign sum)² / count ~ chi-square(buckets).
    double chi = 0.0;
    for (uint32_t b = 0; b < buckets; ++b) chi += sign_sum[b] * sign_sum[b] / hist[b];
    CHECK(chi < chi_bound(buckets));
  }
}

TEST_CASE("CountSketch built from kernel_math preserves norms and distances") {
  // E‖Sx‖² = ‖x‖² with relative sd about sqrt(2/k); distances are norms of
  // differences (the sketch is linear).
  const size_t d = 200000;
  const uint32_t k = 1024;
  const uint64_t seed = 2024;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> gauss(0.0, 1.0);
  std::vector<double> x(d), y(d);
  for (size_t i = 0; i < d; ++i) {
    x[i] = gauss(rng);
    y[i] = x[i] + 0.1 * gauss(rng);
  }
  auto sketch = [&](const std::vector<double>& v) {
    std::vector<double> s(k, 0.0);
    for (size_t i = 0; i < d; ++i) s[km::sketch_bucket(seed, i, k)] += km::sketch_sign(seed, i) * v[i];
    return s;
  };
  std::vector<double> sx = sketch(x), sy = sketch(y);
  double nx = 0, nsx = 0, dxy = 0, dsxy = 0;
  for (size_t i = 0; i < d; ++i) {
    nx += x[i] * x[i];
    dxy += (x[i] - y[i]) * (x[i] - y[i]);
  }
  for (uint32_t b = 0; b < k; ++b) {
    nsx += sx[b] * sx[b];
    dsxy += (sx[b] - sy[b]) * (sx[b] - sy[b]);
  }
  double tol = 6.0 * std::sqrt(2.0 / double(k));  // ~0.27
  CHECK(std::abs(nsx / nx - 1.0) < tol);
  CHECK(std::abs(dsxy / dxy - 1.0) < tol);
}

TEST_CASE("sgd_element matches torch.optim.SGD written out in double") {
  // PyTorch (dampening 0): d = g + wd·w; buf = d at the first step, then
  // buf = μ·buf + d; d = nesterov ? d + μ·buf : buf; w -= lr·d.
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  for (float momentum : {0.0f, 0.9f}) {
    for (float wd : {0.0f, 5e-4f}) {
      for (bool nesterov : {false, true}) {
        if (nesterov && momentum == 0.0f) continue;  // PyTorch rejects this combination
        CAPTURE(momentum);
        CAPTURE(wd);
        CAPTURE(nesterov);
        const float lr = 0.05f;
        float m = 0.0f, w = 0.7f;
        double ref_w = 0.7, ref_buf = 0.0;
        for (int step = 0; step < 20; ++step) {
          float g = float(uni(rng));
          km::sgd_element(lr, momentum, wd, nesterov, g, m, w);
          double dp = double(g) + double(wd) * ref_w;
          if (momentum != 0.0f) {
            ref_buf = step == 0 ? dp : double(momentum) * ref_buf + dp;
            dp = nesterov ? dp + double(momentum) * ref_buf : ref_buf;
          }
          ref_w -= double(lr) * dp;
          CHECK(double(w) == doctest::Approx(ref_w).epsilon(1e-5));
          if (momentum != 0.0f) CHECK(double(m) == doctest::Approx(ref_buf).epsilon(1e-5));
        }
      }
    }
  }
}

TEST_CASE("sgd_element: no momentum leaves m untouched; zero lr leaves w") {
  float m = 3.0f, w = 2.0f;
  km::sgd_element(0.1f, 0.0f, 0.0f, false, 1.0f, m, w);
  CHECK(m == 3.0f);
  CHECK(w == doctest::Approx(1.9));
  float m2 = 0.0f, w2 = 2.0f;
  km::sgd_element(0.0f, 0.9f, 0.1f, true, 1.0f, m2, w2);
  CHECK(w2 == 2.0f);
  CHECK(m2 == doctest::Approx(1.2));  // g + wd·w
}

TEST_CASE("normalize_byte: endpoints and midpoint") {
  const float mean = 0.2860f, std = 0.3530f;  // Fashion-MNIST
  CHECK(km::normalize_byte(0, mean, 1.0f / std) == doctest::Approx(-mean / std));
  CHECK(km::normalize_byte(255, mean, 1.0f / std) == doctest::Approx((1.0f - mean) / std));
  CHECK(km::normalize_byte(51, 0.0f, 1.0f) == doctest::Approx(0.2));
}
