#!/usr/bin/env bash
# `tether report` in a real browser: headless Chromium opens the page from a
# file:// URL with every network request refused, and the page's script must
# have run without errors and drawn every plot (it marks <body>). Also a
# screenshot that is not blank, and a negative control: a page with a broken
# script is reported as such.
#
# Installs Debian's chromium when missing (scripts/common.sh ensure_packages);
# when that is impossible (no network, no root) the test is skipped, saying
# why. Ends with a doctest-style summary line for scripts/test_summary.py.
#   test/observe/report_browser.sh     (meson test report_browser)
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE_ROOT=${TETHER_SOURCE_ROOT:-$(cd "$HERE/../.." && pwd)}
BUILD_ROOT=${TETHER_BUILD_ROOT:-$SOURCE_ROOT/build}
TETHER=$BUILD_ROOT/tether

cases=0
passed=0
failed=0
summary() {
  local skipped=${1:-0}
  echo "[doctest] test cases: $cases | $passed passed | $failed failed | $skipped skipped"
}
skip() {
  echo "report_browser: SKIPPED: $*"
  cases=1
  passed=1
  summary 1
  exit 0
}
check() {   # check NAME COMMAND...: one test case
  local name=$1
  shift
  cases=$((cases + 1))
  if "$@"; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
  fi
}

[ -x "$TETHER" ] || { echo "report_browser: $TETHER not built"; cases=1; failed=1; summary; exit 1; }

find_browser() {
  for b in chromium chromium-browser google-chrome; do
    command -v "$b" >/dev/null 2>&1 && { command -v "$b"; return 0; }
  done
  return 1
}
BROWSER=$(find_browser)
if [ -z "$BROWSER" ]; then
  # ensure_packages needs root (or sudo) and the Debian mirror; bounded so
  # that the meson time-out is not spent on a hanging mirror.
  if ! timeout 200 bash -c "source '$SOURCE_ROOT/scripts/common.sh' && ensure_packages chromium" >/tmp/report_browser_install.$$ 2>&1; then
    reason=$(tail -n 3 /tmp/report_browser_install.$$ | tr '\n' ' ')
    rm -f /tmp/report_browser_install.$$
    skip "chromium is not installed and could not be installed (${reason:-timed out})"
  fi
  rm -f /tmp/report_browser_install.$$
  BROWSER=$(find_browser) || skip "chromium installed but not on PATH"
fi
echo "browser: $BROWSER ($("$BROWSER" --version 2>/dev/null | head -n 1))"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tether-report-browser-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOGS=$WORK/logs
mkdir -p "$LOGS"

# A run of three nodes written here: node 0 finished, node 1 failed (and has a
# malformed line), node 2 still running with a half-written last line. Values
# are closed forms in node and step.
record() {   # record NODE STEP
  local n=$1 s=$2
  awk -v n="$n" -v s="$s" 'BEGIN {
    printf "{\"time\": %.3f, \"node\": %d, \"step\": %d, \"round\": %d, \"epoch\": %d, \"loss\": %.6f, ", 1.7e9 + s * 0.2 + n * 0.01, n, s, s, 1 + int(s / 100), 2.3 * exp(-s / (60.0 + 10 * n)) + 0.05
    printf "\"train_acc\": %.4f, \"images_per_s\": %.1f, \"lr\": 0.05, \"idle_frac\": %.4f, \"idle_frac_total\": %.4f, ", 0.95 - 0.85 * exp(-s / 60.0), 800 + 50 * n + 40 * sin(s / 7.0), 0.1 + 0.05 * n + 0.05 * sin(s / 5.0), 0.12
    printf "\"rounds_in_flight\": %d, \"disp_norm\": %.5f, \"max_pair_dist\": %.5f, \"max_pair_dist_run\": 0.9, \"bound\": 1.2, ", s % 3, 0.3 * exp(-s / 80.0), 0.6 * exp(-s / 90.0) + 0.05
    printf "\"throttled\": %s, \"throttle_count\": 0, \"max_delta_norm\": 0.1, \"bytes_sent\": %d, \"bytes_recv\": %d, \"msgs_rejected\": 0}\n", "false", s * 3600000, s * 3600000
  }'
}
{
  for s in $(seq 5 5 300); do record 0 "$s"; done
  echo '{"event": "final", "steps": 300, "params_hash": "9f86d081884c7d65", "interrupted": false, "test_acc": 0.8731, "test_loss": 0.36, "time": 1700000061, "node": 0}'
} >"$LOGS/node-0.jsonl"
{
  for s in $(seq 5 5 150); do
    record 1 "$s"
    [ "$s" = 75 ] && echo '{"step": 77, "loss": oops'
  done
  echo '{"event": "failed", "step": 150, "error": "peer 2 lost: <no heartbeat> for 3000 ms", "time": 1700000031, "node": 1}'
} >"$LOGS/node-1.jsonl"
{
  for s in $(seq 5 5 250); do record 2 "$s"; done
  record 2 255 | head -c 50
} >"$LOGS/node-2.jsonl"

