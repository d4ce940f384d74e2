// RunLog, the dashboard frame and the HTML report on log directories written
// here: several nodes, a partial last line, a malformed line, eval, final and
// failed events; then `tether dashboard` and `tether report` through the
// binary. Values depend on node and step, so a field read from the wrong
// record or node shows.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "observe/dashboard.h"
#include "observe/report.h"
#include "observe/run_log.h"
#include "test/observe/text_util.h"
#include "test/runtime/process_util.h"

using tether::testing::contains;
using tether::testing::count_of;
using tether::testing::lines_of;
using tether::testing::read_all;
using tether::testing::run_command;
using tether::testing::TempDir;
using tether::testing::tether_bin;

namespace {

constexpr double kT0 = 1.7e9;   // a fixed start time (seconds since the epoch)

// A periodic record of `node` at `step`; every value is a closed form in both.
std::string sample(int node, uint64_t step, bool net = true) {
  char buf[1024];
  double loss = 2.0 / double(step + 1) + 0.01 * node;
  double ips = 1000.0 + 100.0 * node + double(step);
  std::snprintf(buf, sizeof buf,
                "{\"time\": %.3f, \"node\": %d, \"step\": %llu, \"round\": %llu, \"epoch\": %llu, \"loss\": %.6f, "
                "\"train_acc\": %.4f, \"images_per_s\": %.1f, \"lr\": 0.05, \"idle_frac\": %.4f, "
                "\"idle_frac_total\": %.4f, \"rounds_in_flight\": %d, \"disp_norm\": %.5f, \"max_pair_dist\": %.5f, "
                "\"max_pair_dist_run\": %.5f, \"bound\": %.3f, \"throttled\": %s, \"throttle_count\": %d, "
                "\"max_delta_norm\": 0.5, \"bytes_sent\": %llu, \"bytes_recv\": %llu, \"msgs_rejected\": 0}",
                kT0 + double(step) * 0.5 + 0.01 * node, node, static_cast<unsigned long long>(step),
                static_cast<unsigned long long>(step), static_cast<unsigned long long>(1 + step / 100), loss,
                0.5 + 0.001 * double(step), ips, net ? 0.1 * (node + 1) : 0.0, net ? 0.05 * (node + 1) : 0.0,
                net ? 2 : 0, net ? 0.01 * (node + 1) : 0.0, net ? 0.2 + 0.001 * double(step) : 0.0,
                net ? 0.5 : 0.0, net ? 0.9 : 0.0, node == 2 ? "true" : "false", node == 2 ? 3 : 0,
                static_cast<unsigned long long>(net ? step * 1000000 : 0),
                static_cast<unsigned long long>(net ? step * 990000 : 0));
  return buf;
}

std::string final_rec(int node, uint64_t steps, double acc, const std::string& hash) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "{\"event\": \"final\", \"steps\": %llu, \"params_hash\": \"%s\", \"interrupted\": false, "
                "\"checkpoint\": \"x.ckpt\", \"wall_s\": 50.0, \"test_acc\": %.4f, \"idle_frac_total\": 0.25, "
                "\"max_pair_dist_run\": 1.5, \"throttle_count\": 1, \"bytes_sent\": 123456789, "
                "\"bytes_recv\": 123000000, \"msgs_rejected\": 0, \"time\": %.3f, \"node\": %d}",
                static_cast<unsigned long long>(steps), hash.c_str(), acc, kT0 + double(steps) * 0.5 + 1, node);
  return buf;
}

