// The terminal view of `tether dashboard` and its command line; the HTML
// report is in report.cpp.
#include "observe/dashboard.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iterator>
#include <map>
#include <set>
#include <thread>

#include "observe/format.h"

namespace tether {

namespace {

// A number in at most `width` characters, with as many significant digits
// as fit (3 at most); exponents without padding ("1.2e-5").
std::string compact(double v, size_t width) {
  if (!std::isfinite(v)) return "nan";
  if (v == 0) return "0";
  auto trim = [](std::string s) {
    size_t e = s.find('e');
    if (e != std::string::npos) {
      if (s[e + 1] == '+') s.erase(e + 1, 1);           // "1.2e+07" -> "1.2e07"
      size_t d = s[e + 1] == '-' ? e + 2 : e + 1;
      while (d + 1 < s.size() && s[d] == '0') s.erase(d, 1);   // "1.2e-05" -> "1.2e-5"
    }
    return s;
  };
  for (int digits = 3; digits >= 1; --digits) {
    char g[64], e[64];
    std::snprintf(g, sizeof g, "%.*g", digits, v);
    std::snprintf(e, sizeof e, "%.*e", digits - 1, v);
    for (const std::string& s : {trim(g), trim(e)})
      if (s.size() <= width) return s;
  }
  return std::string(width, '#');
}

// A counter in `width` characters: exact, else in k, M or G.
std::string counter(uint64_t v, size_t width) {
  std::string s = std::to_string(v);
  if (s.size() <= width) return s;
  const char* units[] = {"k", "M", "G", "T", "P"};
  double d = double(v);
  for (const char* u : units) {
    d /= 1000;
    std::string c = compact(d, width - 1) + u;
    if (c.size() <= width && c.find_first_of("e#") == std::string::npos) return c;
  }
  return compact(double(v), width);
}

std::string right(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

// Cuts `s` to `width` columns (ASCII), ending in "~" when cut.
std::string clip(const std::string& s, size_t width) {
  return s.size() <= width ? s : s.substr(0, width - 1) + "~";
}

std::string local_clock(double t) {
  if (t <= 0) return "--:--:--";
  std::time_t tt = std::time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// Column widths; separated by one space: 2+6+3+7+5+6+5+4+7+7+7+3+5 = 67, + 12 = 79.
struct Col {
  const char* head;
  size_t width;
};
constexpr Col kCols[] = {{"id", 2},    {"step", 6},  {"ep", 3},    {"loss", 7},  {"test%", 5},
                         {"img/s", 6}, {"idle%", 5}, {"infl", 4},  {"disp", 7},  {"dist", 7},
                         {"bound", 7}, {"thr", 3},   {"state", 5}};

std::string row(const std::vector<std::string>& cells) {
  std::string line;
  for (size_t i = 0; i < cells.size(); ++i) {   // cells.size() == size of kCols
    if (i > 0) line += ' ';
    line += right(clip(cells[i], kCols[i].width), kCols[i].width);
  }
  return line;
}

std::string images_per_s(double v) {
  if (!(v >= 0)) return "-";
  return v < 999999.5 ? fmt("%.0f", v) : counter(uint64_t(std::min(v, 1e18)), 6);
}

const char* short_state(NodeState s) {
  switch (s) {
    case NodeState::kRunning: return "run";
    case NodeState::kDone: return "done";
    case NodeState::kInterrupted: return "intr";
    case NodeState::kFailed: return "FAIL";
  }
  return "?";
}

// "0,1,3"
std::string id_list(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id);
  }
  return s;
}

// "-2", "+2", "-2 +4", "" for none.
std::string membership_delta(const ViewSummary& v) {
  std::string s;
  auto add = [&s](char sign, int id) {
    if (!s.empty()) s += ' ';
    s += sign;
    s += std::to_string(id);
  };
  for (int id : v.left) add('-', id);
  for (int id : v.joined) add('+', id);
  return s;
}

const char* anchors_word(const ViewSummary& v) {
  auto eq = v.anchors_equal();
  return !eq ? "anchors ?" : *eq ? "anchors equal" : "anchors DIFFER";
}

// The membership lines: each node's current view (nodes in the same view on
// one line), the last kViewLines view changes, and no-quorum events.
constexpr size_t kViewLines = 5;
void membership_lines(const RunLog& log, std::vector<std::string>& lines, size_t width) {
  // Current views: (epoch, members) -> nodes in it.
  std::map<std::pair<uint64_t, std::vector<int>>, std::vector<int>> current;
  for (const auto& [id, n] : log.nodes())
    if (const ViewRecord* v = n.current_view()) current[{v->epoch, v->members}].push_back(id);
  for (const auto& [view, in] : current) {
    lines.push_back(clip("view: epoch " + std::to_string(view.first) + " [" + id_list(view.second) + "] on " +
                             (in.size() == 1 ? "node " : "nodes ") + id_list(in),
                         width));
  }
  const std::vector<ViewSummary> views = log.views();
  if (!views.empty()) {
    std::string head = "view changes: " + std::to_string(views.size());
    if (views.size() > kViewLines) head += " (last " + std::to_string(kViewLines) + ")";
    lines.push_back(head);
    // The last kViewLines of `views` (epoch order).
    for (size_t i = views.size() > kViewLines ? views.size() - kViewLines : 0; i < views.size(); ++i) {
      const ViewSummary& v = views[i];
      std::string delta = membership_delta(v);
      std::string l = "  " + local_clock(v.time) + " epoch " + std::to_string(v.epoch) + " [" + id_list(v.members) +
                      "]" + (delta.empty() ? "" : " " + delta) + " " + fmt("%.0f", v.ms) + " ms " + anchors_word(v) +
                      (v.reason.empty() ? "" : ": " + v.reason);
      std::replace(l.begin(), l.end(), '\n', ' ');
      lines.push_back(clip(l, width));
    }
  }
  for (const auto& [id, n] : log.nodes()) {
    for (const NoQuorumRecord& q : n.no_quorum) {
      lines.push_back(clip("node " + std::to_string(id) + ": no quorum at step " + std::to_string(q.step) +
                               ", unreachable " + (q.unreachable.empty() ? "?" : id_list(q.unreachable)) +
                               ", waited " + fmt("%.0f", q.waited_ms) + " ms",
                           width));
    }
  }
}

}  // namespace

std::string render_frame(const RunLog& log, const FrameOptions& opts) {
  const size_t width = kDashboardColumns;
  std::vector<std::string> lines;
  const auto& nodes = log.nodes();
  const double last = log.end_time();

  std::string right_head = std::to_string(nodes.size()) + (nodes.size() == 1 ? " node" : " nodes") + "  last " +
                           local_clock(last);
  if (opts.now > 0 && last > 0) {
    double age_s = std::max(0.0, opts.now - last);
    right_head += " (" + (age_s < 100 ? fmt("%.0fs", age_s) : format_duration(age_s)) + " ago)";
  }
  std::string left_head = "tether dashboard  ";
  size_t room = width > left_head.size() + right_head.size() + 2 ? width - left_head.size() - right_head.size() - 2 : 0;
  std::string dir = log.dir();
  if (dir.size() > room) dir = room > 3 ? "..." + dir.substr(dir.size() - (room - 3)) : "";
  std::string head = left_head + dir;
  head += std::string(width > head.size() + right_head.size() ? width - head.size() - right_head.size() : 1, ' ');
  lines.push_back(clip(head + right_head, width));

  std::vector<std::string> heads;
  for (const Col& c : kCols) heads.push_back(c.head);
  lines.push_back(row(heads));

  double total_ips = 0, running_ips = 0, dist = 0, bound = 0, dist_run = 0;
  uint64_t sketch_age = 0, sketch_age_max = 0;   // gossip: the oldest sketch an estimate used, now and over the run
  size_t running = 0, done = 0, interrupted = 0, failed = 0, throttled = 0;
  uint64_t throttle_count = 0, handshakes_failed = 0;   // handshakes: summed over the nodes (each counts its own)
  bool plaintext = false;                               // some node runs net.security "none"
  for (const auto& [id, n] : nodes) {
    const NodeSample* s = n.last();
    const NodeState st = n.state();
    std::vector<std::string> cells(std::size(kCols), "-");
    cells[0] = std::to_string(id);
    if (s != nullptr) {
      cells[1] = counter(s->step, 6);
      cells[2] = counter(uint64_t(s->epoch), 3);
      cells[3] = compact(s->loss, 7);
      cells[5] = images_per_s(s->images_per_s);
      cells[6] = fmt("%.1f", std::clamp(s->idle_frac, 0.0, 1.0) * 100);
      cells[7] = counter(uint64_t(std::max<int64_t>(0, s->rounds_in_flight)), 4);
      cells[8] = compact(s->disp_norm, 7);
      cells[9] = compact(s->max_pair_dist, 7);
      cells[10] = compact(s->bound, 7);
      cells[11] = s->throttled ? "YES" : "no";
      total_ips += s->images_per_s;
      if (st == NodeState::kRunning) running_ips += s->images_per_s;
      if (s->max_pair_dist >= dist) {
        dist = s->max_pair_dist;
        bound = s->bound;
      }
      dist_run = std::max(dist_run, s->max_pair_dist_run);
      sketch_age = std::max(sketch_age, s->sketch_age_rounds);
      sketch_age_max = std::max(sketch_age_max, s->sketch_age_rounds_max);
      throttle_count = std::max(throttle_count, s->throttle_count);
      if (s->throttled && st == NodeState::kRunning) ++throttled;
      handshakes_failed += s->handshakes_failed;
      if (s->security == "none") plaintext = true;
    }
    if (n.final) {
      cells[1] = counter(std::max<uint64_t>(n.final->steps, s != nullptr ? s->step : 0), 6);
      dist_run = std::max(dist_run, n.final->max_pair_dist_run);
      throttle_count = std::max(throttle_count, n.final->throttle_count);
    }
    if (auto acc = n.last_test_acc()) cells[4] = fmt(*acc * 100 < 99.995 ? "%.2f" : "%.1f", *acc * 100);
    cells[12] = short_state(st);
    switch (st) {
      case NodeState::kRunning: ++running; break;
      case NodeState::kDone: ++done; break;
      case NodeState::kInterrupted: ++interrupted; break;
      case NodeState::kFailed: ++failed; break;
    }
    lines.push_back(row(cells));
  }

  // Summary: throughput of the running nodes (of all, once none runs).
  std::string sum = "total " + images_per_s(running > 0 ? running_ips : total_ips) + " img/s";
  if (bound > 0) {
    sum += "  dist " + compact(dist, 7) + " / bound " + compact(bound, 7) + " (" + (dist / bound < 9.995 ? fmt("%.0f", dist / bound * 100) : std::string(">999")) + "%)";
  } else {
    sum += "  dist " + compact(dist, 7) + " (no bound)";
  }
  if (dist_run > 0) sum += "  run max " + compact(dist_run, 7);
  lines.push_back(clip(sum, width));
  // Gossip estimates from the sketches that have arrived: how old the oldest was.
  if (sketch_age_max > 0)
    lines.push_back(clip("dist from sketches up to " + std::to_string(sketch_age) + " round" +
                             (sketch_age == 1 ? "" : "s") + " old (" + std::to_string(sketch_age_max) +
                             " at most in the run)",
                         width));

  std::string status = "nodes: " + std::to_string(running) + " running, " + std::to_string(done) + " finished, " +
                       std::to_string(failed) + " failed";
  if (interrupted > 0) status += ", " + std::to_string(interrupted) + " interrupted";
  if (throttled > 0) status += "  " + std::to_string(throttled) + " throttled";
  if (throttle_count > 0) status += "  throttles " + std::to_string(throttle_count);
  if (plaintext) status += "  links PLAINTEXT (net.security none)";
  if (handshakes_failed > 0) status += "  handshakes refused " + std::to_string(handshakes_failed);
  if (size_t bad = log.malformed(); bad > 0)
    status += "  " + std::to_string(bad) + (bad == 1 ? " bad line" : " bad lines");
  lines.push_back(clip(status, width));

  // Once no node runs: do the final models agree? (a run's one model)
  if (running == 0) {
    std::set<std::string> hashes;
    size_t with_hash = 0;
    for (const auto& [id, n] : nodes) {
      if (n.final && !n.final->params_hash.empty()) {
        hashes.insert(n.final->params_hash);
        ++with_hash;
      }
    }
    if (with_hash > 0) {
      lines.push_back(clip(hashes.size() == 1
                               ? "final models: identical on " + std::to_string(with_hash) + " node(s), params_hash " +
                                     *hashes.begin()
                               : "final models: " + std::to_string(hashes.size()) + " distinct params_hash values over " +
                                     std::to_string(with_hash) + " nodes",
                           width));
    }
  }

  membership_lines(log, lines, width);

  for (const auto& [id, n] : nodes) {
    if (!n.failed) continue;
    std::string err = n.failed->error;
    std::replace(err.begin(), err.end(), '\n', ' ');
    lines.push_back(clip("node " + std::to_string(id) + " failed at step " + std::to_string(n.failed->step) + ": " + err,
                         width));
  }

  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

namespace {

double wall_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

int dashboard_command(const DashboardArgs& args, const std::atomic<bool>* stop) {
  const std::string& dir = args.dir;
  bool once = args.once;
  long interval_ms = args.interval_ms;
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  if (!tty && interval_ms < 0) once = true;   // scripts and pipes get one frame
  if (interval_ms < 0) interval_ms = 1000;

  try {
    RunLog log(dir);
    log.refresh();
    if (log.nodes().empty()) {
      std::fprintf(stderr, "tether: dashboard: %s: no node-*.jsonl files (is it a run's log.dir?)\n", dir.c_str());
      return 2;
    }
    if (once) {
      std::fputs(render_frame(log).c_str(), stdout);
      return 0;
    }
    bool changed = true;
    while (true) {
      if (tty) {
        FrameOptions fo;
        fo.now = wall_now();
        std::string frame = "\033[H\033[J" + render_frame(log, fo);
        std::fputs(frame.c_str(), stdout);
      } else if (changed) {
        std::fputs((render_frame(log) + "\n").c_str(), stdout);
      }
      std::fflush(stdout);
      if (log.all_finished()) return 0;
      // Sleep in short slices so that Ctrl-C ends the view promptly.
      auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(interval_ms);
      while (std::chrono::steady_clock::now() < until) {
        if (stop != nullptr && stop->load()) return 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min<long>(50, interval_ms)));
      }
      if (stop != nullptr && stop->load()) return 0;
      changed = log.refresh();
    }
  } catch (const RunLogError& e) {
    std::fprintf(stderr, "tether: dashboard: %s\n", e.what());
    return 2;
  }
}

}  // namespace tether
