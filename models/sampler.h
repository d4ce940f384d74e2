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
//
// Views (DESIGN.md, "Membership", Data). A cluster that lost nodes shards a
// data epoch over the epoch's view: n ≤ N members, this node at `position`
// (its rank among the view's sorted ids). The epoch keeps the grid of the
// configured N nodes — steps_per_epoch() steps, so steps, rounds, the
// learning-rate schedule, checkpoints and a joiner's start position stay
// functions of the global step — and step t gives the member at position p
// the slice the n-node sharding above gives node p at step t. The n-node
// sharding has at least steps_per_epoch() steps (n ≤ N); the positions its
// later steps hold are not covered in that epoch (uncovered_per_epoch(n)):
// with fewer nodes an epoch of the same steps sees fewer samples, a
// different subset each epoch.
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

  // The same over a view of `members` nodes, for the member at `position`
  // (see "Views" above). Throws std::out_of_range for members outside
  // [1, nodes()], position outside [0, members), step >= steps_per_epoch().
  // batch(e, t, out) is batch(e, t, node(), nodes(), out).
  void batch(int epoch, size_t step, int position, int members, std::vector<uint32_t>* out) const;
  size_t samples_at(size_t step, int position, int members) const;
  // Sum of samples_at(t, position, members) over t in [from_step, to_step)
  // (to_step capped at steps_per_epoch()).
  size_t samples_between(size_t from_step, size_t to_step, int position, int members) const;
  // Samples no member of a `members`-node view takes in an epoch:
  // count() − the positions its steps_per_epoch() steps cover.
  size_t uncovered_per_epoch(int members) const;

 private:
  // Permutation positions [*begin, *end) the member at `position` of
  // `members` takes at `step` (arguments checked by the caller).
  void range(size_t step, int position, int members, size_t* begin, size_t* end) const;
  void check_view(size_t step, int position, int members) const;

  size_t count_;
  int node_, nodes_, batch_;
  uint64_t seed_;
  size_t full_steps_, remainder_, steps_;

  mutable std::mutex mutex_;
  mutable int cached_epoch_ = -1;
  mutable std::vector<uint32_t> permutation_;
};

}  // namespace tether
