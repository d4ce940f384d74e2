// Membership records ({"event": "view"}, {"event": "no_quorum"}) through
// RunLog, the dashboard frame and the HTML report, on hand-written logs of a
// 4-node run: node 2 is lost at t0 + 10 s (view 2 without it) and rejoins at
// t0 + 20 s (view 3 with it), its log going on as a resumed run does. One
// fixture has the members agree on every anchor hash, one has node 2's
// differ at epoch 3, one has 2 of 4 nodes left without a quorum.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "observe/dashboard.h"
#include "observe/report.h"
#include "observe/run_log.h"
#include "test/observe/text_util.h"
#include "test/runtime/process_util.h"

using nlohmann::json;
using tether::testing::contains;
using tether::testing::count_of;
using tether::testing::lines_of;
using tether::testing::read_all;
using tether::testing::run_command;
using tether::testing::TempDir;
using tether::testing::tether_bin;

namespace {

constexpr double kT0 = 1.7e9;   // the run's first record (seconds since the epoch)

// A periodic record of `node` at t0 + t_s; the step grows with t.
std::string sample(int node, double t_s) {
  json j = {{"time", kT0 + t_s}, {"node", node},          {"step", uint64_t(t_s * 10) + 1},
            {"round", uint64_t(t_s * 2)}, {"epoch", 1}, {"loss", 1.0 / (1.0 + t_s)},
            {"images_per_s", 500 + node}, {"bound", 1.0}, {"max_pair_dist", 0.1}};
  return j.dump();
}

std::string view(int node, double t_s, uint64_t epoch, const std::vector<int>& members, const std::string& reason,
                 double ms, const std::string& anchor, uint64_t transferred = 0) {
  json j = {{"event", "view"},
            {"time", kT0 + t_s},
            {"node", node},
            {"step", uint64_t(t_s * 10)},
            {"epoch", epoch},
            {"members", members},
            {"reason", reason},
            {"resume_round", uint64_t(t_s * 2)},
            {"ms", ms},
            {"anchor_hash", anchor},
            {"transferred_bytes", transferred}};
  return j.dump();
}

// The 4-node run; `node2_anchor3` is node 2's anchor hash at epoch 3.
void write_run(const TempDir& dir, const std::string& node2_anchor3 = "bbbb2222") {
  std::string f[4];
  for (int n = 0; n < 4; ++n) f[n] = view(n, 0, 1, {0, 1, 2, 3}, "start", 40, "aaaa0000") + "\n";
  for (int t = 0; t <= 40; t += 2) {
    for (int n = 0; n < 4; ++n) {
      if (n == 2 && t > 8 && t < 20) continue;   // node 2 is down from 8 s to 20 s
      f[n] += sample(n, t) + "\n";
    }
    if (t == 10) {
      f[0] += view(0, 10.0, 2, {0, 1, 3}, "node 2 silent for 1503 ms", 1650, "aaaa1111") + "\n";
      f[1] += view(1, 10.2, 2, {0, 1, 3}, "node 2 silent for 1511 ms", 1700, "aaaa1111") + "\n";
      f[3] += view(3, 10.1, 2, {0, 1, 3}, "", 1620, "aaaa1111") + "\n";
    }
    if (t == 20) {
      f[0] += view(0, 20.0, 3, {0, 1, 2, 3}, "node 2 joined", 900, "bbbb2222", 431080) + "\n";
      f[1] += view(1, 20.1, 3, {0, 1, 2, 3}, "node 2 joined", 880, "bbbb2222") + "\n";
      f[2] += view(2, 20.3, 3, {0, 1, 2, 3}, "node 2 joined", 1200, node2_anchor3, 431080) + "\n";
      f[3] += view(3, 20.2, 3, {0, 1, 2, 3}, "node 2 joined", 870, "bbbb2222") + "\n";
    }
  }
  for (int n = 0; n < 4; ++n) dir.write("node-" + std::to_string(n) + ".jsonl", f[n]);
}


std::string line_with(const std::string& text, const std::string& needle) {
  for (const std::string& l : lines_of(text))
    if (contains(l, needle)) return l;
  return "";
}

}  // namespace

