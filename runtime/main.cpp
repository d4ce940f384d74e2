// tether: one binary per machine.
//   tether train CONFIG [--node ID] [--set json.path=value]... [--resume FILE]
//   tether eval CONFIG --checkpoint FILE [--set ...] [--any-data]
//   tether config CONFIG [--set ...] [--peers | --get json.path]
//   tether checkpoint FILE [--get KEY]...
//   tether dashboard LOGDIR [--once] [--interval-ms N]
//   tether report LOGDIR -o FILE [--link-mbps X] [--config CONFIG] [--title T]
// Exit codes: 0 done (also after SIGINT/SIGTERM with a checkpoint written),
// 1 run-time failure (a peer lost, I/O), 2 bad usage, config, data or checkpoint;
// 137 only from the hidden test flag --crash-at (the node dies as kill -9 would).
#include <malloc.h>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "models/dataset.h"
#include "net/communicator.h"
#include "observe/dashboard.h"
#include "observe/report.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/keys.h"
#include "runtime/trainer.h"

namespace {

std::atomic<bool> g_stop{false};

// SIGINT/SIGTERM are blocked in every thread and taken by one thread that
// waits for them (sigwait) and sets the stop flag. No signal is ever delivered
// to a compute thread: oneDNN's JIT kernels may use RSP as a general register
// while they run, and a signal frame pushed there lands in the heap (seen:
// "corrupted size vs. prev_size", a sigcontext written over malloc's chunk
// headers next to a GEMM scratch buffer). Call before any thread exists, so
// that every thread inherits the mask.
void start_signal_thread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    for (;;) {  // for the process's lifetime; every signal only sets the flag
      int sig = 0;
      if (sigwait(&set, &sig) == 0) g_stop.store(true);
    }
  }).detach();
}

const char* kUsage =
    "tether — peer-to-peer asynchronous SGD without gradient delay\n"
    "\n"
    "usage:\n"
    "  tether train CONFIG [--node ID] [--set json.path=value]... [--resume FILE]\n"
    "  tether eval CONFIG --checkpoint FILE [--set json.path=value]... [--any-data]\n"
    "  tether config CONFIG [--set json.path=value]... [--peers | --get json.path]\n"
    "  tether checkpoint FILE [--get KEY]...\n"
    "  tether dashboard LOGDIR [--once] [--interval-ms N]\n"
    "  tether report LOGDIR -o FILE [--link-mbps X] [--config CONFIG] [--title T]\n"
    "  tether report --chart SPEC -o FILE\n"
    "  tether keygen --out DIR (--nodes N | --node K) | --config CONFIG --out DIR\n"
    "  tether --help, tether COMMAND --help\n"
    "\n"
    "train   trains this node (ID, default 0) of the config's cluster; single-node\n"
    "        when cluster.peers is absent. Progress goes to the terminal, metrics\n"
    "        as JSON lines to <log.dir>/node-<ID>.jsonl, the checkpoint to\n"
    "        <log.dir>/node-<ID>.ckpt (train.checkpoint overrides; in a cluster\n"
    "        config the node id goes before its extension: x.ckpt -> x.node-<ID>.ckpt).\n"
    "        --resume refuses a checkpoint of a run with other run keys (README).\n"
    "        SIGINT/SIGTERM: finish in-flight rounds, write a checkpoint, exit 0.\n"
    "eval    test accuracy of a checkpoint on the config's test split. A checkpoint\n"
    "        trained on another data set than data.name is refused (exit 2) unless\n"
    "        --any-data.\n"
    "config  validates CONFIG (with --set) as train does, errors alike, and prints\n"
    "        the resolved config as JSON: every key, defaults filled in, unset ones\n"
    "        null. --peers: one line per cluster peer, line k = cluster.peers.k:\n"
    "          ID HOST PORT SSH_PORT SSH_USER WORKDIR   (\"-\" when unset; WORKDIR last)\n"
    "        --get json.path: one resolved value (strings bare, null empty), e.g.\n"
    "        --get log.dir, --get cluster.peers.1.host. For scripts: they parse no JSON.\n"
    "checkpoint  verifies FILE (checksum) and prints its header as JSON (node, nodes,\n"
    "        step, round, cut, ...); --get KEY (repeatable): one line per KEY, for scripts.\n"
    "dashboard  live table of a run's nodes from LOGDIR/node-*.jsonl (step, loss,\n"
    "        test acc, img/s, idle, distance vs bound); refreshes every N ms (1000)\n"
    "        until every node finished or Ctrl-C; --once (or no terminal): one frame.\n"
    "report  writes a self-contained HTML page with plots and a summary of LOGDIR;\n"
    "        --link-mbps (or the config's net.inject_rate_mbps) draws the link rate.\n"
    "        --chart SPEC: draws a chart spec (JSON: series of [x, y] points, e.g.\n"
    "        bench/discrepancy.sh's distance against N) as FILE.svg or an HTML page.\n"
    "keygen  writes CURVE keypairs (DIR/node-K.key, mode 0600, and node-K.pub); with\n"
    "        --config, for every peer, and prints the config with the keys filled in.\n"
    "--set   overrides one config value, e.g. --set optimizer.lr=0.1\n"
    "        --set data.name=synthetic (values are JSON, bare words are strings;\n"
    "        array elements by index: --set cluster.peers.1.host=10.0.0.2)\n"
    "\n"
    "exit codes: 0 done, 1 run-time failure (peer lost, I/O), 2 bad usage/config/data\n"
    "configs: configs/*.json; docs: README.md\n";

