// ShardService (net/shard_server.h) on a live node: a real node 0 serves
// shard [0, 5) of a 10-float vector; node 1 is played by raw sockets (its own
// DEALER, and an "evil" one that claims to be node 1). Valid pushes and
// fetches are applied and answered in order; hostile ones are refused,
// counted by reason, and never applied.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <thread>

#include "net/communicator.h"
#include "net/shard_server.h"
#include "net/transport.h"
#include "test/net/net_test_util.h"

using namespace tether::net;
using namespace tether::net::testing;
using Clock = std::chrono::steady_clock;

namespace {

zmq::socket_t dealer_as(zmq::context_t& ctx, const std::string& id, int port) {
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::routing_id, id);
  d.set(zmq::sockopt::linger, 0);
  d.connect("tcp://127.0.0.1:" + std::to_string(port));
  return d;
}

void send_frame(zmq::socket_t& sock, Header h, const void* payload, size_t bytes, bool good_hash = true) {
  h.sender = 1;
  h.payload_bytes = bytes;
  h.payload_hash = good_hash ? payload_hash(payload, bytes) : 12345;
  std::vector<unsigned char> head(kHeaderBytes);
  encode_header(h, head.data());
  sock.send(zmq::buffer(head), zmq::send_flags::sndmore);
  sock.send(zmq::buffer(payload, bytes));
}

// The next frame of `kind` node 0 sends to node 1's port (bounded wait).
bool next_of(zmq::socket_t& sink, Kind kind, Header* h, std::vector<float>* payload) {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {  // bounded by the deadline
    zmq::pollitem_t item{static_cast<void*>(sink), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(50)) == 0) continue;
    std::vector<zmq::message_t> parts;
    for (;;) {  // the parts of one message
      zmq::message_t m;
      if (!sink.recv(m, zmq::recv_flags::none)) break;
      const bool more = m.more();
      parts.push_back(std::move(m));
      if (!more) break;
    }
    if (parts.size() != 3 || decode_header(parts[1].data(), parts[1].size(), h) != Reject::kNone) continue;
    if (h->kind != kind) continue;
    payload->resize(parts[2].size() / sizeof(float));
    if (!payload->empty()) std::memcpy(payload->data(), parts[2].data(), parts[2].size());
    return true;
  }
  return false;
}

}  // namespace

