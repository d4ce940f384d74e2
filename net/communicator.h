// Communicator — one node's end of the network: what the trainer thread calls.
//
// Two threads per node: the caller (trainer) and one I/O thread that runs a
// boost::asio::io_context owning the Transport (every ZeroMQ socket), the
// mixer, heartbeats and time-outs. The trainer hands vectors over with
// submit() (moved, never copied; posted to the io_context) and takes finished
// rounds from a small mutex-guarded queue with poll()/wait(). No singletons:
// many communicators can live in one process.
//
// Start-up: bind, connect, hello to every peer (protocol version, config hash,
// sketch seed, node count, mixer, window, chunk size and parameter count must
// agree or the peer is refused), then node 0 broadcasts the initial
// parameters; each node that has them all says so (kReady), and node 0 lets
// every node start (kReady back) once all have: start() returns on every
// node within a message's latency (node 0 would otherwise train on alone
// while its broadcast crosses the links, and wait for the others later). A round r is accepted from peers while done <= r < done + 2 *
// window (done: the lowest round not finished here): a peer may be up to two
// windows ahead (its window, plus ours it may have finished).
// Failure: heartbeats every heartbeat_ms; any valid frame counts as a sign
// of life; a peer silent for peer_timeout_ms (or one that said bye before the
// rounds this node still needs) is lost: suspected (membership, below) or,
// without membership, PeerLost from poll/wait/submit. A socket monitor on
// the connection to each peer speeds this up: when that connection drops (a
// killed process closes its TCP connections at once) and it does not
// reconnect within disconnect_grace_ms() (2 heartbeats, at least 500 ms, at
// most peer_timeout_ms), the peer is lost then. A live peer's connection
// comes back within ZeroMQ's reconnect interval (100 ms), so a drop alone
// costs nothing; a pulled cable drops nothing, and heartbeats judge it.
//
// Membership (ring; net/membership.cpp). The nodes training at a moment are a
// view: an epoch and the sorted live ids; every ring/sketch/result frame
// carries its sender's epoch, and frames of an older view are dropped
// (counted as stale_epoch). A member silent for peer_timeout_ms, whose
// connection dropped, that said bye after a failure, or whose rounds make no
// progress for round_timeout_ms is suspected; a configured node that says
// hello while the view runs asks to join. The lowest live member (never a
// joiner, whatever its id) coordinates, with no master: it proposes view e+1 (which needs a majority of the configured
// nodes) to its members, each answers with the first round it has not
// finished (done) and whether it joins; with every answer it commits the view
// and the resume round R = the largest done. Rounds below R are complete
// somewhere: a member that lacks one receives its result (same bits) from the
// lowest member that holds it; rounds from R on are re-run over the new view
// from each member's retained vector. A joiner receives x̄ at R from the
// lowest member and starts there. If the coordinator dies during the change,
// the next lowest live id proposes a higher epoch (each node promises one
// coordinator per epoch, so two views never share an epoch). A node that
// cannot see a majority stops (its rounds wait), and raises NoQuorum after
// quorum_wait_ms naming the peers it cannot reach. A node left out of a view
// (stopped, partitioned, falsely suspected) learns it from the members and
// raises Excluded: it must start again and join.
// Gossip rounds (issue 16): a gossip round is complete here once its
// partner's snapshot has arrived (net/gossip.h); it does not wait for the
// other nodes' sketches. Sketches still go to every member with each round,
// and a round's result carries the latest sketch that has arrived from each
// member (at most that round; RoundResult::sketch_rounds says which round
// each belongs to), so the monitor estimates distances from sketches of
// different ages and reports how old they are. Without a barrier a node can
// run ahead of a slow one by more than the window: its partner's frames are
// accepted up to ahead_limit() rounds ahead (2 windows plus 2N: a partner is
// at most the window plus one schedule period ahead, net/gossip.h), a
// member's sketch of any earlier round is taken while newer than the last one
// held from it. CommOptions::gossip_barrier brings the barrier back (every
// round also waits for every member's sketch of that round): a measuring
// aid, bench/gossip_straggler.sh.
// Coordinated cut, gossip. Without the barrier a stop mark riding on one
// round's sketches is not seen by every node before it closes the rounds
// after it, so a gossip run agrees on the cut round R with a small protocol
// (kCut frames, the view's lowest live member coordinates): a node asked to
// stop (RoundFlags::stop) asks the coordinator; it queries every member;
// each answers with its next round n_j (the rounds its trainer submitted)
// and promises not to close a round r with r + 1 >= n_j + margin until it
// learns R (wait_close_allowed(); margin = window + 1); the coordinator
// decides R = max_j n_j + margin and sends it to every member, and each
// member passes it on once to every other (so a member that learnt R before
// the coordinator died is not the only one that knows it). No node has closed
// round R - 1 before it knew R, so every node stops at R: its checkpoint of
// the cut holds rounds 0..R-1. A member that said bye answers with the rounds
// it submitted. A view change during the agreement: the new coordinator
// queries again (an answer carries R if the member knew it, and then R is
// kept), and a promise only ever tightens. The ring keeps the stop mark on
// its sketches (its rounds are global anyway).
// A frame that fails validation is refused, counted and logged. When it came
// on a peer's own connection and its bytes are broken (checksum, finite
// values, length, layout, header: see corrupts_stream), what that peer sent
// is lost and there is no retransmission, so a round would wait for it
// forever: PeerCorrupt is raised instead, naming the peer and the reason.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <zmq.hpp>

