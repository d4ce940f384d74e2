// `tether dashboard LOGDIR`: a live terminal view of a run's metrics, one row
// per node, and `tether report LOGDIR -o FILE`: the same metrics as a
// self-contained HTML page with plots. Both read the logs through RunLog.
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include "runtime/run_log.h"

namespace tether {

// Frames fit this many columns (an 80-column terminal without wrapping).
inline constexpr int kDashboardColumns = 79;

struct FrameOptions {
  // Wall-clock seconds since the Unix epoch; > 0 adds "last record Ns ago"
  // to the header (live view). 0 keeps the frame a pure function of the log.
  double now = 0;
};

// One frame: a header, a column header, one row per node, a summary, failed
// nodes' errors. Lines end with '\n', none longer than kDashboardColumns.
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

struct ReportOptions {
  double link_mbps = 0;   // > 0: drawn on the bytes-on-the-wire plot
  std::string title;      // empty: the log directory
};

// The HTML page: inline SVG plots drawn here, a small inline script for
// legends and hover readouts; nothing fetched from the network. After the
// script ran, <body> carries data-plots (plots on the page),
// data-plots-drawn (plots with a visible series), data-figures-whole (figures
// with caption, plot and legend as written) and data-errors (script errors).
std::string render_report(const RunLog& log, const ReportOptions& opts = {});

// `tether report LOGDIR -o FILE [--link-mbps X] [--config CONFIG] [--title T]`,
// its arguments as runtime/main.cpp parsed and checked them: exit 0, 1 if
// FILE cannot be written, 2 for a bad config, a missing directory or no node
// files. --config takes the link rate from net.inject_rate_mbps.
struct ReportArgs {
  std::string dir, out, config;
  ReportOptions opts;
};
int report_command(const ReportArgs& args);

}  // namespace tether
