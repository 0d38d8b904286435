#!/usr/bin/env python3
"""PyTorch peer of examples/bnn_mnist: the same four methods (det, mcdropout,
bbb, ensemble), the same 784-H-H-10 ReLU network, optimizer (Adam, lr 1e-3,
batch 128), data order (our batcher's shuffle, re-implemented below: xoshiro256**
seeded through splitmix64, Lemire's bounded draw, Fisher-Yates per epoch) and
the same metric definitions (nn/metrics.c): ECE with 15 equal-width bins
(lo, hi], Brier summed over classes, NLL with p floored at 1e-12, accuracy on
the ceil(c n) most confident, AUROC with ties counted half, mutual information
as mean_s KL(p_s || pbar). Initial weights and noise come from torch's RNG, so
numbers match ours in distribution, not bit for bit.

usage: torch_bnn.py [--method all] [--data DIR] [--ood-data DIR] [--epochs 10]
                    [--samples 30] [--members 5] [--threads 1] [--seed 1]
                    [--no-share]

At prediction, S noisy passes of one net compute the first layer's noise-free
part once per 1,000-image chunk (as bnn_mnist does): the same samples as S
full passes; --no-share runs S full passes. Bayes by Backprop's sigma^2 =
softplus(rho)^2 is computed once per prediction, not once per pass (as
bnn_mnist does).
"""
import argparse
import gzip
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

M64 = (1 << 64) - 1
clock = time.perf_counter  # --cpu-time: time.process_time
METHODS = ["det", "mcdropout", "bbb", "ensemble"]


# ---- our RNG and batch order (nn/rng.c, nn/batcher.c) ----------------------

def _splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


class Rng:
    def __init__(self, seed, stream):
        a, b = seed & M64, (stream ^ 0x6A09E667F3BCC909) & M64
        a, za = _splitmix(a)
        b, zb = _splitmix(b)
        key = za ^ _rotl(zb, 17)
        self.s = []
        for _ in range(4):
            key, z = _splitmix(key)
            self.s.append(z)

    def u64(self):
        s = self.s
        out = (_rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return out

    def below(self, n):
        m = (self.u64() >> 32) * n
        low = m & 0xFFFFFFFF
        if low < n:
            threshold = ((1 << 32) - n) % n
            while low < threshold:
                m = (self.u64() >> 32) * n
                low = m & 0xFFFFFFFF
        return m >> 32


def epoch_order(n, seed, epoch):
    rng = Rng(seed, 0x6261746368000000 ^ epoch)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


# ---- data ------------------------------------------------------------------

def read_idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                data = f.read()
            ndim = data[3]
            dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
            return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    sys.exit(f"torch_bnn.py: {path}: no such file (raw or .gz)")


def load(folder, train):
    prefix = "train" if train else "t10k"
    x = read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(y.astype(np.int64))


# ---- models ----------------------------------------------------------------

class BayesLinear(nn.Module):
    """Factorised Gaussian posterior, local reparameterization, closed-form
    KL to N(0, prior^2): tg_bayes_dense's twin."""

    def __init__(self, n_in, n_out, prior, rho_init):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        self.w_mu = nn.Parameter(torch.empty(n_out, n_in).uniform_(-bound, bound))
        self.b_mu = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))
        self.w_rho = nn.Parameter(torch.full((n_out, n_in), rho_init))
        self.b_rho = nn.Parameter(torch.full((n_out,), rho_init))
        self.prior = prior
        self.fixed = None  # (sigma_W^2, sigma_b^2) while predicting

    def variances(self):
        if self.fixed is not None:
            return self.fixed
        return F.softplus(self.w_rho) ** 2, F.softplus(self.b_rho) ** 2

    def forward(self, x, sample=True):
        mean = F.linear(x, self.w_mu, self.b_mu)
        if not sample:
            return mean
        var = F.linear(x * x, *self.variances())
        return mean + var.sqrt() * torch.randn_like(mean)

    def kl(self):
        total = 0.0
        for mu, rho in ((self.w_mu, self.w_rho), (self.b_mu, self.b_rho)):
            s = F.softplus(rho)
            total = total + (math.log(self.prior) - torch.log(s)
                             + (s * s + mu * mu) / (2 * self.prior ** 2)
                             - 0.5).sum()
        return total


