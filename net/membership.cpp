// The communicator's membership (ring runs): views, view changes without a
// master, round reconciliation, joins with state transfer, quorum. The
// protocol is described at the top of net/communicator.h; everything here
// runs on the I/O thread.
//
// Messages (u64 payloads, validated field by field before anything changes):
//   propose  coordinator -> members   [epoch, k, id_1 < ... < id_k]   (sender = id_1)
//   accept   member -> coordinator    [epoch, done, submitted, joiner]
//   commit   coordinator -> members   [epoch, R, k, (id, done) x k]   (sender = lowest id)
//            also sent by any member to a node outside its view (a notice:
//            the receiver learns it was left out and raises Excluded)
//   result   holder -> member lacking a finished round: the round's result,
//            chunked like the start-up parameters (round = r)
//   state    lowest member -> joiner: x̄ at the resume round (round = R)
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "net/communicator.h"
#include "net/net_check.h"
#include "net/ring_allreduce.h"
#include "net/transport.h"

#include <boost/asio/post.hpp>

namespace tether::net {

namespace asio = boost::asio;

namespace {

constexpr uint64_t kJoinerDone = ~uint64_t{0};
// Frames of views not committed here yet, buffered until the commit.
constexpr size_t kMaxFutureFrames = 1 << 16;

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

std::string ids_text(const std::vector<int>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return "{" + s + "}";
}

std::vector<uint64_t> u64s(const zmq::message_t& m) {
  std::vector<uint64_t> v(m.size() / sizeof(uint64_t));
  if (!v.empty()) std::memcpy(v.data(), m.data(), v.size() * sizeof(uint64_t));
  return v;
}

}  // namespace

bool Communicator::View::has(int id) const {
  return std::binary_search(members.begin(), members.end(), id);
}

// The parameter-server baselines (a service) keep the old rule: a dead node
// takes its shard with it, so the others stop naming it.
bool Communicator::membership() const { return nodes_ > 1 && !opts_.service; }

std::unique_ptr<Mixer> Communicator::make_ring() {
  // A gossip run's ring carries only its exact rounds (the closing average): never compressed.
  const Codec codec = opts_.mixer == MixerKind::kRing ? opts_.codec : Codec::kNone;
  auto ring = std::make_unique<RingAllreduce>(opts_.self, view_.members, count_, opts_.chunk_bytes,
                                              transport_.get(), codec);
  return ring;
}

// A round to the mixer of the current view (first run or re-run).
void Communicator::to_mixer(uint64_t round, Slot& slot, std::shared_ptr<RoundBuffer> data) {
  slot.in_mixer = true;
  mixer_for(slot)->submit(round, std::move(data), slot.applied);
}

std::vector<int> Communicator::alive_members() const {
  std::vector<int> alive;
  for (int p = 0; p < nodes_; ++p) {  // p over the configured nodes
    const bool member = view_.has(p) || std::find(joiners_.begin(), joiners_.end(), p) != joiners_.end();
    if (member && (p == opts_.self || !peers_[static_cast<size_t>(p)].lost)) alive.push_back(p);
  }
  return alive;
}

void Communicator::push_event(ViewEvent e) {
  std::fprintf(stderr, "[tether.net node %d] view %u: members %s, resume round %" PRIu64 " (%s; %.0f ms)\n",
               opts_.self, e.epoch, ids_text(e.members).c_str(), e.resume_round, e.reason.c_str(), e.ms);
  std::lock_guard<std::mutex> lk(mu_);
  events_.push_back(std::move(e));
}

std::vector<ViewEvent> Communicator::take_events() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<ViewEvent> out;
  out.swap(events_);
  return out;
}

void Communicator::crash(const char* where) {
  asio::post(io_, [this, where] { crash_now(where); });
}

void Communicator::crash_now(const char* where, int linger_ms) {
  std::fprintf(stderr, "[tether.net node %d] test crash at %s\n", opts_.self, where);
  phase_ = Phase::kDone;
  if (transport_ && linger_ms > 0) transport_->release_held();
  if (transport_) transport_->close(linger_ms);
  io_.stop();
  fail(std::make_exception_ptr(TestCrash("node " + std::to_string(opts_.self) + " crashed (test hook at " + where + ")")));
}

