#!/usr/bin/env python3
"""PyTorch reference of one K-Adapter training step, the way the authors' code runs it.

The factual-adapter pre-training step of microsoft/K-Adapter's fac-adapter.py: the backbone's
hidden states are given (the backbone runs under no_grad in eval mode there; here they are
random tensors of the same shape, as in bench/train_step.cpp), the adapters (down-projection,
N BERT layers with separate query/key/value Linears and head permutes, up-projection,
residual) and the head (com_dense, row selection by bmm with one-hot rows, dense, dropout,
out_proj, cross-entropy) run through autograd in train mode with dropout 0.1, then
clip_grad_norm_(1.0) and AdamW.

    /usr/bin/python3 bench/reference/train_step.py --config small|base|large \
        [--threads default|N] [--steps N] [--warmup N] [--device cpu|cuda]
        [--precision fp32|tf32|bf16]

Needs only Debian's python3-torch (--device cuda: a torch built with CUDA). --precision (cuda
only): fp32 products (the default; TF32 is off, as torch's default for matrix products), TF32
products (torch.backends.cuda.matmul.allow_tf32), or bf16 autocast (torch.autocast with
bfloat16: products in bf16, fp32 weights and optimizer, the way a PyTorch user asks for bf16). Prints one line per step and a summary line
`pytorch threads=... median_ms=... gflop=... gflops=...`.
"""

import argparse
import contextlib
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # hidden, backbone layers, adapter width, heads, ffn, batch, seq, plug-in points
    "small": (256, 4, 256, 4, 1024, 16, 64, (0, 1, 3)),
    "base": (768, 12, 768, 12, 3072, 16, 64, (0, 5, 11)),
    "large": (1024, 24, 768, 12, 3072, 8, 64, (0, 11, 22)),
}
RELATIONS = 430


class SelfAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.d = heads, width // heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=1e-5)
        self.drop = nn.Dropout(0.1)

    def split(self, x):
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.d).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d) + mask
        probs = self.drop(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(x.shape)
        return self.norm(x + self.drop(self.dense(ctx)))


class Layer(nn.Module):
    def __init__(self, width, heads, ffn):
        super().__init__()
        self.attention = SelfAttention(width, heads)
        self.intermediate = nn.Linear(width, ffn)
        self.output = nn.Linear(ffn, width)
        self.norm = nn.LayerNorm(width, eps=1e-5)
        self.drop = nn.Dropout(0.1)

    def forward(self, x, mask):
        a = self.attention(x, mask)
        h = self.intermediate(a)
        h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
        return self.norm(a + self.drop(self.output(h)))


class Adapter(nn.Module):
    def __init__(self, hidden, width, heads, ffn, layers=2):
        super().__init__()
        self.down = nn.Linear(hidden, width)
        self.layers = nn.ModuleList(Layer(width, heads, ffn) for _ in range(layers))
        self.up = nn.Linear(width, hidden)

    def forward(self, x, mask):
        h = self.down(x)
        for layer in self.layers:
            h = layer(h, mask)
        return x + self.up(h)


class FacModel(nn.Module):
    def __init__(self, hidden, width, heads, ffn, plug):
        super().__init__()
        self.plug = plug
        self.adapter = nn.ModuleList(Adapter(hidden, width, heads, ffn) for _ in plug)
        self.com_dense = nn.Linear(2 * hidden, hidden)
        self.dense = nn.Linear(2 * hidden, hidden)
        self.drop = nn.Dropout(0.1)
        self.out_proj = nn.Linear(hidden, RELATIONS)

    def forward(self, hidden_states, last, subj, obj, labels):
        b, t, _ = last.shape
        mask = torch.zeros(b, 1, 1, t, device=last.device)  # the authors' adapters attend to every position
        prev = torch.zeros_like(last)
        for p, adapter in zip(self.plug, self.adapter):
            prev = adapter(hidden_states[p] + prev, mask)
        feats = self.com_dense(torch.cat([last, prev], dim=2))
        s = torch.bmm(subj.unsqueeze(1), feats).squeeze(1)
        o = torch.bmm(obj.unsqueeze(1), feats).squeeze(1)
        logits = self.out_proj(self.drop(self.dense(torch.cat([s, o], dim=1))))
        return F.cross_entropy(logits, labels)


def step_flops(hidden, width, ffn, batch, seq, plug):
    n = batch * seq
    layer = 2.0 * n * (4 * width * width + 2 * width * ffn) + 4.0 * batch * seq * seq * width
    adapter = 2.0 * n * 2 * hidden * width + 2 * layer
    head = 2.0 * n * 2 * hidden * hidden + 2.0 * batch * (2 * hidden * hidden + hidden * RELATIONS)
    # No input gradient is needed for the first adapter layer's down projection (it reads a
    # backbone state) nor for com_dense's backbone half: the same count as bench/train_step.cpp.
    not_needed = 2.0 * n * hidden * width + 2.0 * n * hidden * hidden
    return 3.0 * (len(plug) * adapter + head) - not_needed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="base")
    ap.add_argument("--threads", default="default", help="'default' or a number for torch.set_num_threads")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32")
    args = ap.parse_args()
    if args.precision != "fp32" and args.device != "cuda":
        ap.error("--precision tf32 and bf16 need --device cuda")
    device = torch.device(args.device)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    if args.threads != "default":
        torch.set_num_threads(int(args.threads))
    hidden, layers, width, heads, ffn, batch, seq, plug = CONFIGS[args.config]
    torch.manual_seed(0)
    model = FacModel(hidden, width, heads, ffn, plug).to(device)
    model.train()
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(d in n for d in no_decay)], "weight_decay": 0.0},
        {"params": [p for n, p in model.named_parameters() if any(d in n for d in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=5e-5, eps=1e-8)
    with torch.no_grad():  # the frozen backbone's outputs
        states = [torch.randn(batch, seq, hidden).to(device) for _ in range(layers + 1)]
    subj = torch.zeros(batch, seq)
    obj = torch.zeros(batch, seq)
    subj[:, 1] = 1.0
    obj[:, 7] = 1.0
    subj, obj = subj.to(device), obj.to(device)
    labels = (torch.arange(batch) * 37 % RELATIONS).to(device)
    times = []
    for s in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad()
        with autocast:
            loss = model(states, states[-1], subj, obj, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        dt = (time.perf_counter() - t0) * 1e3
        print(f"step {s}: {dt:.1f} ms, loss {loss.item():.4f}")
        if s >= args.warmup:
            times.append(dt)
    median = statistics.median(times)
    flop = step_flops(hidden, width, ffn, batch, seq, plug)
    print(f"pytorch device={args.device} precision={args.precision} threads={torch.get_num_threads()} median_ms={median:.2f} "
          f"gflop={flop * 1e-9:.1f} gflops={flop * 1e-9 / (median * 1e-3):.1f}")


if __name__ == "__main__":
    main()
