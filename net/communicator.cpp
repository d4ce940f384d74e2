#include "net/communicator.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>

#include <unistd.h>

#include <boost/asio/post.hpp>

#include "net/gossip.h"
#include "net/net_check.h"
#include "net/ring_allreduce.h"
#include "net/service.h"
#include "net/transport.h"

namespace tether::net {

namespace asio = boost::asio;

namespace {

// ZeroMQ limits per connection of the ROUTER (see io_main).
constexpr int kReceiveHwm = 256;
constexpr int kHandshakeMs = 5000;
// Largest sketch accepted (floats): far above any CountSketch the runtime uses.
constexpr uint64_t kMaxSketchCount = uint64_t{1} << 24;

// net.compression joins the config hash (and the named keys) of the hello
// only when it is not "none": a run without compression says the same hello
// as before it existed.
constexpr const char* kCompressionKey = "net.compression";
uint64_t codec_config_hash(Codec c) {
  if (c == Codec::kNone) return 0;
  const std::string_view name = codec_name(c);
  return hash64(name.data(), name.size(), 0x636f646563ull);
}

double ms_between(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

uint64_t draw_incarnation() {
  std::random_device rd;
  const uint64_t t = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return ((uint64_t{rd()} << 32) ^ rd() ^ t ^ (static_cast<uint64_t>(::getpid()) << 16)) | 1;  // never 0
}

}  // namespace

Communicator::Communicator(CommOptions options)
    : opts_(std::move(options)),
      incarnation_(draw_incarnation()),
      nodes_(static_cast<int>(opts_.peers.size())),
      work_(asio::make_work_guard(io_)),
      rejected_(static_cast<size_t>(Reject::kCount)),
      handshake_failed_(static_cast<size_t>(HandshakeFailure::kCount)) {
  std::sort(opts_.peers.begin(), opts_.peers.end(),
            [](const PeerAddr& a, const PeerAddr& b) { return a.id < b.id; });
  TETHER_NET_CHECK(nodes_ >= 1, "no peers configured");
  for (int i = 0; i < nodes_; ++i) {  // i over the configured nodes
    TETHER_NET_CHECK(opts_.peers[static_cast<size_t>(i)].id == i,
                     "peer ids must be 0..N-1, found " << opts_.peers[static_cast<size_t>(i)].id
                                                       << " at position " << i);
  }
  TETHER_NET_CHECK(opts_.self >= 0 && opts_.self < nodes_, "self " << opts_.self << " of " << nodes_);
  TETHER_NET_CHECK(opts_.window >= 1, "window " << opts_.window);
  TETHER_NET_CHECK(opts_.heartbeat_ms > 0 && opts_.peer_timeout_ms > opts_.heartbeat_ms,
                   "heartbeat_ms " << opts_.heartbeat_ms << " peer_timeout_ms "
                                   << opts_.peer_timeout_ms);
  TETHER_NET_CHECK(opts_.connect_timeout_ms > 0, "connect_timeout_ms " << opts_.connect_timeout_ms);
  TETHER_NET_CHECK(opts_.chunk_bytes >= sizeof(float), "chunk_bytes " << opts_.chunk_bytes);
  if (opts_.curve) {
    TETHER_NET_CHECK(opts_.secret_key.size() == 40 && opts_.public_key.size() == 40,
                     "curve: this node's keypair must be two 40-character Z85 keys");
    for (const PeerAddr& p : opts_.peers)  // every peer's key: the ZAP handler's list
      TETHER_NET_CHECK(p.public_key.size() == 40, "curve: peer " << p.id << " has no 40-character public key");
  }
  last_log_.assign(static_cast<size_t>(Reject::kCount), Clock::time_point{});
  unlogged_.assign(static_cast<size_t>(Reject::kCount), 0);
}

Communicator::~Communicator() {
  if (io_thread_.joinable()) {
    linger_ms_ = 0;
    io_.stop();
    io_thread_.join();
  }
}

std::string Communicator::peer_name(int id) const {
  const PeerAddr& p = opts_.peers[static_cast<size_t>(id)];
  return "peer " + std::to_string(id) + " (" + p.host + ":" + std::to_string(p.port) + ")";
}

std::shared_ptr<RoundBuffer> Communicator::make_buffer(std::vector<float> v) {
  auto buf = std::make_shared<RoundBuffer>();
  buf->data = std::move(v);
  // ZeroMQ released the last zero-copy message: a round may now be complete
  buf->on_released = [this] { asio::post(io_, [this] { try_complete(); }); };
  return buf;
}

// ---------------------------------------------------------------- trainer side

void Communicator::start(float* params, size_t count, std::vector<float> anchor) {
  TETHER_NET_CHECK(!started_called_, "start() called twice");
  TETHER_NET_CHECK(params != nullptr || count == 0, "null parameter buffer of " << count << " floats");
  started_called_ = true;
  count_ = count;
  params_ = params;
  start_anchor_ = std::move(anchor);
  TETHER_NET_CHECK(start_anchor_.empty() || start_anchor_.size() == count, "anchor of " << start_anchor_.size() << " floats");
  next_submit_ = next_poll_ = done_ = submitted_io_ = opts_.first_round;  // before the I/O thread exists
  submitted_shared_ = opts_.first_round;
  {
    // The I/O thread takes no asynchronous signals (ZeroMQ's threads block
    // them too): a ZeroMQ call on it is never interrupted (EINTR would
    // surface as a failed call), whatever the embedding program does with
    // signals (the tether binary takes them on a thread of its own). The
    // thread inherits this mask.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    io_thread_ = std::thread([this] { io_main(); });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(opts_.connect_timeout_ms) + std::chrono::seconds(5);
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_until(lk, deadline, [&] { return started_ || error_ || io_exited_; });
    if (started_) {
      joined_ = join_done_;
      if (joined_) first_round_ = next_submit_ = next_poll_ = join_round_;
      else first_round_ = opts_.first_round;
      return;
    }
    error = error_;
  }
  // Our hello may still reach a peer we refused: it refuses us too. Known
  // gap: if our connection to it is not up within this linger, it waits out
  // its connect time-out instead (exit 1, "no hello from ..."). A longer
  // linger here blocks on heartbeats queued to a peer that already closed.
  linger_ms_ = 500;
  io_.stop();
  io_thread_.join();
  stopped_ = true;
  if (error) std::rethrow_exception(error);
  throw StartFailed({}, "node " + std::to_string(opts_.self) + ": start-up did not finish");
}

Mixer* Communicator::mixer_for(const Slot& slot) const {
  return slot.exact || !gossip_ ? static_cast<Mixer*>(ring_.get()) : static_cast<Mixer*>(gossip_.get());
}

void Communicator::submit(uint64_t round, std::vector<float> data, std::vector<float> sketch, RoundFlags flags) {
  TETHER_NET_CHECK(started_called_ && !stopped_, "submit() outside start()..stop()");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (error_) std::rethrow_exception(error_);
  }
  TETHER_NET_CHECK(round == next_submit_, "round " << round << " submitted, expected " << next_submit_);
  TETHER_NET_CHECK(next_submit_ - next_poll_ < static_cast<uint64_t>(opts_.window),
                   "round " << round << ": " << next_submit_ - next_poll_
                            << " rounds unfinished already, window " << opts_.window);
  TETHER_NET_CHECK(data.size() == count_,
                   "round " << round << ": " << data.size() << " floats, expected " << count_);
  if (!all_finite(sketch.data(), sketch.size()) || sketch.size() > kMaxSketchCount ||
      (opts_.sketch_floats != 0 && sketch.size() != opts_.sketch_floats)) {
    throw std::invalid_argument("round " + std::to_string(round) + ": sketch of " + std::to_string(sketch.size()) +
                                " floats has a non-finite value, or is not of the configured length");
  }
  {
    // What this node answers a stop query with (gossip): the rounds its
    // trainer has submitted, this one included once it goes on.
    std::lock_guard<std::mutex> lk(mu_);
    submitted_shared_ = round + 1;
  }
  auto d = make_buffer(std::move(data));
  auto s = make_buffer(std::move(sketch));
  // Every result returned so far has been applied to `data` (gossip's
  // snapshot completion relies on it; see gossip.h).
  const uint64_t applied = next_poll_;
  asio::post(io_, [this, round, d, s, applied, flags] { on_submit(round, d, s, applied, flags); });
  ++next_submit_;
}

std::vector<float> take_storage(std::shared_ptr<const std::vector<float>>& mixed) {
  std::vector<float> out;
  if (mixed && mixed.use_count() == 1) out = std::move(const_cast<std::vector<float>&>(*mixed));
  mixed.reset();
  return out;
}

std::optional<RoundResult> Communicator::poll() { return wait(0); }

std::optional<RoundResult> Communicator::wait(int timeout_ms) {
  TETHER_NET_CHECK(started_called_, "wait() before start()");
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, std::chrono::milliseconds(std::max(0, timeout_ms)),
               [&] { return !results_.empty() || error_ || io_exited_; });
  if (!results_.empty()) {
    RoundResult r = std::move(results_.front());
    results_.pop_front();
    ++next_poll_;
    return r;
  }
  if (error_) std::rethrow_exception(error_);
  if (io_exited_) throw NetError("node " + std::to_string(opts_.self) + ": communicator stopped");
  return std::nullopt;
}

