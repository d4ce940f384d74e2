// The discrepancy monitor: CountSketches of parameter vectors and pairwise
// distance estimates from them.
//
// Every node sketches x_i each round (k buckets; hash and signs from a shared
// seed, so sketches of different nodes are comparable) and sends the sketch
// with its round message. CountSketch is linear, so S x_i − S x_j = S(x_i −
// x_j), and E‖S v‖² = ‖v‖²: the distance between two sketches estimates the
// distance between the vectors, with relative error about sqrt(2/k) (4% at
// k = 1024). O(d) per sketch, O(N²·k) per estimate.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace tether {

class CountSketch {
 public:
  CountSketch(size_t dim, int buckets, uint64_t seed);
  size_t dim() const { return dim_; }
  int buckets() const { return buckets_; }
  // out[b] = Σ_{i: h(i)=b} sign(i)·x[i]  (out: buckets floats)
  void apply(const float* x, float* out) const;
  // Coordinates [begin, begin + n) of x added in: acc[h(i)] += sign(i)·x[i]
  // (acc: buckets doubles; x indexed from 0 = coordinate begin). Callers fuse
  // it, block by block, into a pass they make anyway while x is in cache.
  void accumulate(const float* x, size_t begin, size_t n, double* acc) const;

 private:
  size_t dim_;
  int buckets_;
  std::vector<uint32_t> code_;   // bucket | sign bit (31) per coordinate
};

struct PairEstimate {
  double max_pair = 0.0;    // largest estimated distance over all pairs
  int a = -1, b = -1;       // the pair
  double max_self = 0.0;    // largest distance from `self` to any peer
  int self_peer = -1;
};

// A round's sketch message: the CountSketch (`buckets` floats) and a tail of
// kSketchTail floats, read with sketch_tail():
//   kTailMaxDelta  the node's largest round delta norm (the monitor's D_max);
//   kTailMergeMs   the service time of the last merge this node applied, in
//                  ms (algorithm.period "auto"; 0 before it has one);
//   kTailStepMs    this node's compute time per step, in ms (its moving
//                  average; "auto");
//   kTailStop      why the node asks the cluster to stop (RoundFlags::stop):
//                  kStopEnd, it has run all its steps (clocked rounds, the
//                  run ends); kStopInterrupt, it was interrupted;
//   kTailStepsHi, kTailStepsLo  the steps the node had run as it closed the
//                  round, steps >> 24 and steps & 0xffffff (each exact in a
//                  float): period "auto" evens the nodes' step counts out
//                  after its calibration (runtime/averaging.h).
inline constexpr size_t kSketchTail = 6;
inline constexpr size_t kTailMaxDelta = 0, kTailMergeMs = 1, kTailStop = 2, kTailStepsHi = 3, kTailStepsLo = 4,
                        kTailStepMs = 5;
inline constexpr float kStopEnd = 1.0f, kStopInterrupt = 2.0f;
// Tail value k of `sketch` (dflt when the sketch is too short to hold it).
inline float sketch_tail(const std::vector<float>& sketch, int buckets, size_t k, float dflt = 0.0f) {
  const size_t at = size_t(buckets) + k;
  return at < sketch.size() ? sketch[at] : dflt;
}

// Pairwise estimates from one round's sketches (node id -> sketch; only the
// first `buckets` values of each are read).
PairEstimate estimate_distances(const std::map<int, std::vector<float>>& sketches, int buckets, int self);

// The staleness bound of DESIGN.md: nodes compared as they close the same
// round differ by at most s+1 rounds' differences, each at most twice the
// largest round delta: ‖x_i − x_j‖ ≤ 2(s+1)·D_max, with D_max ≤ H·u_max.
inline double staleness_bound(int staleness, double max_round_delta_norm) {
  return 2.0 * double(staleness + 1) * max_round_delta_norm;
}

}  // namespace tether
