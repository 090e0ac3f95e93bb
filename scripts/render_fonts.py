#!/usr/bin/env python3
"""Renders the "fonts" development domain: class = a Unicode character, instance = a font.

Many classes, few images per class, and nothing like Fashion-MNIST: the same character
drawn by different typefaces (serif, sans, mono, script, bold, italic, condensed...).
Called by scripts/make_fonts_dataset.sh, which fetches the fonts from Debian packages.

Output, a zero-shot split by class (a seeded random half of the characters each):

    OUT/train/U+0416/<font>.png     training classes (fit trains on these, labels unused)
    OUT/test/U+0436/<font>.png      unseen classes (evaluation only)
    OUT/classes.tsv                 code point, split, name, fonts
    OUT/README.txt                  how it was made

Characters that render identically in a reference font (Latin A, Greek Alpha, Cyrillic A)
are one visual class: only the first is kept, so a label never contradicts the pixels.
"""

import argparse
import hashlib
import os
import random
import sys
import unicodedata

from fontTools.ttLib import TTCollection, TTFont
from PIL import Image, ImageDraw, ImageFont

# Scripts of letters and symbols that many text fonts cover.
BLOCKS = [
    (0x0021, 0x007E),  # ASCII printable
    (0x00A1, 0x00FF),  # Latin-1 supplement
    (0x0100, 0x024F),  # Latin Extended-A/B
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x04FF),  # Cyrillic
    (0x1E00, 0x1EFF),  # Latin Extended Additional
    (0x2010, 0x205E),  # general punctuation
    (0x20A0, 0x20BF),  # currency
    (0x2100, 0x214F),  # letterlike symbols
    (0x2190, 0x21FF),  # arrows
    (0x2200, 0x22FF),  # mathematical operators
    (0x25A0, 0x25FF),  # geometric shapes
]
CATEGORIES = ("L", "N", "S", "P")  # letters, numbers, symbols, punctuation


def font_files(root):
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith((".ttf", ".otf")):
                out.append(os.path.join(d, f))
    return sorted(out)


def coverage(path):
    try:
        font = TTCollection(path).fonts[0] if path.lower().endswith(".ttc") else TTFont(path, lazy=True)
        cmap = font.getBestCmap() or {}
        return set(cmap.keys())
    except Exception as e:  # an unreadable font is left out, with a word
        print(f"render_fonts: skipping {path}: {e}", file=sys.stderr)
        return set()


def render(font_path, ch, size, px=None):
    """White canvas, black glyph scaled to fit 80 % of it and centred on its ink box."""
    font = ImageFont.truetype(font_path, px or int(size * 0.7))
    box = font.getbbox(ch)
    w, h = box[2] - box[0], box[3] - box[1]
    if w <= 0 or h <= 0:
        return None
    if px is None:  # rescale so the larger side fills 80 % of the canvas
        scale = 0.8 * size / max(w, h)
        return render(font_path, ch, size, max(4, int(int(size * 0.7) * scale)))
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    draw.text(((size - w) / 2 - box[0], (size - h) / 2 - box[1]), ch, font=font, fill=0)
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fonts", required=True, help="folder searched for .ttf/.otf files")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=128, help="image side in pixels")
    ap.add_argument("--per-class", type=int, default=8, help="fonts (images) per character")
    ap.add_argument("--min-fonts", type=int, default=8, help="characters covered by fewer fonts are left out")
    ap.add_argument("--classes", type=int, default=1200, help="characters kept (seeded random choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reference", default="DejaVuSans.ttf", help="font whose renders decide homoglyphs")
    a = ap.parse_args()

    fonts = font_files(a.fonts)
    cover = {f: coverage(f) for f in fonts}
    # Text fonts only: a font that lacks basic Latin letters is a script or symbol font.
    fonts = [f for f in fonts if all(ord(c) in cover[f] for c in "AaZz09")]
    if not fonts:
        sys.exit(f"render_fonts: no usable .ttf/.otf fonts under {a.fonts}; run scripts/make_fonts_dataset.sh")
    ref = next((f for f in fonts if os.path.basename(f) == a.reference), fonts[0])

    candidates = []
    for lo, hi in BLOCKS:
        for cp in range(lo, hi + 1):
            if unicodedata.category(chr(cp))[0] not in CATEGORIES or cp not in cover[ref]:
                continue
            n = sum(cp in cover[f] for f in fonts)
            if n >= a.min_fonts:
                candidates.append(cp)

    # One visual class per shape: identical reference renders are homoglyphs.
    seen, chars = set(), []
    for cp in candidates:
        img = render(ref, chr(cp), 48)
        if img is None:
            continue
        h = hashlib.sha1(img.tobytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            chars.append(cp)

    rng = random.Random(a.seed)
    rng.shuffle(chars)
    chars = sorted(chars[: a.classes])
    test = set(rng.sample(chars, len(chars) // 2))
    os.makedirs(a.out, exist_ok=True)
    rows, n_images = [], 0
    for i, cp in enumerate(chars):
        split = "test" if cp in test else "train"
        have = [f for f in fonts if cp in cover[f]]
        rng.shuffle(have)
        folder = os.path.join(a.out, split, f"U+{cp:04X}")
        os.makedirs(folder, exist_ok=True)
        used = []
        for f in have:
            if len(used) == a.per_class:
                break
            img = render(f, chr(cp), a.size)
            if img is None:
                continue
            name = os.path.splitext(os.path.basename(f))[0]
            tmp = os.path.join(folder, f".{name}.png.tmp")
            img.save(tmp, format="PNG")
            os.replace(tmp, os.path.join(folder, f"{name}.png"))
            used.append(name)
        n_images += len(used)
        rows.append(f"U+{cp:04X}\t{split}\t{unicodedata.name(chr(cp), '?')}\t{','.join(used)}")
        if (i + 1) % 100 == 0:
            print(f"render_fonts: {i + 1}/{len(chars)} characters", file=sys.stderr)
    with open(os.path.join(a.out, "classes.tsv"), "w") as fh:
        fh.write("codepoint\tsplit\tname\tfonts\n" + "\n".join(rows) + "\n")
    with open(os.path.join(a.out, "README.txt"), "w") as fh:
        fh.write(
            f"{len(chars)} characters ({len(chars) - len(test)} train / {len(test)} test classes), "
            f"{n_images} images of {a.size} px, up to {a.per_class} fonts each, from {len(fonts)} fonts; "
            f"seed {a.seed}. Made by scripts/make_fonts_dataset.sh.\n"
        )
    print(f"render_fonts: {len(chars)} classes, {n_images} images in {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
