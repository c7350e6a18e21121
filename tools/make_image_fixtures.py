"""Writes the small image fixtures of spec/image_spec.lua with PIL (Debian's
python3-pil) and NumPy: PNGs with known pixels, JPEGs with PIL's own decoding
of them as .npy references, and broken files. Run: /usr/bin/python3 tools/make_image_fixtures.py
"""
import os
import numpy as np
from PIL import Image

out = os.path.join(os.path.dirname(__file__), "..", "spec", "fixtures", "images")
os.makedirs(out, exist_ok=True)

# 3 rows x 4 columns with pixel (r, c) = (10 r + c, 100 + 10 r + c, 200 + r + c)
rgb = np.zeros((3, 4, 3), dtype=np.uint8)
for r in range(3):
    for c in range(4):
        rgb[r, c] = (10 * r + c, 100 + 10 * r + c, 200 + r + c)
Image.fromarray(rgb, "RGB").save(os.path.join(out, "rgb_3x4.png"))
# gray + alpha: composed to RGB on black by libpng's simplified API? (facet drops alpha)
la = np.zeros((2, 2, 2), dtype=np.uint8)
la[..., 0] = [[0, 64], [128, 255]]
la[..., 1] = 255
Image.fromarray(la, "LA").save(os.path.join(out, "gray_alpha_2x2.png"))

# a smooth 16 x 24 image as JPEG (quality 95) and PIL's decoding of it
y, x = np.mgrid[0:16, 0:24]
img = np.stack([x * 10, y * 15, 128 + 0 * x], axis=-1).astype(np.uint8)
Image.fromarray(img, "RGB").save(os.path.join(out, "smooth_16x24.jpg"), quality=95)
np.save(os.path.join(out, "smooth_16x24_pil.npy"), np.asarray(Image.open(os.path.join(out, "smooth_16x24.jpg")).convert("RGB")))
Image.fromarray((x * 10).astype(np.uint8), "L").save(os.path.join(out, "gray_16x24.jpg"), quality=95)

data = open(os.path.join(out, "smooth_16x24.jpg"), "rb").read()
open(os.path.join(out, "truncated.jpg"), "wb").write(data[: len(data) // 2])
png = open(os.path.join(out, "rgb_3x4.png"), "rb").read()
open(os.path.join(out, "bad_crc.png"), "wb").write(png[:40] + bytes([png[40] ^ 0xFF]) + png[41:])
for name in sorted(os.listdir(out)):
    print(name, os.path.getsize(os.path.join(out, name)))
