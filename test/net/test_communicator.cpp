// Communicator: hostile frames against a live node, a SIGKILLed peer, peers
// that never come up, refused configurations, graceful stop, link emulation.
#include <doctest/doctest.h>

#include <atomic>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "net/transport.h"
#include "test/net/net_test_util.h"

using namespace tether::net;
using namespace tether::net::testing;
using Clock = std::chrono::steady_clock;

namespace {

float input(int node, uint64_t round, size_t j) {
  return static_cast<float>(node * 100 + static_cast<int>(j % 101) + 3 * static_cast<int>(round));
}
float expected_mean(int nodes, uint64_t round, size_t j) {
  double sum = 0;
  for (int i = 0; i < nodes; ++i) sum += input(i, round, j);
  return static_cast<float>(sum) / static_cast<float>(nodes);
}

CommOptions options(int self, const std::vector<int>& ports) {
  CommOptions o;
  o.self = self;
  o.peers = loopback_peers(ports);
  o.window = 3;
  o.connect_timeout_ms = 10000;
  o.heartbeat_ms = 50;
  o.peer_timeout_ms = 1000;
  o.config_hash = 42;
  return o;
}

// Waits (bounded) for the next round; throws on time-out.
RoundResult next_round(Communicator& c, int timeout_ms = 10000) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {  // bounded by the deadline
    if (auto r = c.wait(100)) return std::move(*r);
  }
  throw std::runtime_error("no round within the deadline");
}

size_t count_wrong(const RoundResult& r, int nodes, size_t count) {
  size_t wrong = r.mixed->size() != count;
  for (size_t j = 0; j < r.mixed->size() && j < count; ++j) wrong += (*r.mixed)[j] != expected_mean(nodes, r.round, j);
  return wrong;
}

// Waits until flag is set, at most timeout_ms.
bool wait_flag(const std::atomic<bool>& flag, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!flag.load() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return flag.load();
}

// A raw DEALER with routing identity `id`, connected to 127.0.0.1:port.
zmq::socket_t raw_dealer(zmq::context_t& ctx, const std::string& id, int port) {
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::routing_id, id);
  d.set(zmq::sockopt::linger, 0);
  d.connect("tcp://127.0.0.1:" + std::to_string(port));
  return d;
}

// Sends [header][payload] with h's payload fields filled in (a wrong hash
// unless good_hash).
void send_raw(zmq::socket_t& sock, Header h, const void* payload, size_t bytes, bool good_hash) {
  h.payload_bytes = bytes;
  h.payload_hash = good_hash ? payload_hash(payload, bytes) : 12345;
  std::vector<unsigned char> head(kHeaderBytes);
  encode_header(h, head.data());
  sock.send(zmq::buffer(head), zmq::send_flags::sndmore);
  sock.send(zmq::buffer(payload, bytes));
}

// Node 1 of a 2-node config played by raw sockets against a real node 0: a
// ROUTER on node 1's port takes node 0's traffic, a DEALER with node 1's
// routing identity talks to node 0. hello() sends node 1's hello with every
// field equal to o's (count floats), under the given protocol version.
struct RawNode1 {
  zmq::context_t ctx{1};
  zmq::socket_t sink, self;
  explicit RawNode1(const std::vector<int>& ports)
      : sink(ctx, zmq::socket_type::router), self(raw_dealer(ctx, Transport::identity(1), ports[0])) {
    sink.set(zmq::sockopt::linger, 0);
    sink.bind("tcp://127.0.0.1:" + std::to_string(ports[1]));
  }
  void hello(const CommOptions& o, size_t count, uint16_t version = kProtocolVersion) {
    Header h;
    h.kind = Kind::kHello;
    h.sender = 1;
    h.version = version;
    const uint64_t fields[] = {o.config_hash, o.sketch_seed, o.peers.size(), static_cast<uint64_t>(o.mixer),
                               static_cast<uint64_t>(o.window), o.chunk_bytes, count, o.first_round,
                               o.start_step, 0x1234567};
    send_raw(self, h, fields, sizeof fields, true);
  }
  // Start-up's kReady: node 1 says it has node 0's parameters (sent right
  // after the hello, it is taken after the broadcast the hello starts).
  void ready() {
    Header h;
    h.kind = Kind::kReady;
    h.sender = 1;
    send_raw(self, h, nullptr, 0, true);
  }
};

struct Frame {
  std::vector<unsigned char> header;
  std::vector<float> payload;
  size_t payload_bytes;  // may differ from payload.size() * 4 (truncation)
};

}  // namespace

