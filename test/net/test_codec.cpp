// Codecs (net/codec.h) against references computed another way, the wire's
// refusals of hostile compressed payloads, and the mixers with a codec over
// an in-process network: the ring's results bit-identical on every node for
// N in {2, 3, 4, 7}, error feedback carrying the lost part exactly, gossip's
// corrections anti-commuting bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "net/codec.h"
#include "net/gossip.h"
#include "net/ring_allreduce.h"
#include "net/shard_server.h"
#include "test/net/fake_net.h"

using namespace tether::net;
using tether::net::testing::FakeNet;

namespace {

// bf16 reference: the two bf16 values around x (truncation and the next one
// away from zero), the nearer in double arithmetic, a tie to the even one;
// past the largest bf16 the next value is 2^128 (IEEE rounding with an
// unbounded exponent, which then overflows to infinity).
uint16_t bf16_reference(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t lo = u & 0xffff0000u;
  if (lo == u) return static_cast<uint16_t>(u >> 16);  // exactly representable (incl. ±0, ±Inf)
  const double dx = std::fabs(static_cast<double>(x));
  const double dlo = std::fabs(static_cast<double>(std::bit_cast<float>(lo)));
  const uint32_t hi = lo + 0x10000u;
  const bool hi_inf = (hi & 0x7f800000u) == 0x7f800000u;
  const double dhi = hi_inf ? std::ldexp(1.0, 128) : std::fabs(static_cast<double>(std::bit_cast<float>(hi)));
  const double below = dx - dlo, above = dhi - dx;
  if (below < above) return static_cast<uint16_t>(lo >> 16);
  if (above < below) return static_cast<uint16_t>(hi >> 16);
  return ((lo >> 16) & 1u) == 0 ? static_cast<uint16_t>(lo >> 16) : static_cast<uint16_t>(hi >> 16);
}

Header tensor_header(Codec c, uint64_t count, const std::vector<unsigned char>& payload) {
  Header h;
  h.kind = Kind::kRing;
  h.codec = c;
  h.sender = 1;
  h.count = count;
  h.payload_bytes = payload.size();
  h.payload_hash = payload_hash(payload.data(), payload.size());
  return h;
}

std::vector<unsigned char> encoded_payload(Codec c, const std::vector<float>& x) {
  std::vector<unsigned char> p(encoded_bytes(c, x.size()));
  encode(c, x.data(), x.size(), p.data(), nullptr);
  return p;
}

// Non-representable, position- and node-dependent values in about [-1, 1].
float delta_value(int node, int round, size_t j) {
  return std::sin(0.37f * static_cast<float>(j) + 1.3f * static_cast<float>(node) + 0.71f * static_cast<float>(round)) *
         (1.0f + 0.001f * static_cast<float>(j % 7));
}

}  // namespace

