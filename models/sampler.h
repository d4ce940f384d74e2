// Deterministic sharding of a dataset over N data-parallel nodes.
//
// Contract. Every epoch has one global permutation P of [0, count), a
// function of (seed, epoch) alone, identical on every node and every platform
// (xoshiro256** seeded through SplitMix64, unbiased bounded draws by
// rejection, Fisher–Yates; no standard-library distribution, whose output
// differs between implementations).
//
// Steps. With global batch G = nodes·batch, full = count / G full steps and
// r = count − full·G leftover positions:
//   - step t < full covers P[t·G, (t+1)·G); node i takes its slice
//     P[t·G + i·batch, t·G + (i+1)·batch). The union of the N nodes' batches
//     at step t is therefore exactly one node's batch at step t with batch
//     size G (same seed): synchronous N-node training sees the same samples
//     as single-node training with N times the batch.
//   - if r ≥ nodes, one last step splits the remainder evenly: node i takes
//     P[full·G + ⌊i·r/N⌋, full·G + ⌊(i+1)·r/N⌋) (at least one sample each);
//     if r < nodes the remainder is dropped for this epoch.
// steps_per_epoch() is the same on every node, so nodes never wait for a
// peer that has run out of data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace tether {

// xoshiro256** (Blackman & Vigna), state seeded with SplitMix64.
class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed);
  uint64_t next();
  // Uniform in [0, bound), bound > 0, unbiased (rejection of the low zone).
  uint64_t bounded(uint64_t bound);

 private:
  uint64_t s_[4];
};

// The epoch permutation of [0, count) for (seed, epoch); count ≤ 2^32 − 1.
std::vector<uint32_t> epoch_permutation(size_t count, uint64_t seed, uint64_t epoch);

class ShardedSampler {
 public:
  // Throws std::invalid_argument: nodes < 1, node outside [0, nodes),
  // batch < 1, count < nodes, count > 2^32 − 1.
  ShardedSampler(size_t count, int node, int nodes, int batch, uint64_t seed);
  // Copyable and movable (the copy starts with an empty cache).
  ShardedSampler(const ShardedSampler& other);
  ShardedSampler& operator=(const ShardedSampler& other);

  size_t count() const { return count_; }
  int node() const { return node_; }
  int nodes() const { return nodes_; }
  int batch_size() const { return batch_; }
  uint64_t seed() const { return seed_; }

  // Number of steps in every epoch, the same on all nodes.
  size_t steps_per_epoch() const { return steps_; }
  // Samples this node takes at `step` (batch, or its share of the remainder).
  size_t samples_at(size_t step) const;
  // Samples this node sees per epoch (sum of samples_at over the steps).
  size_t samples_per_epoch() const;

  // This node's sample indices at (epoch, step) into *out (resized).
  // Throws std::out_of_range for epoch < 0 or step >= steps_per_epoch().
  // The epoch's permutation is computed once and cached (one epoch at a time),
  // under a mutex: safe to call from several threads.
  void batch(int epoch, size_t step, std::vector<uint32_t>* out) const;

 private:
  // Permutation positions [*begin, *end) this node takes at `step`.
  void range(size_t step, size_t* begin, size_t* end) const;

  size_t count_;
  int node_, nodes_, batch_;
  uint64_t seed_;
  size_t full_steps_, remainder_, steps_;

  mutable std::mutex mutex_;
  mutable int cached_epoch_ = -1;
  mutable std::vector<uint32_t> permutation_;
};

}  // namespace tether