TEST_SUITE("communicator") {

TEST_CASE("hostile frames to a live node mid-run: each refused and counted, rounds still exact") {
  const std::vector<int> ports = free_ports(2);
  const size_t count = 1000;
  const int rounds = 8;
  std::atomic<bool> paused0{false}, paused1{false}, go{false};
  std::atomic<Communicator*> live0{nullptr};  // node 0, for stats() from this thread
  std::vector<size_t> wrong(2, 0);
  std::vector<std::string> errors(2);
  std::vector<CommStats> stats(2);
  auto node = [&](int self) {
    try {
      CommOptions o = options(self, ports);
      o.chunk_bytes = 400;  // 100 floats: 5 chunks per segment
      Communicator c(o);
      std::vector<float> params(count, 0.0f);
      c.start(params.data(), count);
      auto submit = [&](uint64_t r) {
        std::vector<float> x(count);
        for (size_t j = 0; j < count; ++j) x[j] = input(self, r, j);
        c.submit(r, std::move(x), {static_cast<float>(self)});
      };
      for (uint64_t r = 0; r < 3; ++r) {
        submit(r);
        wrong[static_cast<size_t>(self)] += count_wrong(next_round(c), 2, count);
      }
      if (self == 1) submit(3);  // node 0 buffers its frames of round 3 meanwhile
      if (self == 0) live0 = &c;
      (self == 0 ? paused0 : paused1) = true;
      if (!wait_flag(go, 20000)) throw std::runtime_error("never resumed");
      for (uint64_t r = 3; r < rounds; ++r) {
        if (self == 0 || r > 3) submit(r);
        RoundResult res = next_round(c);
        wrong[static_cast<size_t>(self)] += res.round != r;
        wrong[static_cast<size_t>(self)] += count_wrong(res, 2, count);
      }
      stats[static_cast<size_t>(self)] = c.stats();
      if (self == 0) live0 = nullptr;
      c.stop(3000);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(self)] = e.what();
    }
  };
  std::thread t0(node, 0), t1(node, 1);
  REQUIRE(wait_flag(paused0, 20000));
  REQUIRE(wait_flag(paused1, 20000));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  // A valid ring frame for node 0, round 3 (in its window), from node 1 (its
  // predecessor): step 0 carries segment 1 = [500, 1000), 100 floats a chunk.
  auto make = [&](auto&& edit) {
    Header h;
    h.kind = Kind::kRing;
    h.epoch = 1;  // the first view
    h.sender = 1;
    h.round = 3;
    h.step = 0;
    h.chunk = 1;
    h.offset = 600;
    h.count = 100;
    Frame f;
    f.payload.assign(100, 1.0f);
    edit(h, f);
    f.payload_bytes = f.payload.size() * 4;
    h.payload_bytes = h.count * 4;
    if (h.payload_hash == 0) h.payload_hash = payload_hash(f.payload.data(), f.payload_bytes);
    f.header.resize(kHeaderBytes);
    encode_header(h, f.header.data());
    return f;
  };
  std::vector<std::pair<std::string, Frame>> frames;
  frames.push_back({"bad_magic", make([](Header& h, Frame&) { h.magic = 0x0badf00d; })});
  frames.push_back({"bad_version", make([](Header& h, Frame&) { h.version = 99; })});
  Frame flipped = make([](Header&, Frame&) {});
  flipped.header[20] ^= 0x40;
  frames.push_back({"header_checksum", flipped});
  Frame truncated = make([](Header&, Frame&) {});
  truncated.header.resize(50);
  frames.push_back({"header_size", truncated});
  frames.push_back({"bad_kind", make([](Header& h, Frame&) { h.kind = static_cast<Kind>(42); })});
  Frame oversized = make([](Header&, Frame&) {});
  {
    Header h;
    REQUIRE(decode_header(oversized.header.data(), kHeaderBytes, &h) == Reject::kNone);
    h.count = uint64_t{1} << 29;
    h.payload_bytes = uint64_t{1} << 31;
    encode_header(h, oversized.header.data());
  }
  frames.push_back({"oversized", oversized});
  frames.push_back({"length_mismatch", make([](Header&, Frame& f) { f.payload.resize(99); })});
  frames.push_back({"unknown_sender", make([](Header& h, Frame&) { h.sender = 99; })});
  frames.push_back({"unknown_sender", make([](Header& h, Frame&) { h.sender = 0; })});  // itself
  frames.push_back({"round_outside_window", make([](Header& h, Frame&) { h.round = 1000; })});
  frames.push_back({"round_outside_window", make([](Header& h, Frame&) { h.round = 1; })});  // done
  frames.push_back({"range_mismatch", make([](Header& h, Frame&) { h.offset = 601; })});
  frames.push_back({"bad_checksum", make([](Header& h, Frame&) { h.payload_hash = 12345; })});
  frames.push_back({"non_finite", make([](Header&, Frame& f) { f.payload[7] = std::numeric_limits<float>::quiet_NaN(); })});
  frames.push_back({"unexpected", make([](Header& h, Frame&) { h.kind = Kind::kParams; h.chunk = 0; h.offset = 0; })});
  frames.push_back({"unexpected", make([](Header& h, Frame& f) {   // start-up's kReady, mid-run
    h.kind = Kind::kReady;
    h.round = 0;
    h.chunk = 0;
    h.offset = 0;
    h.count = 0;
    f.payload.clear();
  })});
  frames.push_back({"identity_mismatch", make([](Header&, Frame&) {})});  // valid, but forged

  zmq::context_t ctx(1);
  zmq::socket_t evil = raw_dealer(ctx, "evil", ports[0]);
  std::map<std::string, uint64_t> expected;
  for (auto& [reason, f] : frames) {
    evil.send(zmq::buffer(f.header), zmq::send_flags::sndmore);
    evil.send(zmq::buffer(f.payload.data(), f.payload.size() * 4));
    ++expected[reason];
  }
  // wrong frame counts: a header alone, and four frames
  Frame valid = make([](Header&, Frame&) {});
  evil.send(zmq::buffer(valid.header));
  evil.send(zmq::buffer(valid.header), zmq::send_flags::sndmore);
  evil.send(zmq::buffer(valid.payload.data(), 400), zmq::send_flags::sndmore);
  evil.send(zmq::buffer(valid.payload.data(), 400));
  expected["frame_count"] += 2;
  uint64_t total = 0;
  for (auto& [k, v] : expected) total += v;

  // node 0 is paused mid-run (round 3 half in flight) and stays alive until
  // `go`: read its stats from this thread (a thread-safe snapshot)
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  CommStats live;
  while (Clock::now() < deadline) {  // bounded by the deadline
    live = live0.load()->stats();
    if (live.msgs_rejected >= total) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(live.msgs_rejected == total);
  CHECK(live.rejected_by_reason == expected);
  go = true;
  t0.join();
  t1.join();
  evil.close();
  ctx.close();
  CHECK(errors[0] == "");
  CHECK(errors[1] == "");
  CHECK(wrong[0] == 0);
  CHECK(wrong[1] == 0);
  CHECK(stats[0].msgs_rejected == total);
  CHECK(stats[0].rejected_by_reason == expected);
  CHECK(stats[1].msgs_rejected == 0);
  CHECK(stats[0].bytes_recv > count * 4);
  CHECK(stats[1].bytes_sent > count * 4);
}

TEST_CASE("a corrupt frame on a peer's own connection stops the run at once, naming the peer and the reason") {
  // Node 0 is real; node 1 is played by raw sockets: a DEALER with node 1's
  // routing identity (hello, then frames) and a ROUTER on node 1's port that
  // takes node 0's traffic. A bad frame from another identity is refused and
  // the run goes on; the same frame on node 1's connection cannot be
  // refused quietly (nothing sends it again: round 0 would wait forever), so
  // node 0 raises PeerCorrupt long before peer_timeout_ms.
  const std::vector<int> ports = free_ports(2);
  const size_t count = 100;
  CommOptions o = options(0, ports);
  o.peer_timeout_ms = 20000;
  std::atomic<bool> started{false}, done{false};
  std::string error, type;
  int error_peer = -1;
  Reject error_reason = Reject::kNone;
  double failed_after_s = -1;
  Clock::time_point sent_bad{};
  std::atomic<bool> bad_sent{false};
  std::thread node([&] {
    try {
      Communicator c(o);
      std::vector<float> params(count, 1.0f);
      c.start(params.data(), count);
      started = true;
      c.submit(0, std::vector<float>(count, 2.0f), {});
      const auto deadline = Clock::now() + std::chrono::seconds(15);
      while (Clock::now() < deadline) c.wait(50);  // bounded by the deadline
      type = "no error";
    } catch (const PeerCorrupt& e) {
      type = "PeerCorrupt";
      error = e.what();
      error_peer = e.peer;
      error_reason = e.reason;
      if (bad_sent) failed_after_s = std::chrono::duration<double>(Clock::now() - sent_bad).count();
    } catch (const std::exception& e) {
      type = "other";
      error = e.what();
    }
    done = true;
  });

  RawNode1 fake1(ports);
  zmq::socket_t evil = raw_dealer(fake1.ctx, "evil", ports[0]);
  fake1.hello(o, count);
  fake1.ready();
  REQUIRE(wait_flag(started, 10000));

  // Round 0, step 0 from node 1 (node 0's predecessor): segment 1 = [50, 100).
  Header ring;
  ring.kind = Kind::kRing;
  ring.epoch = 1;  // the first view
  ring.sender = 1;
  ring.round = 0;
  ring.offset = 50;
  ring.count = 50;
  const std::vector<float> data(50, 3.0f);
  send_raw(evil, ring, data.data(), 200, false);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(!done.load());  // another identity's bad frame: refused, run goes on
  sent_bad = Clock::now();
  bad_sent = true;
  send_raw(fake1.self, ring, data.data(), 200, false);
  REQUIRE(wait_flag(done, 10000));
  node.join();
  CAPTURE(error);
  CHECK(type == "PeerCorrupt");
  CHECK(error_peer == 1);
  CHECK(error_reason == Reject::kBadChecksum);
  CHECK(error.find("a frame from peer 1 (127.0.0.1:" + std::to_string(ports[1]) + ")") != std::string::npos);
  CHECK(error.find("bad_checksum") != std::string::npos);
  CHECK(error.find("round 0") != std::string::npos);
  CHECK(failed_after_s >= 0);
  CHECK(failed_after_s < 3.0);  // at once, not after peer_timeout_ms (20 s)
  evil.close();
}

TEST_CASE("start-up: a peer on another wire protocol version is refused at once, naming both versions") {
  const std::vector<int> ports = free_ports(2);
  CommOptions o = options(0, ports);
  o.connect_timeout_ms = 20000;
  RawNode1 old_node(ports);
  std::string what = "started";
  const auto t0 = Clock::now();
  std::thread node([&] {
    Communicator c(o);
    std::vector<float> params(8, 0.0f);
    try {
      c.start(params.data(), params.size());
    } catch (const PeerCorrupt& e) {
      what = e.what();
    } catch (const std::exception& e) {
      what = std::string("other: ") + e.what();
    }
  });
  old_node.hello(o, 8, kProtocolVersion - 1);  // a node of the previous release
  node.join();
  CAPTURE(what);
  CHECK(Clock::now() - t0 < std::chrono::seconds(5));  // not after connect_timeout_ms (20 s)
  CHECK(what.find("a frame from peer 1 (127.0.0.1:" + std::to_string(ports[1]) + ")") != std::string::npos);
  CHECK(what.find("bad_version") != std::string::npos);
  CHECK(what.find("it speaks wire protocol version " + std::to_string(kProtocolVersion - 1) + ", this node " +
                  std::to_string(kProtocolVersion)) != std::string::npos);
}

namespace {
// Three nodes in processes; node 2 SIGKILLs itself after round 2. The two
// survivors must form view 2 and go on with equal results. by_monitor: the
// time-out is far too long to matter (20 s), so the kill can only be caught
// by the socket monitor (its connection drops and stays down).
void sigkill_case(int timeout_ms, bool by_monitor) {
  const int nodes = 3, rounds = 12;
  const std::vector<int> ports = free_ports(nodes);
  const auto res = run_children(nodes, [&](int self) -> std::string {
    CommOptions o = options(self, ports);
    o.peer_timeout_ms = timeout_ms;
    Communicator c(o);
    std::vector<float> params(16, 0.0f);
    c.start(params.data(), 16);
    std::ostringstream seq;
    Clock::time_point since{};
    for (uint64_t r = 0; r < rounds; ++r) {  // bounded: node 2 dies after round 2
      c.submit(r, std::vector<float>(16, float(self + 1)), {});
      RoundResult res = next_round(c, 3 * timeout_ms + 5000);
      if (self == 2 && res.round == 2) ::raise(SIGKILL);
      if (res.round == 1) since = Clock::now();   // before the kill: node 2 needs our round 2 to finish its own
      seq << (*res.mixed)[0] << ",";
    }
    // from round 1 to the last round: the kill, its detection, the view
    // change and the rounds after it
    const auto rest_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
    std::vector<ViewEvent> ev = c.take_events();
    if (ev.size() != 1) return "views: " + std::to_string(ev.size());
    std::ostringstream out;
    out << ev[0].epoch << " " << ev[0].members.size() << " " << rest_ms << " "
        << ev[0].resume_round << " " << ev[0].anchor_hash << " " << seq.str() << " " << ev[0].reason;
    c.stop(2000);
    return out.str();
  }, 60000);
  CHECK_FALSE(res[2].ok);  // killed
  std::vector<std::string> seqs(2), hashes(2);
  for (int i = 0; i < 2; ++i) {
    CAPTURE(res[static_cast<size_t>(i)].out);
    REQUIRE(res[static_cast<size_t>(i)].ok);
    std::istringstream in(res[static_cast<size_t>(i)].out);
    int epoch = -1, members = -1;
    long long ms = -1;
    uint64_t resume = 0;
    in >> epoch >> members >> ms >> resume >> hashes[size_t(i)] >> seqs[size_t(i)];
    CHECK(epoch == 2);
    CHECK(members == 2);
    MESSAGE("node " << i << ": " << ms << " ms from round 1 (before the kill) to its last round");
    CHECK(ms < (by_monitor ? 3000 : timeout_ms + 1500));  // detected within the time-out (or the grace) plus slack
    // Rounds 0 and 1 finished everywhere (node 2 finished round 2, which
    // every node submitted after finishing round 1); round 2 too, unless node
    // 2 died before its last chunk of round 2 left.
    CHECK(resume >= 2);
    // Every member names the lost peer; the coordinator (node 0) says why:
    // a follower that did not notice first names the proposal instead.
    const std::string lost = "peer 2 (127.0.0.1:" + std::to_string(ports[2]) + ")";
    const std::string& out = res[static_cast<size_t>(i)].out;
    if (i == 0 || out.find("proposed by node 0") == std::string::npos) {
      // its own detection: the dropped connection, or (without it) the silence
      const bool closed = out.find(lost + " closed its connection (socket monitor)") != std::string::npos;
      CHECK((closed || (!by_monitor && out.find(lost + " silent for") != std::string::npos)));
    } else {
      CHECK(out.find("view 2 without " + lost) != std::string::npos);
    }
    // every round before the change averages 3 nodes (2), every one after 2 (1.5)
    std::istringstream vs(seqs[size_t(i)]);
    std::string v;
    uint64_t r = 0;
    size_t wrong = 0;
    for (; std::getline(vs, v, ','); ++r) wrong += std::stof(v) != (r < resume ? 2.0f : 1.5f);
    CHECK(r == rounds);
    CHECK(wrong == 0);
  }
  CHECK(seqs[0] == seqs[1]);
  CHECK(hashes[0] == hashes[1]);  // x̄ identical after the change
}
}  // namespace

TEST_CASE("a SIGKILLed peer: the survivors detect it within peer_timeout_ms, form view 2 and go on with equal results") {
  sigkill_case(1000, false);
}

TEST_CASE("a SIGKILLed peer with a 20 s peer_timeout_ms: its dropped connection (socket monitor) finds it within 3 s") {
  sigkill_case(20000, true);
}

TEST_CASE("start-up: peers that never come up are named after connect_timeout_ms") {
  const std::vector<int> ports = free_ports(3);
  CommOptions o = options(0, ports);
  o.connect_timeout_ms = 500;
  Communicator c(o);
  std::vector<float> params(10, 1.0f);
  const auto t0 = Clock::now();
  bool thrown = false;
  try {
    c.start(params.data(), params.size());
  } catch (const StartFailed& e) {
    thrown = true;
    const std::string what = e.what();
    CAPTURE(what);
    CHECK(e.peers == std::vector<int>{1, 2});
    CHECK(what.find("no hello from peer 1 (127.0.0.1:" + std::to_string(ports[1]) + ")") != std::string::npos);
    CHECK(what.find("peer 2 (127.0.0.1:" + std::to_string(ports[2]) + ")") != std::string::npos);
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  CHECK(thrown);
  CHECK(ms >= 450);
  CHECK(ms < 3000);
}

TEST_CASE("start-up: a peer with another config hash is refused, clearly") {
  const std::vector<int> ports = free_ports(2);
  std::vector<std::string> what(2);
  auto node = [&](int self) {
    CommOptions o = options(self, ports);
    o.connect_timeout_ms = 5000;
    o.config_hash = self == 0 ? 0x1111 : 0x2222;
    o.config_keys = {{"optimizer.lr", 5}, {"train.max_steps", self == 0 ? 10u : 20u}, {"data.name", 7}};
    Communicator c(o);
    std::vector<float> params(4, 0.0f);
    try {
      c.start(params.data(), params.size());
      what[static_cast<size_t>(self)] = "started";
    } catch (const StartFailed& e) {
      what[static_cast<size_t>(self)] = e.what();
    }
  };
  const auto t0 = Clock::now();
  std::thread a(node, 0), b(node, 1);
  a.join();
  b.join();
  CHECK(Clock::now() - t0 < std::chrono::seconds(4));  // refused at once, not timed out
  CAPTURE(what[0]);
  CAPTURE(what[1]);
  CHECK(what[0].find("refuses peer 1") != std::string::npos);
  CHECK(what[0].find("config hash 0x0000000000002222 differs from ours 0x0000000000001111 (it differs in "
                     "train.max_steps)") != std::string::npos);
  CHECK(what[1].find("refuses peer 0") != std::string::npos);
  CHECK(what[1].find("(it differs in train.max_steps)") != std::string::npos);
}

TEST_CASE("start-up: a peer's hello queued before this node's start-up state exists starts it cleanly") {
  // Node 0 is held between bind and connect (test hook) until node 1 has
  // bound, connected and sent its hello, so that hello is already queued when
  // node 0 arms its timers and reads: the order that once cancelled a timer
  // before it existed. Five times; every start must complete and a round
  // must be exact.
  for (int attempt = 0; attempt < 5; ++attempt) {
    CAPTURE(attempt);
    const std::vector<int> ports = free_ports(2);
    std::atomic<bool> node1_bound{false};
    std::vector<std::string> errors(2);
    std::vector<size_t> wrong(2, 1);
    auto node = [&](int self) {
      try {
        CommOptions o = options(self, ports);
        if (self == 0) {
          o.test_after_bind = [&] {
            wait_flag(node1_bound, 5000);
            std::this_thread::sleep_for(std::chrono::milliseconds(200));  // its hello is on the way
          };
        } else {
          o.test_after_bind = [&] { node1_bound = true; };
        }
        Communicator c(o);
        std::vector<float> params(16, static_cast<float>(self));
        c.start(params.data(), params.size());
        std::vector<float> x(16);
        for (size_t j = 0; j < x.size(); ++j) x[j] = input(self, 0, j);
        c.submit(0, std::move(x), {});
        wrong[static_cast<size_t>(self)] = count_wrong(next_round(c), 2, 16);
        c.stop(3000);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(self)] = e.what();
      }
    };
    std::thread a(node, 0), b(node, 1);
    a.join();
    b.join();
    for (int i = 0; i < 2; ++i) {
      CAPTURE(i);
      CHECK(errors[static_cast<size_t>(i)].empty());
      CHECK(wrong[static_cast<size_t>(i)] == 0);
    }
  }
}

TEST_CASE("start-up: the nodes start together: node 0 waits until every node has the initial parameters (kReady)") {
  // 3 nodes, 2 MB of parameters, node 0's links at 40 Mbit/s: its broadcast
  // takes at least 400 ms. Node 0 would otherwise return from start() at
  // once and train on alone while it crosses the links; now every start()
  // returns as node 0's kReady arrives, and every node has node 0's values.
  const std::vector<int> ports = free_ports(3);
  const size_t count = 500000;
  std::vector<std::string> errors(3);
  std::vector<double> started_ms(3, 0);
  std::vector<size_t> wrong(3, 1);
  const auto t0 = Clock::now();
  auto node = [&](int self) {
    try {
      CommOptions o = options(self, ports);
      o.inject_rate_mbps = 40;
      o.peer_timeout_ms = 5000;
      Communicator c(o);
      std::vector<float> params(count, self == 0 ? 0.25f : -1.0f);
      c.start(params.data(), count);
      started_ms[static_cast<size_t>(self)] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      wrong[static_cast<size_t>(self)] = size_t(std::count_if(params.begin(), params.end(), [](float v) { return v != 0.25f; }));
      c.stop(3000);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(self)] = e.what();
    }
  };
  std::thread a(node, 0), b(node, 1), d(node, 2);
  a.join();
  b.join();
  d.join();
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(errors[static_cast<size_t>(i)].empty());
    CHECK(wrong[static_cast<size_t>(i)] == 0);
  }
  MESSAGE("start() returned at " << started_ms[0] << ", " << started_ms[1] << ", " << started_ms[2] << " ms");
  CHECK(started_ms[0] >= 300.0);   // node 0 waited for its broadcast to arrive
  for (int i = 1; i < 3; ++i) CHECK(std::abs(started_ms[static_cast<size_t>(i)] - started_ms[0]) < 200.0);
}

