// tether ring all-reduce benchmark: N forked processes on 127.0.0.1, one
// Communicator each, measured like ../shared/peers/bench_allreduce.py (gloo):
// per iteration a barrier, then one timed all-reduce, each process timing
// from its own start; the iteration's time is the slowest process's; median
// over the iterations after warm-up. Correctness in the same run: inputs
// x_i[j] = i + 1 + (j % 3), every element of every result is checked against
// the closed-form mean ("wrong" counts the mismatches), after a second
// barrier so that no process checks while another is still timed.
// The barrier is harness, not the system measured: a process-shared mutex and
// condition variable in shared memory. skew= reports how far apart it
// releases the processes (median over iterations of the latest minus the
// earliest start, from CLOCK_MONOTONIC stamps, which all processes share):
// 0.1-1.5 ms here, against 0.3-0.6 ms for gloo's barrier in its benchmark
// (measured with an instrumented copy) and 3.5 ms for the ring all-reduce of
// one float this benchmark used before. cpu_user= and cpu_sys= are the CPU
// time of one all-reduce summed over the processes (getrusage around the
// timed call, every thread), the mean over the timed iterations.
//
// usage: allreduce_bench [--nodes 4] [--numel 11000000] [--iters 20] [--warmup 3]
//                        [--chunk-bytes 1048576] [--sweep | --sweep-only]
// --sweep adds sizes 4 KB .. 64 MB (x4) with time, algbw and busbw;
// --sweep-only skips the --numel measurement. --curve: every link CurveZMQ. TETHER_BENCH_VERBOSE=1 prints
// every iteration's time (slowest node) to stderr.
// --reference tcp: the same harness, sizes and checks around the plain-TCP
// ring of bench/net/tcp_ring.h instead of tether (tag TCPRING): what a TCP
// transport with this schedule and nothing else gets on this machine.
// --netns PREFIX --subnet A.B.C (scripts/switch.sh's namespaces, root): node
// i runs in network namespace PREFIX<i> (setns in its forked process, before
// any socket or thread exists) at address A.B.C.<i+1>, so every link crosses
// the emulated switch (bench/allreduce.sh --switch RATE).
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/net/tcp_ring.h"
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
  bool curve = false;                            // --curve: CurveZMQ on every link
  bool tcp_reference = false;                    // --reference tcp: the plain-TCP ring instead of tether's
  std::string netns, subnet;                     // --netns PREFIX --subnet A.B.C: across the emulated switch
  std::vector<std::pair<std::string, std::string>> keys;  // [node] (public, secret), Z85
};

float input(int node, size_t j) { return static_cast<float>(node + 1 + static_cast<int>(j % 3)); }

// A barrier for the forked processes, in MAP_SHARED memory created before the
// fork. wait() throws after timeout_ms (a process that died never arrives).
class SharedBarrier {
 public:
  static SharedBarrier* create(int count) {
    void* mem = ::mmap(nullptr, sizeof(SharedBarrier), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("mmap of the barrier failed");
    auto* b = new (mem) SharedBarrier();
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&b->mu_, &ma);
    pthread_mutexattr_destroy(&ma);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv_, &ca);
    pthread_condattr_destroy(&ca);
    b->count_ = count;
    return b;
  }
  static void destroy(SharedBarrier* b) {
    pthread_cond_destroy(&b->cv_);
    pthread_mutex_destroy(&b->mu_);
    ::munmap(b, sizeof(SharedBarrier));
  }
  void wait(int timeout_ms) {
    timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += static_cast<long>(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
      deadline.tv_sec += 1;
      deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&mu_);
    const uint64_t gen = generation_;
    if (++waiting_ == count_) {  // the last to arrive releases everyone
      waiting_ = 0;
      ++generation_;
      pthread_cond_broadcast(&cv_);
      pthread_mutex_unlock(&mu_);
      return;
    }
    int rc = 0;
    while (gen == generation_ && rc == 0) rc = pthread_cond_timedwait(&cv_, &mu_, &deadline);  // bounded
    const bool released = gen != generation_;
    pthread_mutex_unlock(&mu_);
    if (!released) throw std::runtime_error("barrier: not every process arrived within the time-out");
  }

 private:
  pthread_mutex_t mu_;
  pthread_cond_t cv_;
  int count_ = 0, waiting_ = 0;
  uint64_t generation_ = 0;
};

// Node self's forked process joins its namespace (--netns): call while it is
// still one thread with no socket.
void enter_netns(int self, const Args& a) {
  if (a.netns.empty()) return;
  const std::string path = "/run/netns/" + a.netns + std::to_string(self);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0)
    throw std::runtime_error("node " + std::to_string(self) + ": cannot enter network namespace " + path + ": " +
                             std::strerror(errno) + " (scripts/switch.sh up N RATE first; needs root)");
  ::close(fd);
}

std::string host_of(const Args& a, int node) {
  return a.netns.empty() ? std::string("127.0.0.1") : a.subnet + "." + std::to_string(node + 1);
}

