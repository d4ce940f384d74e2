// RunLog: the metrics of a run as the nodes wrote them — every
// `<log dir>/node-<id>.jsonl` (field names in observe/metrics_schema.h,
// meanings in DESIGN.md, "Metrics and dashboard") — read incrementally, for
// `tether dashboard` (terminal) and `tether report` (HTML).
//
// Reading contract:
//   - refresh() picks up files that appeared since the last call and the
//     lines appended to known ones; it reads only the new bytes.
//   - A last line without its '\n' is being written: it stays pending until
//     the rest arrives (never counted, never an error).
//   - Blank lines are ignored; a line that is not a JSON object is skipped and counted in
//     NodeLog::malformed; fields of the wrong type read as absent.
//   - A file that got shorter was rewritten: that node is read again from 0.
//   - A periodic record whose step is lower than the node's last one starts a
//     new run in the same directory (log.dir reused): the node's earlier
//     records are dropped. A resumed run (steps go on) keeps them.
//   - Membership records ({"event": "view"}, {"event": "no_quorum"}) are kept
//     per node in file order; RunLog::views() merges the members' records of
//     each view into one ViewSummary.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tether {

// Bad input the caller reports and exits 2 on: a missing directory, no node files.
class RunLogError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One periodic record (absent numeric fields read as 0).
struct NodeSample {
  double time = 0;   // seconds since the Unix epoch
  uint64_t step = 0, round = 0;
  int epoch = 0;
  double loss = 0, train_acc = 0, images_per_s = 0, lr = 0;
  double idle_frac = 0, idle_frac_total = 0;
  int64_t period = -1;   // H of the round (0: rounds by time; -1: not recorded)
  uint64_t period_changes = 0;   // automatic period changes so far
  int64_t rounds_in_flight = 0;
  double disp_norm = 0, max_pair_dist = 0, max_pair_dist_run = 0, bound = 0, max_delta_norm = 0;
  bool throttled = false;
  uint64_t throttle_count = 0, bytes_sent = 0, bytes_recv = 0, msgs_rejected = 0, delta_claims_refused = 0, view_changes = 0;
  uint64_t tensor_bytes_sent = 0, tensor_raw_bytes_sent = 0;  // net.compression's effect
  uint64_t sketch_age_rounds = 0, sketch_age_rounds_max = 0;   // the monitor's oldest sketch
  // net.security ("curve", "none"; "" before this field existed), connections
  // refused at the handshake, and by reason (a JSON object as text, "" when absent).
  std::string security, handshake_failed;
  uint64_t handshakes_failed = 0;
  bool operator==(const NodeSample&) const = default;
};

// {"event": "eval"} records, and the final record's test accuracy.
struct EvalPoint {
  double time = 0;
  uint64_t step = 0;
  int epoch = 0;
  double test_acc = 0, test_loss = 0;
  bool operator==(const EvalPoint&) const = default;
};

struct NodeFinal {
  double time = 0;
  uint64_t steps = 0;
  std::optional<double> test_acc;   // null when interrupted
  std::string params_hash, checkpoint;
  bool interrupted = false;
  double wall_s = 0;
  // Network totals of the final record (0 on a single node).
  double idle_frac_total = 0, max_pair_dist_run = 0;
  uint64_t period_changes = 0;   // automatic period changes in the run
  uint64_t throttle_count = 0, bytes_sent = 0, bytes_recv = 0, msgs_rejected = 0, delta_claims_refused = 0, view_changes = 0;
  uint64_t tensor_bytes_sent = 0, tensor_raw_bytes_sent = 0;  // net.compression's effect
  uint64_t sketch_age_rounds_max = 0;   // the monitor's oldest sketch over the run
  // net.security ("curve", "none"; "" before this field existed), connections
  // refused at the handshake, and by reason (a JSON object as text, "" when absent).
  std::string security, handshake_failed;
  uint64_t handshakes_failed = 0;
  bool operator==(const NodeFinal&) const = default;
};

struct NodeFailure {
  double time = 0;
  uint64_t step = 0;
  std::string error, checkpoint;
  bool operator==(const NodeFailure&) const = default;
};

