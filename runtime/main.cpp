// tether: one binary per machine.
//   tether train CONFIG [--node ID] [--set json.path=value]... [--resume FILE]
//   tether eval CONFIG --checkpoint FILE [--set ...] [--any-data]
//   tether dashboard LOGDIR [--once] [--interval-ms N]
//   tether report LOGDIR -o FILE [--link-mbps X] [--config CONFIG] [--title T]
// Exit codes: 0 done (also after SIGINT/SIGTERM with a checkpoint written),
// 1 run-time failure (a peer lost, I/O), 2 bad usage, config, data or checkpoint.
#include <malloc.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "models/dataset.h"
#include "net/communicator.h"
#include "observe/dashboard.h"
#include "observe/report.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
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
    "  tether dashboard LOGDIR [--once] [--interval-ms N]\n"
    "  tether report LOGDIR -o FILE [--link-mbps X] [--config CONFIG] [--title T]\n"
    "  tether --help\n"
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
    "dashboard  live table of a run's nodes from LOGDIR/node-*.jsonl (step, loss,\n"
    "        test acc, img/s, idle, distance vs bound); refreshes every N ms (1000)\n"
    "        until every node finished or Ctrl-C; --once (or no terminal): one frame.\n"
    "report  writes a self-contained HTML page with plots and a summary of LOGDIR;\n"
    "        --link-mbps (or the config's net.inject_rate_mbps) draws the link rate.\n"
    "--set   overrides one config value, e.g. --set optimizer.lr=0.1\n"
    "        --set data.name=synthetic (values are JSON, bare words are strings)\n"
    "\n"
    "exit codes: 0 done, 1 run-time failure (peer lost, I/O), 2 bad usage/config/data\n"
    "configs: configs/*.json; docs: README.md\n";

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "tether: %s\n(run `tether --help` for usage)\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage_error("missing command");
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  // Round buffers and ZeroMQ's receive chunks are megabytes each: keep glibc
  // from mapping and unmapping them on every round (process-wide, so here).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  start_signal_thread();
  if (args[0] == "dashboard" || args[0] == "report") {
    std::vector<std::string> rest(args.begin() + 1, args.end());
    if (args[0] == "dashboard") return tether::dashboard_command(rest, &g_stop);
    // --config: the link rate from the node's config (observe/ does not read configs).
    return tether::report_command(rest, [](const std::string& config_path) {
      return tether::load_config(config_path, {}).net.inject_rate_mbps;
    });
  }
  const std::string cmd = args[0];
  if (cmd != "train" && cmd != "eval") return usage_error("unknown command \"" + cmd + "\"");
  std::string config_path, resume, checkpoint;
  std::vector<std::string> sets;
  int node = 0;
  uint64_t fail_after_step = 0;   // test hook, deliberately not in kUsage (TrainOptions)
  bool any_data = false;
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= args.size()) throw std::invalid_argument(std::string(flag) + " needs a value");
      return args[++i];
    };
    try {
      if (a == "--node") {
        std::string v = value("--node");
        size_t used = 0;
        node = std::stoi(v, &used);
        if (used != v.size() || node < 0) throw std::invalid_argument("--node: expected an integer >= 0, got " + v);
      } else if (a == "--set") {
        sets.push_back(value("--set"));
      } else if (a == "--resume" && cmd == "train") {
        resume = value("--resume");
      } else if (a == "--fail-after-step" && cmd == "train") {
        std::string v = value("--fail-after-step");
        if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 18 || std::stoull(v) == 0) {
          throw std::invalid_argument("--fail-after-step: expected an integer >= 1, got " + v);
        }
        fail_after_step = std::stoull(v);
      } else if (a == "--checkpoint" && cmd == "eval") {
        checkpoint = value("--checkpoint");
      } else if (a == "--any-data" && cmd == "eval") {
        any_data = true;
      } else if (a == "--help" || a == "-h") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (!a.empty() && a[0] == '-') {
        return usage_error("unknown option " + a + " for " + cmd);
      } else if (config_path.empty()) {
        config_path = a;
      } else {
        return usage_error("unexpected argument " + a);
      }
    } catch (const std::invalid_argument& e) {
      return usage_error(std::string(e.what()).find("stoi") != std::string::npos
                             ? "--node: expected an integer >= 0, got " + args[i]
                             : e.what());
    } catch (const std::out_of_range&) {
      return usage_error("--node: value out of range");
    }
  }
  if (config_path.empty()) return usage_error(cmd + ": missing CONFIG");
  if (cmd == "eval" && checkpoint.empty()) return usage_error("eval: missing --checkpoint FILE");

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
    tether::Trainer trainer(cfg, opts);
    tether::TrainResult r = trainer.run();
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
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tether: node %d failed: %s\n", node, e.what());
    return 1;
  }
}