void Communicator::stop(int drain_timeout_ms, bool failed) {
  if (!io_thread_.joinable()) return;
  const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(0, drain_timeout_ms));
  asio::post(io_, [this, failed] {
    if (phase_ == Phase::kDone || !transport_) return;
    phase_ = Phase::kStopping;
    for (int p = 0; p < nodes_; ++p) {  // p over the peers still there
      if (p == opts_.self || peers_[static_cast<size_t>(p)].lost) continue;
      Header h;
      h.kind = Kind::kBye;
      h.flags = failed ? kByeFailed : 0;
      h.round = submitted_io_;
      transport_->send(p, h, zmq::message_t(), nullptr);
    }
    check_stop_ready();
  });
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait_until(lk, deadline, [&] { return stop_ready_ || io_exited_; });
  }
  // what ZeroMQ still holds may leave while the sockets linger (bounded)
  const auto left_ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  linger_ms_ = static_cast<int>(std::clamp<long long>(left_ms, 50, 2000));
  io_.stop();
  io_thread_.join();
  stopped_ = true;
}

CommStats Communicator::stats() const {
  CommStats s;
  s.bytes_sent = bytes_sent_.load();
  s.bytes_recv = bytes_recv_.load();
  s.tensor_bytes_sent = tensor_bytes_sent_.load();
  s.tensor_raw_bytes_sent = tensor_raw_bytes_sent_.load();
  s.msgs_rejected = rejected_total_.load();
  for (size_t r = 1; r < rejected_.size(); ++r) {  // r over the Reject reasons
    const uint64_t n = rejected_[r].load();
    if (n) s.rejected_by_reason[std::string(reject_name(static_cast<Reject>(r)))] = n;
  }
  for (size_t f = 0; f < handshake_failed_.size(); ++f) {  // f over the HandshakeFailure reasons
    const uint64_t n = handshake_failed_[f].load();
    s.handshakes_failed += n;
    if (n) s.handshake_failed_by_reason[std::string(handshake_failure_name(static_cast<HandshakeFailure>(f)))] = n;
  }
  return s;
}

std::vector<float> Communicator::residual() const {
  std::lock_guard<std::mutex> lk(mu_);
  return feedback_ ? feedback_->residual(count_) : std::vector<float>(count_, 0.0f);
}

std::vector<int> Communicator::lost_peers() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lost_;
}

// ------------------------------------------------------------------ I/O thread

void Communicator::fail(std::exception_ptr e) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!error_) error_ = std::move(e);
  cv_.notify_all();
}

void Communicator::io_main() {
  try {
    std::vector<TransportPeer> tpeers;
    for (const PeerAddr& p : opts_.peers) tpeers.push_back({p.id, p.host, p.port, p.public_key});
    transport_ = std::make_unique<Transport>(
        io_, opts_.self, std::move(tpeers), opts_.inject_delay_ms, opts_.inject_rate_mbps,
        [this](std::vector<zmq::message_t>& parts, bool truncated, int auth_peer) {
          on_message(parts, truncated, auth_peer);
        },
        &bytes_sent_, &bytes_recv_);
    transport_->set_handshake_counters(handshake_failed_.data());
    transport_->set_on_link([this](int peer, bool up) { on_link(peer, up); });
    if (opts_.curve) transport_->set_curve(opts_.secret_key, opts_.public_key);
    bound_.assign(static_cast<size_t>(nodes_), std::string());
    transport_->set_tensor_counters(&tensor_bytes_sent_, &tensor_raw_bytes_sent_);
    if (opts_.mixer == MixerKind::kRing && opts_.codec != Codec::kNone) {
      std::lock_guard<std::mutex> lk(mu_);
      feedback_ = std::make_unique<ErrorFeedback>(static_cast<uint64_t>(opts_.window));
    }
    // The first view: every configured node (a node that finds the others
    // running joins their view instead). The ring also carries the exact
    // averages a gossip run asks for.
    view_.epoch = 1;
    view_.members.clear();
    for (int p = 0; p < nodes_; ++p) view_.members.push_back(p);  // p over the configured nodes
    promised_ = 1;
    transport_->set_epoch(view_.epoch);
    ring_ = make_ring();
    if (opts_.mixer == MixerKind::kGossip)  // keeps corrections a view change may need again
      gossip_ = std::make_unique<Gossip>(opts_.self, nodes_, count_, opts_.chunk_bytes, transport_.get(),
                                         opts_.first_round, 2 * static_cast<uint64_t>(opts_.window) + 2,
                                         opts_.codec);
    if (gossip_ && opts_.test_crash_at)
      gossip_->test_half_send = [this](uint64_t round) { return opts_.test_crash_at("gossip-half", round); };
    params_chunk_elems_ = std::max<uint64_t>(1, opts_.chunk_bytes / sizeof(float));
    params_chunks_ = (count_ + params_chunk_elems_ - 1) / params_chunk_elems_;
    params_seen_.assign(params_chunks_, 0);
    peers_.assign(static_cast<size_t>(nodes_), PeerState{});
    peer_sketches_.assign(static_cast<size_t>(nodes_), {});
    sketch_next_.assign(static_cast<size_t>(nodes_), 0);
    phase_ = Phase::kStarting;
    start_time_ = Clock::now();
    // The largest legal frame: a chunk, a sketch or a hello; headers are smaller.
    const uint64_t sketch_bytes = (opts_.sketch_floats != 0 ? opts_.sketch_floats : kMaxSketchCount) * sizeof(float);
    transport_->set_max_frame_bytes(std::max<uint64_t>({opts_.chunk_bytes, sketch_bytes,
                                                        encoded_bytes(opts_.codec, params_chunk_elems_),
                                                        kMaxHelloBytes,
                                                        kHeaderBytes,
                                                        opts_.service ? opts_.service->max_frame_bytes() : 0}));
    // Per connection: what ZeroMQ may buffer before this thread reads it
    // (messages; the node reads as fast as frames come, so a peer only meets
    // TCP back-pressure), the handshake's deadline, and ZMTP heartbeats that
    // drop a connection silent far longer than a peer may be (strangers'
    // idle connections; a peer's own silence is judged by peer_timeout_ms).
    transport_->set_limits(kReceiveHwm, kHandshakeMs, opts_.heartbeat_ms,
                           std::max(4 * opts_.peer_timeout_ms, 10000));
    if (opts_.service)
      opts_.service->attach(transport_.get(), [this](std::function<void()> fn) { asio::post(io_, std::move(fn)); });
    transport_->open(opts_.test_after_bind);

    const std::vector<unsigned char> hello = encode_hello(hello_fields());
    for (int p = 0; p < nodes_; ++p) {  // p over the other nodes
      if (p == opts_.self) continue;
      Header h;
      h.kind = Kind::kHello;
      transport_->send(p, h, zmq::message_t(hello.data(), hello.size()), nullptr);
    }
    heartbeat_timer_.expires_after(std::chrono::milliseconds(opts_.heartbeat_ms));
    heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) heartbeat_tick();
    });
    connect_timer_.expires_after(std::chrono::milliseconds(opts_.connect_timeout_ms));
    connect_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) connect_deadline();
    });
    if (membership() && !gossip_ && opts_.late_start_ms > 0 && opts_.late_start_ms < opts_.connect_timeout_ms) {
      late_timer_.expires_after(std::chrono::milliseconds(opts_.late_start_ms));
      late_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) late_start();
      });
    }
    // Read only now: a hello already queued starts the node (maybe_started
    // broadcasts the parameters and cancels the connect timer), so every
    // piece of start-up state must exist before the first message is handled.
    transport_->drain();
    maybe_started();
    io_.run();
  } catch (...) {
    fail(std::current_exception());
  }
  // tear down on this thread: the sockets were never touched by another one
  phase_ = Phase::kDone;
  heartbeat_timer_.cancel();  // handlers still queued never run: io_ has stopped
  connect_timer_.cancel();
  late_timer_.cancel();
  try {
    std::vector<int> finished;  // said bye or lost: nothing left to flush to them
    for (int p = 0; p < nodes_ && static_cast<size_t>(p) < peers_.size(); ++p) {
      if (peers_[static_cast<size_t>(p)].bye || peers_[static_cast<size_t>(p)].lost) finished.push_back(p);
    }
    if (transport_) transport_->close(linger_ms_.load(), finished);
  } catch (...) {
    fail(std::current_exception());
  }
  transport_.reset();
  gossip_.reset();
  ring_.reset();
  slots_.clear();
  std::lock_guard<std::mutex> lk(mu_);
  io_exited_ = true;
  cv_.notify_all();
}