TEST_CASE("bounded buffering: a sketch of another length is refused; a frame over the largest legal one is never buffered") {
  // sketch_floats set: every sketch frame must have exactly that length, and
  // ZMQ_MAXMSGSIZE is the largest legal frame (here the 1 KiB chunk or the
  // hello), so a stranger's 4 MiB frame closes its connection unread.
  const std::vector<int> ports = free_ports(2);
  std::vector<std::string> errors(2);
  std::vector<size_t> wrong(2, 1);
  std::vector<CommStats> stats(2);
  std::atomic<bool> sent{false};
  auto node = [&](int self) {
    try {
      CommOptions o = options(self, ports);
      o.sketch_floats = 3;
      o.chunk_bytes = 1024;
      Communicator c(o);
      std::vector<float> params(64, 0.0f);
      c.start(params.data(), params.size());
      if (self == 0 && !wait_flag(sent, 10000)) throw std::runtime_error("the stranger did not send");
      std::vector<float> x(64);
      for (size_t j = 0; j < x.size(); ++j) x[j] = input(self, 0, j);
      c.submit(0, std::move(x), {1.0f, 2.0f, 3.0f});
      wrong[static_cast<size_t>(self)] = count_wrong(next_round(c), 2, 64);
      stats[static_cast<size_t>(self)] = c.stats();
      c.stop(3000);
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(self)] = e.what();
    }
  };
  std::thread a(node, 0), b(node, 1);
  {
    zmq::context_t ctx(1);
    zmq::socket_t evil = raw_dealer(ctx, "evil", ports[0]);
    Header h;
    h.kind = Kind::kSketch;
    h.epoch = 1;  // the first view
    h.sender = 1;
    h.round = 0;
    const std::vector<float> long_sketch(5, 1.0f);
    h.count = long_sketch.size();
    send_raw(evil, h, long_sketch.data(), long_sketch.size() * sizeof(float), true);
    const std::vector<float> huge((4u << 20) / sizeof(float), 1.0f);   // 4 MiB
    h.count = huge.size();
    send_raw(evil, h, huge.data(), huge.size() * sizeof(float), true);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));   // let both reach node 0
    sent = true;
    a.join();
    b.join();
  }
  for (int i = 0; i < 2; ++i) {
    CAPTURE(i);
    CHECK(errors[static_cast<size_t>(i)].empty());
    CHECK(wrong[static_cast<size_t>(i)] == 0);
  }
  // The short frame was read and refused; the 4 MiB one was never read.
  CHECK(stats[0].rejected_by_reason["range_mismatch"] == 1);
  CHECK(stats[0].msgs_rejected == 1);
  CHECK(stats[0].bytes_recv < (1u << 20));
}

