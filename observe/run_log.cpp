#include "observe/run_log.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>

#include <nlohmann/json.hpp>

#include "observe/metrics_schema.h"

namespace tether {

namespace {

namespace fs = std::filesystem;

// Field readers: a missing field or one of the wrong type reads as `dflt`.
double num(const nlohmann::json& j, const char* key, double dflt = 0) {
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : dflt;
}
uint64_t count(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) return uint64_t(std::max<int64_t>(0, it->get<int64_t>()));
  double d = it->get<double>();
  return d > 0 ? uint64_t(d) : 0;
}
bool flag(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return false;
  if (it->is_boolean()) return it->get<bool>();
  return it->is_number() && it->get<double>() != 0;
}
std::string text(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// A list of node ids, sorted; entries that are not non-negative integers are
// skipped, and a field that is not an array reads as empty.
std::vector<int> ids(const nlohmann::json& j, const char* key) {
  std::vector<int> out;
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& v : *it) {
    if (v.is_number_unsigned() && v.get<uint64_t>() <= 1000000) out.push_back(int(v.get<uint64_t>()));
    else if (v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= 1000000)
      out.push_back(int(v.get<int64_t>()));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// "node-12.jsonl" -> 12; -1 for any other name.
int node_of_file(const std::string& name) {
  const std::string pre = "node-", suf = ".jsonl";
  if (name.size() <= pre.size() + suf.size() || name.compare(0, pre.size(), pre) != 0 ||
      name.compare(name.size() - suf.size(), suf.size(), suf) != 0)
    return -1;
  std::string digits = name.substr(pre.size(), name.size() - pre.size() - suf.size());
  if (digits.empty() || digits.size() > 6 || !std::all_of(digits.begin(), digits.end(), [](char c) {
        return c >= '0' && c <= '9';
      }))
    return -1;
  return std::stoi(digits);
}

void reset_node(NodeLog& n) {
  n.samples.clear();
  n.evals.clear();
  n.final.reset();
  n.failed.reset();
  n.views.clear();
  n.no_quorum.clear();
}

}  // namespace

const char* node_state_name(NodeState s) {
  switch (s) {
    case NodeState::kRunning: return "running";
    case NodeState::kDone: return "done";
    case NodeState::kInterrupted: return "interrupted";
    case NodeState::kFailed: return "failed";
  }
  return "?";
}

NodeState NodeLog::state() const {
  if (failed) return NodeState::kFailed;
  if (final) return final->interrupted ? NodeState::kInterrupted : NodeState::kDone;
  return NodeState::kRunning;
}

std::optional<double> NodeLog::last_test_acc() const {
  if (final && final->test_acc) return final->test_acc;
  if (!evals.empty()) return evals.back().test_acc;
  return std::nullopt;
}

double NodeLog::last_time() const {
  double t = 0;
  if (!samples.empty()) t = std::max(t, samples.back().time);
  if (!evals.empty()) t = std::max(t, evals.back().time);
  if (final) t = std::max(t, final->time);
  if (failed) t = std::max(t, failed->time);
  if (!views.empty()) t = std::max(t, views.back().time);
  if (!no_quorum.empty()) t = std::max(t, no_quorum.back().time);
  return t;
}

const ViewRecord* NodeLog::current_view() const {
  const ViewRecord* cur = nullptr;
  for (const ViewRecord& v : views)
    if (cur == nullptr || v.epoch >= cur->epoch) cur = &v;
  return cur;
}

std::optional<bool> ViewSummary::anchors_equal() const {
  if (anchors.empty()) return std::nullopt;
  const std::string& first = anchors.begin()->second;
  return std::all_of(anchors.begin(), anchors.end(), [&](const auto& kv) { return kv.second == first; });
}

void RunLog::parse_line(NodeLog& node, const std::string& line) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) return;   // blank: nothing to count
  ++node.lines;
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    ++node.malformed;
    return;
  }
  const double time = num(j, field::kTime);
  auto ev = j.find(field::kEvent);
  if (ev == j.end()) {
    if (j.find(field::kStep) == j.end()) {
      ++node.malformed;   // neither a periodic record nor an event
      return;
    }
    NodeSample s;
    s.time = time;
    s.step = count(j, field::kStep);
    // A new run in a reused directory: steps start over.
    if (!node.samples.empty() && s.step < node.samples.back().step) reset_node(node);
    // A resumed run (steps go on) is running again.
    if (node.finished()) {
      node.final.reset();
      node.failed.reset();
    }
    s.round = count(j, field::kRound);
    s.epoch = int(count(j, field::kEpoch));
    s.loss = num(j, field::kLoss);
    s.train_acc = num(j, field::kTrainAcc);
    s.images_per_s = num(j, field::kImagesPerS);
    s.lr = num(j, field::kLr);
    s.idle_frac = num(j, field::kIdleFrac);
    s.idle_frac_total = num(j, field::kIdleFracTotal);
    s.period = j.contains(field::kPeriod) ? int64_t(count(j, field::kPeriod)) : -1;
    s.period_changes = count(j, field::kPeriodChanges);
    s.rounds_in_flight = int64_t(count(j, field::kRoundsInFlight));
    s.disp_norm = num(j, field::kDispNorm);
    s.max_pair_dist = num(j, field::kMaxPairDist);
    s.max_pair_dist_run = num(j, field::kMaxPairDistRun);
    s.bound = num(j, field::kBound);
    s.max_delta_norm = num(j, field::kMaxDeltaNorm);
    s.throttled = flag(j, field::kThrottled);
    s.throttle_count = count(j, field::kThrottleCount);
    s.bytes_sent = count(j, field::kBytesSent);
    s.bytes_recv = count(j, field::kBytesRecv);
    s.msgs_rejected = count(j, field::kMsgsRejected);
    s.delta_claims_refused = count(j, field::kDeltaClaimsRefused);
    s.view_changes = count(j, field::kViewChanges);
    s.tensor_bytes_sent = count(j, field::kTensorBytesSent);
    s.tensor_raw_bytes_sent = count(j, field::kTensorRawBytesSent);
    s.sketch_age_rounds = count(j, field::kSketchAgeRounds);
    s.sketch_age_rounds_max = count(j, field::kSketchAgeRoundsMax);
    s.security = text(j, field::kSecurity);
    s.handshakes_failed = count(j, field::kHandshakesFailed);
    s.handshake_failed = text(j, field::kHandshakeFailedBy);
    node.samples.push_back(s);
    return;
  }
  const std::string event = ev->is_string() ? ev->get<std::string>() : "";
  if (event == field::kEventEval) {
    EvalPoint e;
    e.time = time;
    e.step = count(j, field::kStep);
    e.epoch = int(count(j, field::kEpoch));
    e.test_acc = num(j, field::kTestAcc);
    e.test_loss = num(j, field::kTestLoss);
    node.evals.push_back(e);
  } else if (event == field::kEventFinal) {
    NodeFinal f;
    f.time = time;
    f.steps = count(j, field::kSteps);
    auto acc = j.find(field::kTestAcc);
    if (acc != j.end() && acc->is_number()) f.test_acc = acc->get<double>();
    f.params_hash = text(j, field::kParamsHash);
    f.checkpoint = text(j, field::kCheckpoint);
    f.interrupted = flag(j, field::kInterrupted);
    f.wall_s = num(j, field::kWallS);
    f.idle_frac_total = num(j, field::kIdleFracTotal);
    f.period_changes = count(j, field::kPeriodChanges);
    f.max_pair_dist_run = num(j, field::kMaxPairDistRun);
    f.throttle_count = count(j, field::kThrottleCount);
    f.bytes_sent = count(j, field::kBytesSent);
    f.bytes_recv = count(j, field::kBytesRecv);
    f.msgs_rejected = count(j, field::kMsgsRejected);
    f.delta_claims_refused = count(j, field::kDeltaClaimsRefused);
    f.view_changes = count(j, field::kViewChanges);
    f.tensor_bytes_sent = count(j, field::kTensorBytesSent);
    f.tensor_raw_bytes_sent = count(j, field::kTensorRawBytesSent);
    f.sketch_age_rounds_max = count(j, field::kSketchAgeRoundsMax);
    f.security = text(j, field::kSecurity);
    f.handshakes_failed = count(j, field::kHandshakesFailed);
    f.handshake_failed = text(j, field::kHandshakeFailedBy);
    if (f.test_acc) {
      EvalPoint e;
      e.time = time;
      e.step = f.steps;
      e.epoch = node.samples.empty() ? 0 : node.samples.back().epoch;
      e.test_acc = *f.test_acc;
      e.test_loss = num(j, field::kTestLoss);
      node.evals.push_back(e);
    }
    node.final = std::move(f);
  } else if (event == field::kEventFailed) {
    NodeFailure f;
    f.time = time;
    f.step = count(j, field::kStep);
    f.error = text(j, field::kError);
    f.checkpoint = text(j, field::kCheckpoint);
    node.failed = std::move(f);
  } else if (event == field::kEventView) {
    ViewRecord v;
    v.time = time;
    v.step = count(j, field::kStep);
    v.epoch = count(j, field::kEpoch);
    v.members = ids(j, field::kMembers);
    v.reason = text(j, field::kReason);
    v.resume_round = count(j, field::kResumeRound);
    v.ms = num(j, field::kMs);
    v.anchor_hash = text(j, field::kAnchorHash);
    v.transferred_bytes = count(j, field::kTransferredBytes);
    node.views.push_back(std::move(v));
  } else if (event == field::kEventNoQuorum) {
    NoQuorumRecord q;
    q.time = time;
    q.step = count(j, field::kStep);
    q.unreachable = ids(j, field::kUnreachable);
    q.waited_ms = num(j, field::kWaitedMs);
    node.no_quorum.push_back(std::move(q));
  } else if (event == field::kEventPeriod || event == field::kEventSkippedSamples || event == field::kEventDataEpoch) {
    // Known events the readers show through the periodic records (period)
    // or do not show (data epochs).
  } else {
    ++node.unknown;
  }
}

