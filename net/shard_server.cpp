#include "net/shard_server.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "net/communicator.h"
#include "net/net_check.h"

namespace tether::net {

namespace {
// Frames held before start-up finished: a peer that started first may push
// or fetch before this node has its initial parameters (bounded per peer by
// the requests a worker keeps outstanding).
constexpr size_t kEarlyPerPeer = 16;
}  // namespace

ShardRange shard_range(int k, int nodes, uint64_t count) {
  const uint64_t lo = count * uint64_t(k) / uint64_t(nodes);
  const uint64_t hi = count * uint64_t(k + 1) / uint64_t(nodes);
  return {lo, hi - lo};
}

ShardService::ShardService(int self, int nodes, size_t count, int max_pushes, uint64_t sketch_floats, Codec codec)
    : self_(self), nodes_(nodes), count_(count), max_pushes_(max_pushes), sketch_floats_(sketch_floats), codec_(codec) {
  TETHER_NET_CHECK(nodes >= 1 && self >= 0 && self < nodes, "self " << self << " of " << nodes);
  TETHER_NET_CHECK(max_pushes >= 1, "max_pushes " << max_pushes);
  for (int k = 0; k < nodes; ++k) ranges_.push_back(shard_range(k, nodes, count));  // k over the shards
  const size_t n = size_t(nodes);
  push_in_.assign(n, 0);
  fetch_in_.assign(n, 0);
  push_out_.assign(n, 0);
  fetch_out_.assign(n, 0);
  ack_next_.assign(n, 0);
  shard_next_.assign(n, 0);
  seen_version_.assign(n, 0);
  sketch_in_.assign(n, 0);
  unacked_.assign(n, 0);
  fetch_version_.assign(n, 0);
  fetched_.assign(count, 0.0f);
  if (codec_ != Codec::kNone) push_residual_.assign(count, 0.0f);
}

std::vector<float> ShardService::push_residual() const {
  std::lock_guard<std::mutex> lk(mu_);
  return push_residual_;
}

void ShardService::attach(Outbox* out, Post post) {
  out_ = out;
  post_ = std::move(post);
}

uint64_t ShardService::max_frame_bytes() const {
  uint64_t m = 0;
  for (const ShardRange& r : ranges_)  // r over the shards
    m = std::max({m, r.count * sizeof(float), encoded_bytes(codec_, r.count)});
  return std::max(m, sketch_floats_ * sizeof(float));
}

void ShardService::on_start(const float* params, size_t count) {
  TETHER_NET_CHECK(count == count_, "start with " << count << " floats, service of " << count_);
  const ShardRange& mine = ranges_[size_t(self_)];
  shard_.assign(params + mine.offset, params + mine.offset + mine.count);
  started_ = true;
  std::vector<Pending> early = std::move(early_);
  early_.clear();
  for (Pending& p : early) {  // in arrival order, so per peer in sequence
    const Reject r = check(p.h);
    if (r != Reject::kNone) {
      std::fprintf(stderr, "[tether.net node %d] refused an early frame from node %u: %s\n", self_, p.h.sender,
                   std::string(reject_name(r)).c_str());
      continue;
    }
    apply(p.h, p.payload);
  }
}

Reject ShardService::check(const Header& h) const {
  const auto peer = size_t(h.sender);
  if (h.kind == Kind::kNodeSketch) {  // not a request: the sender's own numbering
    if (sketch_floats_ == 0) return Reject::kUnexpected;
    if (h.step != 0 || h.chunk != 0 || h.offset != 0 || h.count != sketch_floats_) return Reject::kRangeMismatch;
    if (h.round < sketch_in_[peer]) return Reject::kDuplicate;
    if (h.round != sketch_in_[peer]) return Reject::kUnexpected;
    return Reject::kNone;
  }
  const bool to_me = h.kind == Kind::kPush || h.kind == Kind::kFetch;  // this node serves it
  if (h.step != 0 && to_me) return Reject::kRangeMismatch;
  if (h.chunk != 0) return Reject::kRangeMismatch;
  switch (h.kind) {
    case Kind::kPush:
    case Kind::kShard: {
      const ShardRange& r = ranges_[h.kind == Kind::kPush ? size_t(self_) : peer];
      if (h.offset != r.offset || h.count != r.count) return Reject::kRangeMismatch;
      if (h.codec != codec_) return Reject::kBadCodec;  // the hello checked that every node runs ours
      break;
    }
    case Kind::kFetch:
    case Kind::kAck:
      if (h.offset != 0 || h.count != 0) return Reject::kRangeMismatch;
      break;
    default:
      return Reject::kUnexpected;
  }
  if (!started_) return to_me ? Reject::kNone : Reject::kUnexpected;  // sequence checked at on_start
  uint64_t next = 0, limit = ~uint64_t{0};
  switch (h.kind) {
    case Kind::kPush: next = push_in_[peer]; break;
    case Kind::kFetch: next = fetch_in_[peer]; break;
    case Kind::kShard: next = shard_next_[peer]; limit = fetch_out_[peer]; break;
    case Kind::kAck: next = ack_next_[peer]; limit = push_out_[peer]; break;
    default: break;
  }
  if (h.round < next) return Reject::kDuplicate;
  if (h.round != next || h.round >= limit) return Reject::kUnexpected;  // a gap, or nothing asked
  if (!to_me && h.step < seen_version_[peer]) return Reject::kUnexpected;  // a server's version never goes back
  return Reject::kNone;
}

Reject ShardService::receive(const Header& h, zmq::message_t payload) {
  if (!started_) {
    if (early_.size() >= kEarlyPerPeer * size_t(nodes_)) return Reject::kUnexpected;
    early_.push_back({h, std::move(payload)});
    return Reject::kNone;
  }
  apply(h, payload);
  return Reject::kNone;
}

void ShardService::apply(const Header& h, zmq::message_t& payload) {
  const int peer = int(h.sender);
  const auto* values = static_cast<const float*>(payload.data());
  if (carries_codec(h.kind) && h.codec != Codec::kNone) {
    decoded_.resize(h.count);
    decode(h.codec, payload.data(), h.count, decoded_.data());
    values = decoded_.data();
  }
  switch (h.kind) {
    case Kind::kPush:
      ++push_in_[size_t(peer)];
      serve_push(peer, values);
      break;
    case Kind::kFetch:
      serve_fetch(peer, fetch_in_[size_t(peer)]++);
      break;
    case Kind::kShard:
      ++shard_next_[size_t(peer)];
      seen_version_[size_t(peer)] = h.step;
      on_shard(peer, h.step, values);
      break;
    case Kind::kAck:
      ++ack_next_[size_t(peer)];
      seen_version_[size_t(peer)] = h.step;
      on_ack(peer, h.step);
      break;
    case Kind::kNodeSketch: {
      ++sketch_in_[size_t(peer)];
      std::lock_guard<std::mutex> lk(mu_);
      if (!sketches_.empty() && h.round + kSketchRounds <= sketches_.rbegin()->first) break;  // too old to matter
      sketches_[h.round][peer].assign(values, values + h.count);
      while (sketches_.size() > kSketchRounds) sketches_.erase(sketches_.begin());
      break;
    }
    default:
      break;
  }
}

void ShardService::serve_push(int worker, const float* u) {
  const size_t n = shard_.size();
  for (size_t i = 0; i < n; ++i) shard_[i] += u[i];  // i over the shard
  TETHER_NET_CHECK(version_ != ~uint32_t{0}, "shard version overflow");
  ++version_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    version_seen_ = version_;
  }
  if (worker == self_) {
    on_ack(self_, version_);
    return;
  }
  Header h;
  h.kind = Kind::kAck;
  h.round = push_in_[size_t(worker)] - 1;
  h.step = version_;
  out_->send(worker, h, zmq::message_t(), nullptr);
}

