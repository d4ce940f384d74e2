// Gossip: the schedule is symmetric and fair; over real processes the pair
// averages equal an in-process simulation of the schedule bit for bit, the
// sum over nodes is conserved, the spread shrinks, and on a hypercube every
// node holds the exact average after log2 N rounds.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <set>
#include <thread>

#include "net/gossip.h"
#include "test/net/net_test_util.h"

using namespace tether::net;
using namespace tether::net::testing;

namespace {

float initial(int node, size_t j) {  // integers: exact sums and halvings
  return static_cast<float>(node * 64 + static_cast<int>(j % 5) * 8 + static_cast<int>((j * 7 + static_cast<size_t>(node) * 3) % 11));
}

// Node `self` runs `rounds` gossip rounds, one at a time, adding each
// correction before the next snapshot; returns, per round, the partner
// (int32) and x after the correction.
std::string run_gossip_node(int self, int nodes, size_t count, const std::vector<int>& ports,
                            int rounds) {
  CommOptions o;
  o.self = self;
  o.peers = loopback_peers(ports);
  o.mixer = MixerKind::kGossip;
  o.window = 2;
  o.chunk_bytes = 256;  // several chunks per snapshot
  o.connect_timeout_ms = 20000;
  o.heartbeat_ms = 100;
  o.peer_timeout_ms = 5000;
  Communicator comm(o);
  std::vector<float> x(count);
  for (size_t j = 0; j < count; ++j) x[j] = initial(self, j);
  std::vector<float> params(count, 1.0f);
  comm.start(params.data(), count);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  for (int r = 0; r < rounds; ++r) {  // one round at a time: the next snapshot is this result
    comm.submit(static_cast<uint64_t>(r), x, {static_cast<float>(self)});
    std::optional<RoundResult> res;
    while (!res) {  // bounded by the deadline
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("gossip timed out");
      res = comm.wait(200);
    }
    if (res->round != static_cast<uint64_t>(r)) throw std::runtime_error("round out of order");
    if (res->partner != gossip_partner(self, static_cast<uint64_t>(r), nodes))
      throw std::runtime_error("wrong partner");
    // Sketches do not gate a gossip round: the result carries this node's
    // of round r and the latest of each other node that has arrived (of a
    // round <= r), each with its round.
    if (res->sketch_rounds.size() != res->sketches.size() || res->sketch_rounds.at(self) != res->round)
      throw std::runtime_error("own sketch missing, or a sketch without its round");
    for (const auto& [id, sk] : res->sketches)
      if (sk != std::vector<float>{static_cast<float>(id)} || res->sketch_rounds.at(id) > res->round)
        throw std::runtime_error("wrong sketch");
    for (size_t j = 0; j < count; ++j) x[j] += res->mixed[j];  // the correction
    const int32_t partner = res->partner;
    out.append(reinterpret_cast<const char*>(&partner), sizeof(partner));
    out.append(reinterpret_cast<const char*>(x.data()), count * sizeof(float));
  }
  comm.stop(5000);
  return out;
}

}  // namespace

