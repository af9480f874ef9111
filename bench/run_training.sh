#!/usr/bin/env bash
# Training throughput, mlbox (Burn, flex CPU backend) against PyTorch (CPU), same data, same
# machine, same run:
#   bash bench/run_training.sh [--epochs N]
# 1. `cargo bench --bench training` trains both fixed configs with mlbox's trainers in release and
#    writes the exact training/validation arrays to a temp dir;
# 2. bench/peers/torch_training.py trains PyTorch on those arrays (venv outside the repo: created
#    with `python3 -m venv /work/.cache/bench-venvs/torch && .../pip install torch numpy`, or set
#    TORCH_PY to a python that has torch).
# Prints one JSON line per (peer, model) and the mlbox/PyTorch ratios. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=5
[ "${1:-}" = "--epochs" ] && EPOCHS="$2"
DIR=$(mktemp -d /tmp/mlbox-training-bench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
TORCH_PY=${TORCH_PY:-/work/.cache/bench-venvs/torch/bin/python}
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg), cpus: $(nproc)" >&2
cargo bench --bench training -- "$DIR" --epochs "$EPOCHS" 2>/dev/null | grep '^{' | tee "$DIR/mlbox.jsonl"
BENCH_THREADS=${BENCH_THREADS:-$(nproc)} "$TORCH_PY" bench/peers/torch_training.py "$DIR" --epochs "$EPOCHS" \
  | grep '^{' | tee "$DIR/torch.jsonl"
python3 - "$DIR" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for f in ("mlbox.jsonl", "torch.jsonl") for l in open(f"{d}/{f}")]
by = {(r["peer"], r["model"]): r for r in rows}
for m in ("lstm", "wide_deep"):
    a, b = by.get(("mlbox", m)), by.get(("pytorch", m))
    if a and b and "samples_per_s" in b:
        print(json.dumps({"model": m, "mlbox_samples_per_s": round(a["samples_per_s"]),
                          "pytorch_samples_per_s": round(b["samples_per_s"]),
                          "throughput_ratio": round(a["samples_per_s"] / b["samples_per_s"], 2),
                          "mlbox_val_loss": round(a["final_val_loss"], 5), "pytorch_val_loss": round(b["final_val_loss"], 5),
                          "val_loss_ratio": round(a["final_val_loss"] / b["final_val_loss"], 3)}))
PY
