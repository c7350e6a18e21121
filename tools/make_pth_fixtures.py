#!/usr/bin/python3
"""make_pth_fixtures.py: PyTorch fixtures for facet's .pth reader and writer.

Our own PyTorch modules with arcface_torch's module names and layer order
(iresnet18, get_mbf's MobileFaceNet and backbones/vit.py's VisionTransformer:
"vit" is a small one, dim 64, depth 2, 8 heads, on 112 x 112), written
independently of facet.

  make_pth_fixtures.py make OUTDIR
      OUTDIR/input.npy (2 x 3 x 112 x 112), and for each model M (iresnet18,
      mbf): M.pth (torch.save of the state_dict, random weights and BN
      statistics from a fixed seed), M_out.npy (its eval-mode embeddings of
      the input), M_keys.txt ("name dtype shape" lines in state_dict order)
      (M: iresnet18, mbf, vit);
      hostile files: hostile_system.pth (a posix.system global),
      hostile_short.pth (a storage shorter than its tensor), hostile_huge.pth
      (a 2^40 x 2^40 tensor), hostile_truncated.pth (half a valid file); and
      wrapped.pth ({"state_dict": {"module." + name: ...}, "epoch": 3} of mbf);
      dtypes.pth (a plain dict of float64, float16, bfloat16, int32, bool,
      int64 scalar, transposed, sliced and storage-sharing tensors) and
      legacy.pth (the same in the format of PyTorch < 1.6).
  make_pth_fixtures.py keys OUTDIR
      only OUTDIR/M_keys.txt, without building the weights' files.
  make_pth_fixtures.py count VARIANT
      prints the parameter count of arcface_torch's VARIANT (vit_t, vit_s,
      vit_b, vit_l_dp005_mask_005) built by the port here, at emb 512.
  make_pth_fixtures.py run M FILE INPUT OUT
      loads FILE (.pth with torch.load, .safetensors parsed here) into M with
      load_state_dict(strict=True) and writes its eval-mode embeddings of INPUT.
"""
import io
import json
import os
import pickle
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np
import torch
from torch import nn


class IBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x):
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    def __init__(self, layers, emb=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (c, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(IBlock(cin, c, 2 if j == 0 else 1))
                cin = c
            setattr(self, "layer%d" % (i + 1), nn.Sequential(*blocks))
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0, inplace=True)
        self.fc = nn.Linear(512 * 7 * 7, emb)
        self.features = nn.BatchNorm1d(emb, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


class Holder(nn.Module):
    """A block whose layers sit in .layers (arcface_torch's ConvBlock, LinearBlock, GDC)."""
    def __init__(self, *mods):
        super().__init__()
        self.layers = nn.Sequential(*mods)

    def forward(self, x):
        return self.layers(x)


def conv_block(cin, cout, k, s, p, groups=1, act=True):
    mods = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        mods.append(nn.PReLU(cout))
    return Holder(*mods)


class DepthWise(nn.Module):
    def __init__(self, cin, cout, residual, stride, groups):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(conv_block(cin, groups, 1, 1, 0), conv_block(groups, groups, 3, stride, 1, groups),
                                    conv_block(groups, cout, 1, 1, 0, act=False))

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.size(0), -1)


class MBF(nn.Module):
    def __init__(self, emb=512, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        c1, c2 = 64 * scale, 128 * scale

        def stack(c, n, groups):
            return Holder(*[DepthWise(c, c, True, 1, groups) for _ in range(n)])
        self.layers = nn.ModuleList([
            conv_block(3, c1, 3, 2, 1),
            conv_block(c1, c1, 3, 1, 1, groups=64) if blocks[0] == 1 else stack(c1, blocks[0], 128),
            DepthWise(c1, c1, False, 2, 128), stack(c1, blocks[1], 128),
            DepthWise(c1, c2, False, 2, 256), stack(c2, blocks[2], 256),
            DepthWise(c2, c2, False, 2, 512), stack(c2, blocks[3], 256)])
        self.conv_sep = conv_block(c2, 512, 1, 1, 0)
        # arcface_torch's GDC holds a LinearBlock (conv + BN in its own .layers) first
        lin = conv_block(512, 512, 7, 1, 0, groups=512, act=False)
        self.features = Holder(lin, Flatten(), nn.Linear(512, emb, bias=False), nn.BatchNorm1d(emb))

    def forward(self, x):
        for m in self.layers:
            x = m(x)
        return self.features(self.conv_sep(x))


class VitAttention(nn.Module):
    """arcface_torch's Attention: qkv without bias, softmax(q k^T / sqrt(d)) v, proj."""
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).view(b, n, 3, h, d // h).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(2, 3) / (d // h) ** 0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class VitMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = VitAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = VitMlp(dim, dim * 4)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VitPatches(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    """The evaluation path of arcface_torch's VisionTransformer (no masking, no drop path)."""
    def __init__(self, dim, depth, heads=8, emb=512, size=112, patch=9):
        super().__init__()
        tokens = (size // patch) ** 2
        self.patch_embed = VitPatches(dim, patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.ModuleList([VitBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.feature = nn.Sequential(nn.Linear(dim * tokens, dim, bias=False), nn.BatchNorm1d(dim, eps=2e-5),
                                     nn.Linear(dim, emb, bias=False), nn.BatchNorm1d(emb, eps=2e-5))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.feature(self.norm(x).flatten(1))


VIT_SIZES = {"vit": (64, 2), "vit_t": (256, 12), "vit_s": (512, 12), "vit_b": (512, 24),
             "vit_l_dp005_mask_005": (768, 24)}


def build(name):
    if name in VIT_SIZES:
        return ViT(*VIT_SIZES[name])
    return IResNet((2, 2, 2, 2)) if name == "iresnet18" else MBF()


def randomize(model, seed):
    """Random weights and BN statistics, so eval mode uses every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() <= 1:   # BN affine, biases, PReLU slopes
                base = 1.0 if name.endswith("weight") and not _is_prelu(model, name) else 0.0
                t.copy_(base + torch.randn(t.shape, generator=g) * 0.1)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / fan_in) ** 0.5)


def _is_prelu(model, name):
    mod = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(mod, nn.PReLU)


def embed(model, x):
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def zip_with(src, dst, replace):
    """Copies the zip src to dst with entries ending in a key of replace swapped for its bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info.filename, data)


class System:
    def __reduce__(self):
        return (os.system, ("true",))


def write_keys(path, sd):
    with open(path, "w") as f:
        for k, t in sd.items():
            f.write("%s %s %s\n" % (k, str(t.dtype).replace("torch.", ""), "x".join(map(str, t.shape)) or "scalar"))


def keys(out):
    for name in ("iresnet18", "mbf", "vit"):
        write_keys(os.path.join(out, name + "_keys.txt"), build(name).state_dict())


def make(out):
    os.makedirs(out, exist_ok=True)
    x = np.random.RandomState(5).randn(2, 3, 112, 112).astype(np.float32)
    np.save(os.path.join(out, "input.npy"), x)
    for seed, name in enumerate(("iresnet18", "mbf", "vit")):
        torch.manual_seed(seed)
        m = build(name)
        randomize(m, seed + 1)
        sd = m.state_dict()
        torch.save(sd, os.path.join(out, name + ".pth"))
        np.save(os.path.join(out, name + "_out.npy"), embed(m, x))
        write_keys(os.path.join(out, name + "_keys.txt"), sd)
        if name == "mbf":
            wrapped = {"state_dict": OrderedDict(("module." + k, v) for k, v in sd.items()), "epoch": 3}
            torch.save(wrapped, os.path.join(out, "wrapped.pth"))
    base = torch.arange(4.0)
    mixed = {
        "d64": torch.arange(6, dtype=torch.float64).reshape(2, 3) * 0.5,
        "h16": torch.tensor([1.0, -2.5, 65504.0, 2.0 ** -24], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -3.0, 0.15625], dtype=torch.bfloat16),
        "i32": torch.tensor([1, -2, 3], dtype=torch.int32),
        "flags": torch.tensor([True, False, True]),
        "count": torch.tensor(7),
        "t": torch.arange(6.0).reshape(2, 3).t(),
        "slice": torch.arange(10.0)[4:7],
        "a": base, "a2": base.view(2, 2),
    }
    torch.save(mixed, os.path.join(out, "dtypes.pth"))
    torch.save(mixed, os.path.join(out, "legacy.pth"), _use_new_zipfile_serialization=False)
    small = os.path.join(out, "small.pth")
    torch.save(OrderedDict(w=torch.arange(6, dtype=torch.float32).reshape(2, 3)), small)
    torch.save({"w": System()}, os.path.join(out, "hostile_system.pth"))
    zip_with(small, os.path.join(out, "hostile_short.pth"), {"/data/0": b"\0" * 8})
    # a 2^40 x 2^40 tensor over the 6-element storage
    with zipfile.ZipFile(small) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
        data = z.read(pkl)
    huge = data.replace(struct.pack("<BB", ord("K"), 2) + struct.pack("<BB", ord("K"), 3),
                        b"\x8a\x06" + (2 ** 40).to_bytes(6, "little") * 1 + b"\x8a\x06" + (2 ** 40).to_bytes(6, "little"))
    assert huge != data, "the shape (2, 3) was not found in data.pkl"
    zip_with(small, os.path.join(out, "hostile_huge.pth"), {"data.pkl": huge})
    with open(small, "rb") as f:
        whole = f.read()
    with open(os.path.join(out, "hostile_truncated.pth"), "wb") as f:
        f.write(whole[: len(whole) // 2])


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    kinds = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "U8": np.uint8}
    out = OrderedDict()
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        arr = np.frombuffer(data[8 + n + b:8 + n + e], dtype=kinds[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out


def run(name, path, inp, out):
    m = build(name)
    sd = read_safetensors(path) if path.endswith(".safetensors") else torch.load(path)
    m.load_state_dict(sd, strict=True)
    np.save(out, embed(m, np.load(inp)))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("make", "keys"):
        (make if sys.argv[1] == "make" else keys)(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "count" and sys.argv[2] in VIT_SIZES:
        print(sum(p.numel() for p in build(sys.argv[2]).parameters()))
    elif len(sys.argv) == 6 and sys.argv[1] == "run":
        run(*sys.argv[2:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
