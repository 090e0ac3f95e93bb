#!/usr/bin/env python3
"""Other weights a finished run could serve, as run directories `trainer eval --run` reads.

A question of issue 7 about "the weights that are served", answered after the fact from a
run's last checkpoint, without training again: the student's weights moved back towards
where the fit started, every tensor `(1 - alpha) * start + alpha * end` (weight-space
ensembling of the start and the end, WiSE-FT, Wortsman et al. 2022). The start is the
checkpoint of a one-step fit at a learning rate of 1e-12 with the same data and seed (the
PCA heads, the pretrained backbone, frozen batch norm). (Which head is served, `f` or `g`,
needs no script: `trainer eval --run RUN --head f|g`.)

    .venv/bin/python scripts/served_weights.py START_RUN END_RUN 0.5 OUT_RUN
    target/release/trainer eval --run OUT_RUN --data deps/fashion-mnist --limit 5000

A start run: `trainer fit <the run's data flags> --seed S --epochs 1 --max-steps-per-epoch 1
--lr 1e-12 --emb-lr 1e-12 --out START_RUN`. Needs the project's .venv (safetensors, numpy).
"""
import argparse
import os
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("start")
    p.add_argument("end")
    p.add_argument("alpha", type=float)
    p.add_argument("out")
    a = p.parse_args()
    interp(a.start, a.end, a.alpha, a.out)


if __name__ == "__main__":
    main()
