// Transport — the ZeroMQ sockets of one node, driven by its Asio event loop
// (ps-lite's socket layout: one ROUTER bound on the node's port receives from
// everyone; one DEALER per peer, routing id "n<self>", sends to it).
//
// Every socket is created, used and closed on the I/O thread that runs the
// io_context. Readiness comes from the ROUTER's ZMQ_FD wrapped in an Asio
// stream_descriptor; the descriptor is edge-triggered, so every wake-up drains
// the socket (ZMQ_EVENTS / ZMQ_DONTWAIT) until it reports nothing to read.
// Sends never block: DEALERs have no send high-water mark, and the optional
// link emulation (one-way delay, egress rate) holds messages in a FIFO on the
// io_context's timers, so per-peer order is kept.
#pragma once

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
};

class Transport final : public Outbox {
 public:
  using Clock = std::chrono::steady_clock;
  // parts: the frames of one multipart message as received by the ROUTER
  // (identity first); truncated: more than kMaxParts frames came (dropped).
  using OnMessage = std::function<void(std::vector<zmq::message_t>& parts, bool truncated)>;
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
  void send(int peer, Header h, zmq::message_t payload, const uint64_t* known_hash) override;
  // The view epoch stamped on every frame sent from now on.
  void set_epoch(uint32_t epoch) { epoch_ = epoch; }
  // Counters of tensor payloads (carries_codec kinds) handed to send(): the
  // bytes as encoded and the float32 bytes they stand for (owned by the caller).
  void set_tensor_counters(std::atomic<uint64_t>* bytes, std::atomic<uint64_t>* raw_bytes) {
    tensor_bytes_ = bytes;
    tensor_raw_bytes_ = raw_bytes;
  }
  // Drops everything queued for `peer` (here and in ZeroMQ) and connects a
  // fresh socket to it: a peer declared dead gets nothing stale when (a new
  // incarnation of) it comes back.
  void reset_peer(int peer);
  // Receives everything ZeroMQ holds now (also called by timers before they
  // judge a peer silent).
  void drain();
  // Messages held back by the link emulation or a full socket.
  size_t queued() const { return queue_.size(); }
  // Closes every socket (linger_ms bounds the flush of what ZeroMQ still holds;
  // peers in `finished` get none: they said bye and need nothing more) and
  // terminates the ZeroMQ context; pending messages are released.
  void close(int linger_ms, const std::vector<int>& finished = {});

  // A node's name on the wire: its DEALERs' routing ids are "n<id>." plus 16
  // random hex digits, new for every connection. A ROUTER silently parks a
  // connection whose routing id it still holds from an earlier one, so a
  // reconnect (reset_peer, a restarted process) must never reuse one.
  static std::string identity(int id) { return "n" + std::to_string(id); }
  static std::string connection_id(int id);
  // Whether routing id `rid` is one of node `id`'s: "n<id>" or "n<id>.<...>".
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

  boost::asio::io_context& io_;
  int self_;
  std::vector<TransportPeer> peers_;
  double delay_ms_, rate_mbps_;
  OnMessage on_message_;
  zmq::context_t ctx_;
  std::optional<zmq::socket_t> router_;
  std::vector<std::optional<zmq::socket_t>> dealers_;  // [peer id]
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
  std::atomic<uint64_t>* tensor_bytes_ = nullptr;
  std::atomic<uint64_t>* tensor_raw_bytes_ = nullptr;
};

}  // namespace tether::net
