// The writers of the metrics record against the schema
// (observe/metrics_schema.h): each record kind the node writes holds exactly
// the schema's fields for that kind — none missing (the reader would read 0)
// and none extra (a misspelt name would be one). The averaging algorithm's
// metrics() alone, in-process on two threads over 127.0.0.1; the trainer's
// records through the binary on a small single-node run, then read back by
// RunLog. That the reader takes every schema field is
// test/observe/test_metrics_schema.cpp.
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "observe/metrics_schema.h"
#include "observe/run_log.h"
#include "runtime/averaging.h"
#include "test/runtime/vector_params.h"
#include "test/net/net_test_util.h"
#include "test/runtime/process_util.h"

using nlohmann::json;
using tether::testing::run_command;
using tether::testing::TempDir;
using tether::testing::tether_bin;
namespace field = tether::field;

using tether::testing::VectorParams;

namespace {

using Names = std::set<std::string>;

template <typename... Lists>
Names names(const Lists&... lists) {
  Names out;
  (out.insert(lists.begin(), lists.end()), ...);
  return out;
}

Names keys(const json& record) {
  Names out;
  for (const auto& kv : record.items()) out.insert(kv.key());
  return out;
}

std::vector<json> records(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  for (int n = 0; n < 100000 && std::getline(in, line); ++n) {   // bounded: a small run's file
    json j = json::parse(line, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    out.push_back(std::move(j));
  }
  return out;
}

// A single-node run of a small mlp on synthetic data: 2 epochs of 4 steps, a
// record every 2 steps, an evaluation after each epoch.
const char* kConfig = R"({
  "model": {"name": "mlp", "hidden": 16},
  "data": {"name": "synthetic", "synthetic_train": 128, "synthetic_test": 64, "batch_size": 32},
  "optimizer": {"lr": 0.05},
  "train": {"epochs": 2, "seed": 3, "threads": 1, "eval_every_epochs": 1},
  "log": {"dir": "%DIR%", "every_steps": 2, "progress": false}
})";

std::string config(const TempDir& dir, const std::string& log) {
  std::string s = kConfig;
  s.replace(s.find("%DIR%"), 5, dir.file(log));
  return dir.write(log + ".json", s);
}

}  // namespace

TEST_CASE("metrics: averaging's metrics() writes exactly the schema's network fields") {
  const int nodes = 2;
  const std::vector<int> ports = tether::net::testing::free_ports(nodes);
  std::vector<json> mid(nodes), end(nodes);
  std::vector<std::string> errors(nodes);
  std::vector<std::thread> threads;
  for (int i = 0; i < nodes; ++i) {
    threads.emplace_back([&, i] {
      try {
        tether::net::CommOptions c;
        c.self = i;
        c.peers = tether::net::testing::loopback_peers(ports);
        c.mixer = tether::net::MixerKind::kRing;
        c.window = 2;
        c.connect_timeout_ms = 20000;
        c.heartbeat_ms = 100;
        c.peer_timeout_ms = 10000;
        tether::AveragingOptions o;
        o.node = i;
        o.staleness = 1;
        o.period = 1;
        o.peer_timeout_ms = 10000;
        VectorParams params(std::vector<float>(17, float(i)));
        auto avg = tether::make_overlap_averaging(o, std::make_unique<tether::net::Communicator>(c), &params);
        for (uint64_t t = 1; t <= 6; ++t) {   // 6 steps, a round each
          params.x[t % params.x.size()] += 0.01f * float(i + 1);
          avg->after_step(t);
        }
        mid[size_t(i)] = avg->metrics();   // as the periodic record takes it
        avg->finish();
        end[size_t(i)] = avg->metrics();   // as the final record takes it
      } catch (const std::exception& e) {
        errors[size_t(i)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  const Names network = names(field::kNetworkFields);
  for (int i = 0; i < nodes; ++i) {
    CAPTURE(i);
    REQUIRE(errors[size_t(i)] == "");
    CHECK(keys(mid[size_t(i)]) == network);
    CHECK(keys(end[size_t(i)]) == network);
    CHECK(end[size_t(i)][field::kRound].get<uint64_t>() >= 6);
  }
}

TEST_CASE("metrics: a single node's records hold exactly the schema's fields, and RunLog reads them") {
  TempDir dir("metrics");
  auto r = run_command(tether_bin() + " train " + config(dir, "ok"), 120);
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 0);
  const Names periodic = names(field::kRecordFields, field::kIntervalFields, field::kSingleNodeFields);
  const Names eval = names(field::kRecordFields, field::kEvalFields);
  const Names fin = names(field::kRecordFields, field::kFinalFields);
  size_t n_periodic = 0, n_eval = 0, n_final = 0;
  for (const json& rec : records(dir.file("ok/node-0.jsonl"))) {
    CAPTURE(rec.dump());
    if (!rec.contains(field::kEvent)) {
      ++n_periodic;
      CHECK(keys(rec) == periodic);
    } else if (rec[field::kEvent] == field::kEventEval) {
      ++n_eval;
      CHECK(keys(rec) == eval);
    } else {
      REQUIRE(rec[field::kEvent] == field::kEventFinal);
      ++n_final;
      CHECK(keys(rec) == fin);
    }
  }
  CHECK(n_periodic >= 4);
  CHECK(n_eval == 2);
  CHECK(n_final == 1);

  tether::RunLog log(dir.file("ok"));
  log.refresh();
  REQUIRE(log.nodes().size() == 1);
  const tether::NodeLog& n = log.nodes().at(0);
  CHECK(n.malformed == 0);
  CHECK(n.unknown == 0);
  CHECK(n.samples.size() == n_periodic);
  CHECK(n.samples.back().step == 8);
  CHECK(n.samples.back().images_per_s > 0);
  CHECK(n.state() == tether::NodeState::kDone);
  REQUIRE(n.final.has_value());
  CHECK(n.final->steps == 8);
  CHECK_FALSE(n.final->params_hash.empty());
  CHECK(n.final->test_acc.has_value());
}

TEST_CASE("metrics: a failed node's record holds exactly the schema's fields") {
  TempDir dir("metrics-failed");
  auto r = run_command(tether_bin() + " train " + config(dir, "fail") + " --fail-after-step 3", 120);
  CAPTURE(r.output);
  REQUIRE(r.exit_code == 1);
  const Names failed = names(field::kRecordFields, field::kFailedFields);
  size_t n_failed = 0;
  for (const json& rec : records(dir.file("fail/node-0.jsonl"))) {
    if (!rec.contains(field::kEvent) || rec[field::kEvent] != field::kEventFailed) continue;
    CAPTURE(rec.dump());
    ++n_failed;
    CHECK(keys(rec) == failed);
  }
  CHECK(n_failed == 1);
  tether::RunLog log(dir.file("fail"));
  log.refresh();
  REQUIRE(log.nodes().size() == 1);
  const tether::NodeLog& n = log.nodes().at(0);
  CHECK(n.state() == tether::NodeState::kFailed);
  CHECK(n.failed->step == 3);
  CHECK(n.failed->error.find("injected failure after step 3") != std::string::npos);
}
