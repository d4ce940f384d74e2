#include "runtime/server_averaging.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "observe/metrics_schema.h"
#include "runtime/config.h"
#include "runtime/monitor.h"

namespace tether {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

class ServerAveraging : public Averaging {
 public:
  ServerAveraging(ServerOptions o, std::unique_ptr<net::Communicator> comm, std::shared_ptr<net::ShardService> svc,
                  ParamStore* params, std::unique_ptr<ParamStore> owned)
      : o_(std::move(o)),
        owned_params_(std::move(owned)),
        params_(params),
        dim_(params->count()),
        sketch_(params->count(), o_.sketch_buckets, o_.sketch_seed ^ 0x5ce7c4ull),   // the overlap algorithm's
        svc_(std::move(svc)),
        comm_(std::move(comm)) {
    x_.resize(dim_);
    params_->read(x_.data());
    comm_->start(x_.data(), x_.size());   // node 0's bits everywhere; the servers' shards start from them
    params_->write(x_.data());
    base_ = x_;
    last_close_ = x_;
    fetched_.resize(dim_);
    next_round_ = o_.first_round;
    alive_ = [this] {
      if (comm_->poll()) throw std::runtime_error("a ring round finished while none was submitted");
    };
    start_ = last_metrics_ = now_s();
  }

  ~ServerAveraging() override {
    try {
      if (comm_ && !finished_) comm_->stop(200, true);
    } catch (...) {
      // Destructors must not throw; the run already reported its failure.
    }
  }

  void after_step(uint64_t steps_done) override {
    steps_done_ = steps_done;
    if (peer_left_ || stopping_) return;
    try {
      alive_();   // a silent peer: PeerLost
      if (stop_wanted_) {
        stopping_ = true;
        stop_why_ = "interrupted: " + std::string(o_.easgd ? "easgd" : "downpour") +
                    " has no common cut, every node stops at its own step";
        return;
      }
      const bool close = steps_done % uint64_t(o_.period) == 0;
      bool have_x = false;
      if (!o_.easgd) {
        const bool push = steps_done % uint64_t(o_.n_push) == 0;
        const bool fetch = steps_done % uint64_t(o_.n_fetch) == 0;
        if (push || fetch) {
          params_->read(x_.data());
          have_x = true;
        }
        if (push) push_accumulated();
        if (fetch) {
          fetch_centre();
          if (!push) {
            for (size_t i = 0; i < dim_; ++i) x_[i] = fetched_[i] + (x_[i] - base_[i]);   // i over the arena
          } else {
            x_ = fetched_;
          }
          base_ = fetched_;
          params_->write(x_.data());
        }
      } else if (steps_done % uint64_t(o_.tau) == 0) {
        params_->read(x_.data());
        have_x = true;
        fetch_centre();
        const auto alpha = float(o_.alpha);
        std::vector<float> d(dim_);
        for (size_t i = 0; i < dim_; ++i) {   // i over the arena
          d[i] = alpha * (x_[i] - fetched_[i]);
          x_[i] -= d[i];
        }
        base_ = fetched_;
        params_->write(x_.data());
        timed([&] { svc_->push(std::move(d), alive_, o_.peer_timeout_ms); });
      }
      if (close) {
        if (!have_x) params_->read(x_.data());
        close_round();
      }
    } catch (const net::PeerLost& e) {
      note_peer_left(e);
    }
  }

  void finish() override {
    const bool interrupted = peer_left_ || stopping_;
    if (!interrupted) {
      if (!o_.easgd && steps_done_ % uint64_t(o_.n_push) != 0) {
        params_->read(x_.data());
        push_accumulated();
      }
      timed([&] { svc_->wait_pushes(alive_, o_.peer_timeout_ms); });
      barrier();   // every push of every node is applied: the servers hold the final x̃
      fetch_centre();
      params_->write(fetched_.data());   // the same bits on every node
      barrier();   // no node fetches any more: the servers may go
    }
    svc_->close();
    comm_->stop(o_.shutdown_timeout_ms);
    finished_ = true;
  }

