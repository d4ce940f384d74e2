#include "runtime/monitor.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "models/kernel_math.h"

namespace tether {

CountSketch::CountSketch(size_t dim, int buckets, uint64_t seed) : dim_(dim), buckets_(buckets), code_(dim) {
  if (buckets < 1 || buckets > (1 << 30)) throw std::invalid_argument("count sketch: buckets must be in 1..2^30");
  for (size_t i = 0; i < dim; ++i) {
    uint32_t b = kmath::sketch_bucket(seed, i, uint32_t(buckets));
    code_[i] = b | (kmath::sketch_sign(seed, i) < 0 ? 0x80000000u : 0u);
  }
}

void CountSketch::accumulate(const float* x, size_t begin, size_t n, double* acc) const {
  const uint32_t* code = code_.data() + begin;
  for (size_t i = 0; i < n; ++i) {   // i < n: the caller's block lies within dim_
    const uint32_t c = code[i];
    // the sign bit of the code flips the value's sign bit: no branch
    uint32_t bits;
    std::memcpy(&bits, &x[i], sizeof bits);
    bits ^= c & 0x80000000u;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    acc[c & 0x7fffffffu] += double(v);
  }
}

void CountSketch::apply(const float* x, float* out) const {
  std::vector<double> acc(size_t(buckets_), 0.0);
  accumulate(x, 0, dim_, acc.data());
  for (int b = 0; b < buckets_; ++b) out[b] = float(acc[size_t(b)]);
}

PairEstimate estimate_distances(const std::map<int, std::vector<float>>& sketches, int buckets, int self) {
  PairEstimate e;
  for (auto i = sketches.begin(); i != sketches.end(); ++i) {
    for (auto j = std::next(i); j != sketches.end(); ++j) {
      const auto& a = i->second;
      const auto& b = j->second;
      if (a.size() < size_t(buckets) || b.size() < size_t(buckets)) continue;
      double s = 0;
      for (int k = 0; k < buckets; ++k) {
        double d = double(a[size_t(k)]) - double(b[size_t(k)]);
        s += d * d;
      }
      double dist = std::sqrt(s);
      if (dist > e.max_pair) {
        e.max_pair = dist;
        e.a = i->first;
        e.b = j->first;
      }
      if ((i->first == self || j->first == self) && dist > e.max_self) {
        e.max_self = dist;
        e.self_peer = i->first == self ? j->first : i->first;
      }
    }
  }
  return e;
}

}  // namespace tether