class Net(nn.Module):
    def __init__(self, method, hidden, args):
        super().__init__()
        dims = [784, hidden, hidden, 10]
        self.bayes = method == "bbb"
        self.p = args.dropout if method == "mcdropout" else 0.0
        if self.bayes:
            self.layers = nn.ModuleList(
                BayesLinear(dims[i], dims[i + 1], args.prior_scale, args.rho_init)
                for i in range(3))
        else:
            self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1])
                                        for i in range(3))

    def forward(self, x, noisy, first=0):
        """Layers first..2 on x (layer first's input)."""
        h = x
        for i in range(first, 3):
            layer = self.layers[i]
            h = layer(h, noisy) if self.bayes else layer(h)
            if i < 2:
                h = F.relu(h)
                if self.p > 0 and noisy:
                    h = F.dropout(h, self.p, training=True)
        return h

    def first_layer(self, x):
        """What precedes layer 1's noise, the same every pass: bbb's
        pre-activation mean and sd, mcdropout's ReLU output."""
        l0 = self.layers[0]
        if self.bayes:
            return (F.linear(x, l0.w_mu, l0.b_mu),
                    F.linear(x * x, *l0.variances()).sqrt())
        return F.relu(l0(x)), None

    def from_first(self, shared):
        """One noisy pass given first_layer's output."""
        a, sd = shared
        if self.bayes:
            h = F.relu(a + sd * torch.randn_like(a))
        else:
            h = F.dropout(a, self.p, training=True)
        return self(h, True, first=1)

    def kl(self):
        return sum(layer.kl() for layer in self.layers)


def train(net, x, y, args, seed):
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    n = len(x)
    noisy = net.bayes or net.p > 0
    seen = 0
    order_time = 0.0
    batches = (n + args.batch - 1) // args.batch
    if args.max_batches:
        batches = min(batches, args.max_batches)
    # bbb: the NLL averaged over K posterior samples; the KL's weight rises
    # linearly from 1/(W n) to 1/n over W = kl_warmup epochs' batches
    K = args.train_samples if net.bayes else 1
    step, warm = 0, args.kl_warmup * batches
    t0 = clock()
    for epoch in range(1, args.epochs + 1):
        t_order = clock()
        order = torch.tensor(epoch_order(n, seed, epoch))
        order_time += clock() - t_order
        for b in range(batches):
            idx = order[b * args.batch:(b + 1) * args.batch]
            xb, yb = x[idx], y[idx]
            loss = sum(F.cross_entropy(net(xb, noisy), yb) for _ in range(K)) / K
            step += 1
            if net.bayes:
                beta = step / warm if warm > step else 1.0
                loss = loss + beta * net.kl() / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    # the shuffle in pure Python is not PyTorch's cost: left out of the time
    return clock() - t0 - order_time, seen


@torch.no_grad()
def predict(nets, S, noisy, x, share=True):
    """With share (bnn_mnist does the same) S noisy passes of one net compute
    the first layer's noise-free part once per chunk (see first_layer)."""
    out = torch.empty(S, len(x), 10, dtype=torch.float64)
    share = share and noisy and len(nets) == 1
    # sigma^2 does not change while predicting: once, not once per pass
    # (bnn_mnist's tg_bayes_mlp_sample does the same)
    bayes = [l for net in nets if net.bayes for l in net.layers]
    for layer in bayes:
        layer.fixed = None
        layer.fixed = layer.variances()
    for first in range(0, len(x), 1000):
        xs = x[first:first + 1000]
        shared = nets[0].first_layer(xs) if share else None
        for s in range(S):
            net = nets[s] if len(nets) > 1 else nets[0]
            logits = (net.from_first(shared) if share
                      else net(xs, noisy)).double()
            out[s, first:first + len(xs)] = torch.softmax(logits, dim=1)
    for layer in bayes:
        layer.fixed = None
    return out.float().numpy()


# ---- metrics (nn/metrics.c) --------------------------------------------------

def predictive(samples):
    s = samples.astype(np.float64)
    pbar = s.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = lambda p: -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
        total = ent(pbar)
        aleatoric = ent(s).mean(axis=0)
        mi = np.where(s > 0, s * (np.log(s) - np.log(pbar)[None]), 0.0)
        mi = np.maximum(mi.sum(axis=-1).mean(axis=0), 0.0)
    return pbar.astype(np.float32), total, aleatoric, mi


def ece(p, y, bins=15):
    conf = p.max(axis=1).astype(np.float64)
    correct = p.argmax(axis=1) == y
    b = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for k in range(bins):
        m = b == k
        if m.any():
            total += abs(correct[m].mean() - conf[m].mean()) * m.sum() / len(y)
    return total


def acc_at_coverage(p, y, c):
    conf = p.max(axis=1).astype(np.float64)
    order = np.lexsort((np.arange(len(y)), -conf))
    keep = max(1, math.ceil(c * len(y) - 1e-9))
    return (p.argmax(axis=1)[order[:keep]] == y[order[:keep]]).mean()


def auroc(neg, pos):
    v = np.concatenate([neg, pos])
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    ranks = np.empty(len(v))
    i = 0
    while i < len(v):
        j = i
        while j < len(v) and sv[j] == sv[i]:
            j += 1
        ranks[order[i:j]] = 0.5 * (i + 1 + j)
        i = j
    rpos = ranks[len(neg):].sum()
    return (rpos - 0.5 * len(pos) * (len(pos) + 1)) / (len(pos) * len(neg))


