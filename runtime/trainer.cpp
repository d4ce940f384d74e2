#include "runtime/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "models/kernel_math.h"
#include "models/zoo.h"
#include "runtime/checkpoint.h"
#include "runtime/device.h"
#include "runtime/metrics.h"

namespace tether {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

struct Trainer::Log {
  MetricsLog metrics;
  Progress progress;
  Log(const Config& cfg, int node)  // scripts/local-cluster.sh prefixes node ids
      : metrics(cfg.log.dir, node),
        progress(cfg.log.progress, "") {}
};

DatasetSpec dataset_spec(const Config& cfg) {
  DatasetSpec spec;
  spec.name = cfg.data.name;
  spec.path = cfg.data.path;
  spec.synthetic_train = size_t(cfg.data.synthetic_train);
  spec.synthetic_test = size_t(cfg.data.synthetic_test);
  spec.seed = cfg.train.seed;
  return spec;
}

std::unique_ptr<Model> build_model(const Config& cfg, const Dataset& data) {
  const Shape input{data.channels, data.height, data.width};
  try {
    if (!cfg.model.layers.empty()) {
      return make_declared_model(cfg.model.name, cfg.model.layers, input, data.classes, "model.layers");
    }
    ModelSpec spec;
    spec.name = cfg.model.name;
    spec.depth = cfg.model.depth;
    spec.width = cfg.model.width;
    spec.hidden = cfg.model.hidden;
    spec.dropout = float(cfg.model.dropout);
    return make_model(spec, input, data.classes);
  } catch (const ModelDeclError& e) {
    // parse_config checked the declaration against data.name's usual images;
    // these files have others.
    throw ConfigError(std::string(e.what()) + " [the data set read has images " + input.str() + ", " +
                      std::to_string(data.classes) + " classes]");
  }
}

double view_base_lr(const Config& cfg, size_t members) {
  return cfg.optimizer.lr * (cfg.optimizer.scale_lr ? double(members) : 1.0);
}

uint64_t dropout_seed(uint64_t seed, int node, uint64_t step) {
  // The node enters above bit 48 (ids < 4096): for one step, mix64 being a
  // bijection, distinct nodes get distinct seeds; node 0 keeps the seeds
  // single-node runs had before the node was part of it.
  return kmath::mix64(seed ^ kmath::mix64(step + 0x51ed) ^ (uint64_t(node) << 48));
}

Trainer::Trainer(Config cfg, TrainOptions opts) : cfg_(std::move(cfg)), opts_(std::move(opts)) {}
Trainer::~Trainer() = default;

std::string Trainer::checkpoint_path() const { return checkpoint_path_for_node(cfg_, opts_.node); }

void Trainer::setup() {
  if (opts_.node < 0 || opts_.node >= cfg_.nodes()) {
    throw ConfigError("--node " + std::to_string(opts_.node) + ": the config has nodes 0.." +
                      std::to_string(cfg_.nodes() - 1));
  }
  if (!opts_.resume.empty()) check_resume_config(opts_.resume, load_checkpoint_meta(opts_.resume), cfg_);
  BackendOptions bo;
  bo.threads = cfg_.train.threads;
  bo.tf32 = cfg_.train.tf32;
  be_ = make_backend(cfg_.device, bo);
  data_ = load_dataset(dataset_spec(cfg_));
  model_ = build_model(cfg_, data_.train);
  const int batch = cfg_.data.batch_size;
  model_->build(be_.get(), batch, cfg_.train.seed);
  sampler_ = std::make_unique<ShardedSampler>(data_.train.count(), opts_.node, cfg_.nodes(), batch, cfg_.train.seed);
  shard_position_ = opts_.node;
  shard_members_ = cfg_.nodes();

  SgdOptions so;
  so.lr = float(cfg_.optimizer.lr);
  so.momentum = float(cfg_.optimizer.momentum);
  so.weight_decay = float(cfg_.optimizer.weight_decay);
  so.nesterov = cfg_.optimizer.nesterov;
  sgd_ = std::make_unique<Sgd>(be_.get(), model_->trainable_count(), so);

  const uint64_t spe = sampler_->steps_per_epoch();
  total_steps_ = spe * uint64_t(cfg_.train.epochs);
  if (cfg_.train.max_steps > 0) total_steps_ = std::min<uint64_t>(total_steps_, uint64_t(cfg_.train.max_steps));
  schedule_.kind = cfg_.optimizer.schedule;
  schedule_.base_lr = view_base_lr(cfg_, size_t(cfg_.nodes()));   // a view change sets it again (take_view)
  schedule_.warmup_steps = uint64_t(std::llround(cfg_.optimizer.warmup_epochs * double(spe)));
  schedule_.total_steps = spe * uint64_t(cfg_.train.epochs);   // max_steps stops early; it does not reshape the schedule
  schedule_.min_lr = cfg_.optimizer.min_lr;
  schedule_.step_every = uint64_t(std::llround(cfg_.optimizer.step_epochs * double(spe)));
  schedule_.gamma = cfg_.optimizer.gamma;

  const size_t image = data_.train.image_bytes();
  x_ = DeviceBuffer<float>(be_.get(), size_t(batch) * image);
  y_ = DeviceBuffer<int32_t>(be_.get(), size_t(batch));
  stats_ = DeviceBuffer<float>(be_.get(), 2);
  host_images_.resize(size_t(batch) * image);
  host_labels_.resize(size_t(batch));
  log_ = std::make_unique<Log>(cfg_, opts_.node);

  if (!opts_.resume.empty()) {
    Checkpoint ck = load_checkpoint(opts_.resume);
    // Any node's checkpoint of this cluster: this node takes its parameters,
    // momentum and anchor; the data shard stays this node's (sampler_ and the
    // dropout seed are functions of opts_.node and the step).
    const int source = resume_source_node(opts_.resume, ck.meta, cfg_, model_->name());
    if (ck.params.size() != model_->param_count() || ck.momentum.size() != model_->trainable_count()) {
      throw CheckpointError(opts_.resume + ": holds " + std::to_string(ck.params.size()) + " parameters, the model has " +
                            std::to_string(model_->param_count()));
    }
    model_->upload_params(ck.params);
    be_->upload(sgd_->momentum_buffer(), ck.momentum.data(), ck.momentum.size() * sizeof(float));
    step_ = ck.meta.value("step", uint64_t(0));
    start_epoch_ = int(step_ / spe);   // as in save(): a function of step_ alone
    start_step_in_epoch_ = size_t(step_ % spe);
    last_test_acc_ = ck.meta.value("test_acc", -1.0);
    if (cfg_.nodes() > 1) {
      // Where the cluster resumes: every peer must start from the same cut
      // (the hello compares round and step).
      if (!ck.meta.contains("round")) {
        throw CheckpointError(opts_.resume + ": holds no round number: it was not written at a cluster cut "
                              "(tether too old?); start the cluster fresh");
      }
      if (!ck.meta.value("cut", false)) {
        log_->progress.line("warning: " + opts_.resume + " was written at a failure, not at a cluster cut: "
                            "the rounds it had in flight are lost");
      }
      resume_.first_round = ck.meta.value("round", uint64_t(0));
      resume_.start_step = step_;
      resume_.anchor = std::move(ck.anchor);
      resume_.max_delta = ck.meta.value("max_delta", 0.0);
      if (cfg_.algorithm.period_auto) resume_.period = std::max(1, ck.meta.value("period", 1));   // H at the cut
    }
    std::string whose;
    if (source != opts_.node) {
      whose = ": node " + std::to_string(opts_.node) + " starts from node " + std::to_string(source) +
              "'s parameters, momentum" + (resume_.anchor.empty() ? "" : " and anchor") +
              "; its data shard stays its own (chosen by node id and step)";
    }
    log_->progress.line("resumed from " + opts_.resume + " at step " + std::to_string(step_) + " (epoch " +
                        std::to_string(start_epoch_ + 1) + ")" + whose);
  }
  if (cfg_.nodes() > 1) {
    // Every view change this node takes part in: a record and a line.
    data_views_ = DataViews::from_start(cfg_.nodes());
    resume_.on_view = [this](const net::ViewEvent& e) { take_view(e); };
    resume_.on_period = [this](const PeriodChange& c) { take_period(c); };
    if (!opts_.crash_point.empty()) {   // test hook: once, on the I/O thread
      resume_.test_crash_at = [point = opts_.crash_point, from = opts_.crash_round,
                               fired = std::make_shared<bool>(false)](const char* at, uint64_t round) {
        if (*fired || point != at || round < from) return false;
        *fired = true;
        return true;
      };
    }
    resume_.gossip_barrier = opts_.gossip_barrier;
    avg_ = make_averaging(cfg_, opts_.node, *model_, resume_);
    resume_.anchor = std::vector<float>();   // the averaging holds x̄ from here
    if (avg_->joined()) {   // a running cluster took this node in: it starts from x̄ at the view's round
      step_ = avg_->start_step();
      start_epoch_ = int(step_ / spe);
      start_step_in_epoch_ = size_t(step_ % spe);
      log_->progress.line("joined the running cluster at step " + std::to_string(step_) + " (epoch " +
                          std::to_string(start_epoch_ + 1) + ")");
    }
  }
  log_->progress.line(model_->summary());
  const std::string dir = dataset_dir(dataset_spec(cfg_));
  log_->progress.line("backend " + be_->name() + ", data " + data_.train.name +
                      (dir.empty() ? std::string(" (generated, seed ") + std::to_string(cfg_.train.seed) + ")"
                                   : " from " + dir) +
                      " (" +
                      std::to_string(data_.train.count()) + " train / " + std::to_string(data_.test.count()) +
                      " test), " + std::to_string(spe) + " steps per epoch on node " + std::to_string(opts_.node) +
                      " of " + std::to_string(cfg_.nodes()));
}

void Trainer::take_view(const net::ViewEvent& e) {
  char hash[24];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(e.anchor_hash));
  nlohmann::json rec = {{field::kEvent, field::kEventView}, {field::kStep, step_}, {field::kEpoch, e.epoch},
                        {field::kMembers, e.members}, {field::kReason, e.reason},
                        {field::kResumeRound, e.resume_round}, {field::kMs, e.ms},
                        {field::kTransferredBytes, e.transferred_bytes}};
  if (e.has_anchor) rec[field::kAnchorHash] = hash;  // gossip has no shared anchor
  log_->metrics.write(rec);
  std::string members;
  for (int m : e.members) members += (members.empty() ? "" : ",") + std::to_string(m);
  char line[160];
  std::snprintf(line, sizeof line, "view %u: nodes {%s} from round %llu (%.0f ms%s%s): ", e.epoch,
                members.c_str(), static_cast<unsigned long long>(e.resume_round), e.ms,
                e.has_anchor ? ", x̄ " : "", e.has_anchor ? hash : "");
  log_->progress.line(line + e.reason);

