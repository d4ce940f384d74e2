// What the payload hash costs a node in one all-reduce (bench/security.sh
// asks whether it still pays its way once CURVE authenticates every frame).
// Hashes, with the finite check in the same loads (PayloadHasher::
// update_finite, as the ring does on every chunk it sends and receives), a
// vector of --numel floats (44 MB by default: larger than the caches, like a
// freshly received all-reduce) in chunks of --chunk-bytes, --iters times;
// prints the median rate and what the bytes one node hashes in a ring
// all-reduce of that vector over --nodes nodes take at that rate: it sends
// and receives 2 (N - 1) / N of the vector, and hashes both.
//
// usage: hash_cost [--numel 11000000] [--chunk-bytes 1048576] [--iters 11] [--nodes 4]
// Output: "RESULT gb_per_s=... allreduce_hash_mb=... allreduce_hash_ms=..."
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "net/wire.h"

int main(int argc, char** argv) {
  size_t numel = 11000000, chunk_bytes = 1 << 20;
  int iters = 11, nodes = 4;
  for (int i = 1; i + 1 < argc; i += 2) {  // i over the flag/value pairs
    const std::string k = argv[i];
    const long long v = std::atoll(argv[i + 1]);
    if (v <= 0) {
      std::fprintf(stderr, "%s: %s needs a positive number\n", argv[0], k.c_str());
      return 2;
    }
    if (k == "--numel") numel = size_t(v);
    else if (k == "--chunk-bytes") chunk_bytes = size_t(v);
    else if (k == "--iters") iters = int(v);
    else if (k == "--nodes") nodes = int(v);
    else {
      std::fprintf(stderr, "usage: %s [--numel n] [--chunk-bytes b] [--iters k] [--nodes N]\n", argv[0]);
      return 2;
    }
  }
  std::vector<float> v(numel);
  for (size_t j = 0; j < numel; ++j) v[j] = float(j % 1000) * 1e-3f;
  const size_t chunk = std::max<size_t>(1, chunk_bytes / sizeof(float));
  std::vector<double> secs;
  uint64_t sink = 0;
  for (int it = 0; it < iters; ++it) {  // it over the timed passes
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t off = 0; off < numel; off += chunk) {  // off over the chunks
      tether::net::PayloadHasher h;
      if (!h.update_finite(v.data() + off, std::min(chunk, numel - off))) return 1;
      sink ^= h.finish();
    }
    secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(secs.begin(), secs.end());
  const double bytes = double(numel) * sizeof(float);
  const double gbps = bytes / secs[secs.size() / 2] / 1e9;
  const double hashed = 2.0 * 2.0 * (nodes - 1) / nodes * bytes;  // sent and received, both phases
  std::printf("hash of %.1f MB in %zu-byte chunks: median %.2f ms (%.1f GB/s) over %d passes (check %llx)\n",
              bytes / 1e6, chunk * sizeof(float), secs[secs.size() / 2] * 1e3, gbps, iters,
              static_cast<unsigned long long>(sink & 0xff));
  std::printf("RESULT gb_per_s=%.1f allreduce_hash_mb=%.0f allreduce_hash_ms=%.2f\n", gbps, hashed / 1e6,
              hashed / (gbps * 1e9) * 1e3);
  return 0;
}
