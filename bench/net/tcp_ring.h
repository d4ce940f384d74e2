// TcpRing — the data pattern of tether's ring all-reduce over plain TCP
// sockets, with nothing of tether around it: a reference for the benchmark,
// not part of the runtime (no framing, no checks, no failures, no security).
//
// What it measures: how close to the line rate this schedule gets over bare
// TCP on this machine, so that bench/allreduce.sh can tell the
// cost of tether's transport (ZeroMQ, its I/O thread, per-chunk checks) from
// what the kernel, the emulated switch and the shared cores cost everyone.
//
// The schedule is net/ring_allreduce.h's: N segments, each cut into chunks of
// chunk_bytes; reduce-scatter steps k = 0..N-2 send segment (r - k) to the
// successor, the chunk received at step k is added to the own values and
// forwarded as step k+1; the owner divides the complete sum by N; all-gather
// steps forward the mean's chunks. Every chunk moves on its own (pipelined).
// One connection to the successor, one from the predecessor, both
// non-blocking, driven by poll() from the calling thread: writes leave from
// the thread that produces them (gloo's way), without an I/O thread between.
// Results: identical bits on every node, as tether's (the sum in ring order).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace tether::bench {

class TcpRing {
 public:
  // Connects rank `rank` of `hosts.size()` nodes: listens on ports[rank] at
  // hosts[rank], connects to the successor, accepts the predecessor. Throws
  // std::runtime_error naming the address after timeout_ms.
  TcpRing(int rank, const std::vector<std::string>& hosts, const std::vector<int>& ports, size_t chunk_bytes,
          int timeout_ms);
  ~TcpRing();
  TcpRing(const TcpRing&) = delete;
  TcpRing& operator=(const TcpRing&) = delete;

  // out = mean over the nodes of their `in` (same size on every node). `in`
  // is not written. Throws if the peers do not complete within timeout_ms.
  void allreduce(const std::vector<float>& in, std::vector<float>& out, int timeout_ms);

 private:
  int rank_, n_;
  size_t chunk_elems_;
  int succ_ = -1, pred_ = -1;
  std::vector<float> recv_;  // one chunk of a partial sum from the predecessor
};

}  // namespace tether::bench
