// tether ring all-reduce benchmark: N forked processes on 127.0.0.1, one
// Communicator each, measured like ../shared/peers/bench_allreduce.py (gloo):
// per iteration a barrier (a one-float all-reduce on a second communicator),
// then one timed all-reduce; the iteration's time is the slowest node's;
// median over the iterations after warm-up. Correctness in the same run:
// inputs x_i[j] = i + 1 + (j % 3), every element of every result is checked
// against the closed-form mean ("wrong" counts the mismatches).
//
// usage: allreduce_bench [--nodes 4] [--numel 11000000] [--iters 20] [--warmup 3]
//                        [--chunk-bytes 1048576] [--sweep | --sweep-only]
// --sweep adds sizes 4 KB .. 64 MB (x4) with time, algbw and busbw;
// --sweep-only skips the --numel measurement. TETHER_BENCH_VERBOSE=1 prints
// every iteration's time (slowest node) to stderr.
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "net/communicator.h"
#include "test/net/net_test_util.h"

using namespace tether::net;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
  int nodes = 4;
  size_t numel = 11000000;
  int iters = 20, warmup = 3;
  size_t chunk_bytes = 1 << 20;
  bool sweep = false, main_size = true;
};

float input(int node, size_t j) { return static_cast<float>(node + 1 + static_cast<int>(j % 3)); }

// One node: returns "wrong t_0 t_1 ... t_{iters-1}" (ms).
std::string run_node(int self, const Args& a, size_t numel, int iters, const std::vector<int>& ports) {
  CommOptions o;
  o.self = self;
  o.chunk_bytes = a.chunk_bytes;
  o.window = 1;
  o.connect_timeout_ms = 30000;
  o.peer_timeout_ms = 10000;
  o.heartbeat_ms = 200;
  for (int i = 0; i < a.nodes; ++i) o.peers.push_back({i, "127.0.0.1", ports[static_cast<size_t>(i)]});
  CommOptions ob = o;  // the barrier: its own ports
  for (int i = 0; i < a.nodes; ++i) ob.peers[static_cast<size_t>(i)].port = ports[static_cast<size_t>(a.nodes + i)];
  Communicator comm(o), barrier(ob);
  std::vector<float> params(numel, 0.0f), one(1, 0.0f);
  comm.start(params.data(), numel);
  barrier.start(one.data(), 1);
  auto wait_round = [](Communicator& c) {
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < deadline) {  // bounded
      if (auto r = c.wait(1000)) return std::move(r->mixed);
    }
    throw std::runtime_error("all-reduce timed out");
  };
  double sum_inputs = 0;
  std::vector<float> expected(3);
  for (int k = 0; k < 3; ++k) {
    sum_inputs = 0;
    for (int i = 0; i < a.nodes; ++i) sum_inputs += input(i, static_cast<size_t>(k));
    expected[static_cast<size_t>(k)] = static_cast<float>(sum_inputs) / static_cast<float>(a.nodes);
  }
  std::vector<float> x(numel);
  size_t wrong = 0;
  uint64_t barriers = 0;  // rounds of the barrier communicator
  std::ostringstream times;
  for (int it = 0; it < a.warmup + iters; ++it) {  // warm-up, then timed iterations
    for (size_t j = 0; j < numel; ++j) x[j] = input(self, j);
    barrier.submit(barriers++, std::vector<float>(1, 1.0f), {});
    wait_round(barrier);
    const auto t0 = Clock::now();
    comm.submit(static_cast<uint64_t>(it), std::move(x), {});
    x = wait_round(comm);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    // Verify only once every node is done: on an oversubscribed machine a
    // node checking its result would take CPU from one still reducing (the
    // gloo and MPI peers do no checking at all).
    barrier.submit(barriers++, std::vector<float>(1, 1.0f), {});
    wait_round(barrier);
    for (size_t j = 0; j < numel; ++j) wrong += x[j] != expected[j % 3];
    if (it >= a.warmup) times << " " << ms;
  }
  barrier.stop(5000);
  comm.stop(5000);
  return std::to_string(wrong) + times.str();
}

struct Measure {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  size_t wrong = 0;
  bool ok = false;
};

