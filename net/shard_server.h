// ShardService — the parameter server of the baselines (Downpour SGD, EASGD;
// runtime/server_averaging.h), one shard per node, served on the node's
// communicator I/O thread over the same transport and wire protocol.
//
// What it computes. The vector of `count` floats is cut into N contiguous
// shards (shard_range); node k holds shard k, x̃_k, and a version: the number
// of updates applied to it. A push of update u from any worker does
// x̃_k += u (as it arrives, no barrier); a fetch returns x̃_k and the version
// it was read at.
//
// Steps. Worker side (trainer thread): push(u) posts the send of each slice
// of u to its server and returns; fetch(dst) sends a fetch to every server
// and blocks until every shard came back. The own shard is served without the
// wire, through the same code on the I/O thread. Per (worker, server) pair
// pushes and fetches are numbered 0, 1, 2, ...: a server takes them in order
// only (a duplicate or a gap is refused), a worker takes a reply only for its
// oldest outstanding request of that server. Every reply carries the server's
// version, so a worker measures its gradient delay: for each push, the
// updates the server applied between the worker's last fetch and this push
// (ack version − fetch version − 1).
//
// Bytes on the wire per node: a push or a fetch reply moves count·4·(N−1)/N
// bytes out (push) or in (fetch); acks and fetches are headers only. With a
// codec (net/codec.h) pushes and fetch replies travel encoded: count·2·(N−1)/N
// (bf16) or (count + 4 per shard)·(N−1)/N (int8).
//
// Compression. A push is an update: what the encoding lost of the slices this
// worker sends over the wire is kept (push_residual) and added to its next
// push, so the servers receive every update in full over time. A fetch reply
// is a read: the server's x̃ stays exact and the worker gets its decoded
// bits; the next fetch reads x̃ afresh, so nothing accumulates. The own shard
// never crosses the wire and is served exactly.
//
// Sketches (the discrepancy monitor without a mixer): as it closes round r a
// node sends its CountSketch (sketch_floats floats) to every other node
// (send_sketch); each node keeps the sketches of the last kSketchRounds
// rounds, and sketches_of(r) returns round r's once every node's is there.
//
// Failure: a server that falls silent surfaces as the communicator's
// PeerLost (the waiting trainer polls it); one that says bye while the
// service is open makes every wait throw PeerLost naming it (graceful when
// its bye was). Every frame is validated: kind, sender, shard range, sequence
// number, payload length, checksum, finite values; a refused one is counted
// with the communicator's rejects and never applied.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/codec.h"
#include "net/service.h"

namespace tether::net {

struct ShardRange {
  uint64_t offset = 0;
  uint64_t count = 0;
};
// Shard k of a vector of count floats over `nodes` nodes.
ShardRange shard_range(int k, int nodes, uint64_t count);

class ShardService final : public Service {
 public:
  // max_pushes: pushes per server not yet acknowledged before push() waits;
  // sketch_floats: length of every node's sketch (0: no sketches).
  ShardService(int self, int nodes, size_t count, int max_pushes = 4, uint64_t sketch_floats = 0,
               Codec codec = Codec::kNone);
  static constexpr uint64_t kSketchRounds = 64;

  // Service (I/O thread)
  void attach(Outbox* out, Post post) override;
  uint64_t max_frame_bytes() const override;
  void on_start(const float* params, size_t count) override;
  Reject check(const Header& h) const override;
  Reject receive(const Header& h, zmq::message_t payload) override;
  void peer_left(int peer, bool failed) override;

  // Trainer thread. `alive` is called between short waits (it polls the
  // communicator, which throws PeerLost for a silent peer); every wait gives
  // up after timeout_ms with NetError.
  using Alive = std::function<void()>;
  // Sends u (count floats) to the servers; waits while a server holds
  // max_pushes unacknowledged pushes of this node.
  void push(std::vector<float> u, const Alive& alive, int timeout_ms);
  // dst = x̃ (count floats), every shard as its server read it.
  void fetch(float* dst, const Alive& alive, int timeout_ms);
  // Waits until every push of this node is acknowledged.
  void wait_pushes(const Alive& alive, int timeout_ms);
  // Peers' byes no longer stop the run (the run is over).
  void close();
  // Trainer thread: this node's sketch of round r (sketch_floats floats; r =
  // 0, 1, 2, ...) to every other node, non-blocking.
  void send_sketch(uint64_t round, std::vector<float> sketch);
  // Every node's sketch of round r (node id -> sketch) once all are there
  // (and r is one of the last kSketchRounds rounds), else empty.
  std::map<int, std::vector<float>> sketches_of(uint64_t round) const;

  // Gradient delay: acknowledged pushes and the sum of their delays.
  struct DelayStats {
    uint64_t pushes = 0;
    double delay_sum = 0;
    double mean() const { return pushes ? delay_sum / double(pushes) : 0.0; }
  };
  DelayStats delay() const;
  // The own shard's version (updates applied so far; thread-safe).
  uint64_t server_version() const;
  // What the encodings of this node's pushes lost and its next push carries
  // (count floats, zero on the own shard; empty without a codec). Thread-safe.
  std::vector<float> push_residual() const;

 private:
  struct Pending {
    Header h;
    zmq::message_t payload;
  };
  // I/O thread
  void start_push(const std::shared_ptr<RoundBuffer>& u);
  void start_fetch();
  void serve_push(int worker, const float* u);
  void serve_fetch(int worker, uint64_t seq);
  void on_ack(int server, uint32_t version);
  void on_shard(int server, uint32_t version, const float* values);
  void apply(const Header& h, zmq::message_t& payload);
  // trainer thread
  void wait(std::unique_lock<std::mutex>& lk, const std::function<bool()>& done, const Alive& alive,
            int timeout_ms, const char* what);

  const int self_, nodes_;
  const size_t count_;
  const int max_pushes_;
  const uint64_t sketch_floats_;
  std::vector<ShardRange> ranges_;  // [node]
  const Codec codec_;
  Outbox* out_ = nullptr;
  Post post_;

  // I/O thread only
  bool started_ = false;
  std::vector<Pending> early_;            // frames before on_start (bounded)
  std::vector<float> shard_;              // x̃ of this node's shard
  uint32_t version_ = 0;
  std::vector<uint64_t> push_in_, fetch_in_;        // [worker] next sequence number expected
  std::vector<uint64_t> push_out_, fetch_out_;      // [server] next sequence number to send
  std::vector<uint64_t> ack_next_, shard_next_;     // [server] oldest outstanding request
  std::vector<uint32_t> seen_version_;              // [server] latest version in a reply
  std::vector<uint64_t> sketch_in_;                 // [node] next sketch round expected
  std::vector<float> decoded_;                      // a received payload, decoded

  // shared, under mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> unacked_;           // [server] pushes sent and not acknowledged
  int shards_missing_ = 0;             // of the fetch in progress
  std::vector<float> fetched_;         // the fetch in progress
  std::vector<uint32_t> fetch_version_;  // [server] version of the last fetch
  DelayStats delay_;
  uint64_t version_seen_ = 0;          // server_version() for other threads
  std::vector<float> push_residual_;   // error feedback of pushes (codec only)
  std::map<uint64_t, std::map<int, std::vector<float>>> sketches_;  // [round][node], the last kSketchRounds
  bool closed_ = false;
  int gone_peer_ = -1;
  bool gone_failed_ = false;
};

}  // namespace tether::net