void ShardService::serve_fetch(int worker, uint64_t seq) {
  if (worker == self_) {
    on_shard(self_, version_, shard_.data());
    return;
  }
  auto buf = std::make_shared<RoundBuffer>();
  buf->data = shard_;  // the values as read now; later pushes do not change what is sent
  Header h;
  h.kind = Kind::kShard;
  h.round = seq;
  h.step = version_;
  h.offset = ranges_[size_t(self_)].offset;
  h.count = shard_.size();
  if (codec_ != Codec::kNone) {  // a read: the decoded bits go to the worker, x̃ stays exact
    h.codec = codec_;
    zmq::message_t msg(encoded_bytes(codec_, shard_.size()));
    encode(codec_, shard_.data(), shard_.size(), msg.data(), nullptr);
    out_->send(worker, h, std::move(msg), nullptr);
    return;
  }
  out_->send(worker, h, zero_copy(buf, 0, buf->data.size()), nullptr);
}

void ShardService::on_ack(int server, uint32_t version) {
  std::lock_guard<std::mutex> lk(mu_);
  --unacked_[size_t(server)];
  // Updates the server applied after this node's last fetch of it, before
  // this push (the push itself is the version's last one).
  const uint32_t fetched = fetch_version_[size_t(server)];
  delay_.delay_sum += version > fetched ? double(version - fetched - 1) : 0.0;
  ++delay_.pushes;
  cv_.notify_all();
}