// A member (or joiner) is taken for dead: its socket is reset (nothing stale
// reaches a later incarnation), and the coordinator forms a view without it.
void Communicator::suspect(int peer, const std::string& why) {
  PeerState& ps = peers_[static_cast<size_t>(peer)];
  if (ps.lost) return;
  ps.lost = true;
  ps.hello = false;
  std::fprintf(stderr, "[tether.net node %d] %s\n", opts_.self, why.c_str());
  {
    std::lock_guard<std::mutex> lk(mu_);
    lost_.push_back(peer);
  }
  transport_->reset_peer(peer);  // also frees what ZeroMQ queued for it
  joiners_.erase(std::remove(joiners_.begin(), joiners_.end(), peer), joiners_.end());
  if (!view_.has(peer)) return;
  if (!changing_) {
    changing_ = true;
    change_started_ = Clock::now();
    change_reason_ = why;
  } else if (change_reason_.size() < 1024) {
    change_reason_ += "; then " + why;  // a second failure during the change (the coordinator died, ...)
  }
  maybe_change_view();
}

// The coordinator (the lowest live id) proposes a view when a member is
// suspected or a node asks to join; the others wait for its proposal.
void Communicator::maybe_change_view() {
  // A stopping member (its rounds done, its bye out, waiting for the
  // others') still takes part: it may hold the last rounds a member lacks.
  if (!membership() || joining_ || (phase_ != Phase::kRunning && phase_ != Phase::kStopping)) return;
  if (proposing_) return;  // one at a time; its deadline retries
  bool need = !joiners_.empty();
  for (int m : view_.members) need = need || (m != opts_.self && peers_[static_cast<size_t>(m)].lost);
  if (!need) return;
  const std::vector<int> alive = alive_members();
  // The coordinator: the lowest live member. A joiner cannot coordinate, even
  // with a lower id (a restarted node 0 joins a view that node 1 runs).
  const auto coordinator = std::find_if(alive.begin(), alive.end(), [this](int p) { return view_.has(p); });
  if (coordinator == alive.end() || *coordinator != opts_.self) return;
  if (2 * alive.size() <= static_cast<size_t>(nodes_)) return;  // no majority: check_quorum waits
  propose(alive);
}

void Communicator::propose(std::vector<int> members) {
  Proposal p;
  p.epoch = std::max(promised_, view_.epoch) + 1;
  p.members = std::move(members);
  promised_ = p.epoch;
  if (!changing_) {
    changing_ = true;
    change_started_ = Clock::now();
    change_reason_ = joiners_.empty() ? "view change" : "node " + std::to_string(joiners_.front()) + " joined";
  }
  p.accepts[opts_.self] = {done_, submitted_io_, false};
  std::vector<uint64_t> msg = {p.epoch, p.members.size()};
  for (int m : p.members) msg.push_back(static_cast<uint64_t>(m));
  for (int m : p.members) {  // m over the proposed members
    if (m == opts_.self) continue;
    Header h;
    h.kind = Kind::kPropose;
    transport_->send(m, h, zmq::message_t(msg.data(), msg.size() * sizeof(uint64_t)), nullptr);
  }
  const uint32_t epoch = p.epoch;
  proposing_ = std::move(p);
  const int timeout = opts_.view_timeout_ms > 0 ? opts_.view_timeout_ms : 2 * opts_.peer_timeout_ms;
  view_timer_.expires_after(std::chrono::milliseconds(timeout));
  view_timer_.async_wait([this, epoch](const boost::system::error_code& ec) {
    if (!ec) view_deadline(epoch);
  });
  if (proposing_->accepts.size() == proposing_->members.size()) commit();
}

// The proposal of `epoch` did not gather every answer in time: its silent
// members are suspected, and the coordinator proposes again without them.
void Communicator::view_deadline(uint32_t epoch) {
  if (!proposing_ || proposing_->epoch != epoch || phase_ == Phase::kDone) return;
  std::vector<int> silent;
  for (int m : proposing_->members)
    if (!proposing_->accepts.count(m)) silent.push_back(m);
  proposing_.reset();
  for (int m : silent) suspect(m, "node " + std::to_string(m) + " did not answer view proposal " + std::to_string(epoch));
  maybe_change_view();
}

