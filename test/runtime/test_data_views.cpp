// Tests of runtime/data_views: which view a data epoch is sharded over, and
// what a view change skips, against a step-by-step simulation of the members.
#include "runtime/data_views.h"

#include <doctest/doctest.h>

#include <set>
#include <vector>

#include "runtime/config.h"
#include "runtime/trainer.h"

using tether::DataGrid;
using tether::DataView;
using tether::DataViews;
using tether::ShardedSampler;

namespace {

DataView view(uint32_t epoch, std::vector<int> members, uint64_t resume_round) {
  DataView v;
  v.epoch = epoch;
  v.members = std::move(members);
  v.resume_round = resume_round;
  return v;
}

// Reference, step by step: the view of epoch e is the latest whose resume
// round is at most D_e (scanning all views); member m of it trains step t
// when every later view in effect by round ⌊t/H⌋ still holds it (one that
// left, even if it came back, has no batch until the epoch ends). Returns the
// samples not trained per epoch, over the views' members, and checks the
// trained samples are distinct.
std::vector<size_t> simulate_skipped(const std::vector<DataView>& views, const ShardedSampler& s, const DataGrid& g,
                                     int epochs) {
  std::vector<size_t> skipped(size_t(epochs), 0);
  std::vector<uint32_t> b;
  for (int e = 0; e < epochs; ++e) {
    const int64_t decided = int64_t(uint64_t(e) * g.steps_per_epoch / uint64_t(g.period)) - 1 - g.staleness;
    size_t pick = 0;   // views[0] is the initial view
    for (size_t k = 1; k < views.size(); ++k)
      if (decided >= 0 && int64_t(views[k].resume_round) <= decided) pick = k;
    const DataView& ve = views[pick];
    std::set<uint32_t> trained;
    for (uint64_t t = uint64_t(e) * g.steps_per_epoch; t < uint64_t(e + 1) * g.steps_per_epoch && t < g.total_steps; ++t) {
      for (size_t p = 0; p < ve.members.size(); ++p) {
        const int m = ve.members[p];
        bool in = true;
        for (size_t k = pick + 1; k < views.size(); ++k)
          if (views[k].resume_round <= t / uint64_t(g.period)) in = in && views[k].position(m) >= 0;
        s.batch(e, size_t(t - uint64_t(e) * g.steps_per_epoch), int(p), int(ve.members.size()), &b);
        if (!in) {
          skipped[size_t(e)] += b.size();
          continue;
        }
        for (uint32_t x : b) CHECK(trained.insert(x).second);   // no sample twice
      }
    }
  }
  return skipped;
}

// skipped_by over each change, summed per epoch.
std::vector<size_t> counted_skipped(const std::vector<DataView>& views, const ShardedSampler& s, const DataGrid& g,
                                    int epochs) {
  std::vector<size_t> out(size_t(epochs), 0);
  DataViews known = DataViews::from_start(s.nodes());
  for (size_t k = 1; k < views.size(); ++k) {
    for (const auto& r : skipped_by(known, views[k], s, g)) {
      REQUIRE(r.epoch < epochs);
      CHECK(r.from_step >= uint64_t(r.epoch) * g.steps_per_epoch);
      CHECK(r.to_step <= std::min(uint64_t(r.epoch + 1) * g.steps_per_epoch, g.total_steps));
      CHECK(r.count > 0);
      out[size_t(r.epoch)] += r.count;
    }
    known.add(views[k]);
  }
  return out;
}

}  // namespace

TEST_CASE("data views: decision round, the epoch's view, a joiner's unknown epochs") {
  CHECK(tether::data_decision_round(100, 1, 2) == 97);
  CHECK(tether::data_decision_round(0, 1, 2) == -3);
  CHECK(tether::data_decision_round(10, 4, 2) == -1);   // rounds 0, 1 closed, none sure applied
  CHECK(tether::data_decision_round(40, 4, 0) == 9);
  CHECK_THROWS(tether::data_decision_round(10, 0, 2));

  DataViews m = DataViews::from_start(4);
  CHECK(m.for_round(-3)->members == std::vector<int>{0, 1, 2, 3});
  m.add(view(2, {3, 0, 1}, 40));   // sorted on add
  m.add(view(3, {0, 1, 2, 3}, 90));
  CHECK(m.for_round(39)->epoch == 1);
  CHECK(m.for_round(40)->epoch == 2);
  CHECK(m.for_round(40)->members == std::vector<int>{0, 1, 3});
  CHECK(m.for_round(40)->position(3) == 2);
  CHECK(m.for_round(40)->position(2) == -1);
  CHECK(m.for_round(89)->epoch == 2);
  CHECK(m.for_round(1000)->epoch == 3);

  DataViews joiner;   // node 2 joined view 3: it knows nothing before round 90
  joiner.add(view(3, {0, 1, 2, 3}, 90));
  CHECK(joiner.for_round(89) == nullptr);
  CHECK(joiner.for_round(-1) == nullptr);
  CHECK(joiner.for_round(90)->position(2) == 2);
}