  // The learning rate follows the view's size from here on.
  schedule_.base_lr = view_base_lr(cfg_, e.members.size());
  // Data: a joiner knows the views from its join on; the members count what
  // the nodes this view leaves out would have trained (runtime/data_views.h).
  DataView v;
  v.epoch = e.epoch;
  v.members = e.members;
  v.resume_round = e.resume_round;
  if (e.joined) data_views_ = DataViews();
  for (const SkippedSamples& s : skipped_by(data_views_, v, *sampler_, data_grid())) {
    log_->metrics.write({{field::kEvent, field::kEventSkippedSamples}, {field::kStep, step_},
                         {field::kEpoch, s.epoch + 1}, {field::kCount, s.count}, {field::kNodes, s.nodes},
                         {field::kMembers, s.members}, {field::kFromStep, s.from_step}, {field::kToStep, s.to_step}});
    std::string left;
    for (int m : s.nodes) left += (left.empty() ? "" : ",") + std::to_string(m);
    log_->progress.line("epoch " + std::to_string(s.epoch + 1) + ": " + std::to_string(s.count) +
                        " samples skipped (the shards of node(s) {" + left + "} from step " +
                        std::to_string(s.from_step) + " to " + std::to_string(s.to_step) +
                        "); data epochs decided from round " + std::to_string(e.resume_round) +
                        " on are sharded over view " + std::to_string(e.epoch));
  }
  data_views_.add(std::move(v));
}

