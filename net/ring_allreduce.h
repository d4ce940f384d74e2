// RingAllreduce — chunked, pipelined ring all-reduce of one vector per round.
//
// Computes: every node receives mean_i(x_i) = (sum of the N nodes' vectors) / N,
//   with identical bits on every node: each segment is summed once, in ring
//   order, by the chain that ends at its owner; the owner divides by N and the
//   all-gather copies its bits everywhere.
// Steps (node i, successor i+1, predecessor i-1, all mod N; the vector cut into
//   N balanced segments, segment s = [s*n/N, (s+1)*n/N), each cut into chunks
//   of chunk_bytes):
//   reduce-scatter, k = 0..N-2: send segment (i-k) to i+1 (k = 0: own data);
//     on receiving chunk c of segment (i-1-k): add own chunk in place, forward
//     as step k+1 — or, at k = N-2, the sum of segment i+1 is complete here:
//     divide by N, store, start the all-gather with it.
//   all-gather, j = 0..N-2: on receiving chunk c of segment (i-j): store,
//     forward to i+1 unless j = N-2.
//   Every chunk moves independently, so a link never waits for a whole
//   segment (pipelining). Received buffers are reduced and forwarded in place
//   (no copy); own data is sent zero-copy and never modified (keeps_input():
//   the caller re-runs a round from it without a copy). The result goes to a
//   vector of the ring's own (recycled ones first, so no page faults on the
//   round's path).
// Bytes on the wire per node and round: 2(N-1)/N * n * 4 sent and received
//   (plus 72 header bytes per chunk); with a codec (net/codec.h), 2(N-1)/N *
//   n * 2 (bf16) or 2(N-1)/N * (n + 4 per chunk) (int8).
// Compression (codec other than none): every frame carries its chunk
//   encoded. A received partial sum is decoded and summed with the own values
//   in fp32, then encoded again for the successor; the owner encodes the mean
//   once, keeps the decoded bits of that one message as its result, and the
//   all-gather forwards the message unchanged, so every node, the owner
//   included, ends with the same bits. What this node's encodings lost (its
//   own segment at step 0, the partial sums it forwards, and N times the
//   mean's loss at the owner, the mean being the sum over N) is kept per round
//   (take_loss) for error feedback: sum of the results + sum of the nodes'
//   losses / N = sum of the submitted vectors / N.
// Rounds may start at different times: chunks of a round this node has not
//   submitted yet are buffered until it does (the communicator bounds the
//   rounds accepted by its window). N = 1 and n = 0 finish at submit;
//   n < N leaves some segments empty (no messages for them).
// Members: the ring runs over a view's members (sorted node ids); ranks are
//   positions in that list, headers and the outbox speak node ids.
// Peer failure: the ring stops; nothing here times out. The communicator
//   detects the silent peer and forms a new view with a new ring.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "net/codec.h"
#include "net/mixer.h"

namespace tether::net {

class RingAllreduce final : public Mixer {
 public:
  // The ring over nodes 0..nodes-1.
  RingAllreduce(int self, int nodes, size_t count, size_t chunk_bytes, Outbox* outbox,
                Codec codec = Codec::kNone);
  // The ring over `members` (sorted node ids, self among them).
  RingAllreduce(int self, std::vector<int> members, size_t count, size_t chunk_bytes, Outbox* outbox,
                Codec codec = Codec::kNone);

  Reject check(const Header& h) const override;
  void submit(uint64_t round, std::shared_ptr<RoundBuffer> data, uint64_t applied) override;
  Reject receive(const Header& h, zmq::message_t payload) override;
  bool finished(uint64_t round) const override;
  std::vector<float> take(uint64_t round, int* partner) override;
  std::vector<float> take_loss(uint64_t round) override;
  bool keeps_input() const override { return true; }
  void recycle(std::vector<float> v) override;
  std::vector<float> take_spare() override;
  Codec codec() const { return codec_; }

  // Layout, public for tests: segment s of N, chunk c inside it.
  uint64_t segment_begin(int s) const;
  uint64_t segment_end(int s) const;
  uint32_t chunks_in(int s) const;
  ChunkRange chunk(int s, uint32_t c) const;
  // The segment that frames of `step` from the predecessor carry.
  int segment_of_step(uint32_t step) const;

 private:
  struct Pending {
    Header h;
    zmq::message_t payload;
  };
  struct RoundState {
    std::shared_ptr<RoundBuffer> buf;  // own vector, as submitted (read only)
    std::vector<float> out;            // the mean, as its chunks land
    std::vector<Pending> pending;      // frames that came before submit
    std::vector<uint8_t> seen;         // [step * max_chunks_ + chunk]
    uint64_t chunks_done = 0;          // result chunks final here
    std::vector<float> loss;           // what this node's encodings lost (codec only)
  };
  // Encodes x[0, n) (finite) into a new message; loss[j] += weight * (x[j] −
  // decoded[j]); decoded (n floats, may be own) receives the decoded bits.
  zmq::message_t encode_chunk(uint64_t round, const float* x, uint64_t n, float* decoded, float* loss,
                              float weight);
  RoundState& state(uint64_t round);
  void apply(uint64_t round, RoundState& st, const Header& h, zmq::message_t payload);
  void send(uint64_t round, uint32_t step, int seg, uint32_t c, zmq::message_t payload,
            const uint64_t* known_hash);

  std::vector<int> ids_;       // [rank] -> node id
  int self_, nodes_, succ_, pred_;  // ranks
  uint64_t count_, chunk_elems_;
  uint32_t max_chunks_ = 0;
  uint64_t total_chunks_ = 0;
  Outbox* outbox_;
  Codec codec_;
  std::vector<float> scratch_, decoded_;  // one chunk, decoded (I/O thread)
  std::vector<std::vector<float>> spare_;  // recycled result storage (at most kMaxSpare)
  static constexpr size_t kMaxSpare = 4;
  std::map<uint64_t, RoundState> rounds_;
};

}  // namespace tether::net