TEST_SUITE("codec") {

TEST_CASE("bf16: round to nearest even against a reference in double, ties, NaN and Inf") {
  // every exponent, mantissa patterns around the rounding point, both signs
  std::mt19937 rng(7);
  size_t checked = 0, wrong = 0;
  for (uint32_t exp = 0; exp < 255; ++exp) {      // finite exponents
    for (uint32_t low : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {  // ties are 0x8000
      for (uint32_t keep : {0x00u, 0x01u, 0x7eu, 0x7fu}) {                       // even and odd kept mantissa
        for (uint32_t sign : {0u, 1u}) {
          const uint32_t u = (sign << 31) | (exp << 23) | (keep << 16) | low;
          const float x = std::bit_cast<float>(u);
          wrong += float_to_bf16(x) != bf16_reference(x);
          ++checked;
        }
      }
    }
  }
  for (int k = 0; k < 200000; ++k) {  // random finite bit patterns
    uint32_t u = static_cast<uint32_t>(rng());
    if ((u & 0x7f800000u) == 0x7f800000u) continue;
    const float x = std::bit_cast<float>(u);
    wrong += float_to_bf16(x) != bf16_reference(x);
    ++checked;
  }
  CHECK(checked > 200000);
  CHECK(wrong == 0);
  // ties, spelled out: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to even (1);
  // 1 + 3·2^-8 halfway between 1 + 2^-7 (odd) and 1 + 2^-6: to even (up)
  CHECK(float_to_bf16(1.0f + 0x1p-8f) == 0x3f80u);
  CHECK(float_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82u);
  CHECK(float_to_bf16(-(1.0f + 0x1p-8f)) == 0xbf80u);
  // overflow: the largest float rounds to Inf; the largest bf16 stays
  CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7f80u);
  CHECK(float_to_bf16(std::bit_cast<float>(0x7f7f0000u)) == 0x7f7fu);
  CHECK(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80u);
  CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xff80u);
  // NaN stays NaN (quiet, sign kept), even one whose payload sits in the low bits only
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const uint16_t b = float_to_bf16(std::bit_cast<float>(nan));
    CHECK(std::isnan(bf16_to_float(b)));
    CHECK((b >> 15) == (nan >> 31));
  }
  // widening is exact
  for (uint32_t b = 0; b < 0x10000u; b += 37) {
    CHECK(std::bit_cast<uint32_t>(bf16_to_float(static_cast<uint16_t>(b))) == b << 16);
  }
}

TEST_CASE("bf16 and int8 chunks: decode(encode(x)) as stated, int8 within scale/2, all-zero chunk exact") {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t n : {size_t{1}, size_t{2}, size_t{17}, size_t{1000}}) {
    std::vector<float> x(n);
    for (float& v : x) v = normal(rng);
    x[n / 2] = n > 2 ? -25.0f : x[n / 2];  // an outlier sets the scale
    // bf16
    std::vector<unsigned char> b(encoded_bytes(Codec::kBf16, n));
    CHECK(b.size() == 2 * n);
    std::vector<float> dec(n), dec2(n);
    encode(Codec::kBf16, x.data(), n, b.data(), dec.data());
    decode(Codec::kBf16, b.data(), n, dec2.data());
    for (size_t j = 0; j < n; ++j) {
      CHECK(std::bit_cast<uint32_t>(dec[j]) == std::bit_cast<uint32_t>(dec2[j]));
      CHECK(dec[j] == bf16_to_float(bf16_reference(x[j])));
    }
    // int8: scale = max|x| / 127 in the first 4 bytes, then n codes
    std::vector<unsigned char> q(encoded_bytes(Codec::kInt8, n));
    CHECK(q.size() == 4 + n);
    encode(Codec::kInt8, x.data(), n, q.data(), dec.data());
    decode(Codec::kInt8, q.data(), n, dec2.data());
    float scale;
    std::memcpy(&scale, q.data(), 4);
    double maxabs = 0;
    for (float v : x) maxabs = std::max(maxabs, std::fabs(double(v)));
    CHECK(scale == float(maxabs) / 127.0f);
    // at most scale/2 per element; the slack is the float rounding of x/scale and q·scale
    const double slack = 4.0 * maxabs * std::numeric_limits<float>::epsilon();
    double worst = 0;
    for (size_t j = 0; j < n; ++j) {
      CHECK(std::bit_cast<uint32_t>(dec[j]) == std::bit_cast<uint32_t>(dec2[j]));
      worst = std::max(worst, std::fabs(double(x[j]) - double(dec[j])));
      const auto code = static_cast<int8_t>(q[4 + j]);
      CHECK(code >= -127);
      CHECK(code == static_cast<int8_t>(std::lround(double(x[j]) / double(scale))));
    }
    CHECK(worst <= double(scale) / 2 + slack);
    // the largest magnitude is carried as ±127 · scale
    const size_t arg = size_t(std::max_element(x.begin(), x.end(), [](float a, float c) { return std::fabs(a) < std::fabs(c); }) - x.begin());
    CHECK(std::abs(static_cast<int8_t>(q[4 + arg])) == 127);
  }
  // all-zero chunk: scale 0, exact zeros back
  std::vector<float> zero(64, 0.0f), dec(64, 1.0f);
  std::vector<unsigned char> q(encoded_bytes(Codec::kInt8, 64));
  encode(Codec::kInt8, zero.data(), 64, q.data(), dec.data());
  float scale;
  std::memcpy(&scale, q.data(), 4);
  CHECK(scale == 0.0f);
  for (float v : dec) CHECK(std::bit_cast<uint32_t>(v) == 0u);
  CHECK(check_encoded(Codec::kInt8, q.data(), 64) == Reject::kNone);
  // sizes
  CHECK(encoded_bytes(Codec::kNone, 10) == 40);
  CHECK(encoded_bytes(Codec::kInt8, 0) == 0);
  CHECK(codec_from_name("bf16") == Codec::kBf16);
  CHECK(!codec_from_name("fp8").has_value());
}