// The timed loop of one node, whatever runs the all-reduce: `allreduce`
// takes the input (it may keep the storage and hand it back through the same
// reference) and returns the mean. Returns "wrong t_0 ... t_{iters-1} s_0 ...
// s_{iters-1} cpu...": the timed iterations (ms), their start stamps (ms on
// CLOCK_MONOTONIC) and their CPU times.
using AllreduceFn = std::function<const std::vector<float>&(std::vector<float>& x, int iteration)>;
std::string timed_loop(int self, const Args& a, size_t numel, int iters, SharedBarrier* barrier,
                       const AllreduceFn& allreduce) {
  double sum_inputs = 0;
  std::vector<float> expected(3);
  for (int k = 0; k < 3; ++k) {
    sum_inputs = 0;
    for (int i = 0; i < a.nodes; ++i) sum_inputs += input(i, static_cast<size_t>(k));
    expected[static_cast<size_t>(k)] = static_cast<float>(sum_inputs) / static_cast<float>(a.nodes);
  }
  std::vector<float> x(numel);
  size_t wrong = 0;
  std::ostringstream times, starts, cpu;
  auto tv_ms = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_usec) * 1e-3; };
  starts.setf(std::ios::fixed);
  starts.precision(4);
  constexpr int kBarrierMs = 60000;
  for (int it = 0; it < a.warmup + iters; ++it) {  // warm-up, then timed iterations
    for (size_t j = 0; j < numel; ++j) x[j] = input(self, j);
    barrier->wait(kBarrierMs);
    rusage ru0{}, ru1{};
    getrusage(RUSAGE_SELF, &ru0);  // every thread of this node: caller, I/O, ZeroMQ's
    const auto t0 = Clock::now();
    const std::vector<float>& mean = allreduce(x, it);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    getrusage(RUSAGE_SELF, &ru1);
    // Verify only once every node is done: on an oversubscribed machine a
    // node checking its result would take CPU from one still reducing (the
    // gloo and MPI peers do no checking at all).
    barrier->wait(kBarrierMs);
    for (size_t j = 0; j < numel; ++j) wrong += mean[j] != expected[j % 3];
    if (x.size() != numel) throw std::runtime_error("the all-reduce did not hand the input vector back");
    if (it >= a.warmup) {
      times << " " << ms;
      cpu << " " << tv_ms(ru1.ru_utime) - tv_ms(ru0.ru_utime) << " " << tv_ms(ru1.ru_stime) - tv_ms(ru0.ru_stime);
      starts << " " << std::chrono::duration<double, std::milli>(t0.time_since_epoch()).count();
    }
  }
  return std::to_string(wrong) + times.str() + starts.str() + cpu.str();
}

// One node of tether's ring: a Communicator.
std::string run_node(int self, const Args& a, size_t numel, int iters, const std::vector<int>& ports,
                     SharedBarrier* barrier) {
  enter_netns(self, a);
  CommOptions o;
  o.self = self;
  o.chunk_bytes = a.chunk_bytes;
  o.window = 1;
  o.connect_timeout_ms = 30000;
  o.peer_timeout_ms = 10000;
  o.heartbeat_ms = 200;
  for (int i = 0; i < a.nodes; ++i)
    o.peers.push_back({i, host_of(a, i), ports[static_cast<size_t>(i)]});
  if (a.curve) {
    o.curve = true;
    for (auto& p : o.peers) p.public_key = a.keys[static_cast<size_t>(p.id)].first;
    o.public_key = a.keys[static_cast<size_t>(self)].first;
    o.secret_key = a.keys[static_cast<size_t>(self)].second;
  }
  Communicator comm(o);
  std::vector<float> params(numel, 0.0f);
  comm.start(params.data(), numel);
  RoundResult res;
  const std::string out = timed_loop(self, a, numel, iters, barrier, [&](std::vector<float>& x, int it) -> const std::vector<float>& {
    comm.submit(static_cast<uint64_t>(it), std::move(x), {});
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    std::optional<RoundResult> r;
    while (!r && Clock::now() < deadline) r = comm.wait(1000);  // bounded
    if (!r) throw std::runtime_error("all-reduce timed out");
    res = std::move(*r);
    x = std::move(res.submitted);  // handed back unchanged: the next iteration's input storage
    return *res.mixed;
  });
  comm.stop(5000);
  return out;
}

// One node of the plain-TCP reference ring (--reference tcp, bench/net/tcp_ring.h).
std::string run_tcp_node(int self, const Args& a, size_t numel, int iters, const std::vector<int>& ports,
                         SharedBarrier* barrier) {
  enter_netns(self, a);
  std::vector<std::string> hosts;
  for (int i = 0; i < a.nodes; ++i) hosts.push_back(host_of(a, i));
  tether::bench::TcpRing ring(self, hosts, ports, a.chunk_bytes, 30000);
  std::vector<float> mean;
  return timed_loop(self, a, numel, iters, barrier, [&](std::vector<float>& x, int) -> const std::vector<float>& {
    ring.allreduce(x, mean, 60000);
    return mean;
  });
}

