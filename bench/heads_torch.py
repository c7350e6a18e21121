"""bench/heads_torch.py: a straightforward PyTorch implementation of the same
heads (the way FaceX-Zoo and InsightFace write them: normalise W into a copy,
matmul, masks, margin by gather/scatter, cross-entropy, autograd), timed
forward+backward at the same size as bench/heads.lua. Optional; never used by
tests. --device cpu (default): Debian's python3-torch, --threads threads.
--device cuda: a PyTorch with CUDA, fp32 (TF32 off), each time taken between
torch.cuda.synchronize() calls, and the peak memory PyTorch's allocator held
during the step (torch.cuda.max_memory_allocated after a reset, less what was
held before). Prints a few lines starting with '#', then one line per head:
name, best ms of --reps steps after one warm-up step (and, on CUDA, peak MB).
--subcenters k (k > 1): Sub-center ArcFace as InsightFace writes it: W has
K k rows, the cosines (B, K k) are reshaped to (B, K, k) and each class takes
the max over its k, then the head as before. --heads names the heads to time;
names it does not have are left out.
Exits 3 when --device cuda finds no CUDA in PyTorch.
Usage: python3 bench/heads_torch.py [--device cpu|cuda] [--B 128] [--dim 512] [--K 72690] [--reps 3] [--threads 2]
         [--subcenters 1] [--heads am,arc]
"""
import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--B", type=int, default=128)
p.add_argument("--dim", type=int, default=512)
p.add_argument("--K", type=int, default=72690)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
HEADS = "norm-softmax,am,arc,mv-am,mv-arc,f-am,hm-am,curricular,adaface,magface,elastic-arc,elastic-cos"
p.add_argument("--heads", default=HEADS)
p.add_argument("--subcenters", type=int, default=1)
a = p.parse_args()
if a.subcenters < 1:
    p.error("--subcenters must be >= 1")
torch.set_num_threads(a.threads)
torch.manual_seed(0)
s = 32.0
gpu = a.device == "cuda"
if gpu:
    if not torch.cuda.is_available():
        print(f"# torch {torch.__version__}: no CUDA device (torch.cuda.is_available() is False)")
        sys.exit(3)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    print(f"# torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}; fp32 (TF32 off)")
else:
    print(f"# torch {torch.__version__}, CPU, {a.threads} threads")
if a.subcenters > 1:
    print(f"# {a.subcenters} sub-centres a class: W is {a.K * a.subcenters} x {a.dim}, each class the max of its cosines")
dev = torch.device(a.device)


curricular_t = 0.0
ada_mean, ada_std = 20.0, 100.0


def sync():
    if gpu:
        torch.cuda.synchronize()


def cosine(xn, W):
    # xn: unit rows; with sub-centres each class's best of its k cosines (InsightFace's reshape and max)
    cos = F.linear(xn, F.normalize(W))
    if a.subcenters > 1:
        cos, _ = torch.max(cos.view(cos.shape[0], -1, a.subcenters), dim=2)
    return cos


def adaface_logits(x, W, y):
    # the authors' formulation: norm statistics (no gradient), per-row margins on the target angle and cosine
    global ada_mean, ada_std
    eps, m, h = 1e-3, 0.4, 0.333
    norms = x.norm(dim=1, keepdim=True)
    cos = cosine(x / norms, W).clamp(-1 + eps, 1 - eps)
    safe = norms.clamp(0.001, 100).detach()
    with torch.no_grad():
        ada_mean = 0.01 * safe.mean() + 0.99 * ada_mean
        ada_std = 0.01 * safe.std() + 0.99 * ada_std
    z = ((safe - ada_mean) / (ada_std + eps) * h).clamp(-1, 1)
    onehot = torch.zeros_like(cos).scatter_(1, y[:, None], 1.0)
    theta = (cos.acos() - onehot * m * z).clamp(eps, math.pi - eps)
    return (theta.cos() - onehot * (m + m * z)) * s


