#!/usr/bin/env python3
"""Markdown summary of a scripts/bench_serving.sh run (reads its WORK/logs folder).

    LOG=target/bench_serving/logs REPEATS=3 CONCURRENCY="1 8 32" GALLERIES="png96 jpg224" \\
        python3 scripts/bench_serving_table.py
"""

import datetime
import os
import re
import statistics

LOG = os.environ["LOG"]
REPEATS = int(os.environ["REPEATS"])
CONC = [int(c) for c in os.environ["CONCURRENCY"].split()]
GALLERIES = os.environ["GALLERIES"].split()
med = statistics.median
NAMES = {"png96": "128-px PNGs, 96-px model", "jpg224": "1-megapixel JPEGs, 224-px model"}


def fields(path):
    return {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.e+-]+)", open(path).read())}


def wrk(g, server, r, c, close):
    x = fields(f"{LOG}/{g}-{server}-{r}-c{c}-close{close}")
    seconds = x["duration_us"] / 1e6
    return {
        "qps": (x["requests"] - x["errors"]) / seconds,
        "p50": x["p50_us"] / 1e3,
        "p99": x["p99_us"] / 1e3,
        "errors": x["errors"],
        "cpu": (x["user_s"] + x["sys_s"]) / max(x["wall_s"], 1e-9),
    }


def one_session_best(g, r):
    """Raw ONNX Runtime's best batch (1, 8 or 32) on the one session of all the cores in
    repeat r: the "raw" of issue 11's own table (one session, 2 threads), which the
    server's streams outrun."""
    return max(fields(f"{LOG}/{g}-ort-{r}-b{b}")["images_per_second"] for b in (1, 8, 32))


def beside_raw(g, r, c, close):
    """Raw ONNX Runtime's best configuration, mean of right before and right after a load."""
    return statistics.mean(fields(f"{LOG}/{g}-beside-{r}-c{c}-close{close}-{when}")["images_per_second"]
                           for when in ("before", "after"))


cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
print(f"Machine: {os.cpu_count()} CPUs, {cpu}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
      f"load average at the end {' '.join(open('/proc/loadavg').read().split()[:3])}. "
      f"Medians of {REPEATS} repeat(s), {os.environ.get('DURATION', '?')} s of wrk each.")
for g in GALLERIES:
    raw = {b: [fields(f"{LOG}/{g}-ort-{r}-b{b}")["images_per_second"] for r in range(1, REPEATS + 1)] for b in (1, 8, 32)}
    decode = med(fields(f"{LOG}/{g}-ort-{r}-b1")["decode_ms"] for r in range(1, REPEATS + 1))
    streams = {b: [fields(f"{LOG}/{g}-orts-{r}-b{b}")["images_per_second"] for r in range(1, REPEATS + 1)]
               for b in (8, 32)}
    best = max(med(v) for v in [*raw.values(), *streams.values()])
    one = 1e3 / med(raw[1])
    print()
    head = os.environ.get("HEAD", "f")
    print(f"### {NAMES.get(g, g)}" + ("" if head == "f" else f", the model's `{head}` (`HEAD={head}`)"))
    print()
    print(f"Raw ONNX Runtime (the server's library and settings): batch 1 {med(raw[1]):.0f} img/s "
          f"({one:.2f} ms), batch 8 {med(raw[8]):.0f}, batch 32 {med(raw[32]):.0f} img/s; on all its streams "
          f"at once, batch 8 {med(streams[8]):.0f}, batch 32 {med(streams[32]):.0f} img/s; decode + preprocess "
          f"{decode:.2f} ms per query file. Target at c = 1 with keep-alive: p50 <= {one + decode + 1.5:.2f} ms; "
          f"at saturation >= {0.85 * best:.0f} QPS (0.85 x {best:.0f}).")
    print()
    print("| c | connections | this server: QPS (p50 / p99 ms) | Python baseline: QPS (p50 / p99 ms) "
          "| server / Python | server / raw best | server / raw beside it | server / one session's best "
          "| errors (server, Python) "
          "| client CPU (server, Python) |")
    print("|---:|---|---|---|---:|---:|---:|---:|---|---|")
    for c in CONC:
        for close in (0, 1):
            rs = [wrk(g, "rust", r, c, close) for r in range(1, REPEATS + 1)]
            ps = [wrk(g, "python", r, c, close) for r in range(1, REPEATS + 1)]
            m = lambda xs, k: med(x[k] for x in xs)  # noqa: E731
            ratio = med(a["qps"] / max(b["qps"], 1e-9) for a, b in zip(rs, ps))
            beside = med(a["qps"] / beside_raw(g, r, c, close) for r, a in enumerate(rs, 1))
            one_session = med(a["qps"] / one_session_best(g, r) for r, a in enumerate(rs, 1))
            print(f"| {c} | {'new per request' if close else 'keep-alive'} "
                  f"| {m(rs, 'qps'):.0f} ({m(rs, 'p50'):.1f} / {m(rs, 'p99'):.1f}) "
                  f"| {m(ps, 'qps'):.0f} ({m(ps, 'p50'):.1f} / {m(ps, 'p99'):.1f}) "
                  f"| {ratio:.2f} | {m(rs, 'qps') / best:.2f} | {beside:.2f} | {one_session:.2f} "
                  f"| {int(sum(x['errors'] for x in rs))}, {int(sum(x['errors'] for x in ps))} "
                  f"| {100 * m(rs, 'cpu'):.0f} %, {100 * m(ps, 'cpu'):.0f} % |")
    idx = fields(f"{LOG}/{g}-index-rate").get("images_per_second", float("nan"))
    batch = max((fields(f"{LOG}/{g}-index-{k}-before")["images_per_second"]
                 + fields(f"{LOG}/{g}-index-{k}-after")["images_per_second"]) / 2 for k in ("ort", "orts"))
    rss = fields(f"{LOG}/{g}-rss")
    print()
    print(f"`server index`: {idx:.0f} images/s, {idx / batch:.2f}x raw batch-16 throughput ({batch:.0f} img/s: "
          f"the better of the wide session and all streams at once, mean of before and after). Resident memory at the end: this server "
          f"{rss['rust_rss_kb'] / 1024:.0f} MiB, the Python baseline {rss['python_rss_kb'] / 1024:.0f} MiB.")
