#include "runtime/overlap.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>

#include "net/communicator.h"
#include "runtime/checkpoint.h"
#include "runtime/monitor.h"

namespace tether {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Coordinates per block of the round-close pass: the block's slices of the
// five vectors it touches stay in L1/L2 between the vectorized part and the
// sketch that reads x again.
constexpr size_t kCloseBlock = 2048;

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

// A merge: c = mixed − c (the correction, in place), x_prev += c, and for the
// ring anchor += mixed.
__attribute__((target_clones("avx512f", "avx2", "default"))) void merge_pass(
    const float* __restrict mixed, float* __restrict c, float* __restrict x_prev, float* __restrict anchor,
    size_t n) {
  for (size_t i = 0; i < n; ++i) {   // i < n: every vector spans the arena
    const float ci = mixed[i] - c[i];
    c[i] = ci;
    x_prev[i] += ci;
    if (anchor) anchor[i] += mixed[i];
  }
}

class OverlapAveraging : public Averaging {
 public:
  OverlapAveraging(const Config& cfg, int node, Model& model, const std::atomic<bool>* stop)
      : cfg_(cfg),
        node_(node),
        model_(model),
        be_(model.backend()),
        stop_(stop),
        dim_(model.param_count()),
        staleness_(cfg.effective_staleness()),
        period_(cfg.algorithm.period),
        gossip_(cfg.algorithm.mixer == "gossip"),
        sketch_(model.param_count(), cfg.monitor.sketch_buckets, cfg.train.seed ^ 0x5ce7c4ull),
        correction_dev_(be_, model.param_count()) {
    net::CommOptions o;
    o.self = node;
    for (const auto& p : cfg.cluster.peers) o.peers.push_back({p.id, p.host, p.port});
    o.mixer = gossip_ ? net::MixerKind::kGossip : net::MixerKind::kRing;
    o.window = staleness_ + 1;
    o.chunk_bytes = size_t(cfg.net.chunk_bytes);
    o.connect_timeout_ms = cfg.net.connect_timeout_ms;
    o.heartbeat_ms = cfg.net.heartbeat_ms;
    o.peer_timeout_ms = cfg.net.peer_timeout_ms;
    o.inject_delay_ms = cfg.net.inject_delay_ms;
    o.inject_rate_mbps = cfg.net.inject_rate_mbps;
    o.sketch_seed = cfg.train.seed;
    o.config_hash = config_hash(cfg);
    comm_ = std::make_unique<net::Communicator>(o);

    // Agree on the initial parameters: the lowest id's bits everywhere.
    x_ = model_.download_params();
    comm_->start(x_.data(), x_.size());
    model_.upload_params(x_);
    x_prev_ = x_;
    anchor_ = x_;
    if (cfg.monitor.snapshots) {
      snap_dir_ = cfg.log.dir + "/snapshots";
      std::filesystem::create_directories(snap_dir_);
    }
    bound_ = cfg.monitor.bound;   // 0 (auto) until the first merge reports round deltas
    start_ = last_metrics_ = now_s();
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
    steps_done_ = steps_done;
    if (peer_left_) return;   // the run is ending: no more rounds
    try {
      apply_finished(false);
      if (steps_done % uint64_t(period_) == 0) close_round();
    } catch (const net::PeerLost& e) {
      note_peer_left(e);
    }
  }

  bool stop_requested() const override { return peer_left_; }
  std::string stop_reason() const override { return peer_left_why_; }

  void finish() override {
    bool interrupted = (stop_ != nullptr && stop_->load()) || peer_left_;
    // A partial round holds local updates that must be merged too. Every
    // node runs the same number of steps, so all close the same rounds.
    if (!interrupted && steps_done_ % uint64_t(period_) != 0) close_round_submit();
    double deadline = now_s() + cfg_.net.shutdown_timeout_ms / 1000.0;
    while (!in_flight_.empty()) {
      if (interrupted && now_s() > deadline) {
        std::fprintf(stderr, "[node %d] stopping with %zu round(s) unmerged (deadline %d ms)\n", node_,
                     in_flight_.size(), cfg_.net.shutdown_timeout_ms);
        break;
      }
      try {
        wait_one(interrupted ? 100 : cfg_.net.peer_timeout_ms);
      } catch (const net::PeerLost& e) {
        if (!interrupted) throw;
        note_peer_left(e);   // a peer stopped too: what is in flight cannot complete
        break;
      }
    }
    if (!interrupted && !gossip_) model_.upload_params(anchor_);   // identical bits on every node
    comm_->stop(cfg_.net.shutdown_timeout_ms);
    auto st = comm_->stats();
    bytes_sent_ = st.bytes_sent;
    bytes_recv_ = st.bytes_recv;
    msgs_rejected_ = st.msgs_rejected;
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
      msgs_rejected_ = st.msgs_rejected;
    }
    return {{"round", next_round_},
            {"idle_frac", idle_frac},
            {"idle_frac_total", idle_s_ / std::max(1e-9, t - start_)},
            {"rounds_in_flight", in_flight_.size()},
            {"disp_norm", disp_norm_},
            {"max_pair_dist", max_pair_dist_},
            {"max_pair_dist_run", max_pair_dist_run_},
            {"bound", bound_},
            {"throttled", throttled_now_},
            {"throttle_count", throttle_count_},
            {"max_delta_norm", max_delta_all_},
            {"bytes_sent", bytes_sent_},
            {"bytes_recv", bytes_recv_},
            {"msgs_rejected", msgs_rejected_}};
  }

