// The metrics schema (observe/metrics_schema.h) against the reader (RunLog):
// every field of every record kind changes what RunLog reads when it is
// present, so no schema field is silently dropped by the reader. Each field is
// tried alone on top of the smallest record of its kind (a periodic record
// needs "step", an event needs "event"), set to 7: a number, truthy as a flag,
// nonzero, and "7" where text is read. Whether the writers emit these same
// fields is checked in test/runtime/test_metrics.cpp.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "observe/metrics_schema.h"
#include "observe/run_log.h"

using nlohmann::json;
namespace field = tether::field;

namespace {

tether::NodeLog read(const json& record) {
  tether::NodeLog n;
  tether::RunLog::parse_line(n, record.dump());
  REQUIRE(n.malformed == 0);
  REQUIRE(n.unknown == 0);
  return n;
}

// The smallest record of a kind, and the same with `name` set to 7.
json with(json base, const char* name) {
  base[name] = 7;
  return base;
}

}  // namespace

TEST_CASE("metrics schema: the reader takes every field of a periodic record") {
  const json base = {{field::kStep, 0}};
  const tether::NodeSample plain = read(base).samples.at(0);
  std::set<std::string> tried;
  auto check = [&](const char* name) {
    const std::string field_name = name;
    CAPTURE(field_name);
    tether::NodeLog n = read(with(base, name));
    REQUIRE(n.samples.size() == 1);
    CHECK_FALSE(n.samples[0] == plain);
    tried.insert(name);
  };
  check(field::kTime);
  for (const char* name : field::kIntervalFields) check(name);
  for (const char* name : field::kNetworkFields) check(name);
  for (const char* name : field::kSingleNodeFields) CHECK(tried.count(name) == 1);   // a subset of the network's
  CHECK(tried.size() == 1 + field::kIntervalFields.size() + field::kNetworkFields.size());
}

TEST_CASE("metrics schema: the reader takes every field of the eval, final, failed, view and no_quorum events") {
  SUBCASE("eval") {
    const json base = {{field::kEvent, field::kEventEval}};
    const tether::EvalPoint plain = read(base).evals.at(0);
    for (const char* name : field::kEvalFields) {
      if (std::string(name) == field::kEvent) continue;
      const std::string field_name = name;
      CAPTURE(field_name);
      tether::NodeLog n = read(with(base, name));
      REQUIRE(n.evals.size() == 1);
      CHECK_FALSE(n.evals[0] == plain);
    }
  }
  SUBCASE("final, with the network's run totals") {
    const json base = {{field::kEvent, field::kEventFinal}};
    const tether::NodeFinal plain = read(base).final.value();
    auto check = [&](const char* name) {
      const std::string field_name = name;
      CAPTURE(field_name);
      tether::NodeLog n = read(with(base, name));
      REQUIRE(n.final.has_value());
      CHECK_FALSE(*n.final == plain);
    };
    check(field::kTime);
    for (const char* name : field::kFinalFields)
      if (std::string(name) != field::kEvent) check(name);
    for (const char* name : field::kRunTotalFields) check(name);
    // The final's test accuracy also counts as the last evaluation.
    tether::NodeLog n = read(with(base, field::kTestAcc));
    REQUIRE(n.evals.size() == 1);
    CHECK(n.evals[0].test_acc == 7);
    CHECK(read(with(with(base, field::kTestAcc), field::kTestLoss)).evals.at(0).test_loss == 7);
  }
  SUBCASE("failed") {
    const json base = {{field::kEvent, field::kEventFailed}};
    const tether::NodeFailure plain = read(base).failed.value();
    for (const char* name : {field::kTime, field::kStep, field::kError, field::kCheckpoint}) {
      const std::string field_name = name;
      CAPTURE(field_name);
      tether::NodeLog n = read(with(base, name));
      REQUIRE(n.failed.has_value());
      CHECK_FALSE(*n.failed == plain);
    }
    CHECK(field::kFailedFields.size() == 4);   // kEvent and the three above
  }
  // The id lists (members, unreachable) are arrays: set to [7].
  auto with_any = [](json base, const char* name) {
    const std::string n = name;
    base[name] = n == field::kMembers || n == field::kUnreachable ? json::array({7}) : json(7);
    return base;
  };
  SUBCASE("view") {
    const json base = {{field::kEvent, field::kEventView}};
    const tether::ViewRecord plain = read(base).views.at(0);
    size_t tried = 0;
    for (const char* name : field::kViewFields) {
      if (std::string(name) == field::kEvent) continue;
      const std::string field_name = name;
      CAPTURE(field_name);
      tether::NodeLog n = read(with_any(base, name));
      REQUIRE(n.views.size() == 1);
      CHECK_FALSE(n.views[0] == plain);
      ++tried;
    }
    CHECK_FALSE(read(with_any(base, field::kTime)).views.at(0) == plain);
    CHECK(tried == 8);
  }
  SUBCASE("no_quorum") {
    const json base = {{field::kEvent, field::kEventNoQuorum}};
    const tether::NoQuorumRecord plain = read(base).no_quorum.at(0);
    for (const char* name : {field::kTime, field::kStep, field::kUnreachable, field::kWaitedMs}) {
      const std::string field_name = name;
      CAPTURE(field_name);
      tether::NodeLog n = read(with_any(base, name));
      REQUIRE(n.no_quorum.size() == 1);
      CHECK_FALSE(n.no_quorum[0] == plain);
    }
    CHECK(field::kNoQuorumFields.size() == 4);   // kEvent and the three above
  }
}

TEST_CASE("metrics schema: names are distinct snake_case words; the run totals are network fields") {
  std::set<std::string> all;
  size_t listed = 0;
  auto add = [&](const auto& names) {
    for (const char* name : names) {
      std::string s = name;
      CAPTURE(s);
      CHECK(!s.empty());
      CHECK(s.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos);
      all.insert(s);
      ++listed;
    }
  };
  add(field::kRecordFields);
  add(field::kIntervalFields);
  add(field::kNetworkFields);
  CHECK(all.size() == listed);   // a periodic record has no key twice
  std::set<std::string> network(field::kNetworkFields.begin(), field::kNetworkFields.end());
  for (const char* name : field::kRunTotalFields) CHECK(network.count(name) == 1);
  for (const char* name : field::kSingleNodeFields) CHECK(network.count(name) == 1);
  std::set<std::string> fin(field::kFinalFields.begin(), field::kFinalFields.end());
  CHECK(fin.size() == field::kFinalFields.size());
  for (const char* name : field::kNetworkFields) CHECK(fin.count(name) == 0);   // merged in on a cluster
  std::set<std::string> events = {field::kEventEval, field::kEventFinal, field::kEventFailed, field::kEventView,
                                  field::kEventNoQuorum, field::kEventSkippedSamples, field::kEventDataEpoch};
  CHECK(events.size() == 7);
  add(field::kViewFields);
  add(field::kNoQuorumFields);
  add(field::kSkippedFields);
  add(field::kDataEpochFields);
}
