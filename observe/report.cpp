// `tether report`: a run's metrics as one self-contained HTML page (contract
// in observe/report.h). The plots are SVG drawn here (they show without the
// script); the inline script adds legend toggles and a hover readout and
// marks <body> once it ran. Nothing on the page refers to the network.
#include "observe/report.h"

#include "observe/format.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <nlohmann/json.hpp>

namespace tether {

namespace {

std::string esc(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

// Ten colours that stay apart (Tableau 10); node i gets kPalette[i % 10].
constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

struct Point {
  double x, y;
};

struct Series {
  std::string name, color;
  std::vector<Point> pts;
  bool dashed = false;
  bool markers = false;   // points only (test accuracy)
  double width = 1.6;
};

struct Plot {
  std::string title, ylabel;
  std::vector<Series> series;
  std::optional<double> ymin, ymax;   // fixed ends; absent: from the data
};

// Plot area inside a kW × kH view box.
constexpr double kW = 640, kH = 300, kLeft = 62, kRight = 14, kTop = 12, kBottom = 42;

// A step of 1, 2 or 5 × 10^k giving about `target` intervals over `span`.
double nice_step(double span, int target) {
  double raw = span / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double norm = raw / mag;
  double m = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return m * mag;
}

// A tick label with as many decimals as the step needs; k and M for large values.
std::string tick_label(double v, double step) {
  if (std::fabs(v) < step * 1e-6) v = 0;
  double scale = 1;
  const char* suffix = "";
  if (step >= 1e6) {
    scale = 1e6;
    suffix = "M";
  } else if (step >= 1e3 && std::fabs(v) >= 1e4) {
    scale = 1e3;
    suffix = "k";
  }
  double s = step / scale;
  int decimals = s >= 1 ? 0 : std::min(9, int(std::ceil(-std::log10(s) - 1e-9)));
  if (s < 1e-4 || std::fabs(v / scale) >= 1e7) return fmt("%.2g", v);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f%s", decimals, v / scale, suffix);
  return buf;
}

// At most `max_points` points: every k-th, the last kept (the curve's shape
// at a report's width needs no more).
std::vector<Point> thin(const std::vector<Point>& pts, size_t max_points = 1500) {
  if (pts.size() <= max_points) return pts;
  size_t k = (pts.size() + max_points - 1) / max_points;
  std::vector<Point> out;
  for (size_t i = 0; i < pts.size(); i += k) out.push_back(pts[i]);   // i < pts.size(): indices of pts
  if (out.back().x != pts.back().x) out.push_back(pts.back());
  return out;
}

struct Axis {
  double lo, hi, step;
};

Axis axis(double lo, double hi, int target, bool snap) {
  if (!(hi > lo)) {
    double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  double step = nice_step(hi - lo, target);
  if (snap) {
    lo = std::floor(lo / step + 1e-9) * step;
    hi = std::ceil(hi / step - 1e-9) * step;
  }
  return {lo, hi, step};
}

// The x axis: seconds since the run started, in s, min or h.
struct TimeAxis {
  double t0, span_s, scale;   // x value = (time - t0) / scale
  const char* unit;
};

TimeAxis time_axis(double t0, double t1) {
  double span = std::max(1e-3, t1 - t0);
  if (span > 3 * 3600) return {t0, span, 3600, "h"};
  if (span > 600) return {t0, span, 60, "min"};
  return {t0, span, 1, "s"};
}

// A view change drawn as a vertical line on every time plot: `x` in the time
// axis' unit; a view that lost members is a "fail" line, one that took members
// in (and lost none) a "join" line.
struct ViewMark {
  double x;
  uint64_t epoch;
  std::string kind;    // "fail", "join" or "view"
  std::string title;   // hover text
};

std::string svg_plot(const Plot& p, const TimeAxis& ta, int index, const std::vector<ViewMark>& marks) {
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  double ylo = INFINITY, yhi = -INFINITY;
  bool any = false;
  for (const Series& s : p.series)
    for (const Point& q : s.pts) {
      if (!std::isfinite(q.y)) continue;
      ylo = std::min(ylo, q.y);
      yhi = std::max(yhi, q.y);
      any = true;
    }
  if (!any) ylo = yhi = 0;
  if (p.ymin) ylo = std::min(ylo, *p.ymin);
  if (p.ymax) yhi = std::max(yhi, *p.ymax);
  Axis ya = axis(ylo, yhi, 5, true);
  Axis xa = axis(0, ta.span_s / ta.scale, 6, false);
  auto px = [&](double x) { return kLeft + (x - xa.lo) / (xa.hi - xa.lo) * pw; };
  auto py = [&](double y) { return kTop + ph - (y - ya.lo) / (ya.hi - ya.lo) * ph; };

  std::string o;
  char buf[640];   // the longest formatted piece (the <svg> tag) is under 400 characters
  std::snprintf(buf, sizeof buf,
                "<svg class=\"plot\" id=\"plot-%d\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
                "data-x0=\"%.9g\" data-x1=\"%.9g\" data-y0=\"%.9g\" data-y1=\"%.9g\" "
                "data-px0=\"%.1f\" data-px1=\"%.1f\" data-py0=\"%.1f\" data-py1=\"%.1f\" data-unit=\"%s\">\n",
                index, kW, kH, xa.lo, xa.hi, ya.lo, ya.hi, kLeft, kLeft + pw, kTop + ph, kTop, ta.unit);
  o += buf;
  o += "<title>" + esc(p.title) + "</title>\n";
  // Grid and tick labels; tick counts come from the nice steps (about 5-6 each).
  o += "<g class=\"grid\">\n";
  for (double y = ya.lo; y <= ya.hi + ya.step * 1e-6; y += ya.step) {
    std::snprintf(buf, sizeof buf, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>", kLeft, kLeft + pw, py(y),
                  py(y));
    o += buf;
    std::snprintf(buf, sizeof buf, "<text class=\"yt\" x=\"%.1f\" y=\"%.1f\">", kLeft - 6, py(y) + 4);
    o += buf + tick_label(y, ya.step) + "</text>\n";
  }
  double x0 = std::ceil(xa.lo / xa.step - 1e-9) * xa.step;
  for (double x = x0; x <= xa.hi + xa.step * 1e-6; x += xa.step) {
    std::snprintf(buf, sizeof buf, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/>", px(x), px(x), kTop,
                  kTop + ph);
    o += buf;
    std::snprintf(buf, sizeof buf, "<text class=\"xt\" x=\"%.1f\" y=\"%.1f\">", px(x), kTop + ph + 16);
    o += buf + tick_label(x, xa.step) + "</text>\n";
  }
  o += "</g>\n";
  std::snprintf(buf, sizeof buf, "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>\n", kLeft,
                kTop, pw, ph);
  o += buf;
  std::snprintf(buf, sizeof buf, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\">time since start (%s)</text>\n",
                kLeft + pw / 2, kH - 6, ta.unit);
  o += buf;
  std::snprintf(buf, sizeof buf, "<text class=\"yl\" transform=\"translate(14 %.1f) rotate(-90)\">", kTop + ph / 2);
  o += buf + esc(p.ylabel) + "</text>\n";
  if (!marks.empty()) {
    o += "<g class=\"views\">";
    for (const ViewMark& m : marks) {
      if (!(m.x >= xa.lo && m.x <= xa.hi)) continue;
      std::snprintf(buf, sizeof buf,
                    "<line class=\"view %s\" data-epoch=\"%llu\" x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" "
                    "y2=\"%.1f\">",
                    m.kind.c_str(), static_cast<unsigned long long>(m.epoch), px(m.x), px(m.x), kTop, kTop + ph);
      o += buf + std::string("<title>") + esc(m.title) + "</title></line>";
      std::snprintf(buf, sizeof buf, "<text class=\"vt\" x=\"%.1f\" y=\"%.1f\">e%llu</text>", px(m.x) + 2,
                    kTop + 10, static_cast<unsigned long long>(m.epoch));
      o += buf;
    }
    o += "</g>\n";
  }
  if (!any) {
    std::snprintf(buf, sizeof buf, "<text class=\"nodata\" x=\"%.1f\" y=\"%.1f\">no data</text>\n", kLeft + pw / 2,
                  kTop + ph / 2);
    o += buf;
  }
  for (size_t si = 0; si < p.series.size(); ++si) {   // si: index into p.series (legend order)
    const Series& s = p.series[si];
    std::vector<Point> pts = thin(s.pts);
    o += "<g class=\"series\" data-i=\"" + std::to_string(si) + "\" data-name=\"" + esc(s.name) +
         "\" style=\"color:" + s.color + "\">";
    auto finite = [](const Point& q) { return std::isfinite(q.x) && std::isfinite(q.y); };
    if (s.markers || std::count_if(pts.begin(), pts.end(), finite) == 1) {
      for (const Point& q : pts) {
        if (!finite(q)) continue;
        std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\"/>", px(q.x), py(q.y),
                      s.markers ? 3.5 : 2.5);
        o += buf;
      }
    }
    if (!s.markers) {
      std::string d;
      bool pen = false;
      for (const Point& q : pts) {
        if (!finite(q)) {
          pen = false;   // a gap
          continue;
        }
        std::snprintf(buf, sizeof buf, "%c%.1f,%.1f", pen ? 'L' : 'M', px(q.x), py(q.y));
        d += buf;
        pen = true;
      }
      if (!d.empty()) {
        // `d` may be long: appended, not formatted into `buf`.
        o += "<path d=\"" + d + "\" stroke-width=\"" + fmt("%.1f", s.width) + "\"" +
             (s.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>";
      }
    }
    o += "</g>\n";
  }
  o += "</svg>\n";
  return o;
}

std::string figure(const Plot& p, const TimeAxis& ta, int index, const std::vector<ViewMark>& marks) {
  std::string o = "<figure class=\"fig\">\n<figcaption>" + esc(p.title) + "</figcaption>\n";
  o += svg_plot(p, ta, index, marks);
  o += "<div class=\"legend\">";
  for (size_t si = 0; si < p.series.size(); ++si) {   // si: index into p.series, as data-i above
    const Series& s = p.series[si];
    const char* kind = s.markers ? "dot" : s.dashed ? "dash" : "line";
    char buf[128];
    std::snprintf(buf, sizeof buf, "<span class=\"item\" data-i=\"%zu\"><i class=\"%s\" style=\"color:%s\"></i>", si,
                  kind, s.color.c_str());
    o += buf + esc(s.name) + "</span>";
  }
  o += "</div>\n</figure>\n";
  return o;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  return u == 0 ? fmt("%.0f B", b) : fmt("%.2f ", b) + units[u];
}

std::string local_time(double t) {
  if (t <= 0) return "-";
  std::time_t tt = std::time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

const char* kStyle = R"CSS(
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 20px 28px; color: #222; background: #fff; }
h2 { font-size: 16px; margin: 14px 0 4px; }
h1 { font-size: 20px; margin: 0 0 4px; word-break: break-all; }
.sub { color: #555; margin-bottom: 14px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px 22px; }
.fig { margin: 0; position: relative; }
figcaption { font-weight: 600; margin-bottom: 2px; }
svg.plot { width: 100%; height: auto; display: block; font-size: 11px; }
svg.plot .grid line { stroke: #e4e4e4; stroke-width: 1; }
svg.plot .frame { fill: none; stroke: #999; stroke-width: 1; }
svg.plot text { fill: #444; }
svg.plot .yt { text-anchor: end; }
svg.plot .xt, svg.plot .xl, svg.plot .yl, svg.plot .nodata { text-anchor: middle; }
svg.plot .xl, svg.plot .yl { font-size: 12px; fill: #222; }
svg.plot .nodata { fill: #999; font-size: 14px; }
svg.plot .series path { fill: none; stroke: currentColor; stroke-linejoin: round; }
svg.plot .series circle { fill: currentColor; stroke: #fff; stroke-width: 0.8; }
svg.plot .cross { stroke: #555; stroke-width: 1; stroke-dasharray: 3 3; }
.legend { font-size: 12px; margin: 2px 0 0 62px; }
.legend .item { margin-right: 12px; cursor: pointer; white-space: nowrap; user-select: none; }
.legend .item.off { opacity: 0.35; }
.legend i { display: inline-block; width: 18px; height: 0; border-top: 2px solid currentColor; vertical-align: middle; margin-right: 4px; }
.legend i.dash { border-top-style: dashed; }
.legend i.dot { width: 8px; height: 8px; border: 0; border-radius: 50%; background: currentColor; }
.tip { position: absolute; pointer-events: none; background: rgba(255,255,255,0.95); border: 1px solid #bbb; border-radius: 4px; padding: 4px 6px; font-size: 12px; white-space: nowrap; display: none; z-index: 2; }
table { border-collapse: collapse; margin: 6px 0 18px; font-size: 13px; }
.tablewrap { overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; }
td.l, th.l { text-align: left; }
td.err { color: #b00; text-align: left; max-width: 420px; white-space: normal; }
code { font-size: 12px; }
.ok { color: #070; } .bad { color: #b00; }
svg.plot line.view { stroke: #888; stroke-width: 1.2; stroke-dasharray: 4 3; }
svg.plot line.view.fail { stroke: #c00; }
svg.plot line.view.join { stroke: #080; }
svg.plot .vt { font-size: 10px; fill: #666; }
ul.events { margin: 4px 0 18px; padding-left: 22px; font-size: 13px; }
)CSS";

// Legend toggles, a crosshair with each visible series' value at the nearest
// point, and the marker a headless browser checks.
const char* kScript = R"JS(
(function () {
  var errors = 0;
  window.addEventListener('error', function () {
    errors++;
    document.body.setAttribute('data-errors', String(errors));
  });
  function num(el, k) { return parseFloat(el.getAttribute('data-' + k)); }
  function pathPoints(path) {
    var d = path.getAttribute('d') || '', out = [], re = /[ML](-?[\d.]+),(-?[\d.]+)/g, m;
    while ((m = re.exec(d)) !== null) out.push([parseFloat(m[1]), parseFloat(m[2])]);
    return out;
  }
  function fmt(v) {
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
    return String(Math.round(v * 1e4) / 1e4);
  }
  function setup(fig) {
    var svg = fig.querySelector('svg.plot');
    var groups = svg.querySelectorAll('g.series');
    fig.querySelectorAll('.legend .item').forEach(function (item) {
      item.addEventListener('click', function () {
        var g = svg.querySelector('g.series[data-i="' + item.getAttribute('data-i') + '"]');
        var off = item.classList.toggle('off');
        if (g) g.style.display = off ? 'none' : '';
      });
    });
    var x0 = num(svg, 'x0'), x1 = num(svg, 'x1'), y0 = num(svg, 'y0'), y1 = num(svg, 'y1');
    var px0 = num(svg, 'px0'), px1 = num(svg, 'px1'), py0 = num(svg, 'py0'), py1 = num(svg, 'py1');
    var unit = svg.getAttribute('data-unit');
    var data = [];
    groups.forEach(function (g) {
      var pts = [];
      g.querySelectorAll('path').forEach(function (p) { pts = pts.concat(pathPoints(p)); });
      g.querySelectorAll('circle').forEach(function (c) { pts.push([num(c, 'cx') || parseFloat(c.getAttribute('cx')), parseFloat(c.getAttribute('cy'))]); });
      data.push({ g: g, name: g.getAttribute('data-name'), color: g.style.color, pts: pts });
    });
    var ns = svg.namespaceURI;
    var cross = document.createElementNS(ns, 'line');
    cross.setAttribute('class', 'cross');
    cross.setAttribute('y1', py1);
    cross.setAttribute('y2', py0);
    cross.style.display = 'none';
    svg.appendChild(cross);
    var tip = document.createElement('div');
    tip.className = 'tip';
    fig.appendChild(tip);
    svg.addEventListener('mousemove', function (ev) {
      var r = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal;
      var sx = (ev.clientX - r.left) / r.width * vb.width;
      if (sx < px0 || sx > px1) { cross.style.display = 'none'; tip.style.display = 'none'; return; }
      cross.setAttribute('x1', sx);
      cross.setAttribute('x2', sx);
      cross.style.display = '';
      var rows = ['t = ' + fmt(x0 + (sx - px0) / (px1 - px0) * (x1 - x0)) + ' ' + unit];
      data.forEach(function (s) {
        if (s.g.style.display === 'none' || s.pts.length === 0) return;
        var best = s.pts[0];
        s.pts.forEach(function (p) { if (Math.abs(p[0] - sx) < Math.abs(best[0] - sx)) best = p; });
        if (Math.abs(best[0] - sx) > (px1 - px0) * 0.05) return;
        var y = y0 + (py0 - best[1]) / (py0 - py1) * (y1 - y0);
        rows.push('<span style="color:' + s.color + '">\u25cf</span> ' + s.name + ': ' + fmt(y));
      });
      tip.innerHTML = rows.join('<br>');
      tip.style.display = 'block';
      var fr = fig.getBoundingClientRect();
      var left = ev.clientX - fr.left + 14;
      if (left + tip.offsetWidth > fr.width) left = ev.clientX - fr.left - tip.offsetWidth - 14;
      tip.style.left = left + 'px';
      tip.style.top = (ev.clientY - fr.top + 10) + 'px';
    });
    svg.addEventListener('mouseleave', function () { cross.style.display = 'none'; tip.style.display = 'none'; });
  }
  var plots = document.querySelectorAll('svg.plot'), drawn = 0, whole = 0;
  try {
    document.querySelectorAll('figure.fig').forEach(setup);
    plots.forEach(function (svg) {
      var visible = false;
      svg.querySelectorAll('g.series path, g.series circle').forEach(function (el) {
        var b = el.getBBox();
        if (b.width > 0 || b.height > 0) visible = true;
      });
      if (visible) drawn++;
    });
    // Each figure as written: a caption, its plot, its legend (a truncated
    // tag would have swallowed the rest).
    document.querySelectorAll('figure.fig').forEach(function (fig) {
      if (fig.querySelector(':scope > figcaption') && fig.querySelector(':scope > svg.plot') &&
          fig.querySelector(':scope > div.legend .item')) whole++;
    });
  } catch (e) {
    errors++;
  }
  document.body.setAttribute('data-plots', String(plots.length));
  document.body.setAttribute('data-plots-drawn', String(drawn));
  document.body.setAttribute('data-figures-whole', String(whole));
  document.body.setAttribute('data-errors', String(errors));
})();
)JS";

// "0,1,3"
std::string id_list(const std::vector<int>& ids) {
  std::string s;
  for (int id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id);
  }
  return s;
}

// A node's current view for the summary table: "3 [0,1,3]", "-" without one.
std::string view_cell(const NodeLog& n) {
  const ViewRecord* v = n.current_view();
  return v == nullptr ? "-" : std::to_string(v->epoch) + " [" + id_list(v->members) + "]";
}

// "Views, failures and rejoins": one row per view, whether the members'
// anchors agree at each epoch, then the failures, rejoins and no-quorum
// events in time order.
std::string membership_section(const RunLog& log, const std::vector<ViewSummary>& views, const TimeAxis& ta) {
  auto since = [&](double t) { return fmt("%.1f s", t - ta.t0); };
  std::string o = "<h2>Views, failures and rejoins</h2>\n";
  if (!views.empty()) {
    o += "<div class=\"tablewrap\"><table class=\"views\">\n<tr><th>time</th><th>epoch</th>"
         "<th class=\"l\">members</th><th class=\"l\">change</th><th class=\"l\">reason</th><th>resume round</th>"
         "<th>ms</th><th>transferred</th><th class=\"l\">anchors equal</th><th class=\"l\">recorded by</th></tr>\n";
    for (const ViewSummary& v : views) {
      std::string change;
      for (int id : v.left) change += (change.empty() ? "" : " ") + std::string("&minus;") + std::to_string(id);
      for (int id : v.joined) change += (change.empty() ? "" : " ") + std::string("+") + std::to_string(id);
      auto eq = v.anchors_equal();
      o += "<tr><td>" + since(v.time) + "</td><td>" + std::to_string(v.epoch) + "</td><td class=\"l\">" +
           id_list(v.members) + "</td><td class=\"l\">" + (change.empty() ? "-" : change) +
           "</td><td class=\"l\">" + esc(v.reason) + "</td><td>" + std::to_string(v.resume_round) + "</td><td>" +
           fmt("%.0f", v.ms) + "</td><td>" + human_bytes(double(v.transferred_bytes)) + "</td><td class=\"l " +
           (!eq ? "" : *eq ? "ok" : "bad") + "\">" + (!eq ? "-" : *eq ? "yes" : "no") + "</td><td class=\"l\">" +
           id_list(v.recorded_by) + "</td></tr>\n";
    }
    o += "</table></div>\n<ul class=\"events anchors\">\n";
    for (const ViewSummary& v : views) {
      auto eq = v.anchors_equal();
      std::string line = "anchors equal at epoch " + std::to_string(v.epoch) + ": ";
      if (!eq) {
        line += "unknown (no anchor_hash recorded)";
      } else if (*eq) {
        line += "<span class=\"ok\">yes</span> (" + std::to_string(v.anchors.size()) + " of " +
                std::to_string(v.members.size()) + " members, <code>" + esc(v.anchors.begin()->second) + "</code>)";
      } else {
        line += "<span class=\"bad\">no</span> (";
        bool first = true;
        for (const auto& [id, hash] : v.anchors) {
          line += (first ? "" : ", ") + std::string("node ") + std::to_string(id) + " <code>" + esc(hash) + "</code>";
          first = false;
        }
        line += ")";
      }
      o += "<li>" + line + "</li>\n";
    }
    o += "</ul>\n";
  }
  // Failures and rejoins, in time order.
  struct Ev {
    double time;
    std::string text;
  };
  std::vector<Ev> evs;
  std::set<int> seen;   // members of an earlier view: a node that comes back rejoins
  for (size_t i = 0; i < views.size(); ++i) {   // i: index into views (epoch order)
    const ViewSummary& v = views[i];
    if (i == 0 && v.left.empty() && v.joined.empty()) seen.insert(v.members.begin(), v.members.end());
    for (int id : v.left) {
      seen.insert(id);
      evs.push_back({v.time, "node " + std::to_string(id) + " left the view (epoch " + std::to_string(v.epoch) +
                                 (v.reason.empty() ? "" : ": " + esc(v.reason)) + ")"});
    }
    for (int id : v.joined) {
      evs.push_back({v.time, "node " + std::to_string(id) + (seen.count(id) ? " rejoined" : " joined") +
                                 " (epoch " + std::to_string(v.epoch) + ", " +
                                 human_bytes(double(v.transferred_bytes)) + " transferred, " + fmt("%.0f ms", v.ms) +
                                 ")"});
    }
    seen.insert(v.members.begin(), v.members.end());
  }
  for (const auto& [id, n] : log.nodes()) {
    for (const NoQuorumRecord& q : n.no_quorum) {
      evs.push_back({q.time, "node " + std::to_string(id) + ": no quorum at step " + std::to_string(q.step) +
                                 ", unreachable " + (q.unreachable.empty() ? "?" : id_list(q.unreachable)) +
                                 ", waited " + fmt("%.0f ms", q.waited_ms)});
    }
    if (n.failed) {
      evs.push_back({n.failed->time, "node " + std::to_string(id) + " failed at step " +
                                         std::to_string(n.failed->step) + ": " + esc(n.failed->error)});
    }
  }
  std::stable_sort(evs.begin(), evs.end(), [](const Ev& a, const Ev& b) { return a.time < b.time; });
  if (!evs.empty()) {
    o += "<ul class=\"events failures\">\n";
    for (const Ev& e : evs) o += "<li>" + since(e.time) + ": " + e.text + "</li>\n";
    o += "</ul>\n";
  }
  return o;
}

}  // namespace

std::string render_report(const RunLog& log, const ReportOptions& opts) {
  const auto& nodes = log.nodes();
  const double t0 = log.start_time(), t1 = log.end_time();
  const TimeAxis ta = time_axis(t0, t1);
  auto xof = [&](double t) { return (t - ta.t0) / ta.scale; };
  auto color = [](int node) { return std::string(kPalette[size_t(node) % std::size(kPalette)]); };
  auto label = [](int node) { return "node " + std::to_string(node); };

  Plot loss{"Training loss", "loss", {}, 0.0, std::nullopt};
  Plot acc{"Accuracy (lines: train, dots: test)", "accuracy (%)", {}, std::nullopt, std::nullopt};
  Plot ips{"Throughput", "images/s", {}, 0.0, std::nullopt};
  Plot idle{"Idle fraction (waiting for rounds)", "idle (%)", {}, 0.0, std::nullopt};
  Plot dist{"Largest pairwise distance and its bound", "distance (L2)", {}, 0.0, std::nullopt};
  Plot wire{"Bytes on the wire (sent)", "Mbit/s", {}, 0.0, std::nullopt};
  Plot disp{"Displacement norm", "||displacement||", {}, 0.0, std::nullopt};
  Plot period{"Period H (local steps per round)", "H", {}, 0.0, std::nullopt};

  // Every node's bound, merged in time order.
  struct Event {
    double time;
    int node;
    double bound;
  };
  std::vector<Event> events;
  for (const auto& [id, n] : nodes) {
    Series l{label(id), color(id), {}}, a{label(id) + " train", color(id), {}}, t{label(id) + " test", color(id), {}};
    t.markers = true;
    Series th{label(id), color(id), {}}, id_{label(id), color(id), {}}, di{label(id), color(id), {}};
    Series wi{label(id), color(id), {}}, dn{label(id), color(id), {}}, pe{label(id), color(id), {}};
    const NodeSample* prev = nullptr;
    for (const NodeSample& s : n.samples) {
      double x = xof(s.time);
      l.pts.push_back({x, s.loss});
      a.pts.push_back({x, s.train_acc * 100});
      th.pts.push_back({x, s.images_per_s});
      id_.pts.push_back({x, s.idle_frac * 100});
      di.pts.push_back({x, s.max_pair_dist});
      dn.pts.push_back({x, s.disp_norm});
      if (s.period > 0) pe.pts.push_back({x, double(s.period)});
      // Rate from the counter's growth since the previous record (a counter
      // that went back — a restart — gives no point).
      if (prev != nullptr && s.time > prev->time && s.bytes_sent >= prev->bytes_sent)
        wi.pts.push_back({x, double(s.bytes_sent - prev->bytes_sent) * 8 / 1e6 / (s.time - prev->time)});
      prev = &s;
      events.push_back({s.time, id, s.bound});
    }
    for (const EvalPoint& e : n.evals) t.pts.push_back({xof(e.time), e.test_acc * 100});
    loss.series.push_back(std::move(l));
    acc.series.push_back(std::move(a));
    if (!t.pts.empty()) acc.series.push_back(std::move(t));
    ips.series.push_back(std::move(th));
    idle.series.push_back(std::move(id_));
    dist.series.push_back(std::move(di));
    wire.series.push_back(std::move(wi));
    disp.series.push_back(std::move(dn));
    if (!pe.pts.empty()) period.series.push_back(std::move(pe));
  }
  std::stable_sort(events.begin(), events.end(), [](const Event& a, const Event& b) { return a.time < b.time; });
  // Total throughput: each node's images/s interpolated linearly between its
  // records, 0 outside its first..last record, summed on a common grid.
  Series total{"total", "#000", {}};
  total.width = 2.2;
  {
    double lo = INFINITY, hi = -INFINITY;
    size_t count = 0;
    for (const auto& [id, n] : nodes) {
      if (n.samples.empty()) continue;
      lo = std::min(lo, n.samples.front().time);
      hi = std::max(hi, n.samples.back().time);
      count += n.samples.size();
    }
    const size_t grid = std::min<size_t>(400, count);
    for (size_t g = 0; g < grid && hi > lo; ++g) {   // grid points 0..grid-1 span lo..hi
      double t = lo + (hi - lo) * double(g) / double(grid - 1);
      double sum = 0;
      for (const auto& [id, n] : nodes) {
        const auto& ss = n.samples;
        if (ss.empty() || t < ss.front().time || t > ss.back().time) continue;
        auto it = std::lower_bound(ss.begin(), ss.end(), t,
                                   [](const NodeSample& a, double v) { return a.time < v; });
        if (it == ss.begin() || it->time == t) {
          sum += it->images_per_s;
          continue;
        }
        const NodeSample& b = *it;
        const NodeSample& a = *(it - 1);
        double w = b.time > a.time ? (t - a.time) / (b.time - a.time) : 1;
        sum += a.images_per_s + w * (b.images_per_s - a.images_per_s);
      }
      total.pts.push_back({xof(t), sum});
    }
  }
  // The bound: the largest of the nodes' latest values, over time.
  Series bound{"bound", "#000", {}};
  bound.dashed = true;
  {
    std::map<int, double> cur_bound;   // each node's latest value
    for (const Event& e : events) {
      cur_bound[e.node] = e.bound;
      double b = 0;
      for (const auto& kv : cur_bound) b = std::max(b, kv.second);
      bound.pts.push_back({xof(e.time), b});
    }
  }
  if (nodes.size() > 1) ips.series.push_back(std::move(total));
  bool any_bound = std::any_of(bound.pts.begin(), bound.pts.end(), [](const Point& p) { return p.y > 0; });
  if (any_bound) dist.series.push_back(std::move(bound));
  if (opts.link_mbps > 0) {
    Series link{fmt("link %g Mbit/s", opts.link_mbps), "#000", {}};
    link.dashed = true;
    link.pts = {{0, opts.link_mbps}, {ta.span_s / ta.scale, opts.link_mbps}};
    wire.series.push_back(std::move(link));
  }

  // View changes: a line on every plot, a table and the failures and rejoins.
  const std::vector<ViewSummary> views = log.views();
  std::vector<ViewMark> marks;
  for (const ViewSummary& v : views) {
    std::string title = "view epoch " + std::to_string(v.epoch) + " [" + id_list(v.members) + "]";
    if (!v.reason.empty()) title += ": " + v.reason;
    marks.push_back({xof(v.time), v.epoch, !v.left.empty() ? "fail" : !v.joined.empty() ? "join" : "view", title});
  }
  const bool any_views = !views.empty() || std::any_of(nodes.begin(), nodes.end(), [](const auto& kv) {
    return !kv.second.views.empty() || !kv.second.no_quorum.empty();
  });

  const std::string title = opts.title.empty() ? log.dir() : opts.title;
  std::string o;
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  o += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  o += "<title>tether report: " + esc(title) + "</title>\n<style>" + std::string(kStyle) + "</style>\n</head>\n<body>\n";
  o += "<h1>tether run report: " + esc(title) + "</h1>\n";
  size_t running = 0, done = 0, failed = 0, interrupted = 0;
  for (const auto& [id, n] : nodes) {
    switch (n.state()) {
      case NodeState::kRunning: ++running; break;
      case NodeState::kDone: ++done; break;
      case NodeState::kInterrupted: ++interrupted; break;
      case NodeState::kFailed: ++failed; break;
    }
  }
  o += "<div class=\"sub\">" + std::to_string(nodes.size()) + (nodes.size() == 1 ? " node" : " nodes") + ": " +
       std::to_string(done) + " finished, " + std::to_string(failed) + " failed, " + std::to_string(interrupted) +
       " interrupted, " + std::to_string(running) + " running &middot; from " + local_time(t0) + " for " +
       fmt("%.1f s", t1 - t0) + " &middot; log dir <code>" + esc(log.dir()) + "</code>";
  if (size_t bad = log.malformed(); bad > 0) o += " &middot; " + std::to_string(bad) + " malformed lines skipped";
  o += "</div>\n";

  // Summary table.
  const bool any_failed = failed > 0;   // the error column only when a node failed
  o += "<div class=\"tablewrap\"><table class=\"summary\">\n<tr><th>node</th><th class=\"l\">state</th><th>steps</th>"
       "<th>epoch</th><th>loss</th><th>test acc</th><th class=\"l\">params_hash</th><th>mean img/s</th><th>idle</th>"
       "<th>max dist (run)</th><th>throttles</th><th>sent</th><th>received</th><th>rejected</th>"
       "<th>bad lines</th>";
  if (any_views) o += "<th class=\"l\">view (epoch [members])</th>";
  o += any_failed ? "<th class=\"l\">error</th></tr>\n" : "</tr>\n";
  std::set<std::string> hashes;
  size_t with_hash = 0;
  for (const auto& [id, n] : nodes) {
    const NodeSample* s = n.last();
    double mean_ips = 0;
    for (const NodeSample& q : n.samples) mean_ips += q.images_per_s;
    if (!n.samples.empty()) mean_ips /= double(n.samples.size());
    uint64_t steps = s != nullptr ? s->step : 0;
    double idle_total = s != nullptr ? s->idle_frac_total : 0, dist_run = s != nullptr ? s->max_pair_dist_run : 0;
    uint64_t throttles = s != nullptr ? s->throttle_count : 0, sent = s != nullptr ? s->bytes_sent : 0,
             recv = s != nullptr ? s->bytes_recv : 0, rejected = s != nullptr ? s->msgs_rejected : 0;
    std::string hash = "-";
    if (n.final) {
      steps = std::max(steps, n.final->steps);
      idle_total = std::max(idle_total, n.final->idle_frac_total);
      dist_run = std::max(dist_run, n.final->max_pair_dist_run);
      throttles = std::max(throttles, n.final->throttle_count);
      sent = std::max(sent, n.final->bytes_sent);
      recv = std::max(recv, n.final->bytes_recv);
      rejected = std::max(rejected, n.final->msgs_rejected);
      if (!n.final->params_hash.empty()) {
        hash = n.final->params_hash;
        hashes.insert(hash);
        ++with_hash;
      }
    }
    auto acc_v = n.last_test_acc();
    const char* st_class = n.state() == NodeState::kFailed ? "bad" : n.state() == NodeState::kDone ? "ok" : "";
    o += "<tr><td>" + std::to_string(id) + "</td><td class=\"l " + st_class + "\">" + node_state_name(n.state()) +
         "</td><td>" + std::to_string(steps) + "</td><td>" + (s != nullptr ? std::to_string(s->epoch) : "-") +
         "</td><td>" + (s != nullptr ? fmt("%.4f", s->loss) : "-") + "</td><td>" +
         (acc_v ? fmt("%.2f%%", *acc_v * 100) : "-") + "</td><td class=\"l\"><code>" + esc(hash) +
         "</code></td><td>" + fmt("%.0f", mean_ips) + "</td><td>" + fmt("%.1f%%", idle_total * 100) + "</td><td>" +
         fmt("%.4g", dist_run) + "</td><td>" + std::to_string(throttles) + "</td><td>" + human_bytes(double(sent)) +
         "</td><td>" + human_bytes(double(recv)) + "</td><td>" + std::to_string(rejected) + "</td><td>" +
         std::to_string(n.malformed) + "</td>" + (any_views ? "<td class=\"l\">" + view_cell(n) + "</td>" : "") +
         (any_failed ? "<td class=\"err\">" + (n.failed ? esc(n.failed->error) : std::string()) + "</td>" : "") +
         "</tr>\n";
  }
  o += "</table></div>\n";
  {  // links: net.security and the connections refused at the handshake (net/transport.h)
    std::set<std::string> modes;
    std::string refused;
    for (const auto& [id, n] : nodes) {
      const NodeSample* s = n.last();
      const NodeFinal* f = n.final ? &*n.final : nullptr;
      const std::string mode = f != nullptr && !f->security.empty() ? f->security : s != nullptr ? s->security : "";
      if (!mode.empty()) modes.insert(mode);
      const uint64_t count = std::max(f != nullptr ? f->handshakes_failed : 0, s != nullptr ? s->handshakes_failed : 0);
      const std::string& by = f != nullptr && f->handshakes_failed >= count ? f->handshake_failed
                              : s != nullptr ? s->handshake_failed : std::string();
      if (count > 0) refused += " node " + std::to_string(id) + ": " + std::to_string(count) + " " + esc(by) + ";";
    }
    if (!modes.empty()) {
      std::string m;
      for (const auto& x : modes) m += (m.empty() ? "" : ", ") + x;
      o += std::string("<p") + (modes.count("none") ? " class=\"bad\"" : "") + ">Links: net.security " + esc(m) +
           (modes.count("none") ? " (plaintext: not authenticated, not encrypted)" : " (CurveZMQ)") +
           ". Connections refused at the handshake:" + (refused.empty() ? " none." : refused) + "</p>\n";
    }
  }
  if (with_hash > 1) {
    o += hashes.size() == 1
             ? "<p class=\"ok\">All " + std::to_string(with_hash) + " final params_hash values agree.</p>\n"
             : "<p>" + std::to_string(hashes.size()) + " distinct final params_hash values over " +
                   std::to_string(with_hash) + " nodes.</p>\n";
  }

  if (any_views) o += membership_section(log, views, ta);

  o += "<div class=\"grid2\">\n";
  int index = 0;
  for (const Plot* p : {&loss, &acc, &ips, &idle, &dist, &wire, &disp}) o += figure(*p, ta, index++, marks);
  if (!period.series.empty()) o += figure(period, ta, index++, marks);   // a run that recorded H
  o += "</div>\n<script>" + std::string(kScript) + "</script>\n</body>\n</html>\n";
  return o;
}

namespace {

int report_usage(const std::string& msg) {
  std::fprintf(stderr, "tether: report: %s\n(run `tether report --help` for usage)\n", msg.c_str());
  return 2;
}

}  // namespace

int report_command(const ReportArgs& args, const LinkRateOfConfig& link_rate_of_config) {
  const std::string &dir = args.dir, &out = args.out, &config = args.config;
  ReportOptions opts = args.opts;
  if (!config.empty() && opts.link_mbps == 0) {
    if (!link_rate_of_config) return report_usage("--config is not available here; use --link-mbps");
    try {
      opts.link_mbps = link_rate_of_config(config);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "tether: config error: %s\n", e.what());
      return 2;
    }
  }
  std::string html;
  size_t node_count = 0;
  try {
    RunLog log(dir);
    log.refresh();
    if (log.nodes().empty()) {
      std::fprintf(stderr, "tether: report: %s: no node-*.jsonl files (is it a run's log.dir?)\n", dir.c_str());
      return 2;
    }
    node_count = log.nodes().size();
    html = render_report(log, opts);
  } catch (const RunLogError& e) {
    std::fprintf(stderr, "tether: report: %s\n", e.what());
    return 2;
  }
  std::ofstream f(out, std::ios::binary | std::ios::trunc);
  f << html;
  f.close();
  if (!f) {
    std::fprintf(stderr, "tether: report: %s: cannot write\n", out.c_str());
    return 1;
  }
  std::printf("wrote %s (%zu nodes, %zu bytes)\n", out.c_str(), node_count, html.size());
  return 0;
}

// ---- Charts of y against x: `tether report --chart` ----

namespace {

Chart parse_one_chart(const nlohmann::json& j, const std::string& where) {
  auto fail = [&](const std::string& what) { throw std::runtime_error(where + ": " + what); };
  if (!j.is_object()) fail("a chart must be an object");
  auto text = [&](const char* key) -> std::string {
    if (!j.contains(key)) return "";
    if (!j[key].is_string()) fail(std::string("\"") + key + "\" must be a string");
    return j[key].get<std::string>();
  };
  Chart c;
  c.title = text("title");
  c.xlabel = text("xlabel");
  c.ylabel = text("ylabel");
  if (j.contains("log_x")) {
    if (!j["log_x"].is_boolean()) fail("\"log_x\" must be true or false");
    c.log_x = j["log_x"].get<bool>();
  }
  if (!j.contains("series") || !j["series"].is_array() || j["series"].empty()) fail("\"series\" must be a non-empty array");
  for (size_t i = 0; i < j["series"].size(); ++i) {   // i: index into the spec's series
    const nlohmann::json& sj = j["series"][i];
    const std::string at = "series " + std::to_string(i);
    if (!sj.is_object()) fail(at + " must be an object");
    ChartSeries s;
    if (!sj.contains("name") || !sj["name"].is_string()) fail(at + ": \"name\" must be a string");
    s.name = sj["name"].get<std::string>();
    if (sj.contains("group")) {
      if (!sj["group"].is_string()) fail(at + ": \"group\" must be a string");
      s.group = sj["group"].get<std::string>();
    }
    if (sj.contains("dashed")) {
      if (!sj["dashed"].is_boolean()) fail(at + ": \"dashed\" must be true or false");
      s.dashed = sj["dashed"].get<bool>();
    }
    if (!sj.contains("points") || !sj["points"].is_array()) fail(at + ": \"points\" must be an array of [x, y]");
    for (const nlohmann::json& pj : sj["points"]) {
      if (!pj.is_array() || pj.size() != 2 || !pj[0].is_number() || !pj[1].is_number())
        fail(at + ": every point must be [x, y] (two numbers)");
      double x = pj[0].get<double>(), y = pj[1].get<double>();
      if (!std::isfinite(x) || !std::isfinite(y)) fail(at + ": a point is not finite");
      if (c.log_x && !(x > 0)) fail(at + ": x = " + fmt("%g", x) + " on a log scale (x must be > 0)");
      s.points.emplace_back(x, y);
    }
    c.series.push_back(std::move(s));
  }
  return c;
}

}  // namespace

ChartPage parse_chart_spec(const std::string& json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, false);
  if (j.is_discarded()) throw std::runtime_error("not JSON");
  if (!j.is_object()) throw std::runtime_error("the spec must be a JSON object");
  ChartPage page;
  if (j.contains("charts")) {
    if (j.contains("title") && !j["title"].is_string()) throw std::runtime_error("\"title\" must be a string");
    page.title = j.value("title", "");
    if (!j["charts"].is_array() || j["charts"].empty())
      throw std::runtime_error("\"charts\" must be a non-empty array");
    for (size_t i = 0; i < j["charts"].size(); ++i)   // i: index into the spec's charts
      page.charts.push_back(parse_one_chart(j["charts"][i], "chart " + std::to_string(i)));
  } else {
    page.charts.push_back(parse_one_chart(j, "chart"));
    page.title = page.charts[0].title;
  }
  return page;
}

std::string render_chart_svg(const Chart& c) {
  constexpr double W = 720, left = 70, right = 18, top = 34, plot_h = 300, bottom = 46;
  constexpr int kPerRow = 2;   // legend items per row: a group's two series side by side
  constexpr double kRowH = 18;
  const double pw = W - left - right;
  const int legend_rows = int((c.series.size() + kPerRow - 1) / kPerRow);
  const double H = top + plot_h + bottom + legend_rows * kRowH + 8;
  auto usable = [&](const std::pair<double, double>& q) {
    return std::isfinite(q.first) && std::isfinite(q.second) && (!c.log_x || q.first > 0);
  };
  auto tx = [&](double x) { return c.log_x ? std::log10(x) : x; };
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  std::set<double> xs;   // distinct x values: the ticks of a log axis
  for (const ChartSeries& s : c.series)
    for (const auto& q : s.points) {
      if (!usable(q)) continue;
      xlo = std::min(xlo, tx(q.first));
      xhi = std::max(xhi, tx(q.first));
      ylo = std::min(ylo, q.second);
      yhi = std::max(yhi, q.second);
      xs.insert(q.first);
    }
  const bool any = !xs.empty();
  if (!any) xlo = xhi = ylo = yhi = c.log_x ? 1 : 0;
  if (ylo >= 0) ylo = 0;   // distances, losses: from zero
  Axis ya = axis(ylo, yhi, 5, true);
  double xpad = xhi > xlo ? (xhi - xlo) * 0.05 : (c.log_x ? 0.3 : std::max(1.0, std::fabs(xlo) * 0.1));
  double x0 = xlo - xpad, x1 = xhi + xpad;
  auto px = [&](double x) { return left + (tx(x) - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + plot_h - (y - ya.lo) / (ya.hi - ya.lo) * plot_h; };
  std::map<std::string, size_t> group_index;   // group -> colour, in order of first appearance
  auto colour = [&](const ChartSeries& s) {
    const std::string& g = s.group.empty() ? s.name : s.group;
    auto it = group_index.emplace(g, group_index.size()).first;
    return std::string(kPalette[it->second % std::size(kPalette)]);
  };

  std::string o;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" "
                "height=\"%.0f\" font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"11\" role=\"img\">\n",
                W, H, W, H);
  o += buf;
  o += "<title>" + esc(c.title) + "</title>\n";
  std::snprintf(buf, sizeof buf, "<rect width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", W, H);
  o += buf;
  std::snprintf(buf, sizeof buf, "<text class=\"title\" x=\"%.1f\" y=\"20\" text-anchor=\"middle\" font-size=\"13\" "
                "font-weight=\"bold\" fill=\"#222\">", W / 2);
  o += buf + esc(c.title) + "</text>\n";
  o += "<g class=\"grid\" stroke=\"#e4e4e4\">\n";
  for (double y = ya.lo; y <= ya.hi + ya.step * 1e-6; y += ya.step) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text class=\"yt\" x=\"%.1f\" y=\"%.1f\" "
                  "text-anchor=\"end\" stroke=\"none\" fill=\"#444\">",
                  left, left + pw, py(y), py(y), left - 6, py(y) + 4);
    o += buf + tick_label(y, ya.step) + "</text>\n";
  }
  std::vector<double> xticks;
  double xstep = 0;   // linear axis: the tick step (labels in k, M); log axis: 0 (labels %g)
  if (c.log_x) {
    if (xs.size() <= 12) {
      xticks.assign(xs.begin(), xs.end());
    } else {
      for (double e = std::ceil(x0); e <= x1; e += 1) xticks.push_back(std::pow(10.0, e));
    }
  } else {
    Axis xa = axis(x0, x1, 6, false);
    xstep = xa.step;
    for (double x = std::ceil(x0 / xa.step - 1e-9) * xa.step; x <= x1 + xa.step * 1e-6; x += xa.step)
      xticks.push_back(std::fabs(x) < xa.step * 1e-6 ? 0 : x);
  }
  for (double x : xticks) {
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\"/><text class=\"xt\" x=\"%.1f\" y=\"%.1f\" "
                  "text-anchor=\"middle\" stroke=\"none\" fill=\"#444\">",
                  px(x), px(x), top, top + plot_h, px(x), top + plot_h + 16);
    o += buf + (xstep > 0 ? tick_label(x, xstep) : fmt("%g", x)) + "</text>\n";
  }
  o += "</g>\n";
  std::snprintf(buf, sizeof buf,
                "<rect class=\"frame\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
                "stroke=\"#999\"/>\n",
                left, top, pw, plot_h);
  o += buf;
  std::snprintf(buf, sizeof buf, "<text class=\"xl\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\" "
                "fill=\"#222\">", left + pw / 2, top + plot_h + 36);
  o += buf + esc(c.xlabel) + "</text>\n";
  std::snprintf(buf, sizeof buf, "<text class=\"yl\" transform=\"translate(16 %.1f) rotate(-90)\" "
                "text-anchor=\"middle\" font-size=\"12\" fill=\"#222\">", top + plot_h / 2);
  o += buf + esc(c.ylabel) + "</text>\n";
  if (!any) {
    std::snprintf(buf, sizeof buf, "<text class=\"nodata\" x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" "
                  "fill=\"#999\" font-size=\"14\">no data</text>\n", left + pw / 2, top + plot_h / 2);
    o += buf;
  }
  for (size_t si = 0; si < c.series.size(); ++si) {   // si: index into c.series (legend order)
    const ChartSeries& s = c.series[si];
    const std::string col = colour(s);
    std::string pts, dots;
    for (const auto& q : s.points) {
      if (!usable(q)) continue;
      std::snprintf(buf, sizeof buf, "%s%.1f,%.1f", pts.empty() ? "" : " ", px(q.first), py(q.second));
      pts += buf;
      std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>", px(q.first), py(q.second));
      dots += buf;
    }
    o += "<g class=\"series\" data-i=\"" + std::to_string(si) + "\" data-name=\"" + esc(s.name) + "\" fill=\"" + col +
         "\" stroke=\"" + col + "\">";
    o += "<polyline points=\"" + pts + "\" fill=\"none\" stroke-width=\"2\"" +
         (s.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>" + dots + "</g>\n";
  }
  o += "<g class=\"legend\">\n";
  for (size_t si = 0; si < c.series.size(); ++si) {   // si: index into c.series, as data-i above
    const ChartSeries& s = c.series[si];
    double lx = left + double(si % kPerRow) * (pw / kPerRow), ly = top + plot_h + bottom + double(si / kPerRow) * kRowH + 6;
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>"
                  "<text x=\"%.1f\" y=\"%.1f\" fill=\"#222\">",
                  lx, lx + 26, ly, ly, colour(s).c_str(), s.dashed ? " stroke-dasharray=\"6 4\"" : "", lx + 32, ly + 4);
    o += buf + esc(s.name) + "</text>\n";
  }
  o += "</g>\n</svg>\n";
  return o;
}

int chart_command(const std::string& spec_path, const std::string& out) {
  std::ifstream in(spec_path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "tether: report: %s: cannot read\n", spec_path.c_str());
    return 2;
  }
  std::stringstream text;
  text << in.rdbuf();
  ChartPage page;
  try {
    page = parse_chart_spec(text.str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tether: report: %s: %s\n", spec_path.c_str(), e.what());
    return 2;
  }
  const bool svg = out.size() >= 4 && out.compare(out.size() - 4, 4, ".svg") == 0;
  std::string doc;
  if (svg) {
    if (page.charts.size() != 1) {
      std::fprintf(stderr, "tether: report: %s: %zu charts; an .svg holds one (write .html for a page)\n",
                   spec_path.c_str(), page.charts.size());
      return 2;
    }
    doc = render_chart_svg(page.charts[0]);
  } else {
    doc = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + esc(page.title) +
          "</title>\n<style>body { font: 14px/1.4 system-ui, \"DejaVu Sans\", sans-serif; margin: 20px 28px; } "
          "svg.chart { max-width: 100%; height: auto; display: block; margin-bottom: 18px; }</style>\n"
          "</head>\n<body>\n<h1>" + esc(page.title) + "</h1>\n";
    for (const Chart& c : page.charts) doc += render_chart_svg(c);
    doc += "</body>\n</html>\n";
  }
  std::ofstream f(out, std::ios::binary | std::ios::trunc);
  f << doc;
  f.close();
  if (!f) {
    std::fprintf(stderr, "tether: report: %s: cannot write\n", out.c_str());
    return 1;
  }
  std::printf("wrote %s (%zu charts, %zu bytes)\n", out.c_str(), page.charts.size(), doc.size());
  return 0;
}

}  // namespace tether
