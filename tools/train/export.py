"""Exports the trained model as one fp16 safetensors file in the original SD (LDM)
single-file key layout, plus the JSON config Stepwise's loader reads.

Weights: VAE from runs/vae.pt, U-Net and text encoder from the EMA weights in
runs/unet.pt, scaling_factor from runs/latents.pt.

    /usr/bin/python3 tools/train/export.py --out-dir tools/train/runs/export   # a look mid-training
    /usr/bin/python3 tools/train/export.py                 # -> models/bundled/stepwise-emoji.*
    /usr/bin/python3 tools/train/export.py --promote       # runs/best/ (the best on the quality
                                                           # bar, kept by train.py) -> models/bundled
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sdmodules as M  # noqa: E402
import ldm_keys  # noqa: E402
import train as T  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

TOKENIZER = {
    "add_prefix_space": False, "bos_token": "<|startoftext|>", "do_lower_case": True,
    "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 77,
    "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer", "unk_token": "<|endoftext|>",
}


def full_unet_cfg(c):
    d = dict(c)
    d["_class_name"] = "UNet2DConditionModel"
    return d


def full_vae_cfg(c, sf):
    d = dict(c)
    d["_class_name"] = "AutoencoderKL"
    d["scaling_factor"] = sf
    return d


def full_text_cfg(c):
    d = dict(c)
    d["_class_name"] = "CLIPTextModel"
    d["architectures"] = ["CLIPTextModel"]
    return d


def load_trained(runs):
    vck = torch.load(os.path.join(runs, "vae.pt"), map_location="cpu")
    lat = torch.load(os.path.join(runs, "latents.pt"), map_location="cpu")
    uck = torch.load(os.path.join(runs, "unet.pt"), map_location="cpu")
    return vck, lat, uck


def _atomic_write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def export(runs, out_dir, name, raw=False, log=print):
    """Writes <out_dir>/<name>.fp16.safetensors and .json from the checkpoints in runs;
    returns the prefix <out_dir>/<name>."""
    vck, lat, uck = load_trained(runs)
    sf = float(lat["scaling_factor"])
    unet_cfg, text_cfg, vae_cfg = uck["unet_cfg"], uck["text_cfg"], vck["cfg"]
    usd = uck["unet" if raw else "ema_unet"]
    tsd = uck["text" if raw else "ema_text"]
    vsd = vck["model"]
    # the modules must accept these state dicts exactly
    for mod, sd in ((M.UNet2DConditionModel(unet_cfg), usd), (M.CLIPTextModel(text_cfg), tsd),
                    (M.AutoencoderKL(vae_cfg), vsd)):
        M.load_into(mod, sd)
    ldm = ldm_keys.to_ldm(usd, unet_cfg, vsd, vae_cfg, tsd)
    if len(ldm) != len(usd) + len(tsd) + len(vsd):
        raise SystemExit("LDM mapping is not one-to-one")
    out = {}
    for k, v in ldm.items():
        v = v.detach().float().cpu()
        if not torch.isfinite(v).all() or v.abs().max() > 60000:
            raise SystemExit("%s: not representable in fp16" % k)
        out[k] = v.half()
    os.makedirs(out_dir, exist_ok=True)
    st = os.path.join(out_dir, name + ".fp16.safetensors")
    M.save_safetensors(st + ".tmp", out)
    os.replace(st + ".tmp", st)
    sha = hashlib.sha256(open(st, "rb").read()).hexdigest()
    nparams = sum(v.numel() for v in out.values())
    res = vae_cfg["sample_size"]
    info = {
        "unet_step": uck["step"], "samples": uck.get("seen"), "unet_loss_ema": uck.get("loss"),
        "vae_step": vck["step"], "vae_psnr_db": vck.get("psnr") or lat.get("psnr"), "res": res,
        "weights": "raw" if raw else "EMA", "init": uck.get("init_from"),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cfg = {
        "name": name,
        "unet": full_unet_cfg(unet_cfg),
        "vae": full_vae_cfg(vae_cfg, sf),
        "text_encoder": full_text_cfg(text_cfg),
        "scheduler": SCHEDULER,
        "tokenizer": TOKENIZER,
        "notes": [
            "Stepwise's bundled text-to-emoji latent diffusion model, trained by tools/train on all %d Noto "
            "Emoji images (%d emoji with their skin tones: smileys, people, animals, food, travel, activities, "
            "objects, symbols, flags) with emojibase CLDR labels, tags and other English names as captions." % (
                uck["data"]["images"], uck["data"]["concepts"]),
            "SD 1.x topology (original LDM single-file keys), narrow: %dx%d RGB <-> %dx%dx4 latent (VAE factor %d), "
            "U-Net %s with cross-attention at %s, text encoder CLIP width %d, %d layers, vocab 49408, "
            "77 positions." % (
                res, res, unet_cfg["sample_size"], unet_cfg["sample_size"], res // unet_cfg["sample_size"],
                unet_cfg["block_out_channels"],
                ", ".join("{0}x{0}".format(unet_cfg["sample_size"] >> i) for i, t in
                          enumerate(unet_cfg["down_block_types"]) if t.startswith("CrossAttn")) + " and in the mid block",
                text_cfg["hidden_size"], text_cfg["num_hidden_layers"]),
            "Prompt with an emoji's CLDR name, e.g. 'red heart', 'cat face', 'waving hand: medium skin tone', "
            "'flag: Japan'; 20 steps, guidance 5-8.",
            "Images: Noto Emoji (Apache-2.0) via emoji-datasource-google; captions: emojibase-data (MIT). "
            "See tools/train/LICENSES.md.",
            "training: " + json.dumps(info, sort_keys=True),
        ],
        "params": nparams,
        "files_sha256": {os.path.basename(st): sha},
    }
    # The free step-preview projection fitted to this VAE's latent space.
    import latent_rgb  # noqa: E402
    cfg["vae"].update(latent_rgb.fit(runs))
    js = os.path.join(out_dir, name + ".json")
    _atomic_write(js, (json.dumps(cfg, indent=1) + "\n").encode())
    size = os.path.getsize(st) + os.path.getsize(js)
    log("export: wrote %s (%d tensors, %.2fM params, %.2f MB) and %s; U-Net step %d, scaling_factor %.5f" % (
        st, len(out), nparams / 1e6, os.path.getsize(st) / 1e6, js, uck["step"], sf))
    if size > 32 * 1024 * 1024:
        raise SystemExit("export is %.1f MB, over the 32 MB budget" % (size / 1e6))
    return os.path.join(out_dir, name)


def add_quality_note(prefix, r):
    """Records quality.py's result in the export's .json notes."""
    js = prefix + ".json"
    cfg = json.load(open(js))
    cfg["notes"] = [n for n in cfg["notes"] if not n.startswith("quality: ")]
    cfg["notes"].append("quality: " + json.dumps({
        "percent": r["pct"], "labels": r["n"], "steps": r["steps"], "guidance": r["guidance"],
        "per_category": r["per_category"]}, sort_keys=True))
    _atomic_write(js, (json.dumps(cfg, indent=1) + "\n").encode())


def promote(runs, out_dir, name, grid=os.path.join(HERE, "quality_grid.png")):
    """Copies runs/best/ (what train.py kept as the best on the quality bar) over the
    export in out_dir, and its grid to tools/train/quality_grid.png."""
    best = os.path.join(runs, "best")
    src = os.path.join(best, name)
    if not os.path.exists(src + ".json"):
        raise SystemExit("%s: nothing there yet (train.py keeps an export there when it beats the committed one)" % best)
    import quality as Q
    new = Q.score_note(src)
    old = Q.score_note(os.path.join(out_dir, name)) if os.path.exists(os.path.join(out_dir, name + ".json")) else None
    os.makedirs(out_dir, exist_ok=True)
    for f in (name + ".fp16.safetensors", name + ".json"):
        shutil.copy(os.path.join(best, f), os.path.join(out_dir, f + ".tmp"))
        os.replace(os.path.join(out_dir, f + ".tmp"), os.path.join(out_dir, f))
    if os.path.exists(os.path.join(best, "quality_grid.png")):
        shutil.copy(os.path.join(best, "quality_grid.png"), grid)
    print("promoted %s -> %s: quality %s (the replaced export's note: %s)" % (
        best, out_dir, new, old if old is not None else "none"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=T.RUNS)
    ap.add_argument("--out-dir", default=os.path.join(REPO, "models", "bundled"))
    ap.add_argument("--name", default="stepwise-emoji")
    ap.add_argument("--raw", action="store_true", help="export the raw (non-EMA) U-Net/text weights")
    ap.add_argument("--promote", action="store_true",
                    help="copy runs/best/ to --out-dir (and its grid to --grid) instead")
    ap.add_argument("--grid", default=os.path.join(HERE, "quality_grid.png"))
    args = ap.parse_args()
    if args.promote:
        promote(args.runs, args.out_dir, args.name, args.grid)
    else:
        export(args.runs, args.out_dir, args.name, raw=args.raw)


if __name__ == "__main__":
    main()