RunLog::RunLog(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) {
    throw RunLogError(dir_ + ": " + (fs::exists(dir_, ec) ? "not a directory" : "no such directory"));
  }
}

bool RunLog::refresh() {
  std::error_code ec;
  fs::directory_iterator it(dir_, ec);
  if (ec) throw RunLogError(dir_ + ": cannot list: " + ec.message());
  std::map<int, std::string> found;
  for (const auto& entry : it) {
    int id = node_of_file(entry.path().filename().string());
    if (id >= 0 && entry.is_regular_file(ec)) found[id] = entry.path().string();
  }
  bool changed = false;
  for (const auto& [id, path] : found) {
    if (nodes_.find(id) == nodes_.end()) {
      NodeLog n;
      n.node = id;
      n.path = path;
      nodes_.emplace(id, std::move(n));
      changed = true;
    }
    changed |= read_file(id, path);
  }
  return changed;
}

bool RunLog::read_file(int node, const std::string& path) {
  FileState& fst = files_[node];
  NodeLog& n = nodes_.at(node);
  std::error_code ec;
  uint64_t size = fs::file_size(path, ec);
  if (ec) return false;   // removed between listing and reading: try again next time
  if (size < fst.offset) {   // rewritten: start over
    fst = FileState{};
    NodeLog fresh;
    fresh.node = n.node;
    fresh.path = n.path;
    n = std::move(fresh);
  }
  if (size == fst.offset) return false;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  bool changed = false;
  if (std::fseek(f, long(fst.offset), SEEK_SET) == 0) {
    char buf[1 << 16];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) {
      fst.offset += got;
      size_t start = 0;
      // Each '\n' in this chunk ends a line that began in `pending` or here.
      for (size_t i = 0; i < got; ++i) {
        if (buf[i] != '\n') continue;
        fst.pending.append(buf + start, i - start);
        parse_line(n, fst.pending);
        fst.pending.clear();
        start = i + 1;
        changed = true;
      }
      fst.pending.append(buf + start, got - start);
    }
  }
  std::fclose(f);
  return changed;
}

