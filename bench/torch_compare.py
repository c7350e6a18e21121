"""bench/torch_compare.py: the models of bench/train_step.lua in PyTorch
(MobileFaceNet, IResNet-18 and IResNet-50 in arcface_torch's layout, the small
convnet, arcface_torch's ViT-T (vit_t: patch 9, dim 256, depth 12, 8 heads,
token masking 0.1, drop path 0.1), with an AM-Softmax head over 1000 classes), timed for forward +
backward + SGD with momentum. Optional; never used by tests.
  --device cpu (default): Debian's python3-torch; best of --steps after
  --warmup steps, on --threads threads; batch and size per model as in
  train_step.lua unless --batch / --size say otherwise.
  --device cuda: a PyTorch with CUDA; fp32 (TF32 off for matmuls and cuDNN
  unless --tf32 1),
  torch.backends.cudnn.benchmark = True; each step copies the batch from
  (pageable) host memory to the card, as bench/train_step.lua does; --warmup
  steps, then the mean of --steps steps timed between torch.cuda.synchronize()
  calls; batch 128 unless --batch says otherwise.
  --precision fp32,fp16,bf16 (default fp32): each model in each precision in
  turn; fp16 and bf16 are PyTorch AMP as arcface_torch uses it: the model's
  forward under torch.autocast(dtype=float16 / bfloat16) but for its last
  layers (FP32_TAIL: fc and features, conv_sep and GDC, as arcface_torch and
  facet's models), which run in float32 with the head's loss outside autocast,
  float32 parameters; fp16 with a GradScaler (scale, step, update), bf16 with
  none. A precision this PyTorch cannot run on the device (float16 autocast or
  GradScaler on an old PyTorch's CPU), or a model whose first step fails in
  it (PyTorch 1.13 has no bfloat16 ReLU6 backward on the CPU: vit_t bf16),
  prints a '#' line saying so, no figure.
Prints a few lines starting with '#' (versions, device), then one line per
model and precision: name, precision and images/s. Exits 3 when --device cuda
finds no CUDA in PyTorch.
"""
import argparse
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--batch", type=int, default=None)
p.add_argument("--size", type=int, default=None)
p.add_argument("--models", default="mobilefacenet,iresnet18,convnet")
p.add_argument("--precision", default="fp32")
p.add_argument("--tf32", type=int, default=0, choices=[0, 1])
a = p.parse_args()
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
precisions = a.precision.split(",")
for prec in precisions:
    if prec not in DTYPES:
        p.error(f"--precision: unknown '{prec}' (known: fp32, fp16, bf16)")
torch.set_num_threads(a.threads)
torch.manual_seed(0)
gpu = a.device == "cuda"
if gpu:
    if not torch.cuda.is_available():
        print(f"# torch {torch.__version__}: no CUDA device (torch.cuda.is_available() is False)")
        sys.exit(3)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = bool(a.tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(a.tf32)
    dev = torch.device("cuda")
    print(f"# torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"{torch.cuda.get_device_name(0)}; fp32 (TF32 {'on' if a.tf32 else 'off'}), cudnn.benchmark; "
          f"{a.precision}")
else:
    dev = torch.device("cpu")
    print(f"# torch {torch.__version__}, CPU, {a.threads} threads; {a.precision}")
sys.stdout.flush()


def conv_bn(cin, cout, k, s, p, g, act):
    layers = [nn.Conv2d(cin, cout, k, s, p, groups=g, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.PReLU(cout))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, t, s):
        super().__init__()
        mid = cin * t
        self.res = s == 1 and cin == cout
        self.body = nn.Sequential(conv_bn(cin, mid, 1, 1, 0, 1, True), conv_bn(mid, mid, 3, s, 1, mid, True),
                                  conv_bn(mid, cout, 1, 1, 0, 1, False))

    def forward(self, x):
        return x + self.body(x) if self.res else self.body(x)


def mobilefacenet(emb=512, size=112):
    layers = [conv_bn(3, 64, 3, 2, 1, 1, True), conv_bn(64, 64, 3, 1, 1, 64, True)]
    cin = 64
    for t, c, n, s in [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]:
        for i in range(n):
            layers.append(Bottleneck(cin, c, t, s if i == 0 else 1))
            cin = c
    g = size // 16
    layers += [conv_bn(128, 512, 1, 1, 0, 1, True), conv_bn(512, 512, g, 1, 0, 512, False),
               conv_bn(512, emb, 1, 1, 0, 1, False), nn.Flatten()]
    return nn.Sequential(*layers)


class IRUnit(nn.Module):
    """arcface_torch's IBasicBlock: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN, with a
    conv1x1(stride)-BN downsample when the shape changes."""

    def __init__(self, cin, cout, s):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.PReLU(cout), nn.Conv2d(cout, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = None
        if s != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, s, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.body(x) + (x if self.short is None else self.short(x))


def iresnet(layers, emb=512, size=112):
    """arcface_torch's IResNet (backbones/iresnet.py) without fp16: conv3x3-BN-PReLU
    stem, four stages of 64/128/256/512 channels each starting with stride 2,
    BN, dropout (p = 0, left out), flatten, FC to the embedding, BatchNorm1d."""
    stem = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)]
    units = []
    cin = 64
    for c, n in zip([64, 128, 256, 512], layers):
        for i in range(n):
            units.append(IRUnit(cin, c, 2 if i == 0 else 1))
            cin = c
    s = size // 16
    tail = [nn.BatchNorm2d(512), nn.Flatten(), nn.Linear(512 * s * s, emb), nn.BatchNorm1d(emb)]
    return nn.Sequential(*stem, *units, *tail)