void Communicator::maybe_started() {
  if (phase_ != Phase::kStarting || joining_ || start_follower_) return;
  for (int p = 0; p < nodes_; ++p) {  // every other node said hello
    if (p != opts_.self && !peers_[static_cast<size_t>(p)].hello) return;
  }
  const bool broadcast = opts_.start_step == 0;  // a resumed run keeps every node's own
  const bool sync_start = broadcast && nodes_ > 1 && count_ > 0;  // kReady ends the start-up
  if (opts_.self == 0 || !broadcast) {
    if (sync_start && !ready_sent_) {  // broadcast the initial parameters, chunked (once)
      ready_sent_ = true;
      ready_from_.assign(static_cast<size_t>(nodes_), 0);
      auto buf = make_buffer(std::vector<float>(params_, params_ + count_));
      for (int p = 1; p < nodes_; ++p) {                      // p over the other nodes
        for (uint64_t c = 0; c < params_chunks_; ++c) {  // c over the chunks
          Header h;
          h.kind = Kind::kParams;
          h.chunk = static_cast<uint32_t>(c);
          h.offset = c * params_chunk_elems_;
          h.count = std::min<uint64_t>(params_chunk_elems_, count_ - h.offset);
          transport_->send(p, h, zero_copy(buf, h.offset, h.count), nullptr);
        }
      }
    }
    if (sync_start) {
      if (readies_ + 1 < static_cast<size_t>(nodes_)) return;  // not every node has them yet
      for (int p = 1; p < nodes_; ++p) send_ready(p);           // start, all of you
    }
  } else if (params_received_ != params_chunks_) {
    return;
  } else if (sync_start) {
    if (!ready_sent_) {  // every chunk is here: tell node 0
      ready_sent_ = true;
      send_ready(0);
    }
    if (!go_) return;  // node 0 has not let the nodes start yet
  }
  become_running();
}

void Communicator::send_ready(int peer) {
  Header h;
  h.kind = Kind::kReady;
  transport_->send(peer, h, zmq::message_t(), nullptr);
}

void Communicator::become_running() {
  if (opts_.service) opts_.service->on_start(params_, count_);
  phase_ = Phase::kRunning;
  connect_timer_.cancel();
  late_timer_.cancel();
  // x̄: a resumed run's (needed nowhere else: moved), else the parameters.
  if (membership()) {
    anchor_io_ = start_anchor_.empty() ? std::vector<float>(params_, params_ + count_) : std::move(start_anchor_);
    start_anchor_ = std::vector<float>();
  }
  std::lock_guard<std::mutex> lk(mu_);
  started_ = true;
  cv_.notify_all();
}

// Late start: late_start_ms after start-up began, some configured nodes have
// not said hello. With hellos from a majority, the lowest id among those
// nodes starts the run: it takes the missing nodes for lost and proposes
// view 2 of the nodes there, as after a failure (membership.cpp); they take
// the proposal while they start (handle_membership). The missing nodes join
// the running view when they start. Checked again every heartbeat until
// start-up ends (a majority may still come, the lower node may die).
void Communicator::late_start() {
  if (phase_ != Phase::kStarting || joining_ || start_follower_) return;
  std::vector<int> present, missing;
  for (int p = 0; p < nodes_; ++p)  // p over the configured nodes
    (p == opts_.self || peers_[static_cast<size_t>(p)].hello ? present : missing).push_back(p);
  if (missing.empty()) return;  // every node is here: the start goes on (the initial parameters)
  std::string names;
  for (int p : missing) names += (names.empty() ? "" : ", ") + peer_name(p);
  const bool majority = 2 * present.size() > static_cast<size_t>(nodes_);
  if (!majority || present.front() != opts_.self) {
    if (!late_logged_) {
      late_logged_ = true;
      std::fprintf(stderr, "[tether.net node %d] no hello from %s after %d ms (net.late_start_ms): %s\n", opts_.self,
                   names.c_str(), opts_.late_start_ms,
                   majority ? ("node " + std::to_string(present.front()) + " starts the run without them").c_str()
                            : "no majority here to start without them; waiting (net.connect_timeout_ms)");
    }
    late_timer_.expires_after(std::chrono::milliseconds(opts_.heartbeat_ms));
    late_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) late_start();
    });
    return;
  }
  std::fprintf(stderr,
               "[tether.net node %d] late start: %zu of %d nodes said hello within %d ms (net.late_start_ms); "
               "starting without %s, which join when they start\n",
               opts_.self, present.size(), nodes_, opts_.late_start_ms, names.c_str());
  for (int p : missing) {  // nothing queued for them now reaches them later
    peers_[static_cast<size_t>(p)].lost = true;
    transport_->reset_peer(p);
  }
  changing_ = true;
  change_started_ = Clock::now();
  change_reason_ = "late start without " + names;
  become_running();
  maybe_change_view();
}

void Communicator::connect_deadline() {
  if (phase_ != Phase::kStarting) return;
  std::vector<int> missing;
  std::ostringstream os;
  os << "node " << opts_.self << ": start-up failed after " << opts_.connect_timeout_ms << " ms: ";
  if (joining_) {
    os << "the others run view " << view_.epoch << " but did not take this node in (no view with it"
       << (view_.epoch > 1 ? "" : " was committed") << ", or x̄ did not arrive: " << state_received_ << " of "
       << chunks_of(count_) << " chunks)";
    std::vector<int> members;
    for (int p = 0; p < nodes_; ++p)
      if (p != opts_.self && peers_[static_cast<size_t>(p)].hello) members.push_back(p);
    fail(std::make_exception_ptr(StartFailed(members, os.str())));
    return;
  }
  for (int p = 0; p < nodes_; ++p) {  // p over the other nodes
    if (p != opts_.self && !peers_[static_cast<size_t>(p)].hello) missing.push_back(p);
  }
  if (!missing.empty()) {
    os << "no hello from ";
    for (size_t i = 0; i < missing.size(); ++i) os << (i ? ", " : "") << peer_name(missing[i]);
  } else if (opts_.self == 0 && ready_sent_) {
    for (int p = 1; p < nodes_; ++p)
      if (!ready_from_[static_cast<size_t>(p)]) missing.push_back(p);
    os << "no word from ";
    for (size_t i = 0; i < missing.size(); ++i) os << (i ? ", " : "") << peer_name(missing[i]);
    os << " that the initial parameters arrived (kReady)";
  } else if (ready_sent_) {
    missing.push_back(0);
    os << "the initial parameters arrived, but " << peer_name(0) << " did not start the run (kReady: some node lacks them)";
  } else {
    missing.push_back(0);
    os << "initial parameters from " << peer_name(0) << " incomplete (" << params_received_
       << " of " << params_chunks_ << " chunks)";
  }
  fail(std::make_exception_ptr(StartFailed(missing, os.str())));
}