// `tether COMMAND --help`.
const char* kTrainHelp =
    "usage: tether train CONFIG [--node ID] [--set json.path=value]... [--resume FILE]\n"
    "  trains node ID (default 0) of CONFIG's cluster (one node when cluster.peers is\n"
    "  absent); --set overrides one value (JSON, bare words are strings; array\n"
    "  elements by index); --resume continues from a checkpoint of the same run:\n"
    "  this node's, or another node's of the cluster (every node resuming from one\n"
    "  file starts at one cut).\n"
    "  SIGINT/SIGTERM: finish in-flight rounds, write a checkpoint, exit 0.\n";
const char* kEvalHelp =
    "usage: tether eval CONFIG --checkpoint FILE [--set json.path=value]... [--any-data]\n"
    "  test accuracy of the checkpoint on the config's test split; a checkpoint of\n"
    "  another data set than data.name is refused unless --any-data.\n";
const char* kConfigHelp =
    "usage: tether config CONFIG [--set json.path=value]... [--peers | --get json.path]\n"
    "  validates CONFIG with every --set as `tether train` does (same errors, exit 2)\n"
    "  and prints the resolved config as JSON: every key with its value, defaults\n"
    "  filled in, keys left unset null. `tether train` takes that output as a config.\n"
    "  --peers  one line per entry of cluster.peers (line k is cluster.peers.k), none\n"
    "           for a single node:\n"
    "             ID HOST PORT SSH_PORT SSH_USER WORKDIR\n"
    "           one space apart; SSH_USER and WORKDIR are \"-\" when unset; WORKDIR is\n"
    "           last and may hold spaces.\n"
    "  --get P  the one resolved value at json.path P (log.dir, cluster.peers.0.port):\n"
    "           strings without quotes, numbers and true/false as JSON, null as an\n"
    "           empty line; a path of no key, an object or an array is an error.\n";
const char* kCheckpointHelp =
    "usage: tether checkpoint FILE [--get KEY]...\n"
    "  reads FILE whole (magic, version, sizes, checksum: exit 2 naming the file when\n"
    "  one is wrong) and prints its header as JSON: model, data, node (the node that\n"
    "  wrote it), nodes, step, epoch, round and cut (cluster runs), run_config, ...\n"
    "  --get KEY  one line per --get, in order, instead: strings without quotes,\n"
    "             numbers and true/false as JSON, objects and arrays as one line of\n"
    "             JSON, an absent key (or null) as an empty line.\n";
const char* kDashboardHelp =
    "usage: tether dashboard LOGDIR [--once] [--interval-ms N]\n"
    "  a live table of LOGDIR/node-*.jsonl, refreshed every N ms (default 1000) until\n"
    "  every node finished or failed, or Ctrl-C; --once, or stdout not a terminal\n"
    "  without --interval-ms: one frame. Columns: see README.md, \"Dashboard\".\n";
