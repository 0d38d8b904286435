#!/usr/bin/python3
"""Cross-check of every tapegrad op and nn layer against PyTorch.

Reads the cases bench/op_check_dump wrote (inputs, tapegrad's outputs, an
upstream gradient g per output, tapegrad's gradients of sum(g * out)) and
recomputes outputs and gradients with torch in float64, from PyTorch's own
functions where it has them (F.softplus, F.gelu, F.layer_norm, F.group_norm,
GRUCell, ...)
and from the defining formula otherwise.

Error of one tensor: max over its elements of |ours - ref| / max(|ref|,
1e-4 * max|ref|) (elements below 1e-4 of the tensor's largest are judged on
their absolute error), NaN against NaN and equal infinities agreeing; for
the sums of products (matmul, dense, conv, add, mul, the reductions) |ref|
is replaced by the sum of the terms' magnitudes (the op on |inputs|). A
tensor passes within TOL (1e-5, about 80 float32 ulp). Above it, the same
computation by torch in float32 is the yardstick: 'f32' when tapegrad is no
worse than 10x torch's float32 error (a float32 limit both share), FAIL
otherwise.

Where tapegrad documents a convention that differs from PyTorch's (the tie
rule of maximum/minimum, bce's clamp, the mean of nothing), the reference
follows tapegrad's header and the script also reports how many elements
PyTorch's own convention would change.

usage: op_check_dump FILE && /opt/torchvenv/bin/python op_check_torch.py FILE
       [-v: print every case]"""
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

TOL = 1e-5
FLOOR = 1e-4