void Communicator::heartbeat_tick() {
  if (!transport_ || phase_ == Phase::kDone) return;
  transport_->drain();  // judge silence only after reading what has arrived
  if (phase_ == Phase::kDone) return;  // a test crash while reading
  const Clock::time_point now = Clock::now();
  ++ticks_;

  for (int p = 0; p < nodes_; ++p) {  // p over the other nodes
    PeerState& ps = peers_[static_cast<size_t>(p)];
    if (p == opts_.self || ps.lost) continue;
    // Once stopping, our bye is out and peers no longer judge our silence:
    // more heartbeats would only keep the (delay-emulating) send queue from
    // ever draining, and check_stop_ready waits for it to drain.
    // At start-up only to peers that said hello: a restarted node must not
    // keep its earlier incarnation alive in the others' eyes.
    if (phase_ != Phase::kStopping && (phase_ != Phase::kStarting || ps.hello)) {
      Header h;  // also to peers that said bye: they may be draining, waiting for ours
      h.kind = Kind::kHeartbeat;
      h.round = done_;
      transport_->send(p, h, zmq::message_t(), nullptr);
    }
    if (!ps.hello || ps.bye) continue;  // start-up: the connect deadline applies instead
    const double silent = ms_between(ps.last_seen, now);
    // A drop is undone only by a reconnect (on_link): frames read after it
    // may be ones a dead peer sent before it died.
    const bool dropped = ps.closed && ms_between(ps.closed_at, now) > disconnect_grace_ms();
    if (silent > opts_.peer_timeout_ms || dropped) {
      const std::string what =
          silent > opts_.peer_timeout_ms
              ? peer_name(p) + " silent for " + std::to_string(static_cast<long long>(silent)) + " ms"
              : peer_name(p) + " closed its connection (socket monitor) and did not reconnect within " +
                    std::to_string(static_cast<long long>(ms_between(ps.closed_at, now))) + " ms";
      if (membership() && (phase_ == Phase::kRunning || phase_ == Phase::kStopping)) {
        suspect(p, what);  // the others carry on in a view without it (a stopping node helps them)
        continue;
      }
      if (joining_) continue;  // not a member yet: nothing to fail
      ps.lost = true;
      std::fprintf(stderr, "[tether.net node %d] %s\n", opts_.self, what.c_str());
      {
        std::lock_guard<std::mutex> lk(mu_);
        lost_.push_back(p);
      }
      if (phase_ != Phase::kStopping) fail(std::make_exception_ptr(PeerLost(p, silent, what)));
    }
  }
  // A joiner says hello again until a view takes it in.
  // At start-up, a hello is repeated (every 5 ticks) to the peers that have
  // not answered: a peer may have refused it while it still took this
  // node's earlier incarnation for alive.
  if (phase_ == Phase::kStarting && membership() && !(joining_ && view_.epoch != 0) &&
      ticks_ % (joining_ ? 3 : 5) == 0) {
    const std::vector<unsigned char> hello = encode_hello(hello_fields());
    for (int p = 0; p < nodes_; ++p) {  // p over the other nodes
      if (p == opts_.self || (!joining_ && peers_[static_cast<size_t>(p)].hello)) continue;
      Header h;
      h.kind = Kind::kHello;
      transport_->send(p, h, zmq::message_t(hello.data(), hello.size()), nullptr);
    }
  }
  check_round_progress(now);
  check_quorum(now);
  maybe_change_view();
  check_stop_ready();
  heartbeat_timer_.expires_after(std::chrono::milliseconds(opts_.heartbeat_ms));
  heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) heartbeat_tick();
  });
}

int Communicator::disconnect_grace_ms() const {
  return std::min(opts_.peer_timeout_ms, std::max(2 * opts_.heartbeat_ms, 500));
}

// Transport: our connection to `peer` dropped after its handshake (up false)
// or finished one (up true). A drop is judged at the next ticks
// (heartbeat_tick): lost unless it reconnects within disconnect_grace_ms()
// (ZeroMQ reconnects to a live peer within 100 ms; frames that arrive
// meanwhile do not count: a dead peer's last ones may still be read).
void Communicator::on_link(int peer, bool up) {
  if (peer < 0 || peer >= nodes_ || peer == opts_.self || phase_ == Phase::kStopping || phase_ == Phase::kDone) return;
  PeerState& ps = peers_[static_cast<size_t>(peer)];
  if (up) {
    ps.closed = false;
    return;
  }
  if (ps.lost || ps.bye || !ps.hello || ps.closed) return;
  ps.closed = true;
  ps.closed_at = Clock::now();
}

void Communicator::check_round_progress(Clock::time_point now) {
  if (opts_.round_timeout_ms <= 0 || phase_ != Phase::kRunning || progress_failed_) return;
  auto it = slots_.find(done_);
  if (it == slots_.end() || !it->second.submitted) return;  // not waiting on the network
  if (changing_ || no_quorum_) return;  // a view change or the quorum wait has its own deadline
  const double waited = ms_between(progress_at_, now);
  if (waited <= opts_.round_timeout_ms) return;
  std::vector<int> missing;
  std::ostringstream os;
  os << "round " << done_ << " made no progress for " << static_cast<long long>(waited) << " ms (net.round_timeout_ms "
     << opts_.round_timeout_ms << "): ";
  if (gossip_) {
    missing = gossip_laggards();  // the members furthest behind, that have not submitted this round
  } else {
    for (int p = 0; p < nodes_; ++p)  // p over the other members: who has not sent this round
      if (p != opts_.self && view_.has(p) && !peers_[static_cast<size_t>(p)].lost && !it->second.sketches.count(p))
        missing.push_back(p);
  }
  if (!missing.empty()) {
    os << "waiting for ";
    for (size_t i = 0; i < missing.size(); ++i) os << (i ? ", " : "") << peer_name(missing[i]);
    os << ", whose heartbeats still arrive (a stalled trainer or data reader?)";
  } else {
    os << "every peer sent its sketch, but the mixer's data is incomplete (a peer sent part of the round)";
  }
  if (membership() && !missing.empty()) {  // the others carry on without them
    for (int p : missing) suspect(p, os.str());
    progress_at_ = now;
    return;
  }
  std::fprintf(stderr, "[tether.net node %d] %s\n", opts_.self, os.str().c_str());
  const int peer = missing.empty() ? -1 : missing[0];
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (int p : missing) lost_.push_back(p);
  }
  progress_failed_ = true;  // fail once; the trainer checkpoints and stops
  fail(std::make_exception_ptr(PeerLost(peer, waited, os.str())));
}

void Communicator::check_stop_ready() {
  if (phase_ != Phase::kStopping) return;
  for (int p = 0; p < nodes_; ++p) {  // every other node said bye or is gone
    const PeerState& ps = peers_[static_cast<size_t>(p)];
    if (p != opts_.self && !ps.bye && !ps.lost) return;
  }
  if (transport_->queued() != 0) return;
  std::lock_guard<std::mutex> lk(mu_);
  stop_ready_ = true;
  cv_.notify_all();
}

void Communicator::reject(Reject why, const Header* h) {
  const auto r = static_cast<size_t>(why);
  rejected_[r].fetch_add(1);
  rejected_total_.fetch_add(1);
  const Clock::time_point now = Clock::now();
  if (last_log_[r] != Clock::time_point{} && now - last_log_[r] < std::chrono::seconds(1)) {
    ++unlogged_[r];  // rate limit: one line per reason and second
    return;
  }
  last_log_[r] = now;
  std::ostringstream os;
  os << "[tether.net node " << opts_.self << "] rejected frame: " << reject_name(why);
  if (h) {
    os << " (sender " << h->sender << ", kind " << static_cast<int>(h->kind) << ", round "
       << h->round << ", step " << h->step << ", chunk " << h->chunk << ")";
  }
  if (unlogged_[r]) os << " [+" << unlogged_[r] << " more not logged]";
  unlogged_[r] = 0;
  std::fprintf(stderr, "%s\n", os.str().c_str());
}