DataGrid Trainer::data_grid() const {
  DataGrid grid;
  grid.steps_per_epoch = sampler_->steps_per_epoch();
  grid.total_steps = total_steps_;
  grid.period = cfg_.algorithm.period;
  grid.staleness = cfg_.effective_staleness();
  if (avg_ && cfg_.algorithm.clocked_rounds()) {   // rounds are not H steps: the node's own map
    grid.rounds_before_step = [a = avg_.get()](uint64_t step) { return a->rounds_before_step(step); };
    grid.first_step_of_round = [a = avg_.get()](uint64_t round) { return a->first_step_of_round(round); };
  }
  return grid;
}

void Trainer::take_period(const PeriodChange& c) {
  log_->metrics.write({{field::kEvent, field::kEventPeriod}, {field::kStep, step_}, {field::kRound, c.round},
                       {field::kPeriod, c.to}, {field::kFrom, c.from}, {field::kStepMs, c.step_ms},
                       {field::kMergeMs, c.merge_ms}});
  char line[160];
  std::snprintf(line, sizeof line, "period H %d -> %d from round %llu (step %.1f ms, merge %.1f ms)", c.from, c.to,
                static_cast<unsigned long long>(c.round), c.step_ms, c.merge_ms);
  log_->progress.line(line);
}