void Communicator::commit() {
  Proposal p = std::move(*proposing_);
  proposing_.reset();
  view_timer_.cancel();
  if (opts_.test_crash_at && opts_.test_crash_at("commit", p.epoch)) {
    crash_now("commit");
    return;
  }
  uint64_t resume = 0;
  std::map<int, uint64_t> done;
  for (const auto& [id, a] : p.accepts) {
    done[id] = a.joiner ? kJoinerDone : a.done;
    if (!a.joiner) resume = std::max(resume, a.done);
  }
  std::vector<uint64_t> msg = {p.epoch, resume, p.members.size()};
  for (const auto& [id, d] : done) {
    msg.push_back(static_cast<uint64_t>(id));
    msg.push_back(d);
  }
  for (int m : p.members) {  // m over the members
    if (m == opts_.self) continue;
    Header h;
    h.kind = Kind::kCommit;
    transport_->send(m, h, zmq::message_t(msg.data(), msg.size() * sizeof(uint64_t)), nullptr);
  }
  install(p.epoch, p.members, resume, done);
}

// Every member applies the same commit: the new ring, reconciliation of the
// rounds below R, the rounds from R on re-run, x̄ streamed to joiners.
void Communicator::install(uint32_t epoch, std::vector<int> members, uint64_t resume,
                           const std::map<int, uint64_t>& done) {
  const bool was_joining = joining_;
  if (phase_ == Phase::kStarting && !was_joining) become_running();  // a resumed late start's follower
  view_.epoch = epoch;
  view_.members = std::move(members);
  promised_ = std::max(promised_, epoch);
  changing_ = false;
  proposing_.reset();
  transport_->set_epoch(epoch);
  // The rounds from the resume round run again over the new members: their
  // time-out counts from here. (A member that took the proposal without
  // having timed the stalled round out itself kept the old start, and at its
  // next tick took the new view's members for stalled before their frames of
  // the re-run could come: seen in the stalled-trainer cluster test, which
  // then lost a second member and its quorum.)
  progress_at_ = Clock::now();
  for (int m : view_.members) {
    joiners_.erase(std::remove(joiners_.begin(), joiners_.end(), m), joiners_.end());
    PeerState& ps = peers_[static_cast<size_t>(m)];
    if (m != opts_.self && ps.lost) {  // a joiner that was suspected earlier
      ps.lost = false;
      ps.closed = false;
    }
    if (m != opts_.self) {
      ps.hello = true;
      ps.last_seen = Clock::now();
    }
  }
  // Configured nodes outside the view that never said hello here (a late
  // start's missing nodes): nothing stale queued for them (start-up hellos,
  // heartbeats) reaches them when they start; they say hello and join.
  for (int p = 0; p < nodes_; ++p) {  // p over the configured nodes
    PeerState& ps = peers_[static_cast<size_t>(p)];
    if (p == opts_.self || view_.has(p) || ps.hello || ps.lost) continue;
    ps.lost = true;
    transport_->reset_peer(p);
  }
  ring_ = make_ring();
  resume_round_ = resume;
  transferred_bytes_ = 0;
  ViewEvent ev;
  ev.epoch = epoch;
  ev.members = view_.members;
  ev.resume_round = resume;
  ev.ms = change_started_ == Clock::time_point{} ? 0.0 : ms_since(change_started_);
  ev.reason = change_reason_.empty() ? "view change" : change_reason_;
  change_started_ = {};
  change_reason_.clear();

  if (was_joining) {
    // Start at R with x̄ from the lowest member that does not join.
    done_ = submitted_io_ = resume;
    state_source_ = -1;
    for (const auto& [id, d] : done)
      if (d != kJoinerDone && state_source_ < 0) state_source_ = id;
    state_.assign(count_, 0.0f);
    state_received_ = 0;
    state_seen_.assign(chunks_of(count_), 0);
    // A late start's follower is in the run from its start: not a joiner.
    ev.joined = !start_follower_;
    if (!start_follower_) ev.reason = "joined";
    slots_.clear();   // whatever arrived before it knew the view
    pending_event_ = ev;
    replay_future();
    if (count_ == 0) {  // nothing to stream
      joining_ = false;
      anchor_io_.clear();
      std::lock_guard<std::mutex> lk(mu_);
      join_round_ = resume;
      join_done_ = !start_follower_;
      started_ = true;
      cv_.notify_all();
    }
    return;
  }
  // Rounds below R that this node has not finished: the lowest member that
  // finished each sends its result (gossip: only exact rounds, the closing
  // average; its other rounds finish under the schedule they were sent with).
  // Rounds from R on: re-run in this view.
  for (uint64_t r = done_; r < resume; ++r) {  // r over the rounds complete elsewhere
    if (gossip_ && !(slots_.count(r) && slots_[r].exact)) continue;
    Slot& slot = slots_[r];
    slot.transfer = true;
    slot.holder = -1;
    for (const auto& [id, d] : done)
      if (d != kJoinerDone && d > r && slot.holder < 0) slot.holder = id;
    slot.result.assign(count_, 0.0f);
    slot.result_chunks = 0;
    slot.result_seen.assign(chunks_of(count_), 0);
  }
  for (const auto& [id, d] : done) {  // rounds this node holds and a member lacks
    if (id == opts_.self || d == kJoinerDone) continue;
    for (uint64_t r = d; r < std::min(done_, resume); ++r) {  // r over the rounds it lacks
      if (gossip_ && !kept_.count(r)) continue;  // gossip keeps (and hands over) exact rounds only
      int holder = -1;
      for (const auto& [h, hd] : done)
        if (hd != kJoinerDone && hd > r && holder < 0) holder = h;
      if (holder == opts_.self) send_kept_result(id, r);
    }
  }
  if (gossip_) {
    install_gossip(resume);
    pending_event_ = ev;
    replay_future();
    try_complete();
    return;
  }
  for (auto& [r, slot] : slots_) {  // rounds from R on: their sketches and vectors again
    if (r < resume) continue;
    slot.sketches.clear();  // every member sends its sketch again in this view
    if (!slot.submitted) continue;
    resend_sketch(r, slot);
    // a copy: the first run's frames may still hold the retained buffer
    to_mixer(r, slot, make_buffer(slot.retained->data));
  }
  // Joiners: the lowest member that does not join streams x̄ at R.
  state_to_.clear();
  int source = -1;
  for (const auto& [id, d] : done)
    if (d != kJoinerDone && source < 0) source = id;
  for (const auto& [id, d] : done)
    if (d == kJoinerDone && source == opts_.self) state_to_.push_back(id);
  pending_event_ = ev;
  replay_future();
  try_complete();
}

