// The hello payload (net/hello.h): layout, length checks, field and key comparison.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "net/hello.h"

using namespace tether::net;

TEST_SUITE("wire") {

TEST_CASE("hello: layout is 10 little-endian u64 fields then (path hash, value hash) pairs; round trip") {
  HelloInfo h;
  for (size_t f = 0; f < kHelloFields; ++f) h.fields[f] = 0x0101010101010101ull * (f + 1) + f;  // f over the fields
  h.keys = {{0xaabbccdd00112233ull, 7}, {1, 0xffffffffffffffffull}};
  const std::vector<unsigned char> bytes = encode_hello(h);
  REQUIRE(bytes.size() == 80 + 2 * 16);
  CHECK(bytes[0] == 0x01);           // field 0, least significant byte first
  CHECK(bytes[8 * 8] == 0x09 + 8);   // field 8, the start step
  CHECK(bytes[9 * 8] == 0x0a + 9);   // field 9, the incarnation
  CHECK(std::string(kHelloNames[kHelloIncarnation]) == "incarnation");
  CHECK(bytes[80] == 0x33);          // first key's path hash, little-endian
  CHECK(bytes[80 + 7] == 0xaa);
  CHECK(bytes[80 + 8] == 7);
  HelloInfo back;
  REQUIRE(decode_hello(bytes.data(), bytes.size(), &back) == Reject::kNone);
  CHECK(back.fields == h.fields);
  CHECK(back.keys == h.keys);
}

TEST_CASE("hello: only 80 + 16k bytes with k <= 4096 decode; nothing is read from a refused one") {
  std::vector<unsigned char> buf(kMaxHelloBytes + 16, 0x5a);
  HelloInfo out;
  out.fields[0] = 42;
  for (size_t bytes : {size_t(0), size_t(8), size_t(72), size_t(79), size_t(81), size_t(80 + 8), size_t(80 + 24),
                       size_t(72 + 16), kMaxHelloBytes + 16, kMaxHelloBytes - 1}) {
    CAPTURE(bytes);
    CHECK(!hello_length_ok(bytes));
    CHECK(decode_hello(buf.data(), bytes, &out) == Reject::kLengthMismatch);
    CHECK(out.fields[0] == 42);  // untouched
  }
  CHECK(hello_length_ok(80));
  CHECK(hello_length_ok(80 + 16));
  CHECK(hello_length_ok(kMaxHelloBytes));
  CHECK(decode_hello(buf.data(), 80, &out) == Reject::kNone);
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

TEST_CASE("hello: the differing field is the first one in order; never the incarnation; the start only at a common start") {
  const std::vector<std::pair<std::string, uint64_t>> keys = {{"model.name", 1}, {"optimizer.lr", 2}};
  HelloInfo ours;
  ours.fields = {0xabc, 0x5eed, 4, 0, 3, 1 << 20, 1000, 10, 40, 0x1111};
  for (const auto& [path, value] : keys) ours.keys.emplace_back(hash64(path.data(), path.size()), value);
  HelloInfo theirs = ours;
  CHECK(hello_differing(theirs, ours, true, keys).empty());
  theirs.fields[kHelloIncarnation] = 0x2222;  // another process: never compared
  CHECK(hello_differing(theirs, ours, true, keys).empty());
  theirs.fields[kHelloStartRound] = 11;
  theirs.fields[kHelloStartStep] = 44;
  CHECK(hello_differing(theirs, ours, false, keys).empty());  // a joiner takes the running view's start
  CHECK(hello_differing(theirs, ours, true, keys) == "its start round 11 differs from ours 10");
  theirs.fields[kHelloStartRound] = 10;
  CHECK(hello_differing(theirs, ours, true, keys) == "its start step 44 differs from ours 40");
  theirs.fields[6] = 999;  // parameter count, before the start fields
  CHECK(hello_differing(theirs, ours, true, keys) == "its parameter count 999 differs from ours 1000");
  CHECK(hello_differing(theirs, ours, false, keys) == "its parameter count 999 differs from ours 1000");
  theirs.fields[1] = 0x5eee;  // sketch seed, in hex
  CHECK(hello_differing(theirs, ours, false, keys) ==
        "its sketch seed 0x0000000000005eee differs from ours 0x0000000000005eed");
  // the config hash names the run keys that differ
  theirs.fields[0] = 0xabd;
  theirs.keys[1].second = 3;
  CHECK(hello_differing(theirs, ours, false, keys) ==
        "its config hash 0x0000000000000abd differs from ours 0x0000000000000abc (it differs in optimizer.lr)");
  theirs.keys.clear();  // a peer that sent no keys: the hash alone
  CHECK(hello_differing(theirs, ours, false, keys) == "its config hash 0x0000000000000abd differs from ours 0x0000000000000abc");
}

}  // TEST_SUITE
