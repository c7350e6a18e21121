"""bench/heads_torch.py: a straightforward PyTorch implementation of the same
heads (the way FaceX-Zoo and InsightFace write them: normalise W into a copy,
masks, gather/scatter, autograd), timed forward+backward at the same size as
bench/heads.lua. Optional: needs Debian's python3-torch; never used by tests.
Prints one line per head: name and best ms of --reps steps.
Usage: python3 bench/heads_torch.py [--B 128] [--dim 512] [--K 72690] [--reps 3] [--threads 2]
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--B", type=int, default=128)
p.add_argument("--dim", type=int, default=512)
p.add_argument("--K", type=int, default=72690)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--heads", default="norm-softmax,am,arc,mv-am,mv-arc,f-am,hm-am")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
s = 32.0


def logits(x, W, y, name):
    cos = F.linear(F.normalize(x), F.normalize(W)).clamp(-1, 1)
    cy = cos.gather(1, y[:, None])
    if name.endswith("am"):
        fy = cy - 0.35
    elif name.endswith("arc"):
        m = 0.5
        th = torch.acos(cy)
        fy = torch.where(th + m > math.pi, cy - m * math.sin(m), torch.cos(th + m))
    else:
        fy = cy
    if name.startswith("mv-"):
        t = 0.2 if name == "mv-am" else 0.3
        mask = cos > fy
        cos = torch.where(mask, (t + 1.0) * cos + t, cos)    # adaptive h: s cos + s t (cos + 1)
    return cos.scatter(1, y[:, None], fy) * s


def loss_of(x, W, y, name):
    z = logits(x, W, y, name)
    ce = F.cross_entropy(z, y, reduction="none")
    if name.startswith("f-"):
        p_y = torch.exp(-ce)
        return ((1 - p_y) ** 2 * ce).mean()
    if name.startswith("hm-"):
        keep = max(1, int(0.9 * len(ce)))
        return ce.topk(keep).values.mean()
    return ce.mean()


x = torch.randn(a.B, a.dim, requires_grad=True)
W = torch.nn.Parameter(torch.randn(a.K, a.dim) * 0.01)
y = (torch.arange(a.B) * (a.K // a.B)).long()
for name in a.heads.split(","):
    best = float("inf")
    for r in range(a.reps + 1):
        x.grad = None
        W.grad = None
        t0 = time.perf_counter()
        loss_of(x, W, y, name).backward()
        dt = time.perf_counter() - t0
        if r > 0:
            best = min(best, dt)
    print(f"{name} {best * 1e3:.1f}")
