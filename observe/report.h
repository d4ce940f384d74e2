// `tether report LOGDIR -o FILE`: a run's metrics (RunLog) as one
// self-contained HTML page.
//
// What it computes: seven plots over time since the run's first record
// (training loss; train and test accuracy; images/s per node and, on a
// cluster, their total interpolated on a common grid; idle fraction; largest
// pairwise distance with the bound; Mbit/s sent, from the growth of
// bytes_sent between records; displacement norm) and a summary table with one
// row per node (state, steps, last loss and test accuracy, params_hash,
// network totals, malformed lines; errors when a node failed), plus whether
// the nodes' final params_hash values agree. When the logs hold membership
// records ({"event": "view"}, {"event": "no_quorum"}): a vertical line on
// every plot at each view change (red when members left, green when members
// joined, its epoch above it), the table's "view" column (each node's
// current view), and a section "Views, failures and rejoins": one row per
// view (time, epoch, members, change, reason, resume round, ms, bytes
// transferred, whether the anchors agree, which nodes recorded it), one line
// per epoch "anchors equal at epoch E: yes/no" (the hashes when they
// differ), and the failures, rejoins, no-quorum and failed events in time
// order.
//
// Contract:
//   - The page refers to nothing on the network: CSS, SVG and script inline.
//   - The plots are SVG written here, so they show without the script; series
//     longer than 1,500 points are thinned (every k-th point, the last kept).
//   - Text from the logs (directory, errors, hashes, title) is HTML-escaped.
//   - The inline script adds legend toggles and a hover readout; once it ran,
//     <body> carries data-plots (plots on the page), data-plots-drawn (plots
//     with a visible series), data-figures-whole (figures with caption, plot
//     and legend as written) and data-errors (script errors) — what the
//     headless-browser test (test/observe/report_browser.sh) checks.
//   - render_report is a pure function of the log and the options.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "observe/run_log.h"

namespace tether {

struct ReportOptions {
  double link_mbps = 0;   // > 0: drawn on the bytes-on-the-wire plot
  std::string title;      // empty: the log directory
};

std::string render_report(const RunLog& log, const ReportOptions& opts = {});

// The link rate (Mbit/s, 0: none) a config file names, for --config: the
// config's net.inject_rate_mbps. Throws std::exception with a message naming
// the file and the problem for a bad config. The caller (runtime/main.cpp)
// supplies it, so the report does not depend on the node's Config.
using LinkRateOfConfig = std::function<double(const std::string& config_path)>;

// `tether report LOGDIR -o FILE [--link-mbps X] [--config CONFIG] [--title T]`,
// its arguments as runtime/main.cpp parsed and checked them: exit 0, 1 if
// FILE cannot be written, 2 for a bad config, a missing directory or no node
// files. --config (unless --link-mbps is given) takes the link rate from
// `link_rate_of_config`.
struct ReportArgs {
  std::string dir, out, config;
  ReportOptions opts;
};
int report_command(const ReportArgs& args, const LinkRateOfConfig& link_rate_of_config);

}  // namespace tether
