// Gossip: the schedule is symmetric and fair; over real processes the pair
// averages equal an in-process simulation of the schedule bit for bit, the
// sum over nodes is conserved, the spread shrinks, and on a hypercube every
// node holds the exact average after log2 N rounds. A round completes with
// its partner's exchange alone (issue 16): not waiting for the other nodes'
// sketches, whose latest ones it carries with their rounds; the stop
// agreement gives every node one cut round.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
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
    for (size_t j = 0; j < count; ++j) x[j] += (*res->mixed)[j];  // the correction
    const int32_t partner = res->partner;
    out.append(reinterpret_cast<const char*>(&partner), sizeof(partner));
    out.append(reinterpret_cast<const char*>(x.data()), count * sizeof(float));
  }
  comm.stop(5000);
  return out;
}

// A gate the test opens once; threads wait on it (bounded).
class Gate {
 public:
  void open() {
    std::lock_guard<std::mutex> lk(mu_);
    open_ = true;
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, std::chrono::seconds(30), [&] { return open_; }))
      throw std::runtime_error("gate not opened within 30 s");
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

CommOptions thread_node(int self, const std::vector<int>& ports, int window) {
  CommOptions o;
  o.self = self;
  o.peers = loopback_peers(ports);
  o.mixer = MixerKind::kGossip;
  o.window = window;
  o.chunk_bytes = 256;
  o.connect_timeout_ms = 20000;
  o.heartbeat_ms = 100;
  o.peer_timeout_ms = 10000;
  return o;
}

// The next result within 10 s (or none: a failure of the test).
std::optional<RoundResult> next_result(Communicator& c) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline)  // bounded by the deadline
    if (auto r = c.wait(100)) return r;
  return std::nullopt;
}

}  // namespace