TEST_CASE("run_log: view records merged per view: who left and joined, largest ms, anchors") {
  TempDir dir("views");
  write_run(dir);
  tether::RunLog log(dir.path());
  log.refresh();
  REQUIRE(log.nodes().size() == 4);
  const auto& n2 = log.nodes().at(2);
  CHECK(n2.views.size() == 2);
  CHECK(n2.malformed == 0);
  CHECK(n2.unknown == 0);
  REQUIRE(n2.current_view() != nullptr);
  CHECK(n2.current_view()->epoch == 3);
  CHECK(n2.current_view()->transferred_bytes == 431080);
  CHECK(log.nodes().at(1).views.at(1).reason == "node 2 silent for 1511 ms");
  CHECK(log.nodes().at(1).views.at(1).members == std::vector<int>{0, 1, 3});

  const std::vector<tether::ViewSummary> views = log.views();
  REQUIRE(views.size() == 3);
  CHECK(views[0].epoch == 1);
  CHECK(views[0].left.empty());   // the starting view: nothing left or joined
  CHECK(views[0].joined.empty());
  CHECK(views[1].epoch == 2);
  CHECK(views[1].members == std::vector<int>{0, 1, 3});
  CHECK(views[1].left == std::vector<int>{2});
  CHECK(views[1].joined.empty());
  CHECK(views[1].time == doctest::Approx(kT0 + 10.0));
  CHECK(views[1].reason == "node 2 silent for 1503 ms");   // the earliest record's (node 0's)
  CHECK(views[1].ms == 1700);                              // the slowest member
  CHECK(views[1].resume_round == 20);
  CHECK(views[1].recorded_by == std::vector<int>{0, 1, 3});
  CHECK(views[1].anchors_equal() == std::optional<bool>(true));
  CHECK(views[2].joined == std::vector<int>{2});
  CHECK(views[2].left.empty());
  CHECK(views[2].ms == 1200);
  CHECK(views[2].transferred_bytes == 431080);
  CHECK(views[2].anchors.size() == 4);
  CHECK(views[2].anchors_equal() == std::optional<bool>(true));

  // A first record of a later epoch is compared with every node that has a
  // log; members and unreachable lists that are not integer arrays read as empty.
  tether::NodeLog n;
  tether::RunLog::parse_line(n, "{\"event\": \"view\", \"epoch\": 4, \"members\": [3, 1, \"x\", -2, 1.5, 0]}");
  tether::RunLog::parse_line(n, "{\"event\": \"view\", \"epoch\": 5, \"members\": 7}");
  tether::RunLog::parse_line(n, "{\"event\": \"no_quorum\", \"unreachable\": {\"a\": 1}, \"waited_ms\": 5}");
  REQUIRE(n.views.size() == 2);
  CHECK(n.views[0].members == std::vector<int>{0, 1, 3});
  CHECK(n.views[1].members.empty());
  REQUIRE(n.no_quorum.size() == 1);
  CHECK(n.no_quorum[0].unreachable.empty());
  CHECK(n.no_quorum[0].waited_ms == 5);
  CHECK(n.malformed == 0);
  TempDir later("views-later");
  later.write("node-0.jsonl", view(0, 1, 7, {0, 2}, "node 1 silent", 5, "") + "\n");
  later.write("node-1.jsonl", sample(1, 0) + "\n");
  later.write("node-2.jsonl", view(2, 1, 7, {0, 2}, "node 1 silent", 5, "") + "\n");
  tether::RunLog l2(later.path());
  l2.refresh();
  auto v2 = l2.views();
  REQUIRE(v2.size() == 1);
  CHECK(v2[0].left == std::vector<int>{1});
  CHECK_FALSE(v2[0].anchors_equal().has_value());   // no hash recorded
}

