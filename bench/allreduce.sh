#!/usr/bin/env bash
# All-reduce of 44 MB (11,000,000 float32) over 4 processes on loopback:
# tether's ring vs torch.distributed (gloo) vs MPI_Allreduce, measured in the
# same run (warm-up, several iterations, median of the per-iteration slowest
# rank), tether's results checked element by element in the same run; then a
# size sweep 4 KB .. 64 MB with time, algbw and busbw (= algbw * 2(N-1)/N).
# Ends with one line: RESULT tether_ms=... gloo_ms=... mpi_ms=... ratio=... skew_ms=...
#   tether_cpu_user_ms=... tether_cpu_sys_ms=... gloo_cpu_user_ms=... gloo_cpu_sys_ms=...
# (ratio = tether / gloo; below 1 means tether is faster; skew_ms: how far
# apart tether's harness barrier released the processes, median; cpu: CPU time
# of one all-reduce summed over the 4 processes, every thread, mean over the
# timed iterations, user and system. gloo's comes from a second run of a copy
# of the peer script with getrusage around its timed all_reduce; its times
# come from the unmodified script.)
#
# usage: bench/allreduce.sh [--no-sweep]      (BUILD_DIR defaults to build/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
peers="$root/../shared/peers"
nodes=4 numel=11000000 iters=20 warmup=3
sweep=--sweep
[ "${1:-}" = "--no-sweep" ] && sweep=

[ -f "$build/build.ninja" ] || meson setup "$build" "$root" >/dev/null
ninja -C "$build" bench/net/allreduce_bench >/dev/null
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "# machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "# $nodes processes, $numel floats ($((numel * 4)) bytes), $iters iterations after $warmup warm-up"

median_of() {  # grep the median (ms) out of a RESULT/TETHER line
  sed -n 's/.* median=\([0-9.]*\) ms.*/\1/p' "$1" | head -1
}

echo "## tether ring (bench/net/allreduce_bench)"
"$build/bench/net/allreduce_bench" --nodes $nodes --numel $numel --iters $iters --warmup $warmup \
  | tee "$tmp/tether.txt"

echo "## torch.distributed gloo ($peers/bench_allreduce.py)"
/usr/bin/python3 "$peers/bench_allreduce.py" --world $nodes --numel $numel --iters $iters \
  --warmup $warmup --port $((29500 + RANDOM % 400)) 2>&1 | grep RESULT | sed 's/^RESULT/gloo:/' \
  | tee "$tmp/gloo.txt"

echo "## gloo CPU time per all-reduce (a copy of the peer script with getrusage around its timed call)"
gloo_user=NA gloo_sys=NA
sed -e 's/^import argparse/import resource, argparse/' \
    -e 's/s = time.perf_counter(); dist.all_reduce(t); times.append(time.perf_counter() - s)/r0 = resource.getrusage(resource.RUSAGE_SELF); \0; r1 = resource.getrusage(resource.RUSAGE_SELF); print(f"CPU {(r1.ru_utime - r0.ru_utime) * 1e3:.3f} {(r1.ru_stime - r0.ru_stime) * 1e3:.3f}\\n", end="", flush=True)/' \
    "$peers/bench_allreduce.py" >"$tmp/gloo_cpu.py"
if [ "$(grep -c 'RUSAGE_SELF); print' "$tmp/gloo_cpu.py")" = 1 ]; then
  /usr/bin/python3 "$tmp/gloo_cpu.py" --world $nodes --numel $numel --iters $iters \
    --warmup $warmup --port $((29900 + RANDOM % 90)) >"$tmp/gloo_cpu.txt" 2>&1 || true
  # one line per rank and iteration; grep -o also finds lines that two ranks glued together
  grep -o 'CPU [0-9.]* [0-9.]*' "$tmp/gloo_cpu.txt" >"$tmp/gloo_cpu.lines" || true
  read -r gloo_user gloo_sys < <(awk -v want=$((nodes * iters)) -v it=$iters '{ u += $2; s += $3; n++ }
    END { if (n == want) printf "%.1f %.1f\n", u / it, s / it; else print "NA NA" }' "$tmp/gloo_cpu.lines")
  echo "gloo: cpu_user=$gloo_user ms cpu_sys=$gloo_sys ms ($(wc -l <"$tmp/gloo_cpu.lines") rank-iterations of $((nodes * iters)))"
else
  echo "gloo: the peer script's timed line changed; no CPU figures"
fi

echo "## MPI_Allreduce ($peers/mpi_allreduce.cpp, compiled in $tmp)"
mpi_ms=NA
if command -v mpicxx >/dev/null && mpicxx -O2 "$peers/mpi_allreduce.cpp" -o "$tmp/mpi_allreduce" 2>"$tmp/mpicc.err"; then
  mpirun -np $nodes --oversubscribe --allow-run-as-root "$tmp/mpi_allreduce" $numel $iters $warmup 2>&1 \
    | grep RESULT | sed 's/^RESULT/mpi:/' | tee "$tmp/mpi.txt" || true
  mpi_ms="$(median_of "$tmp/mpi.txt")"
  [ -n "$mpi_ms" ] || mpi_ms=NA
else
  echo "mpi: not available ($(cat "$tmp/mpicc.err" 2>/dev/null | head -1))"
fi

if [ -n "$sweep" ]; then
  echo "## tether size sweep"
  "$build/bench/net/allreduce_bench" --nodes $nodes --sweep-only
fi

tether_ms="$(median_of "$tmp/tether.txt")"
gloo_ms="$(median_of "$tmp/gloo.txt")"
wrong="$(sed -n 's/.* wrong=\([0-9]*\).*/\1/p' "$tmp/tether.txt" | head -1)"
if [ "${wrong:-1}" != 0 ]; then
  echo "tether results WRONG ($wrong mismatches)" >&2
fi
ratio="$(awk -v t="${tether_ms:-0}" -v g="${gloo_ms:-0}" 'BEGIN { if (g > 0) printf "%.3f", t / g; else print "NA" }')"
skew="$(sed -n 's/.* skew=\([0-9.]*\) ms.*/\1/p' "$tmp/tether.txt" | head -1)"
t_user="$(sed -n 's/.* cpu_user=\([0-9.]*\) ms.*/\1/p' "$tmp/tether.txt" | head -1)"
t_sys="$(sed -n 's/.* cpu_sys=\([0-9.]*\) ms.*/\1/p' "$tmp/tether.txt" | head -1)"
echo "RESULT tether_ms=${tether_ms:-NA} gloo_ms=${gloo_ms:-NA} mpi_ms=${mpi_ms} ratio=${ratio} skew_ms=${skew:-NA}" \
  "tether_cpu_user_ms=${t_user:-NA} tether_cpu_sys_ms=${t_sys:-NA} gloo_cpu_user_ms=${gloo_user} gloo_cpu_sys_ms=${gloo_sys}"
