#!/usr/bin/env bash
# Runs `stepwise bench --random KIND` and the same networks in PyTorch on this
# machine, and prints both with the ratio Stepwise/PyTorch per stage.
# usage: tools/bench/compare.sh [sd15|sd15-mini] [SIZE] [STEPS] [DEVICE]
set -euo pipefail
kind=${1:-sd15-mini}; size=${2:-0}; steps=${3:-4}; device=${4:-gl}
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
go build -o bin/stepwise ./cmd/stepwise
sw=$(bin/stepwise bench --random "$kind" --size "$size" --steps "$steps" --device "$device" --json)
pt=$(/usr/bin/python3 tools/bench/torch_bench.py --random "$kind" --size "$size" --steps "$steps" --threads "$(nproc)")
/usr/bin/python3 - "$sw" "$pt" <<'PY'
import json, sys
sw, pt = json.loads(sys.argv[1]), json.loads(sys.argv[2])
stages = {s["stage"]: s for s in sw["stages"]}
te = stages["tokenize + text encoder"]["seconds"]
vae = stages["vae decode + readback"]["seconds"]
rows = [("text encoder (2 prompts)", te, pt["text_encoder_seconds"]),
        ("unet CFG step", sw["unet_step_seconds"], pt["unet_cfg_step_seconds"]),
        ("vae decode", vae, pt["vae_decode_seconds"])]
print(f"{sw['model']} {sw['size']}x{sw['size']} | stepwise on {sw['device']} | torch {pt['torch']} {pt['device']} {pt['dtype']} {pt['threads']} threads")
print(f"{'stage':28s} {'stepwise s':>11s} {'torch s':>9s} {'ratio':>7s}")
for name, a, b in rows:
    print(f"{name:28s} {a:11.4f} {b:9.4f} {a/b:7.2f}")
PY