TEST_CASE("a peer that answers heartbeats but never sends its round is removed after round_timeout_ms; the others go on") {
  // Node 2's I/O thread stays alive (heartbeats) but its "trainer" submits
  // round 0 only: nodes 0 and 1, waiting on round 1, must not wait forever.
  // They form view 2 without it and re-run round 1 between them; node 2,
  // still sending heartbeats of the old view, learns it was left out.
  const std::vector<int> ports = free_ports(3);
  std::atomic<bool> told{false};
  std::vector<std::string> what(3);
  std::vector<double> waited_ms(3, -1);
  std::vector<size_t> wrong(3, 0);
  std::vector<std::vector<ViewEvent>> events(3);
  auto node = [&](int self) {
    CommOptions o = options(self, ports);
    o.peer_timeout_ms = 8000;   // silence is not what is detected here
    o.round_timeout_ms = 800;
    Communicator c(o);
    std::vector<float> params(16, 0.0f);
    c.start(params.data(), params.size());
    c.submit(0, std::vector<float>(16, float(self)), {});
    next_round(c);
    if (self == 2) {   // stalled: no round 1; heartbeats go on
      try {
        const auto deadline = Clock::now() + std::chrono::seconds(15);
        while (Clock::now() < deadline) c.wait(50);   // bounded by the deadline
        what[2] = "never told";
      } catch (const Excluded& e) {
        what[2] = e.what();
      }
      told = true;
      c.stop(500, true);
      return;
    }
    c.submit(1, std::vector<float>(16, float(10 * self)), {});
    const auto t0 = Clock::now();
    try {
      RoundResult r = next_round(c, 10000);
      waited_ms[size_t(self)] = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      for (float v : *r.mixed) wrong[size_t(self)] += v != 5.0f;   // (0 + 10) / 2: over the new view
      what[size_t(self)] = "round 1 finished";
    } catch (const std::exception& e) {
      what[size_t(self)] = e.what();
    }
    events[size_t(self)] = c.take_events();
    wait_flag(told, 20000);   // running, so that node 2's heartbeats are answered
    c.stop(2000);
  };
  std::thread a(node, 0), b(node, 1), d(node, 2);
  a.join();
  b.join();
  d.join();
  for (int i = 0; i < 2; ++i) {
    CAPTURE(i);
    CAPTURE(what[size_t(i)]);
    CHECK(what[size_t(i)] == "round 1 finished");
    CHECK(wrong[size_t(i)] == 0);
    CHECK(waited_ms[size_t(i)] >= 700);
    CHECK(waited_ms[size_t(i)] < 6000);   // well before the peer_timeout_ms of 8 s
    REQUIRE(events[size_t(i)].size() == 1);
    const ViewEvent& e = events[size_t(i)][0];
    CHECK(e.epoch == 2);
    CHECK(e.members == std::vector<int>{0, 1});
    CHECK(e.resume_round == 1);
    // The coordinator (node 0) says why; a follower that did not notice the
    // stall first names the proposal and the peer it leaves out.
    if (i == 0 || e.reason.find("proposed by node 0") == std::string::npos) {
      CHECK(e.reason.find("round 1 made no progress") != std::string::npos);
      CHECK(e.reason.find("waiting for peer 2") != std::string::npos);
    } else {
      CHECK(e.reason.find("view 2 without peer 2 (127.0.0.1:") != std::string::npos);
    }
  }
  CHECK(events[0][0].anchor_hash == events[1][0].anchor_hash);
  CAPTURE(what[2]);
  CHECK(what[2].find("is not in view 2 {0,1}") != std::string::npos);
}