TEST_CASE("run_log: differing anchor hashes at an epoch are not equal") {
  TempDir dir("views-differ");
  write_run(dir, "bbbb2223");
  tether::RunLog log(dir.path());
  log.refresh();
  auto views = log.views();
  REQUIRE(views.size() == 3);
  CHECK(views[1].anchors_equal() == std::optional<bool>(true));
  CHECK(views[2].anchors_equal() == std::optional<bool>(false));
  CHECK(views[2].anchors.at(2) == "bbbb2223");
}

TEST_CASE("dashboard: current views, view changes with who left or joined, anchors, no quorum") {
  TempDir dir("views");
  write_run(dir);
  tether::RunLog log(dir.path());
  log.refresh();
  std::string frame = tether::render_frame(log);
  INFO(frame);
  for (const std::string& l : lines_of(frame)) CHECK(l.size() <= size_t(tether::kDashboardColumns));
  CHECK(contains(frame, "\nview: epoch 3 [0,1,2,3] on nodes 0,1,2,3\n"));
  CHECK(contains(frame, "\nview changes: 3\n"));
  std::string e2 = line_with(frame, "epoch 2 [0,1,3] -");
  CHECK(contains(e2, " -2 1700 ms anchors equal: node 2 silent for 1503 ms"));
  std::string e3 = line_with(frame, "epoch 3 [0,1,2,3] +");
  CHECK(contains(e3, " +2 1200 ms anchors equal: node 2 joined"));
  std::string e1 = line_with(frame, "epoch 1 [0,1,2,3] ");
  CHECK(contains(e1, "] 40 ms anchors equal: start"));   // no -K/+K on the starting view
  CHECK_FALSE(contains(frame, "no quorum"));

  // Node 2's anchor differs at epoch 3; node 1 has not taken view 3 yet.
  TempDir differ("views-differ");
  write_run(differ, "bbbb2223");
  std::string f1 = read_all(differ.file("node-1.jsonl"));
  f1 = f1.substr(0, f1.find("{\"anchor_hash\":\"bbbb2222\""));   // json dumps keys sorted
  CHECK(f1.size() < read_all(differ.file("node-1.jsonl")).size());
  differ.write("node-1.jsonl", f1);
  tether::RunLog dlog(differ.path());
  dlog.refresh();
  std::string dframe = tether::render_frame(dlog);
  INFO(dframe);
  CHECK(contains(line_with(dframe, "epoch 3 [0,1,2,3] +"), "anchors DIFFER"));
  CHECK(contains(dframe, "\nview: epoch 2 [0,1,3] on node 1\n"));
  CHECK(contains(dframe, "\nview: epoch 3 [0,1,2,3] on nodes 0,2,3\n"));

  // More view changes than the frame lists: the last five.
  TempDir many("views-many");
  std::string m0;
  for (uint64_t e = 1; e <= 8; ++e)
    m0 += view(0, double(e), e, e % 2 ? std::vector<int>{0, 1} : std::vector<int>{0, 1, 2}, "change " + std::to_string(e), 10, "h") + "\n";
  many.write("node-0.jsonl", m0);
  tether::RunLog mlog(many.path());
  mlog.refresh();
  std::string mframe = tether::render_frame(mlog);
  INFO(mframe);
  CHECK(contains(mframe, "view changes: 8 (last 5)"));
  CHECK_FALSE(contains(mframe, "change 3\n"));
  CHECK(contains(mframe, "change 4\n"));
  CHECK(contains(mframe, "change 8\n"));

  // No quorum: 2 of 4 lost; the two survivors wait, give up and fail.
  TempDir nq("views-noq");
  for (int n : {0, 1}) {
    nq.write("node-" + std::to_string(n) + ".jsonl",
             sample(n, 1) + "\n" +
                 json{{"event", "no_quorum"}, {"time", kT0 + 61}, {"node", n}, {"step", 11},
                      {"unreachable", {2, 3}}, {"waited_ms", 60000}}
                     .dump() +
                 "\n" +
                 json{{"event", "failed"}, {"time", kT0 + 61}, {"node", n}, {"step", 11},
                      {"error", "no quorum: peers 2, 3 unreachable"}}
                     .dump() +
                 "\n");
  }
  tether::RunLog qlog(nq.path());
  qlog.refresh();
  std::string qframe = tether::render_frame(qlog);
  INFO(qframe);
  CHECK(contains(qframe, "\nnode 0: no quorum at step 11, unreachable 2,3, waited 60000 ms\n"));
  CHECK(contains(qframe, "\nnode 1: no quorum at step 11, unreachable 2,3, waited 60000 ms\n"));
  CHECK_FALSE(contains(qframe, "view changes"));
}