TEST_SUITE("gossip") {

TEST_CASE("gossip schedule: symmetric, hypercube, round-robin fair") {
  for (int nodes = 1; nodes <= 16; ++nodes) {
    CAPTURE(nodes);
    const bool pow2 = std::has_single_bit(static_cast<unsigned>(nodes));
    const int players = nodes + nodes % 2;
    const int period = pow2 ? std::max(1, std::countr_zero(static_cast<unsigned>(nodes))) : players - 1;
    std::set<std::pair<int, int>> met;
    std::vector<int> byes(static_cast<size_t>(nodes), 0);
    for (uint64_t r = 0; r < 40; ++r) {
      for (int i = 0; i < nodes; ++i) {
        const int p = gossip_partner(i, r, nodes);
        if (nodes == 1) {
          CHECK(p == -1);
          continue;
        }
        if (pow2) CHECK(p == (i ^ (1 << (r % static_cast<uint64_t>(period)))));
        if (p < 0) {
          if (r < static_cast<uint64_t>(period)) ++byes[static_cast<size_t>(i)];
          continue;
        }
        CHECK(p != i);
        CHECK(p < nodes);
        CHECK(gossip_partner(p, r, nodes) == i);
        if (!pow2 && r < static_cast<uint64_t>(period) && i < p) {
          CHECK(met.insert({i, p}).second);  // no pair twice in one tournament
        }
      }
    }
    if (!pow2 && nodes > 1) {
      CHECK(met.size() == static_cast<size_t>(nodes * (nodes - 1) / 2));  // every pair met
      for (int b : byes) CHECK(b == (nodes % 2));  // one bye per tournament when N is odd
    }
  }
}

TEST_CASE("gossip across real processes: matches the schedule's simulation, conserves the sum") {
  for (int nodes : {2, 3, 4, 5, 6, 8}) {
    CAPTURE(nodes);
    const size_t count = 301;
    const bool pow2 = std::has_single_bit(static_cast<unsigned>(nodes));
    const int rounds = pow2 ? std::countr_zero(static_cast<unsigned>(nodes)) : 2 * (nodes + nodes % 2 - 1);
    const std::vector<int> ports = free_ports(nodes);
    const auto res = run_children(
        nodes, [&](int i) { return run_gossip_node(i, nodes, count, ports, rounds); }, 90000);
    // reference: the schedule simulated in this process with the same float ops
    std::vector<std::vector<float>> sim(static_cast<size_t>(nodes), std::vector<float>(count));
    double sum0 = 0;
    for (int i = 0; i < nodes; ++i)
      for (size_t j = 0; j < count; ++j) sum0 += sim[static_cast<size_t>(i)][j] = initial(i, j);
    auto spread = [&](const std::vector<std::vector<float>>& v) {
      double s = 0;
      for (size_t j = 0; j < count; ++j) {
        float lo = v[0][j], hi = v[0][j];
        for (const auto& row : v) lo = std::min(lo, row[j]), hi = std::max(hi, row[j]);
        s = std::max(s, static_cast<double>(hi - lo));
      }
      return s;
    };
    const double spread0 = spread(sim);
    const size_t record = sizeof(int32_t) + count * sizeof(float);
    for (int i = 0; i < nodes; ++i) {
      CAPTURE(i);
      REQUIRE(res[static_cast<size_t>(i)].ok);
      REQUIRE(res[static_cast<size_t>(i)].out.size() == record * static_cast<size_t>(rounds));
    }
    double prev_spread = spread0;
    for (int r = 0; r < rounds; ++r) {
      CAPTURE(r);
      std::vector<std::vector<float>> next = sim;
      for (int i = 0; i < nodes; ++i) {
        const int p = gossip_partner(i, static_cast<uint64_t>(r), nodes);
        if (p < 0) continue;
        for (size_t j = 0; j < count; ++j)
          next[static_cast<size_t>(i)][j] = sim[static_cast<size_t>(i)][j] +
                                            (sim[static_cast<size_t>(p)][j] - sim[static_cast<size_t>(i)][j]) * 0.5f;
      }
      sim = next;
      std::vector<std::vector<float>> got(static_cast<size_t>(nodes), std::vector<float>(count));
      double sum = 0;
      for (int i = 0; i < nodes; ++i) {
        const char* rec = res[static_cast<size_t>(i)].out.data() + record * static_cast<size_t>(r);
        int32_t partner;
        std::memcpy(&partner, rec, sizeof(partner));
        CHECK(partner == gossip_partner(i, static_cast<uint64_t>(r), nodes));
        std::memcpy(got[static_cast<size_t>(i)].data(), rec + sizeof(partner), count * sizeof(float));
        CHECK(std::memcmp(got[static_cast<size_t>(i)].data(), sim[static_cast<size_t>(i)].data(), count * 4) == 0);
        for (float v : got[static_cast<size_t>(i)]) sum += v;
      }
      CHECK(std::fabs(sum - sum0) <= 1e-6 * std::fabs(sum0));  // conserved to rounding
      const double s = spread(got);
      CHECK(s <= prev_spread);  // pairwise averaging never widens the spread
      prev_spread = s;
    }
    if (pow2) {
      CHECK(prev_spread == 0.0);  // hypercube: exact average after log2 N rounds
      for (size_t j = 0; j < count; ++j) {
        double s = 0;
        for (int i = 0; i < nodes; ++i) s += initial(i, j);
        CHECK(sim[0][j] == static_cast<float>(s / nodes));
      }
    } else {
      CHECK(prev_spread < 0.5 * spread0);  // two tournaments at least halve it
    }
  }
}

}  // TEST_SUITE
