// Gossip — decentralized pairwise averaging, O(1) peers per node and round,
// with rounds in flight (staleness s) corrected exactly once.
//
// Computes: in round r node i pairs with partner p = gossip_partner(i, r, N)
//   (symmetric: gossip_partner(p, r, N) == i), exchanges a snapshot m_i^r of
//   its parameters, and hands back the correction
//       c_i^r = (m_p^r − m_i^r) · ½
//   which the caller adds to its parameters. IEEE subtraction anti-commutes
//   exactly, so c_p^r = −c_i^r bit for bit: the pair's sum is conserved up to
//   the rounding of the additions into the parameters. A node without a
//   partner (a bye when N is odd, or N = 1) gets c = 0.
//
// Why the snapshot is completed (the delay correction). The caller closes
//   round r while rounds r−s..r−1 may still be in flight, so its parameters
//   x_i^{close r} lack their corrections. Exchanging x_i^{close r} as is (the
//   old rule) corrects the same disagreement once per round in flight: for
//   N = 2 the difference D obeys D(r+1) = D(r) − D(r−s), unstable for s ≥ 2
//   and marginal for s = 1. Instead round r exchanges
//       m_i^r = x_i^{close r} + Σ_{k = a_r}^{r−1} c_i^k
//   where a_r (`applied` at submit) counts the rounds whose corrections the
//   caller had already added when it closed round r. m_i^r is the state node
//   i would have had, had every earlier merge landed before the close: the
//   virtual sequence is synchronous gossip, y^{r+1} = W_r (y^r + Δ^r) with W_r
//   the pairing of round r and Δ^r the local updates of round r (updates made
//   while a merge is in flight count into a later Δ). Each disagreement is
//   corrected exactly once, whatever the merge delay, and the sum over nodes
//   is conserved. Proof sketch: x_i after applying round r equals
//   m_i^r + c_i^r + (local updates since close r) = y_i^{r+1} + those updates.
// Cost of exactness: round r can leave only once round r−1's correction is
//   known here, so the exchanges of one node form a chain (one round per
//   link latency); the trainer still runs up to s rounds ahead of the chain.
//   The ring has no such chain: its rounds pipeline.
// No global barrier (issue 16): a round is finished here once the partner's
//   snapshot has arrived; nothing else gates it (the communicator sends each
//   round's sketch to every node, but a round waits for none of them:
//   net/communicator.h, "Gossip rounds"). Nodes are then coupled only through
//   their exchanges: finishing round r needs the partner's snapshot of r,
//   which needed the partner's round r−1 finished, which needed its
//   partner's, and so on; the partner of round r met this node one schedule
//   period P earlier too (P = log2 N on a hypercube, M−1 on the round-robin,
//   at most N), so a partner's frames come at most P rounds (plus the
//   window) ahead of this node's lowest unfinished round, and any two nodes
//   are at most s + 1 + P rounds apart — more than s, so the stop cut is
//   agreed by messages rather than read off one round's sketches. The same
//   chain ties every node to one that is slow at every step: without the
//   barrier the others may run ahead of it by those few rounds (absorbing
//   its pauses), not run at their own pace (bench/gossip_straggler.py).
// Schedule: N a power of two: hypercube, p = i XOR 2^(r mod log2 N) — after
//   log2 N rounds without local change every node holds the exact average.
//   Otherwise round-robin tournament (circle method) over M = N rounded up to
//   even players, round t = r mod (M-1): player M-1 meets t, every other i
//   meets (2t - i) mod (M-1); meeting the phantom player N is a bye.
// Steps: when rounds a_r..r−1 are finished here, add their corrections to the
//   snapshot, send it to p in chunks (zero-copy); when all of p's chunks have
//   arrived, compute c^r. A correction is kept until the caller has applied
//   it and every round still to be sent was closed after that (at most the
//   communicator's window of them).
// Bytes on the wire per node and round: n * 4 sent and received (0 on a bye);
//   with a codec n * 2 (bf16) or n + 4 per chunk (int8).
// Compression (codec other than none): the snapshot goes out encoded, and the
//   correction uses the decoded bits on both sides, c_i = (dec(m_p) −
//   dec(m_i)) · ½, so it still anti-commutes exactly and the sum is still
//   conserved. Error feedback: what the encoding lost of a snapshot
//   (m_i − dec(m_i)) is kept and added to the next snapshot this node sends,
//   so over rounds the snapshots the partners see track the true ones. (A
//   view change that re-sends rounds does not rewind this residual: the
//   re-sent snapshots carry it as it stands, a bounded extra noise.)
// Views (membership): the schedule is a list of segments, each from a round
//   on over a view's sorted members (ranks are positions in that list). When
//   a view is committed with resume round R, set_view() adds the segment
//   (R, members): rounds below R keep the schedule they were sent under, and
//   an exchange with a partner that left is cancelled (a bye: c = 0, the
//   partner applies nothing either); rounds from R on are forgotten here and
//   submitted again by the communicator from the original snapshots, so no
//   snapshot ever holds a correction that was redone. Corrections are kept
//   `keep_rounds` rounds behind the next send, so that the rewound rounds can
//   be completed again.
// Peer failure without membership: the pair's round never completes; the
//   communicator's heartbeats raise PeerLost naming the silent peer. A peer
//   whose trainer stalls (heartbeats still answered): round_timeout_ms names
//   the members furthest behind by their sketches (the others wait on them
//   through their partners).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "net/codec.h"
#include "net/mixer.h"

