// Codecs of tensor payloads (net.compression) and error feedback.
//
// What a codec computes: an encoding of n float32 values that the receiver
// decodes back to n float32 values; decode(encode(x)) is what the sender
// treats as sent, and x − decode(encode(x)) is what the wire lost.
//   none: the float32 bits (4n bytes; lossless).
//   bf16: the upper 16 bits of each float32 after rounding to nearest, ties
//         to even (2n bytes). NaN stays NaN (quiet, sign kept), ±Inf stays
//         ±Inf, and a finite value past the largest bf16 (|x| ≥ 0xFF7F8000's
//         value plus half an ulp) rounds to ±Inf, as IEEE rounding does.
//         Senders never put a non-finite value on the wire (the ring and
//         gossip refuse to send one, check_payload refuses to take one).
//   int8: one float32 scale s = max|x| / 127 per payload (per chunk), then
//         q_j = round_half_even(x_j / s) clamped to [−127, 127] as int8
//         (4 + n bytes; 0 for n = 0). Decoded: q_j · s; the error is at most
//         s/2 per element, up to float rounding of the division and product.
//         An all-zero chunk has s = 0 and decodes to exact zeros. A payload
//         whose scale is negative or non-finite, or with the code −128, is
//         refused (Reject::kBadCodec).
// Error feedback (ErrorFeedback): what a node's compressions lost in round r
// is kept and added to a later round's vector before that one is encoded:
// sum over rounds of what was sent + the residual still held = sum of the
// vectors handed in (up to float rounding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/wire.h"

namespace tether::net {

std::string_view codec_name(Codec c);                    // "none", "bf16", "int8"
std::optional<Codec> codec_from_name(std::string_view name);

// Bytes of the payload that carries count values in codec c.
uint64_t encoded_bytes(Codec c, uint64_t count);

// bf16 rounding (nearest, ties to even) and widening.
uint16_t float_to_bf16(float x);
float bf16_to_float(uint16_t b);

// Encodes x[0, n) into out (encoded_bytes(c, n) bytes, any alignment) and
// writes the decoded values, the bits every receiver will see, to decoded
// (may alias x; null: not wanted). x must be finite (callers check).
void encode(Codec c, const float* x, size_t n, void* out, float* decoded);

// Decodes a payload of count values (encoded_bytes(c, count) bytes, any
// alignment) into out. The payload must have passed check_encoded.
void decode(Codec c, const void* payload, size_t count, float* out);

// The payload of count values in codec c: kNone when every decoded value
// would be finite and the encoding is legal, kNonFinite for a non-finite
// value (float or bf16) or int8 scale, kBadCodec for an int8 code −128 or a
// negative scale. Does not check the length (check_payload does).
Reject check_encoded(Codec c, const void* payload, size_t count);

// A node's error feedback over rounds. The loss of round r (what its
// compressions lost, as a vector of the round's length) is recorded when r
// finishes here; it is added to the vector of the first round r' ≥ r + lag
// submitted after that. With lag = the communicator's window (staleness + 1)
// round r' can only be submitted once r has finished, so which round carries
// a loss does not depend on timing: the run stays reproducible.
class ErrorFeedback {
 public:
  explicit ErrorFeedback(uint64_t lag) : lag_(lag) {}
  // Round `round`'s loss (empty: nothing lost).
  void record(uint64_t round, std::vector<float> loss);
  // Adds into data[0, n) every recorded loss of a round r with r + lag <= round,
  // and forgets them. Returns how many were added.
  size_t apply(uint64_t round, float* data, size_t n);
  // Sum of the losses recorded and not applied yet (n values).
  std::vector<float> residual(size_t n) const;

 private:
  uint64_t lag_;
  std::map<uint64_t, std::vector<float>> pending_;
};

}  // namespace tether::net