struct Measure {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double skew_ms = 0;  // median over iterations of (latest start - earliest start)
  // CPU time of one all-reduce summed over the processes (all their threads),
  // mean over the timed iterations: getrusage splits a thread's time into user
  // and system by sampling, so one iteration's split is noisy, the mean is not.
  double cpu_user_ms = 0, cpu_sys_ms = 0;
  size_t wrong = 0;
  bool ok = false;
};

Measure measure(const Args& a, size_t numel, int iters) {
  const std::vector<int> ports = tether::net::testing::free_ports(a.nodes);
  SharedBarrier* barrier = SharedBarrier::create(a.nodes);
  const auto res = tether::net::testing::run_children(
      a.nodes,
      [&](int i) {
        return a.tcp_reference ? run_tcp_node(i, a, numel, iters, ports, barrier)
                               : run_node(i, a, numel, iters, ports, barrier);
      },
      600000);
  SharedBarrier::destroy(barrier);
  Measure m;
  const auto n = static_cast<size_t>(iters);
  std::vector<double> worst(n, 0.0);  // per iteration: slowest node
  std::vector<double> first(n, 1e300), last(n, -1e300);  // per iteration: start stamps
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
    for (size_t k = 0; k < n; ++k) {  // k over the timed iterations
      double t = 0;
      in >> t;
      worst[k] = std::max(worst[k], t);
    }
    for (size_t k = 0; k < n; ++k) {  // k over the timed iterations: start stamps
      double st = 0;
      in >> st;
      first[k] = std::min(first[k], st);
      last[k] = std::max(last[k], st);
    }
    for (size_t k = 0; k < n; ++k) {  // k over the timed iterations: CPU ms, user and system
      double u = 0, sy = 0;
      in >> u >> sy;
      m.cpu_user_ms += u / static_cast<double>(n);
      m.cpu_sys_ms += sy / static_cast<double>(n);
    }
    if (!in) {
      std::fprintf(stderr, "node output malformed: %s\n", r.out.c_str());
      m.ok = false;
    }
  }
  if (!m.ok) return m;
  if (std::getenv("TETHER_BENCH_VERBOSE")) {  // bench-only diagnostics
    for (double t : worst) std::fprintf(stderr, " %.0f", t);
    std::fprintf(stderr, "\n");
  }
  std::vector<double> skew(n);
  for (size_t k = 0; k < n; ++k) skew[k] = last[k] - first[k];  // k over the timed iterations
  std::sort(skew.begin(), skew.end());
  m.skew_ms = skew[n / 2];
  std::sort(worst.begin(), worst.end());
  m.median_ms = worst[n / 2];
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
    } else if (k == "--curve") {
      a.curve = true;
    } else if (k == "--reference" && (v = next()) != nullptr) {
      if (std::string(v) != "tcp") {
        std::fprintf(stderr, "--reference: the only reference is tcp, got %s\n", v);
        return 2;
      }
      a.tcp_reference = true;
    } else if (k == "--sweep-only") {
      a.sweep = true;
      a.main_size = false;
    } else if ((k == "--netns" || k == "--subnet") && (v = next()) != nullptr) {
      (k == "--netns" ? a.netns : a.subnet) = v;
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
                           "[--chunk-bytes b] [--sweep | --sweep-only] [--curve] [--reference tcp] [--netns PREFIX --subnet A.B.C]\n",
                   argv[0]);
      return 2;
    }
  }
  if (a.nodes < 1 || a.iters < 1 || a.warmup < 0 || a.netns.empty() != a.subnet.empty() ||
      (a.tcp_reference && a.curve)) {
    std::fprintf(stderr, "bad arguments (--netns and --subnet go together; --reference tcp has no --curve)\n");
    return 2;
  }
  for (int i = 0; a.curve && i < a.nodes; ++i) {  // one keypair per node, made before the fork
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) return 1;
    a.keys.emplace_back(pub, sec);
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
                "algbw=%.3f GB/s busbw=%.3f GB/s wrong=%zu skew=%.2f ms cpu_user=%.1f ms cpu_sys=%.1f ms%s\n",
                tag, a.nodes, numel, bytes, iters, m.median_ms, m.min_ms, m.max_ms, algbw,
                algbw * bus, m.wrong, m.skew_ms, m.cpu_user_ms, m.cpu_sys_ms, m.ok ? "" : " FAILED");
    std::fflush(stdout);
    if (!m.ok || m.wrong) status = 1;
  };
  if (a.main_size) report(a.tcp_reference ? "TCPRING" : "TETHER", a.numel, a.iters);
  if (a.sweep) {
    std::printf("# sweep: size, median time, algbw = bytes/time, busbw = algbw*2(N-1)/N\n");
    for (size_t bytes = 4096; bytes <= (size_t{64} << 20); bytes *= 4) {  // 4 KB .. 64 MB
      report("SWEEP", bytes / 4, bytes <= (size_t{1} << 20) ? 50 : (bytes <= (size_t{16} << 20) ? 20 : 10));
    }
  }
  return status;
}
