// Ring all-reduce: the algorithm in one process over a shuffling fake network
// (peer counts 1..15), then real separate processes over ZeroMQ on loopback
// for N in {1,2,3,4,7,8} and counts {0, 1, N-1, N+1, 1,000,003}. Inputs depend
// on node, position and round; results must equal a closed form computed in
// double, bit for bit, and be bit-identical on every node.
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "net/ring_allreduce.h"
#include "test/net/fake_net.h"
#include "test/net/net_test_util.h"

using namespace tether::net;
using tether::net::testing::FakeNet;
using namespace tether::net::testing;

namespace {

// Exactly representable inputs: every partial sum is an integer below 2^24.
float input(int node, uint64_t round, size_t j) {
  return static_cast<float>(node * 1000 + static_cast<int>(j % 997) + 7 * static_cast<int>(round) +
                            static_cast<int>((static_cast<size_t>(node) * j) % 13));
}
float expected_mean(int nodes, uint64_t round, size_t j) {
  double sum = 0;  // exact: integers far below 2^53
  for (int i = 0; i < nodes; ++i) sum += input(i, round, j);
  return static_cast<float>(sum) / static_cast<float>(nodes);
}

std::string run_ring_node(int self, int nodes, size_t count, const std::vector<int>& ports,
                          int rounds) {
  CommOptions o;
  o.self = self;
  o.peers = loopback_peers(ports);
  o.window = 3;
  o.chunk_bytes = count < 100 ? 4 : (1 << 18);  // tiny chunks: many per segment
  o.connect_timeout_ms = 20000;
  o.heartbeat_ms = 100;
  o.peer_timeout_ms = 5000;
  o.config_hash = 0xabcdef;
  Communicator comm(o);
  std::vector<float> params(count, 0.0f);
  if (self == 0) {
    for (size_t j = 0; j < count; ++j) params[j] = static_cast<float>(j) * 0.5f;
  }
  comm.start(params.data(), count);
  size_t param_errors = 0;
  for (size_t j = 0; j < count; ++j) param_errors += params[j] != static_cast<float>(j) * 0.5f;
  std::ostringstream out;
  out << "params_errors " << param_errors << "\n";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(40);
  uint64_t next = 0, got = 0;
  while (got < static_cast<uint64_t>(rounds)) {  // bounded by the deadline
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("ring node timed out");
    while (next < static_cast<uint64_t>(rounds) && comm.in_flight() < 3) {
      // staggered: nodes start each round at different times
      std::this_thread::sleep_for(std::chrono::milliseconds((self * 3 + static_cast<int>(next)) % 5));
      std::vector<float> x(count);
      for (size_t j = 0; j < count; ++j) x[j] = input(self, next, j);
      comm.submit(next, std::move(x), {static_cast<float>(self), static_cast<float>(next)});
      ++next;
    }
    std::optional<RoundResult> r = comm.wait(200);
    if (!r) continue;
    size_t errors = r->round != got || r->mixed->size() != count || r->partner != -1;
    for (size_t j = 0; j < r->mixed->size() && j < count; ++j)
      errors += (*r->mixed)[j] != expected_mean(nodes, r->round, j);
    errors += r->sketches.size() != static_cast<size_t>(nodes);
    for (const auto& [id, sk] : r->sketches)
      errors += sk != std::vector<float>{static_cast<float>(id), static_cast<float>(r->round)};
    out << "round " << r->round << " hash " << hash64(r->mixed->data(), r->mixed->size() * 4)
        << " errors " << errors << "\n";
    ++got;
  }
  comm.stop(5000);
  return out.str();
}

}  // namespace

TEST_SUITE("ring") {

TEST_CASE("ring layout: segments and chunks tile the vector") {
  FakeNet net;
  for (int nodes : {1, 2, 3, 7, 8}) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{5}, size_t{1000}}) {
      for (size_t chunk_bytes : {size_t{4}, size_t{12}, size_t{1024}}) {
        RingAllreduce ring(0, nodes, count, chunk_bytes, nullptr);
        uint64_t covered = 0;
        for (int s = 0; s < nodes; ++s) {
          CHECK(ring.segment_begin(s) == covered);
          for (uint32_t c = 0; c < ring.chunks_in(s); ++c) {
            const ChunkRange r = ring.chunk(s, c);
            CHECK(r.offset == covered);
            CHECK(r.count >= 1);
            CHECK(r.count <= std::max<size_t>(1, chunk_bytes / 4));
            covered += r.count;
          }
          CHECK(ring.segment_end(s) == covered);
        }
        CHECK(covered == count);
      }
    }
  }
}