void Trainer::begin_data_epoch(int epoch) {
  if (!avg_) return;   // a single node: the constructor's shard
  const uint64_t start = uint64_t(epoch) * sampler_->steps_per_epoch();
  const DataView* view = data_views_.for_round(data_decision_round(data_grid(), start));
  const int position = view ? view->position(opts_.node) : -1;
  shard_position_ = position;
  shard_members_ = view ? int(view->members.size()) : 0;
  if (view && view->initial) return;   // every configured node, as without views
  nlohmann::json rec = {{field::kEvent, field::kEventDataEpoch}, {field::kStep, step_}, {field::kEpoch, epoch + 1},
                        {field::kPosition, position}};
  rec[field::kMembers] = view ? nlohmann::json(view->members) : nlohmann::json(nullptr);
  rec[field::kSamples] = position >= 0 ? sampler_->samples_between(0, sampler_->steps_per_epoch(), position,
                                                                   shard_members_)
                                       : 0;
  rec[field::kUncovered] = view ? nlohmann::json(sampler_->uncovered_per_epoch(shard_members_)) : nlohmann::json(nullptr);
  log_->metrics.write(rec);
  if (position < 0) {
    log_->progress.line("epoch " + std::to_string(epoch + 1) + ": sharded over a view without this node " +
                        "(joined after it was decided): its steps run without a batch");
    return;
  }
  std::string members;
  for (int m : view->members) members += (members.empty() ? "" : ",") + std::to_string(m);
  log_->progress.line("epoch " + std::to_string(epoch + 1) + ": data sharded over view " + std::to_string(view->epoch) +
                      " {" + members + "}: position " + std::to_string(position) + " of " +
                      std::to_string(shard_members_) + ", " + rec[field::kSamples].dump() + " samples here, " +
                      rec[field::kUncovered].dump() + " not covered this epoch");
}

