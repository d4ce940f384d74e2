// How the communicator runs gossip rounds without a global barrier (issue
// 16; net/communicator.h, "Gossip rounds" and "Coordinated cut, gossip"):
// the sketches members send with every round, kept by age rather than
// gating completion, and the stop agreement that gives every node one cut
// round. Everything here runs on the I/O thread, except cut_round() and
// wait_close_allowed() (the trainer's, under mu_).
//
// Stop agreement messages (Kind::kCut, u64 payload [op, query, value, known]):
//   ask     node -> coordinator           [1, 0, 0, 0]
//   query   coordinator -> members        [2, q, 0, 0]
//   answer  member -> coordinator         [3, q, n, R + 1 or 0]   n: its next round
//   cut     any member -> every member    [4, 0, R, 0]            sent on once by each
// q = (view epoch << 32) | a sequence number of the coordinator's: an answer
// to an earlier query (another view, a restarted agreement) is stale.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "net/communicator.h"
#include "net/net_check.h"
#include "net/transport.h"

namespace tether::net {

namespace {

constexpr uint64_t kCutAsk = 1, kCutQuery = 2, kCutAnswer = 3, kCutDecide = 4;
// Rounds in a cut message: far above any run, and max + margin cannot wrap.
constexpr uint64_t kMaxCutRound = uint64_t{1} << 62;

}  // namespace

uint64_t Communicator::ahead_limit() const {
  // A partner is at most the window plus one schedule period (at most N
  // rounds) ahead of this node (net/gossip.h); twice both, to spare.
  return 2 * static_cast<uint64_t>(opts_.window) + (gossip_ ? 2 * static_cast<uint64_t>(nodes_) : 0);
}

Reject Communicator::handle_gossip_sketch(const Header& h, const zmq::message_t& payload) {
  const int peer = static_cast<int>(h.sender);
  if (h.round >= done_ && h.round - done_ >= ahead_limit()) return Reject::kRoundOutsideWindow;
  // A member's sketches come in order on its connection: one of a round at or
  // below the latest held is a duplicate (a view change's re-run sends none).
  if (h.round < sketch_next_[static_cast<size_t>(peer)]) return Reject::kDuplicate;
  sketch_next_[static_cast<size_t>(peer)] = h.round + 1;
  auto& held = peer_sketches_[static_cast<size_t>(peer)];
  std::vector<float>& sk = held[h.round];
  sk.resize(h.count);
  if (h.count) std::memcpy(sk.data(), payload.data(), h.count * sizeof(float));
  // Only the latest at or below done_ is still needed among the older ones.
  auto keep = held.upper_bound(done_);
  if (keep != held.begin()) held.erase(held.begin(), std::prev(keep));
  return Reject::kNone;
}

void Communicator::gossip_sketches(uint64_t round, RoundResult* res) {
  for (int p = 0; p < nodes_; ++p) {  // p over the other members
    if (p == opts_.self || (membership() && !view_.has(p))) continue;
    auto& held = peer_sketches_[static_cast<size_t>(p)];
    auto it = held.upper_bound(round);  // the latest at or below `round`
    if (it == held.begin()) continue;   // none yet
    --it;
    res->sketches[p] = it->second;  // a copy: the next rounds may need it too
    res->sketch_rounds[p] = it->first;
    held.erase(held.begin(), it);
  }
}

bool Communicator::barrier_sketches_in(uint64_t round) const {
  for (int p = 0; p < nodes_; ++p) {  // p over the other live members
    if (p == opts_.self || (membership() && (!view_.has(p) || peers_[static_cast<size_t>(p)].lost))) continue;
    if (sketch_next_[static_cast<size_t>(p)] <= round) return false;
  }
  return true;
}

std::vector<int> Communicator::gossip_laggards() const {
  // The members that have not submitted round done_ (as their sketches say)
  // and are furthest behind: every other node waits on them, directly or
  // through its partners (a node runs at most a window and a schedule period
  // ahead of any other).
  std::vector<int> behind;
  uint64_t lowest = UINT64_MAX;
  for (int p = 0; p < nodes_; ++p) {  // p over the other live members
    if (p == opts_.self || (membership() && (!view_.has(p) || peers_[static_cast<size_t>(p)].lost))) continue;
    const uint64_t next = sketch_next_[static_cast<size_t>(p)];
    if (next > done_) continue;  // it submitted this round
    if (next < lowest) {
      lowest = next;
      behind.clear();
    }
    if (next == lowest) behind.push_back(p);
  }
  return behind;
}

// ------------------------------------------------------------ stop agreement

std::optional<uint64_t> Communicator::cut_round() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cut_shared_;
}