class Reader:
    def __init__(self, raw):
        self.raw, self.pos = raw, 0

    def take(self, fmt, n):
        size = np.dtype('<' + fmt).itemsize * n
        v = np.frombuffer(self.raw, '<' + fmt, n, self.pos)
        self.pos += size
        return v

    def u32(self):
        return int(self.take('u4', 1)[0])

    def str(self):
        n = self.u32()
        s = self.raw[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def shape(self):
        return [int(v) for v in self.take('i4', self.u32())]

    def floats(self, shape):
        return self.take('f4', int(np.prod(shape))).reshape(shape).copy()


class Case:
    pass


def read_cases(path):
    r = Reader(open(path, 'rb').read())
    assert r.raw[:8] == b'TGOPCHK1', 'not an op_check_dump file'
    r.pos = 8
    while True:
        tag = r.u32()
        if tag == 0:
            return
        assert tag == 0xCA5E, 'corrupt file'
        c = Case()
        c.op, c.label = r.str(), r.str()
        c.fp = [float(v) for v in r.take('f8', r.u32())]
        c.ip = [int(v) for v in r.take('i4', r.u32())]
        c.ins = []
        for _ in range(r.u32()):
            shape = r.shape()
            grad = bool(r.take('u1', 1)[0])
            c.ins.append((r.floats(shape), grad))
        c.outs = []
        for _ in range(r.u32()):
            shape = r.shape()
            c.outs.append((r.floats(shape), r.floats(shape)))
        c.grads = [r.floats(list(a.shape)) if g else None for a, g in c.ins]
        yield c


# ---- tapegrad's conventions, shared by several references -----------------

def rows_cols(x):
    C = x.shape[-1] if x.dim() else 1
    return (x.numel() // C if C else 0), C


def as2d(x):
    R, C = rows_cols(x)
    return x.reshape(R, C)


def bview(a, b):
    """b viewed to broadcast against a as [R, C] (tapegrad's rule: same
    shape, one element, a row, a per-row column)."""
    R, C = rows_cols(a)
    if list(b.shape) == list(a.shape):
        return b.reshape(R, C)
    if b.numel() == 1:
        return b.reshape(1, 1)
    if all(d == 1 for d in b.shape[:-1]) and b.shape[-1] == C:
        return b.reshape(1, C)
    assert b.dim() == 2 and b.shape[1] == 1 and b.shape[0] == R, (a.shape, b.shape)
    return b


def binary(f):
    return lambda c, x: [f(as2d(x[0]), bview(x[0], x[1])).reshape(x[0].shape)]


def extremum(is_max):
    """The gradient goes whole to the operand picked; a tie picks a."""
    def f(a, b):
        a, b = torch.broadcast_tensors(a, b)
        pick = ((a >= b) if is_max else (a <= b)) | torch.isnan(a)
        return torch.where(pick.detach(), a, b)
    return binary(f)


def f32(v):
    return float(np.float32(v))


class CbLogNorm(torch.autograd.Function):
    """log(x / tanh(x/2)), its derivative 1/x - 1/sinh(x): series near 0."""
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        a = x.abs()
        small = a < 1e-3
        safe = torch.where(small, torch.ones_like(a), a)
        big = torch.log(safe / torch.tanh(safe / 2))
        big = torch.where(torch.isinf(a), a, big)
        s = a * a
        series = math.log(2) + s / 12 - 7 * s * s / 1440
        return torch.where(small, series, big)

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        a = x.abs()
        small = a < 1e-3
        safe = torch.where(small, torch.ones_like(a), a)
        big = torch.sign(x) * (1 / safe - 1 / torch.sinh(safe))
        big = torch.where(torch.isinf(a), torch.zeros_like(a), big)
        series = x / 6 - 7 * x ** 3 / 360
        return g * torch.where(small, series, big)


def layer_norm(c, x):
    it = iter(x[1:])
    g = next(it).reshape(-1) if c.ip[0] else None
    b = next(it).reshape(-1) if c.ip[1] else None
    return [F.layer_norm(x[0], (x[0].shape[-1],), g, b, f32(c.fp[0]))]


def group_norm(c, x):
    it = iter(x[1:])
    g = next(it).reshape(-1) if c.ip[1] else None
    b = next(it).reshape(-1) if c.ip[2] else None
    return [F.group_norm(x[0], c.ip[0], g, b, f32(c.fp[0]))]


def bce_probs(c, x):
    """tapegrad's documented bce: q = clamp(p, eps, 1 - eps), no gradient to
    p where it was clamped (p <= eps or p >= 1 - eps)."""
    p, z = as2d(x[0]), as2d(x[1])
    lo = np.float32(1e-7)
    hi = float(np.float32(1) - lo)
    lo = float(lo)
    inside = ((p > lo) & (p < hi)).detach()
    q = torch.where(inside, p, p.clamp(lo, hi).detach())
    return [-(z * torch.log(q) + (1 - z) * torch.log1p(-q)).sum(-1, keepdim=True)]


def bce_probs_torch(c, x):
    p, z = as2d(x[0]), as2d(x[1])
    return [F.binary_cross_entropy(p, z, reduction='none').sum(-1, keepdim=True)]


def kl_normals(c, x):
    mq, vq = as2d(x[0]), as2d(x[1])
    mp, vp = as2d(x[2]), as2d(x[3])
    if mp.shape != mq.shape:
        mp, vp = mp.reshape(1, -1), vp.reshape(1, -1)
    d = vq - vp
    return [0.5 * (torch.expm1(d) - d + (mq - mp) ** 2 * torch.exp(-vp)).sum(-1, keepdim=True)]


def conv(c, x):
    g = c.ip
    b = x[2] if g[15] else None
    if c.op == 'conv2d':
        y = F.conv2d(x[0], x[1], b, (g[7], g[8]), (g[9], g[10]), (g[11], g[12]))
    else:
        y = F.conv_transpose2d(x[0], x[1], b, (g[7], g[8]), (g[9], g[10]),
                               (g[13], g[14]), 1, (g[11], g[12]))
    return [F.relu(y) if len(g) > 16 and g[16] else y]


def conv1d(c, x):
    g = c.ip
    b = x[2] if g[9] else None
    if c.op == 'conv1d':
        return [F.conv1d(x[0], x[1], b, g[5], g[6], g[7])]
    return [F.conv_transpose1d(x[0], x[1], b, g[5], g[6], g[8], 1, g[7])]


def max_pool1d_first(c, x):
    """max_pool_first on [N, C, 1, L]: a 1 x k window."""
    k, s, p = c.ip[0], c.ip[1] or c.ip[0], c.ip[2]
    xp = F.pad(x[0], (p, p), value=-math.inf)
    cols = xp.unfold(2, k, s)                           # N C OL k
    idx = cols.detach().argmax(-1, keepdim=True)       # first maximum
    return [cols.gather(-1, idx).squeeze(-1)]


def max_pool_first(c, x):
    """The documented tie rule: the first maximum in row-major window order
    (padding never wins)."""
    k, s, p = c.ip[0], c.ip[1] or c.ip[0], c.ip[2]
    N, Cc, H, W = x[0].shape
    xp = F.pad(x[0], (p, p, p, p), value=-math.inf)
    cols = xp.unfold(2, k, s).unfold(3, k, s)           # N C OH OW k k
    flat = cols.reshape(*cols.shape[:4], k * k)
    idx = flat.detach().argmax(-1, keepdim=True)       # first maximum
    return [flat.gather(-1, idx).squeeze(-1)]


def rnn(c, x):
    B, n_in, H, T, h0 = c.ip
    lstm = c.op == 'lstm'
    xs = x[:T]
    rest = x[T:]
    if h0:
        h = rest[0]
        cc = rest[1] if lstm else None
        rest = rest[2:] if lstm else rest[1:]
    else:
        h = torch.zeros(B, H, dtype=x[0].dtype)
        cc = torch.zeros(B, H, dtype=x[0].dtype)
    names = ['weight_ih', 'weight_hh', 'bias_ih', 'bias_hh']
    cell = (torch.nn.LSTMCell if lstm else torch.nn.GRUCell)(n_in, H, dtype=x[0].dtype)
    params = dict(zip(names, rest))
    outs = []
    for t in range(T):
        if lstm:
            h, cc = torch.func.functional_call(cell, params, (xs[t], (h, cc)))
        else:
            h = torch.func.functional_call(cell, params, (xs[t], h))
        outs.append(h)
    if lstm:
        outs.append(cc)
    return outs


def bayes(c, x):
    xx, W_mu, W_rho, b_mu, b_rho, eps = x
    p = f32(c.fp[0])
    sW, sb = F.softplus(W_rho), F.softplus(b_rho)
    mean = F.linear(xx, W_mu, b_mu)
    sd = torch.sqrt(F.linear(xx * xx, sW * sW, sb * sb))
    kl = sum((math.log(p) - torch.log(s) + (s * s + m * m) / (2 * p * p) - 0.5).sum()
             for m, s in ((W_mu, sW), (b_mu, sb)))
    return [mean + sd * eps, mean, sd, kl.reshape(1)]


def dropout(c, x):
    keep = torch.from_numpy(c.outs[0][0] != 0)
    scale = f32(1 / f32(1 - f32(c.fp[0])))
    return [x[0] * keep * scale]


def optim(c, x):
    """K steps of torch.optim on p0 with the dumped gradients."""
    kind, lr, momentum, wd, nesterov = c.fp
    kind, nesterov = int(kind), bool(nesterov)
    lr, momentum, wd = f32(lr), f32(momentum), f32(wd)
    p = x[0].detach().clone().requires_grad_()
    if kind == 0:
        opt = torch.optim.SGD([p], lr, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    elif kind == 1:
        opt = torch.optim.Adam([p], lr, weight_decay=wd)
    elif kind == 2:
        opt = torch.optim.AdamW([p], lr, weight_decay=wd)
    else:
        opt = torch.optim.RMSprop([p], lr, alpha=0.99, eps=1e-8, momentum=momentum,
                                  weight_decay=wd)
    for g in x[1:]:
        p.grad = g.detach().clone()
        opt.step()
    return [p.detach()]


def clip(c, x):
    gs = [t.detach().clone() for t in x]
    ps = [torch.zeros_like(g, requires_grad=True) for g in gs]
    for p, g in zip(ps, gs):
        p.grad = g
    norm = torch.nn.utils.clip_grad_norm_(ps, f32(c.fp[0]))
    return [p.grad for p in ps] + [norm.reshape(1)]


def split(c, x):
    k = c.ip[0]
    parts = torch.split(x[0], x[0].shape[-1] // k, -1)
    return [p for p, used in zip(parts, c.ip[1:]) if used]


def sum_mean(mean, dim=None):
    """tapegrad's sums and means: the mean of nothing is 0."""
    def f(c, x):
        v = as2d(x[0]) if dim is not None else x[0]
        if dim is None:
            n = v.numel()
            return [(v.sum() * (1 / n if mean and n else 1)).reshape(1)]
        n = v.shape[dim]
        return [v.sum(dim, keepdim=True) * (1 / n if mean and n else 1)]
    return f


def torch_mean(dim=None):
    def f(c, x):
        if dim is None:
            return [x[0].mean().reshape(1)]
        return [as2d(x[0]).mean(dim, keepdim=True)]
    return f


def long(ip):
    return torch.tensor(ip, dtype=torch.long)


REF = {
    'exp': lambda c, x: [torch.exp(x[0])],
    'log': lambda c, x: [torch.log(x[0])],
    'sqrt': lambda c, x: [torch.sqrt(x[0])],
    'sigmoid': lambda c, x: [torch.sigmoid(x[0])],
    'tanh': lambda c, x: [torch.tanh(x[0])],
    'relu': lambda c, x: [F.relu(x[0])],
    'softplus': lambda c, x: [F.softplus(x[0])],
    'square': lambda c, x: [torch.square(x[0])],
    'neg': lambda c, x: [torch.neg(x[0])],
    'abs': lambda c, x: [torch.abs(x[0])],
    'gelu': lambda c, x: [F.gelu(x[0])],
    'cb_log_norm': lambda c, x: [CbLogNorm.apply(x[0])],
    'scale': lambda c, x: [f32(c.fp[0]) * x[0]],
    'add_scalar': lambda c, x: [x[0] + f32(c.fp[0])],
    'pow': lambda c, x: [torch.pow(x[0], f32(c.fp[0]))],
    'leaky_relu': lambda c, x: [F.leaky_relu(x[0], f32(c.fp[0]))],
    'clamp': lambda c, x: [torch.clamp(x[0], f32(c.fp[0]), f32(c.fp[1]))],
    'add': binary(torch.add),
    'sub': binary(torch.sub),
    'mul': binary(torch.mul),
    'div': binary(torch.div),
    'maximum': extremum(True),
    'minimum': extremum(False),
    'softmax': lambda c, x: [F.softmax(x[0], -1)],
    'log_softmax': lambda c, x: [F.log_softmax(x[0], -1)],
    'logsumexp': lambda c, x: [torch.logsumexp(as2d(x[0]), -1, keepdim=True)],
    'sum': sum_mean(False),
    'mean': sum_mean(True),
    'sum_rows': sum_mean(False, 1),
    'mean_rows': sum_mean(True, 1),
    'sum_axis0': sum_mean(False, 0),
    'mean_axis0': sum_mean(True, 0),
    'matmul': lambda c, x: [(x[0].transpose(-1, -2) if c.ip[0] else x[0]) @
                            (x[1].transpose(-1, -2) if c.ip[1] else x[1])],
    'dense': lambda c, x: [F.linear(x[0], x[1], x[2].reshape(-1) if len(x) > 2 else None)],
    'transpose': lambda c, x: [x[0].t()],
    'reshape': lambda c, x: [x[0].reshape(list(c.outs[0][0].shape))],
    'concat': lambda c, x: [torch.cat(x, -1)],
    'split': split,
    'slice_rows': lambda c, x: [x[0][c.ip[0]:c.ip[1]]],
    'slice_cols': lambda c, x: [x[0][..., c.ip[0]:c.ip[1]]],
    'gather_rows': lambda c, x: [F.embedding(long(c.ip), x[0])],
    'detach': lambda c, x: [x[0] * x[0].detach()],
    'mask_scale': lambda c, x: [x[0] * (torch.tensor(c.ip, dtype=x[0].dtype)
                                        .reshape(x[0].shape) * f32(c.fp[0]))],
    'bce_with_logits': lambda c, x: [F.binary_cross_entropy_with_logits(
        as2d(x[0]), as2d(x[1]), reduction='none').sum(-1, keepdim=True)],
    'bce': bce_probs,
    'kl_normal': lambda c, x: [0.5 * (as2d(x[0]) ** 2 + torch.expm1(as2d(x[1])) - as2d(x[1]))
                               .sum(-1, keepdim=True)],
    'kl_normals': kl_normals,
    'softmax_xent': lambda c, x: [F.cross_entropy(as2d(x[0]), long(c.ip),
                                                  reduction='none').reshape(-1, 1)],
    'nll': lambda c, x: [F.nll_loss(as2d(x[0]), long(c.ip),
                                    reduction='none').reshape(-1, 1)],
    'layer_norm': layer_norm,
    'group_norm': group_norm,
    'conv2d': conv,
    'conv_transpose2d': conv,
    'max_pool2d': max_pool_first,
    'avg_pool2d': lambda c, x: [F.avg_pool2d(x[0], c.ip[0], c.ip[1] or c.ip[0], c.ip[2],
                                             count_include_pad=True)],
    'upsample2d': lambda c, x: [F.interpolate(x[0], scale_factor=c.ip[0], mode='nearest')],
    'permute': lambda c, x: [x[0].permute(*c.ip)],
    'conv1d': conv1d,
    'conv_transpose1d': conv1d,
    'max_pool1d': max_pool1d_first,
    'avg_pool1d': lambda c, x: [F.avg_pool1d(x[0], c.ip[0], c.ip[1] or c.ip[0], c.ip[2],
                                             count_include_pad=True)],
    'gru': rnn,
    'lstm': rnn,
    'bayes_dense': bayes,
    'reparameterize': lambda c, x: [x[0] + torch.exp(0.5 * x[1]) * x[2]],
    'loss_mse': lambda c, x: [((x[0] - x[1]) ** 2).sum(-1).mean().reshape(1)],
    'loss_bce_with_logits': lambda c, x: [F.binary_cross_entropy_with_logits(
        x[0], x[1], reduction='none').sum(-1).mean().reshape(1)],
    'loss_softmax_xent': lambda c, x: [F.cross_entropy(x[0], long(c.ip)).reshape(1)],
    'loss_nll': lambda c, x: [F.nll_loss(F.log_softmax(x[0], -1), long(c.ip)).reshape(1)],
    'dropout': dropout,
    'optim': optim,
    'clip_grad_norm': clip,
}

# PyTorch's own convention where tapegrad documents another one.
TORCH_OWN = {
    'maximum': binary(torch.maximum),
    'minimum': binary(torch.minimum),
    'bce': bce_probs_torch,
    'mean': torch_mean(),
    'mean_axis0': torch_mean(0),
    'max_pool2d': lambda c, x: [F.max_pool2d(x[0], c.ip[0], c.ip[1] or c.ip[0], c.ip[2])],
    'max_pool1d': lambda c, x: [F.max_pool1d(x[0], c.ip[0], c.ip[1] or c.ip[0], c.ip[2])],
}
DOCUMENTED = {
    'maximum': 'a tie gives the whole gradient to a (PyTorch: halves); '
               'a NaN operand gets it all (PyTorch: both do)',
    'minimum': 'a tie gives the whole gradient to a (PyTorch: halves); '
               'a NaN operand gets it all (PyTorch: both do)',
    'bce': 'p clamped to [1e-7, 1 - 1e-7], no gradient there (PyTorch: log clamped at -100)',
    'mean': 'the mean of no elements is 0 (PyTorch: NaN)',
    'mean_axis0': 'the mean of no rows is 0 (PyTorch: NaN)',
    'max_pool2d': 'ties: the first maximum in row-major window order',
    'max_pool1d': 'ties: the first maximum in the window',
}


def run(fn, c, dtype):
    """Outputs and the gradients of sum_k sum(g_k * out_k) in dtype."""
    xs = [torch.tensor(a, dtype=dtype, requires_grad=g) for a, g in c.ins]
    outs = fn(c, xs)
    assert len(outs) == len(c.outs), (c.op, c.label, len(outs), len(c.outs))
    terms = [(o * torch.tensor(g, dtype=dtype)).sum()
             for o, (_, g) in zip(outs, c.outs) if o.requires_grad]
    leaves = [x for x in xs if x.requires_grad]
    grads = []
    if terms and leaves:
        gs = torch.autograd.grad(sum(terms), leaves, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, gs)]
    return ([o.detach().double().numpy() for o in outs],
            [g.detach().double().numpy() for g in grads])


def err(ours, ref, scale=None):
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    if scale is not None:  # the size of the terms summed (multilinear ops)
        ref_mag = np.maximum(np.abs(ref), np.asarray(scale, np.float64))
    else:
        ref_mag = np.abs(ref)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if ours.size == 0:
        return 0.0
    same = (np.isnan(ours) & np.isnan(ref)) | (np.isinf(ours) & (ours == ref))
    special = ~np.isfinite(ours) | ~np.isfinite(ref)
    if (special & ~same).any():
        return math.inf
    fin = ~same
    if not fin.any():
        return 0.0
    o, r, mag = ours[fin], ref[fin], ref_mag[fin]
    floor = max(FLOOR * mag.max(), 1e-300)
    return float((np.abs(o - r) / np.maximum(mag, floor)).max())


# Sums of products of the inputs (and of g): an element's rounding error
# scales with the sum of the magnitudes of its terms, which the same op on
# |inputs| and |g| computes; a cancelling sum is judged against that.
MULTILINEAR = {'matmul', 'dense', 'conv2d', 'conv_transpose2d', 'avg_pool2d',
               'conv1d', 'conv_transpose1d', 'avg_pool1d',
               'add', 'mul', 'sum', 'mean', 'sum_rows', 'mean_rows',
               'sum_axis0', 'mean_axis0', 'upsample2d'}


def magnitudes(fn, c):
    a = Case()
    a.__dict__.update(c.__dict__)
    a.ins = [(np.abs(x), g) for x, g in c.ins]
    a.outs = [(o, np.abs(g)) for o, g in c.outs]
    return run(fn, a, torch.float64)


def compare(c, ref, ours_outs, ours_grads, mag=None):
    """Per tensor errors: outputs, then gradients of inputs with has_grad."""
    outs, grads = ref
    mouts, mgrads = mag if mag else ([None] * len(outs), [None] * len(grads))
    names = [f'out{k}' for k in range(len(outs))] + \
            [f'd in{i}' for i, (_, g) in enumerate(c.ins) if g]
    errs = [err(o, r, m) for o, r, m in zip(ours_outs, outs, mouts)] + \
           [err(o, r, m) for o, r, m in zip(ours_grads, grads, mgrads)]
    return names, errs


def main():
    verbose = '-v' in sys.argv
    paths = [a for a in sys.argv[1:] if a != '-v']
    if len(paths) != 1:
        sys.exit(__doc__)
    torch.set_num_threads(1)
    summary = {}
    failed = False
    for c in read_cases(paths[0]):
        fn = REF[c.op]
        ours_outs = [o for o, _ in c.outs]
        ours_grads = [g for g in c.grads if g is not None]
        ref = run(fn, c, torch.float64)
        mag = magnitudes(fn, c) if c.op in MULTILINEAR else None
        names, e64 = compare(c, ref, ours_outs, ours_grads, mag)
        try:
            _, e32 = compare(c, ref, *run(fn, c, torch.float32), mag)
        except RuntimeError:  # an op torch has no float32 kernel for
            e32 = [math.nan] * len(e64)
        status = ['ok' if a <= TOL else 'f32' if a <= 10 * b else 'FAIL'
                  for a, b in zip(e64, e32)]
        verdict = 'FAIL' if 'FAIL' in status else 'f32' if 'f32' in status else 'ok'
        worst = max((i for i in range(len(e64)) if status[i] == verdict),
                    key=lambda i: e64[i])
        e, t32 = e64[worst], e32[worst]
        conv = ''
        if c.op in TORCH_OWN:
            _, ec = compare(c, run(TORCH_OWN[c.op], c, torch.float64), *ref)
            if max(ec) > TOL:
                conv = f'  [PyTorch\'s own convention differs here: {max(ec):.2g}]'
        s = summary.setdefault(c.op, {'n': 0, 'err': 0.0, 'f32': 0.0, 'bad': 0, 'lim': 0,
                                      'conv': 0})
        s['n'] += 1
        s['err'] = max(s['err'], e)
        if t32 == t32:
            s['f32'] = max(s['f32'], max(v for v in e32 if v == v))
        s['bad'] += verdict == 'FAIL'
        s['lim'] += verdict == 'f32'
        s['conv'] += bool(conv)
        failed |= verdict == 'FAIL'
        if verbose or verdict != 'ok' or conv:
            print(f'{verdict:4s} {c.op:20s} {c.label:40s} worst {names[worst]}: '
                  f'{e:.2g} (torch f32 {t32:.2g}){conv}')
    print()
    print(f'{"op":22s} {"cases":>5s} {"worst err":>10s} {"torch f32":>10s}  status')
    for op, s in summary.items():
        status = ('FAIL x%d' % s['bad'] if s['bad'] else
                  'ok (f32 limit x%d)' % s['lim'] if s['lim'] else 'ok')
        if s['conv']:
            status += f'; documented convention ({DOCUMENTED[op]}) differs from PyTorch in {s["conv"]} case(s)'
        print(f'{op:22s} {s["n"]:5d} {s["err"]:10.2g} {s["f32"]:10.2g}  {status}')
    print(f'torch {torch.__version__}: ' + ('MISMATCH' if failed else
          f'all agree (tolerance {TOL:g}, or as close as torch in float32)'))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
