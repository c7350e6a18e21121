#!/usr/bin/python3
"""Writes the .npy fixtures used by spec/npy_spec.lua into spec/fixtures/.

Run from the repository root with Debian's python3 + python3-numpy:
    /usr/bin/python3 tools/make_npy_fixtures.py
The expected values are hard-coded in the spec from the formulas below, so
change both together. Every fixture stays under 2 KB.
"""
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "fixtures")


def path(name):
    return os.path.join(OUT, name)


def main():
    os.makedirs(OUT, exist_ok=True)

    # ---- good files -------------------------------------------------------
    # values such as -0.5, -0.25, 0.75 are exact in float32, so the spec can
    # compare with ==
    np.save(path("f32_2x3.npy"), np.arange(6, dtype=np.float32).reshape(2, 3) / 4 - 0.5)
    # negatives and values near the int32 limits
    np.save(path("i32_vec.npy"), np.array([0, 1, -1, 7, -123456, 2147483647, -2147483648], dtype=np.int32))
    # 2x3x4: i * 1000003 - 7, the last dim varies fastest (C order)
    np.save(path("i64_3d.npy"), (np.arange(24, dtype=np.int64) * 1000003 - 7).reshape(2, 3, 4))
    # 4x5: (i * 13) % 256, so the values cover 0..255 out of order
    np.save(path("u8_4x5.npy"), ((np.arange(20) * 13) % 256).astype(np.uint8).reshape(4, 5))
    np.save(path("scalar_f32.npy"), np.array(3.25, dtype=np.float32))
    np.save(path("empty_f32.npy"), np.zeros((0, 3), dtype=np.float32))
    with open(path("v2_f32.npy"), "wb") as f:
        np.lib.format.write_array(f, np.arange(5, dtype=np.float32) * 1.5, version=(2, 0))

    # ---- bad files --------------------------------------------------------
    fa = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.save(path("fortran_f32.npy"), fa)  # np.save keeps fortran_order for F-contiguous arrays
    np.save(path("bigendian_f4.npy"), np.arange(4, dtype=">f4"))
    np.save(path("f64.npy"), np.arange(4, dtype=np.float64))
    np.save(path("object.npy"), np.array([1, "two", None], dtype=object), allow_pickle=True)
    # a valid 4x4 float32 file with its last 6 bytes cut off
    np.save(path("truncated.npy"), np.arange(16, dtype=np.float32).reshape(4, 4))
    with open(path("truncated.npy"), "r+b") as f:
        f.truncate(os.path.getsize(path("truncated.npy")) - 6)

    for name in sorted(os.listdir(OUT)):
        if name.endswith(".npy"):
            size = os.path.getsize(path(name))
            assert size < 2048, name
            print("%-20s %5d bytes" % (name, size))


if __name__ == "__main__":
    main()
