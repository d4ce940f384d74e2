// Service — frames of kinds beyond the mixers' (kPush, kFetch, kShard, kAck)
// handled on the communicator's I/O thread: the parameter-server shards of the
// baselines (net/shard_server.h). The communicator does the generic part of
// every frame (header, sender, identity, payload length, hash, finite
// values); the service checks the layout and the sequence, and applies.
#pragma once

#include <cstdint>
#include <functional>

#include <zmq.hpp>

#include "net/mixer.h"
#include "net/wire.h"

namespace tether::net {

class Service {
 public:
  using Post = std::function<void(std::function<void()>)>;
  virtual ~Service() = default;
  // I/O thread, once the transport exists: where frames go, and how the
  // trainer thread hands work to the I/O thread (asio::post).
  virtual void attach(Outbox* out, Post post) = 0;
  // Largest payload frame (bytes) the service's peers legitimately send.
  virtual uint64_t max_frame_bytes() const = 0;
  // I/O thread: start-up agreed on the initial parameters (count floats);
  // frames that came before are held until then.
  virtual void on_start(const float* params, size_t count) = 0;
  // Layout of a frame of the service's kinds (before the payload is hashed):
  // kNone, kUnexpected, kRangeMismatch, kDuplicate.
  virtual Reject check(const Header& h) const = 0;
  // A frame that passed check() and check_payload() (payload float-aligned).
  virtual Reject receive(const Header& h, zmq::message_t payload) = 0;
  // I/O thread: a peer said bye (failed: after a failure) while running.
  virtual void peer_left(int peer, bool failed) = 0;
};

}  // namespace tether::net
