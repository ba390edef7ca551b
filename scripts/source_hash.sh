#!/usr/bin/env bash
# A short hash of the sources the GPU programs are built from (include/, tests/, bench/,
# examples/, cmake/, CMakeLists.txt): scripts/gpu_bundle.sh records it in .gpu/SOURCES and
# bench/gpu_check.sh compares it with the tree it runs in (which may have no .git).
set -euo pipefail
cd "$(dirname "$0")/.."
find include tests bench examples cmake CMakeLists.txt -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16