#include "net/codec.h"
#include "net/gossip.h"
#include "net/hello.h"
#include "net/mixer.h"
#include "net/wire.h"

namespace tether::net {

class Transport;
class Service;

struct PeerAddr {
  int id;
  std::string host;
  int port;
  std::string public_key = {};  // Z85, 40 characters: required with CommOptions::curve
};
enum class MixerKind { kRing, kGossip };

struct CommOptions {
  int self = 0;
  std::vector<PeerAddr> peers;  // all nodes incl. self, ids 0..N-1
  MixerKind mixer = MixerKind::kRing;
  int window = 3;                  // rounds that may be in flight (staleness s + 1)
  size_t chunk_bytes = 1 << 20;    // ring pipelining chunk
  int connect_timeout_ms = 30000;  // start-up: all peers must say hello by then
  int heartbeat_ms = 200, peer_timeout_ms = 3000;
  // A round this node waits for that makes no progress for this long (a
  // peer whose I/O thread answers heartbeats but whose trainer is stalled, or
  // that sent only part of a round) raises PeerLost naming the peers whose
  // sketch is missing. 0: off.
  int round_timeout_ms = 120000;
  double inject_delay_ms = 0;   // emulated one-way latency added to every message we send
  double inject_rate_mbps = 0;  // emulated egress link rate (0 = off)
  uint64_t sketch_seed = 0;     // carried for hello validation (all must agree)
  // Floats in every sketch (0: any length up to 2^24). Set, a sketch frame
  // of another length is refused, and the largest legal frame of any kind
  // bounds what ZeroMQ buffers from a connection (ZMQ_MAXMSGSIZE).
  uint64_t sketch_floats = 0;
  uint64_t config_hash = 0;     // hello: peers with another config hash are refused
  // CurveZMQ on every link (net/transport.h): this node's keypair (Z85) and
  // every peer's public_key. A frame is taken from peer k only when its
  // connection authenticated with k's key. Off (plaintext, the library's
  // default; the tether binary's default is on, net.security): a peer is the
  // routing id its first accepted hello came on, and a hello claiming the
  // same peer on another connection is refused and logged (identity_taken).
  bool curve = false;
  std::string secret_key, public_key;
  // The keys behind config_hash: JSON path -> hash of its value. Sent with
  // the hello, so a refusal names the keys that differ.
  std::vector<std::pair<std::string, uint64_t>> config_keys;
  // Where this run starts: 0, 0 for a fresh run; a resumed cluster starts at
  // its checkpoints' cut. Every node must agree (hello); the initial
  // parameters are broadcast from node 0 only when start_step is 0.
  uint64_t first_round = 0, start_step = 0;
  // Membership (ring): how long a node that cannot see a majority waits for
  // peers to return before NoQuorum; a view change that takes longer than
  // view_timeout_ms (0: 2 * peer_timeout_ms) is retried without the members
  // that did not answer.
  int quorum_wait_ms = 60000;
  int view_timeout_ms = 0;
  // Late start (ring): a node still starting after late_start_ms (when that
  // is below connect_timeout_ms) that has hellos from a majority of the
  // configured nodes, and the lowest id among them, proposes view 2 of those
  // nodes; the others take it while they start (a fresh run: x̄, the
  // proposer's start parameters, streamed as to a joiner; a resumed one:
  // every node keeps its own). The missing nodes join when they start.
  // 0: off (every node must say hello).
  int late_start_ms = 0;
  // Test hook (I/O thread), asked at points of a round ("submit" before this
  // node's round leaves, "reduce-scatter" / "all-gather" as a chunk arrives,
  // "commit" as a coordinator commits a view, "state" halfway through
  // streaming x̄ to a joiner): true makes this node crash there, closing every
  // socket without a bye (as kill -9 would). At "corrupt-state" (asked as a
  // node starts streaming x̄), true sends one chunk with a checksum that does
  // not match its bytes, and the node goes on.
  // Each point is asked with its round; "commit" with the proposed view's
  // epoch. A crash raises TestCrash from poll/wait/submit.
  std::function<bool(const char* point, uint64_t round)> test_crash_at;
  // Test hook: runs on the I/O thread between bind and connect (a test holds
  // a node there so that a peer's hello is queued before this node's
  // start-up state exists).
  std::function<void()> test_after_bind;
  // Gossip only, a measuring aid (bench/gossip_straggler.sh): every gossip
  // round also waits for every member's sketch of that round, the global
  // barrier gossip had before issue 16. Off: a round completes with its
  // partner's exchange alone.
  bool gossip_barrier = false;
  // net.compression: the codec of every tensor payload (ring chunks, gossip
  // snapshots, and the service's pushes and fetch replies: it takes the same
  // codec). Every node must run the same one (the hello compares it, and the
  // refusal names net.compression). Ring: with error feedback, what a
  // round's encodings lost here is added to this node's vector of round
  // r + window (the first round that can only be submitted after r finished,
  // so reproducibly the same one); gossip keeps its own residual (gossip.h).
  Codec codec = Codec::kNone;
  // Frames of the service kinds (kPush, kFetch, kShard, kAck: the
  // parameter-server baselines, net/shard_server.h) go to it; none: refused.
  std::shared_ptr<Service> service;
};

// The points CommOptions::test_crash_at is asked at (the tether binary's
// hidden --crash-at flag takes one of them), and "window": asked by the
// averaging (runtime/averaging.cpp) with the oldest round in flight as the
// trainer is about to wait on its staleness window; true crashes the node
// there (Communicator::crash). "gossip-half": as this node's snapshot of the
// round leaves for its partner, after the first half of its chunks (which
// arrive; the rest never leave). Gossip's stop agreement, at its coordinator:
// "cut-answer" as the first answer to its query arrives (round: the rounds
// this node submitted), the members it queried having promised; "cut-decide"
// once it has decided the cut round R (round: R) and sent R to one member
// only, the highest other one (not the next coordinator), whose frame still
// leaves (ZeroMQ lingers on it, as the kernel sends what a killed process
// wrote).
inline constexpr const char* kTestCrashPoints[] = {"submit", "reduce-scatter", "all-gather", "gossip-half", "commit",
                                                   "state", "corrupt-state", "window", "cut-answer", "cut-decide"};

// Per-round options of submit().
struct RoundFlags {
  bool exact = false;  // a ring all-reduce whatever the mixer (a gossip run's closing average);
                       // every node must mark the same rounds
  bool stop = false;   // ask every node to stop at a common round boundary. Ring: the result
                       // of this round says so on every node (RoundResult::stop_requested);
                       // gossip: starts the stop agreement (cut_round(), module comment)
};

struct RoundResult {
  uint64_t round;
  // Ring (and exact rounds): mean of all nodes' vectors (same bits
  // everywhere); gossip: the correction (partner − own) / 2 of the completed
  // snapshots (0 without a partner), gossip.h. Read only: the communicator
  // keeps the same storage for a while (a member that lags after a view
  // change gets it from there), so a result is never copied; once it is
  // dropped here and there, the storage holds a later round's result.
  std::shared_ptr<const std::vector<float>> mixed;
  bool exact = false;        // submitted with RoundFlags::exact
  bool stop_requested = false;  // some node (maybe this one) set RoundFlags::stop for this
                                // round: the same on every node
  std::map<int, std::vector<float>> sketches;  // node id -> its sketch: ring, of this round
                                               // (every member); gossip, the latest that has
                                               // arrived of a round <= this one (a member
                                               // with none yet is absent)
  std::map<int, uint64_t> sketch_rounds;       // node id -> the round of its sketch above
  int partner = -1;                            // gossip partner, -1 for ring
  double done_s = 0;   // when the I/O thread completed it: steady_clock, seconds since its epoch
  // The vector submit() was given for this round, its bits unchanged, when
  // the mixer only read it (the ring, and exact rounds): the caller keeps
  // what it submitted without a copy of its own. Empty for gossip rounds,
  // whose mixer works on it in place. (Error feedback adds its residual to
  // a copy the communicator makes, never to this vector.)
  std::vector<float> submitted;
};

// The storage of a result no one else holds any longer (a gossip round's;
// the communicator keeps ring results for a while), for the caller to reuse;
// empty when it is still shared. Resets `mixed` either way. (Results are
// created mutable and only handed out read only, so taking one back is
// defined.)
std::vector<float> take_storage(std::shared_ptr<const std::vector<float>>& mixed);

// One view change as this node saw it (Communicator::take_events).
struct ViewEvent {
  uint32_t epoch = 0;
  std::vector<int> members;
  std::string reason;            // "node 2 silent for 1503 ms", "node 2 joined", ...
  uint64_t resume_round = 0;     // rounds from here on run in this view
  double ms = 0;                 // from the first suspicion (or join request) to the commit here
  uint64_t anchor_hash = 0;      // hash64 of x̄ at resume_round: equal on every member
  bool has_anchor = true;        // false for gossip (no shared anchor)
  uint64_t transferred_bytes = 0;  // results and state received for this change
  bool joined = false;           // this node joined with this view
};

// Errors the caller can act on (STYLE: typed by how one recovers).
struct NetError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A peer stopped answering (or left) while this node still needs it.
struct PeerLost : NetError {
  int peer;
  double silent_ms;
  bool graceful;   // the peer said bye (it was stopped) rather than fell silent
  PeerLost(int peer_id, double silent, const std::string& what, bool said_bye = false)
      : NetError(what), peer(peer_id), silent_ms(silent), graceful(said_bye) {}
};
// This node cannot be in a view with a majority of the configured nodes and
// waited quorum_wait_ms for peers to return.
struct NoQuorum : NetError {
  std::vector<int> unreachable;
  NoQuorum(std::vector<int> ids, const std::string& what) : NetError(what), unreachable(std::move(ids)) {}
};
// The others formed a view without this node: it must start again and join.
struct Excluded : NetError {
  uint32_t epoch;
  Excluded(uint32_t e, const std::string& what) : NetError(what), epoch(e) {}
};
// A frame on a peer's own connection failed validation in a way no correct
// peer produces (see corrupts_stream): what it carried is lost.
struct PeerCorrupt : NetError {
  int peer;
  Reject reason;
  PeerCorrupt(int peer_id, Reject why, const std::string& what)
      : NetError(what), peer(peer_id), reason(why) {}
};
// True for the reasons that mean a frame's bytes are broken (as opposed to a
// valid frame that came late, twice, or from somebody else).
bool corrupts_stream(Reject r);
// This node crashed on purpose (CommOptions::test_crash_at, crash()): its
// sockets were closed without a bye, as kill -9 would. Nothing more is sent.
struct TestCrash : NetError {
  using NetError::NetError;
};
// start() failed: unreachable peers, refused configuration, bind failure.
struct StartFailed : NetError {
  std::vector<int> peers;  // the peers responsible, when known
  StartFailed(std::vector<int> ids, const std::string& what) : NetError(what), peers(std::move(ids)) {}
};
// start() refused a peer that runs another configuration or starts from
// another checkpoint cut: a usage error, not a network one.
struct StartRefused : StartFailed {
  using StartFailed::StartFailed;
};

struct CommStats {
  uint64_t bytes_sent = 0, bytes_recv = 0, msgs_rejected = 0;
  // Tensor payloads (ring, gossip, push and shard frames) handed to the
  // transport: bytes as encoded, and what the same values take as float32
  // (raw). Without compression they are equal; bf16 halves tensor_bytes_sent,
  // int8 takes about a quarter.
  uint64_t tensor_bytes_sent = 0, tensor_raw_bytes_sent = 0;
  std::map<std::string, uint64_t> rejected_by_reason;
  // connections refused before any frame was read (handshake_failure_name)
  uint64_t handshakes_failed = 0;
  std::map<std::string, uint64_t> handshake_failed_by_reason;
};

class Communicator {
 public:
  explicit Communicator(CommOptions options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // Bind/connect, hello handshake with every peer, then (a fresh run,
  // start_step 0) broadcast `params` (count floats) from node 0 so every node
  // starts from identical bits; a resumed run keeps every node's own.
  // Throws StartFailed naming the unreachable or refused peers after
  // connect_timeout_ms.
  // A node that finds the others running joins their view instead: start()
  // returns once it holds x̄ at the view's resume round (written to params;
  // joined() and first_round() say so). `anchor`: x̄ of a resumed run (empty:
  // the start parameters).
  void start(float* params, size_t count, std::vector<float> anchor = {});
  // After start(): the first round this node runs and whether it joined a
  // running view.
  uint64_t first_round() const { return first_round_; }
  bool joined() const { return joined_; }
  // View changes since the last call (thread-safe).
  std::vector<ViewEvent> take_events();
  // Test hook: crash now (no bye), from any thread; `where` names the point
  // in the TestCrash it raises.
  void crash(const char* where = "crash()");
  // Trainer thread, non-blocking: this round's vector (count floats; ring: the
  // delta, gossip: the snapshot, with the results of every round returned by
  // poll/wait so far already applied to it) and this node's sketch. Rounds in
  // order 0, 1, 2, ...; at most `window` submitted and not yet returned by
  // poll/wait. Rounds are numbered from CommOptions::first_round.
  void submit(uint64_t round, std::vector<float> data, std::vector<float> sketch, RoundFlags flags = {});
  std::optional<RoundResult> poll();               // next finished round, in order, or nothing
  std::optional<RoundResult> wait(int timeout_ms);  // blocks up to timeout_ms
  // Graceful: send bye, wait (up to drain_timeout_ms) for every peer's bye and
  // for our queued messages to leave, then join the I/O thread.
  // failed: this node stops because of a failure; its bye says so and the
  // peers fail too (PeerLost, not graceful) instead of stopping cleanly.
  void stop(int drain_timeout_ms, bool failed = false);
  CommStats stats() const;  // thread-safe snapshot

  // Gossip's stop agreement (module comment, "Coordinated cut, gossip"),
  // trainer thread. The cut round once decided: every node stops at the
  // boundary before it (rounds 0..R-1 closed). Thread-safe.
  std::optional<uint64_t> cut_round() const;
  // Blocks up to timeout_ms until this node may close `round` under its
  // promise: the cut is decided, or round + 1 is below the limit it promised
  // (no promise: at once). False on time-out; raises the communicator's error.
  bool wait_close_allowed(uint64_t round, int timeout_ms);
  // Rounds submitted and not yet returned (what the window bounds).
  uint64_t in_flight() const { return next_submit_ - next_poll_; }
  // Error feedback of the ring (I/O thread state, copied under the lock as
  // rounds finish): the losses recorded and not yet added to a submitted
  // round (count floats; zero without compression). Thread-safe.
  std::vector<float> residual() const;
  // Peers detected silent so far (thread-safe).
  std::vector<int> lost_peers() const;
  int self() const { return opts_.self; }
  bool curve() const { return opts_.curve; }
  int nodes() const { return static_cast<int>(opts_.peers.size()); }

 private:
  using Clock = std::chrono::steady_clock;
  enum class Phase { kIdle, kStarting, kRunning, kStopping, kDone };
  struct PeerState {
    bool hello = false, bye = false, lost = false, bye_failed = false;
    Clock::time_point notified{};  // last time told it is outside the view
    uint32_t notified_epoch = 0;   // of which view
    uint64_t incarnation = 0;      // from its hello: which process of that node
    uint64_t bye_rounds = 0;  // rounds the peer submitted before its bye
    Clock::time_point last_seen{};
    // Our connection to it dropped (Transport's socket monitor) at closed_at;
    // no reconnect within disconnect_grace_ms() makes it lost.
    bool closed = false;
    Clock::time_point closed_at{};
  };
  struct Slot {  // one round at the I/O thread
    bool submitted = false;
    bool exact = false;  // ring all-reduce whatever the mixer
    bool stop = false;   // some node asked to stop (RoundFlags::stop)
    std::shared_ptr<RoundBuffer> own_sketch;
    std::map<int, std::vector<float>> sketches;  // other nodes'
    bool own_stop = false;                        // our sketch carried kStopRequest
    // What we submitted (re-run in a new view): the submitted buffer itself
    // when the mixer keeps its input (the ring), else a copy.
    std::shared_ptr<RoundBuffer> retained;
    // The caller's vector, returned with the result (RoundResult::submitted):
    // the mixer's input itself, or with error feedback the original of the
    // copy the residual was added to. Null for gossip rounds.
    std::shared_ptr<RoundBuffer> original;
    uint64_t applied = 0;                         // submit()'s applied
    bool in_mixer = false;                        // handed to the mixer of the current view
    // reconciliation: the round's result, received from a member that holds it
    bool transfer = false;
    int holder = -1;
    std::vector<float> result;
    std::vector<uint8_t> result_seen;  // [chunk]
    uint64_t result_chunks = 0;
  };
  struct View {
    uint32_t epoch = 0;
    std::vector<int> members;  // sorted
    bool has(int id) const;
  };
  struct Accept {
    uint64_t done = 0, submitted = 0;
    bool joiner = false;
  };
  struct Proposal {
    uint32_t epoch = 0;
    std::vector<int> members;
    std::map<int, Accept> accepts;
  };
  struct Future {  // a frame of a view this node has not committed yet
    Header h;
    std::vector<zmq::message_t> parts;
    int conn_peer = -1;  // msg_peer_ of the connection it came on (handled again as if it came now)
  };

  // I/O thread
  void io_main();
  void on_message(std::vector<zmq::message_t>& parts, bool truncated, int auth_peer);
  Reject handle(const Header& h, std::vector<zmq::message_t>& parts);
  Reject handle_hello(const Header& h, const HelloInfo& theirs);
  HelloInfo hello_fields() const;
  // The run keys our hello carries, by path (config_keys and net.compression).
  std::vector<std::pair<std::string, uint64_t>> hello_keys() const;
  void handle_params(const Header& h, const zmq::message_t& payload);
  void send_ready(int peer);
  void handle_bye(const Header& h);
  void on_submit(uint64_t round, std::shared_ptr<RoundBuffer> data,
                 std::shared_ptr<RoundBuffer> sketch, uint64_t applied, RoundFlags flags);
  Mixer* mixer_for(const Slot& slot) const;
  void maybe_started();
  // Start-up is over: the trainer may run (start() returns).
  void become_running();
  // CommOptions::late_start_ms passed: start without the nodes not there.
  void late_start();
  void try_complete();
  void heartbeat_tick();
  void on_link(int peer, bool up);
  // How long a peer whose connection dropped has to be heard from again.
  int disconnect_grace_ms() const;
  void connect_deadline();
  void check_stop_ready();
  void check_round_progress(Clock::time_point now);
  void reject(Reject why, const Header* h);
  // After a refused frame: PeerCorrupt when it came on a peer's own
  // connection (msg_peer_) and corrupts_stream(why).
  void check_corrupt(Reject why, const Header* h, const std::string& detail = "");
  // Without CURVE, a frame claiming h.sender on a connection bound to no
  // peer (msg_peer_ < 0): binds that connection to h.sender (msg_peer_) when
  // the peer's bound connection is gone (closed: a restarted process, a
  // DEALER replaced by reset_peer) or membership took the peer for lost, and
  // the routing id has the form of the peer's (Transport::names_node).
  void rebind_none(const Header& h, const zmq::message_t& identity);
  void fail(std::exception_ptr e);
  // membership (net/membership.cpp)
  bool membership() const;
  void suspect(int peer, const std::string& why);
  void maybe_change_view();
  void propose(std::vector<int> members);
  void view_deadline(uint32_t epoch);
  void commit();
  void install(uint32_t epoch, std::vector<int> members, uint64_t resume, const std::map<int, uint64_t>& done);
  void install_gossip(uint64_t resume);
  void resend_sketch(uint64_t round, const Slot& slot);
  // gossip (net/gossip_cut.cpp)
  uint64_t ahead_limit() const;  // frames of rounds up to done_ + this are taken
  Reject handle_gossip_sketch(const Header& h, const zmq::message_t& payload);
  // The sketches a gossip round's result carries (the latest of each member
  // up to `round`); forgets those no later round needs.
  void gossip_sketches(uint64_t round, RoundResult* res);
  bool barrier_sketches_in(uint64_t round) const;  // CommOptions::gossip_barrier
  std::vector<int> gossip_laggards() const;        // check_round_progress
  int cut_coordinator() const;
  void cut_request();
  void cut_ask();
  void cut_start_query();
  uint64_t cut_promise();
  void cut_check_answers();
  void cut_decide(uint64_t cut);
  void cut_on_view();
  void cut_on_bye(int peer);
  void send_cut(int to, uint64_t op, uint64_t query, uint64_t value, uint64_t known);
  Reject handle_cut(const Header& h, const zmq::message_t& payload);
  uint64_t cut_margin() const { return static_cast<uint64_t>(opts_.window) + 1; }
  void send_kept_result(int to, uint64_t round);
  void send_state(int to);
  // Chunks [0, limit) of v (all by default); corrupt: chunk 0's hash is wrong.
  void send_chunks(int to, Kind kind, uint64_t round, const std::vector<float>& v, uint64_t limit = UINT64_MAX,
                   bool corrupt = false);
  void check_quorum(Clock::time_point now);
  void notify_outside(int peer);
  // linger_ms: how long ZeroMQ may still send what was queued (0: dropped;
  // kTestCrashLingerMs: the frames a test crash must let leave).
  void crash_now(const char* where, int linger_ms = 0);
  static constexpr int kTestCrashLingerMs = 1000;
  Reject handle_membership(const Header& h, std::vector<zmq::message_t>& parts);
  Reject check_epoch(const Header& h, std::vector<zmq::message_t>& parts, bool* buffered);
  void replay_future();
  // A finished round's bookkeeping for view changes, split around handing the
  // result to the trainer: keep_result (before: kept_ shares the result's
  // storage) and advance_anchor (after: x̄ += the kept result).
  void keep_result(uint64_t round, std::shared_ptr<std::vector<float>> mixed, bool exact);
  void advance_anchor(uint64_t round, bool exact);
  void to_mixer(uint64_t round, Slot& slot, std::shared_ptr<RoundBuffer> data);
  void push_event(ViewEvent e);
  std::vector<int> alive_members() const;
  uint64_t chunk_elems() const { return params_chunk_elems_; }
  uint64_t chunks_of(uint64_t count) const { return (count + params_chunk_elems_ - 1) / params_chunk_elems_; }
  std::unique_ptr<Mixer> make_ring();
  std::string peer_name(int id) const;
  std::shared_ptr<RoundBuffer> make_buffer(std::vector<float> v);

  CommOptions opts_;
  uint64_t incarnation_;  // drawn at construction; sent with the hello
  int nodes_;
  size_t count_ = 0;
  float* params_ = nullptr;

  // I/O thread only
  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<Mixer> ring_;    // always: ring rounds, and exact rounds of gossip runs
  std::unique_ptr<Gossip> gossip_;  // gossip runs
  // Plain members: they exist from construction, so any handler may cancel
  // or re-arm them whatever has happened yet (a hello handled during start-up
  // cancels the connect timer).
  boost::asio::steady_timer heartbeat_timer_{io_}, connect_timer_{io_}, view_timer_{io_}, late_timer_{io_};
  // membership (I/O thread)
  View view_;
  uint32_t promised_ = 0;              // highest epoch this node answered or proposed
  std::optional<Proposal> proposing_;  // as coordinator
  bool changing_ = false;              // a view change is under way (answered, no commit yet)
  Clock::time_point change_started_{};
  std::string change_reason_;
  std::vector<int> joiners_;           // configured nodes that asked to join
  bool joining_ = false;               // this node joins a running view
  // This node took a late start's view while it started (late_start): it is
  // in the run from the start (not a joiner), though a fresh one takes x̄ as
  // a joiner does.
  bool start_follower_ = false;
  bool late_logged_ = false;
  int state_source_ = -1;              // joiner: who streams x̄
  std::vector<float> state_;           // joiner: x̄ as it arrives
  std::vector<uint8_t> state_seen_;
  uint64_t state_received_ = 0;
  std::vector<float> start_anchor_;    // x̄ of a resumed run, from start()
  std::vector<int> state_to_;          // joiners to stream x̄ to once done_ reaches resume_round_
  uint64_t resume_round_ = 0;
  std::map<uint32_t, uint64_t> resumed_at_;  // gossip: epoch -> its resume round
  std::optional<ViewEvent> pending_event_;  // reported once done_ reaches resume_round_
  uint64_t transferred_bytes_ = 0;
  // Results of the last rounds finished here, the storage the trainer got
  // (RoundResult::mixed); evicted ones the trainer has let go of become the
  // ring's result storage again.
  std::map<uint64_t, std::shared_ptr<std::vector<float>>> kept_;
  std::vector<float> anchor_io_;       // x̄ after the rounds finished here (state transfer)
  std::deque<Future> future_;
  uint64_t future_bytes_ = 0;
  Clock::time_point no_quorum_since_{};
  bool no_quorum_ = false;
  uint64_t ticks_ = 0;
  Phase phase_ = Phase::kIdle;
  std::vector<PeerState> peers_;
  std::vector<uint8_t> params_seen_;
  uint64_t params_chunks_ = 0, params_received_ = 0, params_chunk_elems_ = 1;
  // Start-up's kReady: node 0, the nodes that said they have the parameters;
  // the others, whether they said so and whether node 0 let them start.
  std::vector<uint8_t> ready_from_;
  size_t readies_ = 0;
  bool ready_sent_ = false, go_ = false;
  std::map<uint64_t, Slot> slots_;
  uint64_t done_ = 0;          // lowest round not finished here
  // gossip: [peer] its sketches by round (every one above the last round
  // delivered here, and the latest at or below it), and the round after the
  // latest one received (0: none yet)
  std::vector<std::map<uint64_t, std::vector<float>>> peer_sketches_;
  std::vector<uint64_t> sketch_next_;
  // gossip's stop agreement (I/O thread)
  struct CutIo {
    bool wanted = false;            // this node was asked to stop
    bool promised = false;          // it answered a query (close_limit_ holds)
    std::optional<uint64_t> cut;    // decided
    uint64_t query = 0;             // as coordinator: the query under way (0: none)
    uint32_t seq = 0;
    std::map<int, uint64_t> answers;  // member -> its next round
    std::optional<uint64_t> known;    // a member's answer carried a decided cut
  } cut_io_;
  std::unique_ptr<ErrorFeedback> feedback_;  // ring rounds with a codec
  Clock::time_point progress_at_{};  // done_ advanced or this node submitted (round_timeout_ms)
  bool progress_failed_ = false;
  uint64_t submitted_io_ = 0;  // rounds handed to the mixer
  Clock::time_point start_time_{};
  std::vector<Clock::time_point> last_log_;  // [reason], rate limit
  std::vector<uint64_t> unlogged_;           // [reason], suppressed since
  // The peer whose connection the message being handled came on (-1: none):
  // curve: the key's owner; else the peer bound to its routing id (bound_).
  int msg_peer_ = -1;
  int claimed_peer_ = -1;  // no curve: the unbound peer its routing id names (on_message)
  // [peer] routing id of its accepted hello, or of the connection that
  // replaced that one (rebind_none) (no curve)
  std::vector<std::string> bound_;
  Clock::time_point taken_logged_at_{};  // identity_taken: logged at most once a second
  std::thread io_thread_;

  // trainer thread only (copied from the shared ones when start() returns)
  uint64_t first_round_ = 0;
  bool joined_ = false;
  uint64_t next_submit_ = 0, next_poll_ = 0;
  bool started_called_ = false, stopped_ = false;

  // shared, under mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RoundResult> results_;
  std::vector<ViewEvent> events_;
  uint64_t join_round_ = 0;
  bool join_done_ = false;
  std::exception_ptr error_;
  std::vector<int> lost_;
  bool started_ = false, stop_ready_ = false, io_exited_ = false;
  // gossip's stop agreement: the trainer's next round to submit (answers),
  // the limit this node promised and the decided cut
  uint64_t submitted_shared_ = 0;
  uint64_t close_limit_ = UINT64_MAX;
  std::optional<uint64_t> cut_shared_;

  // shared, atomic
  std::atomic<uint64_t> bytes_sent_{0}, bytes_recv_{0};
  std::atomic<uint64_t> tensor_bytes_sent_{0}, tensor_raw_bytes_sent_{0};
  std::atomic<uint64_t> rejected_total_{0};
  std::vector<std::atomic<uint64_t>> rejected_;  // [Reject]
  std::vector<std::atomic<uint64_t>> handshake_failed_;  // [HandshakeFailure]
  std::atomic<int> linger_ms_{0};
};

}  // namespace tether::net