const char* kReportHelp =
    "usage: tether report LOGDIR -o FILE [--link-mbps X] [--config CONFIG] [--title T]\n"
    "  one self-contained HTML page (inline SVG, no network) with plots over time and\n"
    "  a summary table of LOGDIR/node-*.jsonl; --link-mbps, or the config's\n"
    "  net.inject_rate_mbps, draws the link rate on the bytes-on-the-wire plot.\n"
    "usage: tether report --chart SPEC -o FILE\n"
    "  draws SPEC, a JSON chart spec ({\"title\", \"xlabel\", \"ylabel\", \"log_x\",\n"
    "  \"series\": [{\"name\", \"group\", \"dashed\", \"points\": [[x, y], ...]}]}, or\n"
    "  {\"title\", \"charts\": [chart, ...]}): one polyline per series, a colour per\n"
    "  group. FILE ending .svg: a standalone SVG of the one chart; else an HTML page.\n"
    "  Written by bench/discrepancy.sh --out and bench/paper.sh --out.\n";

int usage_error(const std::string& msg, const std::string& cmd = "") {
  std::fprintf(stderr, "tether: %s\n(run `tether %s--help` for usage)\n", msg.c_str(),
               cmd.empty() ? "" : (cmd + " ").c_str());
  return 2;
}

// Every command's arguments, filled by parse_args.
struct Args {
  std::string cmd, config_path, resume, checkpoint, get;
  std::vector<std::string> sets;
  std::vector<std::string> checkpoint_gets;   // checkpoint --get KEY...
  int node = 0;
  uint64_t fail_after_step = 0;   // train's test hooks, deliberately not in the help (TrainOptions)
  uint64_t stall_after_step = 0, stall_ms = 60000;
  std::string crash_at;           // POINT[:ROUND] (TrainOptions::crash_point)
  bool gossip_barrier = false;    // TrainOptions::gossip_barrier (hidden, a measuring aid)
  bool any_data = false, peers = false;
  tether::DashboardArgs dashboard;
  tether::ReportArgs report;
  std::string chart;   // report --chart SPEC
};

// A CLI11 check that returns `message + ", got " + value` when `ok` fails.
CLI::Validator expect(const std::string& message, std::function<bool(const std::string&)> ok) {
  return CLI::Validator(
      [message, ok](std::string& v) { return ok(v) ? std::string() : "expected " + message + ", got " + v; }, "", "");
}
bool digits(const std::string& v, size_t max_len) {
  return !v.empty() && v.size() <= max_len && v.find_first_not_of("0123456789") == std::string::npos;
}

// --crash-at POINT[:ROUND]: POINT one of net::kTestCrashPoints, ROUND an
// integer (0 when absent). False for anything else.
bool parse_crash_at(const std::string& v, std::string* point, uint64_t* round) {
  const size_t colon = v.find(':');
  const std::string p = v.substr(0, colon);
  const std::string r = colon == std::string::npos ? "0" : v.substr(colon + 1);
  if (!digits(r, 18)) return false;
  for (const char* known : tether::net::kTestCrashPoints) {
    if (p == known) {
      *point = p;
      *round = std::stoull(r);
      return true;
    }
  }
  return false;
}
std::string crash_points_text() {
  std::string s;
  for (const char* p : tether::net::kTestCrashPoints) s += (s.empty() ? "" : ", ") + std::string(p);
  return s;
}