TEST_CASE("a join request with another config is refused, logged, nothing applied; the joiner exits naming the field") {
  const std::vector<int> ports = free_ports(3);
  std::atomic<bool> crashed{false}, joiner_done{false};
  std::vector<std::string> what(3);
  std::vector<size_t> wrong(3, 0);
  std::vector<std::vector<ViewEvent>> events(3);
  auto member = [&](int self) {
    try {
      CommOptions o = options(self, ports);
      o.peer_timeout_ms = 600;
      Communicator c(o);
      std::vector<float> params(16, 0.0f);
      c.start(params.data(), params.size());
      for (uint64_t r = 0; r < 40; ++r) {   // bounded: 40 rounds, node 2 crashes after round 2
        c.submit(r, std::vector<float>(16, float(self)), {});
        RoundResult res = next_round(c, 10000);
        if (self == 2 && r == 2) {
          c.crash();
          crashed = true;
          return;
        }
        // (0 + 1 + 2) / 3, then (0 + 1) / 2; round 2 either (node 2 may die
        // before its last chunks leave: then it is re-run without it)
        const float want = r <= 1 ? 1.0f : 0.5f;
        for (float v : *res.mixed) wrong[size_t(self)] += v != want && !(r == 2 && v == 1.0f);
        if (r >= 3) std::this_thread::sleep_for(std::chrono::milliseconds(50));   // the joiner comes and goes meanwhile
      }
      events[size_t(self)] = c.take_events();
      wait_flag(joiner_done, 20000);
      c.stop(2000);
    } catch (const std::exception& e) {
      what[size_t(self)] = e.what();
    }
  };
  std::thread a(member, 0), b(member, 1), d(member, 2);
  REQUIRE(wait_flag(crashed, 20000));
  d.join();
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));   // view {0, 1} formed
  std::string joiner_error;
  try {
    CommOptions o = options(2, ports);
    o.config_hash = 0x5555;   // another run
    o.connect_timeout_ms = 8000;
    Communicator c(o);
    std::vector<float> params(16, 0.0f);
    c.start(params.data(), params.size());
    joiner_error = "joined";
  } catch (const StartRefused& e) {
    joiner_error = e.what();
  } catch (const std::exception& e) {
    joiner_error = std::string("other: ") + e.what();
  }
  joiner_done = true;
  a.join();
  b.join();
  CAPTURE(joiner_error);
  CHECK(joiner_error.find("cannot join the running view") != std::string::npos);
  CHECK(joiner_error.find("config hash") != std::string::npos);
  for (int i = 0; i < 2; ++i) {
    CAPTURE(i);
    CHECK(what[size_t(i)].empty());
    CHECK(wrong[size_t(i)] == 0);
    REQUIRE(events[size_t(i)].size() == 1);   // view 2 only: the refused node never got in
    CHECK(events[size_t(i)][0].members == std::vector<int>{0, 1});
  }
}

