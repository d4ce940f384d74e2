#include "net/ring_allreduce.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "net/net_check.h"

namespace tether::net {

namespace {

// in[j] = in[j] + own[j], or where this node owns the segment the mean
// (in[j] + own[j]) / divisor, also stored to out unless out is null: the
// reduce-scatter's arithmetic on one block.
__attribute__((target_clones("avx512f", "avx2", "default"))) void add_block(
    float* __restrict in, const float* __restrict own, float* __restrict out, size_t n, bool owner,
    float divisor) {
  if (owner && out) {
    for (size_t j = 0; j < n; ++j) {   // j < n: the block
      const float m = (in[j] + own[j]) / divisor;
      in[j] = m;
      out[j] = m;
    }
  } else if (owner) {
    for (size_t j = 0; j < n; ++j) in[j] = (in[j] + own[j]) / divisor;   // j < n: the block
  } else {
    for (size_t j = 0; j < n; ++j) in[j] += own[j];   // j < n: the block
  }
}

}  // namespace

namespace {
std::vector<int> iota_ids(int nodes) {
  std::vector<int> ids(static_cast<size_t>(std::max(nodes, 0)));
  for (int i = 0; i < nodes; ++i) ids[static_cast<size_t>(i)] = i;   // i over the nodes
  return ids;
}
int rank_of(const std::vector<int>& ids, int id) {
  auto it = std::find(ids.begin(), ids.end(), id);
  return it == ids.end() ? -1 : static_cast<int>(it - ids.begin());
}
}  // namespace

RingAllreduce::RingAllreduce(int self, int nodes, size_t count, size_t chunk_bytes, Outbox* outbox,
                             Codec codec)
    : RingAllreduce(self, iota_ids(nodes), count, chunk_bytes, outbox, codec) {}

RingAllreduce::RingAllreduce(int self, std::vector<int> members, size_t count, size_t chunk_bytes,
                             Outbox* outbox, Codec codec)
    : ids_(std::move(members)),
      self_(rank_of(ids_, self)),
      nodes_(static_cast<int>(ids_.size())),
      succ_(nodes_ > 0 ? mod_nodes(self_ + 1, nodes_) : 0),
      pred_(nodes_ > 0 ? mod_nodes(self_ - 1, nodes_) : 0),
      count_(count),
      chunk_elems_(std::max<uint64_t>(1, chunk_bytes / sizeof(float))),
      outbox_(outbox),
      codec_(codec) {
  TETHER_NET_CHECK(nodes_ >= 1 && self_ >= 0 && std::is_sorted(ids_.begin(), ids_.end()),
                   "node " << self << " in a ring of " << nodes_ << " members (sorted, self among them)");
  for (int s = 0; s < nodes_; ++s) {  // s over the N segments
    max_chunks_ = std::max(max_chunks_, chunks_in(s));
    total_chunks_ += chunks_in(s);
  }
}

uint64_t RingAllreduce::segment_begin(int s) const {
  return count_ * static_cast<uint64_t>(s) / static_cast<uint64_t>(nodes_);
}
uint64_t RingAllreduce::segment_end(int s) const { return segment_begin(s + 1); }
uint32_t RingAllreduce::chunks_in(int s) const {
  const uint64_t len = segment_end(s) - segment_begin(s);
  return static_cast<uint32_t>((len + chunk_elems_ - 1) / chunk_elems_);
}
ChunkRange RingAllreduce::chunk(int s, uint32_t c) const {
  const uint64_t begin = segment_begin(s) + c * chunk_elems_;
  return {begin, std::min(chunk_elems_, segment_end(s) - begin)};
}
int RingAllreduce::segment_of_step(uint32_t step) const {
  const auto n1 = static_cast<uint32_t>(nodes_ - 1);
  if (step < n1) return mod_nodes(static_cast<long long>(pred_) - step, nodes_);  // reduce-scatter
  return mod_nodes(static_cast<long long>(pred_) + 1 - (step - n1), nodes_);      // all-gather
}

Reject RingAllreduce::check(const Header& h) const {
  if (h.kind != Kind::kRing || nodes_ == 1) return Reject::kUnexpected;
  if (h.codec != codec_) return Reject::kBadCodec;  // the hello checked that every node runs ours
  if (static_cast<int>(h.sender) != ids_[static_cast<size_t>(pred_)]) return Reject::kUnexpected;
  if (h.step >= static_cast<uint32_t>(2 * (nodes_ - 1))) return Reject::kRangeMismatch;
  const int seg = segment_of_step(h.step);
  if (h.chunk >= chunks_in(seg)) return Reject::kRangeMismatch;
  const ChunkRange r = chunk(seg, h.chunk);
  if (h.offset != r.offset || h.count != r.count) return Reject::kRangeMismatch;
  return Reject::kNone;
}

RingAllreduce::RoundState& RingAllreduce::state(uint64_t round) {
  auto [it, fresh] = rounds_.try_emplace(round);
  if (fresh) it->second.seen.assign(static_cast<size_t>(2 * (nodes_ - 1)) * max_chunks_, 0);
  return it->second;
}

void RingAllreduce::send(uint64_t round, uint32_t step, int seg, uint32_t c,
                         zmq::message_t payload, const uint64_t* known_hash) {
  const ChunkRange r = chunk(seg, c);
  Header h;
  h.kind = Kind::kRing;
  h.round = round;
  h.step = step;
  h.chunk = c;
  h.offset = r.offset;
  h.count = r.count;
  h.codec = codec_;
  outbox_->send(ids_[static_cast<size_t>(succ_)], h, std::move(payload), known_hash);
}

zmq::message_t RingAllreduce::encode_chunk(uint64_t round, const float* x, uint64_t n, float* decoded,
                                           float* loss, float weight) {
  zmq::message_t msg(encoded_bytes(codec_, n));
  if (decoded == x) {  // the loss needs x after decoded overwrote it
    decoded_.assign(x, x + n);
    x = decoded_.data();
  }
  encode(codec_, x, n, msg.data(), decoded);
  if (!all_finite(decoded, n))  // bf16 rounds a value past its largest one to infinity
    throw std::invalid_argument("ring round " + std::to_string(round) + ": a value overflows " +
                                std::string(codec_name(codec_)));
  for (uint64_t j = 0; j < n; ++j) loss[j] += weight * (x[j] - decoded[j]);  // j < n: the chunk
  return msg;
}

void RingAllreduce::submit(uint64_t round, std::shared_ptr<RoundBuffer> data,
                           uint64_t /*applied: the mean does not depend on it*/) {
  TETHER_NET_CHECK(data->data.size() == count_,
                   "round " << round << " has " << data->data.size() << " floats, expected "
                            << count_);
  RoundState& st = state(round);
  TETHER_NET_CHECK(!st.buf, "round " << round << " submitted twice");
  st.buf = std::move(data);
  st.out = take_spare();  // recycled: count_ floats already, no page faults
  st.out.resize(count_);
  if (codec_ != Codec::kNone && nodes_ > 1) st.loss.assign(count_, 0.0f);
  if (nodes_ == 1) {  // the mean of one vector is itself (x / 1 is exact)
    std::copy(st.buf->data.begin(), st.buf->data.end(), st.out.begin());
    st.chunks_done = total_chunks_;
    return;
  }
  // reduce-scatter step 0: own segment, zero-copy from the submitted buffer.
  // Hashed and checked for finite values in one pass: peers would refuse a
  // non-finite frame and the run would stop, so fail here, naming the cause.
  for (uint32_t c = 0; c < chunks_in(self_); ++c) {  // c over this segment's chunks
    const ChunkRange r = chunk(self_, c);
    if (codec_ != Codec::kNone) {  // encoded: a new message, the loss kept
      const float* x = st.buf->data.data() + r.offset;
      if (!all_finite(x, r.count))
        throw std::invalid_argument("ring round " + std::to_string(round) +
                                    ": non-finite value in this node's vector");
      scratch_.resize(r.count);
      zmq::message_t msg = encode_chunk(round, x, r.count, scratch_.data(), st.loss.data() + r.offset, 1.0f);
      send(round, 0, self_, c, std::move(msg), nullptr);
      continue;
    }
    PayloadHasher hasher;
    if (!hasher.update_finite(st.buf->data.data() + r.offset, r.count))
      throw std::invalid_argument("ring round " + std::to_string(round) +
                                  ": non-finite value in this node's vector");
    const uint64_t hash = hasher.finish();
    send(round, 0, self_, c, zero_copy(st.buf, r.offset, r.count), &hash);
  }
  std::vector<Pending> pending = std::move(st.pending);
  for (Pending& p : pending) apply(round, st, p.h, std::move(p.payload));
}

Reject RingAllreduce::receive(const Header& h, zmq::message_t payload) {
  RoundState& st = state(h.round);
  uint8_t& seen = st.seen[static_cast<size_t>(h.step) * max_chunks_ + h.chunk];
  if (seen) return Reject::kDuplicate;
  seen = 1;
  if (!st.buf) {
    st.pending.push_back({h, std::move(payload)});
  } else {
    apply(h.round, st, h, std::move(payload));
  }
  return Reject::kNone;
}

void RingAllreduce::apply(uint64_t round, RoundState& st, const Header& h,
                          zmq::message_t payload) {
  const auto n1 = static_cast<uint32_t>(nodes_ - 1);
  const int seg = segment_of_step(h.step);
  float* in = static_cast<float*>(payload.data());
  const float* own = st.buf->data.data() + h.offset;  // this node's values, as submitted
  float* out = st.out.data() + h.offset;               // the mean, once final
  const uint64_t n = h.count;
  if (codec_ != Codec::kNone) {
    if (h.step < n1) {  // reduce-scatter: decode, sum in fp32, encode again
      const bool owner = h.step + 1 == n1;
      scratch_.resize(n);
      decode(codec_, payload.data(), n, scratch_.data());
      add_block(scratch_.data(), own, nullptr, n, owner, static_cast<float>(nodes_));
      if (!all_finite(scratch_.data(), n))
        throw std::invalid_argument("ring round " + std::to_string(round) +
                                    ": non-finite partial sum (this node's vector or overflow)");
      float* loss = st.loss.data() + h.offset;
      zmq::message_t msg;
      if (owner) {  // the mean, encoded once: out takes the decoded bits every node will have
        msg = encode_chunk(round, scratch_.data(), n, out, loss, static_cast<float>(nodes_));
        ++st.chunks_done;
      } else {
        decoded_.resize(n);
        msg = encode_chunk(round, scratch_.data(), n, decoded_.data(), loss, 1.0f);
      }
      send(round, owner ? n1 : h.step + 1, seg, h.chunk, std::move(msg), nullptr);
      return;
    }
    decode(codec_, payload.data(), n, out);  // all-gather: the owner's message, final bits
    ++st.chunks_done;
    if (h.step + 1 < 2 * n1) {
      const uint64_t hash = h.payload_hash;  // forwarded unchanged, hash already verified
      send(round, h.step + 1, seg, h.chunk, std::move(payload), &hash);
    }
    return;
  }
  if (h.step < n1) {  // reduce-scatter: partial sum of segment seg arrives
    // add own values in place, block by block; the hash of what goes out and
    // its finite check (one pass, PayloadHasher::update_finite) run on each
    // block while it is in L1
    const bool owner = h.step + 1 == n1;  // the chain of segment seg ends here
    const auto divisor = static_cast<float>(nodes_);
    PayloadHasher hasher;
    bool finite = true;
    for (uint64_t b = 0; b < n; b += kBlockFloats) {  // b over the blocks
      const uint64_t e = std::min<uint64_t>(n, b + kBlockFloats);
      add_block(in + b, own + b, owner ? out + b : nullptr, e - b, owner, divisor);
      finite &= hasher.update_finite(in + b, e - b);
    }
    if (!finite)
      throw std::invalid_argument("ring round " + std::to_string(round) +
                                  ": non-finite partial sum (this node's vector or overflow)");
    const uint64_t hash = hasher.finish();
    if (owner) {
      ++st.chunks_done;
    }
    // owner: the mean starts the all-gather; otherwise the sum moves on
    send(round, owner ? n1 : h.step + 1, seg, h.chunk, std::move(payload), &hash);
    return;
  }
  // all-gather: the mean of segment seg, final bits
  std::memcpy(out, in, n * sizeof(float));
  ++st.chunks_done;
  if (h.step + 1 < 2 * n1) {
    const uint64_t hash = h.payload_hash;  // forwarded unchanged, hash already verified
    send(round, h.step + 1, seg, h.chunk, std::move(payload), &hash);
  }
}

bool RingAllreduce::finished(uint64_t round) const {
  auto it = rounds_.find(round);
  if (it == rounds_.end() || !it->second.buf) return false;
  return it->second.chunks_done == total_chunks_ && it->second.buf->in_flight.load() == 0;
}

std::vector<float> RingAllreduce::take(uint64_t round, int* partner) {
  auto it = rounds_.find(round);
  TETHER_NET_CHECK(it != rounds_.end() && finished(round), "round " << round << " not finished");
  std::vector<float> out = std::move(it->second.out);
  rounds_.erase(it);
  if (partner) *partner = -1;
  return out;
}

}  // namespace tether::net

namespace tether::net {

void RingAllreduce::recycle(std::vector<float> v) {
  if (v.size() == count_ && count_ > 0 && spare_.size() < kMaxSpare) spare_.push_back(std::move(v));
}

std::vector<float> RingAllreduce::take_spare() {
  if (spare_.empty()) return {};
  std::vector<float> v = std::move(spare_.back());
  spare_.pop_back();
  return v;
}

std::vector<float> RingAllreduce::take_loss(uint64_t round) {
  auto it = rounds_.find(round);
  if (it == rounds_.end()) return {};
  return std::move(it->second.loss);
}

}  // namespace tether::net
