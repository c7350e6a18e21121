"""The Vision Transformer's layers in PyTorch, for spec/vit_layers_spec.lua:
nn.LayerNorm, softmax over the last dim, ReLU6, and arcface_torch's ViT
multi-head self-attention (qkv Linear without bias, scaled dot product,
softmax over the keys, output projection), written here with torch's own
ops in float64; autograd gives the gradients.

usage: vit_torch.py DIR
DIR holds the inputs (float32 .npy):
  ln_x (... x D), ln_w, ln_b (D), ln_g (like ln_x), ln_eps.npy (1 value)
  sm_x, sm_g                       softmax input and output gradient
  r6_x, r6_g                       ReLU6 input and output gradient
  at_x (B x N x D), at_wqkv (3D x D), at_wproj (D x D), at_bproj (D),
  at_g (B x N x D), at_heads.npy (1 value)
and receives (float32 .npy) ln_y, ln_dx, ln_dw, ln_db; sm_y, sm_dx;
r6_y, r6_dx; at_y, at_dx, at_dwqkv, at_dwproj, at_dbproj.
"""
import sys

import numpy as np
import torch


def load(d, name):
    return torch.from_numpy(np.load(f"{d}/{name}.npy").astype(np.float64))


def leaf(t):
    return t.clone().requires_grad_(True)


def save(d, name, t):
    np.save(f"{d}/{name}.npy", t.detach().numpy().astype(np.float32))


def layernorm(d):
    x, w, b, g = leaf(load(d, "ln_x")), leaf(load(d, "ln_w")), leaf(load(d, "ln_b")), load(d, "ln_g")
    eps = float(load(d, "ln_eps").reshape(-1)[0])
    y = torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)
    y.backward(g)
    for n, t in (("ln_y", y), ("ln_dx", x.grad), ("ln_dw", w.grad), ("ln_db", b.grad)):
        save(d, n, t)


def elementwise(d, prefix, fn):
    x, g = leaf(load(d, prefix + "_x")), load(d, prefix + "_g")
    y = fn(x)
    y.backward(g)
    save(d, prefix + "_y", y)
    save(d, prefix + "_dx", x.grad)


def attention(d):
    x, g = leaf(load(d, "at_x")), load(d, "at_g")
    wqkv, wproj, bproj = leaf(load(d, "at_wqkv")), leaf(load(d, "at_wproj")), leaf(load(d, "at_bproj"))
    heads = int(load(d, "at_heads").reshape(-1)[0])
    b, n, dim = x.shape
    hd = dim // heads
    qkv = (x @ wqkv.t()).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    a = ((q @ k.transpose(-2, -1)) * hd ** -0.5).softmax(dim=-1)
    y = (a @ v).transpose(1, 2).reshape(b, n, dim) @ wproj.t() + bproj
    y.backward(g)
    for name, t in (("at_y", y), ("at_dx", x.grad), ("at_dwqkv", wqkv.grad), ("at_dwproj", wproj.grad),
                    ("at_dbproj", bproj.grad)):
        save(d, name, t)


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    d = sys.argv[1]
    layernorm(d)
    elementwise(d, "sm", lambda x: x.softmax(dim=-1))
    elementwise(d, "r6", torch.nn.functional.relu6)
    attention(d)


if __name__ == "__main__":
    main()