TEST_CASE("no majority: the survivor of 2 stops and names the peer it cannot reach after quorum_wait_ms") {
  const std::vector<int> ports = free_ports(2);
  std::atomic<bool> done0{false};
  std::string what;
  std::vector<int> unreachable;
  double waited_ms = -1;
  auto node = [&](int self) {
    CommOptions o = options(self, ports);
    o.peer_timeout_ms = 600;
    o.quorum_wait_ms = 700;
    Communicator c(o);
    std::vector<float> params(16, 0.0f);
    c.start(params.data(), params.size());
    c.submit(0, std::vector<float>(16, 1.0f), {});
    next_round(c);
    if (self == 1) {   // dies without a word
      c.crash();
      wait_flag(done0, 10000);
      return;
    }
    c.submit(1, std::vector<float>(16, 1.0f), {});
    const auto t0 = Clock::now();
    try {
      next_round(c, 10000);
      what = "round 1 finished";
    } catch (const NoQuorum& e) {
      what = e.what();
      unreachable = e.unreachable;
      waited_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    } catch (const std::exception& e) {
      what = e.what();
    }
    done0 = true;
    c.stop(500, true);
  };
  std::thread a(node, 0), b(node, 1);
  a.join();
  b.join();
  CAPTURE(what);
  CHECK(unreachable == std::vector<int>{1});
  CHECK(what.find("no majority of the 2 configured nodes") != std::string::npos);
  CHECK(what.find("cannot reach peer 1") != std::string::npos);
  CHECK(waited_ms >= 600 + 700 - 100);
  CHECK(waited_ms < 6000);
}