Measure measure(const Args& a, size_t numel, int iters) {
  const std::vector<int> ports = tether::net::testing::free_ports(2 * a.nodes);
  const auto res = tether::net::testing::run_children(
      a.nodes, [&](int i) { return run_node(i, a, numel, iters, ports); }, 600000);
  Measure m;
  std::vector<double> worst(static_cast<size_t>(iters), 0.0);  // per iteration: slowest node
  m.ok = true;
  for (const auto& r : res) {
    if (!r.ok) {
      std::fprintf(stderr, "node failed: %s\n", r.out.c_str());
      m.ok = false;
      continue;
    }
    std::istringstream in(r.out);
    size_t wrong = 0;
    in >> wrong;
    m.wrong += wrong;
    for (int k = 0; k < iters; ++k) {
      double t = 0;
      in >> t;
      worst[static_cast<size_t>(k)] = std::max(worst[static_cast<size_t>(k)], t);
    }
  }
  if (std::getenv("TETHER_BENCH_VERBOSE")) {  // bench-only diagnostics
    for (double t : worst) std::fprintf(stderr, " %.0f", t);
    std::fprintf(stderr, "\n");
  }
  std::sort(worst.begin(), worst.end());
  m.median_ms = worst[worst.size() / 2];
  m.min_ms = worst.front();
  m.max_ms = worst.back();
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        return nullptr;
      }
      return argv[++i];
    };
    const char* v = nullptr;
    if (k == "--sweep") {
      a.sweep = true;
    } else if (k == "--sweep-only") {
      a.sweep = true;
      a.main_size = false;
    } else if ((k == "--nodes" || k == "--numel" || k == "--iters" || k == "--warmup" ||
                k == "--chunk-bytes") && (v = next()) != nullptr) {
      const long long n = std::atoll(v);
      if (k == "--nodes") a.nodes = static_cast<int>(n);
      if (k == "--numel") a.numel = static_cast<size_t>(n);
      if (k == "--iters") a.iters = static_cast<int>(n);
      if (k == "--warmup") a.warmup = static_cast<int>(n);
      if (k == "--chunk-bytes") a.chunk_bytes = static_cast<size_t>(n);
    } else {
      std::fprintf(stderr, "usage: %s [--nodes N] [--numel n] [--iters k] [--warmup w] "
                           "[--chunk-bytes b] [--sweep | --sweep-only]\n", argv[0]);
      return 2;
    }
  }
  if (a.nodes < 1 || a.iters < 1 || a.warmup < 0) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  // ZeroMQ allocates every received message (a chunk: chunk_bytes); keep
  // glibc from serving and returning those through mmap/munmap and heap trims,
  // which page-faults and zeroes every chunk again (the runtime's main does
  // the same). Process-wide, so set here, never inside net/.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  const double bus = 2.0 * (a.nodes - 1) / a.nodes;
  int status = 0;
  auto report = [&](const char* tag, size_t numel, int iters) {
    const Measure m = measure(a, numel, iters);
    const double bytes = static_cast<double>(numel) * 4;
    const double algbw = bytes / (m.median_ms * 1e-3) / 1e9;
    std::printf("%s nodes=%d numel=%zu bytes=%.0f iters=%d median=%.2f ms min=%.2f ms max=%.2f ms "
                "algbw=%.3f GB/s busbw=%.3f GB/s wrong=%zu%s\n",
                tag, a.nodes, numel, bytes, iters, m.median_ms, m.min_ms, m.max_ms, algbw,
                algbw * bus, m.wrong, m.ok ? "" : " FAILED");
    std::fflush(stdout);
    if (!m.ok || m.wrong) status = 1;
  };
  if (a.main_size) report("TETHER", a.numel, a.iters);
  if (a.sweep) {
    std::printf("# sweep: size, median time, algbw = bytes/time, busbw = algbw*2(N-1)/N\n");
    for (size_t bytes = 4096; bytes <= (size_t{64} << 20); bytes *= 4) {  // 4 KB .. 64 MB
      report("SWEEP", bytes / 4, bytes <= (size_t{1} << 20) ? 50 : (bytes <= (size_t{16} << 20) ? 20 : 10));
    }
  }
  return status;
}