// Gossip has no shared anchor: each member finishes the rounds below R under
// the schedule they were sent with (an exchange with a node that left is
// cancelled), and the rounds from R on start again under the view's schedule
// from the snapshots as submitted. An exact round (the closing average) runs
// on the new ring.
void Communicator::install_gossip(uint64_t resume) {
  resumed_at_[view_.epoch] = resume;
  gossip_->set_view(view_.members, resume);
  // Sketches are not sent again: they gate no gossip round, and a member's
  // sketch of a round is the same in every view (check_epoch takes those of
  // an earlier view).
  for (auto& [r, slot] : slots_) {  // r over the rounds open here, ascending
    if (r >= resume) slot.in_mixer = false;
    if (slot.exact && r < resume) slot.in_mixer = false;  // the ring it ran on is gone
    if (!slot.submitted || slot.in_mixer || slot.transfer) continue;  // transfer: its result comes from a holder
    to_mixer(r, slot, make_buffer(slot.retained->data));
  }
  cut_on_view();
}

// A round re-run in a new view: this node's sketch to every member again.
void Communicator::resend_sketch(uint64_t round, const Slot& slot) {
  for (int m : view_.members) {
    if (m == opts_.self) continue;
    Header h;
    h.kind = Kind::kSketch;
    h.flags = slot.own_stop ? kStopRequest : 0;
    h.round = round;
    h.count = slot.own_sketch->data.size();
    transport_->send(m, h, zero_copy(slot.own_sketch, 0, slot.own_sketch->data.size()), nullptr);
  }
}

void Communicator::send_kept_result(int to, uint64_t round) {
  auto it = kept_.find(round);
  if (it == kept_.end()) {
    std::fprintf(stderr, "[tether.net node %d] cannot send round %" PRIu64 " to node %d: no longer kept\n",
                 opts_.self, round, to);
    return;
  }
  send_chunks(to, Kind::kResult, round, *it->second);
}

// A vector of count_ floats to `to`, chunked like the start-up parameters.
void Communicator::send_chunks(int to, Kind kind, uint64_t round, const std::vector<float>& v, uint64_t limit,
                               bool corrupt) {
  auto buf = make_buffer(v);
  for (uint64_t c = 0; c < std::min(limit, chunks_of(count_)); ++c) {  // c over the chunks
    Header h;
    h.kind = kind;
    h.round = round;
    h.chunk = static_cast<uint32_t>(c);
    h.offset = c * chunk_elems();
    h.count = std::min<uint64_t>(chunk_elems(), count_ - h.offset);
    const uint64_t wrong = payload_hash(buf->data.data() + h.offset, h.count * sizeof(float)) ^ 1;
    transport_->send(to, h, zero_copy(buf, h.offset, h.count), corrupt && c == 0 ? &wrong : nullptr);
  }
}

