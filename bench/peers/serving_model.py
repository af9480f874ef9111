"""The peers' taxi trip-duration wide&deep model for the serving benchmark (bench/run_serving.sh).

Same architecture sizes and per-request preprocessing as mlbox's wide_deep model
(src/train/tabular.rs, src/train/wide_deep.rs):
  wide  : 6 fields -> one shared Embedding(sum(WIDE_SIZES), 1), summed, + bias
          [dow 7, hour 24, hash(day-of-year, hour) 4001, pickup 266, dropoff 266,
           hash(pickup, dropoff) 10007], field offsets applied
  deep  : Embedding(7+24+266+266, 8) of dow, hour, pickup, dropoff (per-field offsets)
          ++ 2 normalised dense features [passenger_count, ln(1 + approx distance)]
          -> Linear 34-64 ReLU -> 64-32 ReLU -> 32-1
  output: wide + deep, de-normalised to minutes (target mean/std).
The approximate distance is looked up in a per-zone-pair median table ("p-q" -> miles, falling
back to the pickup zone's median, then the global one), as mlbox does.
Weights and tables are random with a fixed seed: the benchmark measures serving overhead, not
accuracy. Everything per request (datetime parsing, hashing, dict look-ups, tensors, torch
forward under eval + no_grad) is real.

Build the artifacts (run with the serving venv's python):
    python serving_model.py OUT_DIR
writes OUT_DIR/model/{weights.pt,prep.json} (loaded by serve_kserve.py) and OUT_DIR/mlflow
(an MLflow pyfunc model directory for `mlflow models serve -m OUT_DIR/mlflow`).
"""
import json
import math
import os
import sys
from datetime import datetime

import numpy as np
import torch
from torch import nn

ZONES = 266                                   # zone ids 1..265; anything else -> 0
DOY_HOUR_BUCKETS, CROSS_BUCKETS = 4_001, 10_007
WIDE_SIZES = [7, 24, DOY_HOUR_BUCKETS, ZONES, ZONES, CROSS_BUCKETS]
DEEP_SIZES = [7, 24, ZONES, ZONES]
WIDE_OFF = [sum(WIDE_SIZES[:i]) for i in range(6)]
DEEP_OFF = [sum(DEEP_SIZES[:i]) for i in range(4)]
EMBED, MLP, DENSE = 8, (64, 32), 2
M64 = (1 << 64) - 1
SEED = 42


def hash2(a, b, buckets):
    """mlbox's hash2 (splitmix64-style mixing on wrapping u64 arithmetic)."""
    x = ((a * 0x9E3779B97F4A7C15) & M64) ^ ((b + 0x632BE59BD9B4E019) & M64)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return (x ^ (x >> 31)) % buckets


def zone(z):
    z = int(z)
    return z if 1 <= z < ZONES else 0


class WideDeep(nn.Module):
    def __init__(self):
        super().__init__()
        self.wide = nn.Embedding(sum(WIDE_SIZES), 1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.deep = nn.Embedding(sum(DEEP_SIZES), EMBED)
        layers, width = [], len(DEEP_SIZES) * EMBED + DENSE
        for h in MLP:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, wide, deep, dense):     # wide [B, 6] i64, deep [B, 4] i64, dense [B, 2] f32
        w = self.wide(wide).sum(dim=1)
        e = self.deep(deep).flatten(1)
        return w + self.bias + self.mlp(torch.cat([e, dense], dim=1))  # [B, 1]


def make_prep(rng):
    """A fitted-looking preprocessing state: distance tables, dense and target normalisation."""
    pairs = {f"{p}-{q}": round(float(rng.uniform(0.3, 25.0)), 2)
             for p in range(1, ZONES) for q in range(1, ZONES) if rng.random() < 0.6}
    pickups = {str(p): round(float(rng.uniform(0.5, 12.0)), 2) for p in range(1, ZONES)}
    return {"pair_distance": pairs, "pickup_distance": pickups, "global_distance": 1.8,
            "passengers_fill": 1.0, "dense_norm": [[1.5, 1.1], [1.2, 0.7]],
            "target_norm": [14.5, 11.0]}


