#!/usr/bin/env bash
# The GPU check in one run (a few minutes): the GPU tests (kernels, models, fixtures), then
# the training-step benchmark of every config on the card, then the PyTorch reference of the
# same step on the card when python3 has torch with CUDA. Writes a short table and the logs
# to OUT (default gpu-check/), line by line, so that a run cut short keeps what it did.
#
#   bench/gpu_check.sh [--prebuilt DIR] [--out DIR] [--quick] [--allow-stale]
#
# --quick benchmarks only the base config in fp32 and bf16. Every program runs under a time
# limit. A test program that fails is run again one case per process, so that a kernel fault
# (which spoils the CUDA context for the rest of the process) is pinned to its case. A
# prebuilt bundle built from other sources than this tree's (scripts/source_hash.sh) is refused
# unless --allow-stale.
#
# Without --prebuilt it builds the CUDA targets here (needs the project's build dependencies
# and Boost.Test). With --prebuilt DIR (made by scripts/gpu_bundle.sh on any machine with the
# CUDA toolkit) it runs DIR/bin's programs with DIR/lib on the library path.
set -uo pipefail
prebuilt="" out="gpu-check" quick=0 allow_stale=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --allow-stale) allow_stale=1; shift ;;
    --prebuilt|--out)
      [ $# -ge 2 ] || { echo "gpu_check: $1 needs a value" >&2; exit 2; }
      if [ "$1" = --prebuilt ]; then prebuilt=$(realpath "$2"); else out=$(realpath -m "$2"); fi
      shift 2 ;;
    *) echo "gpu_check: unknown option $1 (expected --prebuilt DIR, --out DIR, --quick, --allow-stale)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
mkdir -p "$out"
log() { echo "$@" | tee -a "$out/summary.txt"; }
: >"$out/summary.txt"

log "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi failed')"

if [ -n "$prebuilt" ]; then
  bin="$prebuilt/bin"
  built=$(cat "$prebuilt/REVISION" 2>/dev/null || echo unknown)
  here=$(git describe --always --dirty 2>/dev/null || echo unknown)
  sources=$(cat "$prebuilt/SOURCES" 2>/dev/null || echo unknown)
  log "prebuilt: $prebuilt (revision $built, sources $sources; this tree: $here, sources $(scripts/source_hash.sh))"
  if [ "$sources" != "$(scripts/source_hash.sh)" ] && [ $allow_stale = 0 ]; then
    log "prebuilt: built from other sources than this tree's; run scripts/gpu_bundle.sh again (or pass --allow-stale)"
    exit 1
  fi
  # CUDA's libraries: the toolkit's, else the ones PyTorch's wheels bring.
  cudalib=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [ -d "$d" ] && cudalib="$cudalib:$d"; done
  pylib=$(python3 -c 'import os, nvidia.cublas, nvidia.cuda_runtime as r; print(os.path.dirname(nvidia.cublas.__file__) + "/lib:" + os.path.dirname(r.__file__) + "/lib")' 2>/dev/null || true)
  export LD_LIBRARY_PATH="$prebuilt/lib$cudalib${pylib:+:$pylib}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing=$(ldd "$bin"/* 2>/dev/null | grep "not found" | sort -u)
  [ -n "$missing" ] && log "libraries not found: $(echo "$missing" | tr -s ' \t\n' ' ')"
else
  start=$(date +%s)
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DKADAPTER_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DKADAPTER_BUILD_EXAMPLES=OFF >"$out/build.log" 2>&1 &&
    cmake --build build-gpu -j"$(nproc)" --target test_cuda_smoke test_cuda_kernels test_cuda_models bench_gpu_step >>"$out/build.log" 2>&1 ||
    { log "build: FAILED (see build.log)"; exit 1; }
  log "build: $(( $(date +%s) - start )) s"
  mkdir -p build-gpu/bin
  cp build-gpu/tests/cuda/test_cuda_smoke build-gpu/tests/cuda/test_cuda_kernels build-gpu/tests/cuda/test_cuda_models \
    build-gpu/bench/bench_gpu_step build-gpu/bin/
  bin="build-gpu/bin"
