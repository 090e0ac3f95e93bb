"""PyTorch reference for the STML training-step benchmark (the Rust side is
trainer/examples/bench_step.rs; scripts/bench_train_step.sh runs both side by side).

An independent implementation written from shared/STML.md, in the style of the authors'
code: a MobileNetV2 with torchvision's structure and parameter names, GAP + GMP pooling,
linear heads f (d) and g (1024), a teacher that is a deep copy (eval mode, no grad, g head
only), vectorised pseudo labels and STML loss, the EMA update, and clovaai's AdamP (Nesterov,
weight decay 1e-2) written inline. One step: student forward on 2B samples, teacher
forward, pseudo labels, loss, zero_grad, backward, EMA, optimizer step.

The backbone loads deps/weights/mobilenet_v2.safetensors when it exists (random weights
otherwise; the timing does not depend on the values). Prints `ready` after warm-up, one line
per timed step, then `median_images_per_s <value>` (B images per step). With `--lockstep` it
waits for a line on stdin before each timed step.

    .venv/bin/python scripts/bench_step.py --batch-size 60 --image-size 64 --threads 2
"""

import argparse
import copy
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# --- MobileNetV2 1.0, torchvision's layout and names ---------------------------------
def conv_bn_relu6(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = cin * t
        layers = [] if t == 1 else [conv_bn_relu6(cin, hidden, 1)]
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class Embedder(nn.Module):
    """MobileNetV2 features, GAP + GMP (added), heads f and g (orthogonal init, bias 0)."""

    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, dim=128, g_dim=1024):
        super().__init__()
        layers, cin = [conv_bn_relu6(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.head_f = nn.Linear(1280, dim)
        self.head_g = nn.Linear(1280, g_dim)
        for head in (self.head_f, self.head_g):
            nn.init.orthogonal_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, x):
        h = self.features(x)
        pooled = F.adaptive_avg_pool2d(h, 1).flatten(1) + F.adaptive_max_pool2d(h, 1).flatten(1)
        f = self.head_f(pooled) if self.head_f is not None else None
        return f, self.head_g(pooled)


# --- STML (shared/STML.md) -----------------------------------------------------------
def pseudo_labels(t_g, idx, sigma=3.0, k=10):
    t = F.normalize(t_g, dim=1)
    w_p = torch.exp(-torch.cdist(t, t).pow(2) / sigma)
    same = idx[:, None] == idx[None, :]
    order = torch.sort(w_p.masked_fill(same, 1.0), dim=1, descending=True, stable=True)[1]
    nn_k = order[:, :k]
    a = torch.zeros_like(w_p).scatter_(1, nn_k, 1.0)
    v = a * a.t()
    w_tilde = v * (v @ v) / v.sum(1, keepdim=True).clamp_min(1.0)
    h = max(1, round(k / 2))  # Python's round is half to even, as np.around
    w_hat = w_tilde[nn_k[:, :h]].mean(1)
    return (w_p + (w_hat + w_hat.t()) / 2) / 2


def norm_dist(e):
    n = e.shape[0]
    off = 1 - torch.eye(n, dtype=e.dtype)
    d = torch.cdist(e, e) * off
    return d / d.mean(1, keepdim=True)


def rc_loss(e, w, delta=1.0):
    n = e.shape[0]
    d = norm_dist(e)
    off = 1 - torch.eye(n, dtype=e.dtype)
    loss = w * d.pow(2) + (1 - w) * F.relu(delta - d).pow(2)
    return (loss * off).sum() / (n * (n - 1))


def kl_loss(f, g):
    log_p = F.log_softmax(-norm_dist(g.detach()), 1)
    log_q = F.log_softmax(-norm_dist(f), 1)
    return (log_p.exp() * (log_p - log_q)).sum() / f.shape[0]


@torch.no_grad()
def momentum_update(teacher, student, m):
    s_state = student.state_dict()
    for name, t in teacher.state_dict().items():
        if t.is_floating_point():
            t.mul_(m).add_(s_state[name], alpha=1 - m)
        else:
            t.copy_(s_state[name])


# --- AdamP (clovaai/AdamP, Heo et al. 2021), written inline ----------------------------
class AdamP(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 delta=0.1, wd_ratio=0.1, nesterov=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      delta=delta, wd_ratio=wd_ratio, nesterov=nesterov))

    @staticmethod
    def _projection(p, grad, perturb, delta, wd_ratio, eps):
        expand = [-1] + [1] * (p.dim() - 1)
        for view in (lambda x: x.view(x.size(0), -1), lambda x: x.view(1, -1)):
            cos = F.cosine_similarity(view(grad), view(p), dim=1, eps=eps).abs_()
            if cos.max() < delta / math.sqrt(view(p).size(1)):
                p_n = p / view(p).norm(dim=1).view(expand).add_(eps)
                perturb -= p_n * view(p_n * perturb).sum(dim=1).view(expand)
                return perturb, wd_ratio
        return perturb, 1.0

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, state = p.grad, self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                m, v = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                bc1, bc2 = 1 - beta1 ** state["step"], 1 - beta2 ** state["step"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
                if group["nesterov"]:
                    perturb = (beta1 * m + (1 - beta1) * grad) / denom
                else:
                    perturb = m / denom
                wd = 1.0
                if p.dim() > 1:
                    perturb, wd = self._projection(p, grad, perturb, group["delta"],
                                                   group["wd_ratio"], group["eps"])
                if group["weight_decay"] > 0:
                    p.mul_(1 - group["lr"] * group["weight_decay"] * wd)
                p.add_(perturb, alpha=-group["lr"] / bc1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=60)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--breakdown", action="store_true", help="also time each part of the step")
    ap.add_argument("--bn-freeze", action="store_true",
                    help="batch norm in eval mode with frozen affine parameters (the trainer's default)")
    ap.add_argument("--lockstep", action="store_true",
                    help="take each timed step only when a line arrives on stdin (stop at its end)")
    ap.add_argument("--weights", default=os.path.join(os.environ.get("STML_DEPS", "deps"),
                                                      "weights", "mobilenet_v2.safetensors"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads if args.threads > 0 else os.cpu_count())
    torch.manual_seed(0)

    student = Embedder()
    source = "random"
    try:
        from safetensors.torch import load_file
    except ImportError:  # random weights then: the timing does not depend on the values
        load_file = None
    if load_file is not None and os.path.exists(args.weights):
        missing, unexpected = student.load_state_dict(load_file(args.weights), strict=False)
        assert not unexpected and all(k.startswith("head_") or k.endswith("num_batches_tracked")
                                      for k in missing), (missing, unexpected)
        source = "pretrained"
    teacher = copy.deepcopy(student)
    teacher.head_f = None
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.train()
    if args.bn_freeze:
        for m in student.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
                m.weight.requires_grad_(False)
                m.bias.requires_grad_(False)
    heads = [p for n, p in student.named_parameters() if n.startswith("head_")]
    backbone = [p for n, p in student.named_parameters() if not n.startswith("head_") and p.requires_grad]
    opt = AdamP([dict(params=backbone, lr=1e-4), dict(params=heads, lr=1e-4)])

    b, s = args.batch_size, args.image_size
    x = torch.randn(2 * b, 3, s, s)
    idx = torch.arange(b).repeat(2)  # two views, view-major as the Rust loader

    parts = ["student forward", "teacher forward", "pseudo labels", "loss", "zero_grad",
             "backward", "ema", "optimizer"]
    laps = {name: [] for name in parts}

    def step():
        clock = [time.perf_counter()]

        def lap(name):
            now = time.perf_counter()
            laps[name].append(now - clock[0])
            clock[0] = now

        f, g = student(x)
        lap("student forward")
        with torch.no_grad():
            t_g = teacher(x)[1]
            lap("teacher forward")
            w = pseudo_labels(t_g, idx, sigma=3.0, k=5 * 2)
            lap("pseudo labels")
        loss = (rc_loss(f, w) + rc_loss(g, w)) / 2 + kl_loss(f, g)
        lap("loss")
        opt.zero_grad()
        lap("zero_grad")
        loss.backward()
        lap("backward")
        momentum_update(teacher, student, 0.999)
        lap("ema")
        opt.step()
        lap("optimizer")
        value = loss.item()
        assert math.isfinite(value), value
        return value

    print(f"pytorch bench_step: MobileNetV2 ({source}), d = 128, g = 1024, B = {b} ({2 * b} samples), "
          f"S = {s}, {torch.get_num_threads()} threads, {args.warmup} warm-up + {args.steps} timed steps")
    for _ in range(args.warmup):
        step()
    print("ready", flush=True)
    times = []
    for i in range(args.steps):
        if args.lockstep and not sys.stdin.readline():
            break
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        times.append(dt)
        print(f"step {i + 1:>3}: {dt * 1e3:8.1f} ms  {b / dt:7.1f} img/s  loss {loss:.4f}", flush=True)
    if args.breakdown:
        medians = {name: statistics.median(v[-len(times):]) for name, v in laps.items()}
        total = sum(medians.values())
        print("breakdown (median per step):")
        for name, secs in medians.items():
            print(f"  {name:<16} {secs * 1e3:8.2f} ms  {100 * secs / total:5.1f} %")
    med = statistics.median(times)
    print(f"median_step_ms {med * 1e3:.2f}")
    print(f"median_images_per_s {b / med:.3f}")


if __name__ == "__main__":
    main()