bool corrupts_stream(Reject r) {
  switch (r) {
    case Reject::kFrameCount:
    case Reject::kHeaderSize:
    case Reject::kBadMagic:
    case Reject::kBadVersion:
    case Reject::kHeaderChecksum:
    case Reject::kBadKind:
    case Reject::kBadFlags:
    case Reject::kOversized:
    case Reject::kLengthMismatch:
    case Reject::kRangeMismatch:
    case Reject::kBadChecksum:
    case Reject::kNonFinite:
    case Reject::kBadCodec:
      return true;
    default:  // unknown sender, identity, window, duplicate, unexpected: not this peer's bytes, or harmless
      return false;
  }
}

void Communicator::on_message(std::vector<zmq::message_t>& parts, bool truncated, int auth_peer) {
  msg_peer_ = -1;  // whose connection: never the routing id alone
  if (opts_.curve) {
    msg_peer_ = auth_peer >= 0 && auth_peer < nodes_ && auth_peer != opts_.self ? auth_peer : -1;
  } else if (!parts.empty()) {
    for (int p = 0; p < nodes_ && msg_peer_ < 0; ++p)  // p over the peers bound to a routing id
      if (!bound_[static_cast<size_t>(p)].empty() && parts[0].to_string_view() == bound_[static_cast<size_t>(p)])
        msg_peer_ = p;
  }
  // Start-up diagnosis only (check_corrupt), without CURVE: a connection not
  // bound yet whose routing id names a peer not bound either ("n<k>" or
  // "n<k>.<anything>", as Transport's DEALERs), e.g. a peer whose hello
  // speaks another protocol version.
  claimed_peer_ = -1;
  if (!opts_.curve && msg_peer_ < 0 && !parts.empty()) {
    for (int k = 0; k < nodes_ && claimed_peer_ < 0; ++k)  // k over the peers not bound yet
      if (k != opts_.self && bound_[static_cast<size_t>(k)].empty() &&
          Transport::names_node(parts[0].to_string_view(), k))
        claimed_peer_ = k;
  }
  if (truncated || parts.size() != 3) {  // [identity][header][payload]
    reject(Reject::kFrameCount, nullptr);
    check_corrupt(Reject::kFrameCount, nullptr);
    return;
  }
  Header h;
  Reject r = decode_header(parts[1].data(), parts[1].size(), &h);
  if (r != Reject::kNone) {
    reject(r, nullptr);
    std::string detail;
    if (r == Reject::kBadVersion) {  // decode_header checked the size: bytes 4..5 are there
      uint16_t theirs;
      std::memcpy(&theirs, static_cast<const unsigned char*>(parts[1].data()) + 4, sizeof theirs);
      detail = "it speaks wire protocol version " + std::to_string(theirs) + ", this node " +
               std::to_string(kProtocolVersion) + ": every node must run the same tether";
    }
    check_corrupt(r, nullptr, detail);
    return;
  }
  r = handle(h, parts);
  if (r != Reject::kNone) {
    reject(r, &h);
    check_corrupt(r, &h);
  }
}

void Communicator::check_corrupt(Reject why, const Header* h, const std::string& detail) {
  if (!corrupts_stream(why) || (phase_ != Phase::kStarting && phase_ != Phase::kRunning)) return;
  const int peer = msg_peer_ >= 0 ? msg_peer_ : claimed_peer_;  // whose connection it came on
  if (peer < 0) return;  // not a peer's connection: refused and counted, nothing lost
  std::ostringstream os;
  os << "node " << opts_.self << ": a frame from " << peer_name(peer)
     << " failed validation (" << reject_name(why);
  if (h) os << "; kind " << static_cast<int>(h->kind) << ", round " << h->round << ", step " << h->step
            << ", chunk " << h->chunk;
  os << "): ";
  if (!detail.empty()) os << detail << "; ";
  os << "what it carried is lost and cannot be sent again, so this run stops";
  std::fprintf(stderr, "[tether.net node %d] %s\n", opts_.self, os.str().c_str());
  fail(std::make_exception_ptr(PeerCorrupt(peer, why, os.str())));
}

void Communicator::rebind_none(const Header& h, const zmq::message_t& identity) {
  const int peer = static_cast<int>(h.sender);
  std::string& bound = bound_[static_cast<size_t>(peer)];
  if (bound.empty() || !Transport::names_node(identity.to_string_view(), peer)) return;  // a hello binds it
  // The old connection still open and the peer not taken for lost: a second
  // connection claiming a live peer (refused by the caller).
  if (!peers_[static_cast<size_t>(peer)].lost && transport_->routes_to(bound)) return;
  bound = identity.to_string();
  msg_peer_ = peer;
}

