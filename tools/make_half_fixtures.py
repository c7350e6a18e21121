#!/usr/bin/python3
"""make_half_fixtures.py OUTDIR - the NumPy references of spec/half_spec.lua.

Written at spec time into a temporary OUTDIR (raw little-endian arrays, no
header; nothing is committed). The float16 references are NumPy's own
astype(np.float16) and float16 arithmetic. NumPy has no bfloat16, so its
reference is computed here from the float32 values in float64: the two
bfloat16 neighbours of x (truncated toward zero, and one step away) are
compared by distance, a tie going to the even one; past the largest finite
bfloat16 the upper neighbour is 2^128, i.e. inf. It is cross-checked against
PyTorch's float32 -> bfloat16 conversion for every non-NaN input. A NaN keeps
its sign and the top 7 payload bits, with the lowest set if all would be 0
(the rule NumPy applies to float16; docs/mixed-precision.md).

Files:
  f32_in.u32        the float32 bit patterns under test
  f16_ref.u16       np.float32 -> np.float16 of each
  bf16_ref.u16      the bfloat16 reference of each
  f16_all_f32.u32   every float16 pattern 0..65535 widened by NumPy to float32
  ops_<dt>_x.u16, ops_<dt>_y.u16   operands (float16 / bfloat16 bits)
  ops_<dt>_<op>.u16                expected elementwise results
  ops_<dt>_sum1.f64, _mean0.f64, _max1.f64   reductions of x viewed 64 x 96, from float64
  mm_<dt>_a.u16 (48 x 40), mm_<dt>_b.u16 (40 x 24), mm_<dt>_c.f64 (48 x 24, float64 product)
"""
import os
import sys

import numpy as np


def bf16_reference(bits):
    """float32 bit patterns (uint32) -> bfloat16 bit patterns (uint16), by distance."""
    bits = bits.astype(np.uint32)
    x = bits.view(np.float32).astype(np.float64)
    lo = bits & np.uint32(0xFFFF0000)            # toward zero
    hi = lo + np.uint32(0x10000)                 # away from zero (may become inf)
    mag = lambda p: np.abs(p.view(np.float32).astype(np.float64))
    lo_v = mag(lo)
    hi_inf = (hi & np.uint32(0x7FFFFFFF)) >= np.uint32(0x7F800000)
    with np.errstate(over="ignore", invalid="ignore"):
        hi_v = np.where(hi_inf, 2.0 ** 128, mag(np.where(hi_inf, lo, hi)))
        ax = np.abs(x)
        dlo, dhi = ax - lo_v, hi_v - ax
    lo_even = ((lo >> np.uint32(16)) & np.uint32(1)) == 0
    pick_hi = (dhi < dlo) | ((dhi == dlo) & ~lo_even)
    out = np.where(pick_hi, hi, lo) >> np.uint32(16)
    exact = (bits & np.uint32(0xFFFF)) == 0      # includes +-0 and +-inf
    out = np.where(exact, bits >> np.uint32(16), out)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    top = bits >> np.uint32(16)
    nan_out = np.where((top & np.uint32(0x7F)) != 0, top, top | np.uint32(1))
    return np.where(nan, nan_out, out).astype(np.uint16)


