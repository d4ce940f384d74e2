// Runs the nodes of an in-process cluster as threads, bounded in time: a
// node that never ends (a round that can never complete while its peers
// still answer heartbeats) aborts the test binary with a message after
// limit_s, instead of hanging the suite until meson's time-out.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tether::testing {

// Calls node(i) for i in [0, nodes) on a thread each and waits for all of
// them; node(i) must not throw. After limit_s with a node still running:
// "<what>: K of N nodes still running after limit_s s: a hang", then abort.
inline void run_nodes_bounded(int nodes, const std::function<void(int)>& node, int limit_s, const char* what) {
  std::mutex mu;
  std::condition_variable cv;
  int ended = 0;
  std::thread watchdog([&] {
    std::unique_lock<std::mutex> lk(mu);
    if (!cv.wait_for(lk, std::chrono::seconds(limit_s), [&] { return ended == nodes; })) {
      std::fprintf(stderr, "%s: %d of %d nodes still running after %d s: a hang\n", what, nodes - ended, nodes,
                   limit_s);
      std::abort();
    }
  });
  std::vector<std::thread> threads;
  for (int i = 0; i < nodes; ++i) {
    threads.emplace_back([&, i] {
      node(i);
      std::lock_guard<std::mutex> lk(mu);
      ++ended;
      cv.notify_all();
    });
  }
  for (auto& t : threads) t.join();
  watchdog.join();
}

}  // namespace tether::testing