TEST_CASE("wire: the header names the codec; lengths and payloads are checked for it") {
  const std::vector<float> x = {1.5f, -2.25f, 3.0f, 0.125f, -7.0f};
  for (Codec c : {Codec::kNone, Codec::kBf16, Codec::kInt8}) {
    CAPTURE(codec_name(c));
    const auto p = encoded_payload(c, x);
    Header h = tensor_header(c, x.size(), p);
    unsigned char hb[kHeaderBytes];
    encode_header(h, hb);
    Header d;
    REQUIRE(decode_header(hb, kHeaderBytes, &d) == Reject::kNone);
    CHECK(d.codec == c);
    CHECK(d.flags == 0);
    CHECK(check_payload(d, p.data(), p.size()) == Reject::kNone);
    // truncated payload frame
    CHECK(check_payload(d, p.data(), p.size() - 1) == Reject::kLengthMismatch);
    // a header that claims the float32 length for a compressed payload
    if (c != Codec::kNone) {
      Header lie = h;
      lie.payload_bytes = x.size() * 4;
      encode_header(lie, hb);
      CHECK(decode_header(hb, kHeaderBytes, &d) == Reject::kLengthMismatch);
    }
  }
  // codec bits on a kind without tensors, or an unknown codec
  {
    Header h;
    h.kind = Kind::kHeartbeat;
    h.codec = Codec::kBf16;
    unsigned char hb[kHeaderBytes];
    encode_header(h, hb);
    Header d;
    CHECK(decode_header(hb, kHeaderBytes, &d) == Reject::kBadCodec);
    h.kind = Kind::kSketch;  // floats, but never compressed
    h.count = 2;
    h.payload_bytes = 4;
    encode_header(h, hb);
    CHECK(decode_header(hb, kHeaderBytes, &d) == Reject::kBadCodec);
    h = tensor_header(Codec::kNone, 5, encoded_payload(Codec::kNone, x));
    encode_header(h, hb);
    hb[7] = static_cast<unsigned char>(3u << 4);  // codec 3, header hash recomputed
    const uint64_t hh = hash64(hb, 64);
    std::memcpy(hb + 64, &hh, 8);
    CHECK(decode_header(hb, kHeaderBytes, &d) == Reject::kBadCodec);
    // a hello with its flag still decodes: flags and codec share the byte
    Header hello;
    hello.kind = Kind::kHello;
    hello.flags = kHelloRunning;
    encode_header(hello, hb);
    REQUIRE(decode_header(hb, kHeaderBytes, &d) == Reject::kNone);
    CHECK(d.flags == kHelloRunning);
    CHECK(d.codec == Codec::kNone);
  }
  // hostile payloads of the right length and hash: refused, never decoded
  {
    auto p = encoded_payload(Codec::kBf16, x);
    const uint16_t inf = 0x7f80u;
    std::memcpy(p.data() + 2, &inf, 2);
    CHECK(check_payload(tensor_header(Codec::kBf16, 5, p), p.data(), p.size()) == Reject::kNonFinite);
    const uint16_t nan = 0xffc1u;
    std::memcpy(p.data() + 2, &nan, 2);
    CHECK(check_payload(tensor_header(Codec::kBf16, 5, p), p.data(), p.size()) == Reject::kNonFinite);
  }
  {
    auto p = encoded_payload(Codec::kInt8, x);
    auto bad_scale = [&](float s) {
      auto q = p;
      std::memcpy(q.data(), &s, 4);
      return check_payload(tensor_header(Codec::kInt8, 5, q), q.data(), q.size());
    };
    CHECK(bad_scale(std::numeric_limits<float>::quiet_NaN()) == Reject::kNonFinite);
    CHECK(bad_scale(std::numeric_limits<float>::infinity()) == Reject::kNonFinite);
    CHECK(bad_scale(std::numeric_limits<float>::max()) == Reject::kNonFinite);  // 127 · scale overflows
    CHECK(bad_scale(-1.0f) == Reject::kBadCodec);
    auto q = p;
    q[4 + 2] = 0x80;  // code -128
    CHECK(check_payload(tensor_header(Codec::kInt8, 5, q), q.data(), q.size()) == Reject::kBadCodec);
    // a flipped byte: the hash still guards it
    Header h = tensor_header(Codec::kInt8, 5, p);
    q = p;
    q[5] ^= 1;
    CHECK(check_payload(h, q.data(), q.size()) == Reject::kBadChecksum);
  }
}

