// Checkpoints: atomic (temporary file, fsync, rename, fsync of the
// directory, so that a power loss leaves the old file or the new one), self-describing and
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

#include "runtime/config.h"

namespace tether {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Checkpoint {
  nlohmann::json meta;            // model, node, nodes, step, epoch, step_in_epoch, seed, config_hash, run_config...
  std::vector<float> params;      // the whole arena
  std::vector<float> momentum;    // optimizer state (trainable prefix)
  std::vector<float> anchor;      // x̄ (empty on a single node)
};

// Writes `path` atomically; never leaves a half-written file under `path`.
void save_checkpoint(const std::string& path, const Checkpoint& ck);
// Reads and verifies magic, version, sizes and checksum, and the types of the
// header keys the trainer reads (step, round: unsigned integers; test_acc,
// max_delta: numbers; cut: true or false; model, data: strings; each may be
// absent); errors name the file.
Checkpoint load_checkpoint(const std::string& path);
// Reads only the header's JSON (magic, version and header checked; not the
// checksum, which needs the whole file: load_checkpoint checks it).
nlohmann::json load_checkpoint_meta(const std::string& path);

// The run keys of `cfg` as checkpoint meta["run_config"]: {path: value}.
nlohmann::json run_config_meta(const Config& cfg);
// Refuses (CheckpointError naming `path`) to resume from a checkpoint with
// meta `meta` under `cfg` when a run key differs that may not change on
// resume (config_run_keys, run_key_may_change_on_resume); the message names
// each such key with its value in the checkpoint and in this run. Checkpoints
// without "run_config" (older ones) are compared by legacy_config_hash.
void check_resume_config(const std::string& path, const nlohmann::json& meta, const Config& cfg);

// The node that wrote a checkpoint with meta `meta`, checked as one this run
// may resume from: written by any node of the same cluster, i.e. the same
// model (`model`, the name this run builds), nodes, batch_size and seed
// (check_resume_config compares the run keys). Any node may resume from
// another node's checkpoint: it takes that node's parameters, momentum and
// anchor, and keeps its own data shard (a function of its id and the step),
// so a cluster whose nodes all resume from one file starts at one cut by
// construction. Refuses (CheckpointError naming `path`, the key, both values)
// a checkpoint of another cluster, or one without a node id in it.
int resume_source_node(const std::string& path, const nlohmann::json& meta, const Config& cfg,
                       const std::string& model);

// 64-bit content hash (not cryptographic), 8 bytes per step.
uint64_t hash_bytes(const void* data, size_t bytes, uint64_t seed = 0);

// hash_bytes of `total` bytes fed in pieces of any size: finish() after
// exactly `total` bytes equals hash_bytes over their concatenation (the
// checkpoint's checksum, computed while its arrays stream to or from the
// file, so that no copy of the whole file is ever held in memory).
class HashStream {
 public:
  explicit HashStream(uint64_t total, uint64_t seed = 0);
  void update(const void* data, size_t bytes);
  // Throws std::logic_error unless exactly `total` bytes were fed.
  uint64_t finish() const;

 private:
  uint64_t h_, total_, fed_ = 0;
  unsigned char partial_[8] = {};  // the bytes of a word not yet complete
  size_t partial_n_ = 0;
};
// Hex string of hash_bytes over a float buffer: the `params_hash` of metrics.
std::string params_hash(const std::vector<float>& params);

}  // namespace tether
