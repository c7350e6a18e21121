"""bench/contention_torch.py: the PyTorch side of bench/contention.lua. One
training step of the small convnet of bench/train_step.lua (the same layout as
facet.models.convnet and bench/torch_compare.py: conv-BN-ReLU-pool twice, 32
and 64 channels, a linear embedding of 128 and BatchNorm1d; an AM-Softmax head
over 1000 classes; SGD with momentum and weight decay), 28 x 28, one channel,
run for --seconds after 2 warm-up steps on --threads threads. Prints
`img/s X`: the throughput over all timed steps (not the best step, which hides
what contention costs). Optional: needs Debian's python3-torch; never used by
tests.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--seconds", type=float, default=2.0)
p.add_argument("--batch", type=int, default=128)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)

net = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.BatchNorm1d(128))
W = nn.Parameter(torch.randn(1000, 128) * 0.01)
opt = torch.optim.SGD(list(net.parameters()) + [W], lr=0.01, momentum=0.9, weight_decay=5e-4)
x = torch.randn(a.batch, 1, 28, 28)
y = torch.arange(a.batch) % 1000


def am_loss(e, W, y, s=32.0, m=0.35):
    cos = F.linear(F.normalize(e), F.normalize(W)).clamp(-1, 1)
    logits = cos.scatter(1, y[:, None], cos.gather(1, y[:, None]) - m) * s
    return F.cross_entropy(logits, y)


def step():
    opt.zero_grad()
    am_loss(net(x), W, y).backward()
    opt.step()


step()
step()
t0, c0, n = time.perf_counter(), time.process_time(), 0
while True:
    step()
    n += 1
    if n >= 3 and time.perf_counter() - t0 >= a.seconds:
        break
wall = time.perf_counter() - t0
print(f"img/s {a.batch * n / wall:.2f} cores {(time.process_time() - c0) / wall:.2f}")
