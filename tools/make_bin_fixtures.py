#!/usr/bin/python3
"""Writes the verification .bin fixtures used by spec/binfile_spec.lua into
spec/fixtures/bin/.

Run from anywhere with Debian's python3 + python3-numpy:
    /usr/bin/python3 tools/make_bin_fixtures.py
A .bin file is a pickle of (bins, issame_list). The "images" here are a few
fake bytes, img(k) and long_img(k) below; the spec writes the same formulas
out in Lua, so change both together. Python 2's dialect (str opcodes, memo
numbered from 1) cannot come out of Python 3's pickler, so py2_pickle() emits
those opcodes by hand; every good fixture is checked by unpickling it here
(these are our own files, so that is safe). Every fixture stays under 8 KB.
"""
import os
import pickle
import pickletools
import struct

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "fixtures", "bin")


def path(name):
    return os.path.join(OUT, name)


def img(k):
    """A 4-byte fake JPEG: the SOI marker, k and k * 37."""
    return bytes([0xFF, 0xD8, k % 256, (k * 37) % 256])


def long_img(k):
    """300 bytes (k + j) % 256: long enough for the 4-byte-length string opcodes."""
    return bytes((k + j) % 256 for j in range(300))


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)
    assert len(data) < 8192, (name, len(data))


def check(data, images, issame):
    bins, same = pickle.loads(data, encoding="bytes")
    assert [bytes(np.asarray(b).tobytes()) if isinstance(b, np.ndarray) else b for b in bins] == images
    assert [bool(s) for s in same] == issame


def py2_pickle(images, issame):
    """(images, issame) as Python 2's cPickle.dump(..., protocol=2) writes it:
    str as SHORT_BINSTRING / BINSTRING, memo numbered from 1, lists in
    MARK ... APPENDS batches of 1000, a repeated object as BINGET."""
    out = bytearray(b"\x80\x02")
    memo = {"next": 1}

    def put():
        n = memo["next"]
        out.extend(b"q" + bytes([n]) if n < 256 else b"r" + struct.pack("<I", n))
        memo["next"] = n + 1
        return n

    def save_list(items, save_item):
        out.extend(b"]")
        put()
        for start in range(0, len(items), 1000):
            batch = items[start:start + 1000]
            if len(batch) > 1:
                out.extend(b"(")
            for item in batch:
                save_item(item)
            out.extend(b"e" if len(batch) > 1 else b"a")

    seen = {}

    def save_str(s):
        if id(s) in seen:
            out.extend(b"h" + bytes([seen[id(s)]]))
            return
        if len(s) < 256:
            out.extend(b"U" + bytes([len(s)]) + s)
        else:
            out.extend(b"T" + struct.pack("<i", len(s)) + s)
        seen[id(s)] = put()

    save_list(images, save_str)
    save_list(issame, lambda b: out.extend(b"\x88" if b else b"\x89"))
    out.extend(b"\x86")
    put()
    out.extend(b".")
    return bytes(out)


class Call:
    """Pickles as a call of func(*args): the shape of a hostile .bin."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def main():
    os.makedirs(OUT, exist_ok=True)

    # ---- good files: the dialects --------------------------------------------
    # Python 2 str; image 2 is 300 bytes (BINSTRING); image 4 is image 0 again (BINGET)
    a = img(0)
    images = [a, img(1), long_img(2), img(3), a, img(5)]
    issame = [True, False, True]
    data = py2_pickle(images, issame)
    check(data, images, issame)
    write("p2_str.bin", data)

    # Python 3 bytes, protocol 3; image 1 is 300 bytes (BINBYTES)
    images = [img(10), long_img(11), img(12), img(13), img(14), img(15)]
    issame = [False, True, False]
    data = pickle.dumps((images, issame), protocol=3)
    check(data, images, issame)
    write("p3_bytes.bin", data)

    # protocol 4: FRAME, MEMOIZE
    images = [img(20), img(21), img(22), img(23)]
    issame = [True, False]
    data = pickle.dumps((images, issame), protocol=4)
    assert data[2:3] == b"\x95"
    check(data, images, issame)
    write("p4_bytes.bin", data)

    # 520 pairs: batches of 1000 (APPENDS three times), memo past 255
    # (LONG_BINPUT / LONG_BINGET); images 300.. repeat images k % 300
    distinct = [bytes([k % 256, k // 256]) for k in range(300)]
    images = [distinct[k % 300] for k in range(1040)]
    issame = [k % 3 == 0 for k in range(520)]
    data = pickle.dumps((images, issame), protocol=3)
    assert b"r" in data and b"j" in data
    check(data, images, issame)
    write("p3_many.bin", data)

    # NumPy arrays (numpy.core.multiarray._reconstruct), as most public files;
    # image 1 has shape (n, 1) like small_lfw.bin's
    raw = [img(30), img(31), img(32), img(33)]
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in raw]
    arrays[1] = arrays[1].reshape(-1, 1)
    issame = [False, True]
    data = pickle.dumps((arrays, issame), protocol=3)
    check(data, raw, issame)
    write("numpy_p3.bin", data)

    # protocol 4 (STACK_GLOBAL) and issame as a bool array
    raw = [img(40), img(41), img(42), img(43), img(44), img(45)]
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in raw]
    issame = [True, True, False]
    data = pickle.dumps((arrays, np.array(issame, dtype=bool)), protocol=4)
    assert b"\x93" in data
    check(data, raw, issame)
    write("numpy_p4.bin", data)

    # ---- bad files ---------------------------------------------------------------
    # a pickle that would run a shell command (GLOBAL os.system), built by
    # hand so that the global reads 'os' as in the classic exploit
    cmd = b"touch /tmp/facet_binfile_pwned"
    evil = (b"\x80\x02]q\x00(cos\nsystem\nq\x01X" + struct.pack("<I", len(cmd)) + cmd
            + b"q\x02\x85q\x03Rq\x04h\x04e]q\x05\x88a\x86q\x06.")
    assert [op.name for op, _, _ in pickletools.genops(evil)][-1] == "STOP"  # well formed; not run
    write("evil_os_system.bin", evil)
    # protocol 4: STACK_GLOBAL builtins.eval
    write("evil_eval_p4.bin",
          pickle.dumps(([Call(eval, ("open('/tmp/facet_binfile_pwned', 'w')",))] * 2, [True]), protocol=4))
    # bytes pickled by Python 3 at protocol 2 go through _codecs.encode
    write("codecs_p2.bin", pickle.dumps(([img(50), img(51)], [True]), protocol=2))
    # cut inside image 1's 300 bytes
    good = pickle.dumps(([img(60), long_img(61)], [True]), protocol=3)
    write("truncated.bin", good[:good.index(long_img(61)) + 100])
    # 6 images for 2 flags
    write("bad_counts.bin", pickle.dumps(([img(k) for k in range(6)], [True, False]), protocol=3))
    # decoded pixels instead of encoded bytes
    write("pixels.bin", pickle.dumps(([np.zeros((2, 2, 3), np.uint8)] * 2, [True]), protocol=3))


if __name__ == "__main__":
    main()