Reject Communicator::handle(const Header& h, std::vector<zmq::message_t>& parts) {
  if (h.sender >= static_cast<uint32_t>(nodes_) || static_cast<int>(h.sender) == opts_.self)
    return Reject::kUnknownSender;
  const int peer = static_cast<int>(h.sender);
  PeerState& ps = peers_[static_cast<size_t>(peer)];
  zmq::message_t& payload = parts[2];
  // The frame claims `peer`: its connection must be that peer's (module
  // comment). Without CURVE, a connection is bound to the peer its first
  // accepted hello claimed, and moves to a new connection only once the old
  // one is gone (rebind_none).
  if (!opts_.curve && msg_peer_ < 0) rebind_none(h, parts[0]);
  if (membership() && ps.lost && h.kind != Kind::kHello && h.kind != Kind::kCommit) {
    // Taken for dead and left out of the view: it must join again.
    if (msg_peer_ == peer && phase_ == Phase::kRunning) notify_outside(peer);
    return Reject::kStaleEpoch;
  }
  auto identity_ok = [&] { return msg_peer_ == peer; };
  auto in_window = [&] {
    // gossip frames: a partner may be further ahead without a barrier (ahead_limit)
    const uint64_t ahead = h.kind == Kind::kGossip ? ahead_limit() : 2 * static_cast<uint64_t>(opts_.window);
    return h.round >= done_ && h.round - done_ < ahead;
  };
  Reject r = Reject::kNone;
  switch (h.kind) {
    case Kind::kHello: {
      if (!hello_length_ok(h.payload_bytes)) return Reject::kLengthMismatch;
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      HelloInfo theirs;
      if ((r = decode_hello(payload.data(), payload.size(), &theirs)) != Reject::kNone) return r;
      if (!opts_.curve && msg_peer_ < 0 && bound_[static_cast<size_t>(peer)].empty()) {
        bound_[static_cast<size_t>(peer)] = parts[0].to_string();
        msg_peer_ = peer;
      } else if (!opts_.curve && msg_peer_ != peer && !bound_[static_cast<size_t>(peer)].empty()) {
        // A second connection claiming a peer whose connection is open (else
        // rebind_none moved the binding): refused, logged (the first
        // connection stays; "none" cannot tell which is genuine).
        transport_->count_handshake_failure(HandshakeFailure::kIdentityTaken);
        const Clock::time_point now = Clock::now();
        if (now - taken_logged_at_ < std::chrono::seconds(1)) return Reject::kIdentityMismatch;  // one line a second
        taken_logged_at_ = now;
        std::fprintf(stderr,
                     "[tether.net node %d] refused a hello claiming to be %s on a second connection "
                     "(routing id \"%.40s\"): that peer is connected already (net.security \"none\" "
                     "cannot authenticate; use \"curve\")\n",
                     opts_.self, peer_name(peer).c_str(), parts[0].to_string().c_str());
        return Reject::kIdentityMismatch;
      }
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (ps.hello && !(membership() && ((h.flags & kHelloRunning) != 0 || phase_ == Phase::kRunning))) {
        // said again (start-up repeats a hello until answered): nothing new,
        // unless a new process says it (a restarted peer while this node is
        // still starting or joining): it has never had our hello, and with
        // "none" our connection counts as ours only once it has one.
        const uint64_t inc = theirs.fields[kHelloIncarnation];
        if (membership() && phase_ == Phase::kStarting && ps.incarnation != 0 && inc != ps.incarnation) {
          ps.incarnation = inc;
          ps.last_seen = Clock::now();
          Header reply;
          reply.kind = Kind::kHello;
          const std::vector<unsigned char> bytes = encode_hello(hello_fields());
          transport_->send(peer, reply, zmq::message_t(bytes.data(), bytes.size()), nullptr);
          break;
        }
        if (phase_ == Phase::kStarting) break;
        return Reject::kDuplicate;
      }
      if ((r = handle_hello(h, theirs)) != Reject::kNone) return r;
      break;
    }
    case Kind::kHeartbeat:
    case Kind::kBye: {
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (h.kind == Kind::kBye) {
        if (ps.bye) return Reject::kDuplicate;
        ps.last_seen = Clock::now();
        handle_bye(h);
      }
      break;
    }
    case Kind::kReady: {
      // node 0 gets it from the others (they have the parameters), the
      // others from node 0 (start); only in a fresh run's start-up.
      if (phase_ != Phase::kStarting || opts_.start_step != 0 || (opts_.self == 0) == (peer == 0))
        return Reject::kUnexpected;
      if (h.step != 0 || h.round != 0) return Reject::kRangeMismatch;
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (opts_.self == 0) {
        if (ready_from_.size() != static_cast<size_t>(nodes_)) return Reject::kUnexpected;  // before the broadcast
        if (ready_from_[static_cast<size_t>(peer)]) return Reject::kDuplicate;
        ready_from_[static_cast<size_t>(peer)] = 1;
        ++readies_;
      } else {
        if (go_) return Reject::kDuplicate;
        if (!ready_sent_) return Reject::kUnexpected;  // node 0 cannot know we have the parameters
        go_ = true;
      }
      maybe_started();
      break;
    }
    case Kind::kParams: {
      if (peer != 0 || phase_ != Phase::kStarting || opts_.start_step != 0) return Reject::kUnexpected;
      if (h.step != 0 || h.round != 0 || h.chunk >= params_chunks_) return Reject::kRangeMismatch;
      const uint64_t offset = h.chunk * params_chunk_elems_;
      if (h.offset != offset || h.count != std::min(params_chunk_elems_, count_ - offset))
        return Reject::kRangeMismatch;
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (params_seen_[h.chunk]) return Reject::kDuplicate;
      handle_params(h, payload);
      break;
    }
    case Kind::kRing:
    case Kind::kGossip: {
      if (phase_ != Phase::kStarting && phase_ != Phase::kRunning && phase_ != Phase::kStopping)
        return Reject::kUnexpected;
      bool buffered = false;
      if ((r = check_epoch(h, parts, &buffered)) != Reject::kNone || buffered) return r;
      if (!in_window()) return Reject::kRoundOutsideWindow;
      if (opts_.test_crash_at && h.kind == Kind::kRing &&
          opts_.test_crash_at(h.step + 1 < view_.members.size() ? "reduce-scatter" : "all-gather", h.round)) {
        crash_now(h.step + 1 < view_.members.size() ? "reduce-scatter" : "all-gather");
        return Reject::kNone;
      }
      Mixer* mixer = h.kind == Kind::kRing ? ring_.get() : gossip_.get();
      if (!mixer) return Reject::kUnexpected;
      if ((r = mixer->check(h)) != Reject::kNone) return r;
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (reinterpret_cast<uintptr_t>(payload.data()) % alignof(float) != 0) {
        payload = zmq::message_t(payload.data(), payload.size());  // realign (small frames)
      }
      if ((r = mixer->receive(h, std::move(payload))) != Reject::kNone) return r;
      ps.last_seen = Clock::now();
      try_complete();
      return Reject::kNone;
    }
    case Kind::kSketch: {
      bool buffered = false;
      if ((r = check_epoch(h, parts, &buffered)) != Reject::kNone || buffered) return r;
      // Gossip: any round from the latest held on (handle_gossip_sketch)
      if (!gossip_ && !in_window()) return Reject::kRoundOutsideWindow;
      if (h.step != 0 || h.chunk != 0 || h.offset != 0) return Reject::kRangeMismatch;
      if (h.count > kMaxSketchCount) return Reject::kOversized;
      if (opts_.sketch_floats != 0 && h.count != opts_.sketch_floats) return Reject::kRangeMismatch;
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (gossip_) {
        if ((r = handle_gossip_sketch(h, payload)) != Reject::kNone) return r;
        ps.last_seen = Clock::now();
        if (opts_.gossip_barrier) try_complete();
        return Reject::kNone;
      }
      Slot& slot = slots_[h.round];
      if (slot.sketches.count(peer)) return Reject::kDuplicate;
      slot.stop = slot.stop || (h.flags & kStopRequest) != 0;
      std::vector<float>& sk = slot.sketches[peer];
      sk.resize(h.count);
      if (h.count) std::memcpy(sk.data(), payload.data(), h.count * sizeof(float));
      ps.last_seen = Clock::now();
      try_complete();
      return Reject::kNone;
    }
    case Kind::kPropose:
    case Kind::kAccept:
    case Kind::kCommit:
      if (!identity_ok()) return Reject::kIdentityMismatch;
      return handle_membership(h, parts);
    case Kind::kCut: {
      // Also while starting: a peer that started first may ask before this
      // node has the initial parameters, and its query must be answered.
      if (!gossip_ || phase_ == Phase::kIdle || phase_ == Phase::kDone) return Reject::kUnexpected;
      bool buffered = false;
      if ((r = check_epoch(h, parts, &buffered)) != Reject::kNone || buffered) return r;
      if (h.payload_bytes != 4 * sizeof(uint64_t)) return Reject::kLengthMismatch;
      if (h.step != 0 || h.chunk != 0 || h.offset != 0 || h.count != 4) return Reject::kRangeMismatch;
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if ((r = handle_cut(h, payload)) != Reject::kNone) return r;
      break;
    }
    case Kind::kResult:
    case Kind::kState: {
      bool buffered = false;
      if ((r = check_epoch(h, parts, &buffered)) != Reject::kNone || buffered) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (reinterpret_cast<uintptr_t>(payload.data()) % alignof(float) != 0)
        payload = zmq::message_t(payload.data(), payload.size());
      return handle_membership(h, parts);
    }
    case Kind::kPush:
    case Kind::kFetch:
    case Kind::kShard:
    case Kind::kAck:
    case Kind::kNodeSketch: {
      if (!opts_.service || (phase_ != Phase::kStarting && phase_ != Phase::kRunning)) return Reject::kUnexpected;
      if ((r = opts_.service->check(h)) != Reject::kNone) return r;
      if ((r = check_payload(h, payload.data(), payload.size())) != Reject::kNone) return r;
      if (!identity_ok()) return Reject::kIdentityMismatch;
      if (reinterpret_cast<uintptr_t>(payload.data()) % alignof(float) != 0) {
        payload = zmq::message_t(payload.data(), payload.size());  // realign
      }
      if ((r = opts_.service->receive(h, std::move(payload))) != Reject::kNone) return r;
      break;
    }
  }
  ps.last_seen = Clock::now();
  return Reject::kNone;
}

std::vector<std::pair<std::string, uint64_t>> Communicator::hello_keys() const {
  std::vector<std::pair<std::string, uint64_t>> keys = opts_.config_keys;
  // net.compression joins the run keys when it is not none (hello_fields)
  if (opts_.codec != Codec::kNone && !keys.empty()) keys.emplace_back(kCompressionKey, codec_config_hash(opts_.codec));
  return keys;
}

