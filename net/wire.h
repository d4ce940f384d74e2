// tether wire protocol: one fixed-size little-endian header frame followed by
// one payload frame.
//
//   offset size field
//        0    4 magic            'TTHR' (0x52485454 little-endian)
//        4    2 version          kProtocolVersion
//        6    1 kind             Kind
//        7    1 flags + codec    bits 0..3: flags (0, kByeFailed on a bye,
//                                 kStopRequest on a sketch, kHelloRunning on
//                                 a hello); bits 4..7: the Codec of a tensor
//                                 payload (ring, gossip, push, shard; 0 = none
//                                 for every other kind)
//        8    4 sender           node id of the sender, 0..N-1
//       12    4 step             mixer step (ring: 0..2N-3), 0 otherwise
//       16    8 round            averaging round (hello/heartbeat/bye: see Kind)
//       24    4 chunk            chunk index inside the step's segment
//       28    4 epoch            the sender's view epoch (membership; 0 before the first view)
//       32    8 offset           first element (float) of the range carried
//       40    8 count            number of elements carried
//       48    8 payload_bytes    length of the payload frame
//       56    8 payload_hash     payload_hash() of the payload frame
//       64    8 header_hash      hash64 of bytes 0..63
//                                 (72 bytes in all)
//
// A receiver calls decode_header() on the header frame and check_payload() on
// the payload frame before it touches any buffer; every failure names a
// Reject reason, counted by the communicator and never applied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tether::net {

inline constexpr uint32_t kMagic = 0x52485454u;  // "TTHR" in memory
// 2: 64-lane payload hash; 3: hello carries the start round and step, a
// sketch may carry kStopRequest; 4: the view epoch in the header, membership
// kinds (propose, accept, commit, result and state transfer); 5: the codec
// of a tensor payload in the upper bits of byte 7 (net.compression); 6: gossip
// rounds complete without every node's sketch, and a gossip run's stop is
// agreed by kCut messages (a sketch of a gossip run carries no kStopRequest);
// 7: a sketch's tail carries the sender's step count (runtime/monitor.h),
// and a fresh start ends with kReady frames (every node starts together).
inline constexpr uint16_t kProtocolVersion = 7;
inline constexpr size_t kHeaderBytes = 72;
// Largest payload accepted: 1 GiB (a chunk, a sketch or a parameter range).
inline constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 30;

enum class Kind : uint8_t {
  kHello = 1,      // payload: HelloInfo; round = 0
  kParams = 2,     // start-up broadcast of the initial parameters; range of floats
  kRing = 3,       // ring all-reduce chunk; step says reduce-scatter / all-gather
  kGossip = 4,     // gossip snapshot chunk of this round's partner
  kSketch = 5,     // this node's sketch for the round (all floats, offset 0)
  kHeartbeat = 6,  // empty payload
  kBye = 7,        // empty payload; round = number of rounds the sender submitted
  // Membership (net/communicator.h, "Membership"): u64 payloads.
  kPropose = 8,    // coordinator -> members: [epoch, k, ids...]
  kAccept = 9,     // member -> coordinator: [epoch, done, submitted, joiner]
  kCommit = 10,    // coordinator -> members: [epoch, resume round, k, (id, done) x k]
  kResult = 11,    // a completed round's result for a member that lacks it; range of floats
  kState = 12,     // x̄ at the resume round for a joining node; range of floats
  // Parameter-server baselines (net/shard_server.h): the vector is sharded
  // over the nodes; offset/count are always the receiver's (push, fetch) or
  // the sender's (shard, ack) whole shard.
  kPush = 13,       // worker -> server: an update of the server's shard; round = push number
  kFetch = 14,      // worker -> server: empty payload; round = fetch number
  kShard = 15,     // server -> worker: the shard's values; round = fetch number answered,
                   // step = server version (updates applied when read)
  kAck = 16,       // server -> worker: empty payload; round = push number applied,
                   // step = server version after applying it
  kNodeSketch = 17,  // a node's CountSketch as it closes a round, to every other node;
                     // round = the round (0, 1, 2, ... per sender), offset 0
  // The stop agreement of a gossip run (net/communicator.h, "Coordinated
  // cut, gossip"): u64 payload [op, query, value, known], 4 values; op 1
  // ask (to the coordinator), 2 query (coordinator -> members), 3 answer
  // (value = the member's next round, known = a decided cut + 1 or 0), 4
  // cut (value = the cut round; every member passes it on once).
  kCut = 18,
  // Start-up (a fresh run's broadcast of the initial parameters): empty
  // payload, round 0. A node that has all of node 0's parameters sends it to
  // node 0; node 0, once every node has sent it, sends it to every node, and
  // each starts as it arrives: the nodes start training within a message's
  // latency of each other, not one broadcast apart.
  kReady = 19,
};
inline constexpr uint8_t kKindMax = 19;

