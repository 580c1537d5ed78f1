"""Quality bar for the bundled model (issue 19): >= 85%.

200 emoji labels are drawn with a fixed seed from the whole Noto set (an emoji uniformly
from all 1,911, then one of its skin-tone variants). For each, one image is generated
from the EXPORTED single file (fp16 weights, as Stepwise loads them): 20 DDIM steps,
the guidance the model's .json declares (6 when it declares none), seed = index. A case
passes when the nearest of the 3,786 Noto images at 64x64 by mean-squared error is the
prompted emoji or one of its skin-tone variants (a 32x32 model's images are scaled up
bilinearly first). Prints each case, the per-category hit rates and the total; writes a
20x10 grid of the generated images (reading order = the lines printed; green frame =
hit, red = miss) to tools/train/quality_grid.png, and generated | prompted | nearest
triples to runs/quality_pairs.png.

    /usr/bin/python3 tools/train/quality.py [--model models/bundled/stepwise-emoji]
        [--steps 4 --schedule leading|trailing]   # 4 leading = the studio's live profile
        [--stepwise ./stepwise]   # draw through Stepwise itself (GL), not PyTorch

With --stepwise BIN every image comes from `BIN generate` (the product's own path: its
tokenizer, GL kernels and DDIM; its default RNG draws torch's CPU noise for a seed, as
A1111 does, so the images are PyTorch's up to fp16 and GL rounding), one process per
label, so the score is what a user of that binary gets. On the 2026-12-08 export both
paths scored 68/200 with the same per-category counts.
"""

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train as T  # noqa: E402

BAR = 85.0
N, SEED, STEPS, GUIDANCE = 200, 7, 20, 6.0


def pick_labels(items, n=N, seed=SEED):
    """[(image index, concept)] drawn with a fixed seed from the whole set."""
    concepts = T.concept_index(items)
    rng = random.Random(seed)
    out = []
    for c in rng.sample(sorted(concepts), min(n, len(concepts))):
        vs = concepts[c]
        out.append((vs[rng.randrange(len(vs))], c))
    return out


def default_guidance(cfg):
    g = cfg.get("guidance") or cfg.get("defaults", {}).get("guidance")
    return float(g) if g else GUIDANCE


@torch.no_grad()
def evaluate(prefix, n=N, steps=STEPS, guidance=None, threads=2, grid=None, pairs=None, batch=20, verbose=False,
             spacing="leading", stepwise=None):
    torch.set_num_threads(threads)
    t0 = time.time()
    cfg, unet, vae, text = T.load_exported(prefix)
    if guidance is None:
        guidance = default_guidance(cfg)
    sf = cfg["vae"]["scaling_factor"]
    imgs, items = T.load_data()
    ref = T.to_tensor(imgs)
    cases = pick_labels(items, n)
    labels = [items[i]["label"] for i, _ in cases]
    if stepwise:
        gen = draw_with_stepwise(stepwise, prefix, labels, steps, guidance, spacing).clamp(-1, 1)
    else:
        tok = T.TokenCache()
        outs = []
        for b in range(0, len(labels), batch):
            outs.append(T.sample(unet, text, vae, sf, tok(labels[b:b + batch]), tok([""]), steps=steps,
                                 guidance=guidance, seed=list(range(b, min(b + batch, len(labels)))), spacing=spacing))
        gen = torch.cat(outs).clamp(-1, 1)
    if gen.shape[-1] != ref.shape[-1]:
        gen = F.interpolate(gen, size=ref.shape[-2:], mode="bilinear", align_corners=False).clamp(-1, 1)
    nn = T.nearest(gen, ref)
    ok = [items[int(j)]["concept"] == c for j, (_, c) in zip(nn, cases)]
    per = {c: [0, 0] for c in T.CATEGORIES}
    rows = []
    for (i, c), o, j in zip(cases, ok, nn):
        cat = items[i]["category"]
        per[cat][0] += int(o)
        per[cat][1] += 1
        rows.append((items[i]["label"], o, items[int(j)]["label"], cat))
        if verbose:
            print("%-4s %-10s %-50s nearest: %s" % ("ok" if o else "MISS", cat, items[i]["label"], items[int(j)]["label"]))
    if grid:
        save_quality_grid(gen, ok, grid)
    if pairs:
        trip = torch.stack([torch.stack([gen[k], ref[i], ref[int(nn[k])]]) for k, (i, _) in enumerate(cases)])
        T.save_grid(trip.reshape(-1, *gen.shape[1:]), pairs, 24)
    return {"pct": 100.0 * sum(ok) / len(ok), "hits": sum(ok), "n": len(ok), "steps": steps, "guidance": guidance,
            "spacing": spacing,
            "per_category": per, "rows": rows, "seconds": time.time() - t0, "res": cfg["vae"]["sample_size"]}


