#!/usr/bin/env python3
"""Can the wide head `g` be served at the width of `f`? (issue 7, "the head that is served")

For a finished run: Recall@1 on the domain's unseen classes of `f` (128-d), of `g`
(1024-d), and of `g` projected onto its leading principal components (fitted on the
run's training classes only), all through the exported ONNX files and one preprocessing,
so the rows compare with each other (the trainer's own evaluation draws another subset of
Fashion-MNIST's test images, so its figures differ in the decimals).

    deps/baseline-venv/bin/python scripts/head_pca.py runs/bench/fmnist-default-s0 --domain fmnist

Needs `target/release/trainer` and the Python packages of the serving benchmark's baseline
(onnxruntime, numpy, pillow: `scripts/bench_serving.sh` installs them in deps/baseline-venv).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import onnxruntime as ort
    from PIL import Image
except ImportError as e:
    sys.exit(f"{e}: run with deps/baseline-venv/bin/python (scripts/bench_serving.sh makes it)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = os.path.join(ROOT, "deps", "fashion-mnist")
FONTS = os.path.join(ROOT, "deps", "fonts-dataset")


def idx(name):
    with gzip.open(os.path.join(FMNIST, name)) as f:
        data = f.read()
    if "images" in name:
        return np.frombuffer(data[16:], np.uint8).reshape(-1, 28, 28)
    return np.frombuffer(data[8:], np.uint8)


def images(domain, split):
    """PIL images of the training classes (`train`) or the unseen ones (`test`)."""
    if domain == "fmnist":
        # Training: the first 6,000 images of classes 0-4 of the training file; unseen: the
        # 5,000 images of classes 5-9 of the test file.
        prefix = "train" if split == "train" else "t10k"
        imgs, labels = idx(f"{prefix}-images-idx3-ubyte.gz"), idx(f"{prefix}-labels-idx1-ubyte.gz")
        keep = np.where(labels < 5)[0][:6000] if split == "train" else np.where(labels >= 5)[0]
        return [Image.fromarray(imgs[i]) for i in keep], labels[keep]
    root = os.path.join(FONTS, split)
    out, labels = [], []
    for c, cls in enumerate(sorted(os.listdir(root))):
        for name in sorted(os.listdir(os.path.join(root, cls))):
            with Image.open(os.path.join(root, cls, name)) as im:
                out.append(im.convert("RGB"))
            labels.append(c)
    return out, np.array(labels)


def embed(path, imgs):
    """Rows of the model's embedding: shorter side to `resize`, centre crop, normalise."""
    s = ort.InferenceSession(path)
    manifest = json.loads(s.get_modelmeta().custom_metadata_map["stml.manifest"])
    pre = manifest["preprocess"]
    if pre["channel_order"] != "rgb" or abs(pre["scale"] - 1 / 255) > 1e-6:
        sys.exit(f"{path}: this script reads RGB models scaled by 1/255, not {pre}")
    mean, std = np.array(pre["mean"], np.float32), np.array(pre["std"], np.float32)
    rows = []
    for i in range(0, len(imgs), 64):
        batch = []
        for im in imgs[i:i + 64]:
            im = im.convert("RGB")
            w, h = im.size
            scale = pre["resize"] / min(w, h)
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - pre["crop"]) // 2, (h - pre["crop"]) // 2
            im = im.crop((left, top, left + pre["crop"], top + pre["crop"]))
            a = (np.asarray(im, np.float32) / 255.0 - mean) / std
            batch.append(a.transpose(2, 0, 1))
        rows.append(s.run(None, {manifest["input_name"]: np.stack(batch)})[0])
    return np.concatenate(rows).astype(np.float64)


def recall_at_1(x, labels):
    sq = (x * x).sum(1)
    d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    np.fill_diagonal(d, np.inf)
    return 100.0 * (labels[d.argmin(1)] == labels).mean()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--domain", choices=["fmnist", "fonts"], required=True)
    p.add_argument("--dims", type=int, nargs="+", default=[128, 256])
    a = p.parse_args()
    trainer = os.path.join(ROOT, "target", "release", "trainer")
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for head in ["f", "g"]:
            files[head] = os.path.join(tmp, f"{head}.onnx")
            subprocess.run([trainer, "export", "--run", a.run, "--head", head, "--out", files[head]],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        train, _ = images(a.domain, "train")
        test, labels = images(a.domain, "test")
        g_train = embed(files["g"], train)
        g_test, f_test = embed(files["g"], test), embed(files["f"], test)
    mu = g_train.mean(0)
    w, v = np.linalg.eigh(np.cov((g_train - mu).T))
    order = np.argsort(w)[::-1]
    print(f"{a.run} ({a.domain}: {len(train)} training images, {len(test)} unseen)")
    print(f"  f  ({f_test.shape[1]}-d)  R@1 {recall_at_1(f_test, labels):.2f}")
    print(f"  g  ({g_test.shape[1]}-d)  R@1 {recall_at_1(g_test, labels):.2f}")
    for d in a.dims:
        proj = v[:, order[:d]]
        kept = w[order[:d]].sum() / w.sum()
        r = recall_at_1((g_test - mu) @ proj, labels)
        print(f"  g, PCA-{d} (variance kept {100 * kept:.1f} %)  R@1 {r:.2f}")


if __name__ == "__main__":
    main()