  nlohmann::json metrics() override {
    const double t = now_s();
    const double span = std::max(1e-9, t - last_metrics_);
    const double idle_frac = (idle_s_ - idle_at_last_) / span;
    last_metrics_ = t;
    idle_at_last_ = idle_s_;
    const net::CommStats st = comm_->stats();
    return {{field::kRound, closes_},
            {field::kIdleFrac, idle_frac},
            {field::kIdleFracTotal, idle_s_ / std::max(1e-9, t - start_)},
            {field::kRoundsInFlight, 0},
            {field::kDispNorm, disp_norm_},
            {field::kMaxPairDist, max_pair_dist_},
            {field::kMaxPairDistRun, max_pair_dist_run_},
            {field::kBound, 0.0},
            {field::kThrottled, false},
            {field::kThrottleCount, 0},
            {field::kMaxDeltaNorm, max_delta_},
            {field::kBytesSent, st.bytes_sent},
            {field::kBytesRecv, st.bytes_recv},
            {field::kTensorBytesSent, st.tensor_bytes_sent},
            {field::kTensorRawBytesSent, st.tensor_raw_bytes_sent},
            {field::kMsgsRejected, st.msgs_rejected},
            {field::kDeltaClaimsRefused, 0},
            {field::kGradDelay, svc_->delay().mean()}};
  }

  std::vector<float> anchor() const override { return {}; }
  void drain() override {
    try {
      timed([&] { svc_->wait_pushes(alive_, o_.peer_timeout_ms); });
    } catch (const net::PeerLost& e) {
      note_peer_left(e);
    }
  }
  void request_stop() override { stop_wanted_ = true; }
  bool stop_requested() const override { return peer_left_ || stopping_; }
  bool at_cut() const override { return false; }
  std::string stop_reason() const override { return stop_why_; }
  uint64_t next_round() const override { return next_round_; }
  double max_delta() const override { return max_delta_; }
  bool joined() const override { return false; }   // no membership: a dead node takes its shard with it
  uint64_t start_step() const override { return 0; }
  int period() const override { return o_.period; }
  // No views (the initial view throughout): the fixed map.
  uint64_t rounds_before_step(uint64_t step) const override { return step / uint64_t(std::max(1, o_.period)); }
  uint64_t first_step_of_round(uint64_t round) const override { return round * uint64_t(std::max(1, o_.period)); }

 private:
  template <class F>
  void timed(F&& f) {
    const double t0 = now_s();
    f();
    idle_s_ += now_s() - t0;
  }

  void note_peer_left(const net::PeerLost& e) {
    if (!e.graceful) throw e;
    if (!peer_left_) std::fprintf(stderr, "[node %d] %s: stopping\n", o_.node, e.what());
    peer_left_ = true;
    stop_why_ = e.what();
  }

  // x_ holds x_i: pushes x_i − b, b = x_i.
  void push_accumulated() {
    std::vector<float> u(dim_);
    for (size_t i = 0; i < dim_; ++i) u[i] = x_[i] - base_[i];   // i over the arena
    base_ = x_;
    timed([&] { svc_->push(std::move(u), alive_, o_.peer_timeout_ms); });
  }

  void fetch_centre() {
    timed([&] { svc_->fetch(fetched_.data(), alive_, o_.peer_timeout_ms); });
  }

  // x_ holds x_i.
  void close_round() {
    double dn = 0, disp = 0;
    for (size_t i = 0; i < dim_; ++i) {   // i over the arena
      const double d = double(x_[i]) - double(last_close_[i]);
      const double p = double(x_[i]) - double(base_[i]);
      dn += d * d;
      disp += p * p;
    }
    last_close_ = x_;
    disp_norm_ = std::sqrt(disp);
    max_delta_ = std::max(max_delta_, std::sqrt(dn));
    if (o_.on_close) o_.on_close(closes_, x_.data(), dim_, std::sqrt(dn));
    if (o_.sketch_floats == uint64_t(o_.sketch_buckets) + kSketchTail) {
      std::vector<float> sk(size_t(o_.sketch_floats));
      sketch_.apply(x_.data(), sk.data());
      sk[size_t(o_.sketch_buckets) + kTailMaxDelta] = float(max_delta_);
      svc_->send_sketch(closes_, std::move(sk));
      // The latest round not estimated yet whose sketches are all in.
      for (uint64_t r = closes_ + 1; r-- > estimated_;) {   // bounded: rounds since the last estimate
        auto sketches = svc_->sketches_of(r);
        if (sketches.empty()) continue;
        const PairEstimate e = estimate_distances(sketches, o_.sketch_buckets, o_.node);
        max_pair_dist_ = e.max_pair;
        max_pair_dist_run_ = std::max(max_pair_dist_run_, e.max_pair);
        estimated_ = r + 1;
        break;
      }
    }
    ++closes_;
  }