bool Communicator::wait_close_allowed(uint64_t round, int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  auto allowed = [&] { return cut_shared_.has_value() || round + 1 < close_limit_; };
  cv_.wait_for(lk, std::chrono::milliseconds(std::max(0, timeout_ms)),
               [&] { return allowed() || error_ || io_exited_; });
  if (allowed()) return true;
  if (error_) std::rethrow_exception(error_);
  if (io_exited_) throw NetError("node " + std::to_string(opts_.self) + ": communicator stopped");
  return false;
}

int Communicator::cut_coordinator() const {
  for (int m : view_.members)  // the lowest live member
    if (m == opts_.self || !peers_[static_cast<size_t>(m)].lost) return m;
  return opts_.self;
}

void Communicator::send_cut(int to, uint64_t op, uint64_t query, uint64_t value, uint64_t known) {
  const uint64_t msg[4] = {op, query, value, known};
  Header h;
  h.kind = Kind::kCut;
  h.count = 4;
  transport_->send(to, h, zmq::message_t(msg, sizeof msg), nullptr);
}

void Communicator::cut_request() {
  if (!cut_io_.wanted)
    std::fprintf(stderr, "[tether.net node %d] asks every node to stop at a common round (gossip: agreeing on it)\n",
                 opts_.self);
  cut_io_.wanted = true;
  if (!cut_io_.cut) cut_ask();
}

void Communicator::cut_ask() {
  const int c = cut_coordinator();
  if (c != opts_.self) {
    send_cut(c, kCutAsk, 0, 0, 0);
  } else if (cut_io_.query == 0) {
    cut_start_query();
  }
}

// This node's answer: the rounds its trainer submitted, and the promise not
// to close a round r with r + 1 >= that + margin before it knows the cut.
uint64_t Communicator::cut_promise() {
  std::lock_guard<std::mutex> lk(mu_);
  const uint64_t n = submitted_shared_;
  close_limit_ = std::min(close_limit_, n + cut_margin());  // a promise only tightens
  cut_io_.promised = true;
  return n;
}

void Communicator::cut_start_query() {
  cut_io_.query = (static_cast<uint64_t>(view_.epoch) << 32) | ++cut_io_.seq;
  cut_io_.answers.clear();
  cut_io_.known.reset();
  cut_io_.answers[opts_.self] = cut_promise();
  for (int m : view_.members) {  // m over the other members
    if (m == opts_.self) continue;
    const PeerState& ps = peers_[static_cast<size_t>(m)];
    if (ps.bye && !ps.bye_failed) {
      cut_io_.answers[m] = ps.bye_rounds;  // it stopped: it closes nothing more
    } else if (!ps.lost) {
      send_cut(m, kCutQuery, cut_io_.query, 0, 0);
    }  // a lost member: the view change restarts the query without it
  }
  cut_check_answers();
}

void Communicator::cut_check_answers() {
  if (cut_io_.query == 0 || cut_io_.cut) return;
  uint64_t highest = 0;
  for (int m : view_.members) {  // every member must have answered
    auto it = cut_io_.answers.find(m);
    if (it == cut_io_.answers.end()) return;
    highest = std::max(highest, it->second);
  }
  cut_decide(cut_io_.known ? *cut_io_.known : highest + cut_margin());
}

