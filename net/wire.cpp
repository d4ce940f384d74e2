#include "net/wire.h"

#include "net/codec.h"

#include <algorithm>
#include <bit>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tether::net {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian and encoded by memcpy");

std::string_view reject_name(Reject r) {
  switch (r) {
    case Reject::kNone: return "none";
    case Reject::kFrameCount: return "frame_count";
    case Reject::kHeaderSize: return "header_size";
    case Reject::kBadMagic: return "bad_magic";
    case Reject::kBadVersion: return "bad_version";
    case Reject::kHeaderChecksum: return "header_checksum";
    case Reject::kBadKind: return "bad_kind";
    case Reject::kBadFlags: return "bad_flags";
    case Reject::kUnknownSender: return "unknown_sender";
    case Reject::kOversized: return "oversized";
    case Reject::kLengthMismatch: return "length_mismatch";
    case Reject::kRoundOutsideWindow: return "round_outside_window";
    case Reject::kRangeMismatch: return "range_mismatch";
    case Reject::kBadChecksum: return "bad_checksum";
    case Reject::kNonFinite: return "non_finite";
    case Reject::kDuplicate: return "duplicate";
    case Reject::kUnexpected: return "unexpected";
    case Reject::kIdentityMismatch: return "identity_mismatch";
    case Reject::kStaleEpoch: return "stale_epoch";
    case Reject::kBadCodec: return "bad_codec";
    case Reject::kCount: break;
  }
  return "unknown";
}

namespace {

constexpr uint64_t kP1 = 11400714785074694791ULL;
constexpr uint64_t kP2 = 14029467366897019727ULL;
constexpr uint64_t kP3 = 1609587929392839161ULL;
constexpr uint64_t kP4 = 9650029242287828579ULL;
constexpr uint64_t kP5 = 2870177450012600261ULL;

inline uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t mix_round(uint64_t acc, uint64_t input) {
  acc += input * kP2;
  acc = std::rotl(acc, 31);
  return acc * kP1;
}
inline uint64_t merge_round(uint64_t acc, uint64_t val) {
  acc ^= mix_round(0, val);
  return acc * kP1 + kP4;
}

template <typename T>
void put(unsigned char* out, size_t at, T v) {
  std::memcpy(out + at, &v, sizeof(T));
}
template <typename T>
T get(const unsigned char* in, size_t at) {
  T v;
  std::memcpy(&v, in + at, sizeof(T));
  return v;
}

}  // namespace

