#!/usr/bin/env python3
"""What a linear map of the pretrained feature alone gives on a development domain.

No training: MobileNetV2's pooled feature (GAP + GMP, the reference network of
scripts/bench_step.py, the same preprocessing as the trainer's evaluation at 96 px) of the
training images gives principal components; Recall@1 on the unseen classes is printed for
the pooled feature (Euclidean, cosine) and for PCA projections, plain and whitened.

    .venv/bin/python scripts/pca_check.py --domain fonts    # deps/fonts-dataset
    .venv/bin/python scripts/pca_check.py --domain fmnist   # deps/fashion-mnist (6,000 / 5,000)
"""
import argparse
import glob
import gzip
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step import Embedder  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def fonts(deps):
    from PIL import Image

    def split(name):
        files = sorted(glob.glob(f"{deps}/fonts-dataset/{name}/*/*.png"))
        x = [torch.from_numpy(np.asarray(Image.open(f).convert("L"), dtype=np.uint8).copy()) for f in files]
        return torch.stack(x), np.array([f.split("/")[-2] for f in files])

    return split("train"), split("test")


def fmnist(deps):
    def idx(name):
        d = gzip.open(f"{deps}/fashion-mnist/{name}").read()
        return np.frombuffer(d, np.uint8, offset=16 if "images" in name else 8)

    x = np.concatenate([idx("train-images-idx3-ubyte.gz"), idx("t10k-images-idx3-ubyte.gz")]).reshape(-1, 28, 28)
    y = np.concatenate([idx("train-labels-idx1-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")])
    rng = np.random.default_rng(0)
    tr = rng.choice(np.where(y < 5)[0], 6000, replace=False)
    te = rng.choice(np.where(y >= 5)[0], 5000, replace=False)
    return (torch.from_numpy(x[tr]), y[tr]), (torch.from_numpy(x[te]), y[te])


def embed(net, grey, size=96):
    out = []
    resize = round(size * 256 / 224)
    lo = (resize - size) // 2
    for i in range(0, len(grey), 250):
        x = grey[i : i + 250].float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False)
        x = x[:, :, lo : lo + size, lo : lo + size]
        with torch.no_grad():
            h = net.features((x - MEAN) / STD)
        out.append(F.adaptive_avg_pool2d(h, 1).flatten(1) + F.adaptive_max_pool2d(h, 1).flatten(1))
    return torch.cat(out).double()


def r1(x, labels):
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return 100 * np.mean(labels[d.argmin(1).numpy()] == labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", choices=["fonts", "fmnist"], required=True)
    ap.add_argument("--deps", default=os.environ.get("STML_DEPS", "deps"))
    a = ap.parse_args()
    from safetensors.torch import load_file

    net = Embedder()
    net.load_state_dict(load_file(f"{a.deps}/weights/mobilenet_v2.safetensors"), strict=False)
    net.eval()
    (xtr, _), (xte, yte) = (fonts if a.domain == "fonts" else fmnist)(a.deps)
    tr, te = embed(net, xtr), embed(net, xte)
    print(f"| {a.domain} | pooled {r1(te, yte):.2f} | pooled cosine {r1(F.normalize(te), yte):.2f} |", end="")
    mu = tr.mean(0)
    val, vec = torch.linalg.eigh((tr - mu).T @ (tr - mu) / (len(tr) - 1))
    val, vec = val.flip(0), vec.flip(1)
    p = (te - mu) @ vec[:, :128]
    w = p / val[:128].sqrt()
    print(f" PCA-128 {r1(p, yte):.2f} | whitened {r1(w, yte):.2f} | whitened + L2 {r1(F.normalize(w), yte):.2f} |")


if __name__ == "__main__":
    main()