def run(method, args, train_set, test, ood):
    x, y = train_set
    n_nets = args.members if method == "ensemble" else 1
    S = {"det": 1, "ensemble": args.members}.get(method, args.samples)
    nets, train_s, seen = [], 0.0, 0
    for k in range(n_nets):
        seed = args.seed + 1000003 * k
        torch.manual_seed(seed)
        net = Net(method, args.hidden, args)
        dt, n = train(net, x, y, args, seed)
        train_s, seen = train_s + dt, seen + n
        nets.append(net)
    noisy = method in ("mcdropout", "bbb")
    torch.manual_seed(args.seed + 2)
    t0 = clock()
    share = not args.no_share
    st = predict(nets, S, noisy, test[0], share)
    so = predict(nets, S, noisy, ood[0], share) if ood is not None else None
    infer_s = clock() - t0
    yt = test[1].numpy()
    p, total, _, mi = predictive(st)
    row = {"method": method,
           "acc": (p.argmax(1) == yt).mean(),
           "nll": -np.log(np.maximum(p[np.arange(len(yt)), yt].astype(np.float64), 1e-12)).mean(),
           "brier": ((p.astype(np.float64) - np.eye(10)[yt]) ** 2).sum(1).mean(),
           "ece": ece(p, yt),
           "acc90": acc_at_coverage(p, yt, 0.9),
           "acc80": acc_at_coverage(p, yt, 0.8),
           "train": seen / n_nets / train_s,
           "infer": (len(yt) + (len(ood[0]) if ood is not None else 0)) / infer_s,
           "H": float("nan"), "MI": float("nan"), "MSP": float("nan")}
    if ood is not None:
        po, total_o, _, mi_o = predictive(so)
        row["H"] = auroc(total, total_o)
        row["MI"] = auroc(mi, mi_o) if S > 1 else float("nan")
        row["MSP"] = auroc(-p.max(1).astype(np.float64), -po.max(1).astype(np.float64))
    return row


RHO_END = -3.6


def rho_init_auto(args, n_train):
    """bnn_mnist's default: under the KL's pull each rho rises by about lr
    per Adam step, so starting at RHO_END - lr x steps ends sigma near
    softplus(RHO_END)."""
    batches = (n_train + args.batch - 1) // args.batch
    if args.max_batches:
        batches = min(batches, args.max_batches)
    return max(-30.0, RHO_END - args.lr * batches * args.epochs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="all", choices=METHODS + ["all"])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "mnist"))
    ap.add_argument("--ood-data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--dropout", type=float, default=0.25)
    ap.add_argument("--prior-scale", type=float, default=1.0)
    ap.add_argument("--rho-init", type=float, default=None,
                    help="bbb's initial rho (default: RHO_END - lr x training "
                         "steps, clamped to [-30, RHO_END], as bnn_mnist)")
    ap.add_argument("--kl-warmup", type=int, default=0,
                    help="bbb: the KL's weight rises linearly to 1/N over the "
                         "first E epochs")
    ap.add_argument("--train-samples", type=int, default=1,
                    help="bbb: posterior samples per training step")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batches", type=int, default=0)
    ap.add_argument("--max-eval", type=int, default=0)
    ap.add_argument("--cpu-time", action="store_true",
                    help="throughput from this process's CPU time, not wall "
                         "time (steadier on a shared machine)")
    ap.add_argument("--no-share", action="store_true",
                    help="S full passes at prediction (no first layer computed once)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global clock
    clock = time.process_time if args.cpu_time else time.perf_counter
    train_set = load(args.data, True)
    test = load(args.data, False)
    ood = load(args.ood_data, False) if os.path.isdir(args.ood_data) else None
    if args.rho_init is None:
        args.rho_init = rho_init_auto(args, len(train_set[0]))
    if args.max_eval:
        test = (test[0][:args.max_eval], test[1][:args.max_eval])
        ood = (ood[0][:args.max_eval], ood[1][:args.max_eval]) if ood else None
    print(f"torch_bnn.py: torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{len(train_set[0])} train / {len(test[0])} test from {args.data}, "
          f"OOD {args.ood_data if ood else 'none'}, {args.epochs} epochs, "
          f"S = {args.samples}, M = {args.members}, bbb rho init {args.rho_init:.2f}",
          flush=True)
    rows = [run(m, args, train_set, test, ood)
            for m in (METHODS if args.method == "all" else [args.method])]
    cols = ["acc", "nll", "brier", "ece", "H", "MI", "MSP", "acc90", "acc80"]
    heads = ["acc", "NLL", "Brier", "ECE", "AUROC-H", "AUROC-MI", "AUROC-MSP",
             "acc@90%", "acc@80%", "train/s", "infer/s"]
    print(f"{'method':<10}" + "".join(f" {h:>9}" for h in heads))
    for r in rows:
        cells = "".join(f" {'-':>9}" if math.isnan(r[c]) else f" {r[c]:9.4f}" for c in cols)
        print(f"{r['method']:<10}{cells} {r['train']:9.0f} {r['infer']:9.0f}")


if __name__ == "__main__":
    main()
