// Fuzzes the hello payload a peer sends at start-up (net/hello.h):
// decode_hello, then what the communicator does with a decoded hello's run
// keys (hello_keys_differing against this node's keys).
// Properties checked: a payload that decodes encodes back to the same bytes;
// a payload refused is one whose length is not 72 + 16k bytes (k <= 4096);
// the keys named as differing are none exactly when the peer sent ours.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "net/hello.h"
#include "test/fuzz/fuzz_util.h"

using namespace tether::net;

namespace {
// This node's run keys (path, value hash), as CommOptions::config_keys holds them.
const std::vector<std::pair<std::string, uint64_t>>& our_keys() {
  static const std::vector<std::pair<std::string, uint64_t>> keys = {
      {"model.name", 11}, {"optimizer.lr", 22}, {"algorithm.mixer", 33}, {"cluster.peers", 44}};
  return keys;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  HelloInfo info;
  const Reject r = decode_hello(data, size, &info);
  const bool legal_length = size >= kHelloBytes && (size - kHelloBytes) % 16 == 0 &&
                            (size - kHelloBytes) / 16 <= kMaxHelloKeys;
  FUZZ_CHECK((r == Reject::kNone) == legal_length,
             "decode_hello of " + std::to_string(size) + " bytes: " + std::string(reject_name(r)));
  if (r != Reject::kNone) {
    FUZZ_CHECK(r == Reject::kLengthMismatch, std::string(reject_name(r)));
    return 0;
  }
  const std::vector<unsigned char> again = encode_hello(info);
  FUZZ_CHECK(again.size() == size && std::equal(again.begin(), again.end(), data), "encode(decode(x)) != x");
  // Reference: the peer names no differing key exactly when its (path hash ->
  // value hash) map, the last pair of a repeated path winning, equals ours.
  const std::string differs = hello_keys_differing(info.keys, our_keys());
  std::map<uint64_t, uint64_t> theirs, ours;
  for (const auto& [path, value] : info.keys) theirs[path] = value;
  for (const auto& [path, value] : our_keys()) ours[hash64(path.data(), path.size())] = value;
  FUZZ_CHECK(differs.empty() == (theirs.empty() || theirs == ours), "keys differing: \"" + differs + "\"");
  if (!differs.empty()) FUZZ_CHECK(tether::fuzz::starts_with(differs, " (it differs in "), differs);
  return 0;
}