TEST_CASE("data views: skipped_by equals a step-by-step simulation (losses, rejoins, epoch edges, H and s)") {
  const size_t count = 1000;
  const int nodes = 4, batch = 8;
  const ShardedSampler s(count, 0, nodes, batch, 3);   // 32 steps per epoch
  REQUIRE(s.steps_per_epoch() == 32);
  const int epochs = 4;
  struct Case {
    const char* what;
    int period, staleness;
    std::vector<DataView> changes;
  };
  const std::vector<Case> cases = {
      {"node 2 lost mid-epoch 0", 1, 2, {view(2, {0, 1, 3}, 13)}},
      {"lost in the last s+1 rounds of an epoch: the next one is decided before the change", 1, 2,
       {view(2, {0, 1, 3}, 30)}},
      {"lost exactly at the decision round of epoch 1", 1, 2, {view(2, {0, 1, 3}, 29)}},
      {"lost, then another lost in the same epoch", 1, 2, {view(2, {0, 1, 3}, 5), view(3, {0, 3}, 20)}},
      {"lost and rejoined in the same epoch, then lost again", 1, 1,
       {view(2, {0, 1, 3}, 3), view(3, {0, 1, 2, 3}, 10), view(4, {0, 1, 3}, 20)}},
      {"lost in epoch 0, back for epoch 2, lost again in it", 1, 2,
       {view(2, {0, 2, 3}, 8), view(3, {0, 1, 2, 3}, 40), view(4, {0, 1, 3}, 70)}},
      {"H = 4, s = 1", 4, 1, {view(2, {1, 2, 3}, 3), view(3, {1, 3}, 15)}},
      {"H = 3, s = 0: spe not a multiple of H", 3, 0, {view(2, {0, 1, 2}, 10), view(3, {0, 2}, 21)}},
      {"after the run's last step: nothing", 1, 2, {view(2, {0, 1, 3}, 4 * 32)}},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    for (uint64_t total : {uint64_t(epochs) * 32, uint64_t(epochs) * 32 - 10}) {   // all epochs, or max_steps
      CAPTURE(total);
      DataGrid g;
      g.steps_per_epoch = s.steps_per_epoch();
      g.total_steps = total;
      g.period = c.period;
      g.staleness = c.staleness;
      std::vector<DataView> views = {DataViews::from_start(nodes).views()[0]};
      views.insert(views.end(), c.changes.begin(), c.changes.end());
      const std::vector<size_t> ref = simulate_skipped(views, s, g, epochs);
      const std::vector<size_t> got = counted_skipped(views, s, g, epochs);
      CHECK(got == ref);
    }
  }
  // Closed forms. Node 2 lost from round 13 (H = 1, s = 2): its 4-node
  // slices of steps 13..31 of epoch 0 (full steps of 8, the last one the
  // remainder's 2); epoch 1 (D_1 = 29 >= 13) is sharded over {0, 1, 3}.
  DataGrid g;
  g.steps_per_epoch = 32;
  g.total_steps = 128;
  g.period = 1;
  g.staleness = 2;
  const auto r = skipped_by(DataViews::from_start(4), view(2, {0, 1, 3}, 13), s, g);
  REQUIRE(r.size() == 1);
  CHECK(r[0].epoch == 0);
  CHECK(r[0].nodes == std::vector<int>{2});
  CHECK(r[0].from_step == 13);
  CHECK(r[0].to_step == 32);
  CHECK(r[0].count == 18 * 8 + 2);   // steps 13..30 full, step 31 the remainder (1000 - 31·32 = 8 over 4)
  // Lost at round 30: D_1 = 29 < 30, epoch 1 was decided over all four: node 2's whole epoch 1 is skipped too.
  const auto late = skipped_by(DataViews::from_start(4), view(2, {0, 1, 3}, 30), s, g);
  REQUIRE(late.size() == 2);
  CHECK(late[0].count == 8 + 2);
  CHECK(late[1].epoch == 1);
  CHECK(late[1].from_step == 32);
  CHECK(late[1].count == 31 * 8 + 2);
}

TEST_CASE("optimizer.scale_lr follows the view's size") {
  tether::Config cfg;
  cfg.optimizer.lr = 0.05;
  cfg.optimizer.scale_lr = true;
  CHECK(tether::view_base_lr(cfg, 4) == doctest::Approx(0.2));
  CHECK(tether::view_base_lr(cfg, 3) == doctest::Approx(0.15));
  CHECK(tether::view_base_lr(cfg, 1) == doctest::Approx(0.05));
  cfg.optimizer.scale_lr = false;
  CHECK(tether::view_base_lr(cfg, 3) == doctest::Approx(0.05));
}
