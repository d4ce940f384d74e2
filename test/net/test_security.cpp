// Security of the links (net/transport.h, DESIGN.md "Security"): CURVE
// refuses strangers at the handshake, counted by reason, and binds each key
// to its peer; a passive listener sees no plaintext; "none" refuses a second
// connection claiming a connected peer; a bounded hostile load applies nothing.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "net/transport.h"
#include "test/net/net_test_util.h"

using namespace tether::net;
using namespace tether::net::testing;
using Clock = std::chrono::steady_clock;

namespace {

struct Keypair {
  std::string pub, sec;
};
Keypair keypair() {
  char pub[41], sec[41];
  REQUIRE(zmq_curve_keypair(pub, sec) == 0);
  return {pub, sec};
}

// A value no round produces by chance: the pattern the listener looks for.
constexpr float kMarker = 1234.5678f;

float input(int node, uint64_t round, size_t j) {
  return j % 2 == 0 ? kMarker : static_cast<float>(node * 100 + static_cast<int>(j % 101) + 3 * static_cast<int>(round));
}
float expected_mean(int nodes, uint64_t round, size_t j) {
  double sum = 0;
  for (int i = 0; i < nodes; ++i) sum += input(i, round, j);
  return static_cast<float>(sum) / static_cast<float>(nodes);
}

bool wait_flag(const std::atomic<bool>& flag, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!flag.load() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return flag.load();
}

RoundResult next_round(Communicator& c, int timeout_ms = 15000) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {  // bounded by the deadline
    if (auto r = c.wait(100)) return std::move(*r);
  }
  throw std::runtime_error("no round within the deadline");
}

// A cluster of n in-process nodes (threads) on `ports`, curve or not, each
// running `rounds` ring rounds of `count` floats; between rounds `pause_at`
// and pause_at + 1 every node waits for `go` (the test attacks meanwhile).
// wrong[i]: values of node i's results that differ from the exact mean.
struct Cluster {
  int n;
  bool curve;
  std::vector<int> ports;
  std::vector<Keypair> keys;
  size_t count = 2100;  // a multiple of 2 and 3: equal ring segments
  int rounds = 6, pause_at = 2;
  std::atomic<int> paused{0};
  std::atomic<bool> go{false};
  std::vector<std::atomic<Communicator*>> live;
  std::vector<size_t> wrong;
  std::vector<std::string> errors;
  std::vector<CommStats> stats;
  std::vector<std::thread> threads;
  // node i's options (peer addresses may be edited: a relay in between)
  std::function<void(int, CommOptions&)> edit;

