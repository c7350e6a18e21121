"""AdaFace (Kim et al., CVPR 2022) in PyTorch, as its authors' reference
code formulates it, for spec/heads_spec.lua: the embedding's norm, clamped
to [0.001, 100] and detached, moves the running mean and (unbiased) std
(momentum: the weight of the batch) before each row's z = clamp(h (norm -
mean) / (std + 1e-3), -1, 1); every cosine clamped to [-1 + 1e-3, 1 - 1e-3];
the target's angle moves by -m z, every angle clamped to [1e-3, pi - 1e-3],
and the target's cosine drops by m + m z; logits times s; mean cross-entropy;
autograd for the gradients.

usage: adaface_torch.py DIR STEPS S M H MOMENTUM
DIR holds w.npy (K x D) and x1.npy, y1.npy, ... (B x D float32, B int64);
writes out1.npy = [loss, mean, std after the step], dx1.npy, dw1.npy
(float32, computed in float64) for each step (W does not change between steps).
"""
import math
import sys

import numpy as np
import torch

EPS = 1e-3


def step(x, w, y, stats, s, m, h, momentum):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    norms = torch.norm(x, 2, 1, True)
    emb = x / norms
    cos = (emb @ torch.nn.functional.normalize(w, dim=1).t()).clamp(-1 + EPS, 1 - EPS)
    safe = norms.clamp(0.001, 100).detach()
    with torch.no_grad():
        stats[0] = safe.mean().item() * momentum + (1 - momentum) * stats[0]
        stats[1] = safe.std().item() * momentum + (1 - momentum) * stats[1]
    z = ((safe - stats[0]) / (stats[1] + EPS) * h).clamp(-1, 1)
    onehot = torch.zeros_like(cos).scatter_(1, y.view(-1, 1), 1.0)
    theta = cos.acos() + onehot * (-m * z)
    cos = theta.clamp(EPS, math.pi - EPS).cos() - onehot * (m + m * z)
    loss = torch.nn.functional.cross_entropy(s * cos, y)
    loss.backward()
    return loss.item(), x.grad, w.grad


def main():
    d, steps = sys.argv[1], int(sys.argv[2])
    s, m, h, momentum = (float(v) for v in sys.argv[3:7])
    torch.set_default_dtype(torch.float64)
    w = torch.from_numpy(np.load(f"{d}/w.npy").astype(np.float64))
    stats = [20.0, 100.0]      # the authors' initial batch_mean and batch_std
    for i in range(1, steps + 1):
        x = torch.from_numpy(np.load(f"{d}/x{i}.npy").astype(np.float64))
        y = torch.from_numpy(np.load(f"{d}/y{i}.npy").astype(np.int64))
        loss, dx, dw = step(x, w, y, stats, s, m, h, momentum)
        np.save(f"{d}/out{i}.npy", np.array([loss, stats[0], stats[1]], dtype=np.float32))
        np.save(f"{d}/dx{i}.npy", dx.numpy().astype(np.float32))
        np.save(f"{d}/dw{i}.npy", dw.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