TEST_CASE("error feedback: losses ride on the round `lag` later, oldest first; the residual holds the rest") {
  ErrorFeedback ef(2);
  ef.record(0, {1.0f, 2.0f});
  ef.record(1, {10.0f, 20.0f});
  ef.record(2, {});  // nothing lost: nothing kept
  std::vector<float> v = {0.5f, 0.5f};
  CHECK(ef.apply(1, v.data(), 2) == 0);  // round 0 + lag 2 > 1
  CHECK(v == std::vector<float>{0.5f, 0.5f});
  CHECK(ef.residual(2) == std::vector<float>{11.0f, 22.0f});
  CHECK(ef.apply(2, v.data(), 2) == 1);
  CHECK(v == std::vector<float>{1.5f, 2.5f});
  CHECK(ef.apply(5, v.data(), 2) == 1);
  CHECK(v == std::vector<float>{11.5f, 22.5f});
  CHECK(ef.residual(2) == std::vector<float>{0.0f, 0.0f});
}

TEST_CASE("ring with a codec, N = 2, 3, 4, 7: the same bits everywhere, error feedback carries the loss exactly, bytes drop") {
  for (Codec codec : {Codec::kBf16, Codec::kInt8}) {
    for (int nodes : {2, 3, 4, 7}) {
      CAPTURE(codec_name(codec));
      CAPTURE(nodes);
      const size_t count = 333;
      const int rounds = 12;
      std::mt19937 rng(static_cast<unsigned>(nodes * 31 + static_cast<int>(codec)));
      FakeNet net;
      std::vector<std::unique_ptr<RingAllreduce>> rings;
      std::vector<Mixer*> mixers;
      std::vector<ErrorFeedback> feedback;
      for (int i = 0; i < nodes; ++i) {
        rings.push_back(std::make_unique<RingAllreduce>(i, nodes, count, 40 * 4, net.box(i), codec));
        mixers.push_back(rings.back().get());
        feedback.emplace_back(1);
      }
      std::vector<double> deltas(count, 0.0), applied(count, 0.0), plain_error(count, 0.0);
      double worst_round_error = 0;
      for (int r = 0; r < rounds; ++r) {
        std::vector<double> mean_in(count, 0.0);  // the mean of what was submitted this round, in double
        for (int i = 0; i < nodes; ++i) {
          auto buf = std::make_shared<RoundBuffer>();
          buf->data.resize(count);
          for (size_t j = 0; j < count; ++j) {
            buf->data[j] = delta_value(i, r, j);
            deltas[j] += buf->data[j];
          }
          feedback[size_t(i)].apply(uint64_t(r), buf->data.data(), count);  // the previous round's loss rides along
          for (size_t j = 0; j < count; ++j) mean_in[j] += buf->data[j] / double(nodes);
          rings[size_t(i)]->submit(uint64_t(r), buf, 0);
        }
        net.deliver(mixers, rng);
        std::vector<float> first;
        for (int i = 0; i < nodes; ++i) {
          REQUIRE(rings[size_t(i)]->finished(uint64_t(r)));
          std::vector<float> loss = rings[size_t(i)]->take_loss(uint64_t(r));
          CHECK(loss.size() == count);
          feedback[size_t(i)].record(uint64_t(r), std::move(loss));
          std::vector<float> got = rings[size_t(i)]->take(uint64_t(r), nullptr);
          REQUIRE(got.size() == count);
          if (i == 0) first = got;
          CHECK(std::memcmp(first.data(), got.data(), count * 4) == 0);  // bit-identical on every node
        }
        for (size_t j = 0; j < count; ++j) {
          applied[j] += first[j];
          worst_round_error = std::max(worst_round_error, std::fabs(double(first[j]) - mean_in[j]));
        }
      }
      // sum over rounds of what was applied + the residuals / N = the sum of the deltas / N
      std::vector<double> residual(count, 0.0);
      double residual_max = 0;
      for (int i = 0; i < nodes; ++i) {
        const std::vector<float> e = feedback[size_t(i)].residual(count);
        for (size_t j = 0; j < count; ++j) {
          residual[j] += e[j];
          residual_max = std::max(residual_max, std::fabs(double(e[j])));
        }
      }
      double worst = 0, worst_without = 0;
      for (size_t j = 0; j < count; ++j) {
        const double want = deltas[j] / nodes;
        worst = std::max(worst, std::fabs(applied[j] + residual[j] / nodes - want));
        worst_without = std::max(worst_without, std::fabs(applied[j] - want));
      }
      MESSAGE(codec_name(codec) << " N=" << nodes << ": per-round error " << worst_round_error << ", invariant error "
                                << worst << ", without the residual " << worst_without);
      // float rounding only: a few ulps of values of magnitude <= N per operation, over the rounds
      CHECK(worst <= 2e-5);
      CHECK(residual_max > 1e-4);           // something was lost, and it is held
      CHECK(worst_without > 10 * worst);    // the residual is what closes the gap
      CHECK(worst_round_error < (codec == Codec::kBf16 ? 0.05 : 0.1));
      // bytes: bf16 half of float32, int8 a quarter plus a scale per chunk
      uint64_t bytes = 0, raw = 0;
      for (const auto& b : net.boxes) {
        bytes += b->bytes;
        raw += b->raw_bytes;
      }
      // what none sends: each node 2(N-1)/N of the vector per round, 2(N-1) vectors in all
      CHECK(raw == uint64_t(rounds) * 2 * uint64_t(nodes - 1) * count * 4);
      uint64_t chunks = 0;  // every chunk travels 2(N-1) times a round
      for (int s = 0; s < nodes; ++s) chunks += rings[0]->chunks_in(s);
      if (codec == Codec::kBf16) CHECK(bytes * 2 == raw);
      else CHECK(bytes == raw / 4 + 4 * uint64_t(rounds) * 2 * uint64_t(nodes - 1) * chunks);
    }
  }
}

