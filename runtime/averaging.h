// Asynchronous SGD without gradient delay: the anchor + displacement
// algorithm of DESIGN.md, as a seam the trainer plugs in and tests drive alone.
//
// Per node i: local parameters x_i (behind a ParamStore: the model's arena in
// the node, a host vector in tests), the anchor x̄ (identical bits on every
// node, ring mixer), x_prev (x_i at the last round close plus every merge
// correction applied since), and the deltas of the rounds in flight.
//
//   every local step:  the trainer updates x_i
//   every H steps, round r closes:
//       Δ_i^r = x_i − x_prev ; x_prev = x_i
//       submit Δ_i^r (ring) or the snapshot x_i (gossip), with a CountSketch
//       of x_i and the largest ‖Δ‖ seen, to the mixer (non-blocking)
//       while rounds in flight > s: wait                    (idle, measured)
//       while the monitor throttles this node: wait for the next merge
//   when the mixer delivers round r (in order, applied between steps):
//       ring:   c = mean^r − Δ_i^r ; x̄ += mean^r
//       gossip: c = the pair's correction (net/gossip.h: the snapshot is
//               completed with the corrections in flight, so each
//               disagreement is corrected exactly once)
//       x_i += c ; x_prev += c
//   at the end: drain; ring: x_i = x̄; gossip: one exact average (a ring
//   all-reduce of x_i), so every node ends with the same bits either way.
//
// s = 0, H = 1 is synchronous data-parallel SGD.
//
// Bounds. Ring: nodes compared as they close the same round differ by at most
//   s+1 rounds' differences, ‖x_i − x_j‖ ≤ 2(s+1)·D_max (D_max the largest
//   round delta); bound 0 ("auto") is that expression and throttles to it.
//   Gossip: the spread also carries what the schedule has not mixed yet,
//   which depends on N and the schedule, not on s alone; it has no proven
//   bound, so "auto" means no bound (distances are still estimated and
//   logged) and a configured bound is refused by the config.
//
// Coordinated cut (cluster checkpoint). request_stop() marks this node's next
//   round. Ring: when a round with a mark is applied (on every node: the mark
//   rides on the round's sketches, which every ring round waits for), every
//   node stops at the round boundary R = r + s + 1 — no node can have closed
//   round R yet, because round r is applied at the latest while closing round
//   r + s. Gossip: its rounds wait for no other node's sketch, so nodes may be
//   more than s rounds apart and a mark on one round's sketches would not be
//   seen in time; the mark starts the communicator's stop agreement instead
//   (net/communicator.h, "Coordinated cut, gossip"): every member answers with
//   its next round and promises not to close past it + s + 2 before it learns
//   R = the largest answer + s + 2, so again no node has closed round R - 1
//   before it knows R (before closing a round, a node whose promise stops it
//   waits for R, counted as idle). At R each node drains
//   every round in flight (so x_prev = x_i and nothing is in flight) and
//   stop_requested() turns true: checkpoints of one cut hold the same round R,
//   the same x̄ and each node's own x_i. Periodic checkpoints use drain() at a
//   step every node reaches (a multiple of H). Resuming starts the
//   communicator at round R and step, which every peer must share (hello).
//
// Clocked rounds (ring; DESIGN.md "Rounds by time"). Nothing above needs a
//   round to hold the same number of steps on every node: the ring averages
//   whatever Δ each node closed, the bound takes the largest round delta.
//   - round_ms: a node closes round first + k once k periods have passed on
//     the cluster's clock (at a step boundary; the first round is a start
//     barrier whose result starts the clock on every node), and a node whose
//     step outlasts the period closes the rounds its clock passed as empty
//     ones, so a slow node closes rounds with fewer steps instead of holding
//     the others to its pace.
//   - period "auto": round r carries in its sketch (kTailMergeMs, kTailStepMs,
//     runtime/monitor.h) each node's compute time per step and the service
//     time of the last merge it applied (from submit, or the round before it
//     done, to when the I/O thread completed it). Applying round r, every
//     node computes H = ⌈1.5·t_merge / t_step⌉ from the same tails: t_merge
//     the least reported merge time (the node that submitted last waited for
//     nobody; the others' times hold their wait for it, which grows with H,
//     and H fed with them rose without end), averaged over rounds, t_step
//     the least step time. The ring merges one round at a time, so the
//     merges keep up only when H steps last at least one merge; the s rounds
//     in flight absorb a merge's jitter. Every node takes that H from round
//     r + s + 1 on if it is above the H scheduled there or below 0.6 of it
//     (measurements made under an older H would flap it) — the same rule as the cut: no node has closed round
//     r + s + 1 yet (it applies r at the latest while closing r + s), so
//     every node closes every round after the same steps. A start (fresh or
//     resumed, not a join) calibrates first: its 4 rounds (numbered from its
//     first round, 0) each close at the
//     first step after the round before them is merged (nobody waits while
//     the merge time is unknown); round 1's merge is timed, round 2 carries
//     the times, and the decision holds from round 4 (round 3 closes as
//     it arrives). Round 3's sketches carry every node's step count
//     (kTailStepsHi/Lo): a node behind the most (a late start, a resume from
//     different steps) runs the difference from round 3 + s + 1 on, at most
//     H extra steps a round, after which every node closes every round after
//     the same steps. D_max is rescaled by H'/H as H changes (a round delta
//     grows with its steps; the first H from the longest calibration round),
//     so the automatic bound follows H.
//   The run ends at a common cut: a node that has run all its steps marks its
//   next round with kStopEnd and waits for its merge; when every node marked
//   that round (period "auto" after the counts evened out: all end in the
//   same round) the cut is the round after it. Otherwise, until the cut
//   (s + 1 rounds after the first mark), it closes empty rounds (Δ = 0);
//   every node stops at the cut (ended()), nothing in flight, and takes x̄ —
//   one model, as at a normal end. A node with steps left skips them. A
//   joiner (or a resumed node) closes rounds from its own step count; only
//   the data epochs' view decisions use the step↔round map
//   (rounds_before_step), which with round_ms is each node's own: after a
//   view change, nodes that begin an epoch at different rounds may shard it
//   over different views (the skipped-samples records then estimate).
//
// Failure (ring): a member that dies is left out of a new view (net/
// communicator.h, "Membership"); the others carry on, every member's x̄ the
// same bits after the change. A node that cannot be in a view with a majority
// raises net::NoQuorum after net.quorum_wait_ms, and one the others left out
// raises net::Excluded (start it again: it joins). A node started while the
// others run joins their view: it starts from x = x̄ at the view's resume
// round, at step round·H (joined(), start_step()). Gossip: a silent peer
// surfaces as net::PeerLost (the trainer checkpoints and the node exits
// non-zero). A peer's graceful bye stops this node as if interrupted.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/communicator.h"

