#include "runtime/data_views.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace tether {

int DataView::position(int id) const {
  auto it = std::lower_bound(members.begin(), members.end(), id);
  return it != members.end() && *it == id ? int(it - members.begin()) : -1;
}

int64_t data_decision_round(uint64_t epoch_start_step, int period, int staleness) {
  if (period < 1 || staleness < 0)
    throw std::invalid_argument("data_decision_round: period " + std::to_string(period) + ", staleness " +
                                std::to_string(staleness));
  return int64_t(epoch_start_step / uint64_t(period)) - 1 - int64_t(staleness);
}

int64_t data_decision_round(const DataGrid& grid, uint64_t epoch_start_step) {
  if (!grid.rounds_before_step) return data_decision_round(epoch_start_step, grid.period, grid.staleness);
  return int64_t(grid.rounds_before_step(epoch_start_step)) - 1 - int64_t(grid.staleness);
}

DataViews DataViews::from_start(int nodes) {
  DataView v;
  v.epoch = 1;
  v.initial = true;
  for (int i = 0; i < nodes; ++i) v.members.push_back(i);   // i over the configured nodes
  DataViews out;
  out.add(std::move(v));
  return out;
}

void DataViews::add(DataView v) {
  std::sort(v.members.begin(), v.members.end());
  views_.push_back(std::move(v));
}

const DataView* DataViews::for_round(int64_t decision_round) const {
  const DataView* pick = nullptr;
  for (const DataView& v : views_)   // commit order: the last that qualifies
    if (v.initial || (decision_round >= 0 && v.resume_round <= uint64_t(decision_round))) pick = &v;
  return pick;
}

std::vector<SkippedSamples> skipped_by(const DataViews& known, const DataView& change, const ShardedSampler& sampler,
                                       const DataGrid& grid) {
  std::vector<SkippedSamples> out;
  const uint64_t spe = grid.steps_per_epoch;
  // The first step without the leavers.
  const uint64_t from = grid.first_step_of_round ? grid.first_step_of_round(change.resume_round)
                                                 : change.resume_round * uint64_t(grid.period);
  // Epochs from the one holding step `from`, while their view was decided
  // before the change (D_e grows with e: the loop ends).
  for (uint64_t e = from / spe; e * spe < grid.total_steps; ++e) {
    const int64_t decided = data_decision_round(grid, e * spe);
    if (decided >= 0 && uint64_t(decided) >= change.resume_round) break;
    const DataView* view = known.for_round(decided);
    if (view == nullptr) continue;   // a joiner: not its epoch's view
    const auto& all = known.views();
    const size_t first_after = size_t(view - all.data()) + 1;
    SkippedSamples s;
    s.epoch = int(e);
    s.from_step = std::max(e * spe, from);
    s.to_step = std::min((e + 1) * spe, grid.total_steps);
    s.members = view->members;
    for (int m : view->members) {
      if (change.position(m) >= 0) continue;
      bool stayed = true;   // in every view since the epoch's: not already counted
      for (size_t k = first_after; k < all.size(); ++k) stayed = stayed && all[k].position(m) >= 0;
      if (!stayed) continue;
      s.nodes.push_back(m);
      s.count += sampler.samples_between(size_t(s.from_step - e * spe), size_t(s.to_step - e * spe),
                                         view->position(m), int(view->members.size()));
    }
    if (!s.nodes.empty()) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace tether
