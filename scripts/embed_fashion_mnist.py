#!/usr/bin/env python3
"""Embeds Fashion-MNIST's 70,000 images (train then test) with an exported model and writes
the vectors as raw little-endian float32 rows: real embeddings for
`server/examples/index_bench.rs --vectors`.

    deps/baseline-venv/bin/python scripts/embed_fashion_mnist.py --model model.onnx --out vectors.f32

Preprocessing follows the model's manifest (resize of the shorter side with a bilinear
filter, centre crop, normalisation, grey copied into the three channels), close to but not
bit for bit the server's: what matters here is the distribution of the vectors.
Needs numpy, pillow and onnxruntime (scripts/bench_serving.sh's baseline venv has them).
"""

import argparse
import gzip
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image


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
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    manifest = json.loads(session.get_modelmeta().custom_metadata_map["stml.manifest"])
    pre = manifest["preprocess"]
    resize, crop = max(pre["resize"], pre["crop"]), pre["crop"]
    mean = np.array(pre["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.array(pre["std"], np.float32).reshape(1, 3, 1, 1)
    images = np.concatenate([idx_images(f"{args.data}/{name}-images-idx3-ubyte.gz") for name in ("train", "t10k")])
    lo = (resize - crop) // 2
    with open(args.out + ".tmp", "wb") as out:
        for start in range(0, len(images), args.batch):
            grey = np.stack([np.asarray(Image.fromarray(img).resize((resize, resize), Image.BILINEAR))
                             for img in images[start:start + args.batch]])[:, lo:lo + crop, lo:lo + crop]
            x = grey[:, None].astype(np.float32) * pre["scale"]
            x = ((np.repeat(x, 3, axis=1) - mean) / std).astype(np.float32)
            (v,) = session.run([manifest["output_name"]], {manifest["input_name"]: x})
            out.write(np.ascontiguousarray(v, dtype="<f4").tobytes())
            print(f"\r{start + len(x)} / {len(images)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    os.replace(args.out + ".tmp", args.out)
    print(f"{len(images)} vectors of {v.shape[1]} floats in {args.out}")


if __name__ == "__main__":
    main()
