"""bench/torch_compare.py: the models of bench/train_step.lua in PyTorch
(MobileFaceNet, IResNet-18, the small convnet, with an AM-Softmax head over
1000 classes), timed for forward + backward + SGD with momentum, best of
--steps. Optional: needs Debian's python3-torch; never used by tests.
Prints one line per model: name and images/s.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--models", default="mobilefacenet,iresnet18,convnet")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)


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


def mobilefacenet(emb=512):
    layers = [conv_bn(3, 64, 3, 2, 1, 1, True), conv_bn(64, 64, 3, 1, 1, 64, True)]
    cin = 64
    for t, c, n, s in [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]:
        for i in range(n):
            layers.append(Bottleneck(cin, c, t, s if i == 0 else 1))
            cin = c
    layers += [conv_bn(128, 512, 1, 1, 0, 1, True), conv_bn(512, 512, 7, 1, 0, 512, False),
               conv_bn(512, emb, 1, 1, 0, 1, False), nn.Flatten()]
    return nn.Sequential(*layers)


class IRUnit(nn.Module):
    def __init__(self, cin, cout, s):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.PReLU(cout), nn.Conv2d(cout, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = None
        if s != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, s, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.body(x) + (x if self.short is None else self.short(x))


def iresnet18(emb=512):
    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)]
    cin = 64
    for c, n in [(64, 2), (128, 2), (256, 2), (512, 2)]:
        for i in range(n):
            layers.append(IRUnit(cin, c, 2 if i == 0 else 1))
            cin = c
    layers += [nn.BatchNorm2d(512), nn.Flatten(), nn.Linear(512 * 7 * 7, emb), nn.BatchNorm1d(emb)]
    return nn.Sequential(*layers)


def convnet(emb=128):
    return nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, emb), nn.BatchNorm1d(emb))


def am_loss(x, W, y, s=32.0, m=0.35):
    cos = F.linear(F.normalize(x), F.normalize(W)).clamp(-1, 1)
    logits = cos.scatter(1, y[:, None], cos.gather(1, y[:, None]) - m) * s
    return F.cross_entropy(logits, y)


SPECS = {"mobilefacenet": (mobilefacenet, 512, 32, 112, 3), "iresnet18": (iresnet18, 512, 32, 112, 3),
         "convnet": (convnet, 128, 128, 28, 1)}
for name in a.models.split(","):
    build, emb, batch, size, ch = SPECS[name]
    net = build()
    W = nn.Parameter(torch.randn(1000, emb) * 0.01)
    opt = torch.optim.SGD(list(net.parameters()) + [W], lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, ch, size, size)
    y = torch.arange(batch)
    best = float("inf")
    for r in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        am_loss(net(x), W, y).backward()
        opt.step()
        dt = time.perf_counter() - t0
        if r > 0:
            best = min(best, dt)
    print(f"{name} {batch / best:.1f}")