// The one argument parser of every command (CLI11). Fills `a`; returns -1 to
// go on, else the exit code (0 after --help, 2 for bad usage, with a message
// "tether: <what>" naming the option or argument).
int parse_args(int argc, char** argv, Args& a) {
  CLI::App app("tether", "tether");
  app.formatter_fn([](const CLI::App*, std::string, CLI::AppFormatMode) { return std::string(kUsage); });
  app.require_subcommand(0, 1);
  app.allow_extras();   // unknown commands and options are reported below, in tether's words
  // An option given twice: the last one counts (as before CLI11); --set collects all.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  auto command = [&](const char* name, const char* help) {
    CLI::App* c = app.add_subcommand(name);
    c->formatter_fn([help](const CLI::App*, std::string, CLI::AppFormatMode) { return std::string(help); });
    c->allow_extras();
    return c;
  };
  auto sets = [&](CLI::App* c) {
    c->add_option("--set", a.sets)->allow_extra_args(false)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  };

  command("help", kUsage);   // `tether help` = `tether --help`
  CLI::App* train = command("train", kTrainHelp);
  train->add_option("CONFIG", a.config_path);
  train->add_option("--node", a.node)
      ->check(expect("an integer >= 0", [](const std::string& v) { return digits(v, 9); }));
  sets(train);
  train->add_option("--resume", a.resume);
  train->add_option("--fail-after-step", a.fail_after_step)
      ->check(expect("an integer >= 1", [](const std::string& v) { return digits(v, 18) && std::stoull(v) > 0; }));
  train->add_option("--stall-after-step", a.stall_after_step)
      ->check(expect("an integer >= 1", [](const std::string& v) { return digits(v, 18) && std::stoull(v) > 0; }));
  train->add_option("--stall-ms", a.stall_ms)
      ->check(expect("an integer >= 0", [](const std::string& v) { return digits(v, 9); }));
  train->add_flag("--gossip-barrier", a.gossip_barrier);   // hidden: bench/gossip_straggler.sh
  train->add_option("--crash-at", a.crash_at)
      ->check(expect("POINT or POINT:ROUND, POINT one of " + crash_points_text(), [](const std::string& v) {
        std::string point;
        uint64_t round = 0;
        return parse_crash_at(v, &point, &round);
      }));

  CLI::App* eval = command("eval", kEvalHelp);
  eval->add_option("CONFIG", a.config_path);
  eval->add_option("--checkpoint", a.checkpoint);
  sets(eval);
  eval->add_flag("--any-data", a.any_data);

  CLI::App* config = command("config", kConfigHelp);
  config->add_option("CONFIG", a.config_path);
  sets(config);
  CLI::Option* peers = config->add_flag("--peers", a.peers);
  config->add_option("--get", a.get)->excludes(peers)->check(
      expect("a json.path such as log.dir", [](const std::string& v) { return !v.empty(); }));

  CLI::App* ckpt = command("checkpoint", kCheckpointHelp);
  ckpt->add_option("FILE", a.checkpoint);
  ckpt->add_option("--get", a.checkpoint_gets)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->check(expect("a header key such as step", [](const std::string& v) { return !v.empty(); }));

  CLI::App* dashboard = command("dashboard", kDashboardHelp);
  dashboard->add_option("LOGDIR", a.dashboard.dir);
  dashboard->add_flag("--once", a.dashboard.once);
  dashboard->add_option("--interval-ms", a.dashboard.interval_ms)
      ->check(expect("an integer in [10, 3600000]",
                     [](const std::string& v) { return digits(v, 7) && std::stol(v) >= 10 && std::stol(v) <= 3600000; }));

  CLI::App* report = command("report", kReportHelp);
  report->add_option("LOGDIR", a.report.dir);
  report->add_option("-o,--output", a.report.out);
  report->add_option("--link-mbps", a.report.opts.link_mbps)->check(expect("a number > 0", [](const std::string& v) {
    char* end = nullptr;
    double x = std::strtod(v.c_str(), &end);
    return !v.empty() && *end == '\0' && x > 0 && std::isfinite(x);
  }));
  report->add_option("--config", a.report.config);
  report->add_option("--title", a.report.opts.title);
  report->add_option("--chart", a.chart);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);   // the chosen command's text, else kUsage
    return 0;
  } catch (const CLI::ParseError& e) {
    std::string what = e.what(), cmd = app.get_subcommands().empty() ? "" : app.get_subcommands()[0]->get_name();
    // "--set: 1 required TEXT missing" (a value-taking option last).
    if (e.get_name() == "ArgumentMismatch" && what.find(" missing") != std::string::npos) {
      what = what.substr(0, what.find(':')) + " needs a value";
    }
    return usage_error(what, cmd);
  }
  if (app.get_subcommands().empty()) {
    const auto rest = app.remaining();
    if (rest.empty()) return usage_error("missing command");
    if (rest[0].size() > 1 && rest[0][0] == '-') return usage_error("unknown option " + rest[0]);
    return usage_error("unknown command \"" + rest[0] + "\"");
  }
  const CLI::App* sub = app.get_subcommands()[0];
  a.cmd = sub->get_name();
  if (a.cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (const auto before = app.remaining(); !before.empty()) {   // `tether --node 1 train ...`
    return usage_error((before[0].size() > 1 && before[0][0] == '-' ? "unknown option " : "unexpected argument ") +
                           before[0] + " before " + a.cmd,
                       a.cmd);
  }
  if (const auto rest = sub->remaining(); !rest.empty()) {
    if (rest[0].size() > 1 && rest[0][0] == '-') return usage_error("unknown option " + rest[0] + " for " + a.cmd, a.cmd);
    return usage_error("unexpected argument " + rest[0] + " for " + a.cmd, a.cmd);
  }
  if (a.cmd == "checkpoint") return a.checkpoint.empty() ? usage_error("checkpoint: missing FILE", a.cmd) : -1;
  const bool on_logs = a.cmd == "dashboard" || a.cmd == "report";
  if (!on_logs && a.config_path.empty()) return usage_error(a.cmd + ": missing CONFIG", a.cmd);
  if (a.cmd == "report" && !a.chart.empty() && !a.report.dir.empty()) {
    return usage_error("report: LOGDIR and --chart exclude each other", a.cmd);
  }
  if (on_logs && (a.cmd == "dashboard" ? a.dashboard.dir : a.chart.empty() ? a.report.dir : a.chart).empty()) {
    return usage_error(a.cmd + (a.cmd == "report" ? ": missing LOGDIR (or --chart SPEC)" : ": missing LOGDIR"), a.cmd);
  }
  if (a.cmd == "eval" && a.checkpoint.empty()) return usage_error("eval: missing --checkpoint FILE", a.cmd);
  if (a.cmd == "report" && a.report.out.empty()) return usage_error("report: missing -o FILE", a.cmd);
  return -1;
}

