#!/usr/bin/env bash
# Epoch-level benchmark: three epochs of factual-adapter pre-training on the bundled data
# (lengths of real sentences, max_seq_length 128) with the all-MiniLM-L6-v2 encoder, run
#   authors   every batch padded to max_seq_length, backbone recomputed every step
#   trim      batches padded to their own longest sequence (the same numbers)
#   cache     trim + the backbone feature cache (fp16, in memory)
#   sort      cache + sequences of similar length grouped into batches
# Prints wall time, peak RSS, the mean loss of the last epoch, dev micro F1 and the speedup
# over the authors' way; the last line is `epoch_speedup=X.XX` (cache against authors).
#
#   bench/epochs.sh [--epochs N] [--build DIR] [--model DIR] [--data DIR] [--only NAME,...]
# Needs: the build, the model (scripts/fetch_minilm.sh), GNU time (/usr/bin/time), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=3
build=build
model=models/all-MiniLM-L6-v2
data=data/demo/fac
only=authors,trim,cache,sort
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) epochs="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "epochs.sh: unknown option $1 (expected --epochs, --build, --model, --data, --only)" >&2; exit 2 ;;
  esac
done
cli="$build/examples/kadapter"
for tool in "$cli" /usr/bin/time /usr/bin/python3; do
  [ -x "$tool" ] || { echo "epochs.sh: $tool not found (build first: cmake --build $build)" >&2; exit 2; }
done
[ -f "$model/model.safetensors" ] || { echo "epochs.sh: no model at $model (run scripts/fetch_minilm.sh)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1); $(date -u +%F)"
echo "job: pretrain --task fac, $data, $model, max_seq_length 128, batch 32, adapters 0,3,6 (Ha 192), $epochs epochs"

declare -A flags=(
  [authors]="--bucketing none --feature-cache off"
  [trim]="--bucketing trim --feature-cache off"
  [cache]="--bucketing trim --feature-cache memory --cache-dtype fp16"
  [sort]="--bucketing sort --feature-cache memory --cache-dtype fp16"
)
printf '%-8s %10s %10s %16s %10s %8s\n' setting seconds peak_MB last_epoch_loss dev_F1 speedup
base=""
IFS=, read -ra names <<< "$only"
for name in "${names[@]}"; do
  out="$tmp/$name"
  # shellcheck disable=SC2086
  /usr/bin/time -f '%e %M' -o "$tmp/$name.time" "$cli" pretrain --task fac --model "$model" --data "$data" \
    --out "$out" --max-seq-length 128 --batch-size 32 --epochs "$epochs" --learning-rate 1e-3 \
    --warmup-steps 20 --adapter-list 0,3,6 --adapter-size 192 --adapter-heads 4 ${flags[$name]} \
    2> "$tmp/$name.log" || { cat "$tmp/$name.log" >&2; exit 1; }
  read -r secs kb < "$tmp/$name.time"
  read -r loss f1 < <(/usr/bin/python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r and "eval" not in r]
last = max(r["epoch"] for r in steps)
tail = [r["loss"] for r in steps if r["epoch"] == last]
f1 = [r["eval"]["micro_f1"] for r in rows if "eval" in r][-1]
print(f"{sum(tail) / len(tail):.4f} {f1:.4f}")
PY
)
  [ -z "$base" ] && [ "$name" = authors ] && base=$secs
  speed=$([ -n "$base" ] && /usr/bin/python3 -c "print(f'{$base / $secs:.2f}')" || echo -)
  printf '%-8s %10s %10d %16s %10s %8s\n' "$name" "$secs" $((kb / 1024)) "$loss" "$f1" "$speed"
  grep -h "training sequences\|feature cache ([a-z]*): [0-9]* sequences" "$tmp/$name.log" | sed 's/^/    /' || true
  [ "$name" = cache ] && cache_secs=$secs
done
if [ -n "$base" ] && [ -n "${cache_secs:-}" ]; then
  /usr/bin/python3 -c "print(f'epoch_speedup={$base / $cache_secs:.2f}')"
fi