TEST_CASE("ring algorithm over a shuffling in-process network, N = 1..15") {
  std::mt19937 rng(12345);
  for (int nodes = 1; nodes <= 15; ++nodes) {
    for (size_t count : {size_t{0}, size_t{1}, size_t{4}, size_t{100}, size_t{1000}, static_cast<size_t>(nodes - 1),
                         static_cast<size_t>(nodes + 1)}) {
      CAPTURE(nodes);
      CAPTURE(count);
      FakeNet net;
      std::vector<std::unique_ptr<RingAllreduce>> rings;
      const int rounds = 3;
      std::vector<std::vector<std::shared_ptr<RoundBuffer>>> submitted(static_cast<size_t>(nodes));
      for (int i = 0; i < nodes; ++i) {
        auto box = std::make_unique<FakeNet::Box>();
        box->net = &net;
        box->self = i;
        rings.push_back(std::make_unique<RingAllreduce>(i, nodes, count, 64, box.get()));
        net.boxes.push_back(std::move(box));
        REQUIRE(rings.back()->keeps_input());
      }
      // submit in a shuffled node order, later rounds first on some nodes'
      // neighbours: frames of unsubmitted rounds are buffered
      std::vector<std::pair<int, int>> order;
      for (int r = 0; r < rounds; ++r)
        for (int i = 0; i < nodes; ++i) order.push_back({i, r});
      std::shuffle(order.begin(), order.end(), rng);
      std::vector<int> next(static_cast<size_t>(nodes), 0);
      size_t guard = 0;
      while (!order.empty() || !net.queue.empty()) {  // bounded: guard below
        REQUIRE(++guard < 10000000);
        if (!order.empty() && (net.queue.empty() || rng() % 3 == 0)) {
          auto it = std::find_if(order.begin(), order.end(), [&](auto& p) {
            return p.second == next[static_cast<size_t>(p.first)];
          });
          const int i = it->first;
          order.erase(it);
          auto buf = std::make_shared<RoundBuffer>();
          buf->data.resize(count);
          for (size_t j = 0; j < count; ++j) buf->data[j] = input(i, static_cast<uint64_t>(next[static_cast<size_t>(i)]), j);
          submitted[static_cast<size_t>(i)].push_back(buf);
          rings[static_cast<size_t>(i)]->submit(static_cast<uint64_t>(next[static_cast<size_t>(i)]++), buf, 0);
          continue;
        }
        const size_t pick = rng() % net.queue.size();
        FakeNet::Msg m = std::move(net.queue[pick]);
        net.queue.erase(net.queue.begin() + static_cast<long>(pick));
        RingAllreduce& dst = *rings[static_cast<size_t>(m.to)];
        REQUIRE(dst.check(m.h) == Reject::kNone);
        REQUIRE(check_payload(m.h, m.payload.data(), m.payload.size()) == Reject::kNone);
        REQUIRE(dst.receive(m.h, std::move(m.payload)) == Reject::kNone);
      }
      for (int r = 0; r < rounds; ++r) {
        std::vector<float> first;
        for (int i = 0; i < nodes; ++i) {
          RingAllreduce& ring = *rings[static_cast<size_t>(i)];
          REQUIRE(ring.finished(static_cast<uint64_t>(r)));
          int partner = 7;
          std::vector<float> got = ring.take(static_cast<uint64_t>(r), &partner);
          CHECK(partner == -1);
          REQUIRE(got.size() == count);
          size_t wrong = 0;
          for (size_t j = 0; j < count; ++j) wrong += got[j] != expected_mean(nodes, static_cast<uint64_t>(r), j);
          CHECK(wrong == 0);
          if (i == 0) first = got;
          CHECK(std::memcmp(first.data(), got.data(), count * 4) == 0);
          // the submitted vector is untouched (a view change re-runs the
          // round from it, and the trainer forms its correction in it)
          const RoundBuffer& in = *submitted[static_cast<size_t>(i)][static_cast<size_t>(r)];
          size_t changed = 0;
          for (size_t j = 0; j < count; ++j) changed += in.data[j] != input(i, static_cast<uint64_t>(r), j);  // j over the vector
          CHECK(changed == 0);
        }
      }
    }
  }
}

