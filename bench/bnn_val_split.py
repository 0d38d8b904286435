#!/usr/bin/env python3
"""Carves a validation split out of an IDX training set, for tuning
examples/bnn_mnist's hyper-parameters without touching the test or OOD sets.

usage: bnn_val_split.py SRC_DIR DST_DIR [--val N]

Writes DST_DIR/train-{images-idx3,labels-idx1}-ubyte (SRC's training set
minus its last N images) and DST_DIR/t10k-{...} (those last N images), raw
IDX, so `bnn_mnist --data DST_DIR` trains on the first part and scores the
held-out part as its "test" set. N defaults to 1/9 of the training set
(1,000 of the embedded MNIST's 9,000; 6,666 of Fashion-MNIST's 60,000).
Only the standard library: no numpy needed.
"""
import gzip
import os
import struct
import sys


def read_idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            with opener(p, "rb") as f:
                return f.read()
    sys.exit("bnn_val_split.py: %s(.gz) not found" % path)


def split(data, n_keep):
    magic, n = struct.unpack(">II", data[:8])
    ndim = magic & 0xFF
    dims = struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim])
    head = 4 + 4 * ndim
    item = 1
    for d in dims[1:]:
        item *= d
    if not 0 < n_keep < n:
        sys.exit("bnn_val_split.py: cannot keep %d of %d" % (n_keep, n))
    body = data[head:]

    def part(lo, hi):
        return (struct.pack(">I", magic) + struct.pack(">I", hi - lo) +
                data[8:head] + body[lo * item:hi * item])
    return part(0, n_keep), part(n_keep, n), n


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--val"):
        sys.exit(__doc__)
    src, dst = argv[0], argv[1]
    images = read_idx(os.path.join(src, "train-images-idx3-ubyte"))
    labels = read_idx(os.path.join(src, "train-labels-idx1-ubyte"))
    n = struct.unpack(">I", images[4:8])[0]
    n_val = int(argv[3]) if len(argv) == 4 else n // 9
    os.makedirs(dst, exist_ok=True)
    for name, data in (("images-idx3", images), ("labels-idx1", labels)):
        tr, va, _ = split(data, n - n_val)
        with open(os.path.join(dst, "train-%s-ubyte" % name), "wb") as f:
            f.write(tr)
        with open(os.path.join(dst, "t10k-%s-ubyte" % name), "wb") as f:
            f.write(va)
    print("%s: %d train, %d validation images" % (dst, n - n_val, n_val))


if __name__ == "__main__":
    main(sys.argv[1:])
