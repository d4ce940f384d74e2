// Transport — the ZeroMQ sockets of one node, driven by its Asio event loop
// (ps-lite's socket layout: one ROUTER bound on the node's port receives from
// everyone; one DEALER per peer, routing id "n<self>.<random>", sends to it).
//
// Every socket is created, used and closed on the I/O thread that runs the
// io_context. Readiness comes from the ROUTER's ZMQ_FD wrapped in an Asio
// stream_descriptor; the descriptor is edge-triggered, so every wake-up drains
// the socket (ZMQ_EVENTS / ZMQ_DONTWAIT) until it reports nothing to read.
// Sends never block: DEALERs have no send high-water mark, and the optional
// link emulation (one-way delay, egress rate) holds messages in a FIFO on the
// io_context's timers, so per-peer order is kept.
//
// Security (set_curve before open): with CURVE the ROUTER is a CurveZMQ
// server and every DEALER a client that knows its peer's public key. A ZAP
// handler (a REP socket on inproc://zeromq.zap.01 in this transport's own
// ZeroMQ context, read by the same Asio loop) admits only the public keys of
// the configured peers and names each connection after the key's owner: its
// messages carry that peer id as ZeroMQ "User-Id" metadata, which on_message
// receives as auth_peer. Routing ids are never trusted: a DEALER's is
// "n<self>.<random>", new for every connection (connection_id; reset_peer's
// too), so a second connection that copies a peer's id is still delivered
// (and refused by the communicator) instead of being parked by the ROUTER. A socket monitor on the ROUTER counts the
// connections that fail the handshake, by reason (set_handshake_counters).
// ZeroMQ limits bound what a stranger costs before it is identified: the
// largest frame (ZMQ_MAXMSGSIZE), the time to finish a handshake
// (ZMQ_HANDSHAKE_IVL), ZMTP heartbeats that drop dead connections, and a
// receive high-water mark per connection (TCP back-pressure beyond it).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <zmq.hpp>

#include "net/mixer.h"
#include "net/wire.h"

namespace tether::net {

struct TransportPeer {
  int id = 0;
  std::string host;
  int port = 0;
  std::string public_key;  // Z85 (40 characters); with CURVE, required for every peer
};

// Why a connection to the ROUTER failed its handshake: the names are the keys
// of the counters (set_handshake_counters) and of the metrics' handshake_failed.
enum class HandshakeFailure : uint8_t {
  kNoKey = 0,     // the client did not speak CURVE (no key; ZMTP mechanism mismatch)
  kWrongKey,      // CURVE that does not decrypt (the client used another server key)
  kKeyNotListed,  // a valid CURVE client whose public key is not in cluster.peers
  kIdentityTaken, // "none": a second connection claiming a live peer's id (see Communicator)
  kProtocol,      // anything else: malformed greeting or command, handshake time-out
  kCount
};
std::string_view handshake_failure_name(HandshakeFailure f);

class Transport final : public Outbox {
 public:
  using Clock = std::chrono::steady_clock;
  // parts: the frames of one multipart message as received by the ROUTER
  // (identity first); truncated: more than kMaxParts frames came (dropped);
  // auth_peer: with CURVE, the peer whose key the connection authenticated
  // with (ZAP "User-Id"), else -1.
  using OnMessage = std::function<void(std::vector<zmq::message_t>& parts, bool truncated, int auth_peer)>;
  static constexpr size_t kMaxParts = 8;

  Transport(boost::asio::io_context& io, int self, std::vector<TransportPeer> peers,
            double delay_ms, double rate_mbps, OnMessage on_message,
            std::atomic<uint64_t>* bytes_sent, std::atomic<uint64_t>* bytes_recv);
  ~Transport() override;
  Transport(const Transport&) = delete;
  Transport& operator=(const Transport&) = delete;

