// The hello message: the payload of a Kind::kHello frame, what two nodes must
// agree on before they exchange anything else (Communicator::start).
//
//   offset          size  field (little-endian u64 each)
//        0      9 * 8     fixed fields, kHelloNames order: config hash,
//                         sketch seed, node count, mixer, window, chunk
//                         bytes, parameter count, start round, start step
//       72  k * 2 * 8     k run keys (k <= kMaxHelloKeys): (hash64 of the
//                         key's JSON path, hash of its value), so a refusal
//                         names the keys that differ
//
// decode_hello() is the only reader of a peer's hello bytes: it checks the
// length (kLengthMismatch otherwise) before it touches them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "net/wire.h"

namespace tether::net {

inline constexpr size_t kHelloFields = 9;
inline constexpr size_t kHelloBytes = kHelloFields * sizeof(uint64_t);
inline constexpr size_t kHelloStartRound = 7, kHelloStartStep = 8;
inline constexpr size_t kMaxHelloKeys = 4096;
// Largest hello payload: the fixed fields and kMaxHelloKeys key pairs.
inline constexpr size_t kMaxHelloBytes = kHelloBytes + kMaxHelloKeys * 2 * sizeof(uint64_t);
inline constexpr const char* kHelloNames[kHelloFields] = {
    "config hash", "sketch seed", "node count", "mixer", "window", "chunk bytes",
    "parameter count", "start round", "start step"};

struct HelloInfo {
  std::array<uint64_t, kHelloFields> fields{};               // kHelloNames order
  std::vector<std::pair<uint64_t, uint64_t>> keys;           // (hash64 of path, value hash)
};

// The payload bytes of `info` (keys past kMaxHelloKeys are left out).
std::vector<unsigned char> encode_hello(const HelloInfo& info);

// Parses a hello payload: kLengthMismatch unless its length is kHelloBytes
// plus a whole number of key pairs, at most kMaxHelloKeys; else kNone and
// *out filled. Any 8-byte values are legal: the caller compares them.
Reject decode_hello(const void* payload, size_t bytes, HelloInfo* out);

// " (it differs in a.b, c.d)" when a peer's key pairs `theirs` name run keys
// of `ours` (JSON path, value hash) whose values differ, or keys one side
// lacks; "" when they match or either side sent none.
std::string hello_keys_differing(const std::vector<std::pair<uint64_t, uint64_t>>& theirs,
                                 const std::vector<std::pair<std::string, uint64_t>>& ours);

}  // namespace tether::net