TEST_CASE("report: view changes drawn on the plots, a views table, anchors per epoch, failures and rejoins") {
  TempDir dir("views");
  write_run(dir);
  tether::RunLog log(dir.path());
  log.refresh();
  std::string html = tether::render_report(log);
  // One line per view change on each of the 7 plots: red when a member left,
  // green when one joined. The run spans t0..t0+40 s, drawn over x 62..626:
  // view 2 (t0 + 10 s) at 62 + 564 / 4 = 203.0, view 3 (t0 + 20 s) at 344.0.
  CHECK(count_of(html, "<g class=\"views\">") == 7);
  CHECK(count_of(html, "<line class=\"view ") == 3 * 7);
  CHECK(count_of(html, "<line class=\"view fail\" data-epoch=\"2\" x1=\"203.0\" x2=\"203.0\"") == 7);
  CHECK(count_of(html, "<line class=\"view join\" data-epoch=\"3\" x1=\"344.0\" x2=\"344.0\"") == 7);
  CHECK(count_of(html, "<line class=\"view view\" data-epoch=\"1\" x1=\"62.0\"") == 7);
  CHECK(contains(html, "<title>view epoch 2 [0,1,3]: node 2 silent for 1503 ms</title>"));

  CHECK(contains(html, "<h2>Views, failures and rejoins</h2>"));
  CHECK(contains(html, "<tr><td>10.0 s</td><td>2</td><td class=\"l\">0,1,3</td><td class=\"l\">&minus;2</td>"
                       "<td class=\"l\">node 2 silent for 1503 ms</td><td>20</td><td>1700</td><td>0 B</td>"
                       "<td class=\"l ok\">yes</td><td class=\"l\">0,1,3</td></tr>"));
  CHECK(contains(html, "<tr><td>20.0 s</td><td>3</td><td class=\"l\">0,1,2,3</td><td class=\"l\">+2</td>"
                       "<td class=\"l\">node 2 joined</td><td>40</td><td>1200</td><td>431.08 KB</td>"));
  CHECK(contains(html, "<li>anchors equal at epoch 2: <span class=\"ok\">yes</span> (3 of 3 members, "
                       "<code>aaaa1111</code>)</li>"));
  CHECK(contains(html, "<li>anchors equal at epoch 3: <span class=\"ok\">yes</span> (4 of 4 members"));
  CHECK_FALSE(contains(html, "<span class=\"bad\">no</span>"));
  CHECK(contains(html, "<li>10.0 s: node 2 left the view (epoch 2: node 2 silent for 1503 ms)</li>"));
  CHECK(contains(html, "<li>20.0 s: node 2 rejoined (epoch 3, 431.08 KB transferred, 1200 ms)</li>"));
  // Each node's current view in the summary table.
  CHECK(contains(html, "<th class=\"l\">view (epoch [members])</th>"));
  CHECK(count_of(html, "<td class=\"l\">3 [0,1,2,3]</td>") == 4);
  // Figures stay whole: every group closed.
  CHECK(count_of(html, "<svg class=\"plot\"") == count_of(html, "</svg>"));
  CHECK(count_of(html, "<g class=") == count_of(html, "</g>"));

  SUBCASE("a member's anchor differs: the report says no and shows the hashes") {
    TempDir differ("views-differ");
    write_run(differ, "bbbb2223");
    tether::RunLog dlog(differ.path());
    dlog.refresh();
    std::string dhtml = tether::render_report(dlog);
    CHECK(contains(dhtml, "<li>anchors equal at epoch 2: <span class=\"ok\">yes</span>"));
    CHECK(contains(dhtml, "<li>anchors equal at epoch 3: <span class=\"bad\">no</span> (node 0 <code>bbbb2222</code>, "
                          "node 1 <code>bbbb2222</code>, node 2 <code>bbbb2223</code>, node 3 <code>bbbb2222</code>)</li>"));
    CHECK(contains(dhtml, "<td class=\"l bad\">no</td>"));
  }
  SUBCASE("no quorum and a reason with markup: listed, escaped") {
    TempDir nq("views-noq");
    nq.write("node-0.jsonl", sample(0, 0) + "\n" + view(0, 2, 2, {0, 1}, "node <2> & 3 silent", 10, "") + "\n" +
                                 json{{"event", "no_quorum"}, {"time", kT0 + 5}, {"node", 0}, {"step", 40},
                                      {"unreachable", {1, 2, 3}}, {"waited_ms", 1234}}
                                     .dump() +
                                 "\n");
    nq.write("node-1.jsonl", sample(1, 0) + "\n");
    tether::RunLog qlog(nq.path());
    qlog.refresh();
    std::string qhtml = tether::render_report(qlog);
    CHECK(contains(qhtml, "<li>5.0 s: node 0: no quorum at step 40, unreachable 1,2,3, waited 1234 ms</li>"));
    CHECK(contains(qhtml, "node &lt;2&gt; &amp; 3 silent"));
    CHECK_FALSE(contains(qhtml, "node <2>"));
    CHECK(contains(qhtml, "<li>anchors equal at epoch 2: unknown (no anchor_hash recorded)</li>"));
  }
}

