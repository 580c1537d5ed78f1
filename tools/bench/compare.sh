#!/usr/bin/env bash
# Compares `stepwise bench` with another implementation on this machine and
# prints the ratio Stepwise/other per stage.
#
# PyTorch (the same networks, random weights, in tools/bench/torch_bench.py):
#   tools/bench/compare.sh [sd15|sd15-mini] [SIZE] [STEPS] [DEVICE]
#
# stable-diffusion.cpp (SDCPP names its sd-cli, or sd on older commits):
#   SDCPP=path/to/sd-cli tools/bench/compare.sh sd15 [SIZE] [STEPS] [ROUNDS]
# Both run one synthesised SD 1.5 file (written once with
# `stepwise bench --random sd15 --save FILE` and kept in $COMPARE_CACHE,
# default ${XDG_CACHE_HOME:-~/.cache}/stepwise-compare), alternately
# (Stepwise, sd.cpp, Stepwise, sd.cpp, ...: ROUNDS pairs, default 2) so that
# drift on a busy machine falls on both; each run is wrapped in
# /usr/bin/time -v for its peak RSS, and the load average is sampled while
# they run. Same prompt, negative prompt, seed, sampler (euler), steps
# (default 3; the U-Net step row is the mean of steps 2..N) and cfg 7.5.
set -euo pipefail
kind=${1:-sd15-mini}; size=${2:-0}
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
go build -o bin/stepwise ./cmd/stepwise

if [[ -z "${SDCPP:-}" ]]; then
steps=${3:-4}; device=${4:-gl}
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
exit 0
fi

# --- stable-diffusion.cpp ---
[[ "$kind" == sd15 ]] || { echo "compare.sh: with SDCPP, the model is sd15 (got $kind)" >&2; exit 2; }
[[ -x "$SDCPP" ]] || { echo "compare.sh: SDCPP=$SDCPP is not an executable" >&2; exit 2; }
[[ "$size" != 0 ]] || size=512
steps=${3:-3}; rounds=${4:-2}
threads=$(nproc)
prompt="a photograph of an astronaut riding a horse"; negative="blurry"; seed=1

cache=${COMPARE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stepwise-compare}
mkdir -p "$cache"
model="$cache/random-sd15.safetensors"
if [[ ! -s "$model" ]]; then
  bin/stepwise bench --random sd15 --save "$model" >&2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/compare.XXXXXX")
sampler_pid=
# The runs' logs stay in $work when something fails, or with COMPARE_KEEP=1.
ok=
cleanup() {
  [[ -n "$sampler_pid" ]] && kill "$sampler_pid" 2>/dev/null
  if [[ -n "$ok" && -z "${COMPARE_KEEP:-}" ]]; then rm -rf "$work"; else echo "compare.sh: logs in $work" >&2; fi
}
trap cleanup EXIT

# The 1-minute load average and MemAvailable every 2 s while the runs go. A run
# that brings MemAvailable under COMPARE_MIN_AVAIL_GIB (default 2) is stopped
# (the machine is shared; its other jobs should not meet the OOM killer).
min_kib=$(( ${COMPARE_MIN_AVAIL_GIB:-2} * 1024 * 1024 ))
( while :; do
    read -r l1 _ < /proc/loadavg
    avail=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    echo "$l1 $avail" >> "$work/load"
    if (( avail < min_kib )) && [[ -s "$work/running" ]]; then
      echo "compare.sh: MemAvailable $((avail / 1024)) MiB < ${COMPARE_MIN_AVAIL_GIB:-2} GiB: stopping the run" >&2
      kill -TERM -- "-$(cat "$work/running")" 2>/dev/null || true
      touch "$work/oom"
    fi
    sleep 2
  done ) &
sampler_pid=$!

# run NAME CMD...: CMD under /usr/bin/time -v in its own session (so that the
# memory guard can stop all of it), stdout to $work/NAME.out, stderr to .err.
run() {
  local name=$1; shift
  setsid -w /usr/bin/time -v -o "$work/$name.time" "$@" > "$work/$name.out" 2> "$work/$name.err" &
  echo $! > "$work/running"
  local rc=0; wait $! || rc=$?
  : > "$work/running"
  if [[ -e "$work/oom" ]]; then exit 1; fi
  if (( rc != 0 )); then tail -20 "$work/$name.err" "$work/$name.out" >&2; exit 1; fi
}
for ((r = 1; r <= rounds; r++)); do
  echo "round $r/$rounds: stepwise ${size}x$size, $steps steps" >&2
  run "sw$r" bin/stepwise bench --model "$model" --size "$size" --steps "$steps" --cfg-scale 7.5 \
    --sampler euler --json
  echo "round $r/$rounds: sd.cpp ${size}x$size, $steps steps" >&2
  run "sd$r" "$SDCPP" -m "$model" -p "$prompt" -n "$negative" -W "$size" -H "$size" --steps "$steps" \
    --cfg-scale 7.5 --sampling-method euler --seed "$seed" -t "$threads" -o "$work/sd$r.png" -v
done
kill "$sampler_pid" 2>/dev/null || true
sampler_pid=

# sd-cli knows its commit only when built in a git clone: SDCPP_COMMIT says it otherwise.
if [[ -n "${SDCPP_COMMIT:-}" ]]; then sdversion="stable-diffusion.cpp commit $SDCPP_COMMIT"
else sdversion=$("$SDCPP" --help 2>/dev/null | head -1 || true); fi
/usr/bin/python3 tools/bench/sdcpp_report.py "$work" "$rounds" "$size" "$steps" "$threads" "$sdversion"
ok=1