// Node 0: 20 records, an eval, a final. Node 1: 10 records, a malformed line,
// a failure. Node 2: 15 records, the 16th half written. Plus files that are not
// node logs.
void write_run(const TempDir& dir) {
  std::string n0, n1, n2;
  for (uint64_t s = 10; s <= 200; s += 10) n0 += sample(0, s) + "\n";
  n0 += "{\"event\": \"eval\", \"step\": 200, \"epoch\": 2, \"test_acc\": 0.8125, \"test_loss\": 0.5, \"time\": " +
        std::to_string(kT0 + 100.5) + ", \"node\": 0}\n";
  n0 += final_rec(0, 200, 0.875, "00c0ffee12345678") + "\n";
  for (uint64_t s = 10; s <= 100; s += 10) {
    n1 += sample(1, s) + "\n";
    if (s == 50) n1 += "{\"step\": 55, \"loss\": 0.3,,, garbage\n";
  }
  n1 += "\n";   // a blank line: ignored, not counted
  n1 += "{\"event\": \"failed\", \"step\": 100, \"error\": \"peer 2 lost: no heartbeat for 3000 ms <&>\", "
        "\"checkpoint\": \"y.ckpt\", \"time\": " +
        std::to_string(kT0 + 51) + ", \"node\": 1}\n";
  for (uint64_t s = 10; s <= 150; s += 10) n2 += sample(2, s) + "\n";
  n2 += sample(2, 160).substr(0, 40);   // being written
  dir.write("node-0.jsonl", n0);
  dir.write("node-1.jsonl", n1);
  dir.write("node-2.jsonl", n2);
  dir.write("node-x.jsonl", "{\"step\": 1}\n");
  dir.write("notes.txt", "not a log\n");
}

void append(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::app) << text;
}

std::string row_of(const std::string& frame, int node) {
  for (const std::string& l : lines_of(frame)) {
    std::istringstream in(l);
    std::string first;
    in >> first;
    if (first == std::to_string(node)) return l;
  }
  return "";
}


}  // namespace

TEST_CASE("run_log: nodes, records, events, malformed and partial lines") {
  TempDir dir("dash");
  write_run(dir);
  tether::RunLog log(dir.path());
  CHECK(log.refresh());
  REQUIRE(log.nodes().size() == 3);   // node-x.jsonl and notes.txt are not node logs
  const auto& n0 = log.nodes().at(0);
  const auto& n1 = log.nodes().at(1);
  const auto& n2 = log.nodes().at(2);
  CHECK(n0.samples.size() == 20);
  CHECK(n0.samples.back().step == 200);
  CHECK(n0.samples.back().loss == doctest::Approx(2.0 / 201));
  CHECK(n0.samples.back().images_per_s == doctest::Approx(1200.0));
  CHECK(n0.samples.back().bytes_sent == 200000000ULL);
  CHECK(n0.evals.size() == 2);   // the eval event and the final's accuracy
  REQUIRE(n0.final.has_value());
  CHECK(n0.final->params_hash == "00c0ffee12345678");
  CHECK(n0.last_test_acc().value() == doctest::Approx(0.875));
  CHECK(n0.state() == tether::NodeState::kDone);
  CHECK(n0.malformed == 0);

  CHECK(n1.samples.size() == 10);
  CHECK(n1.malformed == 1);
  CHECK(n1.lines == 12);   // 10 records, 1 malformed, 1 failed event; the blank line not counted
  REQUIRE(n1.failed.has_value());
  CHECK(n1.failed->step == 100);
  CHECK(contains(n1.failed->error, "peer 2 lost"));
  CHECK(n1.state() == tether::NodeState::kFailed);

  CHECK(n2.samples.size() == 15);   // the half-written 16th is pending
  CHECK(n2.malformed == 0);
  CHECK(n2.samples.back().throttled);
  CHECK(n2.samples.back().throttle_count == 3);
  CHECK(n2.state() == tether::NodeState::kRunning);
  CHECK_FALSE(log.all_finished());
  CHECK(log.malformed() == 1);
  CHECK(log.start_time() == doctest::Approx(kT0 + 5));
  CHECK(log.end_time() == doctest::Approx(kT0 + 101));

  // Nothing new: no change.
  CHECK_FALSE(log.refresh());

  // The rest of the line arrives, then a final; a new node appears.
  std::string rec = sample(2, 160);
  append(dir.file("node-2.jsonl"), rec.substr(40) + "\n" + final_rec(2, 160, 0.75, "abcdef0123456789"));
  CHECK(log.refresh());
  CHECK(log.nodes().at(2).samples.size() == 16);
  CHECK(log.nodes().at(2).samples.back().step == 160);
  CHECK_FALSE(log.nodes().at(2).final.has_value());   // its '\n' is still missing
  append(dir.file("node-2.jsonl"), "\n");
  dir.write("node-3.jsonl", sample(3, 10, false) + "\n" + final_rec(3, 10, 0.5, "11") + "\n");
  CHECK(log.refresh());
  REQUIRE(log.nodes().size() == 4);
  CHECK(log.nodes().at(2).state() == tether::NodeState::kDone);
  CHECK(log.nodes().at(2).malformed == 0);
  CHECK(log.nodes().at(3).samples.size() == 1);
  CHECK(log.all_finished());
}