TEST_CASE("report: without membership records, no views section, column or lines") {
  TempDir dir("views-none");
  dir.write("node-0.jsonl", sample(0, 0) + "\n" + sample(0, 2) + "\n");
  dir.write("node-1.jsonl", sample(1, 0) + "\n" + sample(1, 2) + "\n");
  tether::RunLog log(dir.path());
  log.refresh();
  std::string html = tether::render_report(log);
  CHECK_FALSE(contains(html, "Views, failures and rejoins"));
  CHECK_FALSE(contains(html, "class=\"views\""));
  CHECK_FALSE(contains(html, "<th class=\"l\">view (epoch [members])</th>"));
  std::string frame = tether::render_frame(log);
  CHECK_FALSE(contains(frame, "view:"));
  CHECK_FALSE(contains(frame, "view changes"));
}

TEST_CASE("dashboard and report through the binary show the views") {
  TempDir dir("views");
  write_run(dir, "bbbb2223");
  auto once = run_command(tether_bin() + " dashboard " + dir.path() + " --once", 60);
  INFO(once.output);
  CHECK(once.exit_code == 0);
  CHECK(contains(once.output, "view: epoch 3 [0,1,2,3] on nodes 0,1,2,3"));
  CHECK(contains(once.output, "anchors DIFFER: node 2 joined"));
  std::string out = dir.file("r.html");
  auto rep = run_command(tether_bin() + " report " + dir.path() + " -o " + out, 60);
  CHECK(rep.exit_code == 0);
  CHECK(contains(read_all(out), "anchors equal at epoch 3: <span class=\"bad\">no</span>"));
}