void Communicator::send_state(int to) {
  if (opts_.test_crash_at && opts_.test_crash_at("state", resume_round_)) {
    send_chunks(to, Kind::kState, resume_round_, anchor_io_, chunks_of(count_) / 2);
    crash_now("state");
    return;
  }
  const bool corrupt = opts_.test_crash_at && opts_.test_crash_at("corrupt-state", resume_round_);
  send_chunks(to, Kind::kState, resume_round_, anchor_io_, UINT64_MAX, corrupt);
  std::fprintf(stderr, "[tether.net node %d] streaming x̄ at round %" PRIu64 " to node %d (%" PRIu64 " bytes)\n",
               opts_.self, resume_round_, to, count_ * sizeof(float));
}

// A round finished here: keep its result (a member may lack it after a view
// change), advance x̄, and report a view change once its resume round is reached.
void Communicator::keep_result(uint64_t round, std::shared_ptr<std::vector<float>> mixed, bool exact) {
  if (!membership() || (gossip_ && !exact)) return;  // gossip rounds: no shared anchor, nothing to hand over
  kept_[round] = std::move(mixed);
  while (kept_.size() > static_cast<size_t>(opts_.window) + 2) {
    // The trainer let go of it (the usual case, rounds later): storage for
    // a later result. Otherwise its last holder frees it.
    std::shared_ptr<std::vector<float>>& old = kept_.begin()->second;
    if (old.use_count() == 1) ring_->recycle(std::move(*old));
    kept_.erase(kept_.begin());
  }
}

namespace {
// dst += src over a whole model every round (x̄'s update): cloned so that it
// runs at memory speed, not one scalar add at a time (perf: 3.6 % of a 44 MB
// all-reduce's samples before).
__attribute__((target_clones("avx512f", "avx2", "default"))) void add_into(float* __restrict dst,
                                                                        const float* __restrict src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] += src[i];  // i < n: the model
}
}  // namespace

void Communicator::advance_anchor(uint64_t round, bool exact) {
  // x̄ follows the ring's rounds (an exact round is an average, not a delta)
  if (!membership() || exact || gossip_) return;  // gossip: no shared anchor
  auto it = kept_.find(round);
  if (it == kept_.end()) return;
  const std::vector<float>& mixed = *it->second;
  add_into(anchor_io_.data(), mixed.data(), std::min(anchor_io_.size(), mixed.size()));
}

void Communicator::check_quorum(Clock::time_point now) {
  if (!membership() || joining_ || phase_ != Phase::kRunning) return;
  const std::vector<int> alive = alive_members();
  if (2 * alive.size() > static_cast<size_t>(nodes_)) {
    if (no_quorum_)
      std::fprintf(stderr, "[tether.net node %d] a majority is back: %s\n", opts_.self, ids_text(alive).c_str());
    no_quorum_ = false;
    return;
  }
  std::vector<int> unreachable;
  for (int p = 0; p < nodes_; ++p)  // p over the configured nodes
    if (std::find(alive.begin(), alive.end(), p) == alive.end()) unreachable.push_back(p);
  if (!no_quorum_) {
    no_quorum_ = true;
    no_quorum_since_ = now;
    std::fprintf(stderr,
                 "[tether.net node %d] no majority: %zu of %d nodes reachable (%s), cannot reach %s; training "
                 "waits up to %d ms (net.quorum_wait_ms) for them to return\n",
                 opts_.self, alive.size(), nodes_, ids_text(alive).c_str(), ids_text(unreachable).c_str(),
                 opts_.quorum_wait_ms);
    return;
  }
  const double waited = std::chrono::duration<double, std::milli>(now - no_quorum_since_).count();
  if (waited < opts_.quorum_wait_ms) return;
  std::ostringstream os;
  os << "node " << opts_.self << ": no majority of the " << nodes_ << " configured nodes for " << static_cast<long long>(waited)
     << " ms (net.quorum_wait_ms " << opts_.quorum_wait_ms << "): cannot reach ";
  for (size_t i = 0; i < unreachable.size(); ++i) os << (i ? ", " : "") << peer_name(unreachable[i]);
  phase_ = Phase::kStopping;  // never trains on a minority view
  fail(std::make_exception_ptr(NoQuorum(unreachable, os.str())));
}