// compute "synthetic": a step that costs a set time without using the CPU
// and changes the parameters by a random update of the model's size (a slice
// of a pre-drawn pool at a pseudo-random offset, scaled by the learning rate).
void Trainer::synthetic_step(uint64_t step) {
  constexpr size_t kSlack = 4096;
  const size_t d = model_->trainable_count();
  if (synthetic_pool_.size() == 0) {
    std::vector<float> pool(d + kSlack);
    uint64_t stream = kmath::mix64(cfg_.train.seed ^ (uint64_t(opts_.node) << 32));
    for (size_t i = 0; i < pool.size(); ++i) pool[i] = 2.0f * kmath::uniform01(stream, i) - 1.0f;
    synthetic_pool_ = DeviceBuffer<float>(be_.get(), pool.size());
    be_->upload(synthetic_pool_.get(), pool.data(), pool.size() * sizeof(float));
  }
  std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(cfg_.train.synthetic_step_ms));
  size_t offset = kmath::mix64(step ^ (uint64_t(opts_.node) << 40)) % kSlack;
  be_->axpy(d, -float(schedule_.at(step)) * 1e-3f, synthetic_pool_.get() + offset, model_->params());
  interval_images_ += uint64_t(cfg_.data.batch_size);
  interval_steps_ += 1;
}

void Trainer::train_step(uint64_t step, int epoch, size_t step_in_epoch) {
  if (shard_position_ < 0) return;   // not in this data epoch's view: no batch, Δ stays 0
  if (cfg_.train.compute == "synthetic") {
    synthetic_step(step);
    return;
  }
  sampler_->batch(epoch, step_in_epoch, shard_position_, shard_members_, &indices_);
  const int n = int(indices_.size());
  gather_batch(data_.train, indices_.data(), indices_.size(), host_images_.data(), host_labels_.data());
  be_->normalize_bytes(size_t(n) * data_.train.image_bytes(), host_images_.data(), data_.train.mean, data_.train.std,
                       x_.get());
  be_->upload(y_.get(), host_labels_.data(), size_t(n) * sizeof(int32_t));
  model_->forward_backward(x_.get(), y_.get(), n, dropout_seed(cfg_.train.seed, opts_.node, step), stats_.get());
  sgd_->step(float(schedule_.at(step)), model_->grads(), model_->params());
  interval_images_ += uint64_t(n);
  interval_steps_ += 1;
}

double Trainer::evaluate(double* loss) {
  const Dataset& test = data_.test;
  const int batch = cfg_.data.batch_size;
  DeviceBuffer<float> stats(be_.get(), 2);
  std::vector<uint32_t> idx(static_cast<size_t>(batch), 0u);
  for (size_t begin = 0; begin < test.count(); begin += size_t(batch)) {
    size_t n = std::min(size_t(batch), test.count() - begin);
    for (size_t i = 0; i < n; ++i) idx[i] = uint32_t(begin + i);
    gather_batch(test, idx.data(), n, host_images_.data(), host_labels_.data());
    be_->normalize_bytes(n * test.image_bytes(), host_images_.data(), test.mean, test.std, x_.get());
    be_->upload(y_.get(), host_labels_.data(), n * sizeof(int32_t));
    model_->evaluate(x_.get(), y_.get(), int(n), stats.get());
  }
  float s[2];
  be_->download(s, stats.get(), sizeof s);
  if (loss != nullptr) *loss = test.count() ? double(s[0]) / double(test.count()) : 0.0;
  return test.count() ? double(s[1]) / double(test.count()) : 0.0;
}

void Trainer::save(const std::string& path, bool cut) {
  // The next step to run. Every epoch has steps_per_epoch() steps (the
  // sampler's contract), so the position is a function of the steps done and
  // cannot disagree with them whichever way the loop was left.
  const uint64_t spe = sampler_->steps_per_epoch();
  const int epoch = int(step_ / spe);
  const size_t step_in_epoch = size_t(step_ % spe);
  Checkpoint ck;
  ck.meta = {{"model", model_->name()},   {"data", cfg_.data.name},   {"node", opts_.node},
             {"nodes", cfg_.nodes()},     {"batch_size", cfg_.data.batch_size},
             {"seed", cfg_.train.seed},   {"step", step_},
             {"epoch", epoch},            {"step_in_epoch", step_in_epoch},
             {"test_acc", last_test_acc_}, {"config_hash", config_hash(cfg_)}, {"run_config", run_config_meta(cfg_)},
             {"rng", {{"sampler_seed", cfg_.train.seed}, {"dropout_counter", step_}}}};
  ck.params = model_->download_params();
  ck.momentum.resize(sgd_->count());
  be_->download(ck.momentum.data(), sgd_->momentum_buffer(), ck.momentum.size() * sizeof(float));
  if (avg_) {
    ck.anchor = avg_->anchor();
    ck.meta["round"] = avg_->next_round();      // the cut: every node of it holds the same
    ck.meta["max_delta"] = avg_->max_delta();
    ck.meta["period"] = avg_->period();
    ck.meta["cut"] = cut;
  }
  std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  save_checkpoint(path, ck);
}

