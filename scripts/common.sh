# Shared set-up for scripts/*.sh: install what is missing (Debian 12), then
# configure and build into build/. Source it; do not run it.
set -euo pipefail

TETHER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$TETHER_ROOT/build}

# Packages the build and the tests need.
TETHER_PACKAGES=(meson ninja-build pkg-config g++ zlib1g-dev nlohmann-json3-dev doctest-dev
                 libdnnl-dev libopenblas-dev libzmq3-dev cppzmq-dev libboost-dev libcli11-dev
                 dataset-fashion-mnist python3 python3-dev pybind11-dev python3-numpy python3-torch
                 clang libclang-rt-14-dev libfuzzer-14-dev)  # the fuzz harnesses (build_fuzz)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ensure_packages PKG... : apt-get installs the ones not installed yet.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# build_tether: meson setup (once) + compile. Extra args go to meson setup.
build_tether() {
  ensure_packages "${TETHER_PACKAGES[@]}"
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    log "configuring $BUILD_DIR"
    meson setup "$BUILD_DIR" "$TETHER_ROOT" "$@" >/dev/null
  fi
  log "building (ninja -C $BUILD_DIR)"
  ninja -C "$BUILD_DIR" >/dev/null || ninja -C "$BUILD_DIR"
}

# build_fuzz: the libFuzzer harnesses of test/fuzz/ (clang, ASan + UBSan) in
# their own build directory, FUZZ_DIR (default build-fuzz/); ccache when present.
build_fuzz() {
  FUZZ_DIR=${FUZZ_DIR:-$TETHER_ROOT/build-fuzz}
  ensure_packages "${TETHER_PACKAGES[@]}"
  if [ ! -f "$FUZZ_DIR/build.ninja" ]; then
    log "configuring $FUZZ_DIR (clang, libFuzzer, AddressSanitizer, UBSan)"
    local cxx=clang++
    command -v ccache >/dev/null && cxx="ccache clang++"
    CXX="$cxx" meson setup "$FUZZ_DIR" "$TETHER_ROOT" -Dfuzz=enabled -Dbuildtype=debugoptimized >/dev/null
  fi
  log "building the fuzz harnesses (ninja -C $FUZZ_DIR)"
  ninja -C "$FUZZ_DIR" >/dev/null || ninja -C "$FUZZ_DIR"
}