uint64_t hash64(const void* data, size_t bytes, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  const unsigned char* const end = p + bytes;
  uint64_t h;
  if (bytes >= 32) {
    uint64_t v1 = seed + kP1 + kP2, v2 = seed + kP2, v3 = seed, v4 = seed - kP1;
    const unsigned char* const limit = end - 32;
    do {  // 32-byte stripes while at least one whole stripe remains
      v1 = mix_round(v1, read64(p));
      v2 = mix_round(v2, read64(p + 8));
      v3 = mix_round(v3, read64(p + 16));
      v4 = mix_round(v4, read64(p + 24));
      p += 32;
    } while (p <= limit);
    h = std::rotl(v1, 1) + std::rotl(v2, 7) + std::rotl(v3, 12) + std::rotl(v4, 18);
    h = merge_round(h, v1);
    h = merge_round(h, v2);
    h = merge_round(h, v3);
    h = merge_round(h, v4);
  } else {
    h = seed + kP5;
  }
  h += static_cast<uint64_t>(bytes);
  for (; p + 8 <= end; p += 8) {
    h ^= mix_round(0, read64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
  }
  if (p + 4 <= end) {
    h ^= static_cast<uint64_t>(read32(p)) * kP1;
    h = std::rotl(h, 23) * kP2 + kP3;
    p += 4;
  }
  for (; p < end; ++p) {
    h ^= (*p) * kP5;
    h = std::rotl(h, 11) * kP1;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

namespace {

constexpr uint32_t kP1_32 = 2654435761u;
constexpr uint32_t kP2_32 = 2246822519u;

// 16 lanes in one value: GCC's vector extension keeps it in a zmm register
// (two ymm with AVX2, four xmm by default).
typedef uint32_t Lanes16 __attribute__((vector_size(64)));
static_assert(PayloadHasher::kLanes == 4 * 16);

// k stripes of kStripeBytes into the kLanes lanes: lane l takes 32-bit word l
// of every stripe. 64 lanes are four independent 16-lane vector chains
// (AVX-512; eight with AVX2), so the multiply latency of one chain overlaps
// the others' instead of bounding the rate. kFinite: the same loads also feed
// the finite check (all exponent bits set <=> NaN or infinity), OR-reduced
// into a vector that the caller tests once; returns true when every word of
// the stripes is a finite float (always true without kFinite).
template <bool kFinite>
__attribute__((always_inline)) inline bool lane_stripes_body(uint32_t* __restrict acc,
                                                              const unsigned char* __restrict p, size_t k) {
  constexpr uint32_t kExp = 0x7f800000u;
  const Lanes16 exp = {kExp, kExp, kExp, kExp, kExp, kExp, kExp, kExp,
                       kExp, kExp, kExp, kExp, kExp, kExp, kExp, kExp};
  Lanes16 a[4];
  Lanes16 bad = {};
  std::memcpy(a, acc, sizeof(a));
  for (size_t s = 0; s < k; ++s, p += PayloadHasher::kStripeBytes) {  // s over the stripes
    Lanes16 w[4];
    std::memcpy(w, p, sizeof(w));
    for (int v = 0; v < 4; ++v) {  // v over the four independent chains (unrolled)
      const Lanes16 x = a[v] + w[v] * kP2_32;
      a[v] = ((x << 13) | (x >> 19)) * kP1_32;
      if constexpr (kFinite) bad |= reinterpret_cast<Lanes16>((w[v] & exp) == exp);
    }
  }
  std::memcpy(acc, a, sizeof(a));
  uint32_t any = 0;
  for (int l = 0; l < 16; ++l) any |= bad[l];  // l over the lanes
  return any == 0;
}

// Clones for AVX-512 and AVX2 are picked by the loader (ifunc).
__attribute__((target_clones("avx512f", "avx2", "default"))) void lane_stripes(
    uint32_t* __restrict acc, const unsigned char* __restrict p, size_t k) {
  lane_stripes_body<false>(acc, p, k);
}
__attribute__((target_clones("avx512f", "avx2", "default"))) bool lane_stripes_finite(
    uint32_t* __restrict acc, const unsigned char* __restrict p, size_t k) {
  return lane_stripes_body<true>(acc, p, k);
}

#if defined(__x86_64__)
// The same lanes with AVX2 intrinsics: eight ymm accumulators (lanes 8i ..
// 8i + 7 <- bytes 32i .. 32i + 31 of each stripe) that stay in registers.
// GCC's AVX2 clone of lane_stripes_body splits each 16-lane vector in two and
// spills to the stack on every stripe, which made the hash the largest user
// cost of an all-reduce (perf, bench/net/allreduce_bench); this runs several
// times faster (bench/net/hash_cost) with the same bits.
template <bool kFinite>
__attribute__((target("avx2"))) bool lane_stripes_avx2(uint32_t* __restrict acc, const unsigned char* __restrict p,
                                                       size_t k) {
  const __m256i p1 = _mm256_set1_epi32(static_cast<int>(kP1_32));
  const __m256i p2 = _mm256_set1_epi32(static_cast<int>(kP2_32));
  const __m256i exp = _mm256_set1_epi32(0x7f800000);
  __m256i a[8];
  for (int i = 0; i < 8; ++i) a[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc) + i);  // i: the 8 chains
  __m256i bad = _mm256_setzero_si256();
  for (size_t s = 0; s < k; ++s, p += PayloadHasher::kStripeBytes) {  // s over the stripes
    for (int i = 0; i < 8; ++i) {  // i over the chains (unrolled)
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p) + i);
      const __m256i x = _mm256_add_epi32(a[i], _mm256_mullo_epi32(w, p2));
      a[i] = _mm256_mullo_epi32(_mm256_or_si256(_mm256_slli_epi32(x, 13), _mm256_srli_epi32(x, 19)), p1);
      if constexpr (kFinite) bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(w, exp), exp));
    }
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc) + i, a[i]);  // i: the 8 chains
  return _mm256_testz_si256(bad, bad) != 0;
}
#endif