TEST_CASE("run_log: a rewritten file is read again; a new run in the same directory starts over") {
  TempDir dir("dash");
  dir.write("node-0.jsonl", sample(0, 10) + "\n" + sample(0, 20) + "\n" + sample(0, 30) + "\n");
  tether::RunLog log(dir.path());
  log.refresh();
  CHECK(log.nodes().at(0).samples.size() == 3);
  dir.write("node-0.jsonl", sample(0, 40) + "\n");   // shorter: rewritten
  CHECK(log.refresh());
  REQUIRE(log.nodes().at(0).samples.size() == 1);
  CHECK(log.nodes().at(0).samples[0].step == 40);

  // A finished run, resumed (steps go on): history kept, running again.
  append(dir.file("node-0.jsonl"), final_rec(0, 40, 0.5, "aa") + "\n");
  log.refresh();
  CHECK(log.nodes().at(0).state() == tether::NodeState::kDone);
  append(dir.file("node-0.jsonl"), sample(0, 50) + "\n");
  log.refresh();
  CHECK(log.nodes().at(0).state() == tether::NodeState::kRunning);
  CHECK(log.nodes().at(0).samples.size() == 2);
  // A fresh run appended to the same file: steps start over.
  append(dir.file("node-0.jsonl"), sample(0, 10) + "\n");
  log.refresh();
  REQUIRE(log.nodes().at(0).samples.size() == 1);
  CHECK(log.nodes().at(0).samples[0].step == 10);
  CHECK(log.nodes().at(0).evals.empty());
}

TEST_CASE("run_log: a missing directory is a RunLogError naming it") {
  TempDir dir("dash");
  CHECK_THROWS_AS(tether::RunLog(dir.file("nope")), tether::RunLogError);
  try {
    tether::RunLog log(dir.file("nope"));
  } catch (const tether::RunLogError& e) {
    CHECK(contains(e.what(), "nope: no such directory"));
  }
  dir.write("file", "x");
  CHECK_THROWS_AS(tether::RunLog(dir.file("file")), tether::RunLogError);
}

