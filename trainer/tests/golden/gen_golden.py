"""Independent float64 reference for the STML parts of the trainer.

Written from ../../../../shared/STML.md (the steps are numbered as there) and from the
AdamP algorithm of Heo et al. (ICLR 2021, clovaai/AdamP), NOT from the Rust code. It uses
explicit, readable loops wherever that makes the maths obviously right, and writes small
fixed inputs with the expected outputs next to itself:

    similarity.safetensors  W_P, W_C, W for several (N, k, view) cases, ties included
    loss.safetensors        RC(f, W), RC(g, W), KL(f, g), the total and its gradients
    optim.safetensors       two AdamP steps (channel-, layer- and no projection, 1-D),
                            AdamW and SGD (torch.optim as the reference), cosine lr

Run from the repository root:  .venv/bin/python trainer/tests/golden/gen_golden.py
"""

import math
import os

import numpy as np
import torch
from safetensors.torch import save_file

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))


def scalar(x):
    return torch.tensor([float(x)])


# ---------------------------------------------------------------------------------------
# Contextualized semantic similarity (STML.md steps 1-8)
# ---------------------------------------------------------------------------------------
def normalize(x):
    return torch.stack([row / row.norm() for row in x])


def pairwise_similarity(t, sigma):
    """Step 1: W_P[i,j] = exp(-||t_i - t_j||^2 / sigma)."""
    n = t.shape[0]
    w_p = torch.zeros(n, n)
    for i in range(n):
        for j in range(n):
            w_p[i, j] = math.exp(-float(((t[i] - t[j]) ** 2).sum()) / sigma)
    return w_p


def contextual_similarity(w_p, idx, k):
    """Steps 2-7: k-reciprocal neighbourhoods, their overlap, query expansion, symmetry."""
    n = w_p.shape[0]
    idx = [int(v) for v in idx]
    # Step 2: views of the same image (and the diagonal) are certain neighbours.
    ranked = w_p.clone()
    for i in range(n):
        for j in range(n):
            if idx[i] == idx[j]:
                ranked[i, j] = 1.0
    # Step 3: the k largest entries of each row; Python's sort is stable, so ties go to
    # the lower index first.
    nn_k = []
    for i in range(n):
        order = sorted(range(n), key=lambda j: -float(ranked[i, j]))
        nn_k.append(order[:k])
    a = [[1 if j in nn_k[i] else 0 for j in range(n)] for i in range(n)]
    # Step 4: k-reciprocal neighbours.
    r = [set(j for j in range(n) if a[i][j] == 1 and a[j][i] == 1) for i in range(n)]
    # Step 5: contextual similarity.
    w_tilde = torch.zeros(n, n)
    for i in range(n):
        for j in r[i]:
            w_tilde[i, j] = len(r[i] & r[j]) / len(r[i])
    # Step 6: query expansion over the first h = round-half-even(k / 2) neighbours.
    h = int(np.around(k / 2))
    w_hat = torch.zeros(n, n)
    for i in range(n):
        for j in nn_k[i][:h]:
            w_hat[i] += w_tilde[j] / h
    # Step 7: symmetrise.
    return (w_hat + w_hat.T) / 2


def views_case(gen, images, view, dim, clusters, shuffle):
    """Teacher embeddings for `images` images seen `view` times: images share a few
    cluster centres, views are small perturbations of their image."""
    centres = torch.randn(clusters, dim, generator=gen)
    image_emb = torch.stack([centres[i % clusters] + 0.6 * torch.randn(dim, generator=gen) for i in range(images)])
    idx = torch.arange(images).repeat(view)
    teacher = torch.stack([image_emb[i] + 0.25 * torch.randn(dim, generator=gen) for i in idx.tolist()])
    if shuffle:
        perm = torch.randperm(len(idx), generator=gen)
        idx, teacher = idx[perm], teacher[perm]
    return teacher * 3.0, idx


SIMILARITY_CASES = [
    # name, images, view, k, shuffle
    ("v2_k4", 6, 2, 4, False),
    ("v2_k2", 6, 2, 2, False),  # h = 1: the tie between a sample and its twin decides NN_h
    ("v2_k3", 7, 2, 3, True),   # odd k: h = round(1.5) = 2
    ("v2_k5", 7, 2, 5, True),   # h = round(2.5) = 2 (half to even)
    ("v2_k10", 10, 2, 10, False),  # the paper's CUB setting: h = 5
    ("v3_k2", 4, 3, 2, False),  # three tied ones per row, only two fit into NN_k
    ("v3_k4", 5, 3, 4, True),
]


def similarity_golden(gen):
    out = {}
    sigma = 3.0
    for name, images, view, k, shuffle in SIMILARITY_CASES:
        teacher, idx = views_case(gen, images, view, dim=8, clusters=3, shuffle=shuffle)
        t = normalize(teacher)
        w_p = pairwise_similarity(t, sigma)
        w_c = contextual_similarity(w_p, idx, k)
        w = (w_p + w_c) / 2  # step 8
        out.update({
            f"{name}.teacher": teacher,
            f"{name}.t": t,
            f"{name}.idx": idx.to(torch.int64),
            f"{name}.sigma": scalar(sigma),
            f"{name}.k": torch.tensor([k], dtype=torch.int64),
            f"{name}.w_p": w_p,
            f"{name}.w_c": w_c,
            f"{name}.w": w,
        })
    return out


