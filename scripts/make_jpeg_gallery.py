#!/usr/bin/env python3
"""A gallery of camera-sized JPEGs for the serving benchmark (scripts/bench_serving.sh).

Each source image (e.g. a 128-px glyph of the fonts domain) is scaled up into a
1152 x 864 (1.0-megapixel) photo-like frame: a smooth colour gradient with sensor-like
noise, the glyph placed off centre, saved as a quality-90 baseline JPEG (about the size a
phone writes at this resolution). Decoding and resizing such files is what a server pays
for real uploads; the 128-px PNGs cost almost nothing to decode.

    python scripts/make_jpeg_gallery.py --src deps/fonts-dataset/test --out DIR --count 1000

Written to DIR.tmp and renamed, so DIR is whole or absent. Needs Pillow and numpy.
"""

import argparse
import os
import shutil
import sys

import numpy as np
from PIL import Image

W, H = 1152, 864


def sources(root):
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(dirs)
        out += [os.path.join(dirpath, f) for f in sorted(files) if f.lower().endswith((".png", ".jpg", ".jpeg"))]
    return out


def frame(src, rng):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = (xx / W * rng.uniform(0.3, 1.0) + yy / H * rng.uniform(0.3, 1.0))[..., None] / 2
    bg = c0 * (1 - t) + c1 * t + rng.normal(0, 6, (H, W, 3))
    glyph = Image.open(src).convert("L").resize((600, 600), Image.BICUBIC)
    ink = 1 - np.asarray(glyph, np.float32)[..., None] / 255  # 1 where the glyph is drawn
    x0, y0 = int(rng.integers(0, W - 600)), int(rng.integers(0, H - 600))
    colour = rng.uniform(0, 60, 3)
    region = bg[y0 : y0 + 600, x0 : x0 + 600]
    bg[y0 : y0 + 600, x0 : x0 + 600] = region * (1 - ink) + colour * ink
    return Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
    files = sources(args.src)[: args.count]
    if len(files) < args.count:
        sys.exit(f"{args.src} has {len(files)} images, fewer than --count {args.count}")
    tmp = args.out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i, src in enumerate(files):
        rel = os.path.relpath(src, args.src)
        dst = os.path.join(tmp, os.path.splitext(rel)[0] + ".jpg")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        frame(src, rng).save(dst, quality=90)
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(files)} JPEGs", file=sys.stderr, flush=True)
    os.rename(tmp, args.out)


if __name__ == "__main__":
    main()
