#!/usr/bin/env python3
"""The Python stack a team would write instead of ours, for scripts/bench_serving.sh.

aiohttp + onnxruntime + hnswlib + Pillow, the obvious way: at start it embeds every image
of a gallery folder with the exported model (preprocessing read from the model's own
manifest, as the Rust server does), builds an HNSW index with the Rust server's parameters
(M 16, ef_construction 200, ef 64), then answers `POST /search?k=K` (the body is an image
file) with the K nearest gallery images as JSON. Each request decodes and runs the model on
its own, in the event loop's default thread pool; nothing is batched.

    python scripts/baseline_server.py --model model.onnx --gallery DIR --port 8100

Needs: aiohttp onnxruntime hnswlib pillow numpy (scripts/bench_serving.sh installs them
into deps/baseline-venv). Not part of the product.
"""

import argparse
import asyncio
import io
import json
import os
import sys
import time

import hnswlib
import numpy as np
import onnxruntime as ort
from aiohttp import web
from PIL import Image

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class Model:
    def __init__(self, path):
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "stml.manifest" not in meta:
            sys.exit(f"{path} has no stml.manifest metadata: export it with `trainer export`")
        m = json.loads(meta["stml.manifest"])
        self.input_name, self.output_name = m["input_name"], m["output_name"]
        p = m["preprocess"]
        self.resize, self.crop = max(p["resize"], p["crop"]), p["crop"]
        self.scale = np.float32(p["scale"])
        order = [0, 1, 2] if p["channel_order"] == "rgb" else [2, 1, 0]
        self.order = order
        self.mean = np.array(p["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.array(p["std"], np.float32).reshape(3, 1, 1)
        self.dim = m["embedding_dim"]
        self.distance = m.get("distance", "euclidean")

    def preprocess(self, data):
        """Image bytes -> [3, crop, crop] float32: shorter side to `resize`, centre crop."""
        return self.preprocess_image(Image.open(io.BytesIO(data)))

    def preprocess_image(self, img):
        """A PIL image -> [3, crop, crop] float32, as `preprocess`."""
        img = img.convert("RGB")
        w, h = img.size
        s = self.resize
        nw, nh = (s, max(1, round(h * s / w))) if w <= h else (max(1, round(w * s / h)), s)
        img = img.resize((nw, nh), Image.BILINEAR)
        x0, y0 = (nw - self.crop) // 2, (nh - self.crop) // 2
        img = img.crop((x0, y0, x0 + self.crop, y0 + self.crop))
        x = np.asarray(img, np.float32).transpose(2, 0, 1)[self.order] * self.scale
        return (x - self.mean) / self.std

    def embed(self, batch):
        """[n, 3, crop, crop] -> [n, dim]"""
        return self.session.run([self.output_name], {self.input_name: batch})[0]


def gallery_files(root):
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                out.append(os.path.join(dirpath, f))
    return out


def build_index(model, paths, batch=32):
    space = "cosine" if model.distance == "cosine" else "l2"
    index = hnswlib.Index(space=space, dim=model.dim)
    index.init_index(max_elements=max(1, len(paths)), M=16, ef_construction=200)
    for i in range(0, len(paths), batch):
        chunk = paths[i : i + batch]
        x = np.stack([model.preprocess(open(p, "rb").read()) for p in chunk])
        index.add_items(model.embed(x), np.arange(i, i + len(chunk)))
    index.set_ef(64)
    return index


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--gallery", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    args = ap.parse_args()

    model = Model(args.model)
    paths = gallery_files(args.gallery)
    started = time.time()
    index = build_index(model, paths)
    print(f"indexed {len(paths)} images in {time.time() - started:.1f} s", file=sys.stderr, flush=True)

    def answer(data, k):
        x = model.preprocess(data)[None]
        labels, distances = index.knn_query(model.embed(x), k=min(k, len(paths)))
        return [{"id": int(i), "path": paths[i], "distance": float(d)} for i, d in zip(labels[0], distances[0])]

    async def search(request):
        try:
            k = int(request.query.get("k", "10"))
        except ValueError:
            raise web.HTTPBadRequest(text="k must be an integer")
        data = await request.read()
        try:
            hits = await asyncio.get_running_loop().run_in_executor(None, answer, data, k)
        except OSError as e:
            raise web.HTTPBadRequest(text=f"not an image: {e}")
        return web.json_response({"hits": hits})

    async def health(_):
        return web.json_response({"images": len(paths)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes([web.post("/search", search), web.get("/health", health)])
    print(f"listening on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
