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
#include "runtime/averaging.h"
#include "runtime/config.h"
#include "runtime/data_views.h"

namespace tether {

struct TrainOptions {
  int node = 0;
  std::string resume;                          // checkpoint to continue from
  const std::atomic<bool>* stop = nullptr;     // set by SIGINT/SIGTERM
  // Test hook (hidden flag --fail-after-step N, not in --help): throws right
  // after step N is counted, where Averaging::after_step throws when a peer
  // is lost, so the failure checkpoint can be tested on one node. 0 = off.
  uint64_t fail_after_step = 0;
  // Test hook (hidden flags --stall-after-step N --stall-ms M): the trainer
  // sleeps M ms after step N while the I/O thread goes on (heartbeats), as a
  // stuck data read or a hung device would.
  uint64_t stall_after_step = 0;
  uint64_t stall_ms = 60000;
  // Test hook (hidden flag --crash-at POINT[:ROUND]): the communicator
  // crashes the first time it reaches POINT (net::kTestCrashPoints) at a
  // round >= ROUND ("commit": a view epoch), closing its sockets without a
  // bye; run() then throws net::TestCrash at once, writing no checkpoint and
  // no record (the binary exits 137, as kill -9 would). "corrupt-state"
  // sends one corrupt chunk and goes on. Empty: off.
  std::string crash_point;
  uint64_t crash_round = 0;
  // Measuring aid (hidden flag --gossip-barrier): a gossip round also waits
  // for every node's sketch of that round, the global barrier of before
  // issue 16 (net::CommOptions::gossip_barrier; bench/gossip_straggler.sh).
  bool gossip_barrier = false;
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
  // Writes a checkpoint of the state after step_ steps; the position saved
  // (epoch, step_in_epoch) is derived from step_, never passed in. cut: the
  // cluster is drained at a common round boundary (a consistent cut every
  // node's checkpoint shares); false after a failure.
  void save(const std::string& path, bool cut);
  void log_interval(int epoch, size_t step_in_epoch, bool force);
  std::string checkpoint_path() const;
  // Picks the view data epoch `epoch` is sharded over (runtime/data_views.h)
  // and says so when it is not every configured node.
  void begin_data_epoch(int epoch);
  // A view change: skipped samples, the learning rate of its size.
  void take_view(const net::ViewEvent& e);
  // An automatic period change (algorithm.period "auto"): a record and a line.
  void take_period(const PeriodChange& c);
  // The grid data epochs are decided on (runtime/data_views.h).
  DataGrid data_grid() const;

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
  // Data epochs over views (runtime/data_views.h): the views taken, and this
  // epoch's shard (position among `shard_members_`; -1: none, no batches).
  DataViews data_views_;
  int shard_position_ = 0, shard_members_ = 1;
  AveragingOptions resume_;   // a cluster checkpoint's cut (round, step, anchor), from --resume
  struct Log;
  std::unique_ptr<Log> log_;
};

// Seed of the dropout masks of global step `step` on node `node`: a pure
// function of (seed, node, step), so --resume draws the same masks, and nodes
// draw different masks at the same step (N nodes under `sync` then train like
// one node with an N-fold batch, as without dropout). Node 0's seeds do not
// depend on the node term: single-node runs keep their masks.
uint64_t dropout_seed(uint64_t seed, int node, uint64_t step);

// optimizer.lr, times the view's member count with optimizer.scale_lr (the
// linear scaling rule over the nodes training now).
double view_base_lr(const Config& cfg, size_t members);

// Builds the model a config describes (shape from the dataset).
std::unique_ptr<Model> build_model(const Config& cfg, const Dataset& data);
DatasetSpec dataset_spec(const Config& cfg);

}  // namespace tether