namespace tether {

class Model;
struct Config;

// What the trainer needs from a distributed averaging algorithm.
class Averaging {
 public:
  virtual ~Averaging() = default;
  // Called after every local step with the number of steps done so far.
  // May block: staleness bound, monitor throttle (time counted as idle).
  virtual void after_step(uint64_t steps_done) = 0;
  // Drains in-flight rounds and leaves the agreed final parameters in place
  // (after a cut or a peer's departure: this node's own, nothing averaged).
  virtual void finish() = 0;
  // Fields for the metrics record (idle_frac, rounds_in_flight, disp_norm,
  // max_pair_dist, bound, throttled, bytes_sent, bytes_recv, round).
  virtual nlohmann::json metrics() = 0;
  // x̄ for checkpoints (empty when the algorithm keeps none).
  virtual std::vector<float> anchor() const = 0;
  // Makes every round in flight land (every node must call it at the same
  // round boundary, steps_done a multiple of H): a consistent cut.
  virtual void drain() = 0;
  // Asks the cluster to stop at a common round boundary (idempotent).
  virtual void request_stop() = 0;
  // The cut is reached (or a peer left gracefully): stop as if interrupted.
  virtual bool stop_requested() const = 0;
  // The cut is reached: nothing in flight, every node at round next_round().
  virtual bool at_cut() const = 0;
  virtual std::string stop_reason() const = 0;
  // The next round to close; at a cut, the cut's round.
  virtual uint64_t next_round() const = 0;
  // The largest round delta norm any node reported (the monitor's D_max).
  virtual double max_delta() const = 0;
  // This node joined a running view: it starts at start_step() from x̄.
  virtual bool joined() const = 0;
  virtual uint64_t start_step() const = 0;
  // Clocked rounds (round_ms, period "auto"): the cut was reached because a
  // node ran all its steps. The run ended (not interrupted): every node ends
  // with x̄, a node with steps left skips them.
  virtual bool ended() const { return false; }
  // The period H of the round this node accumulates now (the configured H;
  // with period "auto", the agreed one; with round_ms, 0).
  virtual int period() const = 0;
  // Rounds this node has closed (or, for a step ahead, will have closed,
  // estimated at the current pace) before it runs step `step` (0-based), and
  // the step at which round `round` begins here: the map between steps and
  // rounds that data epochs are decided on (runtime/data_views.h). With a
  // fixed H: step / H and round · H.
  virtual uint64_t rounds_before_step(uint64_t step) const = 0;
  virtual uint64_t first_step_of_round(uint64_t round) const = 0;
};

// A change of the automatic period, as it takes effect (trainer logs it).
struct PeriodChange {
  uint64_t round = 0;            // the first round with the new period
  int from = 1, to = 1;          // H before and after
  double step_ms = 0;            // this node's measured compute per step
  double merge_ms = 0;           // this node's measured merge (service) time per round
};

// Typed options of the algorithm (the factory maps the Config onto them).
struct AveragingOptions {
  int node = 0;
  int staleness = 2;                // s
  int period = 1;                   // H (with period_auto: the starting H)
  bool period_auto = false;         // H agreed per round from the measured times (ring)
  int round_ms = 0;                 // > 0: a round closes every round_ms of wall time (ring)
  bool gossip = false;              // mixer: gossip, else ring
  double bound = 0;                 // 0: auto (ring: 2(s+1)·D_max; gossip: none)
  int sketch_buckets = 1024;
  uint64_t sketch_seed = 1;
  int peer_timeout_ms = 3000;       // the longest wait for one round
  int shutdown_timeout_ms = 10000;  // draining an interrupted run
  // Where a resumed run starts (a cut); all zero for a fresh run.
  uint64_t first_round = 0, start_step = 0;
  std::vector<float> anchor;        // x̄ at the cut (ring), empty otherwise
  double max_delta = 0;             // D_max at the cut
  // Called with x_i as this node closes each round (debug snapshots, tests).
  std::function<void(uint64_t round, const float* x, size_t count, double delta_norm)> on_close;
  // Called with x̄ after each ring round is applied (tests).
  std::function<void(uint64_t round, const float* anchor, size_t count)> on_merge;
  // Called (trainer thread) as a new automatic period takes effect.
  std::function<void(const PeriodChange&)> on_period;
  // Called (trainer thread) for each view change this node took part in.
  std::function<void(const net::ViewEvent&)> on_view;
  // Test hook: handed to the communicator (CommOptions::test_crash_at; the
  // tether binary's hidden --crash-at flag).
  std::function<bool(const char* point, uint64_t round)> test_crash_at;
  // Measuring aid: handed to the communicator (CommOptions::gossip_barrier;
  // the tether binary's hidden --gossip-barrier flag).
  bool gossip_barrier = false;
};

// The parameters x_i as the algorithm sees them: one flat float vector.
class ParamStore {
 public:
  virtual ~ParamStore() = default;
  virtual size_t count() const = 0;
  virtual void read(float* dst) = 0;         // dst = x_i (count floats)
  virtual void write(const float* src) = 0;  // x_i = src
  virtual void add(const float* c) = 0;      // x_i += c
};

// The algorithm on `comm` (constructed, not started: start() runs here and
// agrees on the initial parameters). `stop`: the process was interrupted.
std::unique_ptr<Averaging> make_overlap_averaging(AveragingOptions opts, std::unique_ptr<net::Communicator> comm,
                                                  ParamStore* params);

// The node's factory: maps the Config (cluster, algorithm, monitor, net) onto
// the options and a communicator, and the Model's arena onto a ParamStore.
// `resume` carries the cut of a checkpoint (first_round, start_step, anchor,
// max_delta), or zeros, and the caller's hooks (on_view, test_crash_at).
std::unique_ptr<Averaging> make_averaging(const Config& cfg, int node, Model& model, const AveragingOptions& resume);

// The same on a caller's ParamStore (a foreign training loop's flat buffer:
// runtime/averager.h); `params` must outlive the result.
std::unique_ptr<Averaging> make_averaging(const Config& cfg, int node, ParamStore* params,
                                          const AveragingOptions& resume);

}  // namespace tether
