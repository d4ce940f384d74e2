#!/usr/bin/env bash
# Every libFuzzer harness of test/fuzz/ (each decoder of outside bytes: frame
# header and the mixers on live rounds, hello, config, checkpoint, IDX,
# CIFAR) for RUNS inputs each (default 10^6), under AddressSanitizer and
# UBSan without recovery, from the checked-in seeds in a fresh corpus. A
# correctness run, not a race: no peer. Prints per harness the inputs run,
# inputs/s and coverage, and fails on any crash, sanitizer report, leak,
# time-out or oversized allocation (the input is kept under
# build-fuzz/bench/NAME/). Last line:
#   RESULT harnesses=6 min_runs=... crashes=0 sanitizer_reports=0
#
# usage: bench/fuzz.sh [RUNS]    JOBS=N harnesses at a time (default 1);
#        FUZZ_DIR defaults to build-fuzz/ (configured with clang if missing)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
runs=${1:-1000000}
build_fuzz
out="$FUZZ_DIR/bench"
rm -rf "$out"
mkdir -p "$out"
echo "# machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg); $runs inputs per harness, ${JOBS:-1} at a time"
# The harness table lives in test/fuzz/meson.build: take each test's command
# (run_fuzz.sh HARNESS SEEDS WORK SECONDS MAX_LEN MALLOC_MB) and run it with
# no time limit to speak of and RUNS inputs, in a fresh work directory.
python3 - "$FUZZ_DIR" "$out" "$runs" >"$out/commands" <<'PY'
import json, subprocess, sys, shlex
fuzz_dir, out, runs = sys.argv[1:]
tests = json.loads(subprocess.check_output(["meson", "introspect", "--tests", fuzz_dir]))
for t in tests:
    if not any(s.split(":")[-1] == "fuzz" for s in t["suite"]):
        continue
    script, exe, seeds, _work, _seconds, max_len, malloc_mb = t["cmd"]
    name = t["name"].removeprefix("fuzz_")
    print(shlex.join([script, exe, seeds, f"{out}/{name}", "86400", max_len, malloc_mb, runs]))
PY
set +e
xargs -P "${JOBS:-1}" -I{} bash -c '{}' <"$out/commands" >"$out/summary" 2>&1
rc=$?
set -e
cat "$out/summary"
harnesses=$(wc -l <"$out/commands")
reports=$(cat "$out"/*/last.log | grep -c -E '^==[0-9]+==ERROR|runtime error:|^SUMMARY: ' || true)
crashes=$(find "$out" -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' | wc -l)
ok=$(grep -c ' 0 crashes$' "$out/summary" || true)
min_runs=$(sed -n 's/^fuzz_[a-z]*: \([0-9]*\) inputs.*/\1/p' "$out/summary" | sort -n | head -1)
echo "RESULT harnesses=$harnesses min_runs=${min_runs:-0} crashes=$crashes sanitizer_reports=$reports"
[ $rc -eq 0 ] && [ "$ok" -eq "$harnesses" ] && [ "${min_runs:-0}" -ge "$runs" ]