// Why a frame was refused. Names (reject_name) are the keys of
// CommStats::rejected_by_reason.
enum class Reject : uint8_t {
  kNone = 0,
  kFrameCount,       // not [identity][header][payload]
  kHeaderSize,       // header frame not kHeaderBytes (truncated or padded)
  kBadMagic,
  kBadVersion,
  kHeaderChecksum,
  kBadKind,
  kBadFlags,         // reserved fields not zero
  kUnknownSender,    // sender id not a peer of this node
  kOversized,        // payload_bytes > kMaxPayloadBytes or count too large
  kLengthMismatch,   // payload frame length != payload_bytes, or != count * 4
  kRoundOutsideWindow,
  kRangeMismatch,    // step / chunk / offset / count not what the layout says
  kBadChecksum,      // payload hash mismatch
  kNonFinite,        // NaN or infinity in a float payload
  kDuplicate,        // this (round, step, chunk) was already received
  kUnexpected,       // valid frame that this node does not expect in its state
  kIdentityMismatch, // ZeroMQ routing id is not the one of the claimed sender
  kStaleEpoch,       // a frame of an older view (or of a node outside the view): dropped
  kBadCodec,         // unknown codec, a codec on a kind without tensors or not this run's,
                     // or an int8 payload with a negative scale or the code -128
  kCount
};
std::string_view reject_name(Reject r);

// Header flags. A bye may carry kByeFailed: its sender stops because of a
// failure (a lost peer, an error) rather than being stopped. A sketch may
// carry kStopRequest: its sender asks the cluster to stop at a common round
// boundary (a coordinated checkpoint, see runtime/averaging.h); ring runs
// only: a gossip run agrees on its cut with kCut messages.
constexpr uint8_t kByeFailed = 1;
constexpr uint8_t kStopRequest = 2;
// A hello may carry kHelloRunning: its sender is a member of a running view
// (the receiver then joins it rather than starting a fresh run).
constexpr uint8_t kHelloRunning = 4;

// How a tensor payload is encoded (net/codec.h): count values in
// encoded_bytes(codec, count) bytes.
enum class Codec : uint8_t { kNone = 0, kBf16 = 1, kInt8 = 2 };
inline constexpr uint8_t kCodecMax = 2;

struct Header {
  uint32_t magic = kMagic;
  uint16_t version = kProtocolVersion;
  Kind kind = Kind::kHeartbeat;
  uint8_t flags = 0;        // bits 0..3 on the wire
  Codec codec = Codec::kNone;  // bits 4..7 of byte 7
  uint32_t sender = 0;
  uint32_t step = 0;
  uint64_t round = 0;
  uint32_t chunk = 0;
  uint32_t epoch = 0;
  uint64_t offset = 0;
  uint64_t count = 0;
  uint64_t payload_bytes = 0;
  uint64_t payload_hash = 0;
  uint64_t header_hash = 0;  // filled by encode_header
};

// 64-bit hash of the header bytes (the XXH64 algorithm; own implementation).
uint64_t hash64(const void* data, size_t bytes, uint64_t seed = 0);

// Streaming 64-bit payload hash, xxhash-like but built for bandwidth: 64
// independent 32-bit lanes (XXH32 rounds over 256-byte stripes, lane l takes
// word l of each stripe; the compiler vectorizes them into four independent
// AVX-512 chains, AVX2/AVX-512 clones chosen at run time), folded with XXH64
// steps, then the tail (< 256 bytes) and the length, then avalanched. Feeding
// the bytes in any split gives the same value as payload_hash() over the whole.
class PayloadHasher {
 public:
  static constexpr size_t kLanes = 64;
  static constexpr size_t kStripeBytes = kLanes * sizeof(uint32_t);

  PayloadHasher();
  void update(const void* data, size_t bytes);
  // update() over count float32 values that also checks them, in the same
  // loads: false when one of them is NaN or infinite. update() and
  // update_finite() may be mixed when every update() fed whole floats
  // (a multiple of 4 bytes).
  bool update_finite(const float* data, size_t count);
  uint64_t finish() const;

 private:
  bool feed(const void* data, size_t bytes, bool check);
  uint32_t acc_[kLanes];
  unsigned char tail_[kStripeBytes];
  size_t tail_bytes_ = 0;
  uint64_t total_bytes_ = 0;
};
uint64_t payload_hash(const void* data, size_t bytes);

// Floats per block of the ring's fused add + hash loop: small enough that the
// second touch of a block hits L1.
inline constexpr size_t kBlockFloats = 4096;

// Writes h into out (kHeaderBytes), little-endian, computing header_hash.
void encode_header(const Header& h, unsigned char* out);

// Parses and validates the structure of a header frame: size, magic, version,
// header hash, kind, reserved fields, payload_bytes bound. Semantic checks
// (sender, round, range) are the receiver's.
Reject decode_header(const void* frame, size_t frame_bytes, Header* out);

// Payload frame against its header: length, payload_hash, and (for float
// kinds) every value finite — one pass over the payload, the same loads. A
// compressed payload is checked for its codec (check_encoded: finite values,
// a legal int8 scale and codes).
Reject check_payload(const Header& h, const void* payload, size_t payload_bytes);

// True when every one of the count floats is finite.
bool all_finite(const float* x, size_t count);

// True for the kinds whose payload is a range of float32.
inline bool carries_floats(Kind k) {
  return k == Kind::kParams || k == Kind::kRing || k == Kind::kGossip || k == Kind::kSketch ||
         k == Kind::kResult || k == Kind::kState || k == Kind::kPush || k == Kind::kShard ||
         k == Kind::kNodeSketch;
}

// The float kinds whose payload may be compressed (Header::codec).
inline bool carries_codec(Kind k) {
  return k == Kind::kRing || k == Kind::kGossip || k == Kind::kPush || k == Kind::kShard;
}

// The kinds whose payload is a list of u64 (the receiver checks its length).
inline bool carries_u64s(Kind k) {
  return k == Kind::kHello || k == Kind::kPropose || k == Kind::kAccept || k == Kind::kCommit || k == Kind::kCut;
}

}  // namespace tether::net
