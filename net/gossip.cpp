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

Gossip::Gossip(int self, int nodes, size_t count, size_t chunk_bytes, Outbox* outbox,
               uint64_t first_round, uint64_t keep_rounds, Codec codec)
    : self_(self),
      keep_rounds_(keep_rounds),
      count_(count),
      chunk_elems_(std::max<uint64_t>(1, chunk_bytes / sizeof(float))),
      chunks_(static_cast<uint32_t>((count + chunk_elems_ - 1) / chunk_elems_)),
      outbox_(outbox),
      codec_(codec),
      next_send_(first_round),
      latest_applied_(first_round) {
  TETHER_NET_CHECK(nodes >= 1 && self >= 0 && self < nodes, "self " << self << " nodes " << nodes);
  if (codec_ != Codec::kNone) residual_.assign(count_, 0.0f);
  Segment all;
  for (int i = 0; i < nodes; ++i) all.members.push_back(i);  // i over the configured nodes
  all.live = all.members;
  segments_.push_back(std::move(all));
}

int Gossip::partner(uint64_t round) const {
  auto seg = std::upper_bound(segments_.begin(), segments_.end(), round,
                              [](uint64_t r, const Segment& s) { return r < s.from; });
  if (seg == segments_.begin()) return -1;  // before the first segment: never submitted
  --seg;
  const auto me = std::find(seg->members.begin(), seg->members.end(), self_);
  if (me == seg->members.end()) return -1;
  const int rank = gossip_partner(static_cast<int>(me - seg->members.begin()), round,
                                  static_cast<int>(seg->members.size()));
  if (rank < 0) return -1;
  const int id = seg->members[static_cast<size_t>(rank)];
  return std::binary_search(seg->live.begin(), seg->live.end(), id) ? id : -1;
}

void Gossip::set_view(const std::vector<int>& members, uint64_t from) {
  TETHER_NET_CHECK(std::is_sorted(members.begin(), members.end()) &&
                       std::binary_search(members.begin(), members.end(), self_),
                   "gossip view without node " << self_);
  for (Segment& seg : segments_) {  // a member that left: its exchanges are cancelled
    std::vector<int> live;
    std::set_intersection(seg.live.begin(), seg.live.end(), members.begin(), members.end(),
                          std::back_inserter(live));
    seg.live = std::move(live);
  }
  std::erase_if(segments_, [from](const Segment& seg) { return seg.from >= from; });
  segments_.push_back({from, members, members});
  // Rounds from `from` on start again under the new schedule.
  rounds_.erase(rounds_.lower_bound(from), rounds_.end());
  corrections_.erase(corrections_.lower_bound(from), corrections_.end());
  next_send_ = std::min(next_send_, from);
  advance();  // rounds below `from` whose partner left finish now
}

ChunkRange Gossip::chunk(uint32_t c) const {
  const uint64_t begin = c * chunk_elems_;
  return {begin, std::min(chunk_elems_, count_ - begin)};
}

