// Gossip — decentralized pairwise averaging, O(1) peers per node and round.
//
// Computes: in round r node i pairs with partner p = gossip_partner(i, r, N)
//   (symmetric: gossip_partner(p, r, N) == i) and both receive
//   mixed = (x_i + x_p) / 2, elementwise, computed as (a + b) * 0.5 with the
//   same operands on both sides (IEEE addition commutes), so both get the
//   same bits and x_i + x_p is conserved up to one rounding of the sum.
//   A node without a partner (a bye when N is odd, or N = 1) gets x_i back.
// Schedule: N a power of two: hypercube, p = i XOR 2^(r mod log2 N) — after
//   log2 N rounds without local change every node holds the exact average.
//   Otherwise round-robin tournament (circle method) over M = N rounded up to
//   even players, round t = r mod (M-1): player M-1 meets t, every other i
//   meets (2t - i) mod (M-1); meeting the phantom player N is a bye.
// Steps: send the snapshot to p in chunks (zero-copy); when all of p's chunks
//   have arrived and ZeroMQ has released the own snapshot, average in place.
// Bytes on the wire per node and round: n * 4 sent and received (0 on a bye).
// Peer failure: the pair's round never completes; the communicator's
//   heartbeats raise PeerLost naming the silent peer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "net/mixer.h"

namespace tether::net {

// Partner of `node` in `round` for `nodes` nodes, or -1 (bye / alone).
int gossip_partner(int node, uint64_t round, int nodes);

class Gossip final : public Mixer {
 public:
  Gossip(int self, int nodes, size_t count, size_t chunk_bytes, Outbox* outbox);

  Reject check(const Header& h) const override;
  void submit(uint64_t round, std::shared_ptr<RoundBuffer> data) override;
  Reject receive(const Header& h, zmq::message_t payload) override;
  bool finished(uint64_t round) const override;
  std::vector<float> take(uint64_t round, int* partner) override;

  uint32_t chunks() const { return chunks_; }
  ChunkRange chunk(uint32_t c) const;

 private:
  struct RoundState {
    std::shared_ptr<RoundBuffer> buf;
    std::vector<zmq::message_t> received;  // [chunk], partner's snapshot
    std::vector<uint8_t> seen;             // [chunk]
    uint32_t received_count = 0;
  };
  RoundState& state(uint64_t round);

  int self_, nodes_;
  uint64_t count_, chunk_elems_;
  uint32_t chunks_;
  Outbox* outbox_;
  std::map<uint64_t, RoundState> rounds_;
};

}  // namespace tether::net
