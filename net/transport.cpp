#include "net/transport.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>

#include <boost/asio/post.hpp>

#include "net/net_check.h"

namespace tether::net {

namespace asio = boost::asio;

namespace {
// Messages received per wake-up before the loop yields to timers (fairness:
// heartbeats and time-outs must run under a flood).
constexpr int kMaxPerWake = 256;
// ZAP (ZeroMQ RFC 27): the handler's endpoint, fixed by libzmq, and our domain.
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kZapDomain = "tether";
constexpr const char* kMonitorEndpoint = "inproc://tether.router-monitor";
// What CurveZMQ adds around each message frame: "\x07MESSAGE" (8), flags (1),
// short nonce (8), Poly1305 MAC (16) = 33 bytes; rounded up.
constexpr uint64_t kCurveEnvelopeBytes = 64;
}  // namespace

std::string_view handshake_failure_name(HandshakeFailure f) {
  switch (f) {
    case HandshakeFailure::kNoKey: return "no_key";
    case HandshakeFailure::kWrongKey: return "wrong_key";
    case HandshakeFailure::kKeyNotListed: return "key_not_listed";
    case HandshakeFailure::kIdentityTaken: return "identity_taken";
    case HandshakeFailure::kProtocol: return "protocol";
    case HandshakeFailure::kCount: break;
  }
  return "?";
}

std::string Transport::connection_id(int id) {
  static thread_local std::mt19937_64 gen{(static_cast<uint64_t>(std::random_device{}()) << 32) ^
                                          std::random_device{}()};
  char buf[24];
  std::snprintf(buf, sizeof buf, ".%016llx", static_cast<unsigned long long>(gen()));
  return identity(id) + buf;
}

bool Transport::names_node(std::string_view rid, int id) {
  const std::string name = identity(id);
  if (rid.size() < name.size() || rid.compare(0, name.size(), name) != 0) return false;
  return rid.size() == name.size() || rid[name.size()] == '.';
}

Transport::Transport(asio::io_context& io, int self, std::vector<TransportPeer> peers,
                     double delay_ms, double rate_mbps, OnMessage on_message,
                     std::atomic<uint64_t>* bytes_sent, std::atomic<uint64_t>* bytes_recv)
    : io_(io),
      self_(self),
      peers_(std::move(peers)),
      delay_ms_(delay_ms),
      rate_mbps_(rate_mbps),
      on_message_(std::move(on_message)),
      ctx_(1),
      flush_timer_(io),
      bytes_sent_(bytes_sent),
      bytes_recv_(bytes_recv) {}

Transport::~Transport() { close(0); }

void Transport::set_curve(std::string secret_key, std::string public_key) {
  TETHER_NET_CHECK(!open_, "set_curve after open");
  TETHER_NET_CHECK(secret_key.size() == 40 && public_key.size() == 40, "CURVE keys must be 40 Z85 characters");
  curve_ = true;
  secret_key_ = std::move(secret_key);
  public_key_ = std::move(public_key);
}

void Transport::set_limits(int receive_hwm, int handshake_ms, int heartbeat_ms, int timeout_ms) {
  TETHER_NET_CHECK(!open_, "set_limits after open");
  receive_hwm_ = receive_hwm;
  handshake_ms_ = handshake_ms;
  heartbeat_ms_ = heartbeat_ms;
  heartbeat_timeout_ms_ = timeout_ms;
}

void Transport::count_handshake_failure(HandshakeFailure f) {
  if (handshake_failed_) handshake_failed_[static_cast<size_t>(f)].fetch_add(1);
}

int Transport::user_peer(const zmq::message_t& m) const {
  const char* v = zmq_msg_gets(const_cast<zmq_msg_t*>(m.handle()), "User-Id");
  if (v == nullptr || *v == '\0' || std::strlen(v) > 6) return -1;
  int id = 0;
  for (const char* c = v; *c; ++c) {  // bounded: at most 6 characters
    if (*c < '0' || *c > '9') return -1;
    id = id * 10 + (*c - '0');
  }
  return id;
}

void Transport::open(const std::function<void()>& after_bind) {
  TETHER_NET_CHECK(!open_ && !closed_, "transport opened twice");
  open_ = true;
  const TransportPeer* me = nullptr;
  for (const TransportPeer& p : peers_) {
    if (p.id == self_) me = &p;
  }
  TETHER_NET_CHECK(me != nullptr, "self " << self_ << " not among the peers");
  if (curve_) {
    // The ZAP handler first: a ROUTER handshake that finds no handler on
    // inproc://zeromq.zap.01 would admit any key.
    int max_peer = 0;
    for (const TransportPeer& p : peers_) max_peer = std::max(max_peer, p.id);
    peer_keys_.assign(static_cast<size_t>(max_peer) + 1, {});
    for (const TransportPeer& p : peers_) {  // p over the peers: their binary public keys
      TETHER_NET_CHECK(p.public_key.size() == 40 &&
                           zmq_z85_decode(peer_keys_[static_cast<size_t>(p.id)].data(), p.public_key.c_str()),
                       "peer " << p.id << ": public key is not 40 Z85 characters");
    }
    zap_.emplace(ctx_, zmq::socket_type::rep);
    zap_->set(zmq::sockopt::linger, 0);
    zap_->bind(kZapEndpoint);
    zap_fd_.emplace(io_, zap_->get(zmq::sockopt::fd));
  }
  router_.emplace(ctx_, zmq::socket_type::router);
  router_->set(zmq::sockopt::linger, 0);
  // With CURVE ZeroMQ checks the size of the encrypted MESSAGE command: the
  // frame plus its envelope (command name, flags, nonce, MAC: 33 bytes).
  router_->set(zmq::sockopt::maxmsgsize,
               static_cast<int64_t>(max_frame_bytes_ + (curve_ ? kCurveEnvelopeBytes : 0)));
  router_->set(zmq::sockopt::rcvhwm, receive_hwm_);
  // The ROUTER sends only routes_to's probes: an unknown routing id is an
  // error, and a few unread probes make a connection's pipe full (EAGAIN).
  router_->set(zmq::sockopt::router_mandatory, true);
  router_->set(zmq::sockopt::sndhwm, 16);
  router_->set(zmq::sockopt::handshake_ivl, handshake_ms_);
  if (heartbeat_ms_ > 0) {
    router_->set(zmq::sockopt::heartbeat_ivl, heartbeat_ms_);
    router_->set(zmq::sockopt::heartbeat_timeout, heartbeat_timeout_ms_);
  }
  if (curve_) {
    router_->set(zmq::sockopt::curve_server, true);
    router_->set(zmq::sockopt::curve_secretkey, secret_key_);
    router_->set(zmq::sockopt::zap_domain, kZapDomain);
  }
  // Every handshake failure on the ROUTER, read by drain_monitor.
  if (zmq_socket_monitor(router_->handle(), kMonitorEndpoint,
                         ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0)
    throw zmq::error_t();
  monitor_.emplace(ctx_, zmq::socket_type::pair);
  monitor_->set(zmq::sockopt::linger, 0);
  monitor_->set(zmq::sockopt::rcvhwm, 0);  // no event dropped under a flood of failed handshakes
  monitor_->connect(kMonitorEndpoint);
  monitor_fd_.emplace(io_, monitor_->get(zmq::sockopt::fd));
  const std::string endpoint = "tcp://" + me->host + ":" + std::to_string(me->port);
  try {
    router_->bind(endpoint);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("node " + std::to_string(self_) + " cannot bind " + endpoint + ": " +
                             e.what());
  }
  if (after_bind) after_bind();
  int max_id = 0;
  for (const TransportPeer& p : peers_) max_id = std::max(max_id, p.id);
  dealers_.resize(static_cast<size_t>(max_id) + 1);
  watches_.resize(dealers_.size());
  for (const TransportPeer& p : peers_) {  // one DEALER per other peer
    if (p.id != self_) connect_dealer(p);
  }
  router_fd_.emplace(io_, router_->get(zmq::sockopt::fd));
  // Handshakes need no start-up state: answer them from now on.
  if (zap_) drain_zap();
  drain_monitor();
  // No read here: the owner calls drain() once it can handle messages (a
  // peer's hello may already be queued, and handling it starts the node).
}

void Transport::connect_dealer(const TransportPeer& p) {
  zmq::socket_t& d = dealers_[static_cast<size_t>(p.id)].emplace(ctx_, zmq::socket_type::dealer);
  d.set(zmq::sockopt::routing_id, connection_id(self_));
  d.set(zmq::sockopt::sndhwm, 0);
  d.set(zmq::sockopt::linger, 0);
  d.set(zmq::sockopt::reconnect_ivl, 100);
  d.set(zmq::sockopt::handshake_ivl, handshake_ms_);
  if (curve_) {
    d.set(zmq::sockopt::curve_serverkey, p.public_key);
    d.set(zmq::sockopt::curve_publickey, public_key_);
    d.set(zmq::sockopt::curve_secretkey, secret_key_);
  }
  if (on_link_) watch_dealer(p.id);
  const std::string to = "tcp://" + p.host + ":" + std::to_string(p.port);
  try {
    d.connect(to);
  } catch (const zmq::error_t& e) {
    throw std::runtime_error("node " + std::to_string(self_) + " cannot connect to peer " +
                             std::to_string(p.id) + " at " + to + ": " + e.what());
  }
}

void Transport::reset_peer(int peer) {
  if (closed_ || !open_ || peer < 0 || static_cast<size_t>(peer) >= dealers_.size() ||
      !dealers_[static_cast<size_t>(peer)])
    return;
  std::erase_if(queue_, [peer](const Queued& q) { return q.peer == peer; });
  unwatch_dealer(peer);
  dealers_[static_cast<size_t>(peer)]->close();  // linger 0: what it held is dropped
  dealers_[static_cast<size_t>(peer)].reset();
  for (const TransportPeer& p : peers_) {
    if (p.id == peer) connect_dealer(p);
  }
}

bool Transport::routes_to(const std::string& rid) {
  if (closed_ || !router_) return false;
  try {
    if (!router_->send(zmq::buffer(rid), zmq::send_flags::sndmore | zmq::send_flags::dontwait))
      return true;  // EAGAIN: its pipe is full of earlier probes, the connection is there
    router_->send(zmq::message_t(), zmq::send_flags::dontwait);
    return true;
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return false;
    throw;
  }
}

void Transport::arm_read() {
  if (reading_ || closed_) return;
  reading_ = true;
  router_fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                         [this](const boost::system::error_code& ec) {
                           reading_ = false;
                           if (!ec && !closed_) drain();
                         });
}

void Transport::arm_zap() {
  if (zap_reading_ || closed_) return;
  zap_reading_ = true;
  zap_fd_->async_wait(asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    zap_reading_ = false;
    if (!ec && !closed_) drain_zap();
  });
}

