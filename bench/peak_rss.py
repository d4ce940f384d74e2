#!/usr/bin/env python3
"""Runs a command, passes its output through, and prints its peak resident
memory as a last line "peak_rss_mb=<MB>" (ru_maxrss of the waited child).
usage: bench/peak_rss.py CMD [ARGS...]"""
import resource, subprocess, sys

rc = subprocess.call(sys.argv[1:])
print(f"peak_rss_mb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}", flush=True)
sys.exit(rc)
