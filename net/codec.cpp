#include "net/codec.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "net/net_check.h"

namespace tether::net {

std::string_view codec_name(Codec c) {
  switch (c) {
    case Codec::kNone: return "none";
    case Codec::kBf16: return "bf16";
    case Codec::kInt8: return "int8";
  }
  return "unknown";
}

std::optional<Codec> codec_from_name(std::string_view name) {
  if (name == "none") return Codec::kNone;
  if (name == "bf16") return Codec::kBf16;
  if (name == "int8") return Codec::kInt8;
  return std::nullopt;
}

uint64_t encoded_bytes(Codec c, uint64_t count) {
  switch (c) {
    case Codec::kNone: return count * sizeof(float);
    case Codec::kBf16: return count * sizeof(uint16_t);
    case Codec::kInt8: return count == 0 ? 0 : sizeof(float) + count;
  }
  return ~uint64_t{0};
}

uint16_t float_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // NaN: quiet, sign kept
  // Round to nearest, ties to even: add 0x7fff plus the bit that becomes the
  // last one kept; a carry moves into the exponent (up to Inf) as it should.
  const uint32_t bias = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + bias) >> 16);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

namespace {

float int8_scale(const float* x, size_t n) {
  float m = 0.0f;
  for (size_t j = 0; j < n; ++j) m = std::max(m, std::fabs(x[j]));  // j over the values
  return m / 127.0f;
}

inline int8_t int8_code(float x, float scale) {
  if (scale == 0.0f) return 0;
  const float q = std::nearbyint(x / scale);  // the default rounding mode: ties to even
  return static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
}

}  // namespace

void encode(Codec c, const float* x, size_t n, void* out, float* decoded) {
  auto* o = static_cast<unsigned char*>(out);
  switch (c) {
    case Codec::kNone:
      if (n) std::memcpy(o, x, n * sizeof(float));
      if (decoded && decoded != x && n) std::memmove(decoded, x, n * sizeof(float));
      return;
    case Codec::kBf16:
      for (size_t j = 0; j < n; ++j) {  // j over the values
        const uint16_t b = float_to_bf16(x[j]);
        std::memcpy(o + j * sizeof(uint16_t), &b, sizeof b);
        if (decoded) decoded[j] = bf16_to_float(b);
      }
      return;
    case Codec::kInt8: {
      if (n == 0) return;
      const float scale = int8_scale(x, n);
      std::memcpy(o, &scale, sizeof scale);
      auto* q = reinterpret_cast<int8_t*>(o + sizeof(float));
      for (size_t j = 0; j < n; ++j) {  // j over the values
        q[j] = int8_code(x[j], scale);
        if (decoded) decoded[j] = static_cast<float>(q[j]) * scale;
      }
      return;
    }
  }
  TETHER_NET_CHECK(false, "unknown codec " << static_cast<int>(c));
}

void decode(Codec c, const void* payload, size_t count, float* out) {
  const auto* p = static_cast<const unsigned char*>(payload);
  switch (c) {
    case Codec::kNone:
      if (count) std::memcpy(out, p, count * sizeof(float));
      return;
    case Codec::kBf16:
      for (size_t j = 0; j < count; ++j) {  // j over the values
        uint16_t b;
        std::memcpy(&b, p + j * sizeof(uint16_t), sizeof b);
        out[j] = bf16_to_float(b);
      }
      return;
    case Codec::kInt8: {
      if (count == 0) return;
      float scale;
      std::memcpy(&scale, p, sizeof scale);
      const auto* q = reinterpret_cast<const int8_t*>(p + sizeof(float));
      for (size_t j = 0; j < count; ++j) out[j] = static_cast<float>(q[j]) * scale;  // j over the values
      return;
    }
  }
  TETHER_NET_CHECK(false, "unknown codec " << static_cast<int>(c));
}

Reject check_encoded(Codec c, const void* payload, size_t count) {
  const auto* p = static_cast<const unsigned char*>(payload);
  switch (c) {
    case Codec::kNone:
      return all_finite(static_cast<const float*>(payload), count) ? Reject::kNone : Reject::kNonFinite;
    case Codec::kBf16: {
      uint32_t bad = 0;
      for (size_t j = 0; j < count; ++j) {  // j over the values: exponent all ones <=> NaN or Inf
        uint16_t b;
        std::memcpy(&b, p + j * sizeof(uint16_t), sizeof b);
        bad |= static_cast<uint32_t>((b & 0x7f80u) == 0x7f80u);
      }
      return bad ? Reject::kNonFinite : Reject::kNone;
    }
    case Codec::kInt8: {
      if (count == 0) return Reject::kNone;
      float scale;
      std::memcpy(&scale, p, sizeof scale);
      if (!std::isfinite(scale)) return Reject::kNonFinite;
      if (scale < 0.0f) return Reject::kBadCodec;
      // 127 · scale must stay finite (a scale near FLT_MAX would overflow)
      if (!std::isfinite(scale * 127.0f)) return Reject::kNonFinite;
      const auto* q = reinterpret_cast<const int8_t*>(p + sizeof(float));
      uint32_t bad = 0;
      for (size_t j = 0; j < count; ++j) bad |= static_cast<uint32_t>(q[j] == -128);  // j over the codes
      return bad ? Reject::kBadCodec : Reject::kNone;
    }
  }
  return Reject::kBadCodec;
}

void ErrorFeedback::record(uint64_t round, std::vector<float> loss) {
  if (loss.empty()) return;
  TETHER_NET_CHECK(!pending_.count(round), "loss of round " << round << " recorded twice");
  pending_.emplace(round, std::move(loss));
}

size_t ErrorFeedback::apply(uint64_t round, float* data, size_t n) {
  size_t added = 0;
  for (auto it = pending_.begin(); it != pending_.end() && it->first + lag_ <= round;) {  // oldest first
    TETHER_NET_CHECK(it->second.size() == n, "loss of " << it->second.size() << " floats for a vector of " << n);
    const float* e = it->second.data();
    for (size_t j = 0; j < n; ++j) data[j] += e[j];  // j over the vector
    it = pending_.erase(it);
    ++added;
  }
  return added;
}

std::vector<float> ErrorFeedback::residual(size_t n) const {
  std::vector<float> r(n, 0.0f);
  for (const auto& [round, e] : pending_)  // in round order
    for (size_t j = 0; j < n && j < e.size(); ++j) r[j] += e[j];
  return r;
}

}  // namespace tether::net