def convnet(emb=128, size=28):
    return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, emb), nn.BatchNorm1d(emb))


class VitBlock(nn.Module):
    """A pre-norm ViT block (arcface_torch's vit.py: ReLU6 MLP, qkv without bias, drop path)."""
    def __init__(self, dim, heads, drop_path):
        super().__init__()
        self.heads, self.dp = heads, drop_path
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU6(), nn.Linear(4 * dim, dim))

    def drop(self, x):
        if not self.training or self.dp == 0:
            return x
        keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= self.dp).to(x.dtype)
        return x * keep / (1 - self.dp)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        with torch.autocast(x.device.type, enabled=False):   # the attention in float32, as arcface_torch
            a = (q.float() @ k.float().transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
            h = (a @ v.float()).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.proj(h))
        return x + self.drop(self.mlp(self.norm2(x)))


class VitTokens(nn.Module):
    """Patch embedding, position embedding and the random token masking (kept tokens, restore indices)."""
    def __init__(self, dim, size, mask_ratio):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 9, 9)
        self.n = (size // 9) ** 2
        self.pos = nn.Parameter(torch.zeros(1, self.n, dim))
        self.keep = int(self.n * (1 - mask_ratio))

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2) + self.pos
        if not self.training or self.keep == self.n:
            return x, None
        order = torch.rand(x.shape[0], self.n, device=x.device).argsort(1)
        kept = x.gather(1, order[:, :self.keep, None].expand(-1, -1, x.shape[2]))
        return kept, order.argsort(1)


class VitBody(nn.Module):
    def __init__(self, dim, depth, size, mask_ratio, drop_path):
        super().__init__()
        self.tokens = VitTokens(dim, size, mask_ratio)
        self.blocks = nn.Sequential(*[VitBlock(dim, 8, drop_path * i / (depth - 1)) for i in range(depth)])

    def forward(self, x):
        x, restore = self.tokens(x)
        return self.blocks(x), restore


class VitNorm(nn.Module):
    """The final norm in float32, mask tokens back in place, flattened."""
    def __init__(self, dim, n):
        super().__init__()
        self.norm, self.n = nn.LayerNorm(dim), n
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, xr):
        x, restore = xr
        x = self.norm(x.float())
        if restore is not None:
            fill = self.mask_token.expand(x.shape[0], self.n - x.shape[1], -1)
            x = torch.cat([x, fill], 1).gather(1, restore[:, :, None].expand(-1, -1, x.shape[2]))
        return x.flatten(1)