TEST_CASE("dashboard: the frame fits 80 columns and shows each node's values") {
  TempDir dir("dash");
  write_run(dir);
  tether::RunLog log(dir.path());
  log.refresh();
  std::string frame = tether::render_frame(log);
  INFO(frame);
  for (const std::string& l : lines_of(frame)) CHECK(l.size() <= size_t(tether::kDashboardColumns));
  CHECK(contains(lines_of(frame).at(0), dir.path()));
  CHECK(contains(lines_of(frame).at(0), "3 nodes"));
  std::string header = lines_of(frame).at(1);
  for (const char* h : {"id", "step", "ep", "loss", "test%", "img/s", "idle%", "infl", "disp", "dist", "bound", "thr",
                        "state"})
    CHECK(contains(header, h));

  std::string r0 = row_of(frame, 0), r1 = row_of(frame, 1), r2 = row_of(frame, 2);
  // node 0: step 200, epoch 3, loss 2/201, test acc 87.50 (the final's), 1200 img/s, idle 10.0%, done
  CHECK(contains(r0, " 200 "));
  CHECK(contains(r0, "0.00995"));
  CHECK(contains(r0, "87.50"));
  CHECK(contains(r0, "1200"));
  CHECK(contains(r0, "10.0"));
  CHECK(contains(r0, " 0.4 "));   // dist 0.2 + 0.001 * 200
  CHECK(contains(r0, " 0.9 "));   // bound
  CHECK(contains(r0, "done"));
  // node 1: failed at step 100, 1200 img/s (1000 + 100 + 100), no test accuracy
  CHECK(contains(r1, " 100 "));
  CHECK(contains(r1, "FAIL"));
  CHECK(contains(r1, "20.0"));
  // node 2: running, throttled, 1350 img/s (1000 + 200 + 150)
  CHECK(contains(r2, "1350"));
  CHECK(contains(r2, "YES"));
  CHECK(contains(r2, "run"));

  // Summary: only node 2 runs; largest distance 0.4 (node 0, step 200) of bound 0.9.
  CHECK(contains(frame, "total 1350 img/s"));
  CHECK(contains(frame, "dist 0.4 / bound 0.9 (44%)"));
  CHECK(contains(frame, "1 running, 1 finished, 1 failed"));
  CHECK(contains(frame, "1 throttled"));
  CHECK(contains(frame, "1 bad line"));
  CHECK(contains(frame, "node 1 failed at step 100: peer 2 lost"));
  CHECK_FALSE(contains(frame, "final models"));   // node 2 still runs
}

TEST_CASE("dashboard: once every node has ended, whether the final models agree") {
  for (bool same : {true, false}) {
    CAPTURE(same);
    TempDir dir(same ? "dash-same" : "dash-differ");
    for (int node = 0; node < 3; ++node) {
      std::ofstream(dir.file("node-" + std::to_string(node) + ".jsonl"))
          << final_rec(node, 100, 0.8, same || node == 0 ? "00c0ffee12345678" : "0000000000000bad") << "\n";
    }
    tether::RunLog log(dir.path());
    log.refresh();
    const std::string frame = tether::render_frame(log);
    INFO(frame);
    CHECK(contains(frame, same ? "final models: identical on 3 node(s), params_hash 00c0ffee12345678"
                               : "final models: 2 distinct params_hash values over 3 nodes"));
  }
}

// Gossip's estimates come from the sketches that have arrived (possibly of
// earlier rounds): the summary says how old the oldest one is, now and at
// most over the run; a ring run (no age) says nothing about it.
TEST_CASE("dashboard: the age of gossip's sketches, now and over the run") {
  TempDir dir("dash-sketch-age");
  auto with_age = [](std::string rec, int age, int age_max) {
    rec.pop_back();   // the closing brace
    return rec + ", \"sketch_age_rounds\": " + std::to_string(age) + ", \"sketch_age_rounds_max\": " +
           std::to_string(age_max) + "}";
  };
  dir.write("node-0.jsonl", with_age(sample(0, 10), 1, 3) + "\n");
  dir.write("node-1.jsonl", with_age(sample(1, 10), 2, 2) + "\n");
  tether::RunLog log(dir.path());
  log.refresh();
  std::string frame = tether::render_frame(log);
  INFO(frame);
  CHECK(contains(frame, "dist from sketches up to 2 rounds old (3 at most in the run)"));
  for (const std::string& l : lines_of(frame)) CHECK(l.size() <= size_t(tether::kDashboardColumns));

  TempDir ring("dash-no-sketch-age");
  ring.write("node-0.jsonl", with_age(sample(0, 10), 0, 0) + "\n");
  tether::RunLog ring_log(ring.path());
  ring_log.refresh();
  CHECK_FALSE(contains(tether::render_frame(ring_log), "sketches"));
}