TEST_CASE("gossip with a codec: corrections anti-commute exactly, the sum is conserved, nodes agree") {
  for (Codec codec : {Codec::kBf16, Codec::kInt8}) {
    for (int nodes : {2, 4}) {
      CAPTURE(codec_name(codec));
      CAPTURE(nodes);
      const size_t count = 101;
      std::mt19937 rng(5);
      FakeNet net;
      std::vector<std::unique_ptr<Gossip>> gs;
      std::vector<Mixer*> mixers;
      std::vector<std::vector<float>> x(static_cast<size_t>(nodes), std::vector<float>(count));
      for (int i = 0; i < nodes; ++i) {
        gs.push_back(std::make_unique<Gossip>(i, nodes, count, 32 * 4, net.box(i), 0, 0, codec));
        mixers.push_back(gs.back().get());
        for (size_t j = 0; j < count; ++j) x[size_t(i)][j] = delta_value(i, 0, j) * 3.0f;
      }
      auto sum_at = [&](size_t j) {
        double s = 0;
        for (int i = 0; i < nodes; ++i) s += x[size_t(i)][j];
        return s;
      };
      std::vector<double> sum0(count);
      for (size_t j = 0; j < count; ++j) sum0[j] = sum_at(j);
      const int rounds = 24;
      for (int r = 0; r < rounds; ++r) {  // synchronous: every correction applied before the next close
        for (int i = 0; i < nodes; ++i) {
          auto buf = std::make_shared<RoundBuffer>();
          buf->data = x[size_t(i)];
          gs[size_t(i)]->submit(uint64_t(r), buf, uint64_t(r));
        }
        net.deliver(mixers, rng);
        std::vector<std::vector<float>> c(static_cast<size_t>(nodes));
        std::vector<int> partner(static_cast<size_t>(nodes));
        for (int i = 0; i < nodes; ++i) {
          REQUIRE(gs[size_t(i)]->finished(uint64_t(r)));
          c[size_t(i)] = gs[size_t(i)]->take(uint64_t(r), &partner[size_t(i)]);
        }
        for (int i = 0; i < nodes; ++i) {
          const int p = partner[size_t(i)];
          REQUIRE(p >= 0);
          for (size_t j = 0; j < count; ++j) {
            CHECK(c[size_t(i)][j] == -c[size_t(p)][j]);  // exact (a zero is +0 on both sides)
            x[size_t(i)][j] += c[size_t(i)][j];
          }
        }
      }
      double drift = 0, spread = 0;
      for (size_t j = 0; j < count; ++j) {
        drift = std::max(drift, std::fabs(sum_at(j) - sum0[j]));
        for (int i = 1; i < nodes; ++i) spread = std::max(spread, double(std::fabs(x[size_t(i)][j] - x[0][j])));
      }
      MESSAGE(codec_name(codec) << " N=" << nodes << ": sum drift " << drift << ", spread after " << rounds
                                << " rounds " << spread);
      CHECK(drift <= 1e-5);  // the rounding of the additions into x only
      // the start spread is about 6; what is left is the codec's resolution
      CHECK(spread < (codec == Codec::kBf16 ? 0.05 : 0.2));
      CHECK(gs[0]->residual().size() == count);
    }
  }
}

}  // TEST_SUITE

