#!/usr/bin/python3
"""One-off cross-check of tapegrad's conv2d, conv_transpose2d, max_pool2d and
avg_pool2d against torch.nn.functional: forward values and the gradients of
x, W and b for the seed gradient dumped by bench/conv_check_dump.
usage: conv_check_dump FILE && python conv_check_torch.py FILE"""
import sys, numpy as np, torch, torch.nn.functional as F

CONV, CONVT, MAXPOOL, AVGPOOL = range(4)
names = ['conv2d', 'conv_transpose2d', 'max_pool2d', 'avg_pool2d']
raw = open(sys.argv[1], 'rb').read()
pos = 0
def ints(n):
    global pos
    v = np.frombuffer(raw, '<i4', n, pos); pos += 4 * n; return [int(t) for t in v]
def floats(shape):
    global pos
    n = int(np.prod(shape))
    v = np.frombuffer(raw, '<f4', n, pos).reshape(shape); pos += 4 * n
    return torch.from_numpy(v.astype(np.float64))

worst = {}
ok = True
for _ in range(ints(1)[0]):
    c = ints(16); yshape = ints(4)
    op, N, C, H, W, OC, kh, kw, sh, sw, ph, pw, dh, dw, oph, opw = c
    x = floats([N, C, H, W]).requires_grad_()
    Wt = b = None
    if op == CONV:
        Wt = floats([OC, C, kh, kw]).requires_grad_(); b = floats([OC]).requires_grad_()
    elif op == CONVT:
        Wt = floats([C, OC, kh, kw]).requires_grad_(); b = floats([OC]).requires_grad_()
    dy = floats(yshape); y_ours = floats(yshape); dx_ours = floats([N, C, H, W])
    if Wt is not None:
        dW_ours = floats(list(Wt.shape)); db_ours = floats([OC])
    if op == CONV:
        y = F.conv2d(x, Wt, b, (sh, sw), (ph, pw), (dh, dw))
    elif op == CONVT:
        y = F.conv_transpose2d(x, Wt, b, (sh, sw), (ph, pw), (oph, opw), 1, (dh, dw))
    elif op == MAXPOOL:
        y = F.max_pool2d(x, kh, sh, ph)
    else:
        y = F.avg_pool2d(x, kh, sh, ph, count_include_pad=True)
    assert list(y.shape) == yshape, (names[op], c, y.shape, yshape)
    y.backward(dy)
    errs = [(y_ours - y.detach()).abs().max().item(), (dx_ours - x.grad).abs().max().item()]
    if Wt is not None:
        errs += [(dW_ours - Wt.grad).abs().max().item(), (db_ours - b.grad).abs().max().item()]
    e = max(errs)
    worst[names[op]] = max(worst.get(names[op], 0), e)
    status = 'ok' if e < 1e-4 else 'FAIL'
    ok &= e < 1e-4
    print(f'{status} {names[op]:17s} {c[1:]} -> {yshape}: max |ours - torch| (y, dx[, dW, db]) = '
          + ', '.join(f'{t:.2g}' for t in errs))
print('worst per op:', ', '.join(f'{k} {v:.2g}' for k, v in worst.items()))
print(f'torch {torch.__version__}: ' + ('all agree within 1e-4' if ok else 'MISMATCH'))
sys.exit(0 if ok else 1)
