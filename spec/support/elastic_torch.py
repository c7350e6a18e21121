"""ElasticFace (Boutros et al., 2022) in PyTorch, as its authors' code
formulates it, for spec/elastic_spec.lua: cosines clamped to [-1, 1]; the
target's angle plus the row's margin (elastic-arc: cos(acos(c) + m_i), no
fallback) or its cosine minus it (elastic-cos: c - m_i); logits times s; mean
cross-entropy; autograd for the gradients. The margins are facet's draws for
the step (mg<i>.npy), so the check is of everything but the drawing.

usage: elastic_torch.py STEPS S DIR:KIND [DIR:KIND ...]
(several cases in one process: torch is imported once). KIND is arc or cos;
each DIR holds w.npy (K x D) and x1.npy, y1.npy, mg1.npy, ...
(B x D float32, B int64, B float32); writes out1.npy = [loss], dx1.npy, dw1.npy
(float32, computed in float64) for each step.
"""
import sys

import numpy as np
import torch


def step(x, w, y, margins, kind, s):
    x = x.clone().requires_grad_(True)
    w = w.clone().requires_grad_(True)
    xn = torch.nn.functional.normalize(x, dim=1)
    wn = torch.nn.functional.normalize(w, dim=1)
    cos = (xn @ wn.t()).clamp(-1.0, 1.0)
    m_hot = torch.zeros_like(cos).scatter(1, y.view(-1, 1), margins.view(-1, 1))
    if kind == "arc":
        logits = torch.cos(torch.acos(cos) + m_hot)
    else:
        logits = cos - m_hot
    loss = torch.nn.functional.cross_entropy(s * logits, y)
    loss.backward()
    return loss.item(), x.grad, w.grad


def main():
    steps, s = int(sys.argv[1]), float(sys.argv[2])
    torch.set_default_dtype(torch.float64)
    for case in sys.argv[3:]:
        d, kind = case.rsplit(":", 1)
        run(d, kind, steps, s)


def run(d, kind, steps, s):
    w = torch.from_numpy(np.load(f"{d}/w.npy").astype(np.float64))
    for i in range(1, steps + 1):
        x = torch.from_numpy(np.load(f"{d}/x{i}.npy").astype(np.float64))
        y = torch.from_numpy(np.load(f"{d}/y{i}.npy").astype(np.int64))
        mg = torch.from_numpy(np.load(f"{d}/mg{i}.npy").astype(np.float64))
        loss, dx, dw = step(x, w, y, mg, kind, s)
        np.save(f"{d}/out{i}.npy", np.array([loss], dtype=np.float32))
        np.save(f"{d}/dx{i}.npy", dx.numpy().astype(np.float32))
        np.save(f"{d}/dw{i}.npy", dw.numpy().astype(np.float32))


if __name__ == "__main__":
    main()