# ---------------------------------------------------------------------------------------
# Relaxed contrastive loss and self-distillation
# ---------------------------------------------------------------------------------------
def normalized_distances(e):
    """D[i,j] = ||e_i - e_j||, each row divided by its own mean (zero diagonal included)."""
    n = e.shape[0]
    rows = []
    for i in range(n):
        row = [((e[i] - e[j]) ** 2).sum().sqrt() if i != j else torch.zeros(()) for j in range(n)]
        row = torch.stack(row)
        rows.append(row / row.mean())
    return torch.stack(rows)


def relaxed_contrastive(e, w, delta):
    n = e.shape[0]
    d = normalized_distances(e)
    total = torch.zeros(())
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            total = total + w[i, j] * d[i, j] ** 2 + (1 - w[i, j]) * torch.clamp(delta - d[i, j], min=0) ** 2
    return total / (n * (n - 1))


def self_distillation(f, g):
    n = f.shape[0]
    d_f = normalized_distances(f)
    d_g = normalized_distances(g.detach())
    total = torch.zeros(())
    for i in range(n):
        p = torch.exp(-d_g[i]) / torch.exp(-d_g[i]).sum()
        q = torch.exp(-d_f[i]) / torch.exp(-d_f[i]).sum()
        for j in range(n):
            total = total + p[j] * (torch.log(p[j]) - torch.log(q[j]))
    return total / n


LOSS_CASES = [
    # name, images, view, k, delta, f dim, g dim
    ("n12", 6, 2, 4, 1.0, 4, 6),
    ("n16_sop", 8, 2, 4, 0.9, 5, 7),
]


def loss_golden(gen):
    out = {}
    for name, images, view, k, delta, fdim, gdim in LOSS_CASES:
        teacher, idx = views_case(gen, images, view, dim=8, clusters=3, shuffle=False)
        w_p = pairwise_similarity(normalize(teacher), 3.0)
        w = (w_p + contextual_similarity(w_p, idx, k)) / 2
        f = (2.0 * torch.randn(images * view, fdim, generator=gen)).requires_grad_()
        g = (2.0 * torch.randn(images * view, gdim, generator=gen)).requires_grad_()
        rc_f = relaxed_contrastive(f, w, delta)
        rc_g = relaxed_contrastive(g, w, delta)
        kl = self_distillation(f, g)
        total = (rc_f + rc_g) / 2 + kl
        grad_f, grad_g = torch.autograd.grad(total, [f, g])
        out.update({
            f"{name}.f": f.detach(),
            f"{name}.g": g.detach(),
            f"{name}.w": w,
            f"{name}.delta": scalar(delta),
            f"{name}.rc_f": rc_f.detach().reshape(1),
            f"{name}.rc_g": rc_g.detach().reshape(1),
            f"{name}.kl": kl.detach().reshape(1),
            f"{name}.total": total.detach().reshape(1),
            f"{name}.grad_f": grad_f,
            f"{name}.grad_g": grad_g,
        })
    return out


# ---------------------------------------------------------------------------------------
# AdamP (Heo et al., ICLR 2021), one parameter at a time, as in clovaai/AdamP
# ---------------------------------------------------------------------------------------
def adamp_projection(p, grad, perturb, delta, wd_ratio, eps):
    """Try the channel view ([out, rest]) then the layer view ([1, all]): if the gradient is
    nearly orthogonal to the weight in every row (|cos| < delta / sqrt(row length)), the
    weight is scale-invariant there, so remove the radial part of the update."""
    for rows in (p.shape[0], 1):
        p_view = p.reshape(rows, -1)
        g_view = grad.reshape(rows, -1)
        cos = [abs(float(torch.dot(g_view[r], p_view[r])) / max(float(g_view[r].norm()) * float(p_view[r].norm()), eps))
               for r in range(rows)]
        if max(cos) < delta / math.sqrt(p_view.shape[1]):
            perturb_view = perturb.reshape(rows, -1).clone()
            for r in range(rows):
                unit = p_view[r] / (p_view[r].norm() + eps)
                perturb_view[r] = perturb_view[r] - unit * torch.dot(unit, perturb_view[r])
            return perturb_view.reshape(p.shape), wd_ratio
    return perturb, 1.0