void Communicator::cut_decide(uint64_t cut) {
  if (cut_io_.cut) {
    if (*cut_io_.cut != cut)  // a broken invariant of the agreement: say so loudly
      std::fprintf(stderr, "[tether.net node %d] error: stop agreement: cut round %" PRIu64 " received, %" PRIu64
                   " decided earlier; keeping the earlier\n", opts_.self, cut, *cut_io_.cut);
    return;
  }
  cut_io_.cut = cut;
  cut_io_.query = 0;
  {
    std::lock_guard<std::mutex> lk(mu_);
    cut_shared_ = cut;
    if (submitted_shared_ > cut)
      std::fprintf(stderr, "[tether.net node %d] error: stop agreement: cut round %" PRIu64 " but %" PRIu64
                   " rounds submitted here\n", opts_.self, cut, submitted_shared_);
    cv_.notify_all();
  }
  std::fprintf(stderr, "[tether.net node %d] stop agreed: every node stops at round %" PRIu64 "\n", opts_.self, cut);
  const bool crash = opts_.test_crash_at && cut_coordinator() == opts_.self && opts_.test_crash_at("cut-decide", cut);
  for (auto it = view_.members.rbegin(); it != view_.members.rend(); ++it) {  // each member passes it on once
    const int m = *it;
    const PeerState& ps = peers_[static_cast<size_t>(m)];
    if (m == opts_.self || ps.lost || ps.bye) continue;
    send_cut(m, kCutDecide, 0, cut, 0);
    if (crash) {  // test hook: R has reached one member only, the highest, not the next coordinator
      crash_now("cut-decide", kTestCrashLingerMs);
      return;
    }
  }
}

// A view was committed (install_gossip): a query of the earlier view is
// stale; a node that asked, or that promised, asks the view's coordinator.
void Communicator::cut_on_view() {
  if (cut_io_.cut) return;
  cut_io_.query = 0;
  if (cut_io_.wanted || cut_io_.promised) cut_ask();
}

void Communicator::cut_on_bye(int peer) {
  if (cut_io_.query == 0 || !view_.has(peer) || cut_io_.answers.count(peer)) return;
  cut_io_.answers[peer] = peers_[static_cast<size_t>(peer)].bye_rounds;
  cut_check_answers();
}

Reject Communicator::handle_cut(const Header& h, const zmq::message_t& payload) {
  const int peer = static_cast<int>(h.sender);
  uint64_t v[4];
  std::memcpy(v, payload.data(), sizeof v);
  if (v[0] < kCutAsk || v[0] > kCutDecide || v[2] > kMaxCutRound || v[3] > kMaxCutRound + 1)
    return Reject::kRangeMismatch;
  switch (v[0]) {
    case kCutAsk:
      if (cut_io_.cut) {
        send_cut(peer, kCutDecide, 0, *cut_io_.cut, 0);
      } else if (cut_coordinator() == opts_.self && cut_io_.query == 0) {
        cut_start_query();
      }  // not the coordinator here (a view change under way): the asker asks again after it
      return Reject::kNone;
    case kCutQuery: {
      const uint64_t n = cut_promise();
      send_cut(peer, kCutAnswer, v[1], n, cut_io_.cut ? *cut_io_.cut + 1 : 0);
      return Reject::kNone;
    }
    case kCutAnswer:
      if (cut_io_.query == 0 || v[1] != cut_io_.query) return Reject::kStaleEpoch;  // an earlier query's
      if (cut_io_.answers.count(peer)) return Reject::kDuplicate;
      if (opts_.test_crash_at && opts_.test_crash_at("cut-answer", cut_io_.answers.at(opts_.self))) {
        crash_now("cut-answer");  // test hook: the members promised, nothing was decided
        return Reject::kNone;
      }
      cut_io_.answers[peer] = v[2];
      if (v[3] != 0) cut_io_.known = v[3] - 1;
      cut_check_answers();
      return Reject::kNone;
    default:  // kCutDecide
      cut_decide(v[2]);
      return Reject::kNone;
  }
}

}  // namespace tether::net
