// Wire protocol: header round trips, hash64 against XXH64's published values,
// and every corruption refused with its own reason.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "net/wire.h"

using namespace tether::net;

namespace {

Header sample() {
  Header h;
  h.kind = Kind::kRing;
  h.sender = 3;
  h.step = 5;
  h.round = 0x0102030405060708ull;
  h.chunk = 17;
  h.offset = 123456789;
  h.count = 4;
  h.payload_bytes = 16;
  h.payload_hash = 0xdeadbeefcafef00dull;
  return h;
}

std::vector<unsigned char> encoded(const Header& h) {
  std::vector<unsigned char> b(kHeaderBytes);
  encode_header(h, b.data());
  return b;
}

}  // namespace

TEST_SUITE("wire") {

TEST_CASE("hash64 matches XXH64 reference values") {
  CHECK(hash64("", 0) == 0xEF46DB3751D8E999ull);
  CHECK(hash64("a", 1) == 0xD24EC4F1A98C6E5Bull);
  CHECK(hash64("abc", 3) == 0x44BC2CF5AD770999ull);
  // every length 0..100 (all code paths) differs from its neighbour
  std::vector<unsigned char> buf(100);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<unsigned char>(i * 31 + 7);
  for (size_t n = 1; n < buf.size(); ++n) CHECK(hash64(buf.data(), n) != hash64(buf.data(), n - 1));
  // one flipped bit anywhere changes the hash
  const uint64_t base = hash64(buf.data(), buf.size());
  for (size_t i = 0; i < buf.size(); ++i) {
    buf[i] ^= 0x10;
    CHECK(hash64(buf.data(), buf.size()) != base);
    buf[i] ^= 0x10;
  }
}

TEST_CASE("payload hash: any split gives the same value; every bit matters") {
  std::vector<unsigned char> buf(5000);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<unsigned char>((i * 131 + 17) ^ (i >> 7));
  for (size_t n : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{1000}, size_t{5000}}) {
    const uint64_t whole = payload_hash(buf.data(), n);
    for (size_t split : {size_t{0}, size_t{1}, size_t{7}, size_t{64}, size_t{100}}) {
      if (split > n) continue;
      PayloadHasher h;
      h.update(buf.data(), split);
      for (size_t off = split; off < n; off += 37) h.update(buf.data() + off, std::min<size_t>(37, n - off));
      CHECK(h.finish() == whole);
    }
    if (n) CHECK(payload_hash(buf.data(), n) != payload_hash(buf.data(), n - 1));
  }
  const uint64_t base = payload_hash(buf.data(), buf.size());
  for (size_t i = 0; i < buf.size(); i += 7) {  // a flipped bit anywhere changes it
    buf[i] ^= 0x04;
    CHECK(payload_hash(buf.data(), buf.size()) != base);
    buf[i] ^= 0x04;
  }
  // swapping two stripes changes it (lanes see position through order)
  const size_t stripe = PayloadHasher::kStripeBytes;
  std::vector<unsigned char> swapped(buf);
  std::swap_ranges(swapped.begin(), swapped.begin() + stripe, swapped.begin() + stripe);
  CHECK(payload_hash(swapped.data(), swapped.size()) != base);
}

namespace {
// The payload hash written from its definition, one word at a time, no
// vectorization and no streaming: word w of the input goes to lane w % 64.
uint64_t reference_payload_hash(const unsigned char* p, size_t n) {
  constexpr uint64_t P1 = 11400714785074694791ULL, P2 = 14029467366897019727ULL,
                     P3 = 1609587929392839161ULL, P4 = 9650029242287828579ULL,
                     P5 = 2870177450012600261ULL;
  constexpr uint32_t Q1 = 2654435761u, Q2 = 2246822519u;
  uint32_t lane[64];
  for (uint32_t l = 0; l < 64; ++l) lane[l] = Q1 * (l + 1) + Q2;
  const size_t body = n / 256 * 256;
  for (size_t i = 0; i < body; i += 4) {
    uint32_t w = 0;
    for (int b = 3; b >= 0; --b) w = (w << 8) | p[i + b];
    uint32_t& a = lane[(i / 4) % 64];
    a = std::rotl(a + w * Q2, 13) * Q1;
  }
  auto step = [&](uint64_t h, uint64_t v) {
    v = std::rotl(v * P2, 31) * P1;
    return std::rotl(h ^ v, 27) * P1 + P4;
  };
  uint64_t h = P5 + n;
  for (int l = 0; l < 64; l += 2) h = step(h, (uint64_t{lane[l + 1]} << 32) | lane[l]);
  size_t i = body;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = 0;
    for (int b = 7; b >= 0; --b) v = (v << 8) | p[i + b];
    h = step(h, v);
  }
  for (; i < n; ++i) h = std::rotl(h ^ (p[i] * P5), 11) * P1;
  h = (h ^ (h >> 33)) * P2;
  h = (h ^ (h >> 29)) * P3;
  return h ^ (h >> 32);
}
}  // namespace

