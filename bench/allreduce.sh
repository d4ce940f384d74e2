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
#
# --switch RATE: the same across scripts/switch.sh's emulated switch instead
# of loopback (4 network namespaces on one bridge, every port shaped to RATE
# with tc tbf; needs root): tether's ring (allreduce_bench --netns) and gloo
# (bench_allreduce.py, one rank per namespace) at lenet's size (454,922
# floats) and 44 MB, each against the line rate: a ring all-reduce moves
# 2(N-1)/N of the vector out of every port, so its time at the line rate is
# that many bytes / RATE. tbf counts whole frames: a full TCP segment
# carries 1448 payload bytes in 1514 (Ethernet, IP, TCP with timestamps), so
# no TCP transport gets below 1.046x that time (printed as the floor).
# A third column runs the same schedule over plain TCP sockets with nothing
# of tether around it (allreduce_bench --reference tcp, bench/net/tcp_ring.h;
# same harness, sizes and checks): what this schedule gets over bare TCP on
# this machine, so tether's own cost is tether / tcp ring, apart from the
# kernel's, the switch's and the shared cores'. Not a bound for every
# schedule: at 2 nodes gloo has run at the floor where the bare ring did not.
# --iters and --warmup apply (default 5 and 5: a 44 MB all-reduce takes ~5 s
# at 100 Mbit/s; tether's first 4 all-reduces ran up to 1.8x slower at
# 1 Gbit/s with 2-4x the system CPU of later ones: the communicator's kept
# results (window + 2 of them, net/membership.cpp) and its spare buffers fill
# over those rounds, each a fresh 44 MB allocation that page-faults; both
# sides get the same warm-up). From the first chunk to the last the ring
# keeps each link at the framing floor (a throwaway trace: 543-546 ms between
# a node's first and last of 66 chunks at 1 Gbit/s); the rest of a 44 MB
# time over the floor is how far apart the nodes' rounds start: 3-20 ms here,
# each node's I/O thread and ZeroMQ's thread waking on 2 cores shared by 4
# nodes (the barrier itself releases them within ~2 ms). Ends with
#   RESULT rate=... tether_lenet_ms=... gloo_lenet_ms=... tcp_ring_lenet_ms=... line_lenet_ms=...
#     tether_44mb_ms=... gloo_44mb_ms=... tcp_ring_44mb_ms=... line_44mb_ms=...
#     tether_over_line_44mb=... gloo_over_line_44mb=... tcp_ring_over_line_44mb=...
#
# usage: bench/allreduce.sh [--no-sweep] | --switch RATE [--iters K] [--warmup W]   (BUILD_DIR defaults to build/)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build}"
peers="$root/../shared/peers"
nodes=4 numel=11000000 iters=20 warmup=3
sweep=--sweep
switch_rate=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-sweep) sweep=; shift ;;
    --switch) switch_rate=$2; iters=5; warmup=5; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    *) echo "usage: $0 [--no-sweep] | --switch RATE [--iters K] [--warmup W]" >&2; exit 2 ;;
  esac
done

if [ -n "$switch_rate" ]; then
  switch="$root/scripts/switch.sh"
  [ -f "$build/build.ninja" ] || meson setup "$build" "$root" >/dev/null
  ninja -C "$build" bench/net/allreduce_bench >/dev/null
  rate_bps=$(python3 -c "import re, sys; m = re.fullmatch(r'(\d+(?:\.\d+)?)(k|m|g)?bit', sys.argv[1]); \
print(int(float(m[1]) * {None: 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m[2]])) if m else sys.exit(1)" "$switch_rate") \
    || { echo "--switch: expected a rate such as 100mbit or 1gbit, got $switch_rate" >&2; exit 2; }
  "$switch" down >/dev/null 2>&1 || true
  "$switch" up $nodes "$switch_rate" >/dev/null || exit 1
  tmp_switch=$(mktemp -d)
  trap '"$switch" down >/dev/null 2>&1; rm -rf "$tmp_switch"' EXIT
  echo "# machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "# $nodes nodes on scripts/switch.sh at $switch_rate per port; $iters iterations after $warmup warm-up; median of the slowest rank"
  result="rate=$switch_rate"
  port=$((29600 + RANDOM % 300))
  for size in lenet:454922 44mb:11000000; do
    name=${size%%:*} n=${size##*:}
    line_ms=$(python3 -c "print(f'{$n * 4 * 2 * ($nodes - 1) / $nodes * 8 / $rate_bps * 1e3:.1f}')")
    t_out=$("$build/bench/net/allreduce_bench" --nodes $nodes --numel "$n" --iters "$iters" --warmup "$warmup" \
              --netns tether-ns --subnet 10.77.0) || { echo "$t_out" >&2; exit 1; }
    echo "$t_out" | grep -q ' wrong=0 ' || { echo "tether: wrong results: $t_out" >&2; exit 1; }
    t_ms=$(echo "$t_out" | sed -n 's/^TETHER.* median=\([0-9.]*\) ms.*/\1/p')
    r_out=$("$build/bench/net/allreduce_bench" --reference tcp --nodes $nodes --numel "$n" --iters "$iters" \
              --warmup "$warmup" --netns tether-ns --subnet 10.77.0) || { echo "$r_out" >&2; exit 1; }
    echo "$r_out" | grep -q ' wrong=0 ' || { echo "tcp ring: wrong results: $r_out" >&2; exit 1; }
    r_ms=$(echo "$r_out" | sed -n 's/^TCPRING.* median=\([0-9.]*\) ms.*/\1/p')
    pids=()
    for ((r = 0; r < nodes; r++)); do
      ip netns exec tether-ns$r /usr/bin/python3 "$peers/bench_allreduce.py" --world $nodes --rank $r \
        --master 10.77.0.1 --ifname tether-n$r --port $port --numel "$n" --iters "$iters" --warmup "$warmup" \
        --threads 1 > "$tmp_switch/gloo-$name-$r.txt" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || { cat "$tmp_switch"/gloo-$name-*.txt >&2; exit 1; }; done
    port=$((port + 1))
    g_ms=$(sed -n 's/^RESULT.* median=\([0-9.]*\) ms.*/\1/p' "$tmp_switch/gloo-$name-0.txt")
    over() { python3 -c "print(f'{$1 / $line_ms:.3f}')"; }
    echo "$name ($((n * 4)) bytes): tether $t_ms ms ($(over "$t_ms")x the line rate's $line_ms ms), gloo $g_ms ms ($(over "$g_ms")x), plain-TCP ring $r_ms ms ($(over "$r_ms")x); framing floor 1.046x"
    result="$result tether_${name}_ms=$t_ms gloo_${name}_ms=$g_ms tcp_ring_${name}_ms=$r_ms line_${name}_ms=$line_ms"
    [ "$name" = 44mb ] && result="$result tether_over_line_44mb=$(over "$t_ms") gloo_over_line_44mb=$(over "$g_ms") tcp_ring_over_line_44mb=$(over "$r_ms")"
  done
  echo "RESULT $result"
  exit 0
fi

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