// {"event": "view"}: a view change this node took part in.
struct ViewRecord {
  double time = 0;
  uint64_t step = 0;
  uint64_t epoch = 0;          // the view's epoch
  std::vector<int> members;    // sorted live ids (non-integer entries skipped)
  std::string reason;          // "node 2 silent for 1503 ms", "node 2 joined"
  uint64_t resume_round = 0;
  double ms = 0;               // how long the change took on this node
  std::string anchor_hash;     // the anchor's hash after the change ("" if absent)
  uint64_t transferred_bytes = 0;
  bool operator==(const ViewRecord&) const = default;
};

// {"event": "no_quorum"}: this node could not be in a view.
struct NoQuorumRecord {
  double time = 0;
  uint64_t step = 0;
  std::vector<int> unreachable;
  double waited_ms = 0;
  bool operator==(const NoQuorumRecord&) const = default;
};

// One view as its members recorded it: the records of one (epoch, members)
// merged over the nodes.
struct ViewSummary {
  uint64_t epoch = 0;
  std::vector<int> members;
  double time = 0;                  // the earliest member's record
  std::string reason;               // of the earliest record that has one
  uint64_t resume_round = 0;        // of the earliest record
  double ms = 0;                    // the largest over the members' records
  uint64_t transferred_bytes = 0;   // the largest over the members' records
  std::map<int, std::string> anchors;   // node -> anchor_hash, of the records that carry one
  std::vector<int> recorded_by;     // the nodes whose log holds this view, sorted
  // Against the view before it (by epoch); for the first view of the log,
  // against every node that has a log file, unless its epoch is 1 (the
  // starting view: nothing joined or left).
  std::vector<int> joined, left;
  // Whether every recorded anchor hash is the same; nullopt when none is recorded.
  std::optional<bool> anchors_equal() const;
};

enum class NodeState { kRunning, kDone, kInterrupted, kFailed };
const char* node_state_name(NodeState s);   // "running", "done", "interrupted", "failed"

struct NodeLog {
  int node = 0;
  std::string path;
  std::vector<NodeSample> samples;
  std::vector<EvalPoint> evals;   // in file order; the final's test_acc included
  std::optional<NodeFinal> final;
  std::optional<NodeFailure> failed;
  std::vector<ViewRecord> views;          // in file order
  std::vector<NoQuorumRecord> no_quorum;  // in file order
  size_t lines = 0;       // complete non-blank lines read
  size_t malformed = 0;   // skipped lines
  size_t unknown = 0;     // objects with an event this reader does not know

  NodeState state() const;
  bool finished() const { return final.has_value() || failed.has_value(); }
  const NodeSample* last() const { return samples.empty() ? nullptr : &samples.back(); }
  // The view this node is in: its view record of the highest epoch; nullptr if none.
  const ViewRecord* current_view() const;
  std::optional<double> last_test_acc() const;
  double last_time() const;   // of any record; 0 if none
};

class RunLog {
 public:
  // Throws RunLogError if `dir` is not a directory.
  explicit RunLog(std::string dir);

  // Reads new files and appended lines; true if anything changed.
  // Throws RunLogError if the directory disappeared.
  bool refresh();

  const std::string& dir() const { return dir_; }
  // Ordered by node id.
  const std::map<int, NodeLog>& nodes() const { return nodes_; }
  bool all_finished() const;   // false when there are no nodes
  size_t malformed() const;    // over all nodes
  double start_time() const;   // earliest record time; 0 if none
  double end_time() const;     // latest record time; 0 if none
  // Every view of the run, one per (epoch, members), by epoch then time.
  std::vector<ViewSummary> views() const;

  // Feeds one complete line (no '\n') to `node` as if read from its file.
  // refresh() uses it; tests may too.
  static void parse_line(NodeLog& node, const std::string& line);

 private:
  struct FileState {
    uint64_t offset = 0;    // bytes consumed, pending included
    std::string pending;    // an unfinished last line
  };
  bool read_file(int node, const std::string& path);

  std::string dir_;
  std::map<int, NodeLog> nodes_;
  std::map<int, FileState> files_;
};

}  // namespace tether