// k stripes into acc, checking finiteness when `check` (else returns true):
// AVX-512 machines take lane_stripes' clone, AVX2 ones the intrinsics above.
bool stripes(uint32_t* __restrict acc, const unsigned char* __restrict p, size_t k, bool check) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && !__builtin_cpu_supports("avx512f");
  if (avx2) return check ? lane_stripes_avx2<true>(acc, p, k) : lane_stripes_avx2<false>(acc, p, k);
#endif
  if (check) return lane_stripes_finite(acc, p, k);
  lane_stripes(acc, p, k);
  return true;
}

}  // namespace

PayloadHasher::PayloadHasher() {
  for (size_t l = 0; l < kLanes; ++l)  // l over the lanes
    acc_[l] = kP1_32 * static_cast<uint32_t>(l + 1) + kP2_32;
}

void PayloadHasher::update(const void* data, size_t bytes) { feed(data, bytes, false); }

bool PayloadHasher::update_finite(const float* data, size_t count) {
  return feed(data, count * sizeof(float), true);
}

bool PayloadHasher::feed(const void* data, size_t bytes, bool check) {
  const auto* p = static_cast<const unsigned char*>(data);
  // Bytes copied into tail_ are checked where they come from (whole floats:
  // update_finite keeps the stream float-aligned, as kStripeBytes is).
  auto finite_bytes = [check](const unsigned char* q, size_t n) {
    return !check || all_finite(reinterpret_cast<const float*>(q), n / sizeof(float));
  };
  bool finite = true;
  total_bytes_ += bytes;
  if (tail_bytes_) {  // complete the stripe left over from the previous update
    const size_t take = std::min<size_t>(kStripeBytes - tail_bytes_, bytes);
    finite &= finite_bytes(p, take);
    std::memcpy(tail_ + tail_bytes_, p, take);
    tail_bytes_ += take;
    p += take;
    bytes -= take;
    if (tail_bytes_ < kStripeBytes) return finite;
    stripes(acc_, tail_, 1, false);
    tail_bytes_ = 0;
  }
  const size_t k = bytes / kStripeBytes;
  if (k) finite &= stripes(acc_, p, k, check);
  p += k * kStripeBytes;
  bytes -= k * kStripeBytes;
  finite &= finite_bytes(p, bytes);
  if (bytes) std::memcpy(tail_, p, bytes);
  tail_bytes_ = bytes;
  return finite;
}

