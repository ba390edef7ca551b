#!/usr/bin/env bash
# Side by side: kadapter's training step against the PyTorch reference of the same step.
#
#   bench/compare.sh --config small|base|large [--steps N] [--build DIR]
#
# Runs, alternately and after a warm-up step each: kadapter (build/bench/bench_train_step),
# PyTorch with its default threads, PyTorch with torch.set_num_threads(1). Prints for each the
# median step time, GFLOP/s, the fraction of the GEMM ceiling measured in the same run
# (build/bench/bench_gemm_ceiling: the faster of the library's and Eigen's product per shape,
# both printed) and the peak RSS; then kadapter's steps against the ceiling probed right
# before each of them (bench_train_step --paired-ceiling: on a shared machine whose speed
# drifts, one ceiling measured at the start can be far from the speed during a step, in
# either direction; a separate run); the last line is
# `speedup_vs_pytorch=X.XX` against the faster PyTorch setting.
# Needs: the build (cmake --build build), Debian's python3-torch and libopenblas0-pthread
# (without OpenBLAS, torch falls back to the reference BLAS), GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."

config=base
steps=5
build=build
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "compare.sh: unknown option $1 (expected --config, --steps, --build)" >&2; exit 2 ;;
  esac
done
case "$config" in small|base|large) ;; *) echo "compare.sh: --config must be small, base or large" >&2; exit 2 ;; esac
for tool in "$build/bench/bench_train_step" "$build/bench/bench_gemm_ceiling" /usr/bin/time /usr/bin/python3; do
  [ -x "$tool" ] || { echo "compare.sh: $tool not found (build first: cmake --build $build)" >&2; exit 2; }
done
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "compare.sh: Debian's python3-torch is not installed" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ceiling_out=$("$build/bench/bench_gemm_ceiling")
echo "$ceiling_out" | grep '^gemm '
ceiling=$(echo "$ceiling_out" | sed -n 's/^gemm_ceiling_gflops=//p')
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1); GEMM ceiling ${ceiling} GFLOP/s"
echo "config: $config, $steps timed steps after 1 warm-up"

run() {  # name, command...
  local name=$1; shift
  /usr/bin/time -f "%M" -o "$tmp/$name.rss" "$@" > "$tmp/$name.out" 2>&1 || { cat "$tmp/$name.out" >&2; exit 1; }
}
# Alternate the three so that drift of the machine affects all alike.
run kadapter "$build/bench/bench_train_step" --config "$config" --steps "$steps"
run torch_default /usr/bin/python3 bench/reference/train_step.py --config "$config" --steps "$steps" --threads default
run torch_1 /usr/bin/python3 bench/reference/train_step.py --config "$config" --steps "$steps" --threads 1
# A separate run, so that the probes' buffers do not count in the peak RSS above.
run kadapter_paired "$build/bench/bench_train_step" --config "$config" --steps "$steps" --paired-ceiling

field() { sed -n "s/.*$2=\([0-9.]*\).*/\1/p" "$tmp/$1.out" | tail -1; }
printf "%-26s %12s %10s %12s %12s\n" "" "median_ms" "GFLOP/s" "of_ceiling" "peak_RSS_MB"
for name in kadapter torch_default torch_1; do
  ms=$(field "$name" median_ms)
  gf=$(field "$name" gflops)
  rss=$(cat "$tmp/$name.rss" | tail -1)
  label=$name
  [ "$name" = torch_default ] && label="pytorch (default threads)"
  [ "$name" = torch_1 ] && label="pytorch (1 thread)"
  printf "%-26s %12s %10s %11.0f%% %12.0f\n" "$label" "$ms" "$gf" "$(echo "100 * $gf / $ceiling" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
done
printf "kadapter against the ceiling probed just before each of its steps (median): %.0f%%\n" \
  "$(echo "100 * $(field kadapter_paired paired_ceiling_fraction)" | bc -l)"
k=$(field kadapter median_ms)
best=$(printf "%s\n%s\n" "$(field torch_default median_ms)" "$(field torch_1 median_ms)" | sort -g | head -1)
printf "speedup_vs_pytorch=%.2f\n" "$(echo "$best / $k" | bc -l)"
