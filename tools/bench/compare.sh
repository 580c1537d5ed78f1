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
/usr/bin/python3 - "$work" "$rounds" "$size" "$steps" "$threads" "$sdversion" <<'PY'
import json, re, sys
work, rounds, size, steps, threads, sdversion = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]

def timev(path):
    t = open(path).read()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) * 1024
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", t)
    wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    return rss, wall

def stepwise(r):
    j = json.load(open(f"{work}/sw{r}.out"))
    st = {s["stage"]: s["seconds"] for s in j["stages"]}
    rss, wall = timev(f"{work}/sw{r}.time")
    return {"load": j["load_seconds"], "te": st["tokenize + text encoder"],
            "step1": st["unet step 1"], "step": j["unet_step_seconds"],
            "vae": st["vae decode + readback"], "wall": wall, "rss": rss,
            "device": j["device"]}

def sdcpp(r):
    log = "".join(open(f"{work}/sd{r}.{e}", errors="replace").read() for e in ("out", "err"))
    def one(pat):
        m = re.search(pat, log)
        if not m:
            sys.exit(f"compare.sh: no '{pat}' in sd.cpp's log {work}/sd{r}.out")
        return float(m.group(1))
    # The progress bar: "\r|====|  2/3 - 6.12s/it" (it/s below 1 s), one per step.
    per = {}
    for n, v, unit in re.findall(r"\|\s*(\d+)/%d - ([\d.]+)(s/it|it/s)" % steps, log):
        per[int(n)] = float(v) if unit == "s/it" else 1 / float(v)
    if sorted(per) != list(range(1, steps + 1)):
        sys.exit(f"compare.sh: sd.cpp's log {work}/sd{r}.out has steps {sorted(per)}, want 1..{steps}")
    rss, wall = timev(f"{work}/sd{r}.time")
    later = [per[i] for i in range(2, steps + 1)] or [per[1]]
    return {"load": one(r"loading tensors completed, taking ([\d.]+)s"),
            "te": one(r"get_learned_condition completed, taking ([\d.]+)s"),
            "step1": per[1], "step": sum(later) / len(later),
            "vae": one(r"decode_first_stage completed, taking ([\d.]+)s"),
            "wall": wall, "rss": rss}

sw = [stepwise(r) for r in range(1, rounds + 1)]
sd = [sdcpp(r) for r in range(1, rounds + 1)]
for runs in (sw, sd):
    for x in runs:
        x["first"] = x["load"] + x["te"] + x["step1"]

load = [l.split() for l in open(f"{work}/load") if len(l.split()) == 2]
l1 = [float(a) for a, _ in load]
avail = [int(b) * 1024 for _, b in load]

print(f"SD 1.5 (random fp16 weights) {size}x{size}, euler, {steps} steps, cfg 7.5, seed 1; "
      f"{rounds} rounds, runs alternating Stepwise / sd.cpp")
print(f"stepwise on {sw[0]['device']} | {sdversion}, CPU, -t {threads}")
print(f"{'stage (seconds)':30s} {'stepwise best':>13s} {'range':>13s} {'sd.cpp best':>11s} {'range':>13s} {'ratio':>6s}")
rows = [("load weights", "load"), ("text encoder (2 prompts)", "te"),
        ("unet step 1", "step1"), ("load to first step done", "first"),
        (f"unet CFG step (mean 2..{steps})", "step"), ("vae decode", "vae"),
        ("process wall", "wall")]
rng = lambda v: f"{min(v):.2f}-{max(v):.2f}"
for name, k in rows:
    a, b = [x[k] for x in sw], [x[k] for x in sd]
    print(f"{name:30s} {min(a):13.2f} {rng(a):>13s} {min(b):11.2f} {rng(b):>13s} {min(a)/min(b):6.2f}")
a, b = [x["rss"] / 1e9 for x in sw], [x["rss"] / 1e9 for x in sd]
print(f"{'peak RSS (GB)':30s} {min(a):13.2f} {rng(a):>13s} {min(b):11.2f} {rng(b):>13s} {min(a)/min(b):6.2f}")
if l1:
    print(f"load average (1 min) during the runs: min {min(l1):.2f}, mean {sum(l1)/len(l1):.2f}, "
          f"max {max(l1):.2f} ({len(l1)} samples, {threads} CPUs); lowest MemAvailable {min(avail)/2**30:.1f} GiB")
PY
ok=1
