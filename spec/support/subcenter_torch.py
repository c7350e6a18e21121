"""Sub-center ArcFace (Deng et al., ECCV 2020) in PyTorch, in InsightFace's
formulation, for spec/subcenter_spec.lua: the weight holds K k rows, class
c's sub-centres being rows c k ... c k + k - 1; cos = normalize(x) @
normalize(W).T (clamped to [-1, 1]), viewed as B x K x k and maxed over the
sub-centres; then the margin on the label's cosine: arc, cos(theta + m)
while theta + m <= pi and cos - m sin(m) past it (easy_margin off), or am,
cos - m; logits times s; mean cross-entropy; autograd for the gradients
(the max passes them to the sub-centre it took). Everything in float64.

usage: subcenter_torch.py DIR STEPS K SUBCENTERS S M MARGIN
DIR holds w.npy (K k x D) and x1.npy, y1.npy, ... (B x D float32, B int64);
MARGIN is arc or am. Writes, for each step (W does not change between steps,
and each step's gradients are its own): out<i>.npy = [loss, the number of
rows that took arc's fallback, the smallest gap between a class's best and
second-best sub-centre cosine over the batch], dx<i>.npy and dw<i>.npy
(float32, computed in float64).
"""
import math
import sys

import numpy as np
import torch


def step(x, w, y, classes, k, s, m, margin):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    xn = torch.nn.functional.normalize(x, dim=1)
    wn = torch.nn.functional.normalize(w, dim=1)
    sub = (xn @ wn.t()).clamp(-1.0, 1.0).view(x.shape[0], classes, k)
    cos, _ = sub.max(dim=2)
    top = sub.detach().topk(2, dim=2).values if k > 1 else None
    gap = (top[:, :, 0] - top[:, :, 1]).min().item() if top is not None else math.inf
    rows = torch.arange(x.shape[0])
    cy = cos[rows, y]
    fallback = 0
    if margin == "arc":
        sin_y = torch.sqrt(1.0 - cy * cy)
        phi = cy * math.cos(m) - sin_y * math.sin(m)
        # theta + m past pi: cos(theta) below cos(pi - m) (InsightFace keeps phi where cos > cos(pi - m))
        past = cy <= math.cos(math.pi - m)
        fallback = int(past.sum().item())
        target = torch.where(past, cy - m * math.sin(m), phi)
    elif margin == "am":
        target = cy - m
    else:
        raise SystemExit(f"unknown margin {margin}")
    logits = cos.scatter(1, y.view(-1, 1), target.view(-1, 1))
    loss = torch.nn.functional.cross_entropy(s * logits, y)
    loss.backward()
    return loss.item(), fallback, gap, x.grad, w.grad


def main():
    d, steps, classes, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    s, m, margin = float(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
    torch.set_default_dtype(torch.float64)
    w = torch.from_numpy(np.load(f"{d}/w.npy").astype(np.float64))
    if w.shape[0] != classes * k:
        raise SystemExit(f"w.npy has {w.shape[0]} rows, want {classes} x {k}")
    for i in range(1, steps + 1):
        x = torch.from_numpy(np.load(f"{d}/x{i}.npy").astype(np.float64))
        y = torch.from_numpy(np.load(f"{d}/y{i}.npy").astype(np.int64))
        loss, fallback, gap, dx, dw = step(x, w, y, classes, k, s, m, margin)
        np.save(f"{d}/out{i}.npy", np.array([loss, fallback, gap], dtype=np.float32))
        np.save(f"{d}/dx{i}.npy", dx.numpy().astype(np.float32))
        np.save(f"{d}/dw{i}.npy", dw.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
