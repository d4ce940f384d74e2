// The hello message: the payload of a Kind::kHello frame, what two nodes must
// agree on before they exchange anything else (Communicator::start).
//
//   offset          size  field (little-endian u64 each)
//        0     10 * 8     fixed fields, kHelloNames order: config hash,
//                         sketch seed, node count, mixer, window, chunk
//                         bytes, parameter count, start round, start step,
//                         incarnation
//       80  k * 2 * 8     k run keys (k <= kMaxHelloKeys): (hash64 of the
//                         key's JSON path, hash of its value), so a refusal
//                         names the keys that differ
//
// Every fixed field but the incarnation must match between the nodes of a
// run (the start round and step only at a common start: a joiner takes the
// running view's); the header's flags may carry kHelloRunning (wire.h).
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

inline constexpr size_t kHelloFields = 10;
inline constexpr size_t kHelloBytes = kHelloFields * sizeof(uint64_t);
inline constexpr size_t kHelloStartRound = 7, kHelloStartStep = 8;
// A number drawn by each process at start (not compared): a hello with
// another incarnation than the one a member knows comes from a restarted
// process, so the earlier one is dead.
inline constexpr size_t kHelloIncarnation = 9;
inline constexpr size_t kMaxHelloKeys = 4096;
// Largest hello payload: the fixed fields and kMaxHelloKeys key pairs.
inline constexpr size_t kMaxHelloBytes = kHelloBytes + kMaxHelloKeys * 2 * sizeof(uint64_t);
inline constexpr const char* kHelloNames[kHelloFields] = {
    "config hash", "sketch seed", "node count", "mixer", "window", "chunk bytes",
    "parameter count", "start round", "start step", "incarnation"};

struct HelloInfo {
  std::array<uint64_t, kHelloFields> fields{};               // kHelloNames order
  std::vector<std::pair<uint64_t, uint64_t>> keys;           // (hash64 of path, value hash)
};

// The payload bytes of `info` (keys past kMaxHelloKeys are left out).
std::vector<unsigned char> encode_hello(const HelloInfo& info);

// True when `bytes` is a legal hello length: kHelloBytes plus a whole number
// of key pairs, at most kMaxHelloKeys.
bool hello_length_ok(uint64_t bytes);

// Parses a hello payload: kLengthMismatch unless its length is kHelloBytes
// plus a whole number of key pairs, at most kMaxHelloKeys; else kNone and
// *out filled. Any 8-byte values are legal: the caller compares them.
Reject decode_hello(const void* payload, size_t bytes, HelloInfo* out);

// The first fixed field (kHelloNames order) in which `theirs` differs from
// `ours`, as "its <name> <theirs> differs from ours <ours>" (hex for the
// config hash and sketch seed; for the config hash, then what
// hello_keys_differing names against `our_keys`), or "" when they agree. The
// incarnation is never compared; the start round and step only when
// `with_start` (a common start: a joiner takes the running view's).
std::string hello_differing(const HelloInfo& theirs, const HelloInfo& ours, bool with_start,
                            const std::vector<std::pair<std::string, uint64_t>>& our_keys);

// " (it differs in a.b, c.d)" when a peer's key pairs `theirs` name run keys
// of `ours` (JSON path, value hash) whose values differ, or keys one side
// lacks; "" when they match or either side sent none.
std::string hello_keys_differing(const std::vector<std::pair<uint64_t, uint64_t>>& theirs,
                                 const std::vector<std::pair<std::string, uint64_t>>& ours);

}  // namespace tether::net