// ZAP requests (RFC 27): version, request id, domain, address, identity,
// mechanism, credentials (CURVE: the client's 32-byte public key). The reply
// admits a configured peer's key under User-Id "<peer id>", anything else
// with 400 (counted by the monitor as key_not_listed).
void Transport::drain_zap() {
  if (closed_ || !zap_) return;
  for (int n = 0; n < kMaxPerWake; ++n) {  // bounded: yield to timers under a flood
    if (!(zap_->get(zmq::sockopt::events) & ZMQ_POLLIN)) {
      arm_zap();
      return;
    }
    std::vector<zmq::message_t> req;
    for (;;) {  // one request; at most kMaxParts frames kept
      zmq::message_t m;
      if (!zap_->recv(m, zmq::recv_flags::dontwait)) break;
      const bool more = m.more();
      if (req.size() < kMaxParts) req.push_back(std::move(m));
      if (!more) break;
    }
    int peer = -1;
    if (req.size() >= 7 && req[5].to_string_view() == "CURVE" && req[6].size() == 32) {
      for (size_t id = 0; id < peer_keys_.size(); ++id) {  // id over the configured peers
        if (static_cast<int>(id) != self_ && std::memcmp(peer_keys_[id].data(), req[6].data(), 32) == 0)
          peer = static_cast<int>(id);
      }
    }
    const std::string request_id = req.size() >= 2 ? req[1].to_string() : "";
    const std::string status = peer >= 0 ? "200" : "400";
    const std::string text = peer >= 0 ? "OK" : "key not listed";
    const std::string user = peer >= 0 ? std::to_string(peer) : "";
    zap_->send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
    zap_->send(zmq::buffer(request_id), zmq::send_flags::sndmore);
    zap_->send(zmq::buffer(status), zmq::send_flags::sndmore);
    zap_->send(zmq::buffer(text), zmq::send_flags::sndmore);
    zap_->send(zmq::buffer(user), zmq::send_flags::sndmore);
    zap_->send(zmq::message_t(), zmq::send_flags::none);
  }
  asio::post(io_, [this] { drain_zap(); });
}

