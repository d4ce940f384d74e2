// Which view each data epoch is sharded over, and what a view change skips
// (DESIGN.md, "Membership: failures and rejoins", Data; the sampler's side is
// models/sampler.h, "Views").
//
// Rule. Data epoch e starts at global step S_e = e·spe (spe: the sampler's
// steps_per_epoch(), fixed by the configured nodes). Its decision round is
//   D_e = ⌊S_e / H⌋ − 1 − s
// (H the period, s the staleness): a node about to run step S_e has closed
// the rounds below ⌊S_e / H⌋ and, with at most s in flight, applied every
// round ≤ D_e. The communicator queues a view's event before the result of
// any round from the view's resume round on (net/communicator.cpp,
// try_complete), so by then the node has taken every view whose resume round
// is ≤ D_e. Epoch e is sharded over the latest of those views (the initial
// view — every configured node — when there is none). Every member evaluates
// the rule on the same views, however far apart in time the members cross
// S_e: they agree without another message. A view that arrives later changes
// nothing until the first epoch decided after its resume round: members keep
// their shards until then.
//
// Limits.
//  - A joiner knows only the views from its join on. The epochs decided
//    before its resume round — the one it joins in, and the next when it
//    joins within the last s + 1 rounds of an epoch — were sharded over a
//    view it does not know and is not in: it runs their steps without a batch
//    (its Δ is zero, merges still apply) and takes data from the first epoch
//    decided after it joined. The ring's mean counts that zero Δ: a step of
//    n members' gradients is averaged over n + 1 until the epoch ends (with
//    optimizer.scale_lr the rate's n + 1 makes up for it).
//  - A resumed run (--resume) starts in the initial view: the epoch it
//    resumes in is sharded over every configured node, whatever view the
//    interrupted run used for it.
//  - Only views carry the rule: algorithms without membership (local-sgd,
//    downpour, easgd, sync) stay in the initial view.
//
// Skipped samples. A view with resume round v that leaves out nodes takes
// away, in every data epoch whose steps reach v·H and whose view was decided
// before v (D_e < v), the slices of the members of that epoch's view that
// left (and were in every view since the epoch's): the slices of its steps
// from max(S_e, v·H) to the epoch's end (or the run's last step). Their
// rounds from v on run without those members' updates. Every member computes
// the same count from the same views.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "models/sampler.h"

namespace tether {

struct DataView {
  uint32_t epoch = 0;          // the view's epoch (the initial view: 1)
  std::vector<int> members;    // sorted ids
  uint64_t resume_round = 0;   // rounds from here on run in this view
  bool initial = false;        // in effect from the run's start, whatever the round
  // Rank of `id` among the members (its shard's position), -1 outside.
  int position(int id) const;
};

// D_e of the epoch starting at global step `epoch_start_step` (negative while
// no round is sure to be applied: the initial view).
int64_t data_decision_round(uint64_t epoch_start_step, int period, int staleness);

// The views a node has taken, in commit order.
class DataViews {
 public:
  // A node that trains from the start: the initial view of the configured
  // nodes 0..nodes-1.
  static DataViews from_start(int nodes);
  void add(DataView v);
  // The view a data epoch with this decision round is sharded over: the
  // latest with resume_round ≤ decision_round, else the initial view;
  // nullptr when this node does not know it (a joiner).
  const DataView* for_round(int64_t decision_round) const;
  const std::vector<DataView>& views() const { return views_; }

 private:
  std::vector<DataView> views_;
};

// The epoch grid the rule is evaluated on.
struct DataGrid {
  uint64_t steps_per_epoch = 1;
  uint64_t total_steps = 0;   // the run's steps (epochs · spe, or max_steps)
  int period = 1;             // H
  int staleness = 0;          // s
  // Clocked rounds (algorithm.round_ms, period "auto"; runtime/averaging.h):
  // the node's own map between steps and rounds, in place of step / H and
  // round · H (Averaging::rounds_before_step, first_step_of_round).
  std::function<uint64_t(uint64_t step)> rounds_before_step;
  std::function<uint64_t(uint64_t round)> first_step_of_round;
};

// D_e on `grid`: ⌊S_e / H⌋ − 1 − s, or with a clocked map the rounds closed
// before S_e, − 1 − s.
int64_t data_decision_round(const DataGrid& grid, uint64_t epoch_start_step);

struct SkippedSamples {
  int epoch = 0;                      // data epoch, 0-based
  uint64_t from_step = 0, to_step = 0;  // the global steps [from, to) whose slices are lost
  std::vector<int> nodes;             // the members that left
  std::vector<int> members;           // the epoch's view
  size_t count = 0;                   // samples lost
};

// What `change` skips, given the views taken before it (`known`, without
// `change`): one entry per data epoch it takes samples from.
std::vector<SkippedSamples> skipped_by(const DataViews& known, const DataView& change, const ShardedSampler& sampler,
                                       const DataGrid& grid);

}  // namespace tether