  // Binds the ROUTER and connects the DEALERs. Throws std::runtime_error
  // naming the address that failed. Reading starts with the first drain().
  // after_bind (a test hook) runs between the bind and the connects.
  void open(const std::function<void()>& after_bind = {});
  // Largest frame the ROUTER accepts (ZMQ_MAXMSGSIZE: a larger one closes the
  // sender's connection before anything is buffered). Call before open().
  void set_max_frame_bytes(uint64_t bytes) { max_frame_bytes_ = bytes; }
  // CURVE on every socket with this node's keypair (Z85). Call before open();
  // without it the links are plaintext (NULL mechanism).
  void set_curve(std::string secret_key, std::string public_key);
  // Per connection of the ROUTER: messages ZeroMQ buffers before we read them
  // (ZMQ_RCVHWM; beyond it TCP back-pressure), the time a connection has to
  // finish its handshake, and ZMTP heartbeats (interval; a connection silent
  // for timeout_ms is dropped; our DEALERs ask peers for the same TTL).
  // Call before open().
  void set_limits(int receive_hwm, int handshake_ms, int heartbeat_ms, int timeout_ms);
  // Connections refused at the handshake, by HandshakeFailure: counted into
  // counts[HandshakeFailure::kCount], owned by the caller and read by other
  // threads (as bytes_sent). Call before open(); unset, they are not counted.
  void set_handshake_counters(std::atomic<uint64_t>* counts) { handshake_failed_ = counts; }
  void count_handshake_failure(HandshakeFailure f);
  bool curve() const { return curve_; }
  void send(int peer, Header h, zmq::message_t payload, const uint64_t* known_hash) override;
  // The view epoch stamped on every frame sent from now on.
  void set_epoch(uint32_t epoch) { epoch_ = epoch; }
  // Counters of tensor payloads (carries_codec kinds) handed to send(): the
  // bytes as encoded and the float32 bytes they stand for (owned by the caller).
  void set_tensor_counters(std::atomic<uint64_t>* bytes, std::atomic<uint64_t>* raw_bytes) {
    tensor_bytes_ = bytes;
    tensor_raw_bytes_ = raw_bytes;
  }
  // Called on this thread when the connection of the DEALER to `peer` drops
  // after it had finished its handshake (up false), and when a connection of
  // it finishes a handshake (up true): a socket monitor on each DEALER. A
  // killed process closes its TCP connections at once, so a drop comes long
  // before its silence is judged; a hint, not a verdict: ZeroMQ reconnects by
  // itself (to a live peer within ~100 ms), and the owner decides whether the
  // peer is gone. Set before open().
  void set_on_link(std::function<void(int peer, bool up)> fn) { on_link_ = std::move(fn); }
  // Drops everything queued for `peer` (here and in ZeroMQ) and connects a
  // fresh socket to it: a peer declared dead gets nothing stale when (a new
  // incarnation of) it comes back.
  void reset_peer(int peer);
  // Test hook: the first step of reset_peer and close alone: `peer`'s link
  // events are no longer reported, its DEALER stays open (the window in which
  // ZeroMQ may still have an event of it to report).
  void unwatch_for_test(int peer) { unwatch_dealer(peer); }
  // Whether a connection with routing id `rid` is open on the ROUTER. Probed
  // by routing an empty message to it (ZMQ_ROUTER_MANDATORY: refused with
  // EHOSTUNREACH when none has that id, or its peer closed it); a peer's
  // DEALER never reads, so what arrives there is dropped with the socket.
  bool routes_to(const std::string& rid);
  // Receives everything ZeroMQ holds now (also called by timers before they
  // judge a peer silent).
  void drain();
  // Messages held back by the link emulation or a full socket.
  size_t queued() const { return queue_.size(); }
  // Closes every socket (linger_ms bounds the flush of what ZeroMQ still holds;
  // peers in `finished` get none: they said bye and need nothing more) and
  // terminates the ZeroMQ context; pending messages are released.
  void close(int linger_ms, const std::vector<int>& finished = {});
  // Hands every frame held back (inject_delay_ms, inject_rate_mbps) to
  // ZeroMQ now, whatever its time: a test crash whose last frames must leave.
  void release_held();