REPORT=$WORK/report.html
if ! "$TETHER" report "$LOGS" -o "$REPORT" --link-mbps 150 >"$WORK/report.out" 2>&1; then
  cat "$WORK/report.out"
  cases=1
  failed=1
  summary
  exit 1
fi

# Headless Chromium with every network request refused (an unreachable proxy,
# names resolving nowhere): a page that needed the network would not draw.
browse() {   # browse URL OUT_FILE [extra flags...] — DOM or screenshot; stderr to OUT_FILE.err
  local url=$1 out=$2
  shift 2
  timeout 90 "$BROWSER" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --disable-extensions \
    --proxy-server=127.0.0.1:9 --host-resolver-rules="MAP * ~NOTFOUND" \
    --enable-logging=stderr --v=0 --user-data-dir="$(mktemp -d "$WORK/profile-XXXXXX")" "$@" "$url" \
    >"$out" 2>"$out.err"
}

body_attr() {   # body_attr FILE NAME: the value of <body NAME="...">
  grep -o '<body[^>]*>' "$1" | head -n 1 | sed -n "s/.*$2=\"\\([^\"]*\\)\".*/\\1/p"
}

browse "file://$REPORT" "$WORK/dom.html" --dump-dom
echo "body: $(grep -o '<body[^>]*>' "$WORK/dom.html" | head -n 1)"

t_script_ran() { [ -n "$(body_attr "$WORK/dom.html" data-plots-drawn)" ]; }
t_no_errors() {
  [ "$(body_attr "$WORK/dom.html" data-errors)" = "0" ] || return 1
  # Chromium logs uncaught exceptions and console errors of the page on stderr.
  if grep -E 'Uncaught|CONSOLE.*(Error|error)' "$WORK/dom.html.err"; then return 1; fi
  return 0
}
t_plots_drawn() {
  local plots drawn whole
  plots=$(body_attr "$WORK/dom.html" data-plots)
  drawn=$(body_attr "$WORK/dom.html" data-plots-drawn)
  whole=$(body_attr "$WORK/dom.html" data-figures-whole)
  echo "  plots=$plots drawn=$drawn whole=$whole"
  [ "$plots" = 7 ] && [ "$drawn" = 7 ] && [ "$whole" = 7 ]
}
t_content() {
  # The summary table and the failed node's escaped error survive the parse.
  grep -q '9f86d081884c7d65' "$WORK/dom.html" &&
    grep -q '87.31%' "$WORK/dom.html" &&
    grep -q 'peer 2 lost: &lt;no heartbeat&gt; for 3000 ms' "$WORK/dom.html" &&
    grep -q 'link 150 Mbit/s' "$WORK/dom.html"
}
t_screenshot() {
  browse "file://$REPORT" "$WORK/shot.log" --hide-scrollbars --window-size=1280,1800 \
    --screenshot="$WORK/report.png"
  [ -f "$WORK/report.png" ] || return 1
  local bytes
  bytes=$(stat -c %s "$WORK/report.png")
  echo "  screenshot $bytes bytes"
  # A blank 1280x1800 page compresses to a few KB; seven plots do not.
  [ "$bytes" -gt 40000 ] && [ "$(head -c 8 "$WORK/report.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]
}
t_detects_errors() {
  # Negative control: a script error after the page's own is counted.
  sed 's|</body>|<script>window.no_such_function();</script></body>|' "$REPORT" >"$WORK/broken.html"
  browse "file://$WORK/broken.html" "$WORK/broken.dom" --dump-dom
  local e
  e=$(body_attr "$WORK/broken.dom" data-errors)
  echo "  broken page: data-errors=$e"
  [ -n "$e" ] && [ "$e" != 0 ] && grep -q 'Uncaught' "$WORK/broken.dom.err"
}