TEST_CASE("graceful stop: a peer that said bye is not lost; stop does not wait out its deadline") {
  const std::vector<int> ports = free_ports(2);
  std::vector<std::string> errors(2);
  std::vector<long long> stop_ms(2, -1);
  auto node = [&](int self) {
    try {
      Communicator c(options(self, ports));
      std::vector<float> params(8, 0.0f);
      c.start(params.data(), 8);
      for (uint64_t r = 0; r < 3; ++r) {
        c.submit(r, std::vector<float>(8, static_cast<float>(self)), {});
        RoundResult res = next_round(c);
        if (*res.mixed != std::vector<float>(8, 0.5f)) throw std::runtime_error("wrong mean");
      }
      if (self == 1) {  // outlive node 0 by more than the peer time-out
        const auto until = Clock::now() + std::chrono::milliseconds(1500);
        while (Clock::now() < until) {
          if (c.wait(50)) throw std::runtime_error("unexpected round");
        }
      }
      const auto t0 = Clock::now();
      c.stop(5000);
      stop_ms[static_cast<size_t>(self)] =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
      if (!c.lost_peers().empty()) throw std::runtime_error("a peer was declared lost");
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(self)] = e.what();
    }
  };
  std::thread a(node, 0), b(node, 1);
  a.join();
  b.join();
  CHECK(errors[0] == "");
  CHECK(errors[1] == "");
  CHECK(stop_ms[1] >= 0);
  CHECK(stop_ms[1] < 1000);  // node 0's bye was already there
  CHECK(stop_ms[0] < 4000);  // waited for node 1's bye, not the whole drain time
}

// RoundResult::submitted: the ring hands the caller its own vector back, the
// very storage and its bits, so a trainer keeps Δ without a copy; error
// feedback adds its residual to a copy (int8 rounds lose bits, so a residual
// that touched the caller's vector would show). RoundResult::mixed is the
// storage the communicator keeps for view changes (no copy): once both let
// go, it holds a later round's result. Gossip rounds work on the snapshot in
// place and hand nothing back.
TEST_CASE("the submitted vector comes back unchanged with its round, error feedback too; result storage is kept, not copied, then reused") {
  for (const MixerKind mixer : {MixerKind::kRing, MixerKind::kGossip}) {
    for (const Codec codec : {Codec::kNone, Codec::kInt8}) {
      if (mixer == MixerKind::kGossip && codec == Codec::kInt8) continue;
      CAPTURE(static_cast<int>(mixer));
      CAPTURE(static_cast<int>(codec));
      constexpr int kNodes = 3;
      constexpr size_t kCount = 3000;
      constexpr uint64_t kRounds = 12;
      const std::vector<int> ports = free_ports(kNodes);
      std::vector<std::string> errors(kNodes);
      std::vector<int> same_storage(kNodes, 0), same_bits(kNodes, 0), reused(kNodes, 0), empty(kNodes, 0);
      auto node = [&](int self) {
        try {
          CommOptions o = options(self, ports);  // window 3: the last 5 results kept
          o.mixer = mixer;
          o.codec = codec;
          Communicator c(o);
          std::vector<float> params(kCount, 0.0f);
          c.start(params.data(), kCount);
          // Each result's storage, and a blocker allocated once the result is
          // dropped (held to the end): were an evicted result freed instead
          // of reused, the allocator would hand its address to a blocker,
          // never to a later result.
          std::vector<const float*> results;
          std::vector<std::vector<float>> blockers;
          for (uint64_t r = 0; r < kRounds; ++r) {  // one round at a time
            std::vector<float> v(kCount);
            for (size_t j = 0; j < kCount; ++j) v[j] = 0.37f * float(j % 29) + float(self) - 0.013f * float(r);
            const std::vector<float> want = v;
            const float* storage = v.data();
            c.submit(r, std::move(v), {});
            RoundResult res = next_round(c);
            if (res.round != r) throw std::runtime_error("round " + std::to_string(res.round));
            same_storage[size_t(self)] += res.submitted.data() == storage;
            same_bits[size_t(self)] += res.submitted == want;
            empty[size_t(self)] += res.submitted.empty();
            reused[size_t(self)] +=
                std::find(results.begin(), results.end(), res.mixed->data()) != results.end();
            results.push_back(res.mixed->data());
            res.mixed.reset();
            blockers.emplace_back(kCount, 1.0f);
          }
          c.stop(3000);
        } catch (const std::exception& e) {
          errors[size_t(self)] = e.what();
        }
      };
      std::vector<std::thread> threads;
      for (int i = 0; i < kNodes; ++i) threads.emplace_back(node, i);
      for (auto& t : threads) t.join();
      for (int i = 0; i < kNodes; ++i) {
        CAPTURE(i);
        CHECK(errors[size_t(i)] == "");
        if (mixer == MixerKind::kRing) {
          CHECK(same_storage[size_t(i)] == int(kRounds));
          CHECK(same_bits[size_t(i)] == int(kRounds));
          // Round r's result is evicted from the kept 5 when round r + 5
          // finishes, and holds round r + 6's: rounds 6 .. 11 reuse. (With
          // int8, feedback copies draw on the same storage, in turn.)
          if (codec == Codec::kNone) CHECK(reused[size_t(i)] == int(kRounds) - 6);
        } else {
          CHECK(empty[size_t(i)] == int(kRounds));
        }
      }
    }
  }
}

