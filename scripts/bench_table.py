#!/usr/bin/env python3
"""Prints the tables of scripts/bench_domains.sh from its run directories.

One row per run (domain, variant, seed): Recall@1 of the pretrained pooled feature on the
evaluation images, of the served head (`f`, or `g` since 2026-12-07's default) before
training (epoch 0) and after each epoch, then the last
epoch's MAP@R and NMI beside the baseline's, and the seconds per step and per epoch part.
A second table gives, per domain and variant, the median over seeds of the final gain.
"""
import json
import os
import statistics
import sys


def load(run):
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
    return lines


def served_head(run):
    """`g` or `f`: what the run evaluates (configs from before the choice served `f`)."""
    with open(os.path.join(run, "config.toml")) as f:
        return "g" if 'served_head = "g"' in f.read() else "f"


def r1(report):
    return 100 * report["recall"][0][1]


def main(out):
    rows, gains = [], {}
    for name in sorted(os.listdir(out)):
        run = os.path.join(out, name)
        if not os.path.isfile(os.path.join(run, "summary.json")):
            continue
        domain, rest = name.split("-", 1)
        variant, seed = rest.rsplit("-s", 1)
        m = load(run)
        start = next((x for x in m if x["epoch"] == 0), None)
        if start is None:
            continue
        base = start["baseline"]
        epochs = [x for x in m if x["epoch"] > 0 and "eval" in x]
        last = epochs[-1]["eval"]
        per_epoch = " / ".join(f"{r1(x['eval']):.2f}" for x in epochs)
        above = all(r1(x["eval"]) > r1(base) for x in epochs)
        t = [x.get("time", {}) for x in m if x["epoch"] > 0]
        sps = statistics.median(x["seconds_per_step"] for x in m if "seconds_per_step" in x)
        tsum = {k: sum(x.get(k, 0) for x in t) for k in ("sampler", "steps", "eval", "checkpoint")}
        rows.append(
            f"| {domain} | {variant} | {seed} | {served_head(run)} | {r1(base):.2f} | {r1(start['eval']):.2f} | {per_epoch} | "
            f"**{r1(last) - r1(base):+.2f}** | {'yes' if above else 'no'} | "
            f"{100 * last['map_at_r']:.2f} ({100 * base['map_at_r']:.2f}) | {100 * last['nmi']:.2f} ({100 * base['nmi']:.2f}) | "
            f"{sps:.2f} | {tsum['sampler']:.0f} / {tsum['steps']:.0f} / {tsum['eval']:.0f} / {tsum['checkpoint']:.0f} |"
        )
        gains.setdefault((domain, variant), []).append(r1(last) - r1(base))
    print("| domain | variant | seed | head | R@1 pretrained pooled | R@1 served head, epoch 0 | R@1 after each epoch | final gain | above pretrained every epoch | MAP@R (pretrained) | NMI (pretrained) | s/step | seconds: sampler / steps / eval / checkpoint |")
    print("|---|---|---|---|---:|---:|---|---:|---|---|---|---:|---|")
    print("\n".join(rows))
    print()
    print("| domain | variant | seeds | median final R@1 gain over the pretrained pooled feature |")
    print("|---|---|---:|---:|")
    for (d, v), g in sorted(gains.items()):
        print(f"| {d} | {v} | {len(g)} | {statistics.median(g):+.2f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/bench")