TEST_CASE("payload hash equals a scalar reference written from its definition") {
  std::vector<unsigned char> buf(70000);
  uint64_t x = 88172645463325252ull;
  for (auto& c : buf) {  // xorshift bytes
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    c = static_cast<unsigned char>(x);
  }
  for (size_t n : {size_t{0}, size_t{3}, size_t{8}, size_t{255}, size_t{256}, size_t{257},
                   size_t{1000}, size_t{4096}, size_t{65537}, size_t{70000}})
    CHECK(payload_hash(buf.data(), n) == reference_payload_hash(buf.data(), n));
  // unaligned start
  CHECK(payload_hash(buf.data() + 1, 9999) == reference_payload_hash(buf.data() + 1, 9999));
}

TEST_CASE("header round trip, little-endian layout") {
  const Header h = sample();
  const auto b = encoded(h);
  CHECK(b[0] == 'T');
  CHECK(b[1] == 'T');
  CHECK(b[2] == 'H');
  CHECK(b[3] == 'R');
  CHECK(b[16] == 0x08);  // round, least significant byte first
  Header d;
  REQUIRE(decode_header(b.data(), b.size(), &d) == Reject::kNone);
  CHECK(d.kind == h.kind);
  CHECK(d.sender == h.sender);
  CHECK(d.step == h.step);
  CHECK(d.round == h.round);
  CHECK(d.chunk == h.chunk);
  CHECK(d.offset == h.offset);
  CHECK(d.count == h.count);
  CHECK(d.payload_bytes == h.payload_bytes);
  CHECK(d.payload_hash == h.payload_hash);
  for (uint8_t k = 1; k <= kKindMax; ++k) {  // every kind survives the trip
    Header e;
    e.kind = static_cast<Kind>(k);
    if (carries_floats(e.kind)) {
      e.count = 2;
      e.payload_bytes = 8;
    } else if (e.kind == Kind::kHello) {
      e.payload_bytes = 56;
    }
    const auto eb = encoded(e);
    Header ed;
    CHECK(decode_header(eb.data(), eb.size(), &ed) == Reject::kNone);
    CHECK(ed.kind == e.kind);
  }
}

TEST_CASE("every header corruption is refused with its reason") {
  Header d;
  SUBCASE("truncated and padded frames") {
    const auto b = encoded(sample());
    CHECK(decode_header(b.data(), kHeaderBytes - 1, &d) == Reject::kHeaderSize);
    CHECK(decode_header(b.data(), 0, &d) == Reject::kHeaderSize);
    std::vector<unsigned char> longer(b);
    longer.push_back(0);
    CHECK(decode_header(longer.data(), longer.size(), &d) == Reject::kHeaderSize);
  }
  SUBCASE("magic") {
    Header h = sample();
    h.magic = 0x12345678;
    const auto b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kBadMagic);
  }
  SUBCASE("version") {
    Header h = sample();
    h.version = kProtocolVersion + 1;
    const auto b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kBadVersion);
  }
  SUBCASE("header checksum: any byte flipped") {
    const auto good = encoded(sample());
    for (size_t i = 8; i < kHeaderBytes; ++i) {  // past magic and version
      auto b = good;
      b[i] ^= 0x01;
      CHECK(decode_header(b.data(), b.size(), &d) == Reject::kHeaderChecksum);
    }
  }
  SUBCASE("kind") {
    Header h = sample();
    h.kind = static_cast<Kind>(0);
    auto b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kBadKind);
    h.kind = static_cast<Kind>(kKindMax + 1);
    b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kBadKind);
  }
  SUBCASE("flags") {
    Header h = sample();
    h.flags = 1;
    auto b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kBadFlags);
    h.flags = kHelloRunning;  // only a hello may say it comes from a running view
    b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kBadFlags);
    h.kind = Kind::kHello;
    b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kNone);
  }
  SUBCASE("the view epoch travels") {
    Header h = sample();
    h.epoch = 0xfeedbeefu;
    auto b = encoded(h);
    REQUIRE(decode_header(b.data(), b.size(), &d) == Reject::kNone);
    CHECK(d.epoch == 0xfeedbeefu);
  }
  SUBCASE("oversized lengths") {
    Header h = sample();
    h.payload_bytes = kMaxPayloadBytes + 4;
    h.count = h.payload_bytes / 4;
    auto b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kOversized);
    h = sample();
    h.count = uint64_t{1} << 62;  // count * 4 would wrap to 0
    h.payload_bytes = 0;
    b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kOversized);
    h = sample();
    h.offset = ~uint64_t{0} - 1;  // offset + count would wrap
    b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kOversized);
  }
  SUBCASE("count and length disagree") {
    Header h = sample();
    h.count = 5;  // 20 bytes, header says 16
    auto b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kLengthMismatch);
    h = sample();
    h.kind = Kind::kHeartbeat;  // control frames carry nothing
    b = encoded(h);
    CHECK(decode_header(b.data(), b.size(), &d) == Reject::kLengthMismatch);
  }
}