TEST_CASE("dashboard: very large values, a long directory and a long error still fit") {
  TempDir dir("dash-with-a-rather-long-directory-name-that-would-not-fit-on-one-line-anyway");
  std::string big = sample(12, 123456789);
  dir.write("node-12.jsonl", big + "\n{\"event\": \"failed\", \"step\": 123456789, \"error\": \"" +
                                 std::string(300, 'e') + "\", \"time\": 1.7e9}\n");
  dir.write("node-7.jsonl", "{\"step\": 3, \"loss\": 1e300, \"images_per_s\": 1e12, \"disp_norm\": -1e-300, "
                            "\"max_pair_dist\": 12345678901, \"bound\": 0.000000012345, \"idle_frac\": 1, "
                            "\"rounds_in_flight\": 123456789, \"time\": 1.7e9}\n");
  tether::RunLog log(dir.path());
  log.refresh();
  tether::FrameOptions fo;
  fo.now = 1.8e9;   // "ago" in the header
  std::string frame = tether::render_frame(log, fo);
  INFO(frame);
  for (const std::string& l : lines_of(frame)) CHECK(l.size() <= size_t(tether::kDashboardColumns));
  CHECK(contains(frame, "123M"));          // the step, in its 6 columns
  CHECK(contains(frame, "at step 123456789"));
  CHECK(contains(frame, "ago"));
}

TEST_CASE("report: self-contained HTML with the plots, the table and escaped text") {
  TempDir dir("dash");
  write_run(dir);
  tether::RunLog log(dir.path());
  log.refresh();
  tether::ReportOptions opts;
  opts.link_mbps = 100;
  std::string html = tether::render_report(log, opts);
  CHECK_FALSE(contains(html, "http://"));
  CHECK_FALSE(contains(html, "https://"));
  CHECK_FALSE(contains(html, "<link"));
  CHECK_FALSE(contains(html, " src="));
  CHECK(contains(html, "<title>tether report: " + dir.path()));
  CHECK(count_of(html, "<svg class=\"plot\"") == 7);
  CHECK(count_of(html, "<g class=\"series\"") >= 7 * 3);
  for (const char* t : {"Training loss", "Accuracy", "Throughput", "Idle fraction", "Largest pairwise distance",
                        "Bytes on the wire", "Displacement"})
    CHECK(contains(html, t));
  CHECK(contains(html, "data-name=\"total\""));                  // throughput over nodes
  CHECK(contains(html, "data-name=\"bound\""));                  // drawn with the distances
  CHECK(contains(html, "data-name=\"link 100 Mbit/s\""));        // --link-mbps
  CHECK(contains(html, "data-name=\"node 0 test\""));            // test accuracy points
  CHECK(contains(html, "<circle"));
  CHECK(contains(html, "time since start (s)"));
  CHECK(contains(html, "00c0ffee12345678"));
  CHECK(contains(html, "87.50%"));
  CHECK(contains(html, "no heartbeat for 3000 ms &lt;&amp;&gt;"));   // escaped
  CHECK_FALSE(contains(html, "3000 ms <&>"));
  CHECK(contains(html, "1 malformed lines skipped"));
  CHECK(contains(html, "data-plots-drawn"));                     // the script's marker
  CHECK(contains(html, "<th>sent</th>"));
  CHECK(contains(html, "200.00 MB"));   // node 0's counter at step 200
}

TEST_CASE("report: long series are written whole and thinned") {
  TempDir dir("dash");
  std::string n0, n1;
  for (uint64_t s = 1; s <= 4000; ++s) n0 += sample(0, s) + "\n";
  for (uint64_t s = 1; s <= 300; ++s) n1 += sample(1, s) + "\n";
  dir.write("node-0.jsonl", n0);
  dir.write("node-1.jsonl", n1);
  tether::RunLog log(dir.path());
  log.refresh();
  std::string html = tether::render_report(log);
  // Every path's d attribute ends where the next attribute starts.
  size_t paths = 0;
  for (size_t p = html.find("<path d=\""); p != std::string::npos; p = html.find("<path d=\"", p + 1)) {
    size_t end = html.find('"', p + 9);
    REQUIRE(end != std::string::npos);
    CHECK(html.compare(end, 15, "\" stroke-width=") == 0);
    size_t points = size_t(std::count(html.begin() + long(p), html.begin() + long(end), ','));
    CHECK(points <= 1501);   // at most 1500 points (+ the last) per series
    ++paths;
  }
  CHECK(paths >= 7 * 2);
  CHECK(count_of(html, "<svg class=\"plot\"") == count_of(html, "</svg>"));
  CHECK(count_of(html, "<g class=\"series\"") + 7 == count_of(html, "</g>"));   // + 7 grids
  CHECK(count_of(html, "<figure") == count_of(html, "</figure>"));
}

