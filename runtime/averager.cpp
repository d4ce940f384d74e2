#include "runtime/averager.h"

#include <chrono>
#include <cstring>
#include <stdexcept>

#include "observe/metrics_schema.h"
#include "runtime/averaging.h"
#include "runtime/checkpoint.h"   // params_hash
#include "runtime/metrics.h"

namespace tether {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// x_i is the caller's buffer.
class BufferParams : public ParamStore {
 public:
  BufferParams(float* x, size_t count) : x_(x), count_(count) {}
  size_t count() const override { return count_; }
  void read(float* dst) override { std::memcpy(dst, x_, count_ * sizeof(float)); }
  void write(const float* src) override { std::memcpy(x_, src, count_ * sizeof(float)); }
  void add(const float* c) override {
    for (size_t i = 0; i < count_; ++i) x_[i] += c[i];   // i over the buffer
  }

 private:
  float* x_;
  size_t count_;
};

nlohmann::json opt_json(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); }

}  // namespace

Config config_from_text(const std::string& text, const std::vector<std::string>& overrides) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) throw ConfigError("config: not valid JSON");
  if (!doc.is_object()) throw ConfigError("config: expected a JSON object at the top level, got " + doc.dump());
  for (const auto& o : overrides) apply_override(doc, o);
  return parse_config(doc);
}

Averager::Averager(const Config& cfg, int node, float* params, size_t count)
    : Averager(cfg, node, params == nullptr ? nullptr : std::make_unique<BufferParams>(params, count)) {}

Averager::Averager(const Config& cfg, int node, std::unique_ptr<ParamStore> store)
    : cfg_(cfg), node_(node), store_(std::move(store)) {
  if (node < 0 || node >= cfg_.nodes()) {
    throw ConfigError("node " + std::to_string(node) + ": the config has nodes 0.." +
                      std::to_string(cfg_.nodes() - 1));
  }
  if (store_ == nullptr) throw ConfigError("params: null buffer");
  if (store_->count() == 0) throw ConfigError("params: no parameters to average");
  log_ = std::make_unique<MetricsLog>(cfg_.log.dir, node);
  if (cfg_.nodes() > 1) {
    AveragingOptions hooks;
    hooks.on_period = [this](const PeriodChange& c) {   // as the tether binary records it
      log_->write({{field::kEvent, field::kEventPeriod}, {field::kStep, steps_}, {field::kRound, c.round},
                   {field::kPeriod, c.to}, {field::kFrom, c.from}, {field::kStepMs, c.step_ms},
                   {field::kMergeMs, c.merge_ms}});
    };
    avg_ = make_averaging(cfg_, node, store_.get(), hooks);
  }
  start_s_ = interval_start_s_ = now_s();
}

size_t Averager::count() const { return store_->count(); }

Averager::~Averager() = default;

bool Averager::stop_requested() const { return avg_ && avg_->stop_requested(); }
bool Averager::ended() const { return avg_ && avg_->ended(); }
std::string Averager::stop_reason() const { return avg_ ? avg_->stop_reason() : std::string(); }
const std::string& Averager::log_path() const { return log_->path(); }

void Averager::fail(const std::exception& e) {
  failed_ = true;
  log_->write({{field::kEvent, field::kEventFailed}, {field::kStep, steps_}, {field::kError, e.what()},
               {field::kCheckpoint, nullptr}});
  throw;
}

bool Averager::step(const StepStats& s) {
  if (finished_) throw std::logic_error("step(): finish() was already called");
  if (failed_) throw std::logic_error("step(): the averaging failed before (see the exception it raised)");
  ++steps_;
  ++interval_steps_;
  interval_images_ += s.images;
  if (s.loss) {
    interval_loss_ += *s.loss;
    ++interval_loss_steps_;
  }
  if (s.correct) {
    interval_correct_ += *s.correct;
    interval_has_correct_ = true;
  }
  if (s.lr) last_lr_ = s.lr;
  if (s.epoch > 0) epoch_ = s.epoch;
  if (avg_) {
    try {
      avg_->after_step(steps_);
    } catch (const std::exception& e) {
      fail(e);
    }
  }
  if (interval_steps_ >= uint64_t(cfg_.log.every_steps)) write_interval();
  return !stop_requested();
}

void Averager::write_interval() {
  if (interval_steps_ == 0) return;
  const double t = now_s();
  const double dt = std::max(1e-9, t - interval_start_s_);
  nlohmann::json rec = {{field::kStep, steps_},
                        {field::kEpoch, epoch_},
                        {field::kLoss, interval_loss_steps_ ? nlohmann::json(interval_loss_ / double(interval_loss_steps_))
                                                            : nlohmann::json(nullptr)},
                        {field::kTrainAcc, interval_has_correct_ && interval_images_ > 0
                                               ? nlohmann::json(double(interval_correct_) / double(interval_images_))
                                               : nlohmann::json(nullptr)},
                        {field::kImagesPerS, double(interval_images_) / dt},
                        {field::kLr, opt_json(last_lr_)}};
  if (avg_) {
    rec.update(avg_->metrics());
  } else {   // a single node: the binary's zeros
    rec.update({{field::kRound, steps_}, {field::kIdleFrac, 0.0}, {field::kRoundsInFlight, 0},
                {field::kDispNorm, 0.0}, {field::kMaxPairDist, 0.0}, {field::kBound, 0.0},
                {field::kThrottled, false}, {field::kBytesSent, 0}, {field::kBytesRecv, 0}});
  }
  log_->write(rec);
  last_ = rec;
  interval_start_s_ = t;
  interval_steps_ = interval_images_ = interval_correct_ = interval_loss_steps_ = 0;
  interval_loss_ = 0;
  interval_has_correct_ = false;
}

void Averager::finish(std::optional<double> test_acc) {
  if (finished_) throw std::logic_error("finish(): already called");
  if (failed_) throw std::logic_error("finish(): the averaging failed before (see the exception it raised)");
  write_interval();
  const bool interrupted = stop_requested() && !ended();   // an ended run (clocked rounds) is not interrupted
  if (avg_) {
    try {
      avg_->finish();
    } catch (const std::exception& e) {
      fail(e);
    }
  }
  finished_ = true;
  std::vector<float> x(store_->count());
  store_->read(x.data());
  nlohmann::json fin = {{field::kEvent, field::kEventFinal},  {field::kSteps, steps_},
                        {field::kParamsHash, params_hash(x)}, {field::kInterrupted, interrupted},
                        {field::kCheckpoint, nullptr},        {field::kWallS, now_s() - start_s_},
                        {field::kTestAcc, opt_json(test_acc)}};
  if (avg_) fin.update(avg_->metrics());
  log_->write(fin);
  last_ = fin;
}

void Averager::log_eval(double test_acc, std::optional<double> test_loss, int epoch) {
  log_->write({{field::kEvent, field::kEventEval}, {field::kStep, steps_}, {field::kEpoch, epoch},
               {field::kTestAcc, test_acc}, {field::kTestLoss, opt_json(test_loss)}});
}

}  // namespace tether
