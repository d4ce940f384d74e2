// The parameter-server baselines alone (runtime/server_averaging.h),
// in-process: N nodes as threads, each a ServerAveraging over a real
// net::Communicator and ShardService on 127.0.0.1, driven by scripted local
// steps on a host vector; each checked against a reference computed another
// way (plain SGD, independent training, EASGD's closed form), and Downpour's
// gradient delay measured at N = 2 and 8.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>

#include "runtime/monitor.h"
#include "runtime/server_averaging.h"
#include "test/net/net_test_util.h"
#include "test/runtime/bounded_threads.h"
#include "test/runtime/vector_params.h"

using namespace tether;
using tether::testing::run_nodes_bounded;
using tether::testing::VectorParams;

namespace {

// Scripted noise of `node` at `step`, coordinate j, in [-amp, amp].
float noise(int node, uint64_t step, size_t j, float amp) {
  uint64_t h = (uint64_t(node) * 0x9E3779B97F4A7C15ull) ^ (step * 0xC2B2AE3D27D4EB4Full) ^ (j * 0x165667B19E3779F9ull);
  h ^= h >> 31;
  h *= 0xD6E8FEB86659FD93ull;
  h ^= h >> 32;
  return amp * (float(h % 2001) / 1000.0f - 1.0f);
}

// One local step: plain SGD on a quadratic with noise when `gradient`
// (the update depends on x, so any perturbation of x changes the whole
// trajectory), else the scripted noise alone.
void local_step(std::vector<float>& x, int node, uint64_t t, bool gradient) {
  for (size_t j = 0; j < x.size(); ++j) {   // j over the vector
    const float g = gradient ? (x[j] - 0.3f * float(j % 7)) + noise(node, t, j, 0.5f) : 0.0f;
    x[j] = gradient ? x[j] - 0.05f * g : x[j] + noise(node, t, j, 0.01f);
  }
}

struct Run {
  int nodes = 2;
  std::vector<int> steps;   // [node] local steps (0: a shard server only)
  bool easgd = false, gradient = true;
  int n_push = 1, n_fetch = 1, tau = 1;
  double alpha = 0.1;
  size_t dim = 301;
  double step_ms = 0;
};

struct NodeOut {
  std::vector<std::vector<float>> closes;   // [round] x_i as the round closed (period 1: after each step)
  std::vector<float> final_x;
  double grad_delay = 0;
  double max_pair_dist_run = 0;   // the monitor's estimate from the nodes' sketches
  std::string error;
};

std::vector<float> x0_of(size_t dim) {
  std::vector<float> x(dim);
  for (size_t j = 0; j < dim; ++j) x[j] = float(0.5 + 0.001 * double(j));
  return x;
}

std::vector<NodeOut> run_cluster(const Run& run) {
  const std::vector<int> ports = net::testing::free_ports(run.nodes);
  std::vector<NodeOut> out(size_t(run.nodes));
  run_nodes_bounded(run.nodes, [&](int i) {
    NodeOut& me = out[size_t(i)];
    try {
      net::CommOptions c;
      c.self = i;
      c.peers = net::testing::loopback_peers(ports);
      c.window = 1;
      c.connect_timeout_ms = 20000;
      c.heartbeat_ms = 100;
      c.peer_timeout_ms = 10000;
      c.sketch_floats = 1024 + kSketchTail;
      auto svc = std::make_shared<net::ShardService>(i, run.nodes, run.dim, 4, c.sketch_floats);
      c.service = svc;
      ServerOptions o;
      o.node = i;
      o.easgd = run.easgd;
      o.n_push = run.n_push;
      o.n_fetch = run.n_fetch;
      o.alpha = run.alpha;
      o.tau = run.tau;
      o.peer_timeout_ms = 20000;
      o.sketch_floats = 1024 + kSketchTail;
      o.sketch_buckets = 1024;
      o.on_close = [&me](uint64_t, const float* x, size_t n, double) { me.closes.emplace_back(x, x + n); };
      // Node 0's x0 everywhere (the start-up broadcast): the others start elsewhere.
      VectorParams params(i == 0 ? x0_of(run.dim) : std::vector<float>(run.dim, 99.0f));
      auto avg = make_server_averaging(o, std::make_unique<net::Communicator>(c), svc, &params);
      for (int t = 0; t < run.steps[size_t(i)]; ++t) {   // bounded: the script's steps
        local_step(params.x, i, uint64_t(t), run.gradient);
        if (run.step_ms > 0) std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(run.step_ms));
        avg->after_step(uint64_t(t) + 1);
      }
      const nlohmann::json m = avg->metrics();
      me.grad_delay = m.value("grad_delay", -1.0);
      me.max_pair_dist_run = m.value("max_pair_dist_run", -1.0);
      avg->finish();
      me.final_x = params.x;
    } catch (const std::exception& e) {
      me.error = e.what();
    }
  }, 240, "run_cluster");
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_SUITE("server_averaging") {

TEST_CASE("downpour, one worker, n_push = n_fetch = 1: bit for bit plain SGD, with 0, 1 and 3 remote shard servers") {
  for (int nodes : {1, 2, 4}) {
    CAPTURE(nodes);
    Run run;
    run.nodes = nodes;
    run.steps.assign(size_t(nodes), 0);
    run.steps[0] = 60;   // node 0 trains; the others only serve their shards
    const auto out = run_cluster(run);
    for (const NodeOut& o : out) REQUIRE_MESSAGE(o.error.empty(), o.error);
    std::vector<float> x = x0_of(run.dim);
    REQUIRE(out[0].closes.size() == 60);
    for (int t = 0; t < 60; ++t) {   // plain SGD, one node
      local_step(x, 0, uint64_t(t), true);
      CAPTURE(t);
      REQUIRE(same_bits(out[0].closes[size_t(t)], x));
    }
    for (const NodeOut& o : out) CHECK(same_bits(o.final_x, x));   // the servers' x̃, gathered by every node
    CHECK(out[0].grad_delay == 0.0);   // one worker: nobody updates between its fetch and its push
  }
}

TEST_CASE("easgd, alpha = 0: every worker trains alone, bit for bit; the centre stays x0") {
  Run run;
  run.nodes = 3;
  run.easgd = true;
  run.alpha = 0.0;
  run.tau = 2;
  run.steps = {40, 40, 40};
  const auto out = run_cluster(run);
  for (const NodeOut& o : out) REQUIRE_MESSAGE(o.error.empty(), o.error);
  for (int i = 0; i < run.nodes; ++i) {
    CAPTURE(i);
    std::vector<float> x = x0_of(run.dim);
    REQUIRE(out[size_t(i)].closes.size() == 40);
    for (int t = 0; t < 40; ++t) {   // this worker alone
      local_step(x, i, uint64_t(t), true);
      CAPTURE(t);
      REQUIRE(same_bits(out[size_t(i)].closes[size_t(t)], x));
    }
    CHECK(same_bits(out[size_t(i)].final_x, x0_of(run.dim)));   // the final model is the centre
  }
}

TEST_CASE("easgd, one worker, tau = 1: the centre follows the closed form (and the worker with it)") {
  // x_t = y − d, x̃_t = x̃ + d with y = x_{t−1} + u_t and d = α(y − x̃): the sum
  // x + x̃ = 2·x0 + Σu is kept, the difference e = x − x̃ obeys
  // e_t = (1 − 2α)(e_{t−1} + u_t), e_0 = 0. So x̃_T = (2·x0 + Σu − e_T) / 2.
  const double alpha = 0.15;
  const int steps = 50;
  Run run;
  run.nodes = 2;   // one worker (node 0); node 1 serves half of the centre over the wire
  run.easgd = true;
  run.alpha = alpha;
  run.gradient = false;   // scripted updates u_t, independent of x
  run.steps = {steps, 0};
  const auto out = run_cluster(run);
  for (const NodeOut& o : out) REQUIRE_MESSAGE(o.error.empty(), o.error);
  const std::vector<float> x0 = x0_of(run.dim);
  double worst_c = 0, worst_x = 0;
  for (size_t j = 0; j < run.dim; ++j) {   // j over the vector
    double e = 0, sum_u = 0;
    for (int t = 0; t < steps; ++t) {
      const double u = noise(0, uint64_t(t), j, 0.01f);
      sum_u += u;
      e = (1 - 2 * alpha) * (e + u);
    }
    const double centre = (2 * double(x0[j]) + sum_u - e) / 2, worker = (2 * double(x0[j]) + sum_u + e) / 2;
    worst_c = std::max(worst_c, std::abs(double(out[1].final_x[j]) - centre));
    worst_x = std::max(worst_x, std::abs(double(out[0].closes.back()[j]) - worker));
  }
  CHECK(worst_c < 2e-6);
  CHECK(worst_x < 2e-6);
  CHECK(same_bits(out[0].final_x, out[1].final_x));
  // and the centre moved: a wrong α or sign would be far off
  double moved = 0;
  for (size_t j = 0; j < run.dim; ++j) moved = std::max(moved, std::abs(double(out[1].final_x[j]) - double(x0[j])));
  CHECK(moved > 1e-3);
}

TEST_CASE("downpour: the gradient delay is measured and grows with N (2 vs 8 workers)") {
  auto mean_delay = [](int nodes) {
    Run run;
    run.nodes = nodes;
    run.steps.assign(size_t(nodes), 30);
    run.step_ms = 2;   // steps take time: the workers interleave
    run.dim = 64;
    const auto out = run_cluster(run);
    double sum = 0;
    for (const NodeOut& o : out) {
      REQUIRE_MESSAGE(o.error.empty(), o.error);
      sum += o.grad_delay;
    }
    for (size_t i = 1; i < out.size(); ++i) CHECK(same_bits(out[i].final_x, out[0].final_x));
    // The monitor's sketched distances against the exact ones of the closes.
    double exact = 0;
    for (size_t r = 0; r < 30; ++r)
      for (size_t i = 0; i < out.size(); ++i)
        for (size_t k = i + 1; k < out.size(); ++k) {
          double d2 = 0;
          for (size_t j = 0; j < run.dim; ++j) {
            const double d = double(out[i].closes[r][j]) - double(out[k].closes[r][j]);
            d2 += d * d;
          }
          exact = std::max(exact, std::sqrt(d2));
        }
    for (const NodeOut& o : out) {
      CHECK(o.max_pair_dist_run > 0.25 * exact);   // an estimate of a round's, not the run's worst
      CHECK(o.max_pair_dist_run < 1.3 * exact);
    }
    return sum / nodes;
  };
  const double d2 = mean_delay(2), d8 = mean_delay(8);
  MESSAGE("mean gradient delay: N = 2 ", d2, ", N = 8 ", d8);
  CHECK(d2 <= 1.5);
  CHECK(d8 >= 3.0);
  CHECK(d8 > 2 * d2);
}

}  // TEST_SUITE
