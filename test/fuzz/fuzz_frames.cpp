// Fuzzes what a node does with a peer's frame: decode_header and
// check_payload (net/wire.h), then the mixers' check() and receive() on live
// round state — a ring all-reduce over a view's members or a gossip mixer
// of a small cluster with rounds open, fed frames interleaved with this
// node's own submits, the validation order of Communicator::handle (sender,
// view epoch and membership for ring runs, window, mixer check, payload,
// alignment, receive). Frames of every kind (the membership, gossip's stop
// agreement and the baselines' kinds too) go through decode_header and
// check_payload; only ring
// and gossip frames reach a handler here (membership and the shard servers
// are the communicator's, not fuzzed by this harness).
//
// Input: 5 set-up bytes, then operations until the input ends.
//   set-up: byte 0: mixer (bit 0: gossip), nodes 2..5 (bits 1..2), nodes
//           left out of the ring's view (bits 3..7, by id; never self);
//           self; count 0..47 floats; chunk 1..8 floats (bits 0..2) and the
//           view's epoch 1..32 (bits 3..7, ring runs); window 1..3
//   op % 4 == 0: the trainer submits its next round (when the window allows)
//                and takes every finished round
//   otherwise:   a frame: 72 header bytes, a u16 payload length (mod 513),
//                the payload; op bits 2..5 repair fields so that deep paths
//                are reached: 2 magic and version, 3 payload_bytes, 4
//                payload_hash, 5 header_hash (last)
// Properties checked (a crash when broken): a header that decodes encodes
// back to the same bytes; every frame a mixer sends passes the receiver's
// decode_header and check_payload (its hash and finite values), goes to the
// right peer (ring: the next member of the view) and stays inside the
// vector; a payload that passes check_payload has the length its header
// claims (every kind); take() hands back count floats.
#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "net/gossip.h"
#include "net/ring_allreduce.h"
#include "net/wire.h"
#include "test/fuzz/fuzz_util.h"

using namespace tether::net;
using tether::fuzz::Input;

namespace {

// What the mixers send: checked as the receiving node would check it.
class CheckingOutbox final : public Outbox {
 public:
  // ring: over `members` (sorted node ids, self among them) in view `epoch`
  CheckingOutbox(int self, int nodes, uint64_t count, bool ring, std::vector<int> members, uint32_t epoch)
      : self_(self), nodes_(nodes), count_(count), ring_(ring), members_(std::move(members)), epoch_(epoch) {}
  uint64_t round = 0;  // set by the caller around submit/receive: the round being worked on
  void send(int peer, Header h, zmq::message_t payload, const uint64_t* known_hash) override {
    // what Transport::send fills in
    h.magic = kMagic;
    h.version = kProtocolVersion;
    h.sender = static_cast<uint32_t>(self_);
    h.epoch = epoch_;  // Transport::set_epoch
    h.payload_bytes = payload.size();
    h.payload_hash = known_hash ? *known_hash : payload_hash(payload.data(), payload.size());
    unsigned char frame[kHeaderBytes];
    encode_header(h, frame);
    Header back;
    FUZZ_CHECK(decode_header(frame, sizeof frame, &back) == Reject::kNone, "a sent header does not decode");
    FUZZ_CHECK(check_payload(back, payload.data(), payload.size()) == Reject::kNone,
               "a sent payload fails the receiver's check (hash or finite values): " +
                   std::string(reject_name(check_payload(back, payload.data(), payload.size()))));
    FUZZ_CHECK(peer >= 0 && peer < nodes_ && peer != self_, "sent to peer " + std::to_string(peer));
    if (ring_) {
      const auto me = std::find(members_.begin(), members_.end(), self_);
      const int rank = static_cast<int>(me - members_.begin()), n = static_cast<int>(members_.size());
      FUZZ_CHECK(peer == members_[static_cast<size_t>(mod_nodes(rank + 1, n))],
                 "ring chunk not sent to the next member of the view");
    } else {
      FUZZ_CHECK(peer == gossip_partner(self_, h.round, nodes_), "gossip chunk not sent to the partner");
    }
    FUZZ_CHECK(h.count > 0 && h.offset + h.count <= count_, "sent range outside the vector");
    ++sent;
  }
  uint64_t sent = 0;

