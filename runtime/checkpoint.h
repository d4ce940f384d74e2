// Checkpoints: atomic (temporary file, fsync, rename), self-describing and
// checksummed. They hold the parameter arena, the optimizer state, the
// anchor (distributed runs), the step and epoch counters and the RNG state
// (seed and the counters every random stream is derived from), so that
// --resume continues bit-identically.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tether {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Checkpoint {
  nlohmann::json meta;            // model, node, nodes, step, epoch, step_in_epoch, seed, config_hash...
  std::vector<float> params;      // the whole arena
  std::vector<float> momentum;    // optimizer state (trainable prefix)
  std::vector<float> anchor;      // x̄ (empty on a single node)
};

// Writes `path` atomically; never leaves a half-written file under `path`.
void save_checkpoint(const std::string& path, const Checkpoint& ck);
// Reads and verifies magic, version, sizes and checksum; errors name the file.
Checkpoint load_checkpoint(const std::string& path);

// 64-bit content hash (not cryptographic), 8 bytes per step.
uint64_t hash_bytes(const void* data, size_t bytes, uint64_t seed = 0);
// Hex string of hash_bytes over a float buffer: the `params_hash` of metrics.
std::string params_hash(const std::vector<float>& params);

}  // namespace tether
