"""PyTorch peer of the Burn training benchmark (CPU): trains the same LSTM forecaster and
wide&deep regressor as mlbox, on the arrays the Rust benchmark exported, and measures training
throughput.

Called by bench/run_training.sh with the torch venv's python:
    python torch_training.py DIR [--model lstm|wide_deep|both] [--epochs N]
  DIR       holds meta.json and the *.f32 / *.i64 arrays (little-endian, row-major) written by
            the Rust side; see load_lstm / load_wide_deep for the file names and shapes.
  --epochs  overrides meta.json's "epochs" of each model.
  env BENCH_THREADS  intra-op threads for torch.set_num_threads (default 2).

Measured: per epoch, wall time of the training loop only -- random permutation, building each
batch tensor from the numpy arrays by index, forward, backward and Adam step over all batches
(the last partial batch kept); validation is run after each epoch, untimed.
stdout: one JSON line per model, {"peer":"pytorch","torch":..,"model":..,"samples_per_s": median
epoch throughput excluding epoch 1 (warm-up), "epoch_samples_per_s":[..],"final_val_loss": val
MSE after the last epoch,"val_loss_history":[..],"threads":..}, or {"peer","model","error"}
when a model fails (the exit code is then 1). Progress goes to stderr.
"""
import argparse, json, os, statistics, sys, time

import numpy as np
import torch
from torch import nn


def read(d, name, dtype, shape):
    a = np.fromfile(os.path.join(d, name), dtype=dtype)
    return a.reshape(shape)  # raises if the element count does not match meta.json


# ---- models ---------------------------------------------------------------------------------

class LstmForecaster(nn.Module):
    def __init__(self, features, hidden, horizon):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, horizon)

    def forward(self, x):                     # x [B, window, features]
        _, (h_n, _) = self.lstm(x)            # h_n [1, B, hidden] = last timestep's hidden state
        return self.head(h_n[-1])             # [B, horizon]


class WideDeep(nn.Module):
    def __init__(self, wide_size, deep_rows, deep_fields, dense, embed_dim, mlp):
        super().__init__()
        self.wide = nn.Embedding(wide_size, 1)
        nn.init.zeros_(self.wide.weight)
        self.bias = nn.Parameter(torch.zeros(1))
        self.deep = nn.Embedding(deep_rows, embed_dim)  # default init: N(0, 1)
        layers, width = [], deep_fields * embed_dim + dense
        for h in mlp:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, wide, deep, dense):     # wide [B, 6] i64, deep [B, 4] i64, dense [B, 2]
        w = self.wide(wide).sum(dim=1)        # [B, 1]
        e = self.deep(deep).flatten(1)        # [B, 4 * embed_dim]
        return w + self.bias + self.mlp(torch.cat([e, dense], dim=1))  # [B, 1]


# ---- data: (train arrays, val arrays, target index) -----------------------------------------

def load_lstm(d, m):
    def split(s, n):
        x = read(d, f"lstm_{s}_x.f32", "<f4", (n, m["window"], m["features"]))
        y = read(d, f"lstm_{s}_y.f32", "<f4", (n, m["horizon"]))
        return [x, y]
    model = LstmForecaster(m["features"], m["hidden"], m["horizon"])
    return model, split("train", m["train_n"]), split("val", m["val_n"])


def load_wide_deep(d, m):
    def split(s, n):
        return [read(d, f"wd_{s}_wide.i64", "<i8", (n, m["wide_fields"])),
                read(d, f"wd_{s}_deep.i64", "<i8", (n, m["deep_fields"])),
                read(d, f"wd_{s}_dense.f32", "<f4", (n, m["dense"])),
                read(d, f"wd_{s}_y.f32", "<f4", (n, 1))]   # [n] on disk, [n, 1] to match output
    model = WideDeep(m["wide_size"], m["deep_rows"], m["deep_fields"], m["dense"],
                     m["embed_dim"], m["mlp"])
    return model, split("train", m["train_n"]), split("val", m["val_n"])


# ---- training -------------------------------------------------------------------------------

def batch(arrays, idx):
    """Tensors for rows idx of each array; the last one is the target."""
    ts = [torch.from_numpy(a[idx]) for a in arrays]
    return ts[:-1], ts[-1]


def validate(model, arrays, bs):
    model.eval()
    n, sq, count = len(arrays[0]), 0.0, 0
    with torch.no_grad():
        for s in range(0, n, bs):
            inputs, y = batch(arrays, np.arange(s, min(s + bs, n)))
            sq += torch.sum((model(*inputs) - y) ** 2).item()
            count += y.numel()
    model.train()
    return sq / count                         # MSE mean over all elements


def run(name, d, meta, epochs_override):
    m = meta[name]
    model, train, val = {"lstm": load_lstm, "wide_deep": load_wide_deep}[name](d, m)
    epochs = epochs_override or m["epochs"]
    bs, n = m["batch_size"], m["train_n"]
    opt = torch.optim.Adam(model.parameters(), lr=m["learning_rate"], eps=1e-8)
    loss_fn = nn.MSELoss()
    throughput, val_hist = [], []
    model.train()
    for ep in range(1, epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n).numpy()
        for s in range(0, n, bs):
            inputs, y = batch(train, perm[s:s + bs])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(*inputs), y)
            loss.backward()
            opt.step()
        secs = time.perf_counter() - t0
        throughput.append(n / secs)
        val_hist.append(validate(model, val, bs))
        print(f"[torch {name}] epoch {ep}/{epochs}: {secs:.2f}s {n / secs:.0f} samples/s "
              f"train_loss(last batch)={loss.item():.5f} val_mse={val_hist[-1]:.5f}",
              file=sys.stderr)
    timed = throughput[1:] or throughput     # epoch 1 is warm-up unless it is the only one
    return {"samples_per_s": statistics.median(timed), "epoch_samples_per_s": throughput,
            "final_val_loss": val_hist[-1], "val_loss_history": val_hist}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--model", choices=["lstm", "wide_deep", "both"], default="both")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    with open(os.path.join(args.dir, "meta.json")) as f:
        meta = json.load(f)
    failed = False
    for name in (["lstm", "wide_deep"] if args.model == "both" else [args.model]):
        torch.manual_seed(0)                  # same init/permutations whatever --model is
        try:
            res = {"peer": "pytorch", "torch": torch.__version__, "model": name,
                   **run(name, args.dir, meta, args.epochs), "threads": torch.get_num_threads()}
        except Exception as e:                # one bad model must not hide the other's result
            res, failed = {"peer": "pytorch", "model": name, "error": f"{type(e).__name__}: {e}"}, True
        print(json.dumps(res), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
