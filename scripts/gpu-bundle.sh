#!/usr/bin/env bash
# Packs prebuilt tether programs for scripts/gpu-check.sh on a machine that
# has an NVIDIA GPU, its driver, CUDA and PyTorch, but none of the Debian
# packages tether links (ZeroMQ, oneDNN, OpenBLAS, libgomp, ...).
#
#   scripts/gpu-bundle.sh [BUILD_DIR]        # default: build-gpu (-Dgpu=enabled)
#
# Builds BUILD_DIR (configuring it with -Dgpu=enabled if needed; targets that
# fail to build are left out, with a warning), then writes gpu-bundle/:
#   payload.tar.xz  (about 16 MB; gpu-check.sh unpacks it)
#     build/      every executable of BUILD_DIR at its build-relative path
#                 (test programs, benchmarks, tether), debug info stripped
#     lib/        the shared libraries they load, as ldd resolves them here,
#                 except glibc and the CUDA libraries (driver, cuBLAS, cuDNN:
#                 hundreds of MB; gpu-check.sh finds them on the GPU machine)
#   manifest.json the tests and benchmarks `meson introspect` lists, with the
#                 build and source folders written as @BUILD@ and @SOURCE@
#   .gitignore    "*": the folder is ignored by git, so it travels only when
#                 carried: run(command="scripts/gpu-check.sh", carry=["gpu-bundle"])
# The bundle must stay under the carry limit (64 MiB); the script prints its
# size and warns above 60 MiB.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$(realpath -m "${1:-$ROOT/build-gpu}")
OUT=$ROOT/gpu-bundle

if [ ! -f "$BUILD/build.ninja" ]; then
  echo "==> configuring $BUILD with -Dgpu=enabled" >&2
  meson setup "$BUILD" "$ROOT" -Dgpu=enabled >/dev/null
fi
echo "==> building $BUILD" >&2
if ! ninja -C "$BUILD" -k 0 >"$BUILD/gpu-bundle-ninja.log" 2>&1; then
  echo "gpu-bundle: warning: some targets failed to build (see $BUILD/gpu-bundle-ninja.log); bundling what was built" >&2
fi
[ -f "$BUILD/gpu/libtether_gpu.a" ] || {
  echo "gpu-bundle: $BUILD has no CUDA backend (gpu/libtether_gpu.a); configure with -Dgpu=enabled" >&2
  exit 1
}

meson introspect --tests "$BUILD" >"$BUILD/gpu-bundle-tests.json"
meson introspect --benchmarks "$BUILD" >"$BUILD/gpu-bundle-benchmarks.json"

rm -rf "$OUT"
mkdir -p "$OUT/stage"
echo "*" >"$OUT/.gitignore"
python3 - "$BUILD" "$ROOT" "$OUT" <<'PY'
import json, os, re, shutil, stat, subprocess, sys

build, root, out = sys.argv[1:4]
stage = os.path.join(out, "stage")
os.makedirs(os.path.join(stage, "build"))
os.makedirs(os.path.join(stage, "lib"))

# Left to the GPU machine: glibc, and the driver / CUDA libraries.
SKIP = re.compile(r"^(linux-vdso|ld-linux.*|libc|libm|libdl|libpthread|librt|libresolv|libutil)\.so"
                  r"|^lib(cuda|cudart|cublas|cublasLt|cudnn\w*|nvrtc\w*|nvJitLink|OpenCL)\.so")
CUDA = re.compile(r"^lib(cuda|cudart|cublas|cublasLt|cudnn\w*)\.so")

exes = []
for d, dirs, files in os.walk(build):
    dirs[:] = [x for x in dirs if not x.endswith(".p") and not x.startswith("meson-")]
    for name in files:
        p = os.path.join(d, name)
        if ".so" in name or name.endswith((".a", ".o", ".json", ".log", ".ninja", ".txt")):
            continue
        st = os.stat(p)
        if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IXUSR:
            with open(p, "rb") as f:
                if f.read(4) != b"\x7fELF":
                    continue
            exes.append(p)

libs, cuda_libs, missing = {}, set(), set()
for p in exes:
    rel = os.path.relpath(p, build)
    dst = os.path.join(stage, "build", rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(p, dst)
    if shutil.which("strip"):
        subprocess.run(["strip", "--strip-debug", dst], check=False)
    ldd = subprocess.run(["ldd", p], capture_output=True, text=True).stdout
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line)
        if not m:
            continue
        soname, path = m.group(1), m.group(2)
        if CUDA.match(soname):
            cuda_libs.add(soname)
        if path == "not":
            missing.add(soname)
        elif not SKIP.match(soname):
            libs[soname] = path
    print(f"  {rel}")

for soname, path in sorted(libs.items()):
    shutil.copy2(os.path.realpath(path), os.path.join(stage, "lib", soname))

def rewrite(s):
    return s.replace(build, "@BUILD@").replace(root, "@SOURCE@")

manifest = {"tests": [], "benchmarks": [], "cuda_libs": sorted(cuda_libs)}
for kind in ("tests", "benchmarks"):
    with open(os.path.join(build, f"gpu-bundle-{kind}.json")) as f:
        for t in json.load(f):
            manifest[kind].append({
                "name": t["name"],
                "cmd": [rewrite(c) for c in t["cmd"]],
                "env": {k: rewrite(v) for k, v in (t.get("env") or {}).items()},
                "timeout": t.get("timeout") or 300,
            })
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)

print(f"gpu-bundle: {len(exes)} programs, {len(libs)} libraries ({', '.join(sorted(libs))})")
print(f"gpu-bundle: CUDA libraries expected on the GPU machine: {', '.join(sorted(cuda_libs))}")
if missing:
    print(f"gpu-bundle: warning: not found here either: {', '.join(sorted(missing))}")
PY
echo "==> compressing" >&2
XZ_OPT=-T0 tar -C "$OUT/stage" -cJf "$OUT/payload.tar.xz" build lib
rm -rf "$OUT/stage"
size=$(du -sm "$OUT" | cut -f1)
echo "gpu-bundle: $OUT: ${size} MiB"
if [ "$size" -gt 60 ]; then
  echo "gpu-bundle: warning: above 60 MiB; the carry limit is 64 MiB in all" >&2
fi