 private:
  int self_, nodes_;
  uint64_t count_;
  bool ring_;
  std::vector<int> members_;
  uint32_t epoch_;
};

std::shared_ptr<RoundBuffer> own_vector(uint64_t round, int self, uint64_t count) {
  auto buf = std::make_shared<RoundBuffer>();
  buf->data.resize(count);
  for (uint64_t j = 0; j < count; ++j)  // j over the vector: small finite values
    buf->data[j] = 0.25f * static_cast<float>(j % 13) - static_cast<float>(self) + 0.5f * static_cast<float>(round % 7);
  return buf;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t setup = in.byte();
  const bool gossip = (setup & 1) != 0;
  const int nodes = 2 + (setup >> 1) % 4;
  const int self = in.byte() % nodes;
  const uint64_t count = in.byte() % 48;
  const uint8_t chunk_epoch = in.byte();
  const size_t chunk_bytes = (1 + chunk_epoch % 8) * sizeof(float);
  const uint64_t window = 1 + in.byte() % 3;
  // Ring runs have membership (Communicator::membership): the ring runs over
  // the view's members, and frames of another view are not the mixer's. A
  // gossip run has neither (its frames carry the epoch of the first view).
  const uint32_t epoch = gossip ? 1 : 1 + (chunk_epoch >> 3);
  std::vector<int> members;
  for (int id = 0; id < nodes; ++id)  // id over the configured nodes, sorted
    if (gossip || id == self || ((setup >> (3 + id)) & 1) == 0) members.push_back(id);
  auto member = [&](int id) { return std::binary_search(members.begin(), members.end(), id); };

  CheckingOutbox outbox(self, nodes, count, !gossip, members, epoch);
  std::unique_ptr<Mixer> mixer;
  if (gossip) {
    mixer = std::make_unique<Gossip>(self, nodes, count, chunk_bytes, &outbox);
  } else {
    mixer = std::make_unique<RingAllreduce>(self, members, count, chunk_bytes, &outbox);
  }
  const Kind kind = gossip ? Kind::kGossip : Kind::kRing;
  uint64_t done = 0, next_submit = 0;  // Communicator's done_ and next_submit_

  // The trainer's side: submit the next round if the window allows, then
  // deliver finished rounds in order (Communicator::submit / try_complete).
  auto submit_and_take = [&] {
    if (next_submit - done < window) {
      mixer->submit(next_submit, own_vector(next_submit, self, count), done);
      ++next_submit;
    }
    while (done < next_submit && mixer->finished(done)) {
      int partner = -2;
      const std::vector<float> out = mixer->take(done, &partner);
      FUZZ_CHECK(out.size() == count, "round result of " + std::to_string(out.size()) + " floats");
      FUZZ_CHECK(gossip ? partner == gossip_partner(self, done, nodes) : partner == -1, "wrong partner");
      ++done;
    }
  };

  // Peer frames may make a partial sum overflow: the ring then refuses to send
  // a non-finite value and throws std::invalid_argument naming the round (the
  // node stops with that message). Anything else escaping is a bug.
  tether::fuzz::refused<std::invalid_argument>([&] {
    submit_and_take();  // a round is open before the first frame
    while (!in.empty()) {
      const uint8_t op = in.byte();
      if (op % 4 == 0) {
        submit_and_take();
        continue;
      }
      std::vector<uint8_t> header = in.bytes(kHeaderBytes);
      const size_t payload_len = in.take<uint16_t>() % 513;
      std::vector<uint8_t> payload = in.bytes(payload_len);
      if (header.size() == kHeaderBytes) {  // repairs, so that checks past the checksums are reached
        auto put = [&](size_t at, uint64_t v, size_t n) {
          for (size_t b = 0; b < n; ++b) header[at + b] = static_cast<uint8_t>(v >> (8 * b));
        };
        if (op & 4) {
          put(0, kMagic, 4);
          put(4, kProtocolVersion, 2);
        }
        if (op & 8) put(48, payload.size(), 8);
        if (op & 16) put(56, payload_hash(payload.data(), payload.size()), 8);
        if (op & 32) put(64, hash64(header.data(), 64), 8);
      }
      Header h;
      if (decode_header(header.data(), header.size(), &h) != Reject::kNone) continue;
      unsigned char again[kHeaderBytes];
      encode_header(h, again);
      FUZZ_CHECK(std::memcmp(again, header.data(), kHeaderBytes) == 0, "decode then encode changed the header");
      // Every kind's payload check (u64 lists, float ranges, empty); a
      // payload that passes is the length the header claims.
      const Reject payload_ok = check_payload(h, payload.data(), payload.size());
      FUZZ_CHECK(payload_ok != Reject::kNone || payload.size() == h.payload_bytes, "payload of the wrong length passed");
      // Communicator::handle, ring and gossip frames
      if (h.sender >= static_cast<uint32_t>(nodes) || static_cast<int>(h.sender) == self) continue;
      if (h.kind != kind) continue;
      if (!gossip) {  // Communicator::check_epoch
        if (h.epoch < epoch) continue;                        // kStaleEpoch
        if (h.epoch > epoch) continue;                        // buffered until that view (not modelled)
        if (!member(static_cast<int>(h.sender))) continue;    // kStaleEpoch
      }
      // Communicator::handle's window: a gossip partner may be further ahead
      // (no barrier: Communicator::ahead_limit)
      const uint64_t ahead = gossip ? 2 * window + 2 * static_cast<uint64_t>(nodes) : 2 * window;
      if (h.round < done || h.round - done >= ahead) continue;
      if (mixer->check(h) != Reject::kNone) continue;
      FUZZ_CHECK(h.offset + h.count <= count, "check() passed a range outside the vector");
      if (payload_ok != Reject::kNone) continue;
      zmq::message_t msg(payload.data(), payload.size());  // a fresh ZeroMQ buffer, as received
      if (reinterpret_cast<uintptr_t>(msg.data()) % alignof(float) != 0) msg = zmq::message_t(msg.data(), msg.size());
      mixer->receive(h, std::move(msg));
      while (done < next_submit && mixer->finished(done)) {
        int partner = -2;
        FUZZ_CHECK(mixer->take(done, &partner).size() == count, "round result of the wrong size");
        ++done;
      }
    }
  });
  return 0;
}