TEST_CASE("report: a single node without network fields still draws every plot") {
  TempDir dir("dash");
  std::string n0;
  for (uint64_t s = 1; s <= 5; ++s) n0 += sample(0, s, false) + "\n";
  dir.write("node-0.jsonl", n0);
  tether::RunLog log(dir.path());
  log.refresh();
  std::string html = tether::render_report(log);
  CHECK(count_of(html, "<svg class=\"plot\"") == 7);
  CHECK(count_of(html, "<path d=\"M") >= 6);
  CHECK_FALSE(contains(html, "data-name=\"total\""));   // one node: no total
  CHECK_FALSE(contains(html, "data-name=\"bound\""));   // no bound logged
  CHECK_FALSE(contains(html, "nan"));
  CHECK_FALSE(contains(html, "inf\""));
}

TEST_CASE("dashboard and report through the binary") {
  TempDir dir("dash");
  write_run(dir);
  std::string bin = tether_bin();

  auto once = run_command(bin + " dashboard " + dir.path() + " --once", 60);
  INFO(once.output);
  CHECK(once.exit_code == 0);
  CHECK(contains(once.output, "87.50"));
  CHECK(contains(once.output, "FAIL"));
  for (const std::string& l : lines_of(once.output)) CHECK(l.size() <= size_t(tether::kDashboardColumns));

  // Not a terminal and no --interval-ms: one frame, exit 0, even while a node runs.
  auto piped = run_command(bin + " dashboard " + dir.path() + " | cat", 60);
  CHECK(piped.exit_code == 0);
  CHECK(count_of(piped.output, "tether dashboard") == 1);

  auto missing = run_command(bin + " dashboard " + dir.file("nope") + " --once", 60);
  CHECK(missing.exit_code == 2);
  CHECK(contains(missing.output, "nope: no such directory"));
  TempDir empty("dash-empty");
  auto none = run_command(bin + " dashboard " + empty.path() + " --once", 60);
  CHECK(none.exit_code == 2);
  CHECK(contains(none.output, "no node-*.jsonl files"));
  CHECK(run_command(bin + " dashboard", 60).exit_code == 2);
  CHECK(run_command(bin + " dashboard " + dir.path() + " --interval-ms x", 60).exit_code == 2);
  CHECK(run_command(bin + " dashboard " + dir.path() + " --bogus", 60).exit_code == 2);

  std::string out = dir.file("report.html");
  auto rep = run_command(bin + " report " + dir.path() + " -o " + out + " --link-mbps 250", 60);
  INFO(rep.output);
  CHECK(rep.exit_code == 0);
  CHECK(contains(rep.output, "wrote " + out));
  std::string html = read_all(out);
  CHECK(count_of(html, "<svg class=\"plot\"") == 7);
  CHECK(contains(html, "link 250 Mbit/s"));
  CHECK_FALSE(contains(html, "http://"));
  CHECK_FALSE(contains(html, "https://"));
  // The link rate from a config's net.inject_rate_mbps; a bad config is exit 2.
  std::string cfg = dir.write("cfg.json", "{\"net\": {\"inject_rate_mbps\": 75}}");
  CHECK(run_command(bin + " report " + dir.path() + " -o " + out + " --config " + cfg, 60).exit_code == 0);
  CHECK(contains(read_all(out), "link 75 Mbit/s"));
  std::string bad_cfg = dir.write("bad.json", "{\"net\": {\"inject_rate_mbps\": \"x\"}}");
  auto bad = run_command(bin + " report " + dir.path() + " -o " + out + " --config " + bad_cfg, 60);
  CHECK(bad.exit_code == 2);
  CHECK(contains(bad.output, "net.inject_rate_mbps"));
  CHECK(run_command(bin + " report " + dir.path(), 60).exit_code == 2);   // no -o
  CHECK(run_command(bin + " report " + dir.path() + " -o " + out + " --link-mbps -3", 60).exit_code == 2);
  CHECK(run_command(bin + " report " + empty.path() + " -o " + out, 60).exit_code == 2);
  auto unwritable = run_command(bin + " report " + dir.path() + " -o " + dir.file("no/such/dir/r.html"), 60);
  CHECK(unwritable.exit_code == 1);

  auto dash_help = run_command(bin + " dashboard --help", 60);
  CHECK(dash_help.exit_code == 0);
  CHECK(contains(dash_help.output, "usage: tether dashboard LOGDIR"));
  auto report_help = run_command(bin + " report -h", 60);
  CHECK(report_help.exit_code == 0);
  CHECK(contains(report_help.output, "usage: tether report LOGDIR"));
  auto help = run_command(bin + " --help", 60);
  CHECK(contains(help.output, "tether dashboard LOGDIR"));
  CHECK(contains(help.output, "tether report LOGDIR"));
}

