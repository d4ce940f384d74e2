#include "runtime/averaging.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <utility>
#include <filesystem>
#include <fstream>
#include <optional>

#include "models/model.h"
#include "net/communicator.h"
#include "net/wire.h"
#include "observe/metrics_schema.h"
#include "runtime/config.h"
#include "runtime/keys.h"
#include "runtime/monitor.h"
#include "runtime/server_averaging.h"

namespace tether {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Coordinates per block of the round-close pass: the block's slices of the
// five vectors it touches stay in L1/L2 between the vectorized part and the
// sketch that reads x again.
constexpr size_t kCloseBlock = 2048;

// A peer's largest round delta is believed up to this multiple of this
// node's own (every node trains the same model with the same learning rate).
constexpr double kMaxDeltaClaimRatio = 1000.0;

// period "auto": the largest H, the calibration rounds of a start (each
// closes when the one before it is merged), the headroom of H steps'
// compute over one merge, and the band [kAutoKeep·H, H] within which the
// cluster keeps H (no flapping). The headroom, measured (bench/switch.sh,
// 100 Mbit/s, lenet, seeds 1-3; docs/performance.md): at 1.2 (the ring busy
// 1/1.2 of each round) steps waited 1.6 % of the steady state; at 1.5, 0.7 %
// for 0.14 points of accuracy; at 2.0, 0.5 % for 0.76 points.
constexpr int kMaxAutoPeriod = 4096;
constexpr uint64_t kCalibrationRounds = 4;
constexpr double kAutoHeadroom = 1.5, kAutoKeep = 0.6;
// Weight of the newest sample in the step and merge time averages (about 20
// steps, 10 rounds: a shared machine's step times swing by 2x).
constexpr double kStepEwma = 0.05, kMergeEwma = 0.1;
// A node that ran all its steps closes at most this many empty rounds while
// it waits for the cut (the cut comes s + 1 rounds after its mark).
constexpr int kMaxEndRounds = 1 << 16;

// One block of the round close: delta = x − x_prev, x_prev = x; adds Σ delta²
// and Σ (x − anchor)² to *dn and *disp. 16 float lanes (vectorized), folded
// into doubles once per block.
__attribute__((target_clones("avx512f", "avx2", "default"))) void close_block(
    const float* __restrict x, float* __restrict x_prev, const float* __restrict anchor,
    float* __restrict delta, size_t n, double* dn, double* disp) {
  constexpr size_t kLanes = 16;
  float sd[kLanes] = {}, sp[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {   // whole groups of 16
    for (size_t l = 0; l < kLanes; ++l) {  // l over the lanes
      const float xv = x[i + l];
      const float d = xv - x_prev[i + l];
      const float p = xv - anchor[i + l];
      delta[i + l] = d;
      x_prev[i + l] = xv;
      sd[l] += d * d;
      sp[l] += p * p;
    }
  }
  double a = 0, b = 0;
  for (; i < n; ++i) {   // the tail, < 16 coordinates
    const float d = x[i] - x_prev[i];
    const float p = x[i] - anchor[i];
    delta[i] = d;
    x_prev[i] = x[i];
    a += double(d) * double(d);
    b += double(p) * double(p);
  }
  for (size_t l = 0; l < kLanes; ++l) {
    a += double(sd[l]);
    b += double(sp[l]);
  }
  *dn += a;
  *disp += b;
}

// A ring merge: c = mean − c (the correction, in place), x_prev += c,
// anchor += mean.
__attribute__((target_clones("avx512f", "avx2", "default"))) void merge_pass(
    const float* __restrict mean, float* __restrict c, float* __restrict x_prev, float* __restrict anchor,
    size_t n) {
  for (size_t i = 0; i < n; ++i) {   // i < n: every vector spans the arena
    const float ci = mean[i] - c[i];
    c[i] = ci;
    x_prev[i] += ci;
    anchor[i] += mean[i];
  }
}

class OverlapAveraging : public Averaging {
 public:
  // `owned`: the store, when this object owns it (the node's model arena).
  OverlapAveraging(AveragingOptions o, std::unique_ptr<net::Communicator> comm, ParamStore* params,
                   std::unique_ptr<ParamStore> owned = nullptr)
      : o_(std::move(o)),
        owned_params_(std::move(owned)),
        params_(params),
        dim_(params->count()),
        sketch_(params->count(), o_.sketch_buckets, o_.sketch_seed ^ 0x5ce7c4ull),
        comm_(std::move(comm)) {
    // Agree on the initial parameters: a fresh run takes the lowest id's bits
    // everywhere; a resumed one keeps every node's own (and its anchor).
    x_.resize(dim_);
    params_->read(x_.data());
    comm_->start(x_.data(), x_.size(), !o_.gossip && o_.anchor.size() == dim_ ? o_.anchor : std::vector<float>());
    params_->write(x_.data());
    x_prev_ = x_;
    anchor_ = o_.anchor.size() == dim_ ? std::move(o_.anchor) : x_;
    o_.anchor = std::vector<float>();   // a resumed run's x̄: the communicator has its own copy
    next_round_ = o_.first_round;
    start_step_ = o_.start_step;
    if (comm_->joined()) {   // x = x̄ at the view's resume round
      anchor_ = x_;
      next_round_ = comm_->first_round();
      // Clocked rounds: steps are each node's own; the joiner keeps its count.
      if (!clocked()) start_step_ = next_round_ * uint64_t(o_.period);
    }
    period_ = o_.period;
    closes_base_ = next_round_;
    steps_done_ = last_close_step_ = start_step_;
    report_views();
    max_delta_all_ = max_delta_local_ = o_.max_delta;
    bound_ = o_.bound;   // 0 (auto) until the first merge reports round deltas
    start_ = last_metrics_ = last_exit_ = now_s();
  }

  ~OverlapAveraging() override {
    try {
      // Not finished: the trainer is failing; the bye tells peers so.
      if (comm_ && !finished_) comm_->stop(200, true);
    } catch (...) {
      // Destructors must not throw; the run already reported its failure.
    }
  }

  void after_step(uint64_t steps_done) override {
    // The time since this call last returned is one step's compute.
    const double t = now_s();
    // The mean while few steps are timed, then a moving average; the first
    // step (cold caches, allocations) is left out.
    if (steps_timed_++ > 0) step_s_ += (t - last_exit_ - step_s_) * std::max(kStepEwma, 1.0 / double(steps_timed_ - 1));
    steps_done_ = steps_done;
    if (peer_left_ || cut_reached_) return;   // the run is ending: no more rounds
    try {
      apply_finished();
      if (round_due(steps_done, t)) {
        if (o_.gossip) gossip_before_close();   // gossip's stop agreement (not clocked: ring only)
        close_round();
        // round_ms: the first round is a start barrier (its result starts the
        // clock); a node that started early does not train on alone.
        if (o_.round_ms > 0 && next_round_ == closes_base_ + 1) drain();
        check_cut();
        // round_ms: a node whose step outlasts the period closes the rounds
        // its clock has passed meanwhile as empty ones (Δ = 0), so that it
        // keeps the cluster's pace instead of holding every round to its
        // step (at most s + 1 per step; the rest at the next step).
        for (int k = 0; o_.round_ms > 0 && k <= o_.staleness && !cut_reached_ && round_due(steps_done, now_s()); ++k) {
          close_round();
          check_cut();
        }
      }
    } catch (const net::PeerLost& e) {
      note_peer_left(e);
    }
    last_exit_ = now_s();
  }

  void drain() override {
    while (!in_flight_.empty()) wait_one(o_.peer_timeout_ms);
  }

  void request_stop() override { stop_wanted_ = true; }
  bool stop_requested() const override { return peer_left_ || cut_reached_; }
  bool at_cut() const override { return cut_reached_; }
  std::string stop_reason() const override { return stop_why_; }
  uint64_t next_round() const override { return next_round_; }
  double max_delta() const override { return std::max(max_delta_all_, max_delta_local_); }
  bool joined() const override { return comm_->joined(); }
  uint64_t start_step() const override { return start_step_; }
  bool ended() const override { return cut_reached_ && cut_is_end_; }
  int period() const override { return o_.round_ms > 0 ? 0 : period_; }

  uint64_t rounds_before_step(uint64_t step) const override {
    if (!clocked()) return step / uint64_t(o_.period);
    // closes_ holds the steps done at each close (non-decreasing).
    const auto closed = uint64_t(std::upper_bound(closes_.begin(), closes_.end(), step) - closes_.begin());
    if (step <= steps_done_) return closes_base_ + closed;
    return closes_base_ + closed + (step - last_close_step_) / steps_per_round();
  }

  uint64_t first_step_of_round(uint64_t round) const override {
    if (!clocked()) return round * uint64_t(o_.period);
    if (round <= closes_base_) return start_step_;
    const uint64_t k = round - closes_base_ - 1;   // the close that begins it
    if (k < closes_.size()) return closes_[size_t(k)];
    return last_close_step_ + (round - next_round_) * steps_per_round();
  }

  void finish() override {
    // Clocked rounds: the run ends at a common cut (this node's mark, or an
    // earlier one's): every node then holds the same rounds.
    if (clocked() && !peer_left_ && !cut_reached_) run_to_end_cut();
    const bool interrupted = peer_left_ || (cut_reached_ && !cut_is_end_);
    // A partial round holds local updates that must be merged too. Every
    // node runs the same number of steps, so all close the same rounds.
    if (!interrupted && !clocked() && steps_done_ % uint64_t(o_.period) != 0) close_round_submit();
    double deadline = now_s() + o_.shutdown_timeout_ms / 1000.0;
    while (!in_flight_.empty()) {
      if (interrupted && now_s() > deadline) {
        std::fprintf(stderr, "[node %d] stopping with %zu round(s) unmerged (deadline %d ms)\n", o_.node,
                     in_flight_.size(), o_.shutdown_timeout_ms);
        break;
      }
      try {
        wait_one(interrupted ? 100 : o_.peer_timeout_ms);
      } catch (const net::PeerLost& e) {
        if (!interrupted) throw;
        note_peer_left(e);   // a peer stopped too: what is in flight cannot complete
        break;
      }
    }
    if (!interrupted) {
      if (o_.gossip) exact_average();               // one model for the run
      else params_->write(anchor_.data());           // identical bits on every node
    }
    comm_->stop(o_.shutdown_timeout_ms);
    report_views();   // a view committed in the drain (a stopping node handing over the last rounds) is recorded too
    auto st = comm_->stats();
    bytes_sent_ = st.bytes_sent;
    bytes_recv_ = st.bytes_recv;
    tensor_bytes_sent_ = st.tensor_bytes_sent;
    tensor_raw_bytes_sent_ = st.tensor_raw_bytes_sent;
    msgs_rejected_ = st.msgs_rejected;
    handshakes_ = st.handshake_failed_by_reason;
    finished_ = true;
  }

  nlohmann::json metrics() override {
    double t = now_s();
    double span = std::max(1e-9, t - last_metrics_);
    double idle_frac = (idle_s_ - idle_at_last_) / span;
    last_metrics_ = t;
    idle_at_last_ = idle_s_;
    if (!finished_) {
      auto st = comm_->stats();
      bytes_sent_ = st.bytes_sent;
      bytes_recv_ = st.bytes_recv;
      tensor_bytes_sent_ = st.tensor_bytes_sent;
      tensor_raw_bytes_sent_ = st.tensor_raw_bytes_sent;
      msgs_rejected_ = st.msgs_rejected;
      handshakes_ = st.handshake_failed_by_reason;
    }
    uint64_t handshakes_failed = 0;
    for (const auto& [reason, n] : handshakes_) handshakes_failed += n;
    return {{field::kSecurity, comm_->curve() ? "curve" : "none"},
            {field::kHandshakesFailed, handshakes_failed},
            {field::kHandshakeFailedBy, handshakes_},{field::kRound, next_round_},
            {field::kIdleFrac, idle_frac},
            {field::kPeriod, period()},
            {field::kPeriodChanges, period_changes_},
            {field::kIdleFracTotal, idle_s_ / std::max(1e-9, t - start_)},
            {field::kRoundsInFlight, in_flight_.size()},
            {field::kDispNorm, disp_norm_},
            {field::kMaxPairDist, max_pair_dist_},
            {field::kMaxPairDistRun, max_pair_dist_run_},
            {field::kSketchAgeRounds, sketch_age_},
            {field::kSketchAgeRoundsMax, sketch_age_max_},
            {field::kBound, bound_},
            {field::kThrottled, throttled_now_},
            {field::kThrottleCount, throttle_count_},
            {field::kMaxDeltaNorm, max_delta_all_},
            {field::kBytesSent, bytes_sent_},
            {field::kBytesRecv, bytes_recv_},
            {field::kTensorBytesSent, tensor_bytes_sent_},
            {field::kTensorRawBytesSent, tensor_raw_bytes_sent_},
            {field::kMsgsRejected, msgs_rejected_},
            {field::kDeltaClaimsRefused, claims_refused_},
            {field::kViewChanges, views_}};
  }

  std::vector<float> anchor() const override { return o_.gossip ? std::vector<float>() : anchor_; }

 private:
  // A graceful departure (the peer was stopped and said bye) stops this
  // node as if interrupted; a silent peer stays a failure (PeerLost).
  void note_peer_left(const net::PeerLost& e) {
    if (!e.graceful) throw e;
    if (!peer_left_) std::fprintf(stderr, "[node %d] %s: stopping\n", o_.node, e.what());
    peer_left_ = true;
    stop_why_ = e.what();
  }

  // Gossip's stop agreement (net/communicator.h, "Coordinated cut, gossip"):
  // learns the cut round, and waits (idle) while closing the next round
  // would break this node's promise before the cut is known.
  void gossip_before_close() {
    if (!cut_round_) cut_round_ = comm_->cut_round();
    const double deadline = now_s() + 2.0 * o_.peer_timeout_ms / 1000.0 + 60.0;
    while (!cut_round_) {   // bounded: a failure raises from the communicator; the deadline is a backstop
      const double t0 = now_s();
      const bool allowed = comm_->wait_close_allowed(next_round_, o_.peer_timeout_ms);
      idle_s_ += now_s() - t0;
      cut_round_ = comm_->cut_round();
      if (allowed) break;
      if (now_s() > deadline)
        throw std::runtime_error("stop agreement: no cut round decided while round " + std::to_string(next_round_) +
                                 " waits for it");
    }
    if (cut_round_ && next_round_ >= *cut_round_)   // the promise makes this impossible
      throw std::runtime_error("stop agreement: cut round " + std::to_string(*cut_round_) + " learnt at round " +
                               std::to_string(next_round_) + ", already past it");
  }

  struct InFlight {
    uint64_t round;
    double at = 0;                  // when it was submitted (the merge's service time)
  };

  bool clocked() const { return o_.round_ms > 0 || o_.period_auto; }

  // Whether the round this node accumulates closes after `steps_done` steps.
  bool round_due(uint64_t steps_done, double t) const {
    // On one clock: this node's first round closes at its first step, and
    // its result (waited for: a start barrier), which reaches every node
    // within a link's latency, starts the clock; round closes_base_ + k closes k periods later. The nodes
    // close each round at about the same time whenever each started (a
    // start-up skew would otherwise leave an early node a round per step
    // ahead, waiting on every one), and none drifts (a schedule from each
    // node's last close would lag by up to a step per round on a slow one).
    if (o_.round_ms > 0) {
      if (next_round_ == closes_base_) return true;
      if (clock_base_ < 0) return false;   // the first round has not come back yet
      return (t - clock_base_) * 1000.0 >= double(next_round_ - closes_base_) * double(o_.round_ms);
    }
    if (o_.period_auto) {
      // Calibration: a round closes at the first step boundary at which the
      // one before it is merged (nothing waits; its length is this node's).
      if (calibrating(next_round_)) return in_flight_.empty();
      return steps_done - last_close_step_ >= uint64_t(period_) + catch_up_now();
    }
    return steps_done % uint64_t(o_.period) == 0;
  }

  // Steps per round at this node's pace (the rounds it closed, or H).
  uint64_t steps_per_round() const {
    if (o_.round_ms == 0) return uint64_t(std::max(1, period_));
    const uint64_t rounds = next_round_ - closes_base_, steps = last_close_step_ - start_step_;
    return rounds > 0 && steps >= rounds ? steps / rounds : 1;
  }

  void check_cut() {
    if (!cut_round_ || next_round_ < *cut_round_) return;
    drain();
    cut_reached_ = true;
    stop_why_ = cut_is_end_ ? "a node ran all its steps: the run ends at round " + std::to_string(next_round_) +
                                  " (this node at step " + std::to_string(steps_done_) + ")"
                            : "a node was interrupted: every node stops at round " + std::to_string(next_round_) +
                                  " (step " + std::to_string(steps_done_) + ")";
  }

  // Clocked rounds, this node has run all its steps: mark the next round
  // kStopEnd and close empty rounds (Δ = 0) until the cut (bounded: it comes
  // s + 1 rounds after the first mark any node sent).
  void run_to_end_cut() {
    end_wanted_ = stop_wanted_ = true;
    try {
      apply_finished();
      // The marked round, and its merge waited for: when every node marked
      // that same round (the same steps per round, the same steps to run),
      // the cut is the round after it and no empty round is needed.
      close_round();
      drain();
      check_cut();
      for (int k = 0; k < kMaxEndRounds && !cut_reached_; ++k) {   // bounded: see above
        close_round();
        check_cut();
      }
    } catch (const net::PeerLost& e) {
      note_peer_left(e);
      return;
    }
    if (!cut_reached_) throw std::runtime_error("the run's end: no cut after " + std::to_string(kMaxEndRounds) + " rounds");
  }

  // period "auto", a fresh or resumed start (not a joiner): the first
  // kCalibrationRounds rounds each close at the first step boundary after
  // the round before them is merged, so no node waits while the merge time
  // is unknown (a fresh run's rounds at H = 1 would queue merges and wait on
  // them). The first round's merge holds the start-up skew and is not
  // timed; the next one's is; the third round carries the first proposals;
  // the fourth closes as the third's result brings the decision, which
  // holds from the round after it: no node closes that round before
  // applying it. The last calibration round's sketches carry each node's
  // step count, which evens the counts out (even_out_steps).
  bool calibrating(uint64_t round) const {
    return o_.period_auto && !comm_->joined() && round >= o_.first_round &&
           round < o_.first_round + kCalibrationRounds;
  }

  // The round from which a decision made on round r's sketches holds: no
  // node has closed it before applying round r.
  uint64_t decision_takes_effect(uint64_t r) const {
    return calibrating(r + 1) ? r + 2 : r + uint64_t(o_.staleness) + 1;
  }

  // period "auto", applying round r: the H its sketches call for, 0 before
  // any node has timed a merge. Every node reads the same tails in the same
  // order, so every node computes the same H.
  //  - The merge: the least service time any node reported (the node that
  //    submitted last waited for nobody; the others' times hold their wait
  //    for it, which grows with H as nodes drift within the window, and a
  //    rule fed with them raises H without end), averaged over the rounds.
  //  - The step: the least step time reported (the fastest node makes
  //    rounds fastest).
  //  - The ring merges one round at a time, so merges keep up with the
  //    rounds only when a round's compute (H steps) lasts at least one
  //    merge; the s rounds in flight then absorb a merge's jitter. (H·s
  //    steps per merge, a merge fitting in s rounds, lets the merges fall
  //    behind by 1 − 1/s of them and every node then waits at the window.)
  int period_called_for(const net::RoundResult& res) {
    const int b = sketch_.buckets();
    double merge_ms = 0, step_ms = 0;
    for (const auto& [id, sk] : res.sketches) {
      const double m = sketch_tail(sk, b, kTailMergeMs), t = sketch_tail(sk, b, kTailStepMs);
      if (std::isfinite(m) && m > 0 && (merge_ms == 0 || m < merge_ms)) merge_ms = m;
      if (std::isfinite(t) && t > 0 && (step_ms == 0 || t < step_ms)) step_ms = t;
    }
    if (merge_ms > 0) {
      ++cluster_merges_;
      cluster_merge_ms_ += (merge_ms - cluster_merge_ms_) * std::max(kMergeEwma, 1.0 / double(cluster_merges_));
    }
    if (step_ms > 0) cluster_step_ms_ = step_ms;   // each node's is a moving average already
    if (cluster_merge_ms_ <= 0 || cluster_step_ms_ <= 0) return 0;
    const double h = kAutoHeadroom * cluster_merge_ms_ / cluster_step_ms_;
    return std::max(1, int(std::min(double(kMaxAutoPeriod), std::ceil(h))));
  }

  // period "auto", applying the last calibration round: its sketches carry
  // every node's steps at its close. A node behind the most runs the
  // difference as extra steps from round r + s + 1 on (the first round no
  // node has closed yet), at most H more per round (a round of 2H steps at
  // the most: no node goes quiet for long), so that from there every node
  // closes every round after the same steps and all mark the same round at
  // the end. (A resumed cluster whose nodes stopped at different steps
  // evens out the same way.)
  void even_out_steps(const net::RoundResult& res) {
    const int b = sketch_.buckets();
    uint64_t most = 0, mine = 0;
    bool have_mine = false;
    for (const auto& [id, sk] : res.sketches) {
      const float hi = sketch_tail(sk, b, kTailStepsHi, -1.0f), lo = sketch_tail(sk, b, kTailStepsLo, -1.0f);
      if (!(hi >= 0 && lo >= 0 && hi < 16777216.0f && lo < 16777216.0f)) return;   // not a count
      const uint64_t steps = (uint64_t(hi) << 24) | uint64_t(lo);
      most = std::max(most, steps);
      if (id == o_.node) mine = steps, have_mine = true;
    }
    if (!have_mine) return;
    catch_up_round_ = res.round + uint64_t(o_.staleness) + 1;
    catch_up_steps_ = most - mine;
  }

  // The extra steps of the round this node accumulates (even_out_steps).
  uint64_t catch_up_now() const {
    return next_round_ >= catch_up_round_ ? std::min(catch_up_steps_, uint64_t(std::max(1, period_))) : 0;
  }

  // The period scheduled for `round` (changes decided but not yet in effect).
  int scheduled_period(uint64_t round) const {
    int h = period_;
    for (const auto& [from, value] : period_from_) if (from <= round) h = value;
    return h;
  }

  // The round about to be accumulated is next_round_: take the period
  // decided for it.
  void advance_period() {
    while (!period_from_.empty() && period_from_.begin()->first <= next_round_) {
      const int to = period_from_.begin()->second;
      period_from_.erase(period_from_.begin());
      // A round delta grows with its steps: the bound follows H (after a
      // calibration, from the longest calibration round this node closed).
      const uint64_t calibrated = std::exchange(calib_steps_max_, 0);
      if (to == period_) continue;
      PeriodChange c;
      c.round = next_round_;
      c.from = period_;
      c.to = to;
      c.step_ms = cluster_step_ms_;
      c.merge_ms = cluster_merge_ms_;
      const double scale = double(to) / (calibrated > 0 ? double(calibrated) : double(period_));
      max_delta_all_ *= scale;
      max_delta_local_ *= scale;
      period_ = to;
      ++period_changes_;
      if (o_.on_period) o_.on_period(c);
    }
  }

  void close_round() {
    close_round_submit();
    // Staleness bound: at most s rounds stay in flight while computing.
    // The monitor may lower that to k < s (throttle): with k rounds in
    // flight two nodes closing the same round differ by at most k+1 rounds'
    // differences, so 2(k+1)·D_max must stay within the bound; and a node
    // whose estimated distance to a peer already exceeds the bound waits
    // for every merge (k = 0) before stepping again. Gossip has no bound.
    size_t allowed = size_t(o_.staleness);
    if (o_.bound > 0 && !o_.gossip) {
      double d = std::max(max_delta_all_, max_delta_local_);
      while (allowed > 0 && staleness_bound(int(allowed), d) > o_.bound) --allowed;
    }
    if (throttled_) allowed = 0;
    if (allowed < size_t(o_.staleness) && in_flight_.size() > allowed) {
      ++throttle_count_;
      throttled_now_ = true;
      if (throttle_count_ == 1 || throttle_count_ % 100 == 0) {
        std::fprintf(stderr,
                     "[node %d] throttled at round %llu (%llu times so far): %zu round(s) in flight allowed, "
                     "estimated distance %.4g to node %d, bound %.4g, largest round delta %.4g\n",
                     o_.node, static_cast<unsigned long long>(next_round_ - 1),
                     static_cast<unsigned long long>(throttle_count_), allowed, last_self_dist_, last_self_peer_,
                     bound_, std::max(max_delta_all_, max_delta_local_));
      }
    } else {
      throttled_now_ = false;
    }
    if (in_flight_.size() > allowed && o_.test_crash_at && o_.test_crash_at("window", in_flight_.front().round))
      comm_->crash("window");   // test hook: dies as it would wait (the wait below raises TestCrash)
    while (in_flight_.size() > allowed) wait_one(o_.peer_timeout_ms);
    if (o_.period_auto) advance_period();
  }

  void close_round_submit() {
    params_->read(x_.data());
    // One pass over the arena, block by block: the round's delta, its norm,
    // the displacement from the anchor, x_prev, and the CountSketch of x_i.
    std::vector<float> delta = take_buffer();
    std::vector<double> acc(size_t(sketch_.buckets()), 0.0);
    double dn = 0, disp = 0;
    for (size_t b = 0; b < dim_; b += kCloseBlock) {   // b over the blocks
      const size_t n = std::min(kCloseBlock, dim_ - b);
      close_block(x_.data() + b, x_prev_.data() + b, anchor_.data() + b, delta.data() + b, n, &dn, &disp);
      sketch_.accumulate(x_.data() + b, b, n, acc.data());
    }
    const double dnorm = std::sqrt(dn);
    max_delta_local_ = std::max(max_delta_local_, dnorm);
    if (!o_.gossip) disp_norm_ = std::sqrt(disp);
    std::vector<float> sk(acc.size() + kSketchTail);
    for (size_t b = 0; b < acc.size(); ++b) sk[b] = float(acc[b]);
    const size_t tail = acc.size();
    sk[tail + kTailMaxDelta] = float(max_delta_local_);   // peers derive the bound from it
    sk[tail + kTailMergeMs] = float(o_.period_auto ? last_merge_s_ * 1000.0 : 0.0);
    sk[tail + kTailStepMs] = float(o_.period_auto ? step_s_ * 1000.0 : 0.0);
    sk[tail + kTailStepsHi] = float(steps_done_ >> 24);
    sk[tail + kTailStepsLo] = float(steps_done_ & 0xffffffu);
    if (o_.on_close) o_.on_close(next_round_, x_.data(), dim_, dnorm);
    uint64_t r = next_round_++;
    net::RoundFlags flags;
    flags.stop = stop_wanted_ && !stop_sent_;
    stop_sent_ = stop_sent_ || flags.stop;
    if (flags.stop) sk[tail + kTailStop] = end_wanted_ ? kStopEnd : kStopInterrupt;
    if (clocked()) closes_.push_back(steps_done_);
    if (calibrating(r)) calib_steps_max_ = std::max(calib_steps_max_, steps_done_ - last_close_step_);
    if (o_.period_auto && r >= catch_up_round_) {   // the extra steps this round ran
      const uint64_t ran = steps_done_ - last_close_step_;
      catch_up_steps_ -= std::min(catch_up_steps_, ran > uint64_t(period_) ? ran - uint64_t(period_) : 0);
    }
    last_close_step_ = steps_done_;
    // The ring only reads Δ and hands it back with the round's result
    // (RoundResult::submitted), where it becomes the correction: no copy.
    // Gossip works on the snapshot x_i in place: a copy of x_.
    if (o_.gossip) {
      std::memcpy(delta.data(), x_.data(), dim_ * sizeof(float));
    }
    comm_->submit(r, std::move(delta), std::move(sk), flags);
    in_flight_.push_back({r, now_s()});
  }

  // Gossip's closing average: one ring all-reduce of x_i; the mean has the
  // same bits on every node (and, the sum being conserved, is the average).
  void exact_average() {
    params_->read(x_.data());
    net::RoundFlags flags;
    flags.exact = true;
    const uint64_t r = next_round_++;
    comm_->submit(r, x_, std::vector<float>(size_t(sketch_.buckets()) + kSketchTail, 0.0f), flags);
    std::optional<net::RoundResult> res;
    const double deadline = now_s() + o_.peer_timeout_ms / 1000.0 + 60.0;
    while (!res) {   // bounded: a silent peer raises PeerLost; the deadline is a backstop
      if (now_s() > deadline) throw std::runtime_error("closing average (round " + std::to_string(r) + ") did not finish");
      res = comm_->wait(o_.peer_timeout_ms);
    }
    if (res->round != r || !res->exact || !res->mixed || res->mixed->size() != dim_)
      throw std::runtime_error("closing average: mixer delivered round " + std::to_string(res->round));
    params_->write(res->mixed->data());
  }

  // Arena-sized float vectors are recycled (a ring round's Δ, back as its
  // correction; gossip's snapshots and corrections): a fresh one per round
  // would be zero-filled and faulted in. Ring results go back to the
  // communicator, which keeps them for a while (net::RoundResult::mixed).
  std::vector<float> take_buffer() {
    if (spare_.empty()) return std::vector<float>(dim_);
    std::vector<float> v = std::move(spare_.back());
    spare_.pop_back();
    return v;
  }
  void recycle(std::vector<float>&& v) {
    if (v.size() == dim_ && spare_.size() < size_t(o_.staleness) + 4) spare_.push_back(std::move(v));
  }

  void wait_one(int timeout_ms) {
    double t0 = now_s();
    std::optional<net::RoundResult> res = comm_->wait(timeout_ms);
    idle_s_ += now_s() - t0;
    if (res) apply(*res);
    report_views();
  }

  void apply_finished() {
    while (auto res = comm_->poll()) apply(*res);
    report_views();
  }

  void report_views() {
    for (const net::ViewEvent& e : comm_->take_events()) {
      ++views_;
      if (o_.on_view) o_.on_view(e);
    }
  }

  void apply(net::RoundResult& res) {
    if (in_flight_.empty() || in_flight_.front().round != res.round) {
      throw std::runtime_error("mixer delivered round " + std::to_string(res.round) + " but round " +
                               (in_flight_.empty() ? std::string("none") : std::to_string(in_flight_.front().round)) +
                               " is next");
    }
    const size_t got = res.mixed ? res.mixed->size() : 0;
    if (got != dim_) {
      throw std::runtime_error("mixer delivered " + std::to_string(got) + " values for round " +
                               std::to_string(res.round) + ", expected " + std::to_string(dim_));
    }
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    {
      // The merge's service time: from when the ring could start on this
      // round here (submitted, and the round before it done) to its result.
      const double done = res.done_s > 0 ? res.done_s : now_s();   // not when this node looked
      const double took = done - std::max(f.at, last_merge_done_);
      last_merge_done_ = done;
      if (f.round == closes_base_) clock_base_ = done;   // round_ms: the clock starts
      if (!(o_.period_auto && f.round == o_.first_round && !comm_->joined()))   // not the start-up skew
        last_merge_s_ = took;
    }
    if (o_.gossip) {
      // res.mixed is the correction itself (net/gossip.h).
      const float* m = res.mixed->data();
      for (size_t i = 0; i < dim_; ++i) x_prev_[i] += m[i];   // i < dim_: the arena
      params_->add(m);
      recycle(net::take_storage(res.mixed));
    } else {
      if (res.submitted.size() != dim_)
        throw std::runtime_error("mixer returned round " + std::to_string(res.round) + " without its submitted delta");
      std::vector<float>& c = res.submitted;   // Δ as submitted, reused as the correction
      merge_pass(res.mixed->data(), c.data(), x_prev_.data(), anchor_.data(), dim_);
      params_->add(c.data());
      recycle(std::move(c));
      res.mixed.reset();   // the communicator keeps it for a while, then reuses it
      if (o_.on_merge) o_.on_merge(res.round, anchor_.data(), dim_);
    }
    if (res.stop_requested && !cut_round_) {
      // Every node applies this round with the same mark: the same cut. It
      // ends the run when every mark of the round says so (kStopEnd). When
      // every node marked this round as the last of its steps, none closes
      // another (run_to_end_cut waits for it first): the cut is the next
      // round; otherwise s + 1 rounds on (a node may have closed s more).
      float why = 0;
      bool all_end = !res.sketches.empty();
      for (const auto& [id, sk] : res.sketches) {
        const float k = sketch_tail(sk, sketch_.buckets(), kTailStop);
        why = std::max(why, k);
        all_end = all_end && k == kStopEnd;
      }
      cut_is_end_ = why == kStopEnd;
      cut_round_ = res.round + (all_end ? 1 : uint64_t(o_.staleness) + 1);
    }
    if (o_.period_auto && !comm_->joined() && res.round + 1 == o_.first_round + kCalibrationRounds) even_out_steps(res);
    if (o_.period_auto) {
      // Every node takes the H this round calls for from round r + s + 1
      // on (decision_takes_effect): no node has closed that round yet.
      // H grows at once and shrinks only below kAutoKeep of the H already
      // scheduled (measurements made under an older H would flap it), on
      // the same sketches and schedule everywhere: the same decision.
      const int h = period_called_for(res);
      const uint64_t from = decision_takes_effect(res.round);
      const int cur = scheduled_period(from);
      if (h >= 1 && (h > cur || double(h) < kAutoKeep * double(cur))) period_from_[from] = h;
    }
    // Monitor: the largest round delta any node reported bounds the distance.
    // A peer's claim feeds the bound of every node, so it is taken only when
    // plausible: finite, >= 0 and at most kMaxDeltaClaimRatio times this
    // node's own largest round delta (the same model, data and learning rate
    // on every node); others are refused and counted.
    for (const auto& [id, sk] : res.sketches) {
      if (sk.size() <= size_t(sketch_.buckets()) || id == o_.node) continue;
      const double claim = double(sketch_tail(sk, sketch_.buckets(), kTailMaxDelta));
      const bool plausible = std::isfinite(claim) && claim >= 0 &&
                             (max_delta_local_ <= 0 || claim <= kMaxDeltaClaimRatio * max_delta_local_);
      if (plausible) {
        max_delta_all_ = std::max(max_delta_all_, claim);
      } else {
        if (claims_refused_++ == 0)
          std::fprintf(stderr, "[node %d] refused node %d's largest round delta %.4g at round %llu (own %.4g): "
                       "not finite, negative or over %.0fx this node's\n", o_.node, id, claim,
                       static_cast<unsigned long long>(res.round), max_delta_local_, kMaxDeltaClaimRatio);
      }
    }
    max_delta_all_ = std::max(max_delta_all_, max_delta_local_);
    const double auto_bound = o_.gossip ? 0.0 : staleness_bound(o_.staleness, max_delta_all_);
    bound_ = o_.bound > 0 ? o_.bound : auto_bound;
    // Gossip: the sketches are the latest that arrived, of this round or
    // earlier ones (net/communicator.h); the oldest one's age goes with the
    // estimate.
    uint64_t oldest = res.round;
    for (const auto& [id, r] : res.sketch_rounds) oldest = std::min(oldest, r);
    sketch_age_ = res.round - oldest;
    sketch_age_max_ = std::max(sketch_age_max_, sketch_age_);
    PairEstimate e = estimate_distances(res.sketches, sketch_.buckets(), o_.node);
    max_pair_dist_ = e.max_pair;
    max_pair_dist_run_ = std::max(max_pair_dist_run_, e.max_pair);
    last_self_dist_ = e.max_self;
    last_self_peer_ = e.self_peer;
    throttled_ = bound_ > 0 && e.max_self > bound_;
  }

  AveragingOptions o_;
  std::unique_ptr<ParamStore> owned_params_;
  ParamStore* params_;
  size_t dim_;
  CountSketch sketch_;
  std::unique_ptr<net::Communicator> comm_;
  std::vector<float> x_, x_prev_, anchor_;
  std::deque<InFlight> in_flight_;
  std::vector<std::vector<float>> spare_;   // recycled arena-sized vectors
  uint64_t next_round_ = 0, steps_done_ = 0, start_step_ = 0, views_ = 0;
  double start_ = 0, last_metrics_ = 0, idle_s_ = 0, idle_at_last_ = 0;
  double disp_norm_ = 0, max_pair_dist_ = 0, max_pair_dist_run_ = 0, bound_ = 0;
  double max_delta_local_ = 0, max_delta_all_ = 0, last_self_dist_ = 0;
  int last_self_peer_ = -1;
  bool throttled_ = false, throttled_now_ = false, finished_ = false, peer_left_ = false;
  bool stop_wanted_ = false, stop_sent_ = false, cut_reached_ = false;
  bool end_wanted_ = false, cut_is_end_ = false;
  // Clocked rounds: the period in effect, changes decided for later rounds,
  // the steps done at each close from round closes_base_ on, and the
  // measured times (seconds: compute per step, the merge's service time).
  int period_ = 1;
  std::map<uint64_t, int> period_from_;
  uint64_t closes_base_ = 0, last_close_step_ = 0, period_changes_ = 0;
  std::vector<uint64_t> closes_;
  // period "auto": the steps this node is behind the cluster, run from
  // round catch_up_round_ on (even_out_steps), and the longest calibration
  // round this node closed.
  uint64_t catch_up_round_ = UINT64_MAX, catch_up_steps_ = 0, calib_steps_max_ = 0;
  double clock_base_ = -1, last_exit_ = 0, step_s_ = 0, last_merge_s_ = 0, last_merge_done_ = 0;
  // period "auto": the cluster's merge time (the least reported, averaged
  // over rounds), its step time (the least reported), in ms.
  double cluster_merge_ms_ = 0, cluster_step_ms_ = 0;
  uint64_t cluster_merges_ = 0;
  uint64_t steps_timed_ = 0;
  std::optional<uint64_t> cut_round_;
  uint64_t sketch_age_ = 0, sketch_age_max_ = 0;   // rounds: the oldest sketch in the last estimate, and in the run
  std::string stop_why_;
  uint64_t throttle_count_ = 0, bytes_sent_ = 0, bytes_recv_ = 0, tensor_bytes_sent_ = 0, tensor_raw_bytes_sent_ = 0, msgs_rejected_ = 0, claims_refused_ = 0;
  std::map<std::string, uint64_t> handshakes_;   // connections refused at the handshake, by reason
};

// x_i is the model's arena in backend memory; corrections go through a
// device buffer.
class ModelParams : public ParamStore {
 public:
  explicit ModelParams(Model& m) : model_(m), correction_(m.backend(), m.param_count()) {}
  size_t count() const override { return model_.param_count(); }
  void read(float* dst) override { model_.backend()->download(dst, model_.params(), count() * sizeof(float)); }
  void write(const float* src) override { model_.backend()->upload(model_.params(), src, count() * sizeof(float)); }
  void add(const float* c) override {
    Backend* be = model_.backend();
    be->upload(correction_.get(), c, count() * sizeof(float));
    be->axpy(count(), 1.0f, correction_.get(), model_.params());
  }

 private:
  Model& model_;
  DeviceBuffer<float> correction_;
};

// Debug snapshots: x_i as this node closes a round, for exact distances.
void write_snapshot(const std::string& dir, int node, uint64_t round, const float* x, size_t count,
                    double delta_norm) {
  std::string path = dir + "/node" + std::to_string(node) + "-r" + std::to_string(round) + ".bin";
  std::ofstream out(path, std::ios::binary);
  uint64_t header[3] = {round, uint64_t(count), 0};
  std::memcpy(&header[2], &delta_norm, sizeof(double));
  out.write(reinterpret_cast<const char*>(header), sizeof header);
  out.write(reinterpret_cast<const char*>(x), std::streamsize(count * sizeof(float)));
}

}  // namespace

std::unique_ptr<Averaging> make_overlap_averaging(AveragingOptions opts, std::unique_ptr<net::Communicator> comm,
                                                  ParamStore* params) {
  return std::make_unique<OverlapAveraging>(std::move(opts), std::move(comm), params);
}

namespace {

// The factory's body: `params` is `owned` when this object owns the store.
std::unique_ptr<Averaging> make_averaging_on(const Config& cfg, int node, ParamStore* params,
                                             std::unique_ptr<ParamStore> owned, const AveragingOptions& resume) {
  AveragingOptions a;
  a.node = node;
  a.staleness = cfg.effective_staleness();
  a.period = cfg.algorithm.period;
  a.period_auto = cfg.algorithm.period_auto;
  a.round_ms = cfg.algorithm.round_ms;
  if (a.period_auto && resume.period > 0) a.period = resume.period;   // the H agreed at the cut
  a.on_period = resume.on_period;
  a.gossip = cfg.algorithm.mixer == "gossip";
  a.bound = cfg.monitor.bound;
  a.sketch_buckets = cfg.monitor.sketch_buckets;
  a.sketch_seed = cfg.train.seed;
  a.peer_timeout_ms = cfg.net.peer_timeout_ms;
  a.shutdown_timeout_ms = cfg.net.shutdown_timeout_ms;
  a.first_round = resume.first_round;
  a.start_step = resume.start_step;
  a.anchor = resume.anchor;
  a.max_delta = resume.max_delta;
  a.on_view = resume.on_view;
  a.test_crash_at = resume.test_crash_at;
  a.gossip_barrier = resume.gossip_barrier;
  if (cfg.monitor.snapshots) {
    const std::string dir = cfg.log.dir + "/snapshots";
    std::filesystem::create_directories(dir);
    const uint64_t every = uint64_t(cfg.monitor.snapshot_every);
    a.on_close = [dir, node, every](uint64_t round, const float* x, size_t count, double dn) {
      if (round % every == 0) write_snapshot(dir, node, round, x, count, dn);
    };
  }

  net::CommOptions o;
  o.self = node;
  for (const auto& p : cfg.cluster.peers) o.peers.push_back({p.id, p.host, p.port, p.public_key});
  if (cfg.net.security == "curve") {   // every link CurveZMQ (DESIGN.md "Security")
    const NodeKeys keys = load_node_keys(cfg, node);
    o.curve = true;
    o.secret_key = keys.secret_key;
    o.public_key = keys.public_key;
  } else {
    std::fprintf(stderr, "tether: node %d: warning: net.security is \"none\": links are neither authenticated nor "
                 "encrypted; any host that reaches port %d can read this run and speak for a peer\n",
                 node, [&] {
                   for (const auto& p : cfg.cluster.peers) if (p.id == node) return p.port;
                   return 0;
                 }());
  }
  o.mixer = a.gossip ? net::MixerKind::kGossip : net::MixerKind::kRing;
  o.window = a.staleness + 1;
  o.chunk_bytes = size_t(cfg.net.chunk_bytes);
  o.connect_timeout_ms = cfg.net.connect_timeout_ms;
  o.heartbeat_ms = cfg.net.heartbeat_ms;
  o.peer_timeout_ms = cfg.net.peer_timeout_ms;
  o.round_timeout_ms = cfg.net.round_timeout_ms;
  o.quorum_wait_ms = cfg.net.quorum_wait_ms;
  o.late_start_ms = cfg.net.late_start_ms;
  o.inject_delay_ms = cfg.net.inject_delay_ms;
  o.inject_rate_mbps = cfg.net.inject_rate_mbps;
  o.codec = *net::codec_from_name(cfg.net.compression);   // parse_config accepted only the codecs' names
  o.sketch_seed = cfg.train.seed;
  o.sketch_floats = uint64_t(cfg.monitor.sketch_buckets) + kSketchTail;   // the CountSketch and its tail (monitor.h)
  o.config_hash = config_hash(cfg);
  for (const auto& [path, value] : config_run_keys(cfg))
    o.config_keys.emplace_back(path, net::hash64(value.data(), value.size()));
  o.first_round = resume.first_round;
  // The hello compares where every node starts. Clocked rounds: nodes are at
  // their own steps, only the round is shared (a resumed run: never 0).
  o.start_step = !cfg.algorithm.clocked_rounds() ? resume.start_step
                 : resume.start_step == 0        ? 0
                                                 : resume.first_round + 1;
  o.test_crash_at = resume.test_crash_at;
  o.gossip_barrier = resume.gossip_barrier;
  if (cfg.algorithm.server_based()) {   // downpour, easgd: the baselines own the store they are given
    if (!owned) throw std::invalid_argument(cfg.algorithm.name + " runs only in the tether binary (no caller-owned buffer)");
    return make_server_averaging(cfg, a, std::move(o), std::move(owned));
  }
  return std::make_unique<OverlapAveraging>(std::move(a), std::make_unique<net::Communicator>(o), params,
                                            std::move(owned));
}

}  // namespace

std::unique_ptr<Averaging> make_averaging(const Config& cfg, int node, Model& model, const AveragingOptions& resume) {
  auto params = std::make_unique<ModelParams>(model);
  ParamStore* p = params.get();
  return make_averaging_on(cfg, node, p, std::move(params), resume);
}

std::unique_ptr<Averaging> make_averaging(const Config& cfg, int node, ParamStore* params,
                                          const AveragingOptions& resume) {
  return make_averaging_on(cfg, node, params, nullptr, resume);
}

}  // namespace tether
