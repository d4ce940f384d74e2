#!/usr/bin/env python3
"""Sums doctest's per-program counts from meson's testlog.json files
(arguments: FILE or FILE=PREFIX; PREFIX is put before each test's name).

A program whose output has no doctest summary (it crashed, timed out, or is
not a doctest program) counts as one test case, passed or failed by its exit
status. Prints "N passed, N failed" last; exits 1 if anything failed."""
import json, re, sys

SUMMARY = re.compile(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed\s*\|\s*(\d+) skipped")
passed = failed = 0
rows = []
def lines():
    for arg in sys.argv[1:]:
        path, _, prefix = arg.partition("=")
        with open(path) as f:
            for line in f:
                yield prefix, line

for prefix, line in lines():
    if True:
        t = json.loads(line)
        out = t.get("stdout") or ""
        m = SUMMARY.findall(out)
        ok = t.get("result") == "OK"
        if m:
            p, fl = int(m[-1][1]), int(m[-1][2])
            if not ok and fl == 0:
                fl = 1   # the program failed after its summary (exit code, leak, timeout)
        else:
            p, fl = (1, 0) if ok else (0, 1)
        passed += p
        failed += fl
        rows.append(f"  {prefix + t['name']:<28} {t.get('result'):<8} {p:>4} passed {fl:>3} failed  {t.get('duration', 0):6.1f}s")
print("\n".join(rows))
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