TEST_CASE("link emulation: injected delay and rate slow rounds down, results unchanged") {
  for (int mode = 0; mode < 2; ++mode) {
    CAPTURE(mode);
    const std::vector<int> ports = free_ports(2);
    const size_t count = mode == 0 ? 64 : 25000;  // rate: 50 KB per node and step
    std::vector<size_t> wrong(2, 0);
    std::vector<std::string> errors(2);
    std::vector<double> round_ms(2, 0);
    auto node = [&](int self) {
      try {
        CommOptions o = options(self, ports);
        if (mode == 0) o.inject_delay_ms = 30;
        if (mode == 1) o.inject_rate_mbps = 8;  // 1 MB/s
        o.peer_timeout_ms = 3000;
        Communicator c(o);
        std::vector<float> params(count, 0.0f);
        c.start(params.data(), count);
        const auto t0 = Clock::now();
        for (uint64_t r = 0; r < 3; ++r) {
          std::vector<float> x(count);
          for (size_t j = 0; j < count; ++j) x[j] = input(self, r, j);
          c.submit(r, std::move(x), {1.0f});
          RoundResult res = next_round(c);
          wrong[static_cast<size_t>(self)] += count_wrong(res, 2, count);
        }
        round_ms[static_cast<size_t>(self)] =
            std::chrono::duration<double, std::milli>(Clock::now() - t0).count() / 3;
        c.stop(3000);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(self)] = e.what();
      }
    };
    std::thread a(node, 0), b(node, 1);
    a.join();
    b.join();
    for (int i = 0; i < 2; ++i) {
      CHECK(errors[static_cast<size_t>(i)] == "");
      CHECK(wrong[static_cast<size_t>(i)] == 0);
      // delay: two hops (reduce-scatter, all-gather) of 30 ms each;
      // rate: 2 x 50 KB through a 1 MB/s link
      CHECK(round_ms[static_cast<size_t>(i)] >= (mode == 0 ? 58.0 : 95.0));
      CHECK(round_ms[static_cast<size_t>(i)] < 1000.0);
    }
  }
}

}  // TEST_SUITE

namespace {
// Late start (CommOptions::late_start_ms): nodes 1, 2 and 3 of 4 start, node 0
// never does until node 1 has finished `join_after` rounds; then it starts
// and joins. resumed: every node starts from a checkpoint cut (round 10,
// step 100) with its own parameters and a common anchor.
void late_start_case(bool resumed) {
  const int nodes = 4;
  const size_t count = 64;
  const uint64_t first = resumed ? 10 : 0, rounds = first + 24, join_after = first + 6;
  const std::vector<int> ports = free_ports(nodes);
  struct Out {
    std::vector<float> start, anchor;
    uint64_t first_round = 0;
    bool joined = false;
    std::vector<ViewEvent> views;
    std::string error;
    double started_s = 0;
  };
  std::vector<Out> out(nodes);
  std::atomic<uint64_t> node1_done{0};
  const auto t0 = Clock::now();
  auto node = [&](int self) {
    Out& me = out[size_t(self)];
    try {
      CommOptions o = options(self, ports);
      o.late_start_ms = 800;
      o.connect_timeout_ms = 20000;
      o.first_round = first;
      o.start_step = resumed ? 100 : 0;
      Communicator c(o);
      std::vector<float> params(count), anchor(count, 0.5f);   // each node's own start
      for (size_t j = 0; j < count; ++j) params[j] = float(self * 1000 + int(j));
      c.start(params.data(), count, resumed ? anchor : std::vector<float>{});
      me.started_s = std::chrono::duration<double>(Clock::now() - t0).count();
      me.start = params;
      me.first_round = c.first_round();
      me.joined = c.joined();
      me.anchor = resumed && !me.joined ? anchor : params;   // x̄ where this node starts
      for (uint64_t r = me.first_round; r < rounds; ++r) {   // bounded: `rounds` rounds
        std::vector<float> v(count);
        for (size_t j = 0; j < count; ++j) v[j] = input(self, r, j);
        c.submit(r, std::move(v), {});
        const RoundResult res = next_round(c, 20000);
        for (size_t j = 0; j < count; ++j) me.anchor[j] += (*res.mixed)[j];
        if (self == 1) node1_done = r + 1;
        std::this_thread::sleep_for(std::chrono::milliseconds(15));   // rounds slow enough for a join mid-run
      }
      me.views = c.take_events();
      c.stop(3000);
    } catch (const std::exception& e) {
      me.error = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int i = 1; i < nodes; ++i) threads.emplace_back(node, i);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (node1_done.load() < join_after && Clock::now() < deadline)   // bounded by the deadline
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  REQUIRE(node1_done.load() >= join_after);
  threads.emplace_back(node, 0);
  for (auto& t : threads) t.join();
  for (int i = 0; i < nodes; ++i) {
    CAPTURE(i);
    CAPTURE(out[size_t(i)].error);
    REQUIRE(out[size_t(i)].error.empty());
    CHECK(out[size_t(i)].anchor == out[0].anchor);   // one x̄ on every node, the late one too
  }
  for (int i = 1; i < nodes; ++i) {
    const Out& me = out[size_t(i)];
    CAPTURE(i);
    CHECK_FALSE(me.joined);                     // in the run from its start
    CHECK(me.first_round == first);
    CHECK(me.started_s >= 0.7);                 // not before late_start_ms
    CHECK(me.started_s < 5.0);                  // nor at connect_timeout_ms
    // a fresh run starts from node 1's parameters (streamed as x̄); a resumed
    // one keeps each node's own
    for (size_t j = 0; j < count; ++j) {
      const float want = float((resumed ? i : 1) * 1000 + int(j));
      if (me.start[j] != want) FAIL_CHECK("node " << i << " start[" << j << "] = " << me.start[j] << ", want " << want);
    }
    REQUIRE(me.views.size() == 2);               // the late start, then node 0's join
    CHECK(me.views[0].epoch == 2);
    CHECK(me.views[0].members == std::vector<int>{1, 2, 3});
    CHECK(me.views[0].resume_round == first);
    CHECK_FALSE(me.views[0].joined);
    const std::string lost = "peer 0 (127.0.0.1:" + std::to_string(ports[0]) + ")";
    CHECK(me.views[0].reason.find(i == 1 ? "late start without " + lost : "proposed by node 1: view 2 without " + lost) !=
          std::string::npos);
    CHECK(me.views[1].members == std::vector<int>{0, 1, 2, 3});
  }
  CHECK(out[0].joined);
  CHECK(out[0].first_round > join_after - 1);
  REQUIRE(out[0].views.size() == 1);
  CHECK(out[0].views[0].members == std::vector<int>{0, 1, 2, 3});
  CHECK(out[0].views[0].anchor_hash == out[1].views[1].anchor_hash);   // x̄ at its resume round, as the members hold it
}
}  // namespace

TEST_CASE("late start: 3 of 4 start without node 0 after late_start_ms (from node 1's parameters); node 0 joins when it starts; one x̄ on all") {
  late_start_case(false);
}

TEST_CASE("late start of a resumed cluster: 3 of 4 start from their own checkpoint state without node 0, which joins later; one x̄") {
  late_start_case(true);
}
