#!/usr/bin/env python3
"""Write seed corpora for the fuzz targets (tests/fuzz/targets.hpp) from the bundled demo data
and the tokenizer fixtures.

    python3 tests/fuzz/make_seeds.py OUT_DIR      # writes OUT_DIR/{data,tokenizer,safetensors,checkpoint,torch}

Each seed starts with the two selector bytes its target reads (see targets.hpp).
"""

import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def first_records(path, n=3):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.dumps(json.loads(text)[:n])
    except ValueError:  # JSON lines
        return "\n".join(text.splitlines()[:n]) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    for d in ("data", "tokenizer", "safetensors"):
        os.makedirs(os.path.join(out, d), exist_ok=True)

    def seed(target, name, head, body):
        with open(os.path.join(out, target, name), "wb") as f:
            f.write(bytes(head) + (body if isinstance(body, bytes) else body.encode("utf-8")))

    demo = os.path.join(ROOT, "data", "demo")
    seed("data", "fac", [0, 30], first_records(os.path.join(demo, "fac", "dev.json")))
    seed("data", "fac_bpe_standard", [0xC0, 31], first_records(os.path.join(demo, "fac", "dev.json")))
    seed("data", "find_head", [1, 20], first_records(os.path.join(demo, "lin", "dev.json")))
    with open(os.path.join(demo, "lin", "dev.conllu"), encoding="utf-8") as f:
        seed("data", "conllu", [2, 20], "\n\n".join(f.read().split("\n\n")[:2]) + "\n\n")
    seed("data", "entity_typing", [0x83, 21], first_records(os.path.join(demo, "entity_typing", "dev.json")))
    question = {"id": "q1", "context": "We went to Rome.", "question": "Where did we go?", "answer0": "Lima",
                "answer1": "Rome", "answer2": "Oslo", "answer3": "Nairobi", "label": "1"}
    seed("data", "cosmosqa", [4, 20], json.dumps(question) + "\n" + json.dumps(question) + "\n")
    for task, name in (("fac", "relations.txt"), ("entity_typing", "types.txt")):
        with open(os.path.join(demo, task, name), encoding="utf-8") as f:
            seed("data", task + "_label_list", [0, 20], "".join(f.readlines()[:6]))

    bpe = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "bpe")
    with open(os.path.join(bpe, "tokenizer.json"), encoding="utf-8") as f:
        seed("tokenizer", "bpe_tokenizer_json", [1, 0], f.read())
    with open(os.path.join(bpe, "vocab.json"), encoding="utf-8") as v, open(os.path.join(bpe, "merges.txt"), encoding="utf-8") as m:
        seed("tokenizer", "vocab_and_merges", [3, 0], v.read() + "\x01" + m.read())
    wordpiece = {"model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                           "max_input_chars_per_word": 100,
                           "vocab": {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"])}},
                 "normalizer": {"type": "BertNormalizer", "lowercase": True}, "pre_tokenizer": {"type": "BertPreTokenizer"},
                 "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}}
    seed("tokenizer", "wordpiece_tokenizer_json", [0, 0], json.dumps(wordpiece))
    seed("tokenizer", "vocab_txt", [2, 0], "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\n")
    with open(os.path.join(ROOT, "tests", "fixtures", "tokenizer", "corpus.jsonl"), encoding="utf-8") as f:
        for i, line in enumerate(f.read().splitlines()[:20]):
            seed("tokenizer", f"text{i}", [4, i * 13 % 256], json.loads(line).get("text", line) if line.startswith("{") else line)

    enc = os.path.join(ROOT, "tests", "fixtures", "encoder")
    for model in ("tiny_bert", "tiny_roberta"):
        with open(os.path.join(enc, model, "batch.safetensors"), "rb") as f:
            seed("safetensors", model + "_batch", [], f.read())
        with open(os.path.join(enc, model, "config.json"), "rb") as f:
            seed("safetensors", model + "_config", [0, 0], f.read())
    os.makedirs(os.path.join(out, "checkpoint"), exist_ok=True)
    fac = os.path.join(ROOT, "tests", "fixtures", "adapter", "fac_official", "adapter.safetensors")
    for name, src in (("tiny_roberta_model", os.path.join(enc, "tiny_roberta", "model.safetensors")), ("fac_task_model", fac)):
        with open(src, "rb") as f:
            data = f.read()
        seed("checkpoint", name, [], data)
        # The same with a header one byte longer (a trailing space): byte 0 flips the target's
        # bit 0 (the encoder in double precision).
        n = struct.unpack("<Q", data[:8])[0]
        seed("checkpoint", name + "_odd", [], struct.pack("<Q", n + 1) + data[8:8 + n] + b" " + data[8 + n:])
    # An optimizer state for the fac task model: both moments of every tensor, and the step count.
    with open(fac, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    tensors = {k: v for k, v in json.loads(data[8:8 + n]).items() if k != "__metadata__"}
    header, blob = {"__metadata__": {"adamw.steps": "3", "step": "3"}}, b""
    for moment, value in (("m", 0.01), ("v", 0.0001)):
        for name, info in sorted(tensors.items()):
            count = 1
            for d in info["shape"]:
                count *= d
            header[f"adamw.{moment}.{name}"] = {"dtype": "F32", "shape": info["shape"], "data_offsets": [len(blob), len(blob) + 4 * count]}
            blob += struct.pack(f"<{count}f", *([value] * count))
    text = json.dumps(header).encode()
    seed("checkpoint", "fac_optimizer", [], struct.pack("<Q", len(text)) + text + blob)
    os.makedirs(os.path.join(out, "torch"), exist_ok=True)
    for name in ("state_zip.pt", "state_legacy.pt", "training_args_fac.bin", "training_args_lin_zip.bin"):
        with open(os.path.join(ROOT, "tests", "fixtures", "torch", name), "rb") as f:
            seed("torch", name, [], f.read())
    header = json.dumps({"__metadata__": {"step": "4"}, "t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    seed("safetensors", "minimal", [], struct.pack("<Q", len(header)) + header + b"\0" * 8)


if __name__ == "__main__":
    main()
