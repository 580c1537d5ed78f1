"""Prints the table of tools/bench/compare.sh's stable-diffusion.cpp mode from
the logs of its runs (in WORK, kept there with COMPARE_KEEP=1):
    sdcpp_report.py WORK ROUNDS SIZE STEPS THREADS SDVERSION
"""
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
    # sd.cpp logs to stdout; its progress bars are "\r  |===>  | 2/3 - 6.12s/it"
    # (it/s below 1 s), one per sampling step, timed from the step's start.
    path = f"{work}/sd{r}.out"
    log = open(path, errors="replace").read() + open(f"{work}/sd{r}.err", errors="replace").read()
    def at(pat):
        m = re.search(pat, log)
        if not m:
            sys.exit(f"sdcpp_report.py: no '{pat}' in {path}")
        return m
    te, vae = at(r"get_learned_condition completed, taking ([\d.]+)s"), at(r"decode_first_stage completed, taking ([\d.]+)s")
    sampled = at(r"sampling completed, taking ([\d.]+)s")
    per, first_step_at = {}, None
    for m in re.finditer(r"\|\s*(\d+)/%d - ([\d.]+)(s/it|it/s)" % steps, log):
        n, v = int(m.group(1)), float(m.group(2))
        per[n] = v if m.group(3) == "s/it" else 1 / v
        if n == 1:
            first_step_at = m.start()
    if sorted(per) != list(range(1, steps + 1)):
        sys.exit(f"sdcpp_report.py: {path} has sampling steps {sorted(per)}, want 1..{steps}")
    # By default sd.cpp loads each network's weights at its first use: the text
    # encoder's inside get_learned_condition, the U-Net's inside the first
    # sampling step, the VAE's inside decode_first_stage. Each such load is
    # moved out of its stage into "load weights", as Stepwise loads all first.
    loads = {"te": 0.0, "step1": 0.0, "vae": 0.0, "other": 0.0}
    for m in re.finditer(r"loading tensors completed, taking ([\d.]+)s", log):
        k = ("te" if m.start() < te.start() else
             "step1" if m.start() < first_step_at else
             "other" if m.start() < sampled.start() else
             "vae" if m.start() < vae.start() else "other")
        loads[k] += float(m.group(1))
    rss, wall = timev(f"{work}/sd{r}.time")
    later = [per[i] for i in range(2, steps + 1)] or [per[1]]
    return {"load": sum(loads.values()), "te": float(te.group(1)) - loads["te"],
            "step1": per[1] - loads["step1"], "step": sum(later) / len(later),
            "vae": float(vae.group(1)) - loads["vae"], "wall": wall, "rss": rss}

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
print(f"{'stage (seconds)':36s} {'stepwise best':>13s} {'range':>13s} {'sd.cpp best':>11s} {'range':>13s} {'ratio':>6s}")
rows = [("load weights (sd.cpp: lazy, summed)", "load"), ("text encoder (2 prompts)", "te"),
        ("unet step 1", "step1"), ("load to first step done", "first"),
        (f"unet CFG step (mean 2..{steps})", "step"), ("vae decode", "vae"),
        ("process wall", "wall")]
rng = lambda v: f"{min(v):.2f}-{max(v):.2f}"
for name, k in rows:
    a, b = [x[k] for x in sw], [x[k] for x in sd]
    print(f"{name:36s} {min(a):13.2f} {rng(a):>13s} {min(b):11.2f} {rng(b):>13s} {min(a)/min(b):6.2f}")
a, b = [x["rss"] / 1e9 for x in sw], [x["rss"] / 1e9 for x in sd]
print(f"{'peak RSS (GB)':36s} {min(a):13.2f} {rng(a):>13s} {min(b):11.2f} {rng(b):>13s} {min(a)/min(b):6.2f}")
if l1:
    print(f"load average (1 min) during the runs: min {min(l1):.2f}, mean {sum(l1)/len(l1):.2f}, "
          f"max {max(l1):.2f} ({len(l1)} samples, {threads} CPUs); lowest MemAvailable {min(avail)/2**30:.1f} GiB")