def magface_loss(x, W, y):
    # the authors' formulation: the margin from the clamped norm (differentiated), plus the norm regulariser
    l_a, u_a, l_m, u_m, lambda_g = 10.0, 110.0, 0.45, 0.8, 35.0
    a = x.norm(dim=1, keepdim=True).clamp(l_a, u_a)
    m = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    cos = cosine(F.normalize(x), W).clamp(-1, 1)
    cos_m = cos * torch.cos(m) - torch.sqrt(1.0 - cos * cos) * torch.sin(m)
    cos_m = torch.where(cos > 0, cos_m, cos)     # easy_margin, as its authors train (facet's default)
    onehot = torch.zeros_like(cos).scatter_(1, y[:, None], 1.0)
    z = s * (onehot * cos_m + (1.0 - onehot) * cos)
    return F.cross_entropy(z, y) + lambda_g * (a / u_a ** 2 + 1.0 / a).mean()


def logits(x, W, y, name):
    if name == "adaface":
        return adaface_logits(x, W, y)
    cos = cosine(F.normalize(x), W).clamp(-1, 1)
    cy = cos.gather(1, y[:, None])
    if name.startswith("elastic-"):
        # the authors' formulation: a margin a row drawn from N(m, 0.05) each step (no fallback past pi)
        arc = name == "elastic-arc"
        margin = torch.normal(0.5 if arc else 0.35, 0.05, size=cy.shape, device=cy.device)
        fy = torch.cos(torch.acos(cy) + margin) if arc else cy - margin
    elif name.endswith("am"):
        fy = cy - 0.35
    elif name.endswith("arc") or name == "curricular":
        m = 0.5
        th = torch.acos(cy)
        fy = torch.where(th + m > math.pi, cy - m * math.sin(m), torch.cos(th + m))
    else:
        fy = cy
    if name.startswith("mv-"):
        t = 0.2 if name == "mv-am" else 0.3
        mask = cos > fy
        cos = torch.where(mask, (t + 1.0) * cos + t, cos)    # adaptive h: s cos + s t (cos + 1)
    if name == "curricular":
        # the running t (no gradient), then hard logits c (t + c), as its authors' code
        global curricular_t
        with torch.no_grad():
            curricular_t = 0.01 * cy.mean() + 0.99 * curricular_t
        cos = torch.where(cos > fy, cos * (curricular_t + cos), cos)
    return cos.scatter(1, y[:, None], fy) * s


def loss_of(x, W, y, name):
    if name == "magface":
        return magface_loss(x, W, y)
    z = logits(x, W, y, name)
    ce = F.cross_entropy(z, y, reduction="none")
    if name.startswith("f-"):
        p_y = torch.exp(-ce)
        return ((1 - p_y) ** 2 * ce).mean()
    if name.startswith("hm-"):
        keep = max(1, int(0.9 * len(ce)))
        return ce.topk(keep).values.mean()
    return ce.mean()


x = torch.randn(a.B, a.dim, device=dev, requires_grad=True)
W = torch.nn.Parameter(torch.randn(a.K * a.subcenters, a.dim, device=dev) * 0.01)
y = (torch.arange(a.B, device=dev) * (a.K // a.B)).long()
known = HEADS.split(",")
for name in [n for n in a.heads.split(",") if n in known]:
    best = float("inf")
    peak_mb = None
    for r in range(a.reps + 1):
        x.grad = None
        W.grad = None
        if gpu and r == 0:
            sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        sync()
        t0 = time.perf_counter()
        loss_of(x, W, y, name).backward()
        sync()
        dt = time.perf_counter() - t0
        if gpu and r == 0:
            # the step's peak (W.grad included) plus W, held from before: facet's figure counts W too
            peak_mb = (torch.cuda.max_memory_allocated() - base + W.numel() * 4) / 2 ** 20
        if r > 0:
            best = min(best, dt)
    if gpu:
        print(f"{name} {best * 1e3:.3f} {peak_mb:.0f}")
    else:
        print(f"{name} {best * 1e3:.1f}")
    sys.stdout.flush()
