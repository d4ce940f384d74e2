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
//
// Charts of y against x (not time), for the benchmarks' figures: `tether
// report --chart SPEC -o FILE` draws a chart spec (JSON, below) as one
// standalone SVG (FILE ending .svg) or an HTML page of its charts. Each series
// is one <polyline> with one point per data point (and a circle per point),
// coloured by its group (series of one group share a colour: e.g. an
// algorithm's largest distance solid and its median dashed); names and
// labels are XML-escaped; log_x draws x on a log scale (every x > 0).
#pragma once

#include <functional>
#include <string>
#include <utility>
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

struct ChartSeries {
  std::string name;
  std::string group;   // empty: the series is its own group (its own colour)
  std::vector<std::pair<double, double>> points;   // (x, y), drawn in this order
  bool dashed = false;
};

struct Chart {
  std::string title, xlabel, ylabel;
  bool log_x = false;
  std::vector<ChartSeries> series;
};

// A chart spec: either one chart
//   {"title": T, "xlabel": X, "ylabel": Y, "log_x": bool,
//    "series": [{"name": N, "group": G, "dashed": bool, "points": [[x, y], ...]}, ...]}
// or a page of charts {"title": T, "charts": [chart, ...]}. Throws
// std::runtime_error naming what is wrong (not JSON, a missing or mistyped
// key, a non-finite value, x <= 0 with log_x, no series).
struct ChartPage {
  std::string title;
  std::vector<Chart> charts;
};
ChartPage parse_chart_spec(const std::string& json_text);

// One standalone SVG document (xmlns, colours as attributes: it shows as an
// <img> in a README) with axes, tick labels, axis labels, the title and a
// legend. A pure function of the chart.
std::string render_chart_svg(const Chart& chart);

// `tether report --chart SPEC -o FILE`: FILE ending .svg gets the spec's one
// chart (exit 2 when it holds more), any other FILE an HTML page of every
// chart. Exit 0, 1 if FILE cannot be written, 2 for a bad or unreadable spec.
int chart_command(const std::string& spec_path, const std::string& out);

}  // namespace tether