namespace tether::net {

// Partner of `node` in `round` for `nodes` nodes, or -1 (bye / alone).
int gossip_partner(int node, uint64_t round, int nodes);

class Gossip final : public Mixer {
 public:
  // Rounds are numbered from first_round (a resumed run's cut).
  Gossip(int self, int nodes, size_t count, size_t chunk_bytes, Outbox* outbox,
         uint64_t first_round = 0, uint64_t keep_rounds = 0, Codec codec = Codec::kNone);

  // A view committed with resume round `from` (see the top of this file).
  void set_view(const std::vector<int>& members, uint64_t from);
  // This node's partner in `round` (a node id), or -1 (a bye, or cancelled).
  int partner(uint64_t round) const;

  Reject check(const Header& h) const override;
  void submit(uint64_t round, std::shared_ptr<RoundBuffer> data, uint64_t applied) override;
  Reject receive(const Header& h, zmq::message_t payload) override;
  bool finished(uint64_t round) const override;
  std::vector<float> take(uint64_t round, int* partner) override;

  uint32_t chunks() const { return chunks_; }
  ChunkRange chunk(uint32_t c) const;
  // Test hook (CommOptions::test_crash_at, "gossip-half"): asked with each
  // round whose snapshot is about to leave for a partner, when it has two
  // chunks or more; true sends the first half of them only and nothing
  // after: half_sent() then names the round (the communicator crashes).
  std::function<bool(uint64_t round)> test_half_send;
  std::optional<uint64_t> half_sent() const { return half_sent_; }
  // What the encodings lost and the next snapshot will carry (n floats; empty
  // without a codec).
  const std::vector<float>& residual() const { return residual_; }

 private:
  struct RoundState {
    std::shared_ptr<RoundBuffer> buf;      // own snapshot (completed before it is sent)
    uint64_t applied = 0;                  // a_r: corrections already in the snapshot
    bool sent = false;
    std::vector<zmq::message_t> received;  // [chunk], partner's snapshot
    std::vector<uint8_t> seen;             // [chunk]
    uint32_t received_count = 0;
  };
  RoundState& state(uint64_t round);
  // Sends the submitted rounds whose earlier corrections are all known, and
  // computes the corrections of rounds whose partner's snapshot is complete.
  void advance();
  bool send_next();     // true when round next_send_ left
  bool finish_ready();  // true when some round's correction was computed

  struct Segment {
    uint64_t from = 0;
    std::vector<int> members;  // sorted; the schedule runs over their ranks
    std::vector<int> live;     // those still in the view: others are cancelled
  };

  int self_;
  std::vector<Segment> segments_;  // by `from`, ascending
  uint64_t keep_rounds_ = 0;
  uint64_t count_, chunk_elems_;
  uint32_t chunks_;
  Outbox* outbox_;
  Codec codec_;
  std::vector<float> residual_;  // error feedback (codec only)
  std::optional<uint64_t> half_sent_;  // test_half_send fired for this round
  std::map<uint64_t, RoundState> rounds_;             // submitted or with frames, not finished
  std::map<uint64_t, std::vector<float>> corrections_;  // finished, maybe still needed
  uint64_t next_send_ = 0;       // lowest round not sent yet
  uint64_t latest_applied_ = 0;  // the largest `applied` submitted
};

}  // namespace tether::net