// Polls `path` until it contains `needle` or `timeout_ms` passed.
bool wait_for_text(const std::string& path, const std::string& needle, int timeout_ms = 30000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (contains(read_all(path), needle)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST_CASE("dashboard: live refresh picks up appended lines and exits when every node is done") {
  TempDir dir("dash");
  TempDir out_dir("dash-out");
  dir.write("node-0.jsonl", sample(0, 10) + "\n");
  dir.write("node-1.jsonl", sample(1, 10) + "\n");
  const std::string out = out_dir.file("frames.txt");
  tether::testing::CommandResult live;
  std::thread viewer([&] {
    live = run_command(tether_bin() + " dashboard " + dir.path() + " --interval-ms 50 > " + out, 60);
  });
  // Each step waits for the frame showing the previous one (no fixed sleeps).
  bool first = wait_for_text(out, "2 running, 0 finished");
  append(dir.file("node-0.jsonl"), sample(0, 20) + "\n" + final_rec(0, 20, 0.625, "aa") + "\n");
  bool second = wait_for_text(out, "62.50");
  append(dir.file("node-1.jsonl"), sample(1, 20) + "\n{\"event\": \"failed\", \"step\": 20, \"error\": \"boom\"}\n");
  viewer.join();
  std::string frames = read_all(out);
  INFO(frames);
  INFO(live.output);
  CHECK(first);
  CHECK(second);
  CHECK(live.exit_code == 0);   // ended on its own: every node finished or failed
  CHECK(count_of(frames, "tether dashboard") >= 3);
  CHECK(contains(frames, "1 running, 1 finished, 0 failed"));
  CHECK(contains(frames, "0 running, 1 finished, 1 failed"));
  CHECK(contains(frames, "node 1 failed at step 20: boom"));
}

TEST_CASE("dashboard: SIGINT ends the live view with exit 0") {
  TempDir dir("dash");
  dir.write("node-0.jsonl", sample(0, 10) + "\n");
  const std::string out = dir.file("frames.txt");
  // The signal goes once the first frame is out (the handler is set before it).
  auto r = run_command("sh -c '" + tether_bin() + " dashboard " + dir.path() + " --interval-ms 100 > " + out +
                           " & pid=$!; until grep -q \"tether dashboard\" " + out +
                           "; do sleep 0.05; done; kill -INT $pid; wait $pid'",
                       60);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(contains(read_all(out), "1 running"));
}
