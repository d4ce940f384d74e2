// The metrics record: the one spelling of its field names. A node writes
// JSON lines to <log.dir>/node-<id>.jsonl (runtime/metrics.h: MetricsLog);
// the log readers (observe/run_log.h: RunLog) read them back. Writers and the
// reader use these constants, never the bare strings, so a renamed field is a
// compile error on both sides instead of a column that silently reads 0.
//
// Records (the lists below name each kind's fields; DESIGN.md, "Metrics and
// dashboard", says what they mean):
//   every record      kRecordFields, added by MetricsLog::write
//   periodic record   kIntervalFields (the trainer) + kNetworkFields (the
//                     averaging algorithm's metrics(); a single node writes
//                     kSingleNodeFields in their place, all 0 but the round)
//   {"event": "eval"}    kEvalFields, after a single node's evaluations
//   {"event": "final"}   kFinalFields, + kNetworkFields on a cluster
//   {"event": "failed"}  kFailedFields, when the node fails
//   {"event": "view"}    kViewFields, on every view change the node takes
//                        part in (DESIGN.md, "Membership: failures and
//                        rejoins"); here kEpoch is the view's epoch, not the
//                        data epoch
//   {"event": "no_quorum"}  kNoQuorumFields, when the node cannot be in a
//                        view (no majority) and gave up waiting
//   {"event": "skipped_samples"}  kSkippedFields, when a view change leaves
//                        out members whose shards of a data epoch are then
//                        not trained (runtime/data_views.h); kEpoch is the
//                        data epoch (1-based)
//   {"event": "period"}  kPeriodFields, as an automatic period (algorithm.period
//                        "auto") changes
//   {"event": "data_epoch"}  kDataEpochFields, at the start of each data
//                        epoch sharded over another view than every
//                        configured node, or over a view this node does not
//                        know (a joiner: position -1, members null)
// The reader takes every field of these lists except kNode (it has the node
// id from the file name) and, of the final record's network fields, the run
// totals (kRunTotalFields); it reads a missing field as absent (0).
#pragma once

#include <array>