Reject Gossip::check(const Header& h) const {
  if (h.kind != Kind::kGossip) return Reject::kUnexpected;
  if (h.codec != codec_) return Reject::kBadCodec;  // the hello checked that every node runs ours
  if (partner(h.round) != static_cast<int>(h.sender)) return Reject::kUnexpected;
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

void Gossip::submit(uint64_t round, std::shared_ptr<RoundBuffer> data, uint64_t applied) {
  TETHER_NET_CHECK(data->data.size() == count_,
                   "round " << round << " has " << data->data.size() << " floats, expected "
                            << count_);
  TETHER_NET_CHECK(round >= next_send_ && applied <= round,
                   "round " << round << " submitted with " << applied << " applied, next to send "
                            << next_send_);
  RoundState& st = state(round);
  TETHER_NET_CHECK(!st.buf, "round " << round << " submitted twice");
  st.buf = std::move(data);
  st.applied = applied;
  latest_applied_ = std::max(latest_applied_, applied);
  advance();
}

void Gossip::advance() {
  // Each pass sends a round or finishes one (rounds_ is bounded by the
  // communicator's window), so the loop ends.
  while (send_next() || finish_ready()) {
  }
  // A correction is needed until every round still to be sent was closed
  // after the caller applied it (applied only grows with the round).
  uint64_t keep_from = latest_applied_;
  auto it = rounds_.find(next_send_);
  if (it != rounds_.end() && it->second.buf) keep_from = std::min(keep_from, it->second.applied);
  keep_from = std::min(keep_from, next_send_ > keep_rounds_ ? next_send_ - keep_rounds_ : 0);
  corrections_.erase(corrections_.begin(), corrections_.lower_bound(keep_from));
}

bool Gossip::send_next() {
  if (half_sent_) return false;  // test hook: this node is about to crash
  auto it = rounds_.find(next_send_);
  if (it == rounds_.end() || !it->second.buf || it->second.sent) return false;
  RoundState& st = it->second;
  const uint64_t round = next_send_;
  for (uint64_t k = st.applied; k < round; ++k)  // k over the rounds in flight at close
    if (!corrections_.count(k)) return false;     // round `round` waits for round k
  float* m = st.buf->data.data();
  for (uint64_t k = st.applied; k < round; ++k) {  // complete the snapshot
    const float* c = corrections_.at(k).data();
    for (uint64_t j = 0; j < count_; ++j) m[j] += c[j];
  }
  st.sent = true;
  ++next_send_;
  const int to = partner(round);
  if (to < 0) return true;
  if (!all_finite(m, count_))  // the partner would refuse it
    throw std::invalid_argument("gossip round " + std::to_string(round) +
                                ": non-finite value in this node's snapshot");
  uint32_t send_chunks = chunks_;
  if (test_half_send && chunks_ >= 2 && test_half_send(round)) {
    send_chunks = chunks_ / 2;
    half_sent_ = round;
  }
  if (codec_ != Codec::kNone) {
    // m + the residual goes out encoded; the snapshot becomes its decoded
    // bits (what the partner sees, and the own side of the correction); the
    // new residual is what the encoding lost
    std::vector<float> v(m, m + count_);
    for (uint64_t j = 0; j < count_; ++j) v[j] += residual_[j];  // j over the snapshot
    for (uint32_t c = 0; c < send_chunks; ++c) {  // c over the snapshot's chunks
      const ChunkRange r = chunk(c);
      zmq::message_t msg(encoded_bytes(codec_, r.count));
      encode(codec_, v.data() + r.offset, r.count, msg.data(), m + r.offset);
      if (!all_finite(m + r.offset, r.count))
        throw std::invalid_argument("gossip round " + std::to_string(round) + ": a value overflows " +
                                    std::string(codec_name(codec_)));
      for (uint64_t j = r.offset; j < r.offset + r.count; ++j) residual_[j] = v[j] - m[j];  // j over the chunk
      Header h;
      h.kind = Kind::kGossip;
      h.codec = codec_;
      h.round = round;
      h.chunk = c;
      h.offset = r.offset;
      h.count = r.count;
      outbox_->send(to, h, std::move(msg), nullptr);
    }
    return true;
  }
  for (uint32_t c = 0; c < send_chunks; ++c) {  // c over the snapshot's chunks
    const ChunkRange r = chunk(c);
    Header h;
    h.kind = Kind::kGossip;
    h.round = round;
    h.chunk = c;
    h.offset = r.offset;
    h.count = r.count;
    outbox_->send(to, h, zero_copy(st.buf, r.offset, r.count), nullptr);
  }
  return true;
}

bool Gossip::finish_ready() {
  bool any = false;
  for (auto f = rounds_.begin(); f != rounds_.end() && f->first < next_send_;) {  // sent rounds
    RoundState& st = f->second;
    const int with = partner(f->first);
    if (with >= 0 && st.received_count != chunks_) {
      ++f;
      continue;
    }
    std::vector<float> c(count_, 0.0f);
    std::vector<float> dec;
    if (with >= 0) {
      for (uint32_t k = 0; k < chunks_; ++k) {  // k over the snapshot's chunks
        const ChunkRange r = chunk(k);
        const float* in = static_cast<const float*>(st.received[k].data());
        if (codec_ != Codec::kNone) {
          dec.resize(r.count);
          decode(codec_, st.received[k].data(), r.count, dec.data());
          in = dec.data();
        }
        const float* own = st.buf->data.data() + r.offset;
        float* out = c.data() + r.offset;
        for (uint64_t j = 0; j < r.count; ++j) out[j] = (in[j] - own[j]) * 0.5f;
      }
    }
    corrections_[f->first] = std::move(c);
    f = rounds_.erase(f);  // ZeroMQ may still hold the snapshot: its shared_ptr keeps it alive
    any = true;
  }
  return any;
}

Reject Gossip::receive(const Header& h, zmq::message_t payload) {
  if (h.round < next_send_ && !rounds_.count(h.round)) return Reject::kDuplicate;  // finished here
  RoundState& st = state(h.round);
  if (st.seen[h.chunk]) return Reject::kDuplicate;
  st.seen[h.chunk] = 1;
  st.received[h.chunk] = std::move(payload);
  ++st.received_count;
  if (st.received_count == chunks_ && st.sent) advance();
  return Reject::kNone;
}

bool Gossip::finished(uint64_t round) const { return corrections_.count(round) != 0; }

std::vector<float> Gossip::take(uint64_t round, int* partner) {
  auto it = corrections_.find(round);
  TETHER_NET_CHECK(it != corrections_.end(), "round " << round << " not finished");
  if (partner) *partner = this->partner(round);
  return it->second;  // a copy: later snapshots may still need it (see submit)
}

}  // namespace tether::net
