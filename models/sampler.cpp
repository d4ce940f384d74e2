#include "models/sampler.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace tether {
namespace {

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Xoshiro256::Xoshiro256(uint64_t seed) {
  uint64_t sm = seed;
  for (uint64_t& s : s_) s = splitmix64(&sm);  // never all zero
}

uint64_t Xoshiro256::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

uint64_t Xoshiro256::bounded(uint64_t bound) {
  // 2^64 mod bound values at the bottom would be over-represented: skip them.
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = next();
    if (r >= threshold) return r % bound;
  }
}

std::vector<uint32_t> epoch_permutation(size_t count, uint64_t seed, uint64_t epoch) {
  if (count > 0xFFFFFFFFull)
    throw std::invalid_argument("epoch_permutation: count " + std::to_string(count) +
                                " exceeds 2^32-1");
  std::vector<uint32_t> p(count);
  for (size_t i = 0; i < count; ++i) p[i] = uint32_t(i);
  // Seed from (seed, epoch): two rounds of SplitMix64 so nearby seeds and
  // epochs give unrelated streams.
  uint64_t sm = seed;
  const uint64_t a = splitmix64(&sm);
  uint64_t em = epoch ^ 0x5851f42d4c957f2dull;
  Xoshiro256 rng(a ^ splitmix64(&em));
  // Fisher–Yates, from the top: position i swaps with a uniform j in [0, i].
  for (size_t i = count; i > 1; --i) {
    const size_t j = size_t(rng.bounded(i));
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

ShardedSampler::ShardedSampler(size_t count, int node, int nodes, int batch,
                               uint64_t seed)
    : count_(count), node_(node), nodes_(nodes), batch_(batch), seed_(seed) {
  if (nodes < 1)
    throw std::invalid_argument("ShardedSampler: nodes must be >= 1, got " +
                                std::to_string(nodes));
  if (node < 0 || node >= nodes)
    throw std::invalid_argument("ShardedSampler: node " + std::to_string(node) +
                                " outside [0, " + std::to_string(nodes) + ")");
  if (batch < 1)
    throw std::invalid_argument("ShardedSampler: batch must be >= 1, got " +
                                std::to_string(batch));
  if (count < size_t(nodes))
    throw std::invalid_argument("ShardedSampler: " + std::to_string(count) +
                                " samples cannot feed " + std::to_string(nodes) +
                                " nodes (need at least one sample per node)");
  if (count > 0xFFFFFFFFull)
    throw std::invalid_argument("ShardedSampler: count " + std::to_string(count) +
                                " exceeds 2^32-1");
  const size_t global = size_t(nodes) * size_t(batch);
  full_steps_ = count / global;
  remainder_ = count - full_steps_ * global;
  steps_ = full_steps_ + (remainder_ >= size_t(nodes) ? 1 : 0);
}

ShardedSampler::ShardedSampler(const ShardedSampler& other)
    : count_(other.count_), node_(other.node_), nodes_(other.nodes_), batch_(other.batch_),
      seed_(other.seed_), full_steps_(other.full_steps_), remainder_(other.remainder_),
      steps_(other.steps_) {}

ShardedSampler& ShardedSampler::operator=(const ShardedSampler& other) {
  if (this == &other) return *this;
  std::lock_guard<std::mutex> lock(mutex_);
  count_ = other.count_;
  node_ = other.node_;
  nodes_ = other.nodes_;
  batch_ = other.batch_;
  seed_ = other.seed_;
  full_steps_ = other.full_steps_;
  remainder_ = other.remainder_;
  steps_ = other.steps_;
  cached_epoch_ = -1;
  permutation_.clear();
  return *this;
}

void ShardedSampler::check_view(size_t step, int position, int members) const {
  if (members < 1 || members > nodes_)
    throw std::out_of_range("ShardedSampler: a view of " + std::to_string(members) + " members, outside [1, " +
                            std::to_string(nodes_) + "]");
  if (position < 0 || position >= members)
    throw std::out_of_range("ShardedSampler: position " + std::to_string(position) + " outside [0, " +
                            std::to_string(members) + ")");
  if (step >= steps_)
    throw std::out_of_range("ShardedSampler: step " + std::to_string(step) +
                            " outside [0, " + std::to_string(steps_) + ")");
}

void ShardedSampler::range(size_t step, int position, int members, size_t* begin, size_t* end) const {
  // The members-node sharding of the contract: its own full steps and
  // remainder (members == nodes_ gives full_steps_ and remainder_).
  const size_t global = size_t(members) * size_t(batch_);
  const size_t full = count_ / global;
  const size_t remainder = count_ - full * global;
  const size_t base = step * global;
  if (step < full) {
    *begin = base + size_t(position) * size_t(batch_);
    *end = *begin + size_t(batch_);
  } else if (step == full && remainder >= size_t(members)) {  // node i takes [i·r/n, (i+1)·r/n)
    *begin = base + size_t(position) * remainder / size_t(members);
    *end = base + size_t(position + 1) * remainder / size_t(members);
  } else {
    // members ≤ nodes_ gives the members-node sharding at least steps_ steps
    // (full ≥ full_steps_, and full == full_steps_ leaves a remainder ≥
    // remainder_ ≥ nodes_ > members when steps_ has a remainder step).
    throw std::logic_error("ShardedSampler: step " + std::to_string(step) + " past a " + std::to_string(members) +
                           "-node epoch of " + std::to_string(count_) + " samples");
  }
}

size_t ShardedSampler::samples_at(size_t step) const { return samples_at(step, node_, nodes_); }

size_t ShardedSampler::samples_at(size_t step, int position, int members) const {
  check_view(step, position, members);
  size_t begin = 0, end = 0;
  range(step, position, members, &begin, &end);
  return end - begin;
}

size_t ShardedSampler::samples_between(size_t from_step, size_t to_step, int position, int members) const {
  size_t total = 0;
  for (size_t t = from_step; t < std::min(to_step, steps_); ++t) total += samples_at(t, position, members);
  return total;
}

size_t ShardedSampler::samples_per_epoch() const { return samples_between(0, steps_, node_, nodes_); }

size_t ShardedSampler::uncovered_per_epoch(int members) const {
  check_view(0, 0, members);
  // The members' slices at a step are contiguous and adjacent: together
  // [first member's begin, last member's end).
  size_t covered = 0;
  for (size_t t = 0; t < steps_; ++t) {   // t over the epoch's grid
    size_t b0 = 0, e0 = 0, b1 = 0, e1 = 0;
    range(t, 0, members, &b0, &e0);
    range(t, members - 1, members, &b1, &e1);
    covered += e1 - b0;
  }
  return count_ - covered;
}

void ShardedSampler::batch(int epoch, size_t step, std::vector<uint32_t>* out) const {
  batch(epoch, step, node_, nodes_, out);
}

void ShardedSampler::batch(int epoch, size_t step, int position, int members, std::vector<uint32_t>* out) const {
  if (epoch < 0)
    throw std::out_of_range("ShardedSampler: epoch " + std::to_string(epoch) + " < 0");
  check_view(step, position, members);
  size_t begin = 0, end = 0;
  range(step, position, members, &begin, &end);
  std::lock_guard<std::mutex> lock(mutex_);
  if (cached_epoch_ != epoch) {
    permutation_ = epoch_permutation(count_, seed_, uint64_t(epoch));
    cached_epoch_ = epoch;
  }
  out->assign(permutation_.begin() + std::ptrdiff_t(begin),
              permutation_.begin() + std::ptrdiff_t(end));
}

}  // namespace tether
