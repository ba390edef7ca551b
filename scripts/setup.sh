#!/usr/bin/env bash
# Install the Debian 12 packages kadapter needs, fetch the small real checkpoint used by the
# tests, then configure and build everything into ./build.
#
#   KADAPTER_BUILD_DIR   build directory (default: build)
#   KADAPTER_CMAKE_ARGS  extra arguments for the CMake configure step
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update
$sudo_cmd apt-get install -y --no-install-recommends \
  build-essential cmake ca-certificates \
  libeigen3-dev xtl-dev nlohmann-json3-dev libboost-test-dev libbenchmark-dev \
  doxygen python3 python3-pip python3-matplotlib

# The real-checkpoint test skips cleanly without it, so a failed download is not fatal.
if ! ./scripts/fetch_minilm.sh; then
  echo "setup: warning: could not fetch all-MiniLM-L6-v2; its test will be skipped" >&2
fi

build_dir="${KADAPTER_BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${KADAPTER_CMAKE_ARGS:-}
cmake --build "$build_dir" -j"$(nproc)"
echo "setup: built into $build_dir; run the tests with: ctest --test-dir $build_dir --output-on-failure"