HelloInfo Communicator::hello_fields() const {
  HelloInfo f;
  f.fields = {opts_.config_hash ^ codec_config_hash(opts_.codec),
              opts_.sketch_seed,
              static_cast<uint64_t>(nodes_),
              static_cast<uint64_t>(opts_.mixer),
              static_cast<uint64_t>(opts_.window),
              opts_.chunk_bytes,
              count_,
              opts_.first_round,
              opts_.start_step,
              incarnation_};
  for (size_t k = 0; k < opts_.config_keys.size() && k < kMaxHelloKeys; ++k) {  // k over the run keys
    const std::string& path = opts_.config_keys[k].first;
    f.keys.emplace_back(hash64(path.data(), path.size()), opts_.config_keys[k].second);
  }
  if (opts_.codec != Codec::kNone && !opts_.config_keys.empty())  // named in a refusal (hello_keys)
    f.keys.emplace_back(hash64(kCompressionKey, std::strlen(kCompressionKey)), codec_config_hash(opts_.codec));
  return f;
}

namespace {
constexpr const char* kGossipNoJoin =
    "the run mixes by gossip, which takes no node in while it runs (there is no shared anchor to hand over); "
    "the others go on without it, and a cluster restarted from its checkpoints (--resume) has it back";
}  // namespace

Reject Communicator::handle_hello(const Header& h, const HelloInfo& hello) {
  const int peer = static_cast<int>(h.sender);
  const HelloInfo ours_info = hello_fields();
  const auto& theirs = hello.fields;
  const auto& ours = ours_info.fields;
  const bool from_running = (h.flags & kHelloRunning) != 0;
  // The fields every node must share (the start round and step only at a
  // common start: a joiner takes the running view's).
  auto differing = [&](bool with_start) { return hello_differing(hello, ours_info, with_start, hello_keys()); };
  PeerState& ps = peers_[static_cast<size_t>(peer)];
  if (membership() && phase_ == Phase::kRunning) {
    if (from_running) return Reject::kDuplicate;  // a member answering an earlier hello of ours
    // A node asks to join the running view: refused (logged, counted, nothing
    // applied) when it runs another configuration or its id is a live member.
    std::string why = differing(false);
    if (why.empty() && view_.has(peer) && !ps.lost && ps.incarnation != 0 && theirs[kHelloIncarnation] != ps.incarnation)
      suspect(peer, peer_name(peer) + " started again (a new process): the earlier one is gone");
    if (why.empty() && view_.has(peer) && !ps.lost && ps.incarnation != 0 &&
        theirs[kHelloIncarnation] == ps.incarnation)
      return Reject::kDuplicate;  // a member's hello said again (late, or its answer to a restarted node)
    if (why.empty() && view_.has(peer) && !ps.lost)
      why = "node " + std::to_string(peer) + " is a live member of view " + std::to_string(view_.epoch) +
            " (an earlier incarnation still answers; it is asked again once that one is taken for dead)";
    if (why.empty() && gossip_) why = kGossipNoJoin;
    if (!why.empty()) {
      std::fprintf(stderr, "[tether.net node %d] refuses the join request of %s: %s\n", opts_.self,
                   peer_name(peer).c_str(), why.c_str());
      if (!(view_.has(peer) && !ps.lost)) {  // another configuration: our hello tells it why (it exits 2)
        Header reply;
        reply.kind = Kind::kHello;
        reply.flags = kHelloRunning;
        const std::vector<unsigned char> bytes = encode_hello(ours_info);
        transport_->send(peer, reply, zmq::message_t(bytes.data(), bytes.size()), nullptr);
      }
      return Reject::kUnexpected;
    }
    if (std::find(joiners_.begin(), joiners_.end(), peer) == joiners_.end()) {
      joiners_.push_back(peer);
      std::fprintf(stderr, "[tether.net node %d] %s asks to join view %u\n", opts_.self, peer_name(peer).c_str(),
                   view_.epoch);
    }
    ps = PeerState{};
    ps.hello = true;
    ps.incarnation = theirs[kHelloIncarnation];
    ps.last_seen = Clock::now();
    Header reply;
    reply.kind = Kind::kHello;
    reply.flags = kHelloRunning;
    const std::vector<unsigned char> bytes = encode_hello(ours_info);
    transport_->send(peer, reply, zmq::message_t(bytes.data(), bytes.size()), nullptr);
    if (!changing_) {
      changing_ = true;
      change_started_ = Clock::now();
      change_reason_ = "node " + std::to_string(peer) + " joined";
    }
    maybe_change_view();
    return Reject::kNone;
  }
  if (membership() && from_running && phase_ == Phase::kStarting) {
    // The others already run: this node joins their view.
    std::string why = differing(false);
    if (why.empty() && gossip_) why = kGossipNoJoin;
    if (!why.empty()) {
      const std::string what = "node " + std::to_string(opts_.self) + " cannot join the running view of " + peer_name(peer) + ": " + why;
      std::fprintf(stderr, "[tether.net node %d] %s\n", opts_.self, what.c_str());
      fail(std::make_exception_ptr(StartRefused({peer}, what)));
      return Reject::kNone;
    }
    if (!joining_) {
      joining_ = true;
      view_ = View{};
      promised_ = 0;
      transport_->set_epoch(0);
      std::fprintf(stderr, "[tether.net node %d] the others are running: joining their view\n", opts_.self);
    }
    ps.hello = true;
    ps.incarnation = theirs[kHelloIncarnation];
    ps.last_seen = Clock::now();
    return Reject::kNone;
  }
  if (from_running) return Reject::kUnexpected;
  if (theirs[kHelloStartRound] != ours[kHelloStartRound] || theirs[kHelloStartStep] != ours[kHelloStartStep]) {
    auto where = [](uint64_t round, uint64_t step) {
      return step == 0 ? std::string("a fresh start (round 0, step 0)")
                       : "a checkpoint cut at round " + std::to_string(round) + " (step " + std::to_string(step) + ")";
    };
    const std::string what = "node " + std::to_string(opts_.self) + " refuses " + peer_name(peer) + ": it starts from " +
                             where(theirs[kHelloStartRound], theirs[kHelloStartStep]) + ", this node from " +
                             where(ours[kHelloStartRound], ours[kHelloStartStep]) +
                             "; resume every node from checkpoints of one cut (or all from one checkpoint), or none";
    std::fprintf(stderr, "[tether.net node %d] %s\n", opts_.self, what.c_str());
    fail(std::make_exception_ptr(StartRefused({peer}, what)));
    return Reject::kNone;
  }
  if (const std::string why = differing(true); !why.empty()) {
    const std::string what = "node " + std::to_string(opts_.self) + " refuses " + peer_name(peer) + ": " + why;
    std::fprintf(stderr, "[tether.net node %d] %s\n", opts_.self, what.c_str());
    fail(std::make_exception_ptr(StartRefused({peer}, what)));
    return Reject::kNone;
  }
  ps.hello = true;
  ps.incarnation = theirs[kHelloIncarnation];
  ps.last_seen = Clock::now();
  maybe_started();
  return Reject::kNone;
}

void Communicator::handle_params(const Header& h, const zmq::message_t& payload) {
  std::memcpy(params_ + h.offset, payload.data(), h.count * sizeof(float));
  params_seen_[h.chunk] = 1;
  ++params_received_;
  maybe_started();
}

void Communicator::handle_bye(const Header& h) {
  const int peer = static_cast<int>(h.sender);
  PeerState& ps = peers_[static_cast<size_t>(peer)];
  ps.bye = true;
  ps.bye_failed = (h.flags & kByeFailed) != 0;
  ps.bye_rounds = h.round;
  if (membership() && phase_ == Phase::kRunning && ps.bye_failed && view_.has(peer)) {
    suspect(peer, peer_name(peer) + " stopped after a failure (bye after " + std::to_string(h.round) + " rounds)");
    return;
  }
  if (opts_.service && phase_ == Phase::kRunning) opts_.service->peer_left(peer, ps.bye_failed);
  if (gossip_ && !ps.bye_failed) cut_on_bye(peer);
  if (phase_ == Phase::kRunning && (ps.bye_failed || submitted_io_ > h.round)) {
    const std::string what = ps.bye_failed
        ? peer_name(peer) + " stopped after a failure (bye after " + std::to_string(h.round) + " rounds)"
        : peer_name(peer) + " left (bye after " + std::to_string(h.round) + " rounds); round " +
              std::to_string(h.round) + " cannot complete";
    {
      std::lock_guard<std::mutex> lk(mu_);
      lost_.push_back(peer);
    }
    fail(std::make_exception_ptr(PeerLost(peer, 0.0, what, !ps.bye_failed)));
  }
  check_stop_ready();
}

