// tether's averaging inside a training loop that tether does not own: the
// core of the Python module (python/) and of the C ABI (capi/tether.h).
//
// The caller's parameters are one flat float buffer (count floats, host
// memory) that the caller's optimizer updates in place between step() calls;
// the averaging reads and writes that buffer (a ParamStore over it) only
// inside the constructor, step() and finish(), on the caller's thread.
// Parameters elsewhere (a GPU's memory) come as a caller's ParamStore: the
// averaging reads x_i from it as it closes a round and writes or adds to it
// as it applies merges, so a copy happens only when a round needs one.
//
//   Averager(cfg, node, buffer, count)  connects to the peers of
//       cfg.cluster; every node leaves with node 0's initial parameters
//   step(stats)   one local step done: closes a round every algorithm.period
//       steps and applies the merges that arrived; may wait (staleness bound,
//       throttle), counted as idle; writes a metrics record every
//       log.every_steps steps. Returns false once the cluster stops (a peer
//       left gracefully): the loop should end and call finish().
//   finish(test_acc)  drains; every node ends with the same parameters (ring:
//       the anchor's bits; gossip: one exact average); writes the final record.
//
// Config: the binary's file and validation. A run through this class reads
// cluster, algorithm, monitor, net, log (dir, every_steps) and train.seed (the
// sketch seed); the caller's loop owns model, data, optimizer and the rest of
// train, which are validated but otherwise unused (they still enter the
// config hash: every node must use the same file). log.progress and device
// are ignored.
//
// Metrics: <log.dir>/node-<id>.jsonl with the binary's records (observe/
// metrics_schema.h), so `tether dashboard` and `tether report` read a run of a
// foreign loop; loss, train_acc and lr are null unless the caller passes them.
//
// Errors: ConfigError (bad config or node id), net::StartRefused / StartFailed
// (the peers' start), net::PeerLost (a silent peer, from step or finish; a
// "failed" record is written first), std::logic_error (misuse: step after
// finish).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config.h"

namespace tether {

class Averaging;
class MetricsLog;
class ParamStore;

// What the caller's step did, for the metrics record (every field optional).
struct StepStats {
  uint64_t images = 0;                 // samples in this step's batch
  std::optional<double> loss;          // the batch's mean loss
  std::optional<uint64_t> correct;     // correctly classified samples of the batch
  std::optional<double> lr;
  int epoch = 0;                       // 1-based; 0: unknown
};

// A config from JSON text (the Python module's dict), with --set style
// overrides; errors name the JSON path, like load_config.
Config config_from_text(const std::string& text, const std::vector<std::string>& overrides);

class Averager {
 public:
  // `params` (count floats) must outlive this object; blocks until every peer
  // has started (net.connect_timeout_ms).
  Averager(const Config& cfg, int node, float* params, size_t count);
  // The same over a caller's store of the parameters (ParamStore,
  // runtime/averaging.h: count, read, write, add), called on the caller's
  // thread inside the constructor, step() and finish() only.
  Averager(const Config& cfg, int node, std::unique_ptr<ParamStore> store);
  ~Averager();
  Averager(const Averager&) = delete;
  Averager& operator=(const Averager&) = delete;

  bool step(const StepStats& stats = {});
  void finish(std::optional<double> test_acc = std::nullopt);
  // An evaluation the caller made: an "eval" record.
  void log_eval(double test_acc, std::optional<double> test_loss, int epoch);

  // The latest record's fields: step, round, and the algorithm's metrics
  // (idle_frac, rounds_in_flight, max_pair_dist, bound, bytes_sent, ...);
  // after finish(), the final record.
  nlohmann::json metrics() const { return last_; }
  uint64_t steps() const { return steps_; }
  bool finished() const { return finished_; }
  bool stop_requested() const;
  // Clocked rounds (algorithm.round_ms, period "auto"): another node ran all
  // its steps and the run ended at a common cut (stop_requested() is true
  // too); finish() then leaves every node with the same parameters.
  bool ended() const;
  std::string stop_reason() const;
  const std::string& log_path() const;
  size_t count() const;
  int node() const { return node_; }

 private:
  void write_interval();
  [[noreturn]] void fail(const std::exception& e);

  Config cfg_;
  int node_;
  std::unique_ptr<MetricsLog> log_;
  std::unique_ptr<ParamStore> store_;
  std::unique_ptr<Averaging> avg_;
  uint64_t steps_ = 0;
  bool finished_ = false, failed_ = false;
  double start_s_ = 0, interval_start_s_ = 0;
  // The interval since the last record.
  uint64_t interval_steps_ = 0, interval_images_ = 0, interval_correct_ = 0, interval_loss_steps_ = 0;
  double interval_loss_ = 0;
  bool interval_has_correct_ = false;
  std::optional<double> last_lr_;
  int epoch_ = 0;
  nlohmann::json last_ = nlohmann::json::object();
};

}  // namespace tether
