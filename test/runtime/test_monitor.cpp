// Discrepancy monitor: CountSketch distance estimates against exact ones.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "runtime/monitor.h"

TEST_CASE("monitor: sketch-estimated pairwise distances within 10% of exact (d = 200,003)") {
  const size_t d = 200003;
  const int buckets = 1024;
  tether::CountSketch cs(d, buckets, 12345);
  std::mt19937_64 rng(7);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  // Nodes share a common vector plus node-specific perturbations of
  // different sizes, as parameters of nodes that drift apart do.
  std::vector<float> base(d);
  for (auto& v : base) v = n01(rng);
  const int nodes = 6;
  std::vector<std::vector<float>> x(nodes, base);
  std::map<int, std::vector<float>> sketches;
  for (int i = 0; i < nodes; ++i) {
    float scale = 0.01f * float(i + 1);
    for (auto& v : x[size_t(i)]) v += scale * n01(rng);
    std::vector<float> sk(buckets);
    cs.apply(x[size_t(i)].data(), sk.data());
    sketches[i] = sk;
  }
  double exact_max = 0;
  for (int i = 0; i < nodes; ++i) {
    for (int j = i + 1; j < nodes; ++j) {
      double s = 0;
      for (size_t k = 0; k < d; ++k) {
        double diff = double(x[size_t(i)][k]) - double(x[size_t(j)][k]);
        s += diff * diff;
      }
      double exact = std::sqrt(s);
      exact_max = std::max(exact_max, exact);
      std::map<int, std::vector<float>> pair{{i, sketches[i]}, {j, sketches[j]}};
      double est = tether::estimate_distances(pair, buckets, i).max_pair;
      CAPTURE(i);
      CAPTURE(j);
      CHECK(std::fabs(est - exact) / exact < 0.10);
    }
  }
  tether::PairEstimate e = tether::estimate_distances(sketches, buckets, 0);
  CHECK(std::fabs(e.max_pair - exact_max) / exact_max < 0.10);
  CHECK(((e.a == 4 && e.b == 5) || (e.a == 3 && e.b == 5)));   // the two most perturbed
  CHECK(e.self_peer == 5);
}

TEST_CASE("monitor: sketch is linear and identical for identical inputs") {
  tether::CountSketch cs(1000, 64, 1);
  std::vector<float> a(1000), b(1000), s(1000);
  for (int i = 0; i < 1000; ++i) {
    a[size_t(i)] = float(i % 13) - 6.0f;
    b[size_t(i)] = float(i % 7) * 0.5f;
    s[size_t(i)] = a[size_t(i)] + b[size_t(i)];
  }
  std::vector<float> sa(64), sb(64), ss(64), sa2(64);
  cs.apply(a.data(), sa.data());
  cs.apply(b.data(), sb.data());
  cs.apply(s.data(), ss.data());
  cs.apply(a.data(), sa2.data());
  CHECK(sa == sa2);
  for (int k = 0; k < 64; ++k) CHECK(ss[size_t(k)] == doctest::Approx(sa[size_t(k)] + sb[size_t(k)]).epsilon(1e-5));
  double total = 0;
  for (float v : sa) total += std::fabs(v);
  CHECK(total > 0);
}

TEST_CASE("monitor: the staleness bound is 2(s+1)·D") {
  CHECK(tether::staleness_bound(0, 1.5) == doctest::Approx(3.0));
  CHECK(tether::staleness_bound(2, 1.0) == doctest::Approx(6.0));
}
