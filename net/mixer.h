// What a mixer (ring all-reduce, gossip) sees of the node: it runs on the I/O
// thread only, receives validated frames of its kind, sends through an Outbox,
// and hands back one mixed vector per round, in any order the communicator asks.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <zmq.hpp>

#include "net/wire.h"

namespace tether::net {

// A float buffer lent to ZeroMQ for zero-copy sends. in_flight counts the
// messages ZeroMQ has not released yet; the buffer is neither modified in a
// way that changes what is being sent nor handed to the trainer before it
// drops to zero. on_released runs (on a ZeroMQ thread) when it does.
struct RoundBuffer {
  std::vector<float> data;
  std::atomic<int> in_flight{0};
  std::function<void()> on_released;  // must be thread-safe (e.g. asio::post)
};

// A zmq message over buf->data[offset, offset + count) kept alive (shared_ptr in
// the release hint) until ZeroMQ releases it. count == 0 gives an empty message.
zmq::message_t zero_copy(const std::shared_ptr<RoundBuffer>& buf, size_t offset, size_t count);

// Sending side of the transport, as mixers see it. The outbox fills magic,
// version, sender and the payload length and hash (known_hash when the payload
// is forwarded unchanged and its hash is already known and verified).
class Outbox {
 public:
  virtual ~Outbox() = default;
  virtual void send(int peer, Header h, zmq::message_t payload, const uint64_t* known_hash) = 0;
};

// Element layout shared by the mixers: count floats cut into chunks of
// chunk_elems (the last one shorter).
struct ChunkRange {
  uint64_t offset = 0;
  uint64_t count = 0;
};

class Mixer {
 public:
  virtual ~Mixer() = default;
  // Checks a frame's layout for this node (kind, sender, step, chunk, offset,
  // count) before anything is buffered: kNone, kUnexpected or kRangeMismatch.
  virtual Reject check(const Header& h) const = 0;
  // This node's vector for `round` (count floats; the mixer keeps it, sends it
  // zero-copy and may reuse it as the result — gossip does; the ring leaves
  // it unchanged, see keeps_input()). `applied`: the rounds whose
  // results the caller had applied to its state when it produced `data`
  // (gossip completes the snapshot with the corrections of the others).
  virtual void submit(uint64_t round, std::shared_ptr<RoundBuffer> data, uint64_t applied) = 0;
  // A frame that passed check() and check_payload(); frames of a round this
  // node has not submitted yet are buffered. Returns kDuplicate for a
  // (round, step, chunk) already received, else kNone.
  virtual Reject receive(const Header& h, zmq::message_t payload) = 0;
  // True once `round`'s mixed vector is final and ZeroMQ holds none of it.
  virtual bool finished(uint64_t round) const = 0;
  // Hands the result of a finished round over (ring: the mean; gossip: the
  // correction, see gossip.h) and forgets the round; *partner is the gossip
  // partner (-1 for ring or a bye).
  virtual std::vector<float> take(uint64_t round, int* partner) = 0;
  // Error feedback (net/codec.h): what this node's compressions lost of the
  // vectors of a finished round, as a vector of the round's length (empty:
  // nothing lost — no compression, or the mixer keeps its own residual). Call
  // before take(); it forgets the loss.
  virtual std::vector<float> take_loss(uint64_t /*round*/) { return {}; }

  // What lets the caller keep work off a round's critical path (the ring
  // does all three; the defaults suit a mixer that does none):
  // True when submit() leaves the submitted vector unchanged and writes the
  // result to storage of its own: the caller may keep that very buffer to
  // re-run the round (a view change) instead of copying it first.
  virtual bool keeps_input() const { return false; }
  // A vector the mixer may reuse as a later round's result storage (its
  // contents are overwritten): saves the page faults of a fresh allocation.
  virtual void recycle(std::vector<float> /*v*/) {}
  // A recycled vector (its contents stale), or an empty one when none is
  // spare: storage for a copy the caller makes of a round's vector.
  virtual std::vector<float> take_spare() { return {}; }
};

inline int mod_nodes(long long v, int nodes) {
  const long long m = v % nodes;
  return static_cast<int>(m < 0 ? m + nodes : m);
}

}  // namespace tether::net