class Predictor:
    """Preprocessing + torch forward for a batch of records (columns given as sequences)."""

    def __init__(self, model_dir):
        torch.set_num_threads(int(os.environ.get("SERVE_TORCH_THREADS", "1")))
        with open(os.path.join(model_dir, "prep.json")) as f:
            self.prep = json.load(f)
        self.model = WideDeep()
        self.model.load_state_dict(torch.load(os.path.join(model_dir, "weights.pt"), weights_only=True))
        self.model.eval()

    def distance(self, p, q):
        d = self.prep["pair_distance"].get(f"{p}-{q}")
        if d is None:
            d = self.prep["pickup_distance"].get(str(p), self.prep["global_distance"])
        return d

    def predict(self, times, pickups, dropoffs, passengers):
        wide, deep, dense = [], [], []
        (pm, ps), (dm, ds) = self.prep["dense_norm"]
        for t, p, q, n in zip(times, pickups, dropoffs, passengers):
            ts = datetime.fromisoformat(t.decode() if isinstance(t, bytes) else str(t))
            dow, hour, doy = ts.weekday(), ts.hour, ts.timetuple().tm_yday - 1
            p, q = zone(p), zone(q)
            fields = [dow, hour, hash2(doy, hour, DOY_HOUR_BUCKETS), p, q, hash2(p, q + 1_000, CROSS_BUCKETS)]
            wide.append([f + o for f, o in zip(fields, WIDE_OFF)])
            deep.append([f + o for f, o in zip((dow, hour, p, q), DEEP_OFF)])
            n = self.prep["passengers_fill"] if n is None or n != n else float(n)
            dense.append([(n - pm) / ps, (math.log1p(self.distance(p, q)) - dm) / ds])
        with torch.no_grad():
            z = self.model(torch.tensor(wide, dtype=torch.int64), torch.tensor(deep, dtype=torch.int64),
                           torch.tensor(dense, dtype=torch.float32))
        m, s = self.prep["target_norm"]
        return (m + s * z[:, 0].double()).tolist()  # minutes


try:  # the pyfunc wrapper; mlflow is only needed to build and serve the MLflow flavour
    import mlflow.pyfunc

    class TaxiPyfunc(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.predictor = Predictor(context.artifacts["model_dir"])

        def predict(self, context, model_input, params=None):  # model_input: pandas DataFrame of records
            df = model_input
            return self.predictor.predict(df["pickup_datetime"], df["pickup_location_id"],
                                          df["dropoff_location_id"], df["passenger_count"])
except ImportError:
    pass


def build(out):
    torch.manual_seed(SEED)
    model_dir = os.path.join(out, "model")
    os.makedirs(model_dir, exist_ok=True)
    torch.save(WideDeep().state_dict(), os.path.join(model_dir, "weights.pt"))
    with open(os.path.join(model_dir, "prep.json"), "w") as f:
        json.dump(make_prep(np.random.default_rng(SEED)), f)
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature
    example = pd.DataFrame([{"pickup_datetime": "2019-03-14 08:30:00", "pickup_location_id": 132,
                             "dropoff_location_id": 236, "passenger_count": 1.0}])
    sig = infer_signature(example, Predictor(model_dir).predict(*(example[c] for c in example.columns)))
    mlflow.pyfunc.save_model(os.path.join(out, "mlflow"), python_model=TaxiPyfunc(),
                             artifacts={"model_dir": model_dir}, signature=sig,
                             code_paths=[os.path.abspath(__file__)])
    print(f"built {model_dir} and {out}/mlflow", file=sys.stderr)


if __name__ == "__main__":
    # Import ourselves as `serving_model` so the pickled pyfunc refers to serving_model.TaxiPyfunc
    # (shipped via code_paths) instead of a __main__ class.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import serving_model
    serving_model.build(sys.argv[1])
