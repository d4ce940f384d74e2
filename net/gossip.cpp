#include "net/gossip.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

#include "net/net_check.h"

namespace tether::net {

int gossip_partner(int node, uint64_t round, int nodes) {
  if (nodes <= 1) return -1;
  const auto un = static_cast<unsigned>(nodes);
  if (std::has_single_bit(un)) {
    const auto dims = static_cast<uint64_t>(std::countr_zero(un));  // log2 N
    return node ^ (1 << (round % dims));
  }
  const int players = nodes + (nodes % 2);  // M: even, a phantom player when N is odd
  const int t = static_cast<int>(round % static_cast<uint64_t>(players - 1));
  int partner;
  if (node == players - 1) {
    partner = t;
  } else if (node == t) {
    partner = players - 1;
  } else {
    partner = mod_nodes(2LL * t - node, players - 1);
  }
  return partner >= nodes ? -1 : partner;  // the phantom: a bye
}

Gossip::Gossip(int self, int nodes, size_t count, size_t chunk_bytes, Outbox* outbox)
    : self_(self),
      nodes_(nodes),
      count_(count),
      chunk_elems_(std::max<uint64_t>(1, chunk_bytes / sizeof(float))),
      chunks_(static_cast<uint32_t>((count + chunk_elems_ - 1) / chunk_elems_)),
      outbox_(outbox) {
  TETHER_NET_CHECK(nodes >= 1 && self >= 0 && self < nodes, "self " << self << " nodes " << nodes);
}

ChunkRange Gossip::chunk(uint32_t c) const {
  const uint64_t begin = c * chunk_elems_;
  return {begin, std::min(chunk_elems_, count_ - begin)};
}

Reject Gossip::check(const Header& h) const {
  if (h.kind != Kind::kGossip) return Reject::kUnexpected;
  if (gossip_partner(self_, h.round, nodes_) != static_cast<int>(h.sender))
    return Reject::kUnexpected;
  if (h.step != 0 || h.chunk >= chunks_) return Reject::kRangeMismatch;
  const ChunkRange r = chunk(h.chunk);
  if (h.offset != r.offset || h.count != r.count) return Reject::kRangeMismatch;
  return Reject::kNone;
}

Gossip::RoundState& Gossip::state(uint64_t round) {
  auto [it, fresh] = rounds_.try_emplace(round);
  if (fresh) {
    it->second.received.resize(chunks_);
    it->second.seen.assign(chunks_, 0);
  }
  return it->second;
}

void Gossip::submit(uint64_t round, std::shared_ptr<RoundBuffer> data) {
  TETHER_NET_CHECK(data->data.size() == count_,
                   "round " << round << " has " << data->data.size() << " floats, expected "
                            << count_);
  RoundState& st = state(round);
  TETHER_NET_CHECK(!st.buf, "round " << round << " submitted twice");
  st.buf = std::move(data);
  const int partner = gossip_partner(self_, round, nodes_);
  if (partner < 0) return;
  if (!all_finite(st.buf->data.data(), count_))  // the partner would refuse it
    throw std::invalid_argument("gossip round " + std::to_string(round) +
                                ": non-finite value in this node's snapshot");
  for (uint32_t c = 0; c < chunks_; ++c) {  // c over the snapshot's chunks
    const ChunkRange r = chunk(c);
    Header h;
    h.kind = Kind::kGossip;
    h.round = round;
    h.chunk = c;
    h.offset = r.offset;
    h.count = r.count;
    outbox_->send(partner, h, zero_copy(st.buf, r.offset, r.count), nullptr);
  }
}

Reject Gossip::receive(const Header& h, zmq::message_t payload) {
  RoundState& st = state(h.round);
  if (st.seen[h.chunk]) return Reject::kDuplicate;
  st.seen[h.chunk] = 1;
  st.received[h.chunk] = std::move(payload);
  ++st.received_count;
  return Reject::kNone;
}

bool Gossip::finished(uint64_t round) const {
  auto it = rounds_.find(round);
  if (it == rounds_.end() || !it->second.buf) return false;
  if (it->second.buf->in_flight.load() != 0) return false;
  return gossip_partner(self_, round, nodes_) < 0 || it->second.received_count == chunks_;
}

std::vector<float> Gossip::take(uint64_t round, int* partner) {
  auto it = rounds_.find(round);
  TETHER_NET_CHECK(it != rounds_.end() && finished(round), "round " << round << " not finished");
  RoundState& st = it->second;
  const int p = gossip_partner(self_, round, nodes_);
  if (p >= 0) {
    for (uint32_t c = 0; c < chunks_; ++c) {  // c over the snapshot's chunks
      const ChunkRange r = chunk(c);
      const float* in = static_cast<const float*>(st.received[c].data());
      float* own = st.buf->data.data() + r.offset;
      for (uint64_t j = 0; j < r.count; ++j) own[j] = (own[j] + in[j]) * 0.5f;
    }
  }
  std::vector<float> out = std::move(st.buf->data);
  rounds_.erase(it);
  if (partner) *partner = p;
  return out;
}

}  // namespace tether::net
