"""bench/eval_scale_torch.py: the cases of bench/eval_scale.lua written the
way a PyTorch user writes them, on the CPU with --threads threads (Debian's
torch 1.13: run with /usr/bin/python3). One case per process; prints one line
"result CASE N time_s T peak_mb M data_mb D ..." (peak: VmHWM; data: VmRSS
once the data were drawn, in place).
  identify N  3,530 probes of 80 identities (d = 512) against N distractors:
              blocked mm (probes x 64 Mi-float blocks, as facet), topk(10) of each
              block merged with the running topk, then each trial
              (probe, other image of its identity) ranked among the distractors
              (its score read from probes @ probes.T)
  verify      10^6 genuine + 10^7 impostor scores: torch.sort, TAR at FAR by
              searchsorted
  all N       every pair of N images (N/10 identities): row blocks of mm, the
              genuine scores kept, a running topk of impostor scores
              (k = floor(0.1 n_impostor) + 1, merged when the buffer doubles)
Usage: /usr/bin/python3 bench/eval_scale_torch.py --case identify --n 100000 [--threads 2]
"""
import argparse
import math
import time

import torch

p = argparse.ArgumentParser()
p.add_argument("--case", required=True, choices=["identify", "verify", "all"])
p.add_argument("--n", type=int, default=0)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
P, IDS, DIM = 3530, 80, 512


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def normalize_(x):
    x.div_(x.norm(dim=1, keepdim=True).clamp_min_(1e-12))
    return x


def tar_at_far(gen_sorted, imp_desc, n_imp, fars):
    out = {}
    for f in fars:
        if n_imp < 1 / f:
            out[f] = None
            continue
        m = int(math.floor(f * n_imp))
        while m < n_imp and (m + 1) / n_imp <= f:
            m += 1
        while m > 0 and m / n_imp > f:
            m -= 1
        if m >= n_imp:
            out[f] = 1.0
            continue
        v = imp_desc[m]
        out[f] = (len(gen_sorted) - int(torch.searchsorted(gen_sorted, v, right=True))) / len(gen_sorted)
    return out


with torch.no_grad():
    if a.case == "identify":
        centres = normalize_(torch.randn(IDS, DIM))
        labels = torch.arange(P) % IDS
        probes = normalize_(centres[labels] + torch.randn(P, DIM) * (2.0 / math.sqrt(DIM)))
        dis = normalize_(torch.randn(a.n, DIM))
        data = status("VmRSS")
        t0 = time.perf_counter()
        K = 10
        block = max(1, (64 * 1024 * 1024) // P)
        top = torch.full((P, K), -math.inf)
        for g0 in range(0, a.n, block):
            s = probes @ dis[g0:g0 + block].T
            bt = torch.topk(s, min(K, s.shape[1]), dim=1).values
            top = torch.topk(torch.cat([top, bt], 1), K, dim=1).values
            del s, bt
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        pi, pj = same.nonzero(as_tuple=True)
        ts = (probes @ probes.T)[pi, pj]
        ranks = (top[pi] > ts[:, None]).sum(1)
        rank1 = (ranks < 1).double().mean().item()
        rank10 = (ranks < 10).double().mean().item()
        t = time.perf_counter() - t0
        res = "rank1 %.4f rank10 %.4f trials %d" % (rank1, rank10, len(ts))
    elif a.case == "verify":
        ng, ni = 1000000, 10000000
        s = torch.randn(ng + ni)
        s[:ng] += 2.5
        same = torch.zeros(ng + ni, dtype=torch.bool)
        same[:ng] = True
        data = status("VmRSS")
        t0 = time.perf_counter()
        gen = torch.sort(s[same]).values
        imp = torch.sort(s[~same], descending=True).values
        tar = tar_at_far(gen, imp, ni, [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7])
        t = time.perf_counter() - t0
        res = "TAR@1e-3 %.6f TAR@1e-6 %.6f" % (tar[1e-3], tar[1e-6])
    else:
        n, per = a.n, 10
        c = normalize_(torch.randn(n // per, DIM))
        labels = torch.arange(n) % (n // per)
        x = normalize_(c[labels] + torch.randn(n, DIM) * (2.0 / math.sqrt(DIM)))
        data = status("VmRSS")
        t0 = time.perf_counter()
        n_pairs = n * (n - 1) // 2
        n_gen = per * (per - 1) // 2 * (n // per)
        n_imp = n_pairs - n_gen
        keep = min(n_imp, int(math.floor(0.1 * n_imp)) + 1)
        gens, buf, held = [], [], 0
        kept = torch.empty(0)
        bs = 1024
        for i0 in range(0, n, bs):
            s = x[i0:i0 + bs] @ x[i0:].T
            rows = torch.arange(i0, min(i0 + bs, n))
            upper = torch.arange(i0, n)[None, :] > rows[:, None]
            g = (labels[rows][:, None] == labels[i0:][None, :]) & upper
            gens.append(s[g])
            imp = s[upper & ~g]
            buf.append(imp)
            held += len(imp)
            if held >= 2 * keep:
                kept = torch.topk(torch.cat([kept] + buf), keep).values
                buf, held = [], len(kept)
            del s, upper, g
        kept = torch.topk(torch.cat([kept] + buf), keep).values
        imp_desc = torch.sort(kept, descending=True).values
        gen = torch.sort(torch.cat(gens)).values
        tar = tar_at_far(gen, imp_desc, n_imp, [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
        t = time.perf_counter() - t0
        res = "TAR@1e-4 %s TAR@1e-8 %s pairs %d" % (tar[1e-4], tar[1e-8], len(gen) + n_imp)

print("result %s %d time_s %.3f peak_mb %.0f data_mb %.0f %s" % (a.case, a.n, t, status("VmHWM"), data, res))