TEST_CASE("ring result storage: a recycled vector holds the next round's mean, no new allocation") {
  FakeNet net;
  std::vector<std::unique_ptr<RingAllreduce>> rings;
  const size_t count = 1000;
  for (int i = 0; i < 2; ++i) {
    auto box = std::make_unique<FakeNet::Box>();
    box->net = &net;
    box->self = i;
    rings.push_back(std::make_unique<RingAllreduce>(i, 2, count, 256, box.get()));
    net.boxes.push_back(std::move(box));
  }
  std::vector<const float*> recycled(2, nullptr);
  for (uint64_t r = 0; r < 2; ++r) {
    std::vector<std::shared_ptr<RoundBuffer>> bufs;
    for (int i = 0; i < 2; ++i) {
      auto buf = std::make_shared<RoundBuffer>();
      buf->data.resize(count);
      for (size_t j = 0; j < count; ++j) buf->data[j] = input(i, r, j);
      bufs.push_back(buf);
      rings[static_cast<size_t>(i)]->submit(r, buf, 0);
    }
    for (size_t guard = 0; !net.queue.empty(); ++guard) {  // bounded: 2 nodes, 2 steps, 4 chunks each
      REQUIRE(guard < 100);
      FakeNet::Msg m = std::move(net.queue.front());
      net.queue.erase(net.queue.begin());
      REQUIRE(rings[static_cast<size_t>(m.to)]->receive(m.h, std::move(m.payload)) == Reject::kNone);
    }
    for (int i = 0; i < 2; ++i) {
      RingAllreduce& ring = *rings[static_cast<size_t>(i)];
      REQUIRE(ring.finished(r));
      std::vector<float> got = ring.take(r, nullptr);
      size_t wrong = 0;
      for (size_t j = 0; j < count; ++j) wrong += got[j] != expected_mean(2, r, j);
      CHECK(wrong == 0);
      if (r == 1) CHECK(got.data() == recycled[static_cast<size_t>(i)]);  // round 0's input, reused
      recycled[static_cast<size_t>(i)] = bufs[static_cast<size_t>(i)]->data.data();
      ring.recycle(std::move(bufs[static_cast<size_t>(i)]->data));
      ring.recycle(std::vector<float>(count + 1));  // of another length: refused, not used
    }
  }
}

TEST_CASE("ring layout checks refuse misplaced frames") {
  RingAllreduce ring(2, 4, 100, 40, nullptr);  // predecessor 1
  Header h;
  h.kind = Kind::kRing;
  h.sender = 1;
  h.step = 0;  // node 1's own segment
  h.chunk = 0;
  h.offset = ring.chunk(1, 0).offset;
  h.count = ring.chunk(1, 0).count;
  CHECK(ring.check(h) == Reject::kNone);
  Header bad = h;
  bad.sender = 3;
  CHECK(ring.check(bad) == Reject::kUnexpected);
  bad = h;
  bad.offset += 1;
  CHECK(ring.check(bad) == Reject::kRangeMismatch);
  bad = h;
  bad.count -= 1;
  CHECK(ring.check(bad) == Reject::kRangeMismatch);
  bad = h;
  bad.step = 6;  // 2(N-1) steps: 0..5
  CHECK(ring.check(bad) == Reject::kRangeMismatch);
  bad = h;
  bad.chunk = ring.chunks_in(1);
  CHECK(ring.check(bad) == Reject::kRangeMismatch);
  bad = h;
  bad.kind = Kind::kGossip;
  CHECK(ring.check(bad) == Reject::kUnexpected);
}

TEST_CASE("ring all-reduce across real processes: N x counts, bit-identical") {
  for (int nodes : {1, 2, 3, 4, 7, 8}) {
    std::vector<size_t> counts = {0, 1, static_cast<size_t>(nodes - 1), static_cast<size_t>(nodes + 1),
                                  1000003};
    for (size_t count : counts) {
      CAPTURE(nodes);
      CAPTURE(count);
      const int rounds = count > 1000 ? 3 : 5;
      const std::vector<int> ports = free_ports(nodes);
      const auto res = run_children(
          nodes, [&](int i) { return run_ring_node(i, nodes, count, ports, rounds); }, 90000);
      for (int i = 0; i < nodes; ++i) {
        CAPTURE(i);
        CAPTURE(res[static_cast<size_t>(i)].out);
        CHECK(res[static_cast<size_t>(i)].ok);
        CHECK(res[static_cast<size_t>(i)].out == res[0].out);  // same hashes: same bits
      }
      std::istringstream in(res[0].out);
      std::string word;
      size_t value = 0, lines = 0;
      in >> word >> value;
      CHECK(word == "params_errors");
      CHECK(value == 0);
      std::string line;
      while (in >> word) {  // "round r hash h errors e"
        uint64_t r, h;
        std::string w2, w3;
        in >> r >> w2 >> h >> w3 >> value;
        CHECK(value == 0);
        ++lines;
      }
      CHECK(lines == static_cast<size_t>(rounds));
    }
  }
}

}  // TEST_SUITE