def draw_with_stepwise(binary, prefix, labels, steps, guidance, spacing):
    """One image per label from `binary generate` on the exported file (seed = index)."""
    imgs = []
    with tempfile.TemporaryDirectory(prefix="stepwise-quality-") as tmp:
        for k, label in enumerate(labels):
            out = os.path.join(tmp, "%03d.png" % k)
            cmd = [binary, "generate", "--model", prefix + ".fp16.safetensors", "-p", label, "--seed", str(k),
                   "--steps", str(steps), "--sampler", "ddim", "--schedule", spacing, "--cfg-scale", repr(guidance),
                   "-o", out]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit("quality: %s failed for %r: %s" % (" ".join(cmd[:2]), label, r.stderr.strip()))
            imgs.append(np.array(Image.open(out).convert("RGB")))
    return T.to_tensor(np.stack(imgs))


def save_quality_grid(gen, ok, path, cols=20, max_bytes=300_000):
    """Tiles with a 2-pixel green (hit) or red (miss) frame, as a 256-colour PNG; tiles
    are scaled down if the file would be over max_bytes."""
    x = ((gen.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy().copy()
    for k, o in enumerate(ok):
        c = (0, 170, 0) if o else (220, 0, 0)
        x[k, :2], x[k, -2:], x[k, :, :2], x[k, :, -2:] = c, c, c, c
    n, h, w, _ = x.shape
    rows = (n + cols - 1) // cols
    out = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = x[k]
    im = Image.fromarray(out)
    for scale in (1.0, 0.75, 0.5):
        sm = im if scale == 1.0 else im.resize((int(im.width * scale), int(im.height * scale)), Image.BOX)
        buf = io.BytesIO()
        sm.quantize(256, dither=Image.Dither.NONE).save(buf, "PNG", optimize=True)
        if buf.tell() <= max_bytes:
            break
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)


def per_category_line(r):
    return ", ".join("%s %d/%d" % (c, h, n) for c, (h, n) in r["per_category"].items() if n)


def per_category_table(r):
    lines = ["%-11s %5s %5s %6s" % ("category", "hits", "of", "rate")]
    for c, (h, n) in r["per_category"].items():
        lines.append("%-11s %5d %5d %5.0f%%" % (c, h, n, 100.0 * h / n if n else float("nan")))
    lines.append("%-11s %5d %5d %5.1f%%" % ("all", r["hits"], r["n"], r["pct"]))
    return "\n".join(lines)


def score_note(prefix):
    """The 'quality: {...}' note an export carries (train.py writes it), as text."""
    cfg = json.load(open(prefix + ".json"))
    for note in cfg.get("notes", []):
        if note.startswith("quality: "):
            q = json.loads(note[len("quality: "):])
            return "%.1f%% of %d labels" % (q["percent"], q["labels"])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=T.EXPORTED, help="prefix of <prefix>.fp16.safetensors and <prefix>.json")
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's .json, else 6")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--schedule", choices=("leading", "trailing"), default="leading",
                    help="DDIM timestep spacing; the studio's live mode is --steps 4 with the model's (leading)")
    ap.add_argument("--data", default=T.DATA, help="folder with full64.npz and full64.json (train.py's data stage)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grid", default=os.path.join(HERE, "quality_grid.png"))
    ap.add_argument("--runs", default=T.RUNS)
    ap.add_argument("--stepwise", metavar="BIN", help="draw with this Stepwise binary (`BIN generate`) instead of PyTorch")
    args = ap.parse_args()
    os.makedirs(args.runs, exist_ok=True)
    T.DATA = args.data
    pairs = os.path.join(args.runs, "quality_pairs.png")
    r = evaluate(args.model, args.n, args.steps, args.guidance, args.threads, args.grid, pairs, verbose=True,
                 spacing=args.schedule, stepwise=args.stepwise and os.path.abspath(args.stepwise))
    if args.grid:
        import shutil
        shutil.copy(args.grid, os.path.join(args.runs, "quality_grid.png"))
    print()
    print(per_category_table(r))
    print("model %s (%dx%d): %d/%d = %.1f%% nearest-is-prompted (bar %.0f%%: %s), guidance %.1f, %d DDIM steps (%s), %s, %.0f s" % (
        args.model, r["res"], r["res"], r["hits"], r["n"], r["pct"], BAR, "met" if r["pct"] >= BAR else "not met",
        r["guidance"], r["steps"], r["spacing"], "drawn by " + args.stepwise if args.stepwise else "drawn by PyTorch",
        r["seconds"]))
    print("grid: %s (%d per row, reading order = lines above); pairs: %s (generated | prompted | nearest)" % (
        args.grid, 20, pairs))


if __name__ == "__main__":
    main()