// A node outside this view sent us something: tell it (rate-limited) with a
// commit notice of the current view, which does not hold it.
void Communicator::notify_outside(int peer) {
  PeerState& ps = peers_[static_cast<size_t>(peer)];
  const Clock::time_point now = Clock::now();
  if (ps.notified_epoch == view_.epoch && now - ps.notified < std::chrono::seconds(1)) return;
  ps.notified = now;
  ps.notified_epoch = view_.epoch;
  std::vector<uint64_t> msg = {view_.epoch, resume_round_, view_.members.size()};
  for (int m : view_.members) {
    msg.push_back(static_cast<uint64_t>(m));
    msg.push_back(0);
  }
  Header h;
  h.kind = Kind::kCommit;
  transport_->send(peer, h, zmq::message_t(msg.data(), msg.size() * sizeof(uint64_t)), nullptr);
}

// Frames of the data plane (ring, sketch, result, state, and gossip's cut)
// carry the sender's view epoch: older ones are dropped; newer ones wait for
// the commit here.
Reject Communicator::check_epoch(const Header& h, std::vector<zmq::message_t>& parts, bool* buffered) {
  *buffered = false;
  if (!membership()) return Reject::kNone;
  const int peer = static_cast<int>(h.sender);
  if (h.epoch < view_.epoch) {
    // Gossip: an exchange (or sketch) of a round below the resume round of
    // every view since still counts; the schedule it was sent under holds.
    if (gossip_ && h.kind == Kind::kSketch && view_.has(peer)) return Reject::kNone;  // a member's, in any view
    if (gossip_ && h.kind == Kind::kGossip && view_.has(peer)) {
      uint64_t valid_below = UINT64_MAX;
      for (auto it = resumed_at_.upper_bound(h.epoch); it != resumed_at_.end(); ++it)
        valid_below = std::min(valid_below, it->second);
      if (h.round < valid_below) return Reject::kNone;
    }
    if (!view_.has(peer) && phase_ == Phase::kRunning) notify_outside(peer);
    return Reject::kStaleEpoch;
  }
  if (h.epoch > view_.epoch) {
    if (future_.size() >= kMaxFutureFrames ||
        future_bytes_ + parts[2].size() > (2 * static_cast<uint64_t>(opts_.window) + 4) * (count_ + 4096) * sizeof(float))
      return Reject::kRoundOutsideWindow;
    future_bytes_ += parts[2].size();
    Future f;
    f.h = h;
    f.conn_peer = msg_peer_;
    for (auto& m : parts) f.parts.push_back(std::move(m));
    future_.push_back(std::move(f));
    *buffered = true;
    return Reject::kNone;
  }
  if (!view_.has(peer)) return Reject::kStaleEpoch;
  return Reject::kNone;
}

void Communicator::replay_future() {
  std::deque<Future> keep;
  std::deque<Future> todo;
  todo.swap(future_);
  future_bytes_ = 0;
  const int now_peer = msg_peer_;  // the frame being handled (a commit) goes on after the replay
  for (Future& f : todo) {
    if (f.h.epoch > view_.epoch) {
      future_bytes_ += f.parts[2].size();
      keep.push_back(std::move(f));
      continue;
    }
    msg_peer_ = f.conn_peer;  // whose connection it came on, not the commit's
    const Reject r = handle(f.h, f.parts);
    if (r != Reject::kNone) reject(r, &f.h);
  }
  msg_peer_ = now_peer;
  for (Future& f : keep) future_.push_back(std::move(f));
}

