"""Quality bar for the bundled model (issue 7).

For 100 emoji labels drawn (fixed seed) from the training captions of the subset,
generate one image each from the EXPORTED single file (20 DDIM steps, guidance 6,
seed = index), and find the nearest training image by mean-squared error at 32x32.
A case passes when the nearest image is the prompted emoji or one of its skin-tone
variants. Prints the pass percentage; writes a 10x10 grid (generated images in
reading order) and a side-by-side grid with nearest matches under tools/train/runs/.

    /usr/bin/python3 tools/train/quality.py [--model models/bundled/stepwise-emoji]
"""

import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sdmodules as M  # noqa: E402
import ldm_keys  # noqa: E402
import train as T  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))


def load_exported(prefix):
    """Builds our modules from <prefix>.json and loads <prefix>.fp16.safetensors (LDM keys)."""
    cfg = json.load(open(prefix + ".json"))
    st = M.load_safetensors(prefix + ".fp16.safetensors")
    unet = M.UNet2DConditionModel(cfg["unet"])
    vae = M.AutoencoderKL(cfg["vae"])
    text = M.CLIPTextModel(cfg["text_encoder"])
    n = 0
    for mod, fn in ((unet, lambda d: ldm_keys.unet_to_ldm(d, cfg["unet"])),
                    (vae, lambda d: ldm_keys.vae_to_ldm(d, cfg["vae"])),
                    (text, ldm_keys.text_to_ldm)):
        sd = mod.state_dict()
        want = {}
        for dk, v in sd.items():
            (lk,) = fn({dk: v}).keys()
            if lk not in st:
                raise SystemExit("%s: missing tensor %s" % (prefix, lk))
            want[dk] = st[lk].float().reshape(v.shape)
        M.load_into(mod, want)
        n += len(want)
    if n != len(st):
        raise SystemExit("%s: %d tensors, modules use %d" % (prefix, len(st), n))
    for m in (unet, vae, text):
        m.eval()
    return cfg, unet, vae, text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(REPO, "models", "bundled", "stepwise-emoji"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--guidance", type=float, default=6.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, unet, vae, text = load_exported(args.model)
    sf = cfg["vae"]["scaling_factor"]
    imgs, items = T.load_data()
    res = cfg["vae"]["sample_size"]
    ref = T.to_tensor(imgs)
    if ref.shape[-1] != 32:
        ref = F.interpolate(ref, size=(32, 32), mode="area")
    concepts = sorted({it["concept"] for it in items})
    pick = random.Random(7).sample(concepts, min(args.n, len(concepts)))
    first = {}
    for i, it in enumerate(items):
        first.setdefault(it["concept"], i)
    labels = [items[first[c]]["label"] for c in pick]
    tok = T.TokenCache()
    t0 = time.time()
    outs = []
    with torch.no_grad():
        for b in range(0, len(labels), 10):
            xs = []
            for j, lab in enumerate(labels[b:b + 10]):
                xs.append(T.sample(unet, text, vae, sf, tok([lab]), tok([""]), steps=args.steps,
                                   guidance=args.guidance, seed=b + j))
            outs.append(torch.cat(xs))
    gen = torch.cat(outs).clamp(-1, 1)
    g32 = gen if res == 32 else F.interpolate(gen, size=(32, 32), mode="area")
    d = ((g32[:, None] - ref[None]) ** 2).mean(dim=(2, 3, 4))
    nn_idx = d.argmin(dim=1)
    ok = [items[int(n)]["concept"] == c for n, c in zip(nn_idx, pick)]
    pct = 100.0 * sum(ok) / len(ok)
    runs = T.RUNS
    os.makedirs(runs, exist_ok=True)
    T.save_grid(gen, os.path.join(runs, "quality_grid.png"), 10)
    pairs = torch.stack([torch.stack([g32[i], ref[first[c]], ref[int(nn_idx[i])]]) for i, c in enumerate(pick)])
    T.save_grid(pairs.reshape(-1, 3, 32, 32), os.path.join(runs, "quality_pairs.png"), 12)
    for lab, o, n in zip(labels, ok, nn_idx):
        print("%-4s %-40s nearest: %s" % ("ok" if o else "MISS", lab, items[int(n)]["label"]))
    print("model %s: %d/%d = %.0f%% nearest-is-prompted (bar 60%%), guidance %.1f, %d steps, %.0f s" % (
        args.model, sum(ok), len(ok), pct, args.guidance, args.steps, time.time() - t0))
    print("grid: %s (10x10, reading order = lines above); pairs: %s (generated | prompted | nearest)" % (
        os.path.join(runs, "quality_grid.png"), os.path.join(runs, "quality_pairs.png")))


if __name__ == "__main__":
    main()
