#!/usr/bin/python3
"""Peer anchor: the convolutional VAE of `vae_mnist --arch conv` in PyTorch.
encoder: Conv2d(1,32,4,2,1) ReLU Conv2d(32,64,4,2,1) ReLU flatten Linear(3136, 2z)
decoder: Linear(z, 3136) ReLU view(64,7,7) ConvTranspose2d(64,32,4,2,1) ReLU
         ConvTranspose2d(32,1,4,2,1) -> logits
PyTorch's default init (kaiming-uniform, as tapegrad's TG_INIT_TORCH), BCE(sum)
+ KL, Adam 1e-3. Prints per-epoch train/test -ELBO per sample (nats) and
samples/s. Parameter names match tapegrad's checkpoint, so
--load-tapegrad FILE loads a vae_mnist --arch conv checkpoint unchanged
(strict) and prints its test -ELBO instead of training."""
import argparse, gzip, json, struct, time, numpy as np, torch, torch.nn as nn, torch.nn.functional as F

def idx(path):
    op = gzip.open if path.endswith('.gz') else open
    with op(path, 'rb') as f:
        raw = f.read()
    magic, = struct.unpack('>I', raw[:4])
    nd = magic & 0xff
    dims = struct.unpack('>' + 'I' * nd, raw[4:4 + 4 * nd])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * nd).reshape(dims)

class Encoder(nn.Module):
    def __init__(s, z):
        super().__init__()
        s.conv1 = nn.Conv2d(1, 32, 4, 2, 1)
        s.conv2 = nn.Conv2d(32, 64, 4, 2, 1)
        s.fc = nn.Linear(64 * 7 * 7, 2 * z)
    def forward(s, x):
        h = F.relu(s.conv2(F.relu(s.conv1(x.view(-1, 1, 28, 28)))))
        return s.fc(h.flatten(1)).chunk(2, 1)

class Decoder(nn.Module):
    def __init__(s, z):
        super().__init__()
        s.fc = nn.Linear(z, 64 * 7 * 7)
        s.deconv1 = nn.ConvTranspose2d(64, 32, 4, 2, 1)
        s.deconv2 = nn.ConvTranspose2d(32, 1, 4, 2, 1)
    def forward(s, z):
        h = F.relu(s.fc(z)).view(-1, 64, 7, 7)
        return s.deconv2(F.relu(s.deconv1(h))).flatten(1)

class VAE(nn.Module):
    def __init__(s, z):
        super().__init__()
        s.encoder, s.decoder = Encoder(z), Decoder(z)
    def forward(s, x):
        mu, logvar = s.encoder(x)
        logvar = logvar.clamp(-30, 20)  # as tapegrad's TG_VAE_LOGVAR_MIN/MAX
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return s.decoder(z), mu, logvar

def loss(logits, x, mu, logvar):
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction='sum')
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kl

def load_safetensors(path):
    """The tensors of a safetensors file (F32 only), read by hand."""
    with open(path, 'rb') as f:
        n, = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        b, end = e['data_offsets']
        assert e['dtype'] == 'F32', name
        out[name] = torch.from_numpy(np.frombuffer(data[b:end], '<f4').copy().reshape(e['shape']))
    return out, header.get('__metadata__', {})

ap = argparse.ArgumentParser()
ap.add_argument('--data', required=True); ap.add_argument('--epochs', type=int, default=1)
ap.add_argument('--batch', type=int, default=128); ap.add_argument('--latent', type=int, default=20)
ap.add_argument('--threads', type=int, default=1); ap.add_argument('--seed', type=int, default=1)
ap.add_argument('--max-batches', type=int, default=0)
ap.add_argument('--load-tapegrad', metavar='FILE')
a = ap.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(a.seed)
tr = torch.from_numpy(idx(a.data + '/train-images-idx3-ubyte.gz').reshape(-1, 784).astype(np.float32) / 255)
te = torch.from_numpy(idx(a.data + '/t10k-images-idx3-ubyte.gz').reshape(-1, 784).astype(np.float32) / 255)
m = VAE(a.latent)

def test_loss():
    with torch.no_grad():
        tl = 0.0
        for xb in te.split(1000):
            logits, mu, lv = m(xb)
            tl += loss(logits, xb, mu, lv).item()
    return tl / len(te)

if a.load_tapegrad:
    tensors, meta = load_safetensors(a.load_tapegrad)
    params = {k: v for k, v in tensors.items() if not k.startswith('optim.')}
    m.load_state_dict(params, strict=True)
    print(f'loaded {len(params)} tensors from {a.load_tapegrad} (arch {meta.get("arch")}): '
          f'test -ELBO {test_loss():.2f} nats/sample', flush=True)
    raise SystemExit(0)

opt = torch.optim.Adam(m.parameters(), lr=1e-3)
for ep in range(1, a.epochs + 1):
    perm = torch.randperm(len(tr)); tot = 0.0; seen = 0; t0 = time.perf_counter()
    for k, i in enumerate(range(0, len(tr), a.batch)):
        if a.max_batches and k >= a.max_batches:
            break
        x = tr[perm[i:i + a.batch]]
        opt.zero_grad()
        logits, mu, lv = m(x)
        l = loss(logits, x, mu, lv)
        l.backward(); opt.step(); tot += l.item(); seen += len(x)
    dt = time.perf_counter() - t0
    print(f'epoch {ep} train {tot/seen:.2f} test {test_loss():.2f} nats/sample  {seen/dt:.0f} samples/s ({a.threads} thr)', flush=True)
