#!/usr/bin/env python3
"""Other weights a finished run could serve, as run directories `trainer eval --run` reads.

Two questions of issue 7 about "the head that is served", answered after the fact from a
run's last checkpoint, without training again:

- `interp`: the student's weights moved back towards where the fit started, every tensor
  `(1 - alpha) * start + alpha * end` (weight-space ensembling of the start and the end,
  WiSE-FT, Wortsman et al. 2022). The start is the checkpoint of a one-step fit at a
  learning rate of 1e-12 with the same data and seed (the PCA heads, the pretrained
  backbone, frozen batch norm).
- `g-as-f`: the auxiliary head `g` (1024-d) served in place of `f`.

    .venv/bin/python scripts/served_weights.py interp START_RUN END_RUN 0.5 OUT_RUN
    .venv/bin/python scripts/served_weights.py g-as-f END_RUN OUT_RUN
    target/release/trainer eval --run OUT_RUN --data deps/fashion-mnist --limit 5000

A start run: `trainer fit <the run's data flags> --seed S --epochs 1 --max-steps-per-epoch 1
--lr 1e-12 --emb-lr 1e-12 --out START_RUN`. Needs the project's .venv (safetensors, numpy).
"""
import argparse
import os
import re
import shutil

from safetensors.numpy import load_file, save_file


def student_file(run):
    with open(os.path.join(run, "LATEST")) as f:
        return os.path.join(run, "checkpoints", f.read().strip(), "student.safetensors")


def copy_run(run, out):
    if os.path.exists(out):
        raise SystemExit(f"{out} exists: give a new folder for the derived run")
    shutil.copytree(run, out)


def interp(start, end, alpha, out):
    a, b = load_file(student_file(start)), load_file(student_file(end))
    if a.keys() != b.keys():
        raise SystemExit(f"{start} and {end} hold different tensors: not the same model")
    copy_run(end, out)
    mixed = {
        k: ((1 - alpha) * a[k].astype("float64") + alpha * v.astype("float64")).astype(v.dtype)
        if v.dtype.kind == "f" else v
        for k, v in b.items()
    }
    save_file(mixed, student_file(out))


def g_as_f(run, out):
    copy_run(run, out)
    t = load_file(student_file(out))
    t["head_f.weight"], t["head_f.bias"] = t["head_g.weight"].copy(), t["head_g.bias"].copy()
    save_file(t, student_file(out))
    path = os.path.join(out, "config.toml")
    with open(path) as f:
        config = f.read()
    config = re.sub(r"\ndim = \d+", f"\ndim = {t['head_f.weight'].shape[0]}", config, count=1)
    with open(path, "w") as f:
        f.write(config)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("interp")
    i.add_argument("start")
    i.add_argument("end")
    i.add_argument("alpha", type=float)
    i.add_argument("out")
    g = sub.add_parser("g-as-f")
    g.add_argument("run")
    g.add_argument("out")
    a = p.parse_args()
    if a.cmd == "interp":
        interp(a.start, a.end, a.alpha, a.out)
    else:
        g_as_f(a.run, a.out)


if __name__ == "__main__":
    main()
