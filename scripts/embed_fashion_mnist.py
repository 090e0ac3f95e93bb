#!/usr/bin/env python3
"""Embeds Fashion-MNIST's 70,000 images (train then test) with an exported model and writes
the vectors as raw little-endian float32 rows: real embeddings for
`server/examples/index_bench.rs --vectors`.

    deps/baseline-venv/bin/python scripts/embed_fashion_mnist.py --model model.onnx --out vectors.f32

The preprocessing and inference are the Python baseline server's (scripts/baseline_server.py,
the model's manifest read by Pillow and onnxruntime), close to but not bit for bit the
server's: what matters here is the distribution of the vectors. Needs that baseline's
packages (scripts/bench_serving.sh installs them in deps/baseline-venv).
"""

import argparse
import gzip
import os
import sys

import numpy as np
from PIL import Image

from baseline_server import Model


def idx_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, h, w)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default="deps/fashion-mnist")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    model = Model(args.model)
    images = np.concatenate([idx_images(f"{args.data}/{name}-images-idx3-ubyte.gz") for name in ("train", "t10k")])
    with open(args.out + ".tmp", "wb") as out:
        for start in range(0, len(images), args.batch):
            x = np.stack([model.preprocess_image(Image.fromarray(a)) for a in images[start:start + args.batch]])
            out.write(np.ascontiguousarray(model.embed(x.astype(np.float32)), dtype="<f4").tobytes())
            print(f"\r{min(start + args.batch, len(images))} / {len(images)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    os.replace(args.out + ".tmp", args.out)
    print(f"{len(images)} vectors of {model.dim} floats in {args.out}")


if __name__ == "__main__":
    main()