void Trainer::log_interval(int epoch, size_t step_in_epoch, bool force) {
  if (!force && interval_steps_ < uint64_t(cfg_.log.every_steps)) return;
  if (interval_steps_ == 0) return;
  float s[2];
  be_->download(s, stats_.get(), sizeof s);
  be_->fill(2, 0.0f, stats_.get());
  double t = now_s();
  double dt = std::max(1e-9, t - interval_start_);
  double ips = double(interval_images_) / dt;
  double loss = double(s[0]) / double(interval_images_);
  double acc = double(s[1]) / double(interval_images_);
  nlohmann::json rec = {{field::kStep, step_}, {field::kEpoch, epoch + 1}, {field::kLoss, loss},
                        {field::kTrainAcc, acc}, {field::kImagesPerS, ips},
                        {field::kLr, schedule_.at(step_ > 0 ? step_ - 1 : 0)}};
  nlohmann::json net = avg_ ? avg_->metrics() : nlohmann::json::object();
  if (avg_) {
    rec.update(net);
  } else {
    rec.update({{field::kRound, step_}, {field::kIdleFrac, 0.0}, {field::kRoundsInFlight, 0},
                {field::kDispNorm, 0.0}, {field::kMaxPairDist, 0.0}, {field::kBound, 0.0},
                {field::kThrottled, false}, {field::kBytesSent, 0}, {field::kBytesRecv, 0}});
  }
  log_->metrics.write(rec);
  const uint64_t spe = sampler_->steps_per_epoch();
  double elapsed = t - run_start_;
  uint64_t done_here = step_ - (uint64_t(start_epoch_) * spe + start_step_in_epoch_);
  double eta = done_here ? elapsed / double(done_here) * double(total_steps_ - std::min(step_, total_steps_)) : -1;
  char buf[256];
  std::snprintf(buf, sizeof buf, "epoch %d/%d  step %zu/%llu  loss %.4f  acc %.1f%%  %.0f img/s  ETA %s", epoch + 1,
                cfg_.train.epochs, step_in_epoch, static_cast<unsigned long long>(spe), loss, acc * 100, ips,
                format_duration(eta).c_str());
  std::string text = buf;
  if (avg_) {
    const nlohmann::json& m = net;
    std::snprintf(buf, sizeof buf, "  idle %.1f%%  dist %.3g/%.3g%s", m.value(field::kIdleFrac, 0.0) * 100,
                  m.value(field::kMaxPairDist, 0.0), m.value(field::kBound, 0.0),
                  m.value(field::kThrottled, false) ? " THROTTLED" : "");
    text += buf;
  }
  log_->progress.update(text);
  interval_images_ = 0;
  interval_steps_ = 0;
  interval_start_ = t;
}