namespace {

// Shard services of nodes 0..N-1 wired in-process: a frame goes through the
// header encoding and the receiver's checks, and is handled at once (the
// services' I/O work runs on the calling thread).
struct ServiceNet {
  struct Box : testing::CountingOutbox {
    ServiceNet* net;
    void send(int peer, Header h, zmq::message_t payload, const uint64_t* known) override {
      stamp(h, payload, known);
      unsigned char hb[kHeaderBytes];
      encode_header(h, hb);
      Header d;
      REQUIRE(decode_header(hb, kHeaderBytes, &d) == Reject::kNone);
      ShardService& dst = *net->services[static_cast<size_t>(peer)];
      REQUIRE(dst.check(d) == Reject::kNone);
      REQUIRE(check_payload(d, payload.data(), payload.size()) == Reject::kNone);
      zmq::message_t copy(payload.data(), payload.size());
      REQUIRE(dst.receive(d, std::move(copy)) == Reject::kNone);
    }
  };
  std::vector<std::shared_ptr<ShardService>> services;
  std::vector<std::unique_ptr<Box>> boxes;
};

}  // namespace

TEST_SUITE("codec") {

TEST_CASE("shard servers with a codec: pushes carry their loss forward exactly, fetches read x̃ encoded, bytes drop") {
  for (Codec codec : {Codec::kBf16, Codec::kInt8}) {
    CAPTURE(codec_name(codec));
    const int nodes = 3;
    const size_t count = 301;
    ServiceNet net;
    std::vector<float> x0(count);
    for (size_t j = 0; j < count; ++j) x0[j] = 0.5f + 0.001f * static_cast<float>(j);
    for (int i = 0; i < nodes; ++i) {
      net.services.push_back(std::make_shared<ShardService>(i, nodes, count, 4, 0, codec));
      net.boxes.push_back(std::make_unique<ServiceNet::Box>());
      net.boxes.back()->net = &net;
      net.boxes.back()->self = i;
      net.services.back()->attach(net.boxes.back().get(), [](std::function<void()> fn) { fn(); });
    }
    for (auto& s : net.services) s->on_start(x0.data(), count);
    // node 0 pushes scripted updates; its loss is kept, the servers apply what arrived
    std::vector<double> want(x0.begin(), x0.end());
    const int pushes = 40;
    for (int r = 0; r < pushes; ++r) {
      std::vector<float> u(count);
      for (size_t j = 0; j < count; ++j) {
        u[j] = 0.01f * delta_value(0, r, j);
        want[j] += u[j];
      }
      net.services[0]->push(std::move(u), nullptr, 1000);
    }
    net.services[0]->wait_pushes(nullptr, 1000);
    // x̃ exactly: every server reads its own shard without the wire
    std::vector<float> exact(count), seen(count), via_wire(count);
    for (int k = 0; k < nodes; ++k) {
      net.services[size_t(k)]->fetch(seen.data(), nullptr, 1000);
      const ShardRange r = shard_range(k, nodes, count);
      std::copy(seen.begin() + long(r.offset), seen.begin() + long(r.offset + r.count), exact.begin() + long(r.offset));
    }
    net.services[0]->fetch(via_wire.data(), nullptr, 1000);  // node 0: shards 1, 2 encoded
    const std::vector<float> e = net.services[0]->push_residual();
    REQUIRE(e.size() == count);
    double worst = 0, worst_without = 0, residual_max = 0, fetch_error = 0;
    for (size_t j = 0; j < count; ++j) {
      worst = std::max(worst, std::fabs(double(exact[j]) + double(e[j]) - want[j]));
      worst_without = std::max(worst_without, std::fabs(double(exact[j]) - want[j]));
      residual_max = std::max(residual_max, std::fabs(double(e[j])));
      fetch_error = std::max(fetch_error, std::fabs(double(via_wire[j]) - double(exact[j])));
    }
    MESSAGE(codec_name(codec) << ": invariant error " << worst << ", without the residual " << worst_without
                              << ", a fetch's decoding error " << fetch_error);
    const ShardRange own = shard_range(0, nodes, count);
    for (uint64_t j = own.offset; j < own.offset + own.count; ++j) {  // the own shard: exact, no residual
      CHECK(e[j] == 0.0f);
      CHECK(via_wire[j] == exact[j]);
    }
    CHECK(worst <= 2e-6);  // float rounding of 40 additions
    CHECK(residual_max > 0);
    CHECK(worst_without > 4 * worst);
    // a fetch reply is the codec's rounding of x̃ (|x̃| < 1.2 here)
    CHECK(fetch_error > 0);
    CHECK(fetch_error <= (codec == Codec::kBf16 ? 1.2 * 0x1p-9 : 1.2 / 127 / 2 * 1.0001));
    const uint64_t bytes = net.boxes[0]->bytes, raw = net.boxes[0]->raw_bytes;
    if (codec == Codec::kBf16) CHECK(bytes * 2 == raw);
    // a scale per shard and push, and per fetch reply (shard 0 to nodes 1 and 2)
    else CHECK(bytes == raw / 4 + 4 * (uint64_t(pushes) * (nodes - 1) + (nodes - 1)));
  }
}

}  // TEST_SUITE