void ShardService::on_shard(int server, uint32_t version, const float* values) {
  std::lock_guard<std::mutex> lk(mu_);
  const ShardRange& r = ranges_[size_t(server)];
  if (r.count) std::memcpy(fetched_.data() + r.offset, values, r.count * sizeof(float));
  fetch_version_[size_t(server)] = version;
  --shards_missing_;
  cv_.notify_all();
}

void ShardService::start_push(const std::shared_ptr<RoundBuffer>& u) {
  for (int s = 0; s < nodes_; ++s) {  // s over the servers
    const ShardRange& r = ranges_[size_t(s)];
    if (s == self_) {
      serve_push(self_, u->data.data() + r.offset);
      continue;
    }
    Header h;
    h.kind = Kind::kPush;
    h.round = push_out_[size_t(s)]++;
    h.offset = r.offset;
    h.count = r.count;
    if (codec_ != Codec::kNone) {  // u + the residual goes out encoded; what it lost is kept
      zmq::message_t msg(encoded_bytes(codec_, r.count));
      {
        // the lock guards push_residual() readers only: released before the
        // send (an in-process outbox may deliver, and so ack, at once)
        std::lock_guard<std::mutex> lk(mu_);
        float* e = push_residual_.data() + r.offset;
        std::vector<float> v(u->data.begin() + long(r.offset), u->data.begin() + long(r.offset + r.count));
        for (uint64_t j = 0; j < r.count; ++j) v[j] += e[j];  // j over the slice
        decoded_.resize(r.count);
        encode(codec_, v.data(), r.count, msg.data(), decoded_.data());
        for (uint64_t j = 0; j < r.count; ++j) e[j] = v[j] - decoded_[j];  // j over the slice
      }
      h.codec = codec_;
      out_->send(s, h, std::move(msg), nullptr);
      continue;
    }
    out_->send(s, h, zero_copy(u, r.offset, r.count), nullptr);
  }
}

void ShardService::start_fetch() {
  for (int s = 0; s < nodes_; ++s) {  // s over the servers
    if (s == self_) {
      serve_fetch(self_, 0);
      continue;
    }
    Header h;
    h.kind = Kind::kFetch;
    h.round = fetch_out_[size_t(s)]++;
    out_->send(s, h, zmq::message_t(), nullptr);
  }
}

void ShardService::peer_left(int peer, bool failed) {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_ || gone_peer_ >= 0) return;
  gone_peer_ = peer;
  gone_failed_ = failed;
  cv_.notify_all();
}

