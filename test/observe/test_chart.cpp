// The charts of y against x (`tether report --chart`): the SVG of a chart
// (one polyline per series with one point per data point, log x placed by
// log10, y by value, colours per group, labels and escaped names), the spec
// parser's errors, and the command through the binary.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "observe/report.h"
#include "test/runtime/process_util.h"

using tether::testing::run_command;
using tether::testing::TempDir;
using tether::testing::tether_bin;

namespace {

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// The (x, y) pixel coordinates of every <polyline>, in document order.
std::vector<std::vector<std::pair<double, double>>> polylines(const std::string& svg) {
  std::vector<std::vector<std::pair<double, double>>> out;
  const std::string key = "<polyline points=\"";
  for (size_t p = svg.find(key); p != std::string::npos; p = svg.find(key, p + 1)) {
    size_t b = p + key.size(), e = svg.find('"', b);
    std::istringstream in(svg.substr(b, e - b));
    std::vector<std::pair<double, double>> pts;
    std::string pair;
    while (in >> pair) {
      size_t comma = pair.find(',');
      pts.emplace_back(std::atof(pair.substr(0, comma).c_str()), std::atof(pair.substr(comma + 1).c_str()));
    }
    out.push_back(pts);
  }
  return out;
}

// The value of attribute `attr` in the first element after `from`.
std::string attr_after(const std::string& s, size_t from, const std::string& attr) {
  size_t p = s.find(attr + "=\"", from);
  if (p == std::string::npos) return "";
  p += attr.size() + 2;
  return s.substr(p, s.find('"', p) - p);
}

tether::Chart distance_chart() {
  tether::Chart c;
  c.title = "Distance <against> N";
  c.xlabel = "nodes N (log scale)";
  c.ylabel = "distance (L2)";
  c.log_x = true;
  // Values depend on the series and N, so a point drawn from the wrong series shows.
  c.series.push_back({"overlap largest", "overlap", {{2, 0.15}, {4, 0.17}, {8, 0.24}, {16, 0.19}}, false});
  c.series.push_back({"overlap median", "overlap", {{2, 0.10}, {4, 0.11}, {8, 0.12}, {16, 0.13}}, true});
  c.series.push_back({"down<pour> & \"co\"", "downpour", {{2, 0.22}, {16, 2.24}}, false});
  return c;
}

}  // namespace

TEST_CASE("chart: one polyline per series with its points, labels, escaped names") {
  const tether::Chart c = distance_chart();
  const std::string svg = tether::render_chart_svg(c);
  INFO(svg);
  CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
  CHECK(count_of(svg, "</svg>") == 1);
  auto lines = polylines(svg);
  REQUIRE(lines.size() == 3);
  CHECK(lines[0].size() == 4);
  CHECK(lines[1].size() == 4);
  CHECK(lines[2].size() == 2);
  CHECK(count_of(svg, "<circle ") == 10);   // a marker per point
  // Axis labels and the title, the title escaped.
  CHECK(svg.find(">nodes N (log scale)</text>") != std::string::npos);
  CHECK(svg.find(">distance (L2)</text>") != std::string::npos);
  CHECK(svg.find("Distance &lt;against&gt; N") != std::string::npos);
  CHECK(svg.find("<against>") == std::string::npos);
  // The name escaped, in the legend and the series' data-name; never raw.
  CHECK(count_of(svg, "down&lt;pour&gt; &amp; &quot;co&quot;") == 2);
  CHECK(svg.find("down<pour>") == std::string::npos);
  // Log x: 2, 4, 8, 16 equally spaced; the tick labels are the x values.
  const auto& a = lines[0];
  const double dx = a[1].first - a[0].first;
  CHECK(dx > 50);
  CHECK(a[2].first - a[1].first == doctest::Approx(dx).epsilon(0.01));
  CHECK(a[3].first - a[2].first == doctest::Approx(dx).epsilon(0.01));
  for (const char* t : {">2</text>", ">4</text>", ">8</text>", ">16</text>"}) CHECK(svg.find(t) != std::string::npos);
  // The same N in another series sits at the same x; y grows upwards, linearly.
  CHECK(lines[2][0].first == doctest::Approx(a[0].first));
  CHECK(lines[2][1].first == doctest::Approx(a[3].first));
  CHECK(lines[2][1].second < lines[2][0].second);
  const double per_unit = (lines[2][0].second - lines[2][1].second) / (2.24 - 0.22);
  CHECK(a[0].second - a[1].second == doctest::Approx(per_unit * 0.02).epsilon(0.05));
  // One colour per group: the overlap series share one, downpour another; dashed as asked.
  const size_t g0 = svg.find("data-i=\"0\""), g1 = svg.find("data-i=\"1\""), g2 = svg.find("data-i=\"2\"");
  REQUIRE(g0 != std::string::npos);
  REQUIRE(g1 != std::string::npos);
  REQUIRE(g2 != std::string::npos);
  CHECK(attr_after(svg, g0, "stroke") == attr_after(svg, g1, "stroke"));
  CHECK(attr_after(svg, g0, "stroke") != attr_after(svg, g2, "stroke"));
  CHECK(count_of(svg, "stroke-dasharray") == 2);   // the median's polyline and its legend line
}