void Communicator::on_submit(uint64_t round, std::shared_ptr<RoundBuffer> data,
                             std::shared_ptr<RoundBuffer> sketch, uint64_t applied, RoundFlags flags) {
  if (!transport_ || phase_ != Phase::kRunning) return;
  for (int p = 0; p < nodes_; ++p) {  // a member that left before this round
    const PeerState& ps = peers_[static_cast<size_t>(p)];
    if (p != opts_.self && ps.bye && ps.bye_rounds <= round && (!membership() || view_.has(p))) {
      {
        std::lock_guard<std::mutex> lk(mu_);
        lost_.push_back(p);
      }
      fail(std::make_exception_ptr(PeerLost(p, 0.0,
                                            peer_name(p) + " left (bye after " +
                                                std::to_string(ps.bye_rounds) + " rounds); round " +
                                                std::to_string(round) + " cannot complete",
                                            !ps.bye_failed)));
      return;
    }
  }
  if (opts_.test_crash_at && opts_.test_crash_at("submit", round)) {
    crash_now("submit");
    return;
  }
  Slot& slot = slots_[round];
  slot.submitted = true;
  slot.own_sketch = sketch;
  // Ring: the stop mark rides on this round's sketches. Gossip: the stop is
  // agreed by kCut messages (module comment, "Coordinated cut, gossip").
  const bool ring_stop = flags.stop && !gossip_;
  slot.own_stop = ring_stop;
  slot.stop = slot.stop || ring_stop;
  if (flags.stop && gossip_) cut_request();
  slot.applied = applied;
  slot.exact = flags.exact;
  // The caller's vector goes back with the result when the mixer only reads
  // it (the ring); gossip works on it in place.
  const bool keeps = mixer_for(slot)->keeps_input();
  if (keeps) slot.original = data;
  // Error feedback: the losses of round round - window and earlier ride on
  // this round's vector, a copy (the caller's stays as it was; `retained`
  // keeps the copy, so a re-run carries them).
  if (feedback_ && !flags.exact) {
    std::vector<float> copy = mixer_for(slot)->take_spare();  // no page faults when one is spare
    copy.assign(data->data.begin(), data->data.end());
    data = make_buffer(std::move(copy));
    std::lock_guard<std::mutex> lk(mu_);
    feedback_->apply(round, data->data.data(), data->data.size());
  }
  // Keep what we submit until the round is done here; a view change re-runs
  // it over the new members. A mixer that keeps its input (the ring) leaves
  // this very buffer unchanged; gossip reuses it in place, so a copy.
  if (membership()) slot.retained = keeps ? data : make_buffer(data->data);
  for (int p = 0; p < nodes_; ++p) {  // the sketch goes to every other live member
    if (p == opts_.self || (membership() && (!view_.has(p) || peers_[static_cast<size_t>(p)].lost))) continue;
    Header h;
    h.kind = Kind::kSketch;
    h.flags = ring_stop ? kStopRequest : 0;
    h.round = round;
    h.count = sketch->data.size();
    transport_->send(p, h, zero_copy(sketch, 0, sketch->data.size()), nullptr);
  }
  submitted_io_ = round + 1;
  progress_at_ = Clock::now();
  // During a view change the round waits: the commit re-runs it in the new view.
  if (!slot.transfer && !changing_) {
    to_mixer(round, slot, std::move(data));
  }
  try_complete();
}

void Communicator::try_complete() {
  if (!ring_) return;
  if (gossip_ && gossip_->half_sent() && phase_ != Phase::kDone) {  // test hook: the partner has half of this node's snapshot
    crash_now("gossip-half", kTestCrashLingerMs);
    return;
  }
  // A view change is complete here once its resume round is reached: x̄ is
  // then the same on every member (the record carries its hash), and joiners
  // get it. Its event is queued before the result of any round from the
  // resume round on: a trainer that has applied round r has taken every
  // view whose resume round is <= r (the data epochs' rule, runtime/trainer.cpp).
  auto push_view_event = [this] {
    if (!membership() || joining_ || done_ < resume_round_ || !pending_event_) return;
    pending_event_->has_anchor = !gossip_;
    if (!gossip_) pending_event_->anchor_hash = hash64(anchor_io_.data(), anchor_io_.size() * sizeof(float));
    pending_event_->transferred_bytes = transferred_bytes_;
    push_event(*pending_event_);
    pending_event_.reset();
  };
  for (;;) {  // deliver finished rounds in order; bounded by the window
    push_view_event();
    auto it = slots_.find(done_);
    if (it == slots_.end()) break;
    Slot& slot = it->second;
    // Never waits on its own sketch's frames: one sent to a peer that died
    // stays in ZeroMQ's queue until that peer's socket is reset (copied below).
    if (!slot.submitted) break;
    if (slot.transfer) {  // its result comes from a member that holds it
      if (slot.result_chunks != slot.result_seen.size()) break;
    } else if (gossip_) {
      // Gossip: the partner's exchange alone (an exact round: the ring's
      // all-reduce); sketches do not gate it, unless the barrier is asked for.
      if (changing_ || !mixer_for(slot)->finished(done_)) break;
      if (opts_.gossip_barrier && !slot.exact && !barrier_sketches_in(done_)) break;
    } else {
      size_t sketches = 0;
      for (const auto& [id, sk] : slot.sketches) sketches += membership() ? view_.has(id) : 1;
      const size_t others = membership() ? view_.members.size() - 1 : static_cast<size_t>(nodes_ - 1);
      if (sketches != others || changing_ || !mixer_for(slot)->finished(done_)) break;
    }
    RoundResult res;
    res.round = done_;
    res.exact = slot.exact;
    res.stop_requested = slot.stop;
    std::shared_ptr<std::vector<float>> mixed;  // shared with kept_: never copied
    if (slot.transfer) {
      mixed = std::make_shared<std::vector<float>>(std::move(slot.result));
    } else {
      std::vector<float> loss = mixer_for(slot)->take_loss(done_);
      if (feedback_ && !loss.empty()) {
        std::lock_guard<std::mutex> lk(mu_);
        feedback_->record(done_, std::move(loss));
      }
      mixed = std::make_shared<std::vector<float>>(mixer_for(slot)->take(done_, &res.partner));
      // A copy of what we submitted (error feedback's, gossip's) is no longer
      // needed: storage for a later result, once ZeroMQ holds none of it.
      if (slot.retained && slot.retained != slot.original && slot.retained->in_flight.load() == 0)
        mixer_for(slot)->recycle(std::move(slot.retained->data));
    }
    if (slot.original) {  // the caller's vector back; a copy while ZeroMQ still reads it
      if (slot.original->in_flight.load() == 0) {
        res.submitted = std::move(slot.original->data);
      } else {
        res.submitted = slot.original->data;
      }
    }
    if (gossip_) {
      gossip_sketches(done_, &res);
    } else {
      res.sketches = std::move(slot.sketches);
      for (const auto& [id, sk] : res.sketches) res.sketch_rounds[id] = done_;
    }
    if (slot.own_sketch->in_flight.load() == 0) {  // ZeroMQ holds none of it
      res.sketches[opts_.self] = std::move(slot.own_sketch->data);
    } else {  // still lent to ZeroMQ (read only there): a copy
      res.sketches[opts_.self] = slot.own_sketch->data;
    }
    res.sketch_rounds[opts_.self] = done_;
    res.mixed = mixed;
    keep_result(done_, std::move(mixed), res.exact);
    slots_.erase(it);
    const uint64_t round = done_++;
    progress_at_ = Clock::now();
    res.done_s = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    const bool exact = res.exact;
    {
      std::lock_guard<std::mutex> lk(mu_);
      results_.push_back(std::move(res));
      cv_.notify_all();
    }
    advance_anchor(round, exact);  // the trainer has its result already
  }
  push_view_event();
  if (membership() && !joining_ && done_ >= resume_round_) {
    for (int j : state_to_) send_state(j);
    state_to_.clear();
  }
}

}  // namespace tether::net