Reject Communicator::handle_membership(const Header& h, std::vector<zmq::message_t>& parts) {
  const int peer = static_cast<int>(h.sender);
  zmq::message_t& payload = parts[2];
  if (!membership()) return Reject::kUnexpected;
  switch (h.kind) {
    case Kind::kPropose: {
      if (h.payload_bytes < 3 * sizeof(uint64_t) || h.payload_bytes % sizeof(uint64_t) != 0 ||
          h.payload_bytes > (2 + static_cast<uint64_t>(nodes_)) * sizeof(uint64_t))
        return Reject::kLengthMismatch;
      if (Reject r = check_payload(h, payload.data(), payload.size()); r != Reject::kNone) return r;
      const std::vector<uint64_t> v = u64s(payload);
      const uint64_t k = v[1];
      if (k + 2 != v.size() || k == 0 || v[0] > UINT32_MAX) return Reject::kRangeMismatch;
      std::vector<int> members;
      for (uint64_t i = 0; i < k; ++i) {  // i over the proposed ids: sorted, configured
        if (v[2 + i] >= static_cast<uint64_t>(nodes_) || (i > 0 && v[2 + i] <= v[1 + i])) return Reject::kRangeMismatch;
        members.push_back(static_cast<int>(v[2 + i]));
      }
      // The coordinator is the lowest member that does not join: a proposal
      // names its members, the commit says which of them join (checked there).
      if (!std::binary_search(members.begin(), members.end(), peer)) return Reject::kRangeMismatch;
      const auto epoch = static_cast<uint32_t>(v[0]);
      if (epoch <= promised_) return Reject::kStaleEpoch;  // answered a newer one already
      if (!std::binary_search(members.begin(), members.end(), opts_.self)) {
        if (!joining_ && phase_ == Phase::kRunning)
          fail(std::make_exception_ptr(Excluded(epoch, "node " + std::to_string(opts_.self) + ": view " +
                                                           std::to_string(epoch) + " " + ids_text(members) +
                                                           " was proposed without this node")));
        return Reject::kNone;
      }
      if (phase_ == Phase::kStarting && !joining_ && !start_follower_ && !gossip_) {
        // A late start (Communicator::late_start): the proposer starts the
        // run without nodes that are not there; this node takes the view
        // while it starts. A fresh run takes x̄ (the proposer's start
        // parameters) as a joiner would; a resumed one keeps its own state.
        start_follower_ = true;
        joining_ = opts_.start_step == 0;
        late_timer_.cancel();
        std::fprintf(stderr, "[tether.net node %d] node %d starts the run in view %u %s without the nodes not there\n",
                     opts_.self, peer, epoch, ids_text(members).c_str());
      }
      if (phase_ != Phase::kRunning && phase_ != Phase::kStopping && !joining_ && !start_follower_)
        return Reject::kUnexpected;
      promised_ = epoch;
      if (proposing_ && peer < opts_.self) {  // a lower id coordinates
        proposing_.reset();
        view_timer_.cancel();
      }
      if (!changing_) {
        changing_ = true;
        change_started_ = Clock::now();
        // Which node noticed first is a matter of timing: say what changes.
        change_reason_ = "proposed by node " + std::to_string(peer) + ": view " + std::to_string(epoch);
        for (int m : view_.members)  // m over the current members
          if (!std::binary_search(members.begin(), members.end(), m))
            change_reason_ += " without " + peer_name(m);
        for (int m : members)  // m over the proposed members
          if (!view_.has(m)) change_reason_ += " with node " + std::to_string(m) + " joining";
      }
      peers_[static_cast<size_t>(peer)].last_seen = Clock::now();
      std::vector<uint64_t> ans = {epoch, done_, submitted_io_, joining_ ? 1u : 0u};
      Header a;
      a.kind = Kind::kAccept;
      transport_->send(peer, a, zmq::message_t(ans.data(), ans.size() * sizeof(uint64_t)), nullptr);
      return Reject::kNone;
    }
    case Kind::kAccept: {
      if (h.payload_bytes != 4 * sizeof(uint64_t)) return Reject::kLengthMismatch;
      if (Reject r = check_payload(h, payload.data(), payload.size()); r != Reject::kNone) return r;
      const std::vector<uint64_t> v = u64s(payload);
      if (!proposing_ || v[0] != proposing_->epoch) return Reject::kStaleEpoch;
      if (!std::binary_search(proposing_->members.begin(), proposing_->members.end(), peer)) return Reject::kUnexpected;
      if (v[3] > 1) return Reject::kRangeMismatch;
      if (proposing_->accepts.count(peer)) return Reject::kDuplicate;
      proposing_->accepts[peer] = {v[1], v[2], v[3] == 1};
      peers_[static_cast<size_t>(peer)].last_seen = Clock::now();
      if (proposing_->accepts.size() == proposing_->members.size()) commit();
      return Reject::kNone;
    }
    case Kind::kCommit: {
      if (h.payload_bytes < 5 * sizeof(uint64_t) || h.payload_bytes % (2 * sizeof(uint64_t)) != sizeof(uint64_t) ||
          h.payload_bytes > (3 + 2 * static_cast<uint64_t>(nodes_)) * sizeof(uint64_t))
        return Reject::kLengthMismatch;
      if (Reject r = check_payload(h, payload.data(), payload.size()); r != Reject::kNone) return r;
      const std::vector<uint64_t> v = u64s(payload);
      const uint64_t k = v[2];
      if (3 + 2 * k != v.size() || v[0] > UINT32_MAX) return Reject::kRangeMismatch;
      std::vector<int> members;
      std::map<int, uint64_t> done;
      for (uint64_t i = 0; i < k; ++i) {  // i over the members: sorted, configured
        const uint64_t id = v[3 + 2 * i];
        if (id >= static_cast<uint64_t>(nodes_) || (!members.empty() && id <= static_cast<uint64_t>(members.back())))
          return Reject::kRangeMismatch;
        members.push_back(static_cast<int>(id));
        done[static_cast<int>(id)] = v[4 + 2 * i];
      }
      const auto epoch = static_cast<uint32_t>(v[0]);
      if (epoch <= view_.epoch) return Reject::kStaleEpoch;
      if (!std::binary_search(members.begin(), members.end(), opts_.self)) {
        // A notice: the others run a view without this node.
        if (!joining_ && (phase_ == Phase::kRunning || phase_ == Phase::kStarting))
          fail(std::make_exception_ptr(Excluded(epoch, "node " + std::to_string(opts_.self) + " is not in view " +
                                                           std::to_string(epoch) + " " + ids_text(members) +
                                                           " of the others (it was stopped or cut off): start it again to rejoin")));
        return Reject::kNone;
      }
      int coordinator = -1;  // the lowest member that does not join
      for (const auto& [id, d] : done)
        if (d != kJoinerDone && coordinator < 0) coordinator = id;
      if (coordinator != peer || epoch < promised_) return Reject::kStaleEpoch;
      for (const auto& [id, d] : done)
        if (d != kJoinerDone && d > v[1]) return Reject::kRangeMismatch;  // R is the largest done
      peers_[static_cast<size_t>(peer)].last_seen = Clock::now();
      install(epoch, std::move(members), v[1], done);
      return Reject::kNone;
    }
    case Kind::kResult:
    case Kind::kState: {
      const bool state = h.kind == Kind::kState;
      if (state ? (!joining_ || peer != state_source_ || h.round != resume_round_)
                : !slots_.count(h.round) || !slots_[h.round].transfer || slots_[h.round].holder != peer)
        return Reject::kUnexpected;
      const uint64_t chunks = chunks_of(count_);
      if (h.step != 0 || h.chunk >= chunks) return Reject::kRangeMismatch;
      const uint64_t offset = h.chunk * chunk_elems();
      if (h.offset != offset || h.count != std::min(chunk_elems(), count_ - offset)) return Reject::kRangeMismatch;
      if (Reject r = check_payload(h, payload.data(), payload.size()); r != Reject::kNone) return r;
      std::vector<uint8_t>& seen = state ? state_seen_ : slots_[h.round].result_seen;
      if (seen[h.chunk]) return Reject::kDuplicate;
      seen[h.chunk] = 1;
      float* dst = state ? state_.data() : slots_[h.round].result.data();
      std::memcpy(dst + h.offset, payload.data(), h.count * sizeof(float));
      transferred_bytes_ += h.count * sizeof(float);
      peers_[static_cast<size_t>(peer)].last_seen = Clock::now();
      if (!state) {
        ++slots_[h.round].result_chunks;
        try_complete();
        return Reject::kNone;
      }
      if (++state_received_ < chunks) return Reject::kNone;
      // x̄ at R is here: this node starts from it.
      std::memcpy(params_, state_.data(), count_ * sizeof(float));
      anchor_io_ = std::move(state_);  // the stream's buffer is not needed past here
      state_ = std::vector<float>();
      joining_ = false;
      phase_ = Phase::kRunning;
      if (pending_event_) {
        pending_event_->anchor_hash = hash64(anchor_io_.data(), anchor_io_.size() * sizeof(float));
        pending_event_->transferred_bytes = transferred_bytes_;
        push_event(*pending_event_);
        pending_event_.reset();
      }
      connect_timer_.cancel();
      std::lock_guard<std::mutex> lk(mu_);
      join_round_ = resume_round_;
      join_done_ = !start_follower_;
      started_ = true;
      cv_.notify_all();
      return Reject::kNone;
    }
    default:
      return Reject::kBadKind;
  }
}

}  // namespace tether::net