TEST_CASE("chart: a linear x axis places x by value; no points draws 'no data'") {
  tether::Chart c;
  c.xlabel = "samples seen";
  c.ylabel = "loss";
  c.series.push_back({"sync", "", {{0, 2.0}, {1000, 1.0}, {3000, 0.5}}, false});
  auto lines = polylines(tether::render_chart_svg(c));
  REQUIRE(lines.size() == 1);
  REQUIRE(lines[0].size() == 3);
  const double d1 = lines[0][1].first - lines[0][0].first, d2 = lines[0][2].first - lines[0][1].first;
  CHECK(d2 == doctest::Approx(2 * d1).epsilon(0.01));

  tether::Chart empty;
  empty.series.push_back({"nothing", "", {}, false});
  const std::string svg = tether::render_chart_svg(empty);
  CHECK(svg.find(">no data</text>") != std::string::npos);
  CHECK(count_of(svg, "<circle ") == 0);
}

TEST_CASE("chart spec: one chart, a page of charts, and what is wrong with a bad one") {
  auto page = tether::parse_chart_spec(
      R"({"title": "t", "xlabel": "N", "ylabel": "d", "log_x": true,
          "series": [{"name": "a", "group": "g", "dashed": true, "points": [[2, 0.5], [8, 1.5]]}]})");
  REQUIRE(page.charts.size() == 1);
  CHECK(page.title == "t");
  const tether::Chart& c = page.charts[0];
  CHECK(c.log_x);
  REQUIRE(c.series.size() == 1);
  CHECK(c.series[0].group == "g");
  CHECK(c.series[0].dashed);
  REQUIRE(c.series[0].points.size() == 2);
  CHECK(c.series[0].points[1].first == 8);
  CHECK(c.series[0].points[1].second == 1.5);

  auto two = tether::parse_chart_spec(
      R"({"title": "p", "charts": [{"series": [{"name": "a", "points": []}]},
                                   {"series": [{"name": "b", "points": [[1, 2]]}]}]})");
  CHECK(two.title == "p");
  REQUIRE(two.charts.size() == 2);
  CHECK(two.charts[1].series[0].name == "b");

  auto error_of = [](const std::string& spec) {
    try {
      tether::parse_chart_spec(spec);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(error_of("{not json") == "not JSON");
  CHECK(error_of(R"({"title": "t"})").find("\"series\" must be a non-empty array") != std::string::npos);
  CHECK(error_of(R"({"log_x": true, "series": [{"name": "a", "points": [[0, 1]]}]})").find("log scale") !=
        std::string::npos);
  CHECK(error_of(R"({"series": [{"name": "a", "points": [[1, "x"]]}]})").find("series 0") != std::string::npos);
  CHECK(error_of(R"({"series": [{"points": [[1, 2]]}]})").find("\"name\"") != std::string::npos);
  CHECK(error_of(R"({"charts": [{"series": []}]})").find("chart 0") != std::string::npos);
}

TEST_CASE("report --chart through the binary") {
  TempDir dir("chart");
  const std::string bin = tether_bin();
  const std::string one = dir.write("one.json", R"({"title": "d", "xlabel": "N", "ylabel": "distance", "log_x": true,
      "series": [{"name": "overlap", "points": [[2, 0.1], [4, 0.2], [8, 0.3]]}]})");
  auto r = run_command(bin + " report --chart " + one + " -o " + dir.file("d.svg"), 60);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  std::ifstream in(dir.file("d.svg"));
  std::stringstream svg;
  svg << in.rdbuf();
  CHECK(svg.str().rfind("<svg xmlns=", 0) == 0);
  CHECK(polylines(svg.str()).size() == 1);
  CHECK(polylines(svg.str())[0].size() == 3);

  const std::string page = dir.write("page.json", R"({"title": "two", "charts": [
      {"series": [{"name": "a", "points": [[1, 1]]}]}, {"series": [{"name": "b", "points": [[1, 2], [2, 3]]}]}]})");
  auto as_svg = run_command(bin + " report --chart " + page + " -o " + dir.file("p.svg"), 60);
  CHECK(as_svg.exit_code == 2);
  CHECK(as_svg.output.find("2 charts") != std::string::npos);
  auto as_html = run_command(bin + " report --chart " + page + " -o " + dir.file("p.html"), 60);
  CHECK(as_html.exit_code == 0);
  std::ifstream hin(dir.file("p.html"));
  std::stringstream html;
  html << hin.rdbuf();
  CHECK(count_of(html.str(), "<svg xmlns=") == 2);
  CHECK(polylines(html.str()).size() == 2);

  const std::string bad = dir.write("bad.json", R"({"log_x": true, "series": [{"name": "a", "points": [[-1, 1]]}]})");
  auto b = run_command(bin + " report --chart " + bad + " -o " + dir.file("b.svg"), 60);
  CHECK(b.exit_code == 2);
  CHECK(b.output.find("log scale") != std::string::npos);
  auto both = run_command(bin + " report " + dir.path() + " --chart " + one + " -o " + dir.file("x.svg"), 60);
  CHECK(both.exit_code == 2);
  auto missing = run_command(bin + " report --chart " + dir.file("nope.json") + " -o " + dir.file("y.svg"), 60);
  CHECK(missing.exit_code == 2);
  CHECK(missing.output.find("cannot read") != std::string::npos);
}