def adamp_step(p, grad, state, lr, betas, eps, weight_decay, delta, wd_ratio, nesterov):
    beta1, beta2 = betas
    state["step"] += 1
    state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * grad
    state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1 ** state["step"]
    bias_correction2 = 1 - beta2 ** state["step"]
    denom = state["exp_avg_sq"].sqrt() / math.sqrt(bias_correction2) + eps
    step_size = lr / bias_correction1
    if nesterov:
        perturb = (beta1 * state["exp_avg"] + (1 - beta1) * grad) / denom
    else:
        perturb = state["exp_avg"] / denom
    ratio = 1.0
    if p.dim() > 1:
        perturb, ratio = adamp_projection(p, grad, perturb, delta, wd_ratio, eps)
    if weight_decay > 0:
        p = p * (1 - lr * weight_decay * ratio)
    return p - step_size * perturb


def orthogonal_rows(gen, p, rows):
    """A gradient orthogonal to p in every row of the [rows, -1] view."""
    g = torch.randn(p.shape, generator=gen).reshape(rows, -1)
    pv = p.reshape(rows, -1)
    for r in range(rows):
        g[r] = g[r] - pv[r] * torch.dot(g[r], pv[r]) / torch.dot(pv[r], pv[r])
    return g.reshape(p.shape)


def opposed_rows(p):
    """A [2, n] gradient parallel to each row (channel |cos| = 1) whose row contributions
    cancel, so the whole-layer cosine is 0: only the layer view projects."""
    return torch.stack([p[0], -p[1] * torch.dot(p[0], p[0]) / torch.dot(p[1], p[1])])


def optim_golden(gen):
    out = {}
    params = {
        "conv": torch.randn(4, 3, 3, 3, generator=gen),   # channel view projects
        "layer": torch.randn(2, 8, generator=gen),        # layer view projects
        "linear": torch.randn(3, 5, generator=gen),       # no projection
        "bias": torch.randn(5, generator=gen),            # 1-D: never projected
    }
    groups = [("conv", 0), ("bias", 0), ("layer", 1), ("linear", 1)]
    lrs = [1e-3, 1e-2]
    out["group_lr"] = torch.tensor(lrs)

    def grad_for(name, p):
        if name == "conv":
            return orthogonal_rows(gen, p, p.shape[0]) * 0.5
        if name == "layer":
            return opposed_rows(p) * 0.3
        return 0.7 * p + 0.2 * torch.randn(p.shape, generator=gen)

    # The same gradients drive every optimiser; each gradient is built from the AdamP
    # parameters at that step, so the projection conditions hold when AdamP sees them.
    for nesterov in (True, False):
        tag = "adamp_nesterov" if nesterov else "adamp"
        ps = {n: t.clone() for n, t in params.items()}
        state = {n: {"step": 0, "exp_avg": torch.zeros_like(t), "exp_avg_sq": torch.zeros_like(t)} for n, t in params.items()}
        for step in (1, 2):
            for name, group in groups:
                grad = grad_for(name, ps[name]) if nesterov else out[f"adamp_nesterov.step{step}.{name}.grad"]
                if nesterov:
                    out[f"{tag}.step{step}.{name}.grad"] = grad
                ps[name] = adamp_step(ps[name], grad, state[name], lr=lrs[group], betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=1e-2, delta=0.1, wd_ratio=0.1, nesterov=nesterov)
                out[f"{tag}.step{step}.{name}.param"] = ps[name]
    for name, t in params.items():
        out[f"init.{name}"] = t

    # AdamW and SGD: torch.optim itself is the reference.
    for tag in ("adamw", "sgd", "sgd_nesterov"):
        ps = [torch.nn.Parameter(params[name].clone()) for name, _ in groups]
        param_groups = [
            {"params": [ps[i] for i, (_, g) in enumerate(groups) if g == 0], "lr": lrs[0]},
            {"params": [ps[i] for i, (_, g) in enumerate(groups) if g == 1], "lr": lrs[1]},
        ]
        if tag == "adamw":
            opt = torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
        else:
            opt = torch.optim.SGD(param_groups, momentum=0.9, weight_decay=1e-2, nesterov=tag == "sgd_nesterov")
        for step in (1, 2):
            for i, (name, _) in enumerate(groups):
                ps[i].grad = out[f"adamp_nesterov.step{step}.{name}.grad"].clone()
            opt.step()
            for i, (name, _) in enumerate(groups):
                out[f"{tag}.step{step}.{name}.param"] = ps[i].detach().clone()

    # Cosine annealing stepped once per epoch.
    for tag, base, total, eta_min in (("cos_t5", 1e-4, 5, 0.0), ("cos_t10", 1e-2, 10, 1e-5)):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=base)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=eta_min)
        lrs_seen = []
        for _ in range(total + 1):
            lrs_seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out[f"{tag}.lr"] = torch.tensor(lrs_seen)
        out[f"{tag}.params"] = torch.tensor([base, float(total), eta_min])
    return out


def main():
    gen = torch.Generator().manual_seed(20220501)
    for file, tensors in (
        ("similarity.safetensors", similarity_golden(gen)),
        ("loss.safetensors", loss_golden(gen)),
        ("optim.safetensors", optim_golden(gen)),
    ):
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(tensors, os.path.join(HERE, file))
        print(f"wrote {file}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