namespace tether::field {

// Every record.
inline constexpr char kTime[] = "time";   // seconds since the Unix epoch
inline constexpr char kNode[] = "node";
inline constexpr char kEvent[] = "event";   // absent in periodic records

// Values of kEvent.
inline constexpr char kEventEval[] = "eval";
inline constexpr char kEventFinal[] = "final";
inline constexpr char kEventFailed[] = "failed";
inline constexpr char kEventView[] = "view";
inline constexpr char kEventNoQuorum[] = "no_quorum";
inline constexpr char kEventSkippedSamples[] = "skipped_samples";
inline constexpr char kEventDataEpoch[] = "data_epoch";
inline constexpr char kEventPeriod[] = "period";

// The trainer's fields.
inline constexpr char kStep[] = "step";
inline constexpr char kEpoch[] = "epoch";
inline constexpr char kLoss[] = "loss";
inline constexpr char kTrainAcc[] = "train_acc";
inline constexpr char kImagesPerS[] = "images_per_s";
inline constexpr char kLr[] = "lr";

// The averaging algorithm's fields (per interval unless "run").
inline constexpr char kRound[] = "round";
inline constexpr char kIdleFrac[] = "idle_frac";
inline constexpr char kIdleFracTotal[] = "idle_frac_total";   // run
inline constexpr char kRoundsInFlight[] = "rounds_in_flight";
inline constexpr char kDispNorm[] = "disp_norm";
inline constexpr char kMaxPairDist[] = "max_pair_dist";
inline constexpr char kMaxPairDistRun[] = "max_pair_dist_run";   // run
inline constexpr char kBound[] = "bound";
inline constexpr char kThrottled[] = "throttled";
inline constexpr char kThrottleCount[] = "throttle_count";   // run
inline constexpr char kMaxDeltaNorm[] = "max_delta_norm";
inline constexpr char kBytesSent[] = "bytes_sent";   // run
inline constexpr char kBytesRecv[] = "bytes_recv";   // run
inline constexpr char kMsgsRejected[] = "msgs_rejected";   // run
// Tensor payloads sent (ring chunks, gossip snapshots, pushes, fetch replies),
// run: bytes as encoded by net.compression, and what they take as float32.
inline constexpr char kTensorBytesSent[] = "tensor_bytes_sent";
inline constexpr char kTensorRawBytesSent[] = "tensor_raw_bytes_sent";
inline constexpr char kDeltaClaimsRefused[] = "delta_claims_refused";   // run: peers' implausible ‖Δ‖ claims
inline constexpr char kViewChanges[] = "view_changes";   // run: view changes this node took part in
// The monitor's sketches (rounds): how old the oldest one behind the last
// distance estimate was (gossip estimates from the latest sketch that has
// arrived from each node, net/communicator.h; the ring's are all of the
// round: 0), and the largest such age of the run.
inline constexpr char kSketchAgeRounds[] = "sketch_age_rounds";
inline constexpr char kSketchAgeRoundsMax[] = "sketch_age_rounds_max";   // run
// H, local steps per round (algorithm.period; "auto": the agreed one; 0 with
// algorithm.round_ms), and how often the automatic period changed (run).
inline constexpr char kPeriod[] = "period";
inline constexpr char kPeriodChanges[] = "period_changes";
// downpour, easgd only (runtime/server_averaging.h), run: mean number of
// server updates between a worker's fetch and its push.
inline constexpr char kGradDelay[] = "grad_delay";
inline constexpr char kSecurity[] = "security";   // net.security: "curve" or "none"
inline constexpr char kHandshakesFailed[] = "handshakes_failed";   // run: connections refused at the handshake
inline constexpr char kHandshakeFailedBy[] = "handshake_failed";   // run: {reason: count} (net/transport.h)

// Events' fields.
inline constexpr char kTestAcc[] = "test_acc";     // final: null when interrupted
inline constexpr char kTestLoss[] = "test_loss";   // eval (the reader also takes it from a final)
inline constexpr char kSteps[] = "steps";
inline constexpr char kParamsHash[] = "params_hash";
inline constexpr char kInterrupted[] = "interrupted";
inline constexpr char kCheckpoint[] = "checkpoint";
inline constexpr char kWallS[] = "wall_s";
inline constexpr char kError[] = "error";

// Membership events' fields (with kStep, and kEpoch as the view's epoch).
inline constexpr char kMembers[] = "members";                     // view: the sorted live ids
inline constexpr char kReason[] = "reason";                       // view: "node 2 silent for 1503 ms", "node 2 joined"
inline constexpr char kResumeRound[] = "resume_round";            // view: the round training resumes at
inline constexpr char kMs[] = "ms";                               // view: how long the change took
inline constexpr char kAnchorHash[] = "anchor_hash";              // view: hash (hex) of the anchor after the change
inline constexpr char kTransferredBytes[] = "transferred_bytes";  // view: state transfer bytes this node moved
inline constexpr char kUnreachable[] = "unreachable";             // no_quorum: the peers it could not reach
inline constexpr char kWaitedMs[] = "waited_ms";                  // no_quorum: how long it waited for them

// Data epochs' fields (with kStep, kEpoch as the data epoch, and kMembers as
// the epoch's view).
inline constexpr char kCount[] = "count";          // skipped_samples: samples not trained
inline constexpr char kNodes[] = "nodes";          // skipped_samples: the members whose shards they were
inline constexpr char kFromStep[] = "from_step";   // skipped_samples: the global steps [from, to) lost
inline constexpr char kToStep[] = "to_step";
inline constexpr char kPosition[] = "position";    // data_epoch: this node's rank in the view, -1 none
inline constexpr char kSamples[] = "samples";      // data_epoch: samples this node takes in the epoch
inline constexpr char kUncovered[] = "uncovered";  // data_epoch: samples no member takes in the epoch

// Automatic period changes' fields (with kStep, kRound as the first round
// with the new H, and kPeriod as the new H).
inline constexpr char kFrom[] = "from";          // period: H before
inline constexpr char kStepMs[] = "step_ms";     // period: this node's compute per step
inline constexpr char kMergeMs[] = "merge_ms";   // period: this node's merge service time per round

inline constexpr std::array kRecordFields = {kTime, kNode};
inline constexpr std::array kIntervalFields = {kStep, kEpoch, kLoss, kTrainAcc, kImagesPerS, kLr};
inline constexpr std::array kNetworkFields = {
    kRound,     kIdleFrac,  kIdleFracTotal, kRoundsInFlight, kDispNorm,  kMaxPairDist, kMaxPairDistRun,
    kBound,     kThrottled, kThrottleCount, kMaxDeltaNorm,   kBytesSent, kBytesRecv,   kMsgsRejected,
    kDeltaClaimsRefused, kViewChanges, kTensorBytesSent, kTensorRawBytesSent,
    kSketchAgeRounds, kSketchAgeRoundsMax,
    kSecurity, kHandshakesFailed, kHandshakeFailedBy, kPeriod, kPeriodChanges};
inline constexpr std::array kSingleNodeFields = {kRound, kIdleFrac,  kRoundsInFlight, kDispNorm, kMaxPairDist,
                                                 kBound, kThrottled, kBytesSent,      kBytesRecv};
inline constexpr std::array kRunTotalFields = {kIdleFracTotal, kMaxPairDistRun, kThrottleCount,
                                               kBytesSent,     kBytesRecv,      kMsgsRejected,
                                               kDeltaClaimsRefused, kViewChanges, kTensorBytesSent,
                                               kTensorRawBytesSent, kSketchAgeRoundsMax,
                                               kSecurity, kHandshakesFailed, kHandshakeFailedBy, kPeriodChanges};
inline constexpr std::array kEvalFields = {kEvent, kStep, kEpoch, kTestAcc, kTestLoss};
inline constexpr std::array kFinalFields = {kEvent, kSteps, kParamsHash, kInterrupted, kCheckpoint, kWallS, kTestAcc};
inline constexpr std::array kFailedFields = {kEvent, kStep, kError, kCheckpoint};
inline constexpr std::array kViewFields = {kEvent, kStep, kEpoch,      kMembers,          kReason,
                                           kResumeRound, kMs, kAnchorHash, kTransferredBytes};
inline constexpr std::array kNoQuorumFields = {kEvent, kStep, kUnreachable, kWaitedMs};
inline constexpr std::array kSkippedFields = {kEvent, kStep, kEpoch, kCount, kNodes, kMembers, kFromStep, kToStep};
inline constexpr std::array kPeriodFields = {kEvent, kStep, kRound, kPeriod, kFrom, kStepMs, kMergeMs};
inline constexpr std::array kDataEpochFields = {kEvent, kStep, kEpoch, kMembers, kPosition, kSamples, kUncovered};

}  // namespace tether::field