void Transport::arm_monitor() {
  if (monitor_reading_ || closed_) return;
  monitor_reading_ = true;
  monitor_fd_->async_wait(asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    monitor_reading_ = false;
    if (!ec && !closed_) drain_monitor();
  });
}

// Monitor events: [u16 event, u32 value][endpoint]. Handshake failures are
// counted by reason.
void Transport::drain_monitor() {
  if (closed_ || !monitor_) return;
  for (int n = 0; n < kMaxPerWake; ++n) {  // bounded: yield to timers under a flood
    if (!(monitor_->get(zmq::sockopt::events) & ZMQ_POLLIN)) {
      arm_monitor();
      return;
    }
    zmq::message_t head;
    if (!monitor_->recv(head, zmq::recv_flags::dontwait)) continue;
    for (bool more = head.more(); more;) {  // the endpoint frame(s)
      zmq::message_t rest;
      if (!monitor_->recv(rest, zmq::recv_flags::dontwait)) break;
      more = rest.more();
    }
    if (head.size() < 6) continue;
    uint16_t event = 0;
    uint32_t value = 0;
    std::memcpy(&event, head.data(), sizeof event);
    std::memcpy(&value, static_cast<const unsigned char*>(head.data()) + 2, sizeof value);
    HandshakeFailure why = HandshakeFailure::kProtocol;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      why = HandshakeFailure::kKeyNotListed;
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      why = HandshakeFailure::kNoKey;
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC) {
      why = HandshakeFailure::kWrongKey;
    }
    count_handshake_failure(why);
  }
  asio::post(io_, [this] { drain_monitor(); });
}