def check_against_torch(bits, ref):
    try:
        import torch
    except ImportError:
        return
    f = bits.view(np.float32)
    keep = ~np.isnan(f)
    t = torch.from_numpy(f[keep].copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    bad = np.nonzero(t != ref[keep])[0]
    if bad.size:
        i = bad[0]
        sys.exit("bf16 reference disagrees with torch at 0x%08x: 0x%04x vs 0x%04x"
                 % (bits[keep][i], ref[keep][i], t[i]))


def boundary_patterns():
    """Every sign and exponent, with low mantissa bits around both rounding points."""
    lows = np.array([0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x2001, 0x3000,
                     0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x18000, 0x17FFF, 0x10000, 0x7FE000, 0x7FF000,
                     0x7FFFFF, 0x400000, 0x400001, 0x002000, 0x006000], dtype=np.uint32)
    rng = np.random.default_rng(7)
    highs = rng.integers(0, 1 << 23, size=8, dtype=np.uint32) & np.uint32(0x7F0000)
    out = []
    for sign in (0, 1):
        for e in range(256):
            base = np.uint32((sign << 31) | (e << 23))
            m = (lows[:, None] | highs[None, :]).ravel() & np.uint32(0x7FFFFF)
            out.append(base | np.concatenate([lows & np.uint32(0x7FFFFF), m]))
    return np.concatenate(out)



def main(outdir):
    np.seterr(all="ignore")      # inf and NaN inputs are the point
    rng = np.random.default_rng(20261126)
    rand = rng.integers(0, 1 << 32, size=2_000_000, dtype=np.uint64).astype(np.uint32)
    # exact float16 values and the points halfway between neighbours (ties)
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    finite = h[np.isfinite(h)]
    srt = np.unique(finite.astype(np.float64))
    mids = ((srt[1:] + srt[:-1]) / 2).astype(np.float32)     # exact in float32
    special = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                        0x7F800001, 0xFF800001, 0x7FA00000, 0x7F802000, 0x7FFFFFFF, 0x00000001,
                        0x477FEFFF, 0x477FF000, 0x477FF001, 0x33000000, 0x33000001, 0x32FFFFFF,
                        0x387FC000, 0x387FE000, 0x38800000, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF,
                        0xFF7F8000], dtype=np.uint32)
    bits = np.concatenate([special, boundary_patterns(), h.view(np.uint32), mids.view(np.uint32),
                           np.nextafter(mids, np.float32(np.inf)).view(np.uint32),
                           np.nextafter(mids, np.float32(-np.inf)).view(np.uint32), rand]).astype(np.uint32)
    with np.errstate(over="ignore"):
        f16 = bits.view(np.float32).astype(np.float16).view(np.uint16)
    bf16 = bf16_reference(bits)
    check_against_torch(bits, bf16)
    bits.astype("<u4").tofile(os.path.join(outdir, "f32_in.u32"))
    f16.astype("<u2").tofile(os.path.join(outdir, "f16_ref.u16"))
    bf16.astype("<u2").tofile(os.path.join(outdir, "bf16_ref.u16"))
    h.view(np.uint32).astype("<u4").tofile(os.path.join(outdir, "f16_all_f32.u32"))

    # ---- ops: operands exactly representable in both formats' own dtype
    n = 64 * 96
    for dt in ("float16", "bfloat16"):
        x32 = rng.normal(0, 3, n).astype(np.float32)
        y32 = rng.uniform(0.25, 4, n).astype(np.float32) * np.sign(rng.normal(size=n)).astype(np.float32)
        if dt == "float16":
            to = lambda v: np.asarray(v, np.float32).astype(np.float16).view(np.uint16)
            back = lambda b: b.view(np.float16).astype(np.float32)
        else:
            to = lambda v: bf16_reference(np.asarray(v, np.float32).view(np.uint32))
            back = lambda b: (b.astype(np.uint32) << np.uint32(16)).view(np.float32)
        xb, yb = to(x32), to(y32)
        x, y = back(xb), back(yb)
        xb.astype("<u2").tofile(os.path.join(outdir, "ops_%s_x.u16" % dt))
        yb.astype("<u2").tofile(os.path.join(outdir, "ops_%s_y.u16" % dt))
        with np.errstate(all="ignore"):
            ops = {
                "add": x + y, "sub": x - y, "mul": x * y, "div": x / y,
                "max": np.maximum(x, y), "min": np.minimum(x, y),
                "neg": -x, "abs": np.abs(x), "relu": np.maximum(x, np.float32(0)),
                "exp": np.exp(x), "sqrt": np.sqrt(np.abs(x)), "tanh": np.tanh(x),
                "sigmoid": np.float32(1) / (np.float32(1) + np.exp(-x)),
                "scale": x * np.float32(0.3),
            }
        for name, v in ops.items():
            to(v.astype(np.float32)).astype("<u2").tofile(os.path.join(outdir, "ops_%s_%s.u16" % (dt, name)))
        x2 = x.astype(np.float64).reshape(64, 96)
        x2.sum(axis=1).astype("<f8").tofile(os.path.join(outdir, "ops_%s_sum1.f64" % dt))
        x2.mean(axis=0).astype("<f8").tofile(os.path.join(outdir, "ops_%s_mean0.f64" % dt))
        x2.max(axis=1).astype("<f8").tofile(os.path.join(outdir, "ops_%s_max1.f64" % dt))
        a, b = to(rng.normal(size=(48, 40))), to(rng.normal(size=(40, 24)))
        a.astype("<u2").tofile(os.path.join(outdir, "mm_%s_a.u16" % dt))
        b.astype("<u2").tofile(os.path.join(outdir, "mm_%s_b.u16" % dt))
        c = back(a).astype(np.float64) @ back(b).astype(np.float64)
        c.astype("<f8").tofile(os.path.join(outdir, "mm_%s_c.f64" % dt))
    print(bits.size)


if __name__ == "__main__":
    main(sys.argv[1])
