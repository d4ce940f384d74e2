// The trainer: the node's compute loop (load batch -> forward -> backward ->
// optimizer step), learning-rate schedule, evaluation, metrics, checkpoints.
// Averaging with peers plugs in through the Averaging interface; the loop
// never waits on the network except inside Averaging::after_step.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/backend.h"
#include "models/dataset.h"
#include "models/model.h"
#include "models/optimizer.h"
#include "models/sampler.h"
#include "runtime/config.h"

namespace tether {

// What the trainer needs from a distributed averaging algorithm.
class Averaging {
 public:
  virtual ~Averaging() = default;
  // Called after every local step with the number of steps done so far.
  // May block: staleness bound, monitor throttle (time counted as idle).
  virtual void after_step(uint64_t steps_done) = 0;
  // Drains in-flight rounds and leaves the agreed final parameters in place.
  virtual void finish() = 0;
  // Fields for the metrics record (idle_frac, rounds_in_flight, disp_norm,
  // max_pair_dist, bound, throttled, bytes_sent, bytes_recv, round).
  virtual nlohmann::json metrics() = 0;
  // x̄ for checkpoints (empty when the algorithm keeps none).
  virtual std::vector<float> anchor() const = 0;
  virtual void restore_anchor(const std::vector<float>& anchor) = 0;
  // A peer left the run gracefully (it was stopped): this node should stop
  // too, as if interrupted. stop_reason() says who and why.
  virtual bool stop_requested() const { return false; }
  virtual std::string stop_reason() const { return ""; }
};

struct TrainOptions {
  int node = 0;
  std::string resume;                          // checkpoint to continue from
  const std::atomic<bool>* stop = nullptr;     // set by SIGINT/SIGTERM
};

struct TrainResult {
  double test_acc = -1.0;        // -1 when not evaluated
  double test_loss = 0.0;
  std::string params_hash;
  uint64_t steps = 0;
  bool interrupted = false;
  std::string checkpoint;        // last checkpoint written
};

class Trainer {
 public:
  Trainer(Config cfg, TrainOptions opts);
  ~Trainer();
  // Builds everything (backend, data, model) and, for distributed configs,
  // the averaging algorithm; runs to the end or until stopped.
  TrainResult run();
  // Evaluates the model in `checkpoint` on the config's test split. Throws
  // CheckpointError, naming both, when the checkpoint was trained on another
  // data set than cfg.data.name, unless `any_data`.
  static double evaluate_checkpoint(const Config& cfg, const std::string& checkpoint, double* loss,
                                    bool any_data = false);

 private:
  void setup();
  void train_step(uint64_t step, int epoch, size_t step_in_epoch);
  void synthetic_step(uint64_t step);
  double evaluate(double* loss);
  void save(const std::string& path, int epoch, size_t step_in_epoch);
  void log_interval(int epoch, size_t step_in_epoch, bool force);
  std::string checkpoint_path() const;

  Config cfg_;
  TrainOptions opts_;
  std::unique_ptr<Backend> be_;
  DataSplits data_;
  std::unique_ptr<ShardedSampler> sampler_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Sgd> sgd_;
  std::unique_ptr<Averaging> avg_;
  LrSchedule schedule_;
  DeviceBuffer<float> x_, stats_;
  DeviceBuffer<float> synthetic_pool_;   // compute "synthetic": random updates
  DeviceBuffer<int32_t> y_;
  std::vector<uint32_t> indices_;
  std::vector<uint8_t> host_images_;
  std::vector<int32_t> host_labels_;
  uint64_t step_ = 0;           // global steps done
  int start_epoch_ = 0;
  size_t start_step_in_epoch_ = 0;
  // interval accounting
  uint64_t interval_images_ = 0, interval_steps_ = 0;
  double interval_start_ = 0, run_start_ = 0;
  double last_test_acc_ = -1;
  uint64_t total_steps_ = 0;
  std::vector<float> pending_anchor_;   // from --resume, handed to avg_
  struct Log;
  std::unique_ptr<Log> log_;
};

// Seed of the dropout masks of global step `step` on node `node`: a pure
// function of (seed, node, step), so --resume draws the same masks, and nodes
// draw different masks at the same step (N nodes under `sync` then train like
// one node with an N-fold batch, as without dropout). Node 0's seeds do not
// depend on the node term: single-node runs keep their masks.
uint64_t dropout_seed(uint64_t seed, int node, uint64_t step);

// Builds the model a config describes (shape from the dataset).
std::unique_ptr<Model> build_model(const Config& cfg, const Dataset& data);
DatasetSpec dataset_spec(const Config& cfg);

}  // namespace tether
