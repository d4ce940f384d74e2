// Fuzzes the hello payload a peer sends at start-up (net/hello.h):
// decode_hello, then what the communicator does with a decoded hello: its
// fixed fields against this node's (hello_differing, at a common start and
// for a join) and its run keys (hello_keys_differing against this node's).
// Properties checked: a payload that decodes encodes back to the same bytes;
// a payload refused is one whose length is not 80 + 16k bytes (k <= 4096);
// hello_differing names the first fixed field that differs, never the
// incarnation, the start round and step only at a common start; the keys
// named as differing are none exactly when the peer sent ours.
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
// This node's fixed fields: those of the seeds (test/fuzz/make_seeds.py), so
// that mutations of a seed reach both outcomes of every comparison.
HelloInfo our_hello() {
  HelloInfo h;
  h.fields = {0x1234, 7, 4, 0, 3, 1 << 20, 61706, 0, 0, 0x9e3779b97f4a7c15ull};
  for (const auto& [path, value] : our_keys()) h.keys.emplace_back(hash64(path.data(), path.size()), value);
  return h;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  HelloInfo info;
  const Reject r = decode_hello(data, size, &info);
  FUZZ_CHECK(hello_length_ok(size) == (r == Reject::kNone), "hello_length_ok disagrees with decode_hello");
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
  // Reference for the fixed fields: the first one (kHelloNames order) that
  // differs, skipping the incarnation, and the start round and step for a join.
  const HelloInfo mine = our_hello();
  for (const bool with_start : {false, true}) {
    size_t first = kHelloFields;
    for (size_t f = 0; f < kHelloFields && first == kHelloFields; ++f) {  // f over the fixed fields
      if (f == kHelloIncarnation || (!with_start && (f == kHelloStartRound || f == kHelloStartStep))) continue;
      if (info.fields[f] != mine.fields[f]) first = f;
    }
    const std::string why = hello_differing(info, mine, with_start, our_keys());
    if (first == kHelloFields) {
      FUZZ_CHECK(why.empty(), "fields agree but hello_differing says \"" + why + "\"");
      continue;
    }
    FUZZ_CHECK(tether::fuzz::starts_with(why, "its " + std::string(kHelloNames[first]) + " "), why);
    // the config hash names the differing keys, no other field does
    FUZZ_CHECK((why.find(" (it differs in ") != std::string::npos) == (first == 0 && !differs.empty()), why);
  }
  return 0;
}