TEST_SUITE("shard_server") {

TEST_CASE("shard ranges cover the vector once, in order, for every N and size") {
  for (int nodes : {1, 2, 3, 7, 8}) {
    for (uint64_t count : {0ull, 1ull, 6ull, 8ull, 1001ull}) {
      uint64_t next = 0;
      for (int k = 0; k < nodes; ++k) {
        const ShardRange r = shard_range(k, nodes, count);
        CHECK(r.offset == next);
        CHECK(r.count + 1 >= count / uint64_t(nodes));
        next += r.count;
      }
      CHECK(next == count);
    }
  }
}

TEST_CASE("hostile push, fetch, shard and ack frames are refused and counted; valid ones applied in order") {
  const std::vector<int> ports = free_ports(2);
  const size_t count = 10;
  CommOptions o;
  o.self = 0;
  o.peers = loopback_peers(ports);
  o.window = 1;
  o.connect_timeout_ms = 10000;
  o.heartbeat_ms = 50;
  o.peer_timeout_ms = 60000;  // the raw node sends no heartbeats
  o.config_hash = 42;
  auto svc = std::make_shared<ShardService>(0, 2, count);
  o.service = svc;
  std::vector<float> x0(count);
  for (size_t j = 0; j < count; ++j) x0[j] = 1.0f + float(j);
  std::atomic<bool> started{false}, go{false};
  std::atomic<Communicator*> live{nullptr};
  std::string error;
  CommStats stats;
  std::thread node0([&] {
    try {
      Communicator c(o);
      std::vector<float> params = x0;
      c.start(params.data(), count);
      live = &c;
      started = true;
      const auto deadline = Clock::now() + std::chrono::seconds(20);
      while (!go && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      stats = c.stats();
      live = nullptr;
      c.stop(0, true);
    } catch (const std::exception& e) {
      error = e.what();
      started = true;
    }
  });
  zmq::context_t ctx(1);
  zmq::socket_t sink(ctx, zmq::socket_type::router);
  sink.set(zmq::sockopt::linger, 0);
  sink.bind("tcp://127.0.0.1:" + std::to_string(ports[1]));
  zmq::socket_t self = dealer_as(ctx, Transport::identity(1), ports[0]);
  zmq::socket_t evil = dealer_as(ctx, "evil", ports[0]);
  {
    Header h;
    h.kind = Kind::kHello;
    const uint64_t fields[] = {o.config_hash, o.sketch_seed, 2, 0, 1, o.chunk_bytes, count, 0, 0, 0x77};  // ..., incarnation
    send_frame(self, h, fields, sizeof fields);
    Header ready;   // node 1 has the initial parameters (start-up's kReady)
    ready.kind = Kind::kReady;
    send_frame(self, ready, nullptr, 0);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  while (!started && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE_MESSAGE(error.empty(), error);
  REQUIRE(started.load());

  // A valid push (node 0's shard is [0, 5)) and its acknowledgement.
  const std::vector<float> v = {0.5f, -0.25f, 2.0f, 0.125f, -1.0f};
  Header push;
  push.kind = Kind::kPush;
  push.offset = 0;
  push.count = 5;
  push.round = 0;
  send_frame(self, push, v.data(), 20);
  Header got;
  std::vector<float> payload;
  REQUIRE(next_of(sink, Kind::kAck, &got, &payload));
  CHECK(got.round == 0);
  CHECK(got.step == 1);   // the server's version after applying it

  std::map<std::string, uint64_t> expected;
  auto hostile = [&](const char* reason, Header h, std::vector<float> data, bool good_hash = true) {
    send_frame(evil, h, data.data(), data.size() * sizeof(float), good_hash);
    ++expected[reason];
  };
  Header h = push;
  h.round = 1;
  h.offset = 1;
  hostile("range_mismatch", h, v);   // not the server's shard
  h = push;
  h.round = 1;
  h.count = 4;
  hostile("range_mismatch", h, {1, 2, 3, 4});   // part of the shard
  h = push;
  h.round = 7;
  hostile("unexpected", h, v);   // a gap in the pushes' numbers
  h = push;
  h.round = 1;
  std::vector<float> nan = v;
  nan[2] = std::numeric_limits<float>::quiet_NaN();
  hostile("non_finite", h, nan);
  hostile("bad_checksum", h, v, false);
  hostile("identity_mismatch", h, v);   // valid, but not on node 1's connection
  Header shard;
  shard.kind = Kind::kShard;
  shard.offset = 5;
  shard.count = 5;
  hostile("unexpected", shard, v);   // node 0 fetched nothing
  Header ack;
  ack.kind = Kind::kAck;
  hostile("unexpected", ack, {});   // node 0 pushed nothing
  Header fetch;
  fetch.kind = Kind::kFetch;
  fetch.offset = 3;
  hostile("range_mismatch", fetch, {});
  uint64_t total = 0;
  for (auto& [k, n] : expected) total += n;
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < until && live.load() && live.load()->stats().msgs_rejected < total)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));

  // The same push again, on node 1's own connection: a duplicate.
  send_frame(self, push, v.data(), 20);
  ++expected["duplicate"];
  // A fetch answers the shard as applied: x0 + v, version 1.
  fetch.offset = 0;
  send_frame(self, fetch, nullptr, 0);
  REQUIRE(next_of(sink, Kind::kShard, &got, &payload));
  CHECK(got.round == 0);
  CHECK(got.step == 1);
  CHECK(got.offset == 0);
  REQUIRE(payload.size() == 5);
  for (size_t j = 0; j < 5; ++j) CHECK(payload[j] == x0[j] + v[j]);
  CHECK(svc->server_version() == 1);
  go = true;
  node0.join();
  CHECK(error.empty());
  CHECK(stats.msgs_rejected == total + 1);
  CHECK(stats.rejected_by_reason == expected);
  self.close();
  evil.close();
  sink.close();
  ctx.close();
}

}  // TEST_SUITE