fi

# The fixtures of this tree (a prebuilt program knows only the path where it was built).
export KA_FIXTURE_DIR="$PWD/tests/fixtures"
status=0
for t in test_cuda_smoke test_cuda_kernels test_cuda_models; do
  timeout -k 10 180 "$bin/$t" --log_level=message >"$out/$t.log" 2>&1
  rc=$?
  case $rc in
    0) log "test $t: passed" ;;
    77) log "test $t: SKIPPED ($(head -1 "$out/$t.log"))"; status=1 ;;
    *)
      [ $rc = 124 ] && log "test $t: TIMED OUT (180 s; see $t.log)" || log "test $t: FAILED (rc $rc; see $t.log)"
      grep -E "error|failed" "$out/$t.log" | head -20 | tee -a "$out/summary.txt"
      status=1
      # One case per process: the first fault no longer shows up in every later case (not
      # after a time-out or a missing library: every case would meet it again).
      [ $rc = 124 ] || [ $rc = 137 ] || [ $rc = 127 ] && continue
      for c in $(sed -n 's/^BOOST_AUTO_TEST_CASE(\([A-Za-z0-9_]*\).*/\1/p' "tests/cuda/$t.cu"); do
        timeout -k 10 60 "$bin/$t" --run_test="$c" >"$out/$t.$c.log" 2>&1
        crc=$?
        [ $crc = 0 ] && log "  case $c: passed" || log "  case $c: FAILED (rc $crc; see $t.$c.log)"
      done ;;
  esac
done

log ""
log "| config | precision | kadapter ms | tokens/s | GFLOP/s | of the card's GEMM ceiling | PyTorch ms | speedup |"
log "|---|---|---|---|---|---|---|---|"
have_torch=0
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && have_torch=1
configs="small base large" precisions="fp32 tf32 bf16"
[ $quick = 1 ] && configs="base" precisions="fp32 bf16"
for cfg in $configs; do
  for prec in $precisions; do
    # PyTorch in the same precision (bf16: autocast), when python3 has torch with CUDA.
    torch_ms="-"
    if [ $have_torch = 1 ]; then
      timeout -k 10 120 python3 bench/reference/train_step.py --config "$cfg" --device cuda --precision "$prec" --steps 20 --warmup 3 \
        >"$out/pytorch_${cfg}_$prec.log" 2>&1 &&
        torch_ms=$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' "$out/pytorch_${cfg}_$prec.log" | tail -1)
      torch_ms=${torch_ms:--}
      [ "$torch_ms" = - ] && log "pytorch $cfg $prec: no result (see pytorch_${cfg}_$prec.log)"
    fi
    if timeout -k 10 120 "$bin/bench_gpu_step" --config "$cfg" --precision "$prec" >"$out/kadapter_${cfg}_$prec.log" 2>&1; then
      line=$(grep '^kadapter_gpu' "$out/kadapter_${cfg}_$prec.log")
      ms=$(echo "$line" | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')
      tps=$(echo "$line" | sed -n 's/.*tokens_per_s=\([0-9]*\).*/\1/p')
      gf=$(echo "$line" | sed -n 's/.*gflops=\([0-9]*\) .*/\1/p')
      frac=$(echo "$line" | sed -n 's/.*ceiling_fraction=\([0-9.]*\).*/\1/p')
      speed="-"
      [ "$torch_ms" != "-" ] && speed=$(python3 -c "print(f'{$torch_ms / $ms:.2f}x')")
      log "| $cfg | $prec | $ms | $tps | $gf | $frac | $torch_ms | $speed |"
    else
      log "| $cfg | $prec | FAILED (see kadapter_${cfg}_$prec.log) | | | | $torch_ms | |"
      status=1
    fi
  done
done
grep -h '^gpu device\|^gemm fallbacks' "$out"/kadapter_base_*.log 2>/dev/null | tee -a "$out/summary.txt"
exit $status
