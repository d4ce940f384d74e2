// The hello payload (net/hello.h): layout, length checks, key comparison.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "net/hello.h"

using namespace tether::net;

TEST_SUITE("wire") {

TEST_CASE("hello: layout is 9 little-endian u64 fields then (path hash, value hash) pairs; round trip") {
  HelloInfo h;
  for (size_t f = 0; f < kHelloFields; ++f) h.fields[f] = 0x0101010101010101ull * (f + 1) + f;  // f over the fields
  h.keys = {{0xaabbccdd00112233ull, 7}, {1, 0xffffffffffffffffull}};
  const std::vector<unsigned char> bytes = encode_hello(h);
  REQUIRE(bytes.size() == 72 + 2 * 16);
  CHECK(bytes[0] == 0x01);           // field 0, least significant byte first
  CHECK(bytes[8 * 8] == 0x09 + 8);   // field 8
  CHECK(bytes[72] == 0x33);          // first key's path hash, little-endian
  CHECK(bytes[72 + 7] == 0xaa);
  CHECK(bytes[72 + 8] == 7);
  HelloInfo back;
  REQUIRE(decode_hello(bytes.data(), bytes.size(), &back) == Reject::kNone);
  CHECK(back.fields == h.fields);
  CHECK(back.keys == h.keys);
}

TEST_CASE("hello: only 72 + 16k bytes with k <= 4096 decode; nothing is read from a refused one") {
  std::vector<unsigned char> buf(kMaxHelloBytes + 16, 0x5a);
  HelloInfo out;
  out.fields[0] = 42;
  for (size_t bytes : {size_t(0), size_t(8), size_t(71), size_t(73), size_t(72 + 8), size_t(72 + 24),
                       kMaxHelloBytes + 16, kMaxHelloBytes - 1}) {
    CAPTURE(bytes);
    CHECK(decode_hello(buf.data(), bytes, &out) == Reject::kLengthMismatch);
    CHECK(out.fields[0] == 42);  // untouched
  }
  CHECK(decode_hello(buf.data(), 72, &out) == Reject::kNone);
  CHECK(out.keys.empty());
  CHECK(decode_hello(buf.data(), kMaxHelloBytes, &out) == Reject::kNone);
  CHECK(out.keys.size() == kMaxHelloKeys);
  // more keys than a hello carries are left out when encoding
  HelloInfo many;
  many.keys.assign(kMaxHelloKeys + 3, {1, 2});
  CHECK(encode_hello(many).size() == kMaxHelloBytes);
}

TEST_CASE("hello: the keys named as differing are those whose value differs, or that one side lacks") {
  const std::vector<std::pair<std::string, uint64_t>> ours = {{"model.name", 1}, {"optimizer.lr", 2}, {"train.seed", 3}};
  auto pair_of = [](const std::string& path, uint64_t value) {
    return std::pair<uint64_t, uint64_t>(hash64(path.data(), path.size()), value);
  };
  std::vector<std::pair<uint64_t, uint64_t>> theirs = {pair_of("model.name", 1), pair_of("optimizer.lr", 2),
                                                       pair_of("train.seed", 3)};
  CHECK(hello_keys_differing(theirs, ours).empty());
  CHECK(hello_keys_differing({}, ours).empty());  // an older peer sends no keys: nothing to name
  CHECK(hello_keys_differing(theirs, {}).empty());
  theirs[1].second = 9;
  CHECK(hello_keys_differing(theirs, ours) == " (it differs in optimizer.lr)");
  theirs.pop_back();  // train.seed missing on their side
  CHECK(hello_keys_differing(theirs, ours) == " (it differs in optimizer.lr, train.seed)");
  theirs = {pair_of("model.name", 1), pair_of("optimizer.lr", 2), pair_of("train.seed", 3), pair_of("new.key", 4)};
  CHECK(hello_keys_differing(theirs, ours) == " (it differs in keys this node does not know)");
  // a path sent twice: the last value counts
  theirs = {pair_of("model.name", 5), pair_of("model.name", 1), pair_of("optimizer.lr", 2), pair_of("train.seed", 3)};
  CHECK(hello_keys_differing(theirs, ours).empty());
}

}  // TEST_SUITE
