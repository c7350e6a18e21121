"""CurricularFace (Huang et al., CVPR 2020) in PyTorch, as its authors'
reference code formulates it, for spec/heads_spec.lua: cosines clamped to
[-1, 1]; the target's cos(theta + m), replaced by c - m sin(m) once
c <= cos(pi - m); hard classes are those whose cosine beats cos(theta_y + m);
t moves to 0.01 * mean(c_y) + 0.99 * t (no gradient) before the hard
logits become c (t + c); logits times s; mean cross-entropy; autograd for
the gradients.

usage: curricular_torch.py DIR STEPS S M MOMENTUM T0
DIR holds w.npy (K x D) and x1.npy, y1.npy, ... (B x D float32, B int64);
writes out1.npy = [loss, t after the step], dx1.npy, dw1.npy (float32, computed in
float64) for each step
(the gradients of that step alone; W does not change between steps).
"""
import math
import sys

import numpy as np
import torch


def step(x, w, y, t, s, m, momentum):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    xn = torch.nn.functional.normalize(x, dim=1)
    wn = torch.nn.functional.normalize(w, dim=1)
    cos = (xn @ wn.t()).clamp(-1.0, 1.0)
    rows = torch.arange(x.shape[0])
    cy = cos[rows, y].view(-1, 1)
    sin_y = torch.sqrt(1.0 - cy * cy)
    cy_m = cy * math.cos(m) - sin_y * math.sin(m)
    hard = cos > cy_m
    target = torch.where(cy > math.cos(math.pi - m), cy_m, cy - m * math.sin(m))
    with torch.no_grad():
        t = cy.mean().item() * momentum + (1.0 - momentum) * t
    logits = torch.where(hard, cos * (t + cos), cos)
    logits = logits.scatter(1, y.view(-1, 1), target)
    loss = torch.nn.functional.cross_entropy(s * logits, y)
    loss.backward()
    return loss.item(), t, x.grad, w.grad


def main():
    d, steps = sys.argv[1], int(sys.argv[2])
    s, m, momentum, t = (float(v) for v in sys.argv[3:7])
    torch.set_default_dtype(torch.float64)
    w = torch.from_numpy(np.load(f"{d}/w.npy").astype(np.float64))
    for i in range(1, steps + 1):
        x = torch.from_numpy(np.load(f"{d}/x{i}.npy").astype(np.float64))
        y = torch.from_numpy(np.load(f"{d}/y{i}.npy").astype(np.int64))
        loss, t, dx, dw = step(x, w, y, t, s, m, momentum)
        np.save(f"{d}/out{i}.npy", np.array([loss, t], dtype=np.float32))
        np.save(f"{d}/dx{i}.npy", dx.numpy().astype(np.float32))
        np.save(f"{d}/dw{i}.npy", dw.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
