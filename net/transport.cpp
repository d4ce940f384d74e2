#include "net/transport.h"

#include <algorithm>
#include <cstdio>
#include <random>

#include <boost/asio/post.hpp>

#include "net/net_check.h"

namespace tether::net {

namespace asio = boost::asio;

namespace {
// Messages received per wake-up before the loop yields to timers (fairness:
// heartbeats and time-outs must run under a flood).
constexpr int kMaxPerWake = 256;
}  // namespace

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

void Transport::open(const std::function<void()>& after_bind) {
  TETHER_NET_CHECK(!open_ && !closed_, "transport opened twice");
  open_ = true;
  const TransportPeer* me = nullptr;
  for (const TransportPeer& p : peers_) {
    if (p.id == self_) me = &p;
  }
  TETHER_NET_CHECK(me != nullptr, "self " << self_ << " not among the peers");
  router_.emplace(ctx_, zmq::socket_type::router);
  router_->set(zmq::sockopt::linger, 0);
  router_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(max_frame_bytes_));
  router_->set(zmq::sockopt::rcvhwm, 0);
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
  for (const TransportPeer& p : peers_) {  // one DEALER per other peer
    if (p.id != self_) connect_dealer(p);
  }
  router_fd_.emplace(io_, router_->get(zmq::sockopt::fd));
  // No read here: the owner calls drain() once it can handle messages (a
  // peer's hello may already be queued, and handling it starts the node).
}

void Transport::connect_dealer(const TransportPeer& p) {
  zmq::socket_t& d = dealers_[static_cast<size_t>(p.id)].emplace(ctx_, zmq::socket_type::dealer);
  d.set(zmq::sockopt::routing_id, connection_id(self_));
  d.set(zmq::sockopt::sndhwm, 0);
  d.set(zmq::sockopt::linger, 0);
  d.set(zmq::sockopt::reconnect_ivl, 100);
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
  dealers_[static_cast<size_t>(peer)]->close();  // linger 0: what it held is dropped
  dealers_[static_cast<size_t>(peer)].reset();
  for (const TransportPeer& p : peers_) {
    if (p.id == peer) connect_dealer(p);
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
    if (!parts_.empty()) on_message_(parts_, truncated);
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
  for (size_t id = 0; id < dealers_.size(); ++id) {  // id over the peers' sockets
    auto& d = dealers_[id];
    if (!d) continue;
    const bool done = std::find(finished.begin(), finished.end(), static_cast<int>(id)) != finished.end();
    d->set(zmq::sockopt::linger, done ? 0 : std::max(0, linger_ms));
    d->close();
  }
  if (router_) router_->close();
  ctx_.close();
}

}  // namespace tether::net