  // A node's name on the wire: its DEALERs' routing ids are "n<id>." plus 16
  // random hex digits, new for every connection. A ROUTER silently parks a
  // connection whose routing id it still holds from an earlier one, so a
  // reconnect (reset_peer, a restarted process) must never reuse one.
  static std::string identity(int id) { return "n" + std::to_string(id); }
  static std::string connection_id(int id);
  // Whether routing id `rid` has the form of node `id`'s: "n<id>" or
  // "n<id>.<...>". A claim only, anybody can copy it: the communicator takes
  // a connection for a peer's by its key (CURVE) or its bound hello, and
  // uses this for start-up diagnosis alone.
  static bool names_node(std::string_view rid, int id);

 private:
  struct Queued {
    int peer;
    zmq::message_t header, payload;
    Clock::time_point ready;
  };
  bool try_send(Queued& q);
  void connect_dealer(const TransportPeer& p);
  void flush();
  void arm_flush(Clock::time_point at);
  void arm_read();
  void arm_zap();
  void drain_zap();
  void arm_monitor();
  void drain_monitor();
  // The socket monitor of peer's DEALER (set_on_link): made with the
  // DEALER, closed before it.
  void watch_dealer(int peer);
  void unwatch_dealer(int peer);
  void drain_watch(int peer, uint64_t gen);
  // the peer named by a ZAP "User-Id" ("3"), or -1
  int user_peer(const zmq::message_t& m) const;

  boost::asio::io_context& io_;
  int self_;
  std::vector<TransportPeer> peers_;
  double delay_ms_, rate_mbps_;
  OnMessage on_message_;
  zmq::context_t ctx_;
  std::optional<zmq::socket_t> router_;
  std::vector<std::optional<zmq::socket_t>> dealers_;  // [peer id]
  struct DealerWatch {  // a DEALER's socket monitor
    std::optional<zmq::socket_t> pair;
    std::optional<boost::asio::posix::stream_descriptor> fd;
    uint64_t gen = 0;     // which monitor (a handler of an earlier one does nothing)
    bool reading = false;
    bool up = false;      // its connection finished a handshake and has not dropped since
  };
  std::vector<DealerWatch> watches_;  // [peer id]
  uint64_t watch_gen_ = 0;
  std::function<void(int, bool)> on_link_;
  std::optional<boost::asio::posix::stream_descriptor> router_fd_;
  boost::asio::steady_timer flush_timer_;
  bool flush_armed_ = false;
  Clock::time_point flush_at_{};
  std::deque<Queued> queue_;
  Clock::time_point link_free_at_{};
  std::vector<zmq::message_t> parts_;
  bool open_ = false, closed_ = false, reading_ = false;
  std::atomic<uint64_t>* bytes_sent_;  // owned by the caller, read by other threads
  uint64_t max_frame_bytes_ = kMaxPayloadBytes;
  uint32_t epoch_ = 0;
  std::atomic<uint64_t>* bytes_recv_;
  bool curve_ = false;
  std::string secret_key_, public_key_;  // Z85
  std::vector<std::array<uint8_t, 32>> peer_keys_;  // [peer id] binary public keys (curve)
  int receive_hwm_ = 128, handshake_ms_ = 5000, heartbeat_ms_ = 0, heartbeat_timeout_ms_ = 0;
  std::optional<zmq::socket_t> zap_, monitor_;
  std::optional<boost::asio::posix::stream_descriptor> zap_fd_, monitor_fd_;
  bool zap_reading_ = false, monitor_reading_ = false;
  std::atomic<uint64_t>* handshake_failed_ = nullptr;  // [HandshakeFailure], the caller's
  std::atomic<uint64_t>* tensor_bytes_ = nullptr;
  std::atomic<uint64_t>* tensor_raw_bytes_ = nullptr;
};

}  // namespace tether::net
