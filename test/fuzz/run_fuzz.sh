#!/usr/bin/env bash
# run_fuzz.sh HARNESS SEEDS WORK SECONDS MAX_LEN MALLOC_MB [RUNS]
# Runs one libFuzzer harness from the checked-in seeds (read only) plus the
# inputs it found before (WORK/corpus), for SECONDS (or RUNS inputs when
# given). Exit status non-zero on a crash, a sanitizer report, a leak, an
# input slower than 10 s or a single allocation over MALLOC_MB MiB (no input of
# a few KiB may make a decoder trust a size it was not given); the input is left
# in WORK/crash-* (or leak-*, timeout-*, oom-*). Last line: the harness's
# figures (inputs run, inputs/s, coverage).
set -euo pipefail
exe=$1 seeds=$2 work=$3 seconds=$4 max_len=$5 malloc_mb=$6 runs=${7:--1}
mkdir -p "$work/corpus"
log="$work/last.log"
set +e
"$exe" -max_total_time="$seconds" -runs="$runs" -max_len="$max_len" -timeout=10 \
  -malloc_limit_mb="$malloc_mb" -rss_limit_mb=2048 -seed=1 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/corpus" "$seeds" >"$log" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ]; then
  tail -n 60 "$log"
  echo "$(basename "$exe"): FAILED (exit $rc); input saved under $work/"
  exit 1
fi
runs_done=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
per_s=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
echo "$(basename "$exe"): ${runs_done} inputs, ${per_s}/s, coverage ${cov} edges (${ft} features), 0 crashes"