void Transport::watch_dealer(int peer) {
  DealerWatch& w = watches_[static_cast<size_t>(peer)];
  w.gen = ++watch_gen_;
  w.up = false;
  w.reading = false;
  // inproc endpoints are unique per context: a reset peer's monitor gets a new one
  const std::string endpoint = "inproc://tether.dealer-monitor." + std::to_string(peer) + "." + std::to_string(w.gen);
  if (zmq_socket_monitor(dealers_[static_cast<size_t>(peer)]->handle(), endpoint.c_str(),
                         ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) != 0)
    throw zmq::error_t();
  w.pair.emplace(ctx_, zmq::socket_type::pair);
  w.pair->set(zmq::sockopt::linger, 0);
  w.pair->set(zmq::sockopt::rcvhwm, 0);  // a full pipe would block ZeroMQ's I/O thread too
  w.pair->connect(endpoint);
  w.fd.emplace(io_, w.pair->get(zmq::sockopt::fd));
  const uint64_t gen = w.gen;
  asio::post(io_, [this, peer, gen] { drain_watch(peer, gen); });
}

void Transport::unwatch_dealer(int peer) {
  if (static_cast<size_t>(peer) >= watches_.size()) return;
  DealerWatch& w = watches_[static_cast<size_t>(peer)];
  ++w.gen;  // handlers still queued for the old monitor do nothing
  // The monitor stops before its reader closes. ZeroMQ's I/O thread sends
  // monitor events blocking: one sent to a reader that is gone blocks it for
  // good, and with it every socket of this context (seen: a node went silent
  // both ways after reset_peer, when the old DEALER reported an event after
  // its reader was closed and before it was reaped itself).
  if (w.pair && static_cast<size_t>(peer) < dealers_.size() && dealers_[static_cast<size_t>(peer)])
    zmq_socket_monitor(dealers_[static_cast<size_t>(peer)]->handle(), nullptr, 0);
  if (w.fd) {
    w.fd->cancel();
    w.fd->release();  // ZeroMQ's descriptor: never close it
    w.fd.reset();
  }
  if (w.pair) {
    w.pair->close();
    w.pair.reset();
  }
  w.reading = false;
  w.up = false;
}

