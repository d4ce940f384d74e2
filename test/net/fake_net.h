// FakeNet — an in-process network for the mixers' tests: messages are
// copied (as TCP would) and delivered one at a time in a random order, each
// validated as a receiver does (header encoded and decoded, check, payload
// check); tensor bytes are counted per sender, as encoded and as float32.
#pragma once

#include <deque>
#include <memory>
#include <random>
#include <vector>

#include <doctest/doctest.h>
#include <zmq.hpp>

#include "net/codec.h"
#include "net/mixer.h"
#include "net/wire.h"

namespace tether::net::testing {

// An Outbox of node `self` that stamps each frame as a Transport does
// (sender, payload length and hash) and counts the tensor bytes it sends,
// as encoded and as float32; send() decides where the frame goes.
struct CountingOutbox : Outbox {
  int self = 0;
  uint64_t bytes = 0, raw_bytes = 0;

 protected:
  void stamp(Header& h, const zmq::message_t& payload, const uint64_t* known) {
    h.sender = static_cast<uint32_t>(self);
    h.payload_bytes = payload.size();
    h.payload_hash = known ? *known : payload_hash(payload.data(), payload.size());
    if (carries_codec(h.kind)) {
      bytes += payload.size();
      raw_bytes += h.count * sizeof(float);
    }
  }
};

struct FakeNet {
  struct Msg {
    int to;
    Header h;
    zmq::message_t payload;
  };
  struct Box : CountingOutbox {
    FakeNet* net;
    void send(int peer, Header h, zmq::message_t payload, const uint64_t* known) override {
      stamp(h, payload, known);
      net->queue.push_back({peer, h, zmq::message_t(payload.data(), payload.size())});
    }
  };
  std::deque<Msg> queue;
  std::vector<std::unique_ptr<Box>> boxes;
  Box* box(int self) {
    boxes.push_back(std::make_unique<Box>());
    boxes.back()->net = this;
    boxes.back()->self = self;
    return boxes.back().get();
  }
  // Delivers everything queued (and what it causes) to mixers[to].
  void deliver(const std::vector<Mixer*>& mixers, std::mt19937& rng) {
    while (!queue.empty()) {  // bounded: every ring/gossip frame causes at most one more
      const size_t pick = rng() % queue.size();
      Msg m = std::move(queue[pick]);
      queue.erase(queue.begin() + static_cast<long>(pick));
      // the wire: header encoded and decoded, payload checked
      unsigned char hb[kHeaderBytes];
      encode_header(m.h, hb);
      Header d;
      REQUIRE(decode_header(hb, kHeaderBytes, &d) == Reject::kNone);
      Mixer& dst = *mixers[static_cast<size_t>(m.to)];
      REQUIRE(dst.check(d) == Reject::kNone);
      REQUIRE(check_payload(d, m.payload.data(), m.payload.size()) == Reject::kNone);
      REQUIRE(dst.receive(d, std::move(m.payload)) == Reject::kNone);
    }
  }
};

}  // namespace tether::net::testing