TEST_CASE("update_finite: the same hash as update, and a NaN or infinity anywhere is found") {
  // lengths around the 64-float stripe, splits that leave a partial stripe
  // in the hasher's tail, and every position of a bad value
  std::vector<float> x(700);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 97) * 0.25f - 11.0f;
  const float bads[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity(), std::bit_cast<float>(0xff800001u)};
  size_t wrong_hash = 0, missed = 0, false_alarm = 0, cases = 0;
  for (size_t n : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{65}, size_t{130}, size_t{700}}) {
    for (size_t split : {size_t{0}, size_t{3}, size_t{64}, size_t{100}}) {
      if (split > n) continue;
      auto run = [&](bool* finite) {  // update_finite in two calls, the first ending at split
        PayloadHasher h;
        *finite = h.update_finite(x.data(), split);
        *finite &= h.update_finite(x.data() + split, n - split);
        return h.finish();
      };
      bool finite = false;
      wrong_hash += run(&finite) != payload_hash(x.data(), n * sizeof(float));
      false_alarm += !finite;
      for (size_t pos = 0; pos < n; ++pos) {  // pos over the positions of the bad value
        const float keep = x[pos];
        x[pos] = bads[pos % 4];
        const uint64_t hash = run(&finite);
        wrong_hash += hash != payload_hash(x.data(), n * sizeof(float));
        missed += finite;
        x[pos] = keep;
        ++cases;
      }
    }
  }
  CHECK(cases > 2000);
  CHECK(wrong_hash == 0);
  CHECK(missed == 0);
  CHECK(false_alarm == 0);
  // after an update() of whole floats, update_finite continues the same stream
  PayloadHasher mixed;
  mixed.update(x.data(), 12);
  CHECK(mixed.update_finite(x.data() + 3, 500));
  CHECK(mixed.finish() == payload_hash(x.data(), 503 * sizeof(float)));
}

TEST_CASE("payload checks: length, hash, finite values") {
  std::vector<float> x = {1.0f, -2.5f, 3.0f, 0.0f};
  Header h = sample();
  h.payload_bytes = x.size() * 4;
  h.count = x.size();
  h.payload_hash = payload_hash(x.data(), h.payload_bytes);
  CHECK(check_payload(h, x.data(), h.payload_bytes) == Reject::kNone);
  CHECK(check_payload(h, x.data(), h.payload_bytes - 4) == Reject::kLengthMismatch);
  x[1] = -2.0f;  // corrupted in transit
  CHECK(check_payload(h, x.data(), h.payload_bytes) == Reject::kBadChecksum);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    x[2] = bad;  // a correct hash over a non-finite value
    h.payload_hash = payload_hash(x.data(), h.payload_bytes);
    CHECK(check_payload(h, x.data(), h.payload_bytes) == Reject::kNonFinite);
  }
  CHECK(all_finite(nullptr, 0));
  const float denormal = std::numeric_limits<float>::denorm_min();
  CHECK(all_finite(&denormal, 1));
  CHECK(reject_name(Reject::kNonFinite) == "non_finite");
  CHECK(reject_name(Reject::kRoundOutsideWindow) == "round_outside_window");
}

}  // TEST_SUITE