// Monitor events of one DEALER: a handshake that succeeded marks its
// connection up, a drop of an up connection down; both are reported (set_on_link).
void Transport::drain_watch(int peer, uint64_t gen) {
  if (closed_ || static_cast<size_t>(peer) >= watches_.size()) return;
  DealerWatch& w = watches_[static_cast<size_t>(peer)];
  if (w.gen != gen || !w.pair) return;
  for (int n = 0; n < kMaxPerWake; ++n) {  // bounded: yield to timers
    if (!(w.pair->get(zmq::sockopt::events) & ZMQ_POLLIN)) {
      if (w.reading) return;
      w.reading = true;
      w.fd->async_wait(asio::posix::stream_descriptor::wait_read,
                       [this, peer, gen](const boost::system::error_code& ec) {
                         if (ec || closed_ || watches_[static_cast<size_t>(peer)].gen != gen) return;
                         watches_[static_cast<size_t>(peer)].reading = false;
                         drain_watch(peer, gen);
                       });
      return;
    }
    zmq::message_t head;
    if (!w.pair->recv(head, zmq::recv_flags::dontwait)) continue;
    for (bool more = head.more(); more;) {  // the endpoint frame(s)
      zmq::message_t rest;
      if (!w.pair->recv(rest, zmq::recv_flags::dontwait)) break;
      more = rest.more();
    }
    if (head.size() < 6) continue;
    uint16_t event = 0;
    std::memcpy(&event, head.data(), sizeof event);
    if (event != ZMQ_EVENT_HANDSHAKE_SUCCEEDED && !(event == ZMQ_EVENT_DISCONNECTED && w.up)) continue;
    w.up = event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
    on_link_(peer, w.up);
    if (closed_ || w.gen != gen) return;  // the owner reset or closed it
  }
  asio::post(io_, [this, peer, gen] { drain_watch(peer, gen); });
}

void Transport::drain() {
  if (closed_ || !router_) return;
  for (int n = 0; n < kMaxPerWake; ++n) {  // bounded: yield to timers under a flood
    if (!(router_->get(zmq::sockopt::events) & ZMQ_POLLIN)) {
      arm_read();
      return;
    }
    parts_.clear();
    bool truncated = false;
    for (;;) {  // one multipart message; ZeroMQ delivers its parts atomically
      zmq::message_t m;
      if (!router_->recv(m, zmq::recv_flags::dontwait)) break;
      bytes_recv_->fetch_add(m.size());
      const bool more = m.more();
      if (parts_.size() < kMaxParts) {
        parts_.push_back(std::move(m));
      } else {
        truncated = true;
      }
      if (!more) break;
    }
    // With CURVE, who sent it: the key's owner, named by our ZAP handler
    // (metadata of the frames that came off the wire, not of the routing id).
    const int auth_peer = curve_ && parts_.size() >= 2 ? user_peer(parts_[1]) : -1;
    if (!parts_.empty()) on_message_(parts_, truncated, auth_peer);
    if (closed_) return;
  }
  // budget spent: continue after the handlers that are ready (the edge-triggered
  // descriptor would not wake us again for what is already queued)
  asio::post(io_, [this] { drain(); });
}

