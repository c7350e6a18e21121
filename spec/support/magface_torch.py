"""MagFace (Meng et al., CVPR 2021) in PyTorch, as its authors' reference code
formulates it, for spec/heads_spec.lua: the embedding's norm a, clamped to
[l_a, u_a] (with its gradient), sets the row's margin
m = l_m + (u_m - l_m) (a - l_a) / (u_a - l_a); the target's cosine becomes
cos(theta + m), or c - m sin(m) once c <= cos(pi - m); logits times s; the
loss is the mean cross-entropy plus lambda_g times the mean of
g(a) = 1 / a + a / u_a^2; autograd for the gradients. EASY 1: easy_margin,
as the authors train (no margin where c <= 0); 0: the threshold fallback.

usage: magface_torch.py DIR STEPS S L_A U_A L_M U_M LAMBDA_G EASY
DIR holds w.npy (K x D) and x1.npy, y1.npy, ... (B x D float32, B int64);
writes out1.npy = [loss], dx1.npy, dw1.npy (float32, computed in float64)
for each step (W does not change between steps).
"""
import math
import sys

import numpy as np
import torch


def step(x, w, y, s, l_a, u_a, l_m, u_m, lambda_g, easy):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    a = torch.norm(x, dim=1, keepdim=True).clamp(l_a, u_a)
    m = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    cos = (torch.nn.functional.normalize(x) @ torch.nn.functional.normalize(w, dim=1).t()).clamp(-1, 1)
    sin = torch.sqrt(1.0 - cos * cos)
    cos_m = cos * torch.cos(m) - sin * torch.sin(m)
    if easy:
        cos_m = torch.where(cos > 0, cos_m, cos)
    else:
        cos_m = torch.where(cos > torch.cos(math.pi - m), cos_m, cos - torch.sin(math.pi - m) * m)
    onehot = torch.zeros_like(cos).scatter_(1, y.view(-1, 1), 1.0)
    logits = s * (onehot * cos_m + (1.0 - onehot) * cos)
    g = 1.0 / (u_a ** 2) * a + 1.0 / a
    loss = torch.nn.functional.cross_entropy(logits, y) + lambda_g * g.mean()
    loss.backward()
    return loss.item(), x.grad, w.grad


def main():
    d, steps = sys.argv[1], int(sys.argv[2])
    s, l_a, u_a, l_m, u_m, lambda_g = (float(v) for v in sys.argv[3:9])
    easy = sys.argv[9] == "1"
    torch.set_default_dtype(torch.float64)
    w = torch.from_numpy(np.load(f"{d}/w.npy").astype(np.float64))
    for i in range(1, steps + 1):
        x = torch.from_numpy(np.load(f"{d}/x{i}.npy").astype(np.float64))
        y = torch.from_numpy(np.load(f"{d}/y{i}.npy").astype(np.int64))
        loss, dx, dw = step(x, w, y, s, l_a, u_a, l_m, u_m, lambda_g, easy)
        np.save(f"{d}/out{i}.npy", np.array([loss], dtype=np.float32))
        np.save(f"{d}/dx{i}.npy", dx.numpy().astype(np.float32))
        np.save(f"{d}/dw{i}.npy", dw.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