TrainResult Trainer::run() {
  setup();
  TrainResult result;
  const uint64_t spe = sampler_->steps_per_epoch();
  run_start_ = interval_start_ = now_s();
  int epoch = start_epoch_;
  size_t sie = start_step_in_epoch_;
  bool stopped = false;
  try {
  for (; epoch < cfg_.train.epochs && step_ < total_steps_ && !stopped; ++epoch, sie = 0) {
    begin_data_epoch(epoch);
    for (; sie < spe && step_ < total_steps_; ++sie) {
      if (opts_.stop != nullptr && opts_.stop->load()) {
        // A single node stops here; a cluster stops at a common round
        // boundary so that its checkpoints form one cut.
        if (!avg_) {
          stopped = true;
          break;
        }
        avg_->request_stop();
      }
      if (avg_ && avg_->stop_requested()) {
        stopped = true;
        break;
      }
      train_step(step_, epoch, sie);
      if (cfg_.train.extra_step_ms > 0)   // test aid: a slow node (config.h)
        std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(cfg_.train.extra_step_ms));
      ++step_;
      if (opts_.fail_after_step != 0 && step_ == opts_.fail_after_step) {
        throw std::runtime_error("injected failure after step " + std::to_string(step_) + " (--fail-after-step)");
      }
      if (opts_.stall_after_step != 0 && step_ == opts_.stall_after_step) {   // a wedged trainer (test hook)
        std::this_thread::sleep_for(std::chrono::milliseconds(opts_.stall_ms));
      }
      if (avg_) avg_->after_step(step_);
      log_interval(epoch, sie + 1, false);
      if (cfg_.train.checkpoint_every_steps > 0 && step_ % uint64_t(cfg_.train.checkpoint_every_steps) == 0) {
        // Every node is at the same round boundary (the period divides the
        // checkpoint interval): drained, the checkpoints form one cut.
        if (avg_) avg_->drain();
        save(checkpoint_path(), true);
        result.checkpoint = checkpoint_path();
      }
    }
    if (stopped) break;
    if (sie < spe) break;   // max_steps ended the epoch early
    log_interval(epoch, sie, true);
    bool last = epoch + 1 == cfg_.train.epochs || step_ >= total_steps_;
    if (cfg_.train.eval_every_epochs > 0 && ((epoch + 1) % cfg_.train.eval_every_epochs == 0 || last) && !avg_ &&
        cfg_.train.compute == "real") {
      double loss = 0;
      last_test_acc_ = evaluate(&loss);
      log_->metrics.write({{field::kEvent, field::kEventEval}, {field::kStep, step_}, {field::kEpoch, epoch + 1},
                           {field::kTestAcc, last_test_acc_}, {field::kTestLoss, loss}});
      char buf[128];
      std::snprintf(buf, sizeof buf, "epoch %d: test_acc %.2f%%  test_loss %.4f", epoch + 1, last_test_acc_ * 100, loss);
      log_->progress.line(buf);
    }
  }
  log_interval(std::min(epoch, cfg_.train.epochs - 1), sie, true);
  log_->progress.finish();
  if (avg_) avg_->finish();   // drain rounds; ring: every node ends with x̄
  } catch (const net::TestCrash&) {
    throw;   // a crash on purpose (--crash-at): as kill -9 would, no checkpoint, no record
  } catch (const std::exception& e) {
    // A lost peer or a failed merge: keep this node's work, say why, fail.
    log_->progress.finish();
    std::string saved;
    try {
      save(checkpoint_path(), false);
      saved = checkpoint_path();
    } catch (const std::exception& ce) {
      saved = std::string("none (") + ce.what() + ")";
    }
    if (const auto* nq = dynamic_cast<const net::NoQuorum*>(&e)) {
      log_->metrics.write({{field::kEvent, field::kEventNoQuorum}, {field::kStep, step_},
                           {field::kUnreachable, nq->unreachable}, {field::kWaitedMs, cfg_.net.quorum_wait_ms}});
    }
    log_->metrics.write({{field::kEvent, field::kEventFailed}, {field::kStep, step_}, {field::kError, e.what()},
                         {field::kCheckpoint, saved}});
    // No majority: the survivors' checkpoints need not be one cut, and the
    // lost nodes may have none; every node resuming from one file is one.
    const bool no_quorum = dynamic_cast<const net::NoQuorum*>(&e) != nullptr && saved == checkpoint_path();
    log_->progress.line("failed at step " + std::to_string(step_) + ": " + e.what() + "; checkpoint " + saved +
                        (no_quorum ? "; to continue: start every node with --resume " + saved : std::string()));
    throw;
  }
  if (avg_ && avg_->ended()) {
    // Clocked rounds: another node ran all its steps and the run ended at a
    // common cut; this node's remaining steps are not trained.
    if (step_ < total_steps_)
      log_->progress.line("the run ended at round " + std::to_string(avg_->next_round()) + " with this node at step " +
                          std::to_string(step_) + " of " + std::to_string(total_steps_) + " (" + avg_->stop_reason() +
                          "); its remaining " + std::to_string(total_steps_ - step_) + " steps are skipped");
    stopped = false;
  }
  if (stopped || (!avg_ && opts_.stop != nullptr && opts_.stop->load()) ||
      (avg_ && avg_->stop_requested() && !avg_->ended())) {
    result.interrupted = true;
    save(checkpoint_path(), avg_ && avg_->at_cut());
    result.checkpoint = checkpoint_path();
    std::string why = avg_ && avg_->stop_requested() ? " (" + avg_->stop_reason() + ")" : "";
    log_->progress.line("interrupted at step " + std::to_string(step_) + why + "; checkpoint " + result.checkpoint);
  } else {
    double loss = 0;
    bool stale = avg_ || last_test_acc_ < 0 || step_ % spe != 0;
    if (stale && cfg_.train.compute == "real") last_test_acc_ = evaluate(&loss);
    result.test_loss = loss;
    save(checkpoint_path(), true);
    result.checkpoint = checkpoint_path();
  }
  std::vector<float> params = model_->download_params();
  result.params_hash = params_hash(params);
  result.test_acc = result.interrupted ? -1.0 : last_test_acc_;
  result.steps = step_;
  nlohmann::json fin = {{field::kEvent, field::kEventFinal}, {field::kSteps, step_},
                        {field::kParamsHash, result.params_hash}, {field::kInterrupted, result.interrupted},
                        {field::kCheckpoint, result.checkpoint}, {field::kWallS, now_s() - run_start_}};
  fin[field::kTestAcc] =
      result.interrupted || result.test_acc < 0 ? nlohmann::json(nullptr) : nlohmann::json(result.test_acc);
  if (avg_) fin.update(avg_->metrics());
  log_->metrics.write(fin);
  return result;
}

