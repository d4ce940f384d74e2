#include "models/sampler.h"

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

void ShardedSampler::range(size_t step, size_t* begin, size_t* end) const {
  const size_t global = size_t(nodes_) * size_t(batch_);
  const size_t base = step * global;
  if (step < full_steps_) {
    *begin = base + size_t(node_) * size_t(batch_);
    *end = *begin + size_t(batch_);
  } else {  // the remainder step: node i takes [i·r/N, (i+1)·r/N)
    *begin = base + size_t(node_) * remainder_ / size_t(nodes_);
    *end = base + size_t(node_ + 1) * remainder_ / size_t(nodes_);
  }
}

size_t ShardedSampler::samples_at(size_t step) const {
  if (step >= steps_)
    throw std::out_of_range("ShardedSampler: step " + std::to_string(step) +
                            " outside [0, " + std::to_string(steps_) + ")");
  size_t begin = 0, end = 0;
  range(step, &begin, &end);
  return end - begin;
}

size_t ShardedSampler::samples_per_epoch() const {
  size_t total = full_steps_ * size_t(batch_);
  if (steps_ > full_steps_) total += samples_at(full_steps_);
  return total;
}

void ShardedSampler::batch(int epoch, size_t step, std::vector<uint32_t>* out) const {
  if (epoch < 0)
    throw std::out_of_range("ShardedSampler: epoch " + std::to_string(epoch) + " < 0");
  if (step >= steps_)
    throw std::out_of_range("ShardedSampler: step " + std::to_string(step) +
                            " outside [0, " + std::to_string(steps_) + ")");
  size_t begin = 0, end = 0;
  range(step, &begin, &end);
  std::lock_guard<std::mutex> lock(mutex_);
  if (cached_epoch_ != epoch) {
    permutation_ = epoch_permutation(count_, seed_, uint64_t(epoch));
    cached_epoch_ = epoch;
  }
  out->assign(permutation_.begin() + std::ptrdiff_t(begin),
              permutation_.begin() + std::ptrdiff_t(end));
}

}  // namespace tether