void Transport::send(int peer, Header h, zmq::message_t payload, const uint64_t* known_hash) {
  TETHER_NET_CHECK(peer >= 0 && static_cast<size_t>(peer) < dealers_.size() &&
                       dealers_[static_cast<size_t>(peer)].has_value(),
                   "no socket to peer " << peer);
  if (closed_) return;
  h.magic = kMagic;
  h.version = kProtocolVersion;
  h.sender = static_cast<uint32_t>(self_);
  h.epoch = epoch_;
  h.payload_bytes = payload.size();
  h.payload_hash = known_hash ? *known_hash : payload_hash(payload.data(), payload.size());
  if (tensor_bytes_ && carries_codec(h.kind)) {
    tensor_bytes_->fetch_add(payload.size());
    tensor_raw_bytes_->fetch_add(h.count * sizeof(float));
  }
  zmq::message_t header(kHeaderBytes);
  encode_header(h, static_cast<unsigned char*>(header.data()));
  const Clock::time_point now = Clock::now();
  Clock::time_point ready = now;
  if (rate_mbps_ > 0) {  // one egress link: serialization delay, FIFO
    const double seconds = static_cast<double>(kHeaderBytes + payload.size()) * 8.0 / (rate_mbps_ * 1e6);
    link_free_at_ = std::max(link_free_at_, now) +
                    std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    ready = link_free_at_;
  }
  if (delay_ms_ > 0) {
    ready += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double, std::milli>(delay_ms_));
  }
  queue_.push_back({peer, std::move(header), std::move(payload), ready});
  if (queue_.size() == 1 && ready <= now) {
    flush();
  } else {
    arm_flush(queue_.front().ready);
  }
}

bool Transport::try_send(Queued& q) {
  zmq::socket_t& d = *dealers_[static_cast<size_t>(q.peer)];
  const size_t bytes = q.header.size() + q.payload.size();
  if (!d.send(q.header, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
  // ZeroMQ accepts the remaining parts of a message whose first part it took
  TETHER_NET_CHECK(d.send(q.payload, zmq::send_flags::dontwait).has_value(),
                   "payload part refused after its header was accepted");
  bytes_sent_->fetch_add(bytes);
  return true;
}

void Transport::flush() {
  const Clock::time_point now = Clock::now();
  while (!queue_.empty() && queue_.front().ready <= now) {  // bounded by the queue
    if (!try_send(queue_.front())) {  // socket full (should not happen: no HWM)
      arm_flush(now + std::chrono::milliseconds(1));
      return;
    }
    queue_.pop_front();
  }
  if (!queue_.empty()) arm_flush(queue_.front().ready);
}

void Transport::arm_flush(Clock::time_point at) {
  if (closed_) return;
  if (flush_armed_ && flush_at_ <= at) return;
  flush_armed_ = true;
  flush_at_ = at;
  flush_timer_.expires_at(at);
  flush_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: re-armed earlier or closed
    flush_armed_ = false;
    if (!closed_) flush();
  });
}

void Transport::release_held() {
  while (!queue_.empty() && try_send(queue_.front())) queue_.pop_front();  // bounded by the queue
}

void Transport::close(int linger_ms, const std::vector<int>& finished) {
  if (closed_) return;
  closed_ = true;
  flush_timer_.cancel();
  if (router_fd_) {
    router_fd_->cancel();
    router_fd_->release();  // the descriptor belongs to ZeroMQ: never close it
    router_fd_.reset();
  }
  queue_.clear();  // held-back messages are released (zero-copy callbacks run)
  for (size_t id = 0; id < watches_.size(); ++id) unwatch_dealer(static_cast<int>(id));  // id over the peers
  for (size_t id = 0; id < dealers_.size(); ++id) {  // id over the peers' sockets
    auto& d = dealers_[id];
    if (!d) continue;
    const bool done = std::find(finished.begin(), finished.end(), static_cast<int>(id)) != finished.end();
    d->set(zmq::sockopt::linger, done ? 0 : std::max(0, linger_ms));
    d->close();
  }
  for (auto* fd : {&zap_fd_, &monitor_fd_}) {
    if (!*fd) continue;
    (*fd)->cancel();
    (*fd)->release();  // ZeroMQ's descriptors too
    fd->reset();
  }
  if (router_ && monitor_) zmq_socket_monitor(router_->handle(), nullptr, 0);  // before its reader closes (unwatch_dealer)
  if (router_) router_->close();
  if (monitor_) monitor_->close();
  if (zap_) zap_->close();
  ctx_.close();
}

}  // namespace tether::net