  // One ring round of zeros: returns once every node has submitted it.
  void barrier() {
    const uint64_t r = next_round_++;
    comm_->submit(r, std::vector<float>(dim_, 0.0f), std::vector<float>(size_t(o_.sketch_floats), 0.0f));
    std::optional<net::RoundResult> res;
    const double deadline = now_s() + o_.peer_timeout_ms / 1000.0 + 60.0;
    while (!res) {   // bounded: a silent peer raises PeerLost; the deadline is a backstop
      if (now_s() > deadline) throw std::runtime_error("barrier round " + std::to_string(r) + " did not finish");
      timed([&] { res = comm_->wait(o_.peer_timeout_ms); });
    }
    if (res->round != r) throw std::runtime_error("barrier: the ring delivered round " + std::to_string(res->round));
  }

  ServerOptions o_;
  std::unique_ptr<ParamStore> owned_params_;
  ParamStore* params_;
  size_t dim_;
  CountSketch sketch_;
  std::shared_ptr<net::ShardService> svc_;
  std::unique_ptr<net::Communicator> comm_;
  net::ShardService::Alive alive_;
  std::vector<float> x_, base_, fetched_, last_close_;
  uint64_t steps_done_ = 0, next_round_ = 0, closes_ = 0, estimated_ = 0;
  double start_ = 0, last_metrics_ = 0, idle_s_ = 0, idle_at_last_ = 0;
  double disp_norm_ = 0, max_delta_ = 0, max_pair_dist_ = 0, max_pair_dist_run_ = 0;
  bool finished_ = false, peer_left_ = false, stop_wanted_ = false, stopping_ = false;
  std::string stop_why_;
};

}  // namespace

std::unique_ptr<Averaging> make_server_averaging(ServerOptions o, std::unique_ptr<net::Communicator> comm,
                                                 std::shared_ptr<net::ShardService> service, ParamStore* params,
                                                 std::unique_ptr<ParamStore> owned) {
  return std::make_unique<ServerAveraging>(std::move(o), std::move(comm), std::move(service), params,
                                           std::move(owned));
}

std::unique_ptr<Averaging> make_server_averaging(const Config& cfg, const AveragingOptions& a,
                                                 net::CommOptions comm, std::unique_ptr<ParamStore> params) {
  ServerOptions o;
  o.node = a.node;
  o.easgd = cfg.algorithm.name == "easgd";
  o.n_push = cfg.algorithm.n_push;
  o.n_fetch = cfg.algorithm.n_fetch;
  o.alpha = cfg.algorithm.alpha;
  o.tau = cfg.algorithm.tau;
  o.period = a.period;
  o.peer_timeout_ms = a.peer_timeout_ms;
  o.shutdown_timeout_ms = a.shutdown_timeout_ms;
  o.first_round = a.first_round;
  o.sketch_floats = comm.sketch_floats;
  o.sketch_buckets = a.sketch_buckets;
  o.sketch_seed = a.sketch_seed;
  o.on_close = a.on_close;
  auto svc = std::make_shared<net::ShardService>(comm.self, int(comm.peers.size()), params->count(), 4,
                                                 comm.sketch_floats, comm.codec);
  comm.service = svc;
  comm.window = 1;   // the end's barriers, one at a time
  ParamStore* p = params.get();
  return std::make_unique<ServerAveraging>(std::move(o), std::make_unique<net::Communicator>(std::move(comm)),
                                           std::move(svc), p, std::move(params));
}

}  // namespace tether