// `tether config`: the resolved config, its peers or one value on stdout.
int config_command(const Args& a) {
  try {
    const tether::Config cfg = tether::load_config(a.config_path, a.sets);
    std::string out = a.peers ? tether::config_peer_lines(cfg)
                      : !a.get.empty() ? tether::config_get(cfg, a.get) + "\n"
                                       : tether::config_to_json(cfg).dump(2) + "\n";
    std::fputs(out.c_str(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const tether::ConfigError& e) {
    std::fprintf(stderr, "tether: config error: %s\n", e.what());
    return 2;
  }
}

// `tether checkpoint`: a checkpoint's header (verified whole) on stdout.
int checkpoint_command(const Args& a) {
  try {
    const nlohmann::json meta = tether::load_checkpoint(a.checkpoint).meta;
    std::string out;
    if (a.checkpoint_gets.empty()) out = meta.dump(2) + "\n";
    for (const std::string& key : a.checkpoint_gets) {   // one line per --get, in order
      auto it = meta.find(key);
      if (it != meta.end() && !it->is_null()) out += it->is_string() ? it->get<std::string>() : it->dump();
      out += "\n";
    }
    std::fputs(out.c_str(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  } catch (const tether::CheckpointError& e) {
    std::fprintf(stderr, "tether: checkpoint error: %s\n", e.what());
    return 2;
  }
}

}  // namespace

// Starts this node again (exec of the same binary, the same arguments plus
// --resume CHECKPOINT) to join the running cluster; returns only when that is
// not possible. Bounded: at most kMaxRejoins in a row (TETHER_REJOINS counts).
void rejoin(int argc, char** argv, const std::string& checkpoint) {
  constexpr int kMaxRejoins = 10;
  const char* env = std::getenv("TETHER_REJOINS");
  const int done = env ? std::atoi(env) : 0;
  if (done >= kMaxRejoins) {
    std::fprintf(stderr, "tether: not rejoining again (%d times in a row already)\n", done);
    return;
  }
  setenv("TETHER_REJOINS", std::to_string(done + 1).c_str(), 1);
  std::vector<std::string> args(argv, argv + argc);
  if (std::filesystem::exists(checkpoint)) {
    args.push_back("--resume");   // the last --resume counts
    args.push_back(checkpoint);
  }
  std::vector<char*> cargs;
  for (std::string& a : args) cargs.push_back(a.data());
  cargs.push_back(nullptr);
  std::fprintf(stderr, "tether: starting again to rejoin the cluster\n");
  std::fflush(nullptr);
  execv("/proc/self/exe", cargs.data());
  std::fprintf(stderr, "tether: cannot start again: %s\n", std::strerror(errno));
}

int main(int argc, char** argv) {
  // keygen parses its own arguments (runtime/keygen.cpp)
  if (argc >= 2 && std::strcmp(argv[1], "keygen") == 0) return tether::keygen_command(argc - 1, argv + 1);
  Args args;
  if (int rc = parse_args(argc, argv, args); rc >= 0) return rc;
  if (args.cmd == "config") return config_command(args);
  if (args.cmd == "checkpoint") return checkpoint_command(args);
  // Round buffers and ZeroMQ's receive chunks are megabytes each: keep glibc
  // from mapping and unmapping them on every round (process-wide, so here).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  start_signal_thread();
  if (args.cmd == "dashboard") return tether::dashboard_command(args.dashboard, &g_stop);
  if (args.cmd == "report" && !args.chart.empty()) return tether::chart_command(args.chart, args.report.out);
  if (args.cmd == "report") {
    // --config: the link rate from the node's config (observe/ does not read configs).
    return tether::report_command(args.report, [](const std::string& path) {
      return tether::load_config(path, {}).net.inject_rate_mbps;
    });
  }
  const std::string& cmd = args.cmd;
  const std::string& config_path = args.config_path;
  const std::vector<std::string>& sets = args.sets;
  const std::string& resume = args.resume;
  const std::string& checkpoint = args.checkpoint;
  const int node = args.node;
  const uint64_t fail_after_step = args.fail_after_step;
  const bool any_data = args.any_data;

  tether::Config cfg;
  try {
    cfg = tether::load_config(config_path, sets);
  } catch (const tether::ConfigError& e) {
    std::fprintf(stderr, "tether: config error: %s\n", e.what());
    return 2;
  }

  try {
    if (cmd == "eval") {
      double loss = 0;
      double acc = tether::Trainer::evaluate_checkpoint(cfg, checkpoint, &loss, any_data);
      std::printf("test_acc %.4f test_loss %.4f\n", acc, loss);
      std::printf("{\"event\": \"eval\", \"test_acc\": %.6f, \"test_loss\": %.6f}\n", acc, loss);
      return 0;
    }
    tether::TrainOptions opts;
    opts.node = node;
    opts.resume = resume;
    opts.stop = &g_stop;
    opts.fail_after_step = fail_after_step;
    opts.stall_after_step = args.stall_after_step;
    opts.stall_ms = args.stall_ms;
    opts.gossip_barrier = args.gossip_barrier;
    if (!args.crash_at.empty()) parse_crash_at(args.crash_at, &opts.crash_point, &opts.crash_round);
    tether::Trainer trainer(cfg, opts);
    tether::TrainResult r;
    try {
      r = trainer.run();
    } catch (const tether::net::TestCrash& e) {
      // --crash-at fired: the sockets are closed without a bye; die here as
      // kill -9 would (no destructors, no checkpoint, no flush of the logs).
      std::fprintf(stderr, "tether: node %d: %s (--crash-at %s): exiting 137\n", node, e.what(),
                   args.crash_at.c_str());
      std::fflush(stderr);
      _exit(137);
    }
    if (r.interrupted) {
      std::printf("interrupted after %llu steps; checkpoint %s\n", static_cast<unsigned long long>(r.steps),
                  r.checkpoint.c_str());
    } else {
      std::string acc = r.test_acc < 0 ? std::string("n/a") : std::to_string(r.test_acc).substr(0, 6);
      std::printf("done: %llu steps, test_acc %s, params_hash %s, checkpoint %s\n",
                  static_cast<unsigned long long>(r.steps), acc.c_str(), r.params_hash.c_str(), r.checkpoint.c_str());
    }
    return 0;
  } catch (const tether::ConfigError& e) {
    std::fprintf(stderr, "tether: config error: %s\n", e.what());
    return 2;
  } catch (const tether::DataError& e) {
    std::fprintf(stderr, "tether: data error: %s\n", e.what());
    return 2;
  } catch (const tether::CheckpointError& e) {
    std::fprintf(stderr, "tether: checkpoint error: %s\n", e.what());
    return 2;
  } catch (const tether::net::StartRefused& e) {
    // another config, or a checkpoint of another cut: nothing was written
    std::fprintf(stderr, "tether: node %d refused by its peers' start: %s\n", node, e.what());
    return 2;
  } catch (const tether::net::Excluded& e) {
    // The others went on without this node (it was stopped or cut off): it
    // starts again as the same command and joins them, keeping its optimizer
    // state through the checkpoint it has just written.
    std::fprintf(stderr, "tether: node %d: %s\n", node, e.what());
    rejoin(argc, argv, tether::checkpoint_path_for_node(cfg, node));
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tether: node %d failed: %s\n", node, e.what());
    return 1;
  }
}