uint64_t PayloadHasher::finish() const {
  uint64_t h = kP5 + total_bytes_;
  for (size_t l = 0; l < kLanes; l += 2) {  // lanes folded pairwise into 64-bit steps
    const uint64_t v = (static_cast<uint64_t>(acc_[l + 1]) << 32) | acc_[l];
    h ^= mix_round(0, v);
    h = std::rotl(h, 27) * kP1 + kP4;
  }
  const unsigned char* p = tail_;
  const unsigned char* const end = tail_ + tail_bytes_;
  for (; p + 8 <= end; p += 8) {
    h ^= mix_round(0, read64(p));
    h = std::rotl(h, 27) * kP1 + kP4;
  }
  for (; p < end; ++p) {
    h ^= (*p) * kP5;
    h = std::rotl(h, 11) * kP1;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

uint64_t payload_hash(const void* data, size_t bytes) {
  PayloadHasher hasher;
  hasher.update(data, bytes);
  return hasher.finish();
}

void encode_header(const Header& h, unsigned char* out) {
  put<uint32_t>(out, 0, h.magic);
  put<uint16_t>(out, 4, h.version);
  put<uint8_t>(out, 6, static_cast<uint8_t>(h.kind));
  put<uint8_t>(out, 7, static_cast<uint8_t>((h.flags & 0x0f) | (static_cast<uint8_t>(h.codec) << 4)));
  put<uint32_t>(out, 8, h.sender);
  put<uint32_t>(out, 12, h.step);
  put<uint64_t>(out, 16, h.round);
  put<uint32_t>(out, 24, h.chunk);
  put<uint32_t>(out, 28, h.epoch);
  put<uint64_t>(out, 32, h.offset);
  put<uint64_t>(out, 40, h.count);
  put<uint64_t>(out, 48, h.payload_bytes);
  put<uint64_t>(out, 56, h.payload_hash);
  put<uint64_t>(out, 64, hash64(out, 64));
}

Reject decode_header(const void* frame, size_t frame_bytes, Header* out) {
  if (frame_bytes != kHeaderBytes) return Reject::kHeaderSize;
  const auto* in = static_cast<const unsigned char*>(frame);
  Header h;
  h.magic = get<uint32_t>(in, 0);
  if (h.magic != kMagic) return Reject::kBadMagic;
  h.version = get<uint16_t>(in, 4);
  if (h.version != kProtocolVersion) return Reject::kBadVersion;
  h.header_hash = get<uint64_t>(in, 64);
  if (h.header_hash != hash64(in, 64)) return Reject::kHeaderChecksum;
  const uint8_t kind = get<uint8_t>(in, 6);
  if (kind == 0 || kind > kKindMax) return Reject::kBadKind;
  h.kind = static_cast<Kind>(kind);
  const uint8_t byte7 = get<uint8_t>(in, 7);
  h.flags = byte7 & 0x0f;
  const uint8_t codec = byte7 >> 4;
  h.sender = get<uint32_t>(in, 8);
  h.step = get<uint32_t>(in, 12);
  h.round = get<uint64_t>(in, 16);
  h.chunk = get<uint32_t>(in, 24);
  h.epoch = get<uint32_t>(in, 28);
  const bool flags_ok = h.flags == 0 || (h.kind == Kind::kBye && h.flags == kByeFailed) ||
                        (h.kind == Kind::kSketch && h.flags == kStopRequest) ||
                        (h.kind == Kind::kHello && h.flags == kHelloRunning);
  if (!flags_ok) return Reject::kBadFlags;
  if (codec > kCodecMax || (codec != 0 && !carries_codec(h.kind))) return Reject::kBadCodec;
  h.codec = static_cast<Codec>(codec);
  h.offset = get<uint64_t>(in, 32);
  h.count = get<uint64_t>(in, 40);
  h.payload_bytes = get<uint64_t>(in, 48);
  h.payload_hash = get<uint64_t>(in, 56);
  if (h.payload_bytes > kMaxPayloadBytes) return Reject::kOversized;
  if (carries_floats(h.kind)) {
    if (h.count > kMaxPayloadBytes / sizeof(float)) return Reject::kOversized;
    if (encoded_bytes(h.codec, h.count) != h.payload_bytes) return Reject::kLengthMismatch;
    if (h.offset > (uint64_t{1} << 62)) return Reject::kOversized;  // offset + count cannot wrap
  } else if (!carries_u64s(h.kind) && (h.count != 0 || h.payload_bytes != 0)) {
    return Reject::kLengthMismatch;
  }
  *out = h;
  return Reject::kNone;
}

// Cloned like lane_stripes: every received float frame and every partial sum
// goes through it.
__attribute__((target_clones("avx512f", "avx2", "default"))) bool all_finite(const float* x, size_t count) {
  // read as bytes: payloads in ZeroMQ's receive buffers need not be aligned
  const auto* p = reinterpret_cast<const unsigned char*>(x);
  uint32_t bad = 0;
  // all exponent bits set <=> NaN or infinity; OR-reduced so the loop vectorizes
  for (size_t i = 0; i < count; ++i) {
    uint32_t w;
    std::memcpy(&w, p + i * sizeof(float), sizeof(w));
    bad |= static_cast<uint32_t>((w & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

Reject check_payload(const Header& h, const void* payload, size_t payload_bytes) {
  if (payload_bytes != h.payload_bytes) return Reject::kLengthMismatch;
  PayloadHasher hasher;
  bool finite = true;
  if (h.codec != Codec::kNone) {  // hash, then the codec's own checks
    if (payload_bytes != encoded_bytes(h.codec, h.count)) return Reject::kLengthMismatch;
    hasher.update(payload, payload_bytes);
    if (hasher.finish() != h.payload_hash) return Reject::kBadChecksum;
    return check_encoded(h.codec, payload, h.count);
  }
  if (carries_floats(h.kind)) {  // hash and finite check in one pass, the same loads
    if (payload_bytes % sizeof(float) != 0) return Reject::kLengthMismatch;
    finite = hasher.update_finite(static_cast<const float*>(payload), payload_bytes / sizeof(float));
  } else {
    hasher.update(payload, payload_bytes);
  }
  if (hasher.finish() != h.payload_hash) return Reject::kBadChecksum;
  if (!finite) return Reject::kNonFinite;
  return Reject::kNone;
}

}  // namespace tether::net