  std::vector<float> anchor() const override { return gossip_ ? std::vector<float>() : anchor_; }
  void restore_anchor(const std::vector<float>& anchor) override {
    if (anchor.size() == dim_) anchor_ = anchor;
  }

 private:
  // A graceful departure (the peer was stopped and said bye) stops this
  // node as if interrupted; a silent peer stays a failure (PeerLost).
  void note_peer_left(const net::PeerLost& e) {
    if (!e.graceful) throw e;
    if (!peer_left_) std::fprintf(stderr, "[node %d] %s: stopping\n", node_, e.what());
    peer_left_ = true;
    peer_left_why_ = e.what();
  }

  struct InFlight {
    uint64_t round;
    std::vector<float> submitted;   // Δ (ring) or the snapshot x_i (gossip)
  };

  void close_round() {
    close_round_submit();
    // Staleness bound: at most s rounds stay in flight while computing.
    // The monitor may lower that to k < s (throttle): with k rounds in
    // flight two nodes closing the same round differ by at most k+1 rounds'
    // differences, so 2(k+1)·D_max must stay within the bound; and a node
    // whose estimated distance to a peer already exceeds the bound waits
    // for every merge (k = 0) before stepping again.
    size_t allowed = size_t(staleness_);
    if (cfg_.monitor.bound > 0) {
      double d = std::max(max_delta_all_, max_delta_local_);
      while (allowed > 0 && staleness_bound(int(allowed), d) > cfg_.monitor.bound) --allowed;
    }
    if (throttled_) allowed = 0;
    if (allowed < size_t(staleness_) && in_flight_.size() > allowed) {
      ++throttle_count_;
      throttled_now_ = true;
      if (throttle_count_ == 1 || throttle_count_ % 100 == 0) {
        std::fprintf(stderr,
                     "[node %d] throttled at round %llu (%llu times so far): %zu round(s) in flight allowed, "
                     "estimated distance %.4g to node %d, bound %.4g, largest round delta %.4g\n",
                     node_, static_cast<unsigned long long>(next_round_ - 1),
                     static_cast<unsigned long long>(throttle_count_), allowed, last_self_dist_, last_self_peer_,
                     bound_, std::max(max_delta_all_, max_delta_local_));
      }
    } else {
      throttled_now_ = false;
    }
    while (in_flight_.size() > allowed) wait_one(cfg_.net.peer_timeout_ms);
  }

  void close_round_submit() {
    model_.backend()->download(x_.data(), model_.params(), dim_ * sizeof(float));
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
    if (!gossip_) disp_norm_ = std::sqrt(disp);
    std::vector<float> sk(acc.size() + 1);
    for (size_t b = 0; b < acc.size(); ++b) sk[b] = float(acc[b]);
    sk.back() = float(max_delta_local_);   // peers derive the bound from it
    if (!snap_dir_.empty() && next_round_ % uint64_t(cfg_.monitor.snapshot_every) == 0) write_snapshot(dnorm);
    uint64_t r = next_round_++;
    // The mixer keeps (and may overwrite) what it is given; this node keeps
    // its own copy to form the correction when the round comes back:
    // Δ (ring) or the snapshot x_i (gossip).
    std::vector<float> sent = take_buffer();
    if (gossip_) delta = x_;   // same size: no allocation
    std::memcpy(sent.data(), delta.data(), dim_ * sizeof(float));
    comm_->submit(r, std::move(sent), std::move(sk));
    in_flight_.push_back({r, std::move(delta)});
  }