TEST_SUITE("gossip") {

TEST_CASE("gossip, 4 nodes: a round completes with its partner's exchange alone; its result carries the latest sketches and their rounds; the barrier (gossip_barrier) would wait") {
  // Hypercube on 4: round 0 pairs 0-1 and 2-3, round 1 pairs 0-2 and 1-3.
  // Nodes 2 and 3 hold before their round 0 (gate a); node 1 holds after its
  // round 0 (gate b). Node 0 must still finish round 0 with node 1, with no
  // sketch of node 2 or 3 (none was sent); once 2 and 3 submit round 0, node
  // 0 finishes round 1 with node 2 while node 1 is still at round 0: the
  // result carries node 1's sketch of round 0 (age 1: it came before node
  // 1's snapshot of round 0, on the same connection) and node 2's of round 1.
  // With gossip_barrier, node 0's round 0 waits for 2's and 3's sketches.
  const size_t count = 37;
  for (bool barrier : {false, true}) {
    CAPTURE(barrier);
    const std::vector<int> ports = free_ports(4);
    Gate a, b;
    std::vector<std::string> errors(4);
    std::vector<std::optional<RoundResult>> r0(4), r1(4);
    bool early = false;  // barrier: node 0 had round 0 before 2 and 3 submitted
    auto x_of = [](int node, size_t j) { return static_cast<float>(node * 10) + 0.25f * static_cast<float>(j); };
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&, i] {
        try {
          CommOptions o = thread_node(i, ports, 2);
          o.gossip_barrier = barrier;
          Communicator c(o);
          std::vector<float> params(count, static_cast<float>(i));
          c.start(params.data(), count);
          std::vector<float> x(count);
          for (size_t j = 0; j < count; ++j) x[j] = x_of(i, j);
          auto sketch = [&](uint64_t r) { return std::vector<float>{static_cast<float>(i), static_cast<float>(r)}; };
          if (i >= 2) a.wait();
          c.submit(0, x, sketch(0));
          if (i == 0) {
            if (barrier) {
              early = c.wait(300).has_value();  // 2 and 3 have not submitted: the barrier holds
              a.open();
            }
            r0[0] = next_result(c);
            if (!barrier) a.open();
          }
          if (i == 1) {
            r0[1] = next_result(c);
            b.wait();
            c.submit(1, x, sketch(1));
          }
          if (i >= 2) r0[size_t(i)] = next_result(c);
          if (i == 0) {  // node 1 stays at round 0 until node 0 has round 1 (the barrier: it cannot)
            c.submit(1, x, sketch(1));
            if (!barrier) r1[0] = next_result(c);
            b.open();
            if (barrier) r1[0] = next_result(c);
          }
          if (i == 2) {
            c.submit(1, x, sketch(1));
            r1[2] = next_result(c);
          }
          if (i == 3) {
            b.wait();
            c.submit(1, x, sketch(1));
          }
          if (i == 1 || i == 3) r1[size_t(i)] = next_result(c);
          c.stop(5000);
        } catch (const std::exception& e) {
          errors[size_t(i)] = e.what();
          a.open();
          b.open();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < 4; ++i) {
      CAPTURE(i);
      REQUIRE_MESSAGE(errors[size_t(i)].empty(), errors[size_t(i)]);
      REQUIRE(r0[size_t(i)].has_value());
      REQUIRE(r1[size_t(i)].has_value());
      CHECK(r0[size_t(i)]->round == 0);
      CHECK(r1[size_t(i)]->round == 1);
    }
    const RoundResult& n0 = *r0[0];
    CHECK(n0.partner == 1);
    for (size_t j = 0; j < count; ++j)  // the pair's correction, exactly
      CHECK((*n0.mixed)[j] == (x_of(1, j) - x_of(0, j)) * 0.5f);
    // every sketch it carries is its node's, of the round it says
    for (const auto* res : {&*r0[0], &*r1[0]})
      for (const auto& [id, sk] : res->sketches) {
        CAPTURE(id);
        REQUIRE(res->sketch_rounds.count(id) == 1);
        CHECK(sk == std::vector<float>{static_cast<float>(id), static_cast<float>(res->sketch_rounds.at(id))});
        CHECK(res->sketch_rounds.at(id) <= res->round);
      }
    const RoundResult& n1 = *r1[0];
    CHECK(n1.partner == 2);
    if (!barrier) {
      // round 0 completed before node 2 or 3 had submitted anything
      CHECK(n0.sketches.count(2) == 0);
      CHECK(n0.sketches.count(3) == 0);
      CHECK(n0.sketch_rounds.at(0) == 0);
      CHECK(n0.sketch_rounds.at(1) == 0);
      // round 1 completed with node 1 still at round 0: its sketch is one round old
      CHECK(n1.sketch_rounds.at(1) == 0);
      CHECK(n1.sketch_rounds.at(2) == 1);
      CHECK(n1.sketch_rounds.at(0) == 1);
    } else {
      CHECK_FALSE(early);
      // the barrier: every member's sketch of the round is in before it completes
      for (const auto* res : {&n0, &n1}) {
        CHECK(res->sketches.size() == 4);
        for (const auto& [id, r] : res->sketch_rounds) CHECK(r == res->round);
      }
    }
  }
}

TEST_CASE("gossip stop agreement, 4 nodes: node 3 asks; every node learns one cut round, above every round submitted when asked, and closes no round past it") {
  // Every node closes rounds 0 and 1; node 3 then closes round 2 with
  // RoundFlags::stop (it asks the coordinator, node 0), and the others go on
  // closing rounds (each close first asks wait_close_allowed) until they
  // learn the cut R, then close up to R. One R everywhere; R is at least the
  // 3 rounds node 3 had submitted plus the margin (window + 1); every node
  // closed exactly rounds 0..R-1: before R was known it could not close R-1.
  const int n = 4, window = 2;
  const size_t count = 9;
  const std::vector<int> ports = free_ports(n);
  std::vector<std::string> errors(n);
  std::vector<std::optional<uint64_t>> cut(n);
  std::vector<uint64_t> closed(n, 0);
  Gate asked;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      try {
        Communicator c(thread_node(i, ports, window));
        std::vector<float> params(count, 1.0f);
        c.start(params.data(), count);
        std::vector<float> x(count, static_cast<float>(i));
        uint64_t r = 0;
        auto close = [&](RoundFlags f = {}) {
          if (!c.wait_close_allowed(r, 10000)) throw std::runtime_error("round " + std::to_string(r) + " not allowed");
          if (c.cut_round() && r >= *c.cut_round()) throw std::runtime_error("round " + std::to_string(r) + " past the cut");
          c.submit(r, x, {static_cast<float>(i)}, f);
          ++r;
          while (c.in_flight() >= static_cast<uint64_t>(window))  // bounded: next_result's deadline
            if (!next_result(c)) throw std::runtime_error("no result");
        };
        while (r < 2) close();
        if (i == 3) {
          RoundFlags f;
          f.stop = true;
          close(f);  // round 2 asks
          asked.open();
        } else {
          asked.wait();
        }
        for (int k = 0; k < 64 && !c.cut_round(); ++k) close();  // bounded: the promise stops it
        cut[size_t(i)] = c.cut_round();
        if (cut[size_t(i)])
          while (r < *cut[size_t(i)]) close();  // up to the cut
        closed[size_t(i)] = r;
        while (c.in_flight() > 0)  // every round in flight lands
          if (!next_result(c)) throw std::runtime_error("no result while draining");
        c.stop(5000);
      } catch (const std::exception& e) {
        errors[size_t(i)] = e.what();
        asked.open();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    REQUIRE_MESSAGE(errors[size_t(i)].empty(), errors[size_t(i)]);
    REQUIRE(cut[size_t(i)].has_value());
    CHECK(*cut[size_t(i)] == *cut[0]);    // one cut
    CHECK(closed[size_t(i)] == *cut[0]);  // rounds 0..R-1, no more
  }
  MESSAGE("cut round " << *cut[0]);
  CHECK(*cut[0] >= 3 + static_cast<uint64_t>(window) + 1);
  CHECK(*cut[0] < 64);
}

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