t_hover_and_legend() {
  # A mouse move to the middle of the loss plot shows the time and each
  # node's value there; a click on a legend item hides its series.
  cat >"$WORK/probe.js" <<'EOF'
<script>
(function () {
  var svg = document.querySelector('svg.plot');
  var r = svg.getBoundingClientRect();
  var px0 = parseFloat(svg.getAttribute('data-px0')), px1 = parseFloat(svg.getAttribute('data-px1'));
  var vb = svg.viewBox.baseVal;
  var x = r.left + (px0 + px1) / 2 / vb.width * r.width;
  svg.dispatchEvent(new MouseEvent('mousemove', { clientX: x, clientY: r.top + r.height / 2, bubbles: true }));
  var tip = svg.parentNode.querySelector('.tip');
  document.body.setAttribute('data-hover', tip.style.display + '|' + tip.textContent);
  svg.parentNode.querySelector('.legend .item[data-i="1"]').click();
  var g = svg.querySelector('g.series[data-i="1"]');
  document.body.setAttribute('data-toggle', g.style.display === 'none' ? 'hidden' : 'shown');
})();
</script>
EOF
  sed '/<\/body>/{
r '"$WORK/probe.js"'
}' "$REPORT" >"$WORK/probe.html"
  browse "file://$WORK/probe.html" "$WORK/probe.dom" --dump-dom
  local hover toggle
  hover=$(body_attr "$WORK/probe.dom" data-hover)
  toggle=$(body_attr "$WORK/probe.dom" data-toggle)
  echo "  hover: $hover; toggle: $toggle"
  # Mid-plot is t = 30 s: node 0 near step 145, loss 2.3 exp(-145/60) + 0.05 = 0.25.
  [ "$toggle" = hidden ] && [ "$(body_attr "$WORK/probe.dom" data-errors)" = 0 ] &&
    echo "$hover" | grep -Eq '^block\|t = (29|30|31)(\.[0-9]+)? s' &&
    echo "$hover" | grep -Eo 'node 0: [0-9.]+' | awk '{ exit !($3 > 0.2 && $3 < 0.3) }'
}

check "report opens and its script runs" t_script_ran
check "no script errors, no console errors" t_no_errors
check "all 7 plots drawn, each figure whole" t_plots_drawn
check "table and escaped error text in the DOM" t_content
check "screenshot is a non-blank PNG" t_screenshot
check "a broken script is detected (negative control)" t_detects_errors
check "hover readout and legend toggle" t_hover_and_legend
if [ -n "${REPORT_BROWSER_KEEP:-}" ]; then
  cp "$REPORT" "$WORK/report.png" "$REPORT_BROWSER_KEEP"/ 2>/dev/null && echo "kept in $REPORT_BROWSER_KEEP"
fi
if [ "$failed" -gt 0 ]; then
  for f in "$WORK"/*.err; do
    echo "--- $f"
    tail -n 20 "$f"
  done
fi
summary
[ "$failed" -eq 0 ]
