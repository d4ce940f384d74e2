// `tether dashboard LOGDIR`: a live terminal view of a run's metrics, one row
// per node, read through RunLog. The HTML page of the same metrics is
// observe/report.h.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "observe/run_log.h"

namespace tether {

// Frames fit this many columns (an 80-column terminal without wrapping).
inline constexpr int kDashboardColumns = 79;

struct FrameOptions {
  // Wall-clock seconds since the Unix epoch; > 0 adds "last record Ns ago"
  // to the header (live view). 0 keeps the frame a pure function of the log.
  double now = 0;
};

// One frame: a header, a column header, one row per node, a summary; when
// the logs hold membership records, each node's current view ("view: epoch 3
// [0,1,3] on nodes 0,1,3"), the last view changes (time, epoch, members, who
// left (-K) or joined (+K), milliseconds, whether the members' anchor hashes
// agree, reason) and no-quorum events; failed nodes' errors. Lines end with '\n', none longer than kDashboardColumns.
//   id     node id               step   last logged step     ep   epoch
//   loss   training loss         test%  last test accuracy   img/s  images/s
//   idle%  idle fraction (%)     infl   rounds in flight     disp   displacement norm
//   dist   largest pairwise distance     bound  the bound it is held below
//   thr    throttled now         state  run, done, intr (interrupted), FAIL
std::string render_frame(const RunLog& log, const FrameOptions& opts = {});

// `tether dashboard LOGDIR [--once] [--interval-ms N]`, its arguments as
// runtime/main.cpp parsed and checked them.
struct DashboardArgs {
  std::string dir;
  bool once = false;
  long interval_ms = -1;   // -1: not given (1000 ms; one frame when stdout is not a terminal)
};
// Exit codes: 0 when every node finished or failed (after the last frame),
// with --once, or when *stop is set (SIGINT); 2 for a missing directory or no
// node files.
int dashboard_command(const DashboardArgs& args, const std::atomic<bool>* stop);

}  // namespace tether