def vit_t(emb=512, size=112, dim=256, depth=12):
    n = (size // 9) ** 2
    return nn.Sequential(VitBody(dim, depth, size, 0.1, 0.1), VitNorm(dim, n), nn.Linear(n * dim, dim, bias=False),
                         nn.BatchNorm1d(dim, eps=2e-5), nn.Linear(dim, emb, bias=False),
                         nn.BatchNorm1d(emb, eps=2e-5))


def am_loss(x, W, y, s=32.0, m=0.35):
    cos = F.linear(F.normalize(x), F.normalize(W)).clamp(-1, 1)
    logits = cos.scatter(1, y[:, None], cos.gather(1, y[:, None]) - m) * s
    return F.cross_entropy(logits, y)


# name: build(emb, size), embedding, CPU batch, size, channels, size fixed
SPECS = {"mobilefacenet": (mobilefacenet, 512, 32, 112, 3, False),
         "iresnet18": (lambda e, s: iresnet([2, 2, 2, 2], e, s), 512, 32, 112, 3, False),
         "iresnet50": (lambda e, s: iresnet([3, 4, 14, 3], e, s), 512, 32, 112, 3, False),
         "convnet": (convnet, 128, 128, 28, 1, True),
         "vit_t": (vit_t, 512, 8, 112, 3, False)}
# the last modules of each model that run in float32 outside autocast under AMP,
# as arcface_torch runs fc and features (iresnet) and conv_sep and the GDC
# (mobilefacenet), and as facet's models mark them (Module:set_fp32)
FP32_TAIL = {"mobilefacenet": 4, "iresnet18": 2, "iresnet50": 2, "convnet": 2, "vit_t": 5}


def sync():
    if gpu:
        torch.cuda.synchronize()


def grad_scaler():
    """PyTorch's GradScaler for the device, or None where this PyTorch has none."""
    if hasattr(torch, "amp") and hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(dev.type)
    if gpu:
        return torch.cuda.amp.GradScaler()
    return None


def why_not(prec):
    """None when AMP in prec runs on the device here, else why not."""
    dtype = DTYPES[prec]
    if dtype is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = torch.randn(4, 4, device=dev)
        try:
            with torch.autocast(dev.type, dtype=dtype):
                got = F.linear(w, w).dtype
        except RuntimeError as e:
            return f"torch.autocast({dev.type!r}, dtype={dtype}): {str(e).splitlines()[0]}"
        if got != dtype:
            return f"torch.autocast({dev.type!r}, dtype={dtype}) does not run in {dtype} here (got {got})"
        if prec == "fp16" and grad_scaler() is None:
            return f"no GradScaler for {dev.type} in torch {torch.__version__}"
    return None


for name in a.models.split(","):
    build, emb, batch, size, ch, fixed = SPECS[name]
    batch = a.batch or (128 if gpu else batch)
    if a.size and not fixed:
        size = a.size
    for prec in precisions:
        reason = why_not(prec)
        if reason:
            print(f"# {name} {prec}: no figure: {reason}")
            continue
        torch.manual_seed(0)
        net = build(emb, size).to(dev)
        body, tail = net[:-FP32_TAIL[name]], net[-FP32_TAIL[name]:]
        W = nn.Parameter(torch.randn(1000, emb, device=dev) * 0.01)
        opt = torch.optim.SGD(list(net.parameters()) + [W], lr=0.01, momentum=0.9, weight_decay=5e-4)
        x_host = torch.randn(batch, ch, size, size)
        y_host = torch.arange(batch) % 1000
        dtype = DTYPES[prec]
        scaler = grad_scaler() if prec == "fp16" else None

        def step():
            x, y = x_host.to(dev), y_host.to(dev)
            opt.zero_grad()
            if dtype is None:
                am_loss(net(x), W, y).backward()
                opt.step()
                return
            with torch.autocast(dev.type, dtype=dtype):
                h = body(x)
            e = tail(h if isinstance(h, tuple) else h.float())   # the embedding's last layers in float32
            loss = am_loss(e, W, y)              # the head in float32, outside autocast
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

        try:
            step()   # a first step: an op this PyTorch lacks in the dtype (CPU bf16 ReLU6 backward) stops here
        except RuntimeError as err:
            print(f"# {name} {prec}: no figure: {str(err).splitlines()[0]}")
            continue
        for _ in range(a.warmup):
            step()
        if gpu:
            sync()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                step()
            sync()
            per_step = (time.perf_counter() - t0) / a.steps
        else:
            per_step = float("inf")
            for _ in range(a.steps):
                t0 = time.perf_counter()
                step()
                per_step = min(per_step, time.perf_counter() - t0)
        print(f"{name} {prec} {batch / per_step:.1f}")
        sys.stdout.flush()
        del net, W, opt, scaler
        if gpu:
            torch.cuda.empty_cache()