  Cluster(int nodes, bool with_curve)
      : n(nodes), curve(with_curve), ports(free_ports(nodes)), live(static_cast<size_t>(nodes)),
        wrong(static_cast<size_t>(nodes), 0), errors(static_cast<size_t>(nodes)), stats(static_cast<size_t>(nodes)) {
    for (int i = 0; i < n; ++i) keys.push_back(keypair());
  }
  CommOptions options(int self) const {
    CommOptions o;
    o.self = self;
    o.peers = loopback_peers(ports);
    o.window = 2;
    o.chunk_bytes = 1024;
    o.connect_timeout_ms = 15000;
    o.heartbeat_ms = 50;
    o.peer_timeout_ms = 3000;
    o.config_hash = 7;
    o.curve = curve;
    if (curve) {
      for (auto& p : o.peers) p.public_key = keys[static_cast<size_t>(p.id)].pub;
      o.secret_key = keys[static_cast<size_t>(self)].sec;
      o.public_key = keys[static_cast<size_t>(self)].pub;
    }
    return o;
  }
  void start() {
    for (int i = 0; i < n; ++i) threads.emplace_back([this, i] { run(i); });
  }
  void run(int self) {
    const auto s = static_cast<size_t>(self);
    try {
      CommOptions o = options(self);
      if (edit) edit(self, o);
      Communicator c(o);
      std::vector<float> params(count, 0.0f);
      c.start(params.data(), count);
      live[s] = &c;
      for (int r = 0; r < rounds; ++r) {
        if (r == pause_at) {
          ++paused;
          if (!wait_flag(go, 60000)) throw std::runtime_error("never resumed");
        }
        std::vector<float> x(count);
        for (size_t j = 0; j < count; ++j) x[j] = input(self, static_cast<uint64_t>(r), j);
        c.submit(static_cast<uint64_t>(r), std::move(x), {static_cast<float>(self)});
        RoundResult res = next_round(c);
        wrong[s] += res.round != static_cast<uint64_t>(r) || res.mixed->size() != count;
        for (size_t j = 0; j < res.mixed->size(); ++j) wrong[s] += (*res.mixed)[j] != expected_mean(n, res.round, j);
      }
      stats[s] = c.stats();
      live[s] = nullptr;
      c.stop(3000);
    } catch (const std::exception& e) {
      live[s] = nullptr;
      errors[s] = e.what();
    }
  }
  bool wait_paused() {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (paused.load() < n && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    return paused.load() == n;
  }
  // node 0's stats once `done(stats)` holds, or at the deadline
  CommStats stats_of_0_when(const std::function<bool(const CommStats&)>& done, int timeout_ms = 10000) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    CommStats st;
    while (Clock::now() < deadline) {  // bounded by the deadline
      Communicator* c = live[0].load();
      if (c != nullptr) st = c->stats();
      if (done(st)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return st;
  }
  void finish() {
    go = true;
    for (auto& t : threads) t.join();
  }
};

// A DEALER that tries once (no reconnection), with CURVE when server_key is set.
zmq::socket_t client(zmq::context_t& ctx, int port, const std::string& server_key = "", const Keypair* own = nullptr,
                     const std::string& routing_id = "") {
  zmq::socket_t d(ctx, zmq::socket_type::dealer);
  d.set(zmq::sockopt::linger, 0);
  d.set(zmq::sockopt::reconnect_ivl, -1);
  d.set(zmq::sockopt::sndhwm, 0);  // every frame queued, none dropped
  if (!routing_id.empty()) d.set(zmq::sockopt::routing_id, routing_id);
  if (!server_key.empty()) {
    d.set(zmq::sockopt::curve_serverkey, server_key);
    d.set(zmq::sockopt::curve_publickey, own->pub);
    d.set(zmq::sockopt::curve_secretkey, own->sec);
  }
  d.connect("tcp://127.0.0.1:" + std::to_string(port));
  return d;
}

// A client without a key, as raw bytes: a TCP connection that sends a whole
// ZMTP 3.0 greeting with the NULL mechanism at once (so the server reads it
// all and refuses the mechanism, whatever the timing) and then waits. The
// file descriptor stays open until closed by the caller.
int raw_null_greeting(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  unsigned char g[64] = {0};
  g[0] = 0xff;   // signature: 0xff, 8 bytes, 0x7f
  g[9] = 0x7f;
  g[10] = 3;     // version 3.0
  std::memcpy(g + 12, "NULL", 4);  // mechanism, 20 bytes; as-server 0; filler
  REQUIRE(::write(fd, g, sizeof g) == static_cast<ssize_t>(sizeof g));
  return fd;
}

void send_frame(zmq::socket_t& sock, Header h, const void* payload, size_t bytes) {
  h.payload_bytes = bytes;
  h.payload_hash = payload_hash(payload, bytes);
  std::vector<unsigned char> head(kHeaderBytes);
  encode_header(h, head.data());
  sock.send(zmq::buffer(head), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  sock.send(zmq::buffer(payload, bytes), zmq::send_flags::dontwait);
}

// The hello of node `sender` with the cluster's fields (every one matches)
// and an incarnation of its own (another process than the real node's).
void send_hello(zmq::socket_t& sock, const CommOptions& o, size_t count, uint32_t sender) {
  Header h;
  h.kind = Kind::kHello;
  h.sender = sender;
  const uint64_t fields[] = {o.config_hash, o.sketch_seed, o.peers.size(), static_cast<uint64_t>(o.mixer),
                             static_cast<uint64_t>(o.window), o.chunk_bytes, count, o.first_round, o.start_step,
                             0x5eed};
  send_frame(sock, h, fields, sizeof fields);
}

// Start-up's kReady of node `sender`: it has node 0's initial parameters.
void send_ready(zmq::socket_t& sock, uint32_t sender) {
  Header h;
  h.kind = Kind::kReady;
  h.sender = sender;
  send_frame(sock, h, nullptr, 0);
}

// A ring frame for node 0, round 2 (in its window), step 0, as its
// predecessor (node nodes-1) sends it: valid in every field but who sends it.
void send_ring(zmq::socket_t& sock, size_t count, int nodes) {
  Header h;
  h.kind = Kind::kRing;
  h.sender = static_cast<uint32_t>(nodes - 1);
  h.round = 2;
  h.epoch = 1;  // the first view
  const size_t seg = count / static_cast<size_t>(nodes);
  h.offset = static_cast<uint64_t>(nodes - 1) * seg;  // node 0's predecessor sends its segment first
  h.count = 256;                                        // 1024-byte chunks
  const std::vector<float> data(256, 1e6f);
  send_frame(sock, h, data.data(), data.size() * sizeof(float));
}

// A TCP relay on 127.0.0.1: forwards every connection made to port() to
// 127.0.0.1:to, both ways, and records what it forwards.
class Relay {
 public:
  explicit Relay(int to) : to_(to) {
    listen_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    socklen_t len = sizeof a;
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    REQUIRE(::listen(listen_, 16) == 0);
    thread_ = std::thread([this] { loop(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_);
  }
  int port() const { return port_; }
  std::string recorded() {
    std::lock_guard<std::mutex> lk(mu_);
    return bytes_;
  }

 private:
  void loop() {
    while (!stop_) {  // until the destructor; each poll waits at most 20 ms
      std::vector<pollfd> p{{listen_, POLLIN, 0}};
      for (int fd : fds_) p.push_back({fd, POLLIN, 0});
      if (::poll(p.data(), p.size(), 20) <= 0) continue;
      if (p[0].revents & POLLIN) {
        const int in = ::accept(listen_, nullptr, nullptr);
        const int out = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(to_));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (in >= 0 && ::connect(out, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
          pair_[in] = out;
          pair_[out] = in;
          fds_.push_back(in);
          fds_.push_back(out);
        } else {
          if (in >= 0) ::close(in);
          ::close(out);
        }
      }
      for (size_t k = 1; k < p.size(); ++k) {
        if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[65536];
        const ssize_t r = ::read(p[k].fd, buf, sizeof buf);
        const int other = pair_[p[k].fd];
        if (r <= 0) {  // one side closed: close both
          drop(p[k].fd);
          drop(other);
          break;  // fds_ changed
        }
        {
          std::lock_guard<std::mutex> lk(mu_);
          bytes_.append(buf, static_cast<size_t>(r));
        }
        for (ssize_t off = 0; off < r;) {  // blocking write of what was read
          const ssize_t w = ::write(other, buf + off, static_cast<size_t>(r - off));
          if (w <= 0) break;
          off += w;
        }
      }
    }
  }
  void drop(int fd) {
    fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
    ::close(fd);
  }
  int to_, port_ = 0, listen_ = -1;
  std::atomic<bool> stop_{false};
  std::vector<int> fds_;
  std::map<int, int> pair_;
  std::mutex mu_;
  std::string bytes_;
  std::thread thread_;
};

// Eight markers in a row, as x's even elements are kMarker: the float bytes
// with any 4 bytes between them (a sum of another value).
bool finds_marker(const std::string& bytes) {
  unsigned char m[4];
  std::memcpy(m, &kMarker, 4);
  for (size_t i = 0; i + 64 <= bytes.size(); ++i) {  // i over every byte offset
    bool all = true;
    for (size_t k = 0; k < 8 && all; ++k) all = std::memcmp(bytes.data() + i + 8 * k, m, 4) == 0;
    if (all) return true;
  }
  return false;
}

}  // namespace

namespace doctest {
template <>
struct StringMaker<std::map<std::string, uint64_t>> {
  static String convert(const std::map<std::string, uint64_t>& m) {
    std::string s = "{";
    for (const auto& [k, v] : m) s += (s.size() > 1 ? ", " : "") + k + ": " + std::to_string(v);
    return (s + "}").c_str();
  }
};
}  // namespace doctest

TEST_SUITE("security") {

TEST_CASE("curve: strangers are refused at the handshake, each counted under its reason; a listed key cannot speak for another peer") {
  Cluster cl(3, true);
  cl.start();
  REQUIRE(cl.wait_paused());
  const CommOptions o = cl.options(0);
  const int port0 = cl.ports[0];
  const std::string server_key = cl.keys[0].pub;
  zmq::context_t ctx(1);
  // a raw socket without a key, one with a wrong server key, one with a valid
  // key not in the list, each tried once, all sending node 2's hello and a
  // ring frame as node 2 (nothing is delivered: the handshake fails)
  const Keypair stranger = keypair(), wrong_server = keypair();
  const int no_key = raw_null_greeting(port0);
  zmq::socket_t wrong_key = client(ctx, port0, wrong_server.pub, &stranger);
  zmq::socket_t unlisted = client(ctx, port0, server_key, &stranger);
  // node 1's own key (listed) on a connection claiming to be node 2
  zmq::socket_t other_id = client(ctx, port0, server_key, &cl.keys[1], Transport::identity(2));
  for (zmq::socket_t* s : {&wrong_key, &unlisted, &other_id}) {
    send_hello(*s, o, cl.count, 2);
    send_ring(*s, cl.count, cl.n);
  }
  const std::map<std::string, uint64_t> handshakes = {{"key_not_listed", 1}, {"no_key", 1}, {"wrong_key", 1}};
  const std::map<std::string, uint64_t> rejected = {{"identity_mismatch", 2}};
  const CommStats st = cl.stats_of_0_when([&](const CommStats& s) {
    return s.handshake_failed_by_reason == handshakes && s.rejected_by_reason == rejected;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // nothing more arrives
  const CommStats later = cl.stats_of_0_when([](const CommStats&) { return true; });
  cl.finish();
  for (zmq::socket_t* s : {&wrong_key, &unlisted, &other_id}) s->close();
  ::close(no_key);
  ctx.close();
  CHECK(st.handshake_failed_by_reason == handshakes);
  CHECK(st.handshakes_failed == 3);
  CHECK(st.rejected_by_reason == rejected);
  CHECK(later.handshake_failed_by_reason == handshakes);
  CHECK(later.rejected_by_reason == rejected);
  for (int i = 0; i < cl.n; ++i) {  // training went on, nothing applied: every round exact on every node
    CAPTURE(i);
    CHECK(cl.errors[static_cast<size_t>(i)] == "");
    CHECK(cl.wrong[static_cast<size_t>(i)] == 0);
  }
  CHECK(cl.stats[0].rejected_by_reason == rejected);
  CHECK(cl.stats[1].msgs_rejected == 0);
  CHECK(cl.stats[1].handshakes_failed == 0);
}

TEST_CASE("passive listener: a relay between two nodes sees no parameter bytes with curve, and sees them with none") {
  for (bool curve : {true, false}) {
    CAPTURE(curve);
    Cluster cl(2, curve);
    cl.pause_at = -1;
    cl.rounds = 3;
    cl.count = 131072;  // 512 KB: ring chunks of exactly chunk_bytes, the largest legal frame
    Relay relay(cl.ports[0]);  // node 1 reaches node 0 through the relay
    cl.edit = [&](int self, CommOptions& o) {
      if (self == 1) o.peers[0].port = relay.port();
      // the largest legal frame is a full chunk (ZMQ_MAXMSGSIZE), as in the
      // runtime: CURVE's envelope must not count against it
      o.chunk_bytes = 131072;
      o.sketch_floats = 1;
    };
    cl.start();
    cl.finish();
    CHECK(cl.errors[0] == "");
    CHECK(cl.errors[1] == "");
    CHECK(cl.wrong[0] == 0);
    CHECK(cl.wrong[1] == 0);
    const std::string bytes = relay.recorded();
    CHECK(bytes.size() > cl.count * sizeof(float));  // the rounds went through the relay
    CHECK(finds_marker(bytes) == !curve);
  }
}

TEST_CASE("none: a second connection claiming a connected peer is refused, counted and nothing it sends applied") {
  Cluster cl(2, false);
  cl.start();
  REQUIRE(cl.wait_paused());
  const CommOptions o = cl.options(0);
  zmq::context_t ctx(1);
  // an impostor with node 1's plain routing id and one with another id, each
  // sending node 1's hello then a ring frame as node 1
  zmq::socket_t same_id = client(ctx, cl.ports[0], "", nullptr, Transport::identity(1));
  zmq::socket_t other_id = client(ctx, cl.ports[0], "", nullptr, "n1.0000000000000000");
  for (zmq::socket_t* s : {&same_id, &other_id}) {
    send_hello(*s, o, cl.count, 1);
    send_ring(*s, cl.count, cl.n);
  }
  const std::map<std::string, uint64_t> handshakes = {{"identity_taken", 2}};
  const std::map<std::string, uint64_t> rejected = {{"identity_mismatch", 4}};
  const CommStats st = cl.stats_of_0_when([&](const CommStats& s) {
    return s.handshake_failed_by_reason == handshakes && s.rejected_by_reason == rejected;
  });
  cl.finish();
  same_id.close();
  other_id.close();
  ctx.close();
  CHECK(st.handshake_failed_by_reason == handshakes);
  CHECK(st.rejected_by_reason == rejected);
  CHECK(cl.errors[0] == "");
  CHECK(cl.errors[1] == "");
  CHECK(cl.wrong[0] == 0);
  CHECK(cl.wrong[1] == 0);
}

TEST_CASE("none: a peer's binding moves to a new connection of its own once the old one is closed, never while it is open") {
  // Node 1 played by raw sockets against a real node 0: its first connection
  // says hello; a second one (a copy) is refused while the first is open; once
  // the first is closed (a restarted process, a DEALER replaced by
  // reset_peer), the second is node 1's; a third is again refused, and so is
  // a connection whose routing id is not of node 1's form.
  const std::vector<int> ports = free_ports(2);
  CommOptions o;
  o.self = 0;
  o.peers = loopback_peers(ports);
  o.window = 2;
  o.connect_timeout_ms = 10000;
  o.heartbeat_ms = 50;
  o.peer_timeout_ms = 20000;  // the peer is never taken for lost here
  o.config_hash = 7;
  const size_t count = 8;
  std::atomic<bool> started{false}, go{false};
  std::atomic<Communicator*> live{nullptr};
  std::string error;
  std::thread node([&] {
    try {
      Communicator c(o);
      std::vector<float> params(count, 0.0f);
      c.start(params.data(), count);
      live = &c;
      started = true;
      wait_flag(go, 30000);
      live = nullptr;
      c.stop(0, true);
    } catch (const std::exception& e) {
      error = e.what();
      started = true;
    }
  });
  zmq::context_t ctx(1);
  zmq::socket_t sink(ctx, zmq::socket_type::router);  // node 0's traffic to node 1
  sink.set(zmq::sockopt::linger, 0);
  sink.bind("tcp://127.0.0.1:" + std::to_string(ports[1]));
  // node 1's first connection, made while node 0 may not listen yet: it
  // retries (the others connect once node 0 has started)
  zmq::socket_t first(ctx, zmq::socket_type::dealer);
  first.set(zmq::sockopt::linger, 0);
  first.set(zmq::sockopt::routing_id, "n1.00000000000000aa");
  first.connect("tcp://127.0.0.1:" + std::to_string(ports[0]));
  send_hello(first, o, count, 1);
  send_ready(first, 1);
  if (!wait_flag(started, 15000) || !error.empty()) {
    go = true;
    node.join();
    FAIL("node 0 did not start: " << error);
  }
  zmq::socket_t second = client(ctx, ports[0], "", nullptr, "n1.00000000000000bb");
  zmq::socket_t third = client(ctx, ports[0], "", nullptr, "n1.00000000000000cc");
  zmq::socket_t other = client(ctx, ports[0], "", nullptr, "x1");
  auto stats = [&](const std::function<bool(const CommStats&)>& done) {
    const auto deadline = Clock::now() + std::chrono::seconds(5);
    CommStats st;
    while (Clock::now() < deadline) {  // bounded by the deadline
      if (Communicator* c = live.load()) st = c->stats();
      if (done(st)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return st;
  };
  auto heartbeat = [&](zmq::socket_t& sock) {
    Header h;
    h.kind = Kind::kHeartbeat;
    h.sender = 1;
    send_frame(sock, h, nullptr, 0);
  };
  heartbeat(second);  // the first connection is open: refused
  send_hello(second, o, count, 1);
  CommStats st = stats([](const CommStats& x) { return x.msgs_rejected >= 2; });
  CHECK(st.rejected_by_reason == std::map<std::string, uint64_t>{{"identity_mismatch", 2}});
  CHECK(st.handshake_failed_by_reason == std::map<std::string, uint64_t>{{"identity_taken", 1}});
  first.close();  // node 1's connection is gone
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  heartbeat(second);  // now node 1's
  heartbeat(second);
  heartbeat(third);   // a copy while the second is open
  heartbeat(other);   // not a routing id of node 1's
  st = stats([](const CommStats& x) { return x.msgs_rejected >= 4; });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // nothing more is refused
  st = stats([](const CommStats&) { return true; });
  go = true;
  node.join();
  for (zmq::socket_t* x : {&second, &third, &other, &sink}) x->close();
  ctx.close();
  CHECK(error == "");
  CHECK(st.rejected_by_reason == std::map<std::string, uint64_t>{{"identity_mismatch", 4}});
  CHECK(st.handshake_failed_by_reason == std::map<std::string, uint64_t>{{"identity_taken", 1}});
}

TEST_CASE("hostile load, bounded: 300 refused handshakes and 20000 hostile frames while 3 nodes train; nothing applied") {
  for (bool curve : {true, false}) {
    CAPTURE(curve);
    Cluster cl(3, curve);
    cl.start();
    REQUIRE(cl.wait_paused());
    const CommOptions o = cl.options(0);
    zmq::context_t ctx(1);
    const Keypair stranger = keypair();
    const int attempts = 100;
    if (curve) {
      for (int k = 0; k < attempts; ++k) {  // no key, wrong server key, unlisted key: one connection each
        std::vector<zmq::socket_t> s;
        const int no_key = raw_null_greeting(cl.ports[0]);
        s.push_back(client(ctx, cl.ports[0], stranger.pub, &stranger));
        s.push_back(client(ctx, cl.ports[0], cl.keys[0].pub, &stranger));
        for (auto& x : s) send_ring(x, cl.count, cl.n);
        const auto handled = cl.stats_of_0_when(
            [&](const CommStats& st) { return st.handshakes_failed >= static_cast<uint64_t>(3 * (k + 1)); });
        ::close(no_key);
        REQUIRE(handled.handshakes_failed == static_cast<uint64_t>(3 * (k + 1)));
      }
    } else {
      zmq::socket_t evil = client(ctx, cl.ports[0], "", nullptr, "evil");
      for (int k = 0; k < 20000; ++k) send_ring(evil, cl.count, cl.n);
      const auto st = cl.stats_of_0_when([](const CommStats& s) { return s.msgs_rejected >= 20000; }, 30000);
      CHECK(st.msgs_rejected == 20000);
      CHECK(st.rejected_by_reason == std::map<std::string, uint64_t>{{"identity_mismatch", 20000}});
      evil.close();
    }
    cl.finish();
    ctx.close();
    for (int i = 0; i < cl.n; ++i) {
      CAPTURE(i);
      CHECK(cl.errors[static_cast<size_t>(i)] == "");
      CHECK(cl.wrong[static_cast<size_t>(i)] == 0);
    }
    if (curve) {
      CHECK(cl.stats[0].handshake_failed_by_reason ==
            std::map<std::string, uint64_t>{{"key_not_listed", attempts}, {"no_key", attempts}, {"wrong_key", attempts}});
      CHECK(cl.stats[0].msgs_rejected == 0);
    }
  }
}

}  // TEST_SUITE