  // Arena-sized float vectors are recycled (deltas, corrections, the mixer's
  // results): a fresh one per round would be zero-filled and faulted in.
  std::vector<float> take_buffer() {
    if (spare_.empty()) return std::vector<float>(dim_);
    std::vector<float> v = std::move(spare_.back());
    spare_.pop_back();
    return v;
  }
  void recycle(std::vector<float>&& v) {
    if (v.size() == dim_ && spare_.size() < size_t(staleness_) + 4) spare_.push_back(std::move(v));
  }

  // Debug snapshots: x_i as this node closes a round, for exact distances.
  void write_snapshot(double delta_norm) {
    std::string path = snap_dir_ + "/node" + std::to_string(node_) + "-r" + std::to_string(next_round_) + ".bin";
    std::ofstream out(path, std::ios::binary);
    uint64_t header[3] = {next_round_, uint64_t(dim_), 0};
    std::memcpy(&header[2], &delta_norm, sizeof(double));
    out.write(reinterpret_cast<const char*>(header), sizeof header);
    out.write(reinterpret_cast<const char*>(x_.data()), std::streamsize(dim_ * sizeof(float)));
  }

  void wait_one(int timeout_ms) {
    double t0 = now_s();
    std::optional<net::RoundResult> res = comm_->wait(timeout_ms);
    idle_s_ += now_s() - t0;
    if (res) apply(*res);
  }

  void apply_finished(bool) {
    while (auto res = comm_->poll()) apply(*res);
  }

  void apply(net::RoundResult& res) {
    if (in_flight_.empty() || in_flight_.front().round != res.round) {
      throw std::runtime_error("mixer delivered round " + std::to_string(res.round) + " but round " +
                               (in_flight_.empty() ? std::string("none") : std::to_string(in_flight_.front().round)) +
                               " is next");
    }
    if (res.mixed.size() != dim_) {
      throw std::runtime_error("mixer delivered " + std::to_string(res.mixed.size()) + " values for round " +
                               std::to_string(res.round) + ", expected " + std::to_string(dim_));
    }
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    std::vector<float>& c = f.submitted;   // reused as the correction
    merge_pass(res.mixed.data(), c.data(), x_prev_.data(), gossip_ ? nullptr : anchor_.data(), dim_);
    be_->upload(correction_dev_.get(), c.data(), dim_ * sizeof(float));
    be_->axpy(dim_, 1.0f, correction_dev_.get(), model_.params());
    recycle(std::move(c));
    recycle(std::move(res.mixed));
    // Monitor: the largest round delta any node reported bounds the distance.
    for (const auto& [id, sk] : res.sketches) {
      if (!sk.empty()) max_delta_all_ = std::max(max_delta_all_, double(sk.back()));
    }
    double auto_bound = staleness_bound(staleness_, max_delta_all_);
    bound_ = cfg_.monitor.bound > 0 ? cfg_.monitor.bound : auto_bound;
    PairEstimate e = estimate_distances(res.sketches, sketch_.buckets(), node_);
    max_pair_dist_ = e.max_pair;
    max_pair_dist_run_ = std::max(max_pair_dist_run_, e.max_pair);
    last_self_dist_ = e.max_self;
    last_self_peer_ = e.self_peer;
    throttled_ = e.max_self > bound_;
  }

  const Config& cfg_;
  int node_;
  Model& model_;
  Backend* be_;
  const std::atomic<bool>* stop_;
  size_t dim_;
  int staleness_, period_;
  bool gossip_;
  CountSketch sketch_;
  DeviceBuffer<float> correction_dev_;
  std::unique_ptr<net::Communicator> comm_;
  std::vector<float> x_, x_prev_, anchor_;
  std::deque<InFlight> in_flight_;
  std::vector<std::vector<float>> spare_;   // recycled arena-sized vectors
  uint64_t next_round_ = 0, steps_done_ = 0;
  std::string snap_dir_;
  double start_ = 0, last_metrics_ = 0, idle_s_ = 0, idle_at_last_ = 0;
  double disp_norm_ = 0, max_pair_dist_ = 0, max_pair_dist_run_ = 0, bound_ = 0;
  double max_delta_local_ = 0, max_delta_all_ = 0, last_self_dist_ = 0;
  int last_self_peer_ = -1;
  bool throttled_ = false, throttled_now_ = false, finished_ = false, peer_left_ = false;
  std::string peer_left_why_;
  uint64_t throttle_count_ = 0, bytes_sent_ = 0, bytes_recv_ = 0, msgs_rejected_ = 0;
};

}  // namespace

std::unique_ptr<Averaging> make_averaging(const Config& cfg, int node, Model& model, const std::atomic<bool>* stop) {
  return std::make_unique<OverlapAveraging>(cfg, node, model, stop);
}

}  // namespace tether