double Trainer::evaluate_checkpoint(const Config& cfg, const std::string& path, double* loss, bool any_data) {
  Checkpoint ck = load_checkpoint(path);
  // A model scored on another data set's test split gives a meaningless
  // number (issue 11: a Fashion-MNIST lenet scored 15.6% on synthetic):
  // refuse unless asked.
  // Checkpoints from before the "data" key carry no name and are not checked.
  if (!any_data && ck.meta.contains("data") && ck.meta["data"] != cfg.data.name) {
    throw CheckpointError(path + ": trained on data set " + ck.meta["data"].dump() + ", the config's data.name is \"" +
                          cfg.data.name + "\" (set data.name to match, or pass --any-data to evaluate anyway)");
  }
  TrainOptions opts;
  Trainer t(cfg, opts);
  BackendOptions bo;
  bo.threads = cfg.train.threads;
  t.be_ = make_backend(cfg.device, bo);
  t.data_ = load_dataset(dataset_spec(cfg));
  t.model_ = build_model(cfg, t.data_.train);
  t.model_->build(t.be_.get(), cfg.data.batch_size, cfg.train.seed);
  if (ck.meta.value("model", std::string()) != t.model_->name() || ck.params.size() != t.model_->param_count()) {
    throw CheckpointError(path + ": holds model " + ck.meta.value("model", std::string("?")) + " with " +
                          std::to_string(ck.params.size()) + " parameters; the config builds " + t.model_->name() +
                          " with " + std::to_string(t.model_->param_count()));
  }
  t.model_->upload_params(ck.params);
  const size_t image = t.data_.test.image_bytes();
  t.x_ = DeviceBuffer<float>(t.be_.get(), size_t(cfg.data.batch_size) * image);
  t.y_ = DeviceBuffer<int32_t>(t.be_.get(), size_t(cfg.data.batch_size));
  t.host_images_.resize(size_t(cfg.data.batch_size) * image);
  t.host_labels_.resize(size_t(cfg.data.batch_size));
  return t.evaluate(loss);
}

}  // namespace tether