bool RunLog::all_finished() const {
  if (nodes_.empty()) return false;
  return std::all_of(nodes_.begin(), nodes_.end(), [](const auto& kv) { return kv.second.finished(); });
}

size_t RunLog::malformed() const {
  size_t m = 0;
  for (const auto& [id, n] : nodes_) m += n.malformed;
  return m;
}

double RunLog::start_time() const {
  double t = 0;
  for (const auto& [id, n] : nodes_) {
    double first = 0;
    if (!n.samples.empty()) first = n.samples.front().time;
    if (!n.evals.empty() && (first == 0 || n.evals.front().time < first)) first = n.evals.front().time;
    if (n.final && (first == 0 || n.final->time < first)) first = n.final->time;
    if (n.failed && (first == 0 || n.failed->time < first)) first = n.failed->time;
    if (!n.views.empty() && (first == 0 || n.views.front().time < first)) first = n.views.front().time;
    if (!n.no_quorum.empty() && (first == 0 || n.no_quorum.front().time < first)) first = n.no_quorum.front().time;
    if (first > 0 && (t == 0 || first < t)) t = first;
  }
  return t;
}

double RunLog::end_time() const {
  double t = 0;
  for (const auto& [id, n] : nodes_) t = std::max(t, n.last_time());
  return t;
}