void ShardService::close() {
  std::lock_guard<std::mutex> lk(mu_);
  closed_ = true;
}

void ShardService::wait(std::unique_lock<std::mutex>& lk, const std::function<bool()>& done, const Alive& alive,
                        int timeout_ms, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms));
  for (;;) {  // bounded by the deadline
    if (gone_peer_ >= 0 && !closed_) {
      const std::string why = "node " + std::to_string(gone_peer_) +
                              (gone_failed_ ? " stopped after a failure" : " left (bye)") + " while node " +
                              std::to_string(self_) + " still needs its shard (" + what + ")";
      throw PeerLost(gone_peer_, 0.0, why, !gone_failed_);
    }
    if (done()) return;
    if (std::chrono::steady_clock::now() > deadline) {
      throw NetError("node " + std::to_string(self_) + ": " + what + " did not finish within " +
                     std::to_string(timeout_ms) + " ms");
    }
    cv_.wait_for(lk, std::chrono::milliseconds(20));
    if (alive) {
      lk.unlock();
      alive();  // throws PeerLost for a silent peer
      lk.lock();
    }
  }
}

void ShardService::push(std::vector<float> u, const Alive& alive, int timeout_ms) {
  TETHER_NET_CHECK(u.size() == count_, "push of " << u.size() << " floats, expected " << count_);
  {
    std::unique_lock<std::mutex> lk(mu_);
    wait(lk, [&] { return *std::max_element(unacked_.begin(), unacked_.end()) < max_pushes_; }, alive, timeout_ms,
         "a push (servers acknowledging)");
    for (int& n : unacked_) ++n;  // one per server
  }
  auto buf = std::make_shared<RoundBuffer>();
  buf->data = std::move(u);
  post_([this, buf] { start_push(buf); });
}

void ShardService::fetch(float* dst, const Alive& alive, int timeout_ms) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    TETHER_NET_CHECK(shards_missing_ == 0, "fetch while another is in progress");
    shards_missing_ = nodes_;
  }
  post_([this] { start_fetch(); });
  std::unique_lock<std::mutex> lk(mu_);
  wait(lk, [&] { return shards_missing_ == 0; }, alive, timeout_ms, "a fetch of the shards");
  std::memcpy(dst, fetched_.data(), count_ * sizeof(float));
}

void ShardService::wait_pushes(const Alive& alive, int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  wait(lk, [&] { return *std::max_element(unacked_.begin(), unacked_.end()) == 0; }, alive, timeout_ms,
       "the servers acknowledging every push");
}

void ShardService::send_sketch(uint64_t round, std::vector<float> sketch) {
  TETHER_NET_CHECK(sketch.size() == sketch_floats_, "sketch of " << sketch.size() << " floats, expected " << sketch_floats_);
  auto buf = std::make_shared<RoundBuffer>();
  buf->data = std::move(sketch);
  {
    std::lock_guard<std::mutex> lk(mu_);
    sketches_[round][self_] = buf->data;
    while (sketches_.size() > kSketchRounds) sketches_.erase(sketches_.begin());
  }
  post_([this, round, buf] {
    for (int p = 0; p < nodes_; ++p) {  // p over the other nodes
      if (p == self_) continue;
      Header h;
      h.kind = Kind::kNodeSketch;
      h.round = round;
      h.count = buf->data.size();
      out_->send(p, h, zero_copy(buf, 0, buf->data.size()), nullptr);
    }
  });
}

std::map<int, std::vector<float>> ShardService::sketches_of(uint64_t round) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = sketches_.find(round);
  if (it == sketches_.end() || it->second.size() != size_t(nodes_)) return {};
  return it->second;
}

ShardService::DelayStats ShardService::delay() const {
  std::lock_guard<std::mutex> lk(mu_);
  return delay_;
}

uint64_t ShardService::server_version() const {
  std::lock_guard<std::mutex> lk(mu_);
  return version_seen_;
}

}  // namespace tether::net
