#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/: a few small
valid files and near misses for each reader. Deterministic (gzip mtime 0),
so rerunning it changes nothing. Regression inputs (crash-*, named after
the finding) live in the same folders and are not touched here."""
import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def idx(dims, data=None, magic=b"\x00\x00\x08"):
    n = 1
    for d in dims:
        n *= d
    if data is None:
        data = bytes((7 * i + 3) % 256 for i in range(n))
    return magic + bytes([len(dims)]) + b"".join(
        struct.pack(">I", d) for d in dims) + data


def st(tensors, meta=None, pad=True, raw_header=None):
    """tensors: list of (name, shape, floats); offsets laid out in order."""
    header, blob = {}, b""
    if meta is not None:
        header["__metadata__"] = meta
    for name, shape, values in tensors:
        data = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    text = raw_header if raw_header is not None else json.dumps(
        header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


IDX = {
    "labels-10": idx([10], bytes(i % 10 for i in range(10))),
    "images-3x4x4": idx([3, 4, 4]),
    "matrix-2x5": idx([2, 5]),
    "zero-dim": idx([0, 28, 28]),
    "truncated": idx([3, 4, 4])[:-5],
    "trailing": idx([4]) + b"xyz",
    "bad-magic": b"\x01\x00" + idx([4])[2:],
    "bad-type": idx([4], bytes(16), magic=b"\x00\x00\x0d"),
    "four-dims": b"\x00\x00\x08\x04" + struct.pack(">4I", 1, 1, 1, 1) + b"x",
    "huge-dims": b"\x00\x00\x08\x03" + struct.pack(">3I", 65536, 65536, 2),
    "short-dims": b"\x00\x00\x08\x02\x00\x00",
}
for name, data in IDX.items():
    write("idx", name, data)

# fuzz_idx_gz: first byte odd = the target gzips the rest itself, even =
# the rest is the file as it is.
for name in ["labels-10", "images-3x4x4", "zero-dim", "trailing",
             "truncated", "huge-dims"]:
    write("idx_gz", "z-" + name, b"\x01" + IDX[name])
for name in ["labels-10", "images-3x4x4", "trailing"]:
    write("idx_gz", name + ".gz", b"\x00" + gzip.compress(IDX[name], mtime=0))
write("idx_gz", "raw-passthrough", b"\x00" + IDX["matrix-2x5"])
gz = gzip.compress(IDX["images-3x4x4"], mtime=0)
write("idx_gz", "cut-gzip", b"\x00" + gz[:len(gz) // 2])
write("idx_gz", "bad-crc", b"\x00" + gz[:-8] + bytes(4) + gz[-4:])
half = len(IDX["images-3x4x4"]) // 2
# The fuzz build starts the gzip buffer at 64 bytes (IDX_FIRST_CHUNK): these
# make it grow, and end exact, with one trailing byte, and cut short.
big = idx([5, 10, 10])
write("idx_gz", "z-grow", b"\x01" + big)
write("idx_gz", "z-grow-trailing", b"\x01" + big + b"\0")
write("idx_gz", "z-grow-short", b"\x01" + big[:300])
write("idx_gz", "two-members", b"\x00" + gzip.compress(
    IDX["images-3x4x4"][:half], mtime=0) + gzip.compress(
    IDX["images-3x4x4"][half:], mtime=0))

# The fuzz target's model: enc.weight [2, 3], enc.bias [3], Adam.
W = [0.5, -1.0, 2.0, 0.25, 3.5, -0.125]
B = [1.0, 2.0, 3.0]
full = [("enc.weight", [2, 3], W), ("optim.m.enc.weight", [2, 3], W),
        ("optim.v.enc.weight", [2, 3], W), ("enc.bias", [3], B),
        ("optim.m.enc.bias", [3], B), ("optim.v.enc.bias", [3], B)]
ST = {
    "checkpoint-adam": st(full, {"optim.kind": "adam", "optim.step": "12",
                                 "model": "fuzz"}),
    "checkpoint-sgd": st(full[:2] + full[3:5],
                         {"optim.kind": "sgd", "optim.step": "3"}),
    "params-only": st([full[0], full[3]]),
    "empty": st([]),
    "meta-only": st([], {"a": "b", "c\\u00e9": "\u20ac \\ud83d\\ude00"}),
    "scalar-and-empty": st([("s", [], [1.0]), ("z", [0, 4], [])]),
    "unpadded": st([full[3]], pad=False),
    "wrong-shape": st([("enc.weight", [3, 2], W), full[3]]),
    "f16": st([], raw_header=b'{"x":{"dtype":"F16","shape":[1],'
              b'"data_offsets":[0,2]}}') + b"\0\0",
    "gap": st([], raw_header=b'{"a":{"dtype":"F32","shape":[1],'
              b'"data_offsets":[4,8]}}') + bytes(8),
    "escapes": st([], raw_header=b'{"__metadata__":{"k\\n\\t\\"":"\\u0041'
                  b'\\/"},"n\\u00e9":{"shape":[1],"dtype":"F32",'
                  b'"data_offsets":[0,4]}}') + bytes(4),
    "bad-step": st(full, {"optim.kind": "adam", "optim.step": "-1"}),
}
# tg_meta limits (32 entries, key < 64 bytes, value < 256 bytes).
adam = {"optim.kind": "adam", "optim.step": "1"}
ST["meta-long-value"] = st(full, dict(adam, note="v" * 256))
ST["meta-long-key"] = st(full, dict(adam, **{"k" * 64: "x"}))
ST["meta-33"] = st(full, dict(adam, **{"k%d" % i: "" for i in range(31)}))
ST["wrong-ndim"] = st([full[0], ("enc.bias", [1, 3], B)])
ST["short"] = b"\x08\x00\x00"
ST["length-too-big"] = struct.pack("<Q", 40) + b'{"a":1}'
ST["length-over-100mb"] = struct.pack("<Q", 100000001) + b"{}"
for name, data in ST.items():
    write("safetensors", name, data)
