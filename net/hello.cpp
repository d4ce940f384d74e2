#include "net/hello.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <map>

namespace tether::net {

namespace {
uint64_t load_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int b = 7; b >= 0; --b) v = (v << 8) | p[b];  // little-endian whatever the host
  return v;
}
void store_u64(unsigned char* p, uint64_t v) {
  for (int b = 0; b < 8; ++b, v >>= 8) p[b] = static_cast<unsigned char>(v);
}
std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%016" PRIx64, v);
  return buf;
}
}  // namespace

std::vector<unsigned char> encode_hello(const HelloInfo& info) {
  const size_t keys = std::min(info.keys.size(), kMaxHelloKeys);
  std::vector<unsigned char> out(kHelloBytes + keys * 2 * sizeof(uint64_t));
  for (size_t f = 0; f < kHelloFields; ++f) store_u64(out.data() + f * 8, info.fields[f]);  // f over the fixed fields
  for (size_t k = 0; k < keys; ++k) {  // k over the key pairs sent
    store_u64(out.data() + kHelloBytes + k * 16, info.keys[k].first);
    store_u64(out.data() + kHelloBytes + k * 16 + 8, info.keys[k].second);
  }
  return out;
}

bool hello_length_ok(uint64_t bytes) {
  return bytes >= kHelloBytes && (bytes - kHelloBytes) % (2 * sizeof(uint64_t)) == 0 &&
         (bytes - kHelloBytes) / (2 * sizeof(uint64_t)) <= kMaxHelloKeys;
}

Reject decode_hello(const void* payload, size_t bytes, HelloInfo* out) {
  if (!hello_length_ok(bytes)) return Reject::kLengthMismatch;
  const auto* in = static_cast<const unsigned char*>(payload);
  HelloInfo h;
  for (size_t f = 0; f < kHelloFields; ++f) h.fields[f] = load_u64(in + f * 8);  // f over the fixed fields
  const size_t keys = (bytes - kHelloBytes) / (2 * sizeof(uint64_t));
  h.keys.resize(keys);
  for (size_t k = 0; k < keys; ++k)  // k over the key pairs: the length check bounds them
    h.keys[k] = {load_u64(in + kHelloBytes + k * 16), load_u64(in + kHelloBytes + k * 16 + 8)};
  *out = std::move(h);
  return Reject::kNone;
}

std::string hello_differing(const HelloInfo& theirs, const HelloInfo& ours, bool with_start,
                            const std::vector<std::pair<std::string, uint64_t>>& our_keys) {
  for (size_t f = 0; f < kHelloFields; ++f) {  // f over the fixed hello fields
    if (f == kHelloIncarnation || (!with_start && (f == kHelloStartRound || f == kHelloStartStep))) continue;
    const uint64_t t = theirs.fields[f], o = ours.fields[f];
    if (t == o) continue;
    const bool as_hex = f < 2;  // the config hash and the sketch seed
    std::string what = "its " + std::string(kHelloNames[f]) + " " + (as_hex ? hex(t) : std::to_string(t)) +
                       " differs from ours " + (as_hex ? hex(o) : std::to_string(o));
    if (f == 0) what += hello_keys_differing(theirs.keys, our_keys);
    return what;
  }
  return "";
}

std::string hello_keys_differing(const std::vector<std::pair<uint64_t, uint64_t>>& theirs,
                                 const std::vector<std::pair<std::string, uint64_t>>& ours) {
  std::map<uint64_t, uint64_t> peer_keys;  // path hash -> value hash; a repeated path: the last pair
  for (const auto& [path, value] : theirs) peer_keys[path] = value;
  if (peer_keys.empty() || ours.empty()) return "";
  std::string names;
  size_t matched = 0;
  for (const auto& [path, value] : ours) {  // our run keys, in order
    auto it = peer_keys.find(hash64(path.data(), path.size()));
    if (it != peer_keys.end()) ++matched;
    if (it == peer_keys.end() || it->second != value) names += (names.empty() ? "" : ", ") + path;
  }
  if (matched != peer_keys.size()) names += std::string(names.empty() ? "" : ", ") + "keys this node does not know";
  return names.empty() ? "" : " (it differs in " + names + ")";
}

}  // namespace tether::net