std::vector<ViewSummary> RunLog::views() const {
  // Key: (epoch, members); records in node order, then file order.
  std::map<std::pair<uint64_t, std::vector<int>>, ViewSummary> by_view;
  for (const auto& [id, n] : nodes_) {
    for (const ViewRecord& r : n.views) {
      auto [it, fresh] = by_view.try_emplace({r.epoch, r.members});
      ViewSummary& v = it->second;
      if (fresh) {
        v.epoch = r.epoch;
        v.members = r.members;
        v.time = r.time;
        v.resume_round = r.resume_round;
      } else if (r.time < v.time) {
        v.time = r.time;
        v.resume_round = r.resume_round;
      }
      v.ms = std::max(v.ms, r.ms);
      v.transferred_bytes = std::max(v.transferred_bytes, r.transferred_bytes);
      if (!r.anchor_hash.empty()) v.anchors[id] = r.anchor_hash;
      if (v.recorded_by.empty() || v.recorded_by.back() != id) v.recorded_by.push_back(id);
    }
  }
  // The reason of the earliest record that has one (a second pass: the
  // earliest time is known now).
  for (auto& [key, v] : by_view) {
    double best = 0;
    for (const auto& [id, n] : nodes_) {
      for (const ViewRecord& r : n.views) {
        if (r.epoch != v.epoch || r.members != v.members || r.reason.empty()) continue;
        if (v.reason.empty() || r.time < best) {
          v.reason = r.reason;
          best = r.time;
        }
      }
    }
  }
  std::vector<ViewSummary> out;
  for (auto& [key, v] : by_view) out.push_back(std::move(v));
  std::stable_sort(out.begin(), out.end(), [](const ViewSummary& a, const ViewSummary& b) {
    return a.epoch != b.epoch ? a.epoch < b.epoch : a.time < b.time;
  });
  std::vector<int> before;   // the view before out[i]
  for (const auto& [id, n] : nodes_) before.push_back(id);
  for (size_t i = 0; i < out.size(); ++i) {   // i: index into out, in epoch order
    ViewSummary& v = out[i];
    if (i > 0 || v.epoch > 1) {
      std::set_difference(v.members.begin(), v.members.end(), before.begin(), before.end(),
                          std::back_inserter(v.joined));
      std::set_difference(before.begin(), before.end(), v.members.begin(), v.members.end(),
                          std::back_inserter(v.left));
    }
    before = v.members;
  }
  return out;
}

}  // namespace tether
