// Trainer pieces that are pure functions: the dropout seed of a step.
#include <doctest/doctest.h>

#include <cstdint>
#include <set>

#include "models/kernel_math.h"
#include "runtime/trainer.h"

using tether::dropout_seed;

TEST_CASE("dropout seed: differs between nodes at the same step, pure in (seed, node, step)") {
  for (uint64_t seed : {uint64_t(1), uint64_t(5), uint64_t(0xdeadbeef)}) {
    CAPTURE(seed);
    // Every (node, step) pair of 8 nodes x 500 steps draws its own seed, so no
    // two nodes share masks at a step (and no node repeats another's).
    std::set<uint64_t> seen;
    for (int node = 0; node < 8; ++node) {
      for (uint64_t step = 0; step < 500; ++step) seen.insert(dropout_seed(seed, node, step));
    }
    CHECK(seen.size() == 8 * 500);
    // The highest node id a config allows (4095) too.
    CHECK(dropout_seed(seed, 4095, 7) != dropout_seed(seed, 0, 7));
    CHECK(dropout_seed(seed, 4095, 7) != dropout_seed(seed, 4094, 7));
    // Pure: the same arguments give the same seed (what --resume relies on).
    CHECK(dropout_seed(seed, 3, 42) == dropout_seed(seed, 3, 42));
    // Single-node runs keep their masks: node 0's seed is the formula used
    // before the node was part of it.
    for (uint64_t step : {uint64_t(0), uint64_t(1), uint64_t(937), uint64_t(1) << 40}) {
      CHECK(dropout_seed(seed, 0, step) == tether::kmath::mix64(seed ^ tether::kmath::mix64(step + 0x51ed)));
    }
  }
  // The masks themselves differ: with p = 0.5 two nodes disagree on about
  // half of 10000 elements at the same step (binomial: 5000 ± 50).
  const uint64_t a = dropout_seed(1, 0, 10), b = dropout_seed(1, 1, 10);
  int differ = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    differ += tether::kmath::dropout_mask(a, i, 0.5f) != tether::kmath::dropout_mask(b, i, 0.5f);
  }
  CHECK(differ > 4500);
  CHECK(differ < 5500);
}
