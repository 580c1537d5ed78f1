"""Trains Stepwise's bundled text-to-emoji latent diffusion model (SD 1.x topology).

Stages (each resumes from its checkpoint under tools/train/runs/, and is skipped
when finished):
    data     fetch emoji-datasource-google + emojibase-data with `npm pack` at pinned
             versions, verify sha256, build the full Noto set (3,786 images, 64x64 RGB
             on white) with categories and captions
    vae      AutoencoderKL at 64x64: L1 + L2 reconstruction + small KL; reports PSNR
             and how often a reconstruction's nearest image is its own emoji
    latents  encode the set once (mean, std), compute scaling_factor = 1/std
    unet     U-Net + CLIP text encoder jointly, epsilon objective, scaled-linear
             betas, Min-SNR-5 weighting, EMA; sample grids and the quality bar
             (quality.py) now and then; the best export is kept in runs/best/
    all      all of the above in order

Without a checkpoint in runs/ (a new machine) every stage starts from the exported
model in the repo (models/bundled/stepwise-emoji, fp16 -> fp32, fresh optimizer)
wherever its tensors fit, so progress is never lost.

    tools/train/train.sh                      (= nice -n 19 python3 train.py all)
    /usr/bin/python3 tools/train/train.py unet --steps 80000 --runs /tmp/x
"""

import argparse
import fcntl
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import socket
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import sdmodules as M  # noqa: E402
import ldm_keys  # noqa: E402
from tokenizer import CLIPTokenizer  # noqa: E402

DATA = os.path.join(HERE, "data")
RUNS = os.environ.get("STEPWISE_TRAIN_RUNS") or os.path.join(HERE, "runs")
EXPORTED = os.path.join(REPO, "models", "bundled", "stepwise-emoji")  # prefix of .fp16.safetensors/.json
TOKDIR = os.path.join(REPO, "..", "shared", "golden", "sd15-mini", "tokenizer")

PACKAGES = {
    # npm package@version: sha256 of the tarball `npm pack` fetches
    "emoji-datasource-google@16.0.0": "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "emojibase-data@17.0.0": "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
}
DATA_NAME = "full64"  # data/full64.npz + data/full64.json

# emojibase `group` -> the nine categories of the quality report (2 = components:
# skin-tone swatches and hair styles, counted with people)
CATEGORIES = ["smileys", "people", "animals", "food", "travel", "activities", "objects", "symbols", "flags"]
GROUP_CAT = {0: "smileys", 1: "people", 2: "people", 3: "animals", 4: "food", 5: "travel",
             6: "activities", 7: "objects", 8: "symbols", 9: "flags"}
DS_CAT = {"Smileys & Emotion": "smileys", "People & Body": "people", "Component": "people",
          "Animals & Nature": "animals", "Food & Drink": "food", "Travel & Places": "travel",
          "Activities": "activities", "Objects": "objects", "Symbols": "symbols", "Flags": "flags"}
# emojibase shortcode sets whose names become captions ("other English names")
SHORTCODE_SETS = ["emojibase", "cldr", "github", "iamcal", "joypixels"]

# native resolution: the Noto 64x64 PNGs as they are; VAE factor 4 -> 16x16x4 latents
RES = 64

VAE_CFG = {
    "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4,
    "norm_num_groups": 8, "sample_size": RES, "scaling_factor": None,
}
# Cross-attention at 8x8 and in the 4x4 mid block only: self-attention over the 256
# positions of a 16x16 latent (the first model had it at 8x8) was 2/3 of a training
# step on the CPU and would have made a 20-step generation ~1.5x slower in Stepwise.
UNET_CFG = {
    "sample_size": RES // 4, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "block_out_channels": [32, 64, 128],
    "layers_per_block": 1, "attention_head_dim": 2, "cross_attention_dim": 64,
    "norm_num_groups": 16, "norm_eps": 1e-5, "act_fn": "silu", "center_input_sample": False,
    "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1, "mid_block_scale_factor": 1,
    "use_linear_projection": False, "transformer_layers_per_block": 1, "upcast_attention": False,
}
TEXT_CFG = {
    "vocab_size": 49408, "hidden_size": 64, "intermediate_size": 256, "projection_dim": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "dropout": 0.0,
    "initializer_range": 0.02, "initializer_factor": 1.0, "pad_token_id": 1, "bos_token_id": 0,
    "eos_token_id": 2,
}

SEED = 20261126
STOP = []  # set by SIGTERM/SIGINT: the running stage checkpoints and exits


def log(*a):
    print(time.strftime("%Y-%m-%d %H:%M:%S"), *a, flush=True)


def shown_path(path):
    """path relative to the repository when inside it (for notes that get committed)."""
    rel = os.path.relpath(os.path.abspath(path), REPO)
    return path if rel.startswith("..") else rel


def blas_library():
    """The BLAS library torch's CPU matrix products went through (Debian's torch links
    whichever libblas.so.3 the alternatives system points at), or None."""
    torch.ones(2, 2) @ torch.ones(2, 2)
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                if "libblas" in line or "openblas" in line:
                    return line.split()[-1]
    except OSError:
        pass
    return None


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _stop(signum, frame):
    if STOP:  # second signal: go now
        raise SystemExit(1)
    STOP.append(signum)
    log("signal %d: checkpointing and stopping" % signum)


# ----------------------------------------------------------------------------
# data

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def fetch():
    os.makedirs(DATA, exist_ok=True)
    dirs = {}
    for spec, want in PACKAGES.items():
        name, ver = spec.rsplit("@", 1)
        tgz = os.path.join(DATA, "%s-%s.tgz" % (name, ver))
        if os.path.exists(tgz) and sha256(tgz) != want:
            log("data: %s has the wrong sha256 (interrupted download?): fetching again" % tgz)
            os.remove(tgz)
        if not os.path.exists(tgz):
            log("npm pack", spec)
            tmpd = os.path.join(DATA, "npm.tmp")
            shutil.rmtree(tmpd, ignore_errors=True)
            os.makedirs(tmpd)
            subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmpd, check=True, stdout=subprocess.DEVNULL)
            os.replace(os.path.join(tmpd, os.path.basename(tgz)), tgz)
            shutil.rmtree(tmpd, ignore_errors=True)
        got = sha256(tgz)
        if got != want:
            raise SystemExit("%s: sha256 %s, want %s" % (tgz, got, want))
        out = os.path.join(DATA, name)
        if not os.path.isdir(out):
            tmp = out + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            with tarfile.open(tgz) as t:
                t.extractall(tmp)
            os.replace(tmp, out)
        dirs[name] = os.path.join(out, "package")
    return dirs["emoji-datasource-google"], dirs["emojibase-data"]


def _norm_hex(h):
    return "-".join(p for p in h.upper().split("-") if p != "FE0F")


def _names(codes):
    """Shortcodes -> caption words: 'smiling_face_with_3_hearts' -> 'smiling face with 3 hearts'."""
    if isinstance(codes, str):
        codes = [codes]
    return [c.replace("_", " ").replace("-", " ").strip() for c in codes if c]


def _dedup(names, exclude):
    out, seen = [], {exclude.lower()}
    for n in names:
        if re.fullmatch(r"u[0-9a-f]{4,6}", n):  # iamcal's code-point names of CJK signs
            continue
        if n and n.lower() not in seen:
            seen.add(n.lower())
            out.append(n)
    return out


def _tones(label):
    """'kiss: woman, man, light skin tone, dark skin tone' -> 'light skin tone, dark skin tone'."""
    rest = label.split(": ", 1)[1] if ": " in label else ""
    return ", ".join(p for p in rest.split(", ") if p.endswith("skin tone"))


def stage_data(args):
    npz = os.path.join(DATA, DATA_NAME + ".npz")
    js = os.path.join(DATA, DATA_NAME + ".json")
    if os.path.exists(npz) and os.path.exists(js):
        log("data: done (%s)" % npz)
        return
    eg, eb = fetch()
    emoji = json.load(open(os.path.join(eg, "emoji.json")))
    base = json.load(open(os.path.join(eb, "en", "data.json")))
    gb = {_norm_hex(x["hexcode"]): x["label"] for x in json.load(open(os.path.join(eb, "en-gb", "data.json")))}
    codes = {s: json.load(open(os.path.join(eb, "en", "shortcodes", s + ".json"))) for s in SHORTCODE_SETS}
    byhex = {}
    for x in base:
        byhex[_norm_hex(x["hexcode"])] = x
        for s in x.get("skins", []):
            byhex[_norm_hex(s["hexcode"])] = s
    emoji = [x for x in emoji if x.get("has_img_google")]
    emoji.sort(key=lambda x: x["sort_order"])
    imgs, items = [], []
    for concept, x in enumerate(emoji):
        h = _norm_hex(x["unified"])
        e = byhex.get(h)
        if e is None:
            raise SystemExit("data: no emojibase entry for %s %s" % (x["unified"], x["short_name"]))
        cat = GROUP_CAT[e["group"]] if "group" in e else DS_CAT[x["category"]]
        # other English names: Slack/iamcal short names, emojibase/CLDR/GitHub/JoyPixels
        # shortcodes as words, the en-GB label where it differs
        names = _names(x["short_names"])
        for s in SHORTCODE_SETS:
            names += _names(codes[s].get(e["hexcode"], []))
        names.append(gb.get(h, ""))
        names = _dedup(names, e["label"])
        variants = [(x["image"], x["unified"])]
        for key, v in sorted((x.get("skin_variations") or {}).items()):
            if v.get("has_img_google"):
                variants.append((v["image"], v["unified"]))
        for img, uni in variants:
            ev = byhex.get(_norm_hex(uni))
            if ev is None:
                raise SystemExit("data: no emojibase entry for %s (%s)" % (uni, x["short_name"]))
            path = os.path.join(eg, "img", "google", "64", img)
            im = Image.open(path).convert("RGBA")
            if im.size != (64, 64):
                raise SystemExit("%s: size %s, want 64x64" % (path, im.size))
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im).convert("RGB")
            if RES != 64:
                im = im.resize((RES, RES), Image.LANCZOS)
            imgs.append(np.asarray(im))
            tone = _tones(ev["label"]) if uni != x["unified"] else ""
            items.append({
                "label": ev["label"], "base_label": e["label"], "tags": e.get("tags", []),
                "names": [n + " " + tone for n in names] if tone else names,
                "hex": uni, "concept": concept, "tone": tone or None, "category": cat,
                "subgroup": x["subcategory"],
            })
    meta = {"packages": PACKAGES, "res": RES, "images": len(items), "concepts": len(emoji),
            "categories": {c: [sum(1 for it in items if it["category"] == c),
                               len({it["concept"] for it in items if it["category"] == c})] for c in CATEGORIES}}
    with open(js + ".tmp", "w") as f:
        json.dump({"meta": meta, "items": items}, f, indent=0, ensure_ascii=False)
    with open(npz + ".tmp.npz", "wb") as f:
        np.savez_compressed(f, images=np.stack(imgs))
    os.replace(js + ".tmp", js)
    os.replace(npz + ".tmp.npz", npz)
    log("data: %d images, %d emoji -> %s; per category [images, emoji]: %s" % (
        len(imgs), len(emoji), npz, json.dumps(meta["categories"])))


def load_data():
    imgs = np.load(os.path.join(DATA, DATA_NAME + ".npz"))["images"]
    items = json.load(open(os.path.join(DATA, DATA_NAME + ".json"), encoding="utf-8"))["items"]
    return imgs, items


def concept_index(items):
    """{concept: [image indices]} (its skin-tone variants)."""
    out = {}
    for i, it in enumerate(items):
        out.setdefault(it["concept"], []).append(i)
    return out


def to_tensor(imgs):
    return torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------
# the exported model (warm start when runs/ has nothing)

def load_exported(prefix):
    """Builds our modules from <prefix>.json and loads <prefix>.fp16.safetensors (LDM keys)
    into them as float32. Returns (cfg, unet, vae, text), all in eval mode."""
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


def export_info(cfg):
    """The 'training: {...}' note export.py writes into the .json ({} if none)."""
    for n in cfg.get("notes", []):
        if n.startswith("training: "):
            try:
                return json.loads(n[len("training: "):])
            except ValueError:
                pass
    return {}


def copy_matching(dst, src, what):
    """Copies the tensors of src's state dict whose name and shape fit dst; logs what did not."""
    d, s = dst.state_dict(), src.state_dict()
    hit = [k for k in d if k in s and s[k].shape == d[k].shape]
    with torch.no_grad():
        for k in hit:
            d[k].copy_(s[k])
    miss = [k for k in d if k not in hit]
    n_hit = sum(d[k].numel() for k in hit)
    n_all = sum(v.numel() for v in d.values())
    log("%s: warm start from the export: %d/%d tensors, %.2fM/%.2fM values%s" % (
        what, len(hit), len(d), n_hit / 1e6, n_all / 1e6,
        "" if not miss else "; fresh: " + ", ".join(sorted({".".join(k.split(".")[:3]) for k in miss}))))
    unused = sorted({".".join(k.split(".")[:3]) for k in s if k not in hit})
    if unused:
        log("%s: export tensors not used (no place in the new architecture): %s" % (what, ", ".join(unused)))
    return len(hit)


def try_export(args):
    if not args.init or not os.path.exists(args.init + ".json") or not os.path.exists(args.init + ".fp16.safetensors"):
        return None
    log("loading the exported model %s for the warm start" % args.init)
    return load_exported(args.init)


def same_vae_arch(a, b):
    keys = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "down_block_types")
    return all(a.get(k) == b.get(k) for k in keys)


# ----------------------------------------------------------------------------
# VAE

def stage_vae(args):
    path = os.path.join(RUNS, "vae.pt")
    dev = device()
    imgs, items = load_data()
    x_all = to_tensor(imgs)
    torch.manual_seed(SEED)
    vae = M.AutoencoderKL(VAE_CFG).to(dev)
    opt = torch.optim.Adam(vae.parameters(), lr=args.vae_lr)
    step = 0
    if os.path.exists(path):
        ck = torch.load(path, map_location=dev)
        vae.load_state_dict(ck["model"])
        if ck.get("done"):
            log("vae: done (step %d, PSNR %.2f dB)" % (ck["step"], ck.get("psnr", 0)))
            return
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        log("vae: resumed at step %d" % step)
    else:
        ex = try_export(args)
        if ex is not None:
            cfg, _, evae, _ = ex
            if cfg["vae"].get("sample_size") == RES and same_vae_arch(cfg["vae"], VAE_CFG):
                # the exported U-Net was trained on this VAE's latents: keep it as it is
                info = export_info(cfg)
                vae.load_state_dict(evae.state_dict())
                psnr, nn_ok = vae_eval(vae, x_all, items, dev, n=512)
                atomic_save({"model": vae.state_dict(), "step": info.get("vae_step", 0), "cfg": VAE_CFG,
                             "done": True, "psnr": psnr, "nn": nn_ok, "from_export": args.init,
                             "scaling_factor": cfg["vae"]["scaling_factor"]}, path)
                log("vae: taken from the export (trained at %dx%d), PSNR %.2f dB" % (RES, RES, psnr))
                return
            copy_matching(vae, evae, "vae")
            psnr, nn_ok = vae_eval(vae, x_all, items, dev, n=512)
            log("vae: the export's VAE (trained at %d) on %dx%d images before fine-tuning: PSNR %.2f dB (512 images)" % (
                cfg["vae"].get("sample_size", 0), RES, RES, psnr))
    total = args.vae_steps
    bs = args.vae_batch
    g = torch.Generator().manual_seed(SEED + step)
    rate = Rate()
    last_ck = time.time()
    ema_loss = None
    warm = 100
    while step < total and not STOP:
        idx = torch.randint(0, len(x_all), (bs,), generator=g)
        x = x_all[idx].to(dev)
        lr = args.vae_lr * min(1.0, (step + 1) / warm) * (0.5 * (1 + math.cos(math.pi * step / total)) * 0.9 + 0.1)
        for pg in opt.param_groups:
            pg["lr"] = lr
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g).to(dev)
        y = vae.decode(z)
        rec = (y - x).abs().mean() + ((y - x) ** 2).mean()
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=(1, 2, 3)).mean()
        loss = rec + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        rate.add(bs)
        ema_loss = rec.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * rec.item()
        if step % 25 == 0:
            sps = rate.get()
            log("vae step %d/%d rec %.4f kl %.1f lr %.2e %.1f samples/s ETA %s" % (
                step, total, ema_loss, kl.item(), lr, sps, eta((total - step) * bs / max(sps, 1e-6))))
        if time.time() - last_ck > args.ckpt_every or step == total or STOP:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "cfg": VAE_CFG}, path)
            last_ck = time.time()
            log("vae: checkpoint step %d, PSNR %.2f dB (first 128 images)" % (
                step, vae_eval(vae, x_all[:128], None, dev)[0]))
    if STOP:
        return
    psnr, nn_ok = vae_eval(vae, x_all, items, dev)
    atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "cfg": VAE_CFG,
                 "done": True, "psnr": psnr, "nn": nn_ok}, path)


def nearest(gen, ref, chunk=256):
    """Index of the nearest image of ref (N,3,H,W) by MSE for each image of gen."""
    r = ref.reshape(ref.shape[0], -1)
    rn = (r * r).sum(1)
    out = []
    for i in range(0, gen.shape[0], chunk):
        q = gen[i:i + chunk].reshape(min(chunk, gen.shape[0] - i), -1)
        d = rn[None] - 2 * q @ r.t()  # |q|^2 is the same for every candidate
        out.append(d.argmin(1))
    return torch.cat(out)


@torch.no_grad()
def vae_eval(vae, x_all, items, dev, n=None, grid=True):
    """PSNR (mean latents) and, with items, the share of reconstructions whose nearest
    image (MSE, the whole set) is their own emoji: the ceiling of the quality bar."""
    was = vae.training
    vae.eval()
    ref = x_all
    if n is not None:
        x_all = x_all[:n]
    mse, recs = [], []
    for i in range(0, len(x_all), 64):
        x = x_all[i:i + 64].to(dev)
        y = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
        mse.append((((y - x) / 2) ** 2).mean(dim=(1, 2, 3)).cpu())  # on the [0,1] scale
        recs.append(y.cpu())
    vae.train(was)
    mse = torch.cat(mse)
    recs = torch.cat(recs)
    if grid:
        k = min(32, len(x_all))
        save_grid(torch.cat([x_all[:k], recs[:k]]), os.path.join(RUNS, "vae_recon.png"), 8)
    psnr = float((10 * torch.log10(1.0 / mse)).mean())
    if items is None:
        return psnr, None
    nn = nearest(recs, ref)
    ok = float(np.mean([items[int(j)]["concept"] == items[i]["concept"] for i, j in enumerate(nn)]))
    log("vae: PSNR %.2f dB over %d images (mean latents); nearest image of the reconstruction is its own "
        "emoji for %.1f%% (ceiling of the quality bar)" % (psnr, len(x_all), 100 * ok))
    return psnr, ok


def save_grid(x, path, cols):
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    n, h, w, _ = x.shape
    rows = (n + cols - 1) // cols
    out = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = x[i]
    tmp = path + ".tmp.png"
    Image.fromarray(out).save(tmp)
    os.replace(tmp, path)


def load_vae(dev):
    ck = torch.load(os.path.join(RUNS, "vae.pt"), map_location=dev)
    vae = M.AutoencoderKL(ck["cfg"]).to(dev)
    vae.load_state_dict(ck["model"])
    vae.eval()
    return vae, ck


class Rate:
    """samples/s over the last few minutes (the machine's load changes)."""

    def __init__(self, window=300.0):
        self.w = window
        self.ev = [(time.time(), 0)]

    def add(self, n):
        now = time.time()
        self.ev.append((now, self.ev[-1][1] + n))
        while len(self.ev) > 2 and now - self.ev[1][0] > self.w:
            self.ev.pop(0)

    def get(self):
        (t0, n0), (t1, n1) = self.ev[0], self.ev[-1]
        return (n1 - n0) / max(t1 - t0, 1e-6)


def eta(sec):
    if sec > 5400:
        return "%.1f h" % (sec / 3600)
    return "%.0f min" % (sec / 60)


# ----------------------------------------------------------------------------
# latents

def stage_latents(args):
    path = os.path.join(RUNS, "latents.pt")
    dev = device()
    vae, ck = load_vae(dev)
    if os.path.exists(path):
        lat = torch.load(path)
        if lat.get("vae_step") == ck["step"] and lat.get("vae_from") == ck.get("from_export"):
            log("latents: done")
            return
        log("latents: the VAE changed since they were made: encoding again")
    imgs, items = load_data()
    x_all = to_tensor(imgs)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(x_all), 64):
            m, lv = vae.encode(x_all[i:i + 64].to(dev))
            means.append(m.cpu())
            stds.append(torch.exp(0.5 * lv).cpu())
    mean, std = torch.cat(means), torch.cat(stds)
    g = torch.Generator().manual_seed(SEED)
    z = mean + std * torch.randn(mean.shape, generator=g)
    sf = float(1.0 / z.std())
    if ck.get("scaling_factor"):  # a VAE taken from the export keeps the factor its U-Net knows
        log("latents: keeping the export's scaling_factor %.5f (1/std now: %.5f)" % (ck["scaling_factor"], sf))
        sf = float(ck["scaling_factor"])
    log("latents: %s, latent std %.4f -> scaling_factor %.5f, posterior std mean %.4f" % (
        tuple(mean.shape), z.std().item(), sf, std.mean().item()))
    atomic_save({"mean": mean, "std": std, "scaling_factor": sf, "psnr": ck.get("psnr"), "nn": ck.get("nn"),
                 "vae_step": ck["step"], "vae_from": ck.get("from_export")}, path)


# ----------------------------------------------------------------------------
# captions

def caption(item, rng):
    """label 45%, label + 1-3 tags 25%, another English name 20%, empty 10% (CFG)."""
    r = rng.random()
    if r < 0.10:
        return ""
    if r < 0.55 or (r >= 0.80 and not item["names"]):
        return item["label"]
    if r < 0.80:
        words = item["label"].lower().split()
        tags = [t for t in item["tags"] if t.lower() not in words]
        rng.shuffle(tags)
        k = rng.randint(1, 3)
        return ", ".join([item["label"]] + tags[:k])
    return rng.choice(item["names"])


class TokenCache:
    def __init__(self):
        self.tok = CLIPTokenizer(TOKDIR)
        self.cache = {}

    def __call__(self, texts):
        out = []
        for t in texts:
            if t not in self.cache:
                self.cache[t] = self.tok.encode_padded(t)
            out.append(self.cache[t])
        return torch.tensor(out, dtype=torch.long)


# ----------------------------------------------------------------------------
# U-Net + text encoder

def build_unet_text(dev):
    unet = M.UNet2DConditionModel(UNET_CFG).to(dev)
    text = M.CLIPTextModel(TEXT_CFG).to(dev)
    # transformers-like init for the text model
    for n, p in text.named_parameters():
        if p.dim() >= 2:
            torch.nn.init.normal_(p, std=0.02)
    # zero the U-Net's output conv (fast start, as in many diffusion trainers)
    torch.nn.init.zeros_(unet.conv_out.weight)
    torch.nn.init.zeros_(unet.conv_out.bias)
    return unet, text


@torch.no_grad()
def sample(unet, text, vae, sf, ids, uncond_ids, steps=20, guidance=6.0, seed=0, dev="cpu", size=None,
           spacing="leading"):
    """DDIM (eta 0), 'leading' timesteps with steps_offset 1 (SD1.5 scheduler defaults), or
    'trailing' timesteps (diffusers timestep_spacing="trailing": 999, 749, 499, 249 at 4
    steps; Stepwise's ddim with the trailing schedule). Each step goes to t - 1000//steps
    (alphas_cumprod[0] past the end), as diffusers' DDIMScheduler does for both spacings.
    seed: an int (one generator for the batch) or one seed per prompt."""
    dev = torch.device(dev) if isinstance(dev, str) else dev
    ac = M.scaled_linear_alphas_cumprod().to(dev)
    n = ids.shape[0]
    s = size or unet.cfg["sample_size"]
    if isinstance(seed, (list, tuple)):
        x = torch.cat([torch.randn((1, 4, s, s), generator=torch.Generator().manual_seed(int(q))) for q in seed])
    else:
        x = torch.randn((n, 4, s, s), generator=torch.Generator().manual_seed(seed))
    x = x.to(dev)
    ctx = text(ids.to(dev))
    uctx = text(uncond_ids.to(dev)).expand(n, -1, -1) if uncond_ids.shape[0] == 1 else text(uncond_ids.to(dev))
    ratio = 1000 // steps
    if spacing == "leading":
        ts = [i * ratio + 1 for i in range(steps)][::-1]
    elif spacing == "trailing":
        ts = [int(np.round(1000 - i * 1000 / steps)) - 1 for i in range(steps)]
    else:
        raise ValueError("spacing %r: want leading or trailing" % spacing)
    for i, t in enumerate(ts):
        tt = torch.full((2 * n,), float(t), device=dev)
        e = unet(torch.cat([x, x]), tt, torch.cat([uctx, ctx]))
        eu, ec = e.chunk(2)
        eps = eu + guidance * (ec - eu)
        a = ac[t]
        ap = ac[t - ratio] if t - ratio >= 0 else ac[0]  # set_alpha_to_one false
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = ap.sqrt() * x0 + (1 - ap).sqrt() * eps
    return vae.decode(x / sf)


class ConceptSampler:
    """Shuffled passes over all emoji: every pass shows each emoji once (so each category
    gets its share of the set, the share the quality bar draws), in a new random order;
    the skin-tone variant is drawn at random each time."""

    def __init__(self, concepts, seed):
        self.ids = sorted(concepts)
        self.rng = random.Random(seed)
        self.perm, self.pos, self.epoch = [], 0, 0

    def next(self):
        if self.pos >= len(self.perm):
            self.perm = list(self.ids)
            self.rng.shuffle(self.perm)
            self.pos = 0
            self.epoch += 1
        c = self.perm[self.pos]
        self.pos += 1
        return c

    def state(self):
        return {"rng": self.rng.getstate(), "perm": self.perm, "pos": self.pos, "epoch": self.epoch}

    def load(self, s):
        self.rng.setstate(s["rng"])
        self.perm, self.pos, self.epoch = s["perm"], s["pos"], s["epoch"]


class FastAdamW(torch.optim.AdamW):
    """torch.optim.AdamW (1.13, single-tensor path, no amsgrad) with one change: the
    bias-corrected second moment is multiplied by the reciprocal instead of divided by
    a Python float. Debian's torch 1.13 divides a tensor by a scalar element by element
    (7 ms for the 3.16M-value token table against 0.5 ms for a multiply), which made the
    optimizer step ~30% of a training step. Same state, so checkpoints load either way."""

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                k = st["step"].item()
                g, m, v = p.grad, st["exp_avg"], st["exp_avg_sq"]
                if wd:
                    p.mul_(1 - lr * wd)
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = v.sqrt().mul_(1.0 / math.sqrt(1 - b2 ** k)).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - b1 ** k))


# ----------------------------------------------------------------------------
# data parallel on the CPU (--procs): one torch thread per process does more work
# than two threads in one process, because the ops are small


class Peers:
    """Rank 0's side of --procs N: N-1 worker processes (spawned, gloo over loopback)
    share every batch with rank 0 (which takes `lead` samples, the others equal shares);
    gradients are summed with all_reduce (each loss is its share's sum over the whole
    batch size), and rank 0 alone steps the optimizer and sends the new weights before
    the next step.
    Workers hold no state of their own, so checkpoints, EMA and resuming are unchanged.
    Of the token table (half of all parameters) only the rows of the batch's tokens are
    sent and reduced: no other row is read or gets a gradient."""

    def __init__(self, n, threads, unet, text, lead):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ctx = torch.multiprocessing.get_context("spawn")
        self.procs = [ctx.Process(target=_worker, args=(r, n, port, threads), daemon=True) for r in range(1, n)]
        for pr in self.procs:
            pr.start()
        _init_group(0, n, port)
        self.n, self.lead = n, lead
        self.dense, self.table = split_params(unet, text)
        self.rows = None

    def step(self, zt, t, ids, noise, w):
        """Sends the batch and the weights it needs; returns rank 0's share of the batch."""
        dist.broadcast(torch.tensor([1, zt.shape[0], self.lead], dtype=torch.int64), 0)
        for x in (zt, t, ids, noise, w):
            dist.broadcast(x.contiguous(), 0)
        self.rows = torch.unique(ids)
        with torch.no_grad():
            flat = torch.cat([p.reshape(-1) for p in self.dense] + [self.table[self.rows].reshape(-1)])
        dist.broadcast(flat, 0)
        k = self.lead
        return zt[:k], t[:k], ids[:k], noise[:k], w[:k]

    def sum_grads(self):
        sum_grads(self.dense, self.table, self.rows)

    def close(self):
        try:
            dist.broadcast(torch.tensor([0, 0, 0], dtype=torch.int64), 0)
        finally:
            for pr in self.procs:
                pr.join(timeout=30)
            dist.destroy_process_group()


def split_params(unet, text):
    """(every parameter but the token table, the token table)."""
    table = text.text_model.embeddings.token_embedding.weight
    dense = [p for p in list(unet.parameters()) + list(text.parameters()) if p is not table]
    return dense, table


def _init_group(rank, n, port):
    # rank 0 may spend many minutes on a quality run between two steps
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port, rank=rank, world_size=n,
                            timeout=timedelta(hours=6))


def sum_grads(dense, table, rows):
    """Sums the gradients over the processes (each one's loss is its share's sum over the
    whole batch's size): the dense parameters' and the token table's rows `rows` (the
    others are zero in every process)."""
    for p in dense + [table]:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in dense] + [table.grad[rows].reshape(-1)])
    dist.all_reduce(flat)
    o = 0
    for p in dense:
        p.grad.copy_(flat[o:o + p.numel()].view_as(p))
        o += p.numel()
    table.grad[rows] = flat[o:].view(len(rows), -1)


def unet_loss(unet, text, zt, t, ids, noise, w, batch):
    """(this share's part of the batch's mean loss, the per-sample losses); batch is the
    whole batch's size, of which zt may be a share."""
    pred = unet(zt, t.float(), text(ids))
    per = ((pred - noise) ** 2).mean(dim=(1, 2, 3)) * w
    return per.sum() * (1.0 / batch), per


def _worker(rank, n, port, threads):
    """Rank r > 0 of --procs: computes the gradient of its share of each batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 checkpoints, then tells us to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _init_group(rank, n, port)
    unet, text = build_unet_text("cpu")
    dense, table = split_params(unet, text)
    nd = sum(p.numel() for p in dense)
    while True:
        hdr = torch.zeros(3, dtype=torch.int64)
        dist.broadcast(hdr, 0)
        if hdr[0].item() == 0:
            break
        b, lead = int(hdr[1].item()), int(hdr[2].item())
        zt, t = torch.empty(b, 4, RES // 4, RES // 4), torch.empty(b, dtype=torch.int64)
        ids, noise, w = torch.empty(b, 77, dtype=torch.int64), torch.empty(b, 4, RES // 4, RES // 4), torch.empty(b)
        for x in (zt, t, ids, noise, w):
            dist.broadcast(x, 0)
        rows = torch.unique(ids)
        flat = torch.empty(nd + len(rows) * table.shape[1])
        dist.broadcast(flat, 0)
        o = 0
        with torch.no_grad():
            for p in dense:
                p.copy_(flat[o:o + p.numel()].view_as(p))
                o += p.numel()
            table[rows] = flat[o:].view(len(rows), -1)
        k = (b - lead) // (n - 1)
        s = slice(lead + (rank - 1) * k, lead + rank * k)
        loss, _ = unet_loss(unet, text, zt[s], t[s], ids[s], noise[s], w[s], b)
        for p in dense + [table]:
            p.grad = None
        loss.backward()
        sum_grads(dense, table, rows)
    dist.destroy_process_group()


def stage_unet(args):
    path = os.path.join(RUNS, "unet.pt")
    dev = device()
    lat = torch.load(os.path.join(RUNS, "latents.pt"))
    mean, std, sf = lat["mean"], lat["std"], lat["scaling_factor"]
    imgs, items = load_data()
    concepts = concept_index(items)
    cat_of = {c: items[v[0]]["category"] for c, v in concepts.items()}
    torch.manual_seed(SEED)
    unet, text = build_unet_text(dev)
    ema_u, ema_t = M.UNet2DConditionModel(UNET_CFG).to(dev), M.CLIPTextModel(TEXT_CFG).to(dev)
    params = list(unet.parameters()) + list(text.parameters())
    opt = FastAdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    step, seen, opt_step0 = 0, 0, 0
    rng = random.Random(SEED)
    sampler = ConceptSampler(concepts, SEED + 1)
    init_from = None
    if os.path.exists(path):
        ck = torch.load(path, map_location=dev)
        unet.load_state_dict(ck["unet"])
        text.load_state_dict(ck["text"])
        ema_u.load_state_dict(ck["ema_unet"])
        ema_t.load_state_dict(ck["ema_text"])
        opt.load_state_dict(ck["opt"])
        step, seen, opt_step0 = ck["step"], ck.get("seen", 0), ck.get("opt_step0", 0)
        rng.setstate(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        sampler.load(ck["sampler"])
        init_from = ck.get("init_from")
        if abs(ck["scaling_factor"] - sf) > 1e-6:
            log("unet: WARNING: latents.pt has scaling_factor %.5f, the U-Net was trained with %.5f (VAE changed?)" % (
                sf, ck["scaling_factor"]))
        log("unet: resumed at step %d (%d samples, pass %d over the set)" % (step, seen, sampler.epoch))
    else:
        ex = try_export(args)
        if ex is not None:
            cfg, eu, _, et = ex
            copy_matching(unet, eu, "unet")
            copy_matching(text, et, "text")
            info = export_info(cfg)
            if cfg["vae"].get("sample_size") == RES:  # same task: continue its step count
                step, seen = info.get("unet_step", 0), info.get("samples", 0)
            opt_step0 = step
            init_from = "%s (U-Net step %s, %dx%d)" % (shown_path(args.init), info.get("unet_step"), cfg["vae"]["sample_size"],
                                                       cfg["vae"]["sample_size"])
        ema_u.load_state_dict(unet.state_dict())
        ema_t.load_state_dict(text.state_dict())
    total = args.steps
    if step >= total:
        log("unet: done (step %d of %d; --steps N to go on)" % (step, total))
        return
    log("unet: %.2fM params, text %.2fM params, %d images, %d emoji, batch %d, step %d of %d, lr %.1e, %s" % (
        sum(p.numel() for p in unet.parameters()) / 1e6, sum(p.numel() for p in text.parameters()) / 1e6,
        len(items), len(concepts), args.batch, step, total, args.lr, dev))
    tokc = TokenCache()
    ac = M.scaled_linear_alphas_cumprod().to(dev)
    vae, _ = load_vae(dev)
    # two emoji of each category for the sample grids
    by_cat = {}
    for c in sorted(concepts):
        by_cat.setdefault(cat_of[c], []).append(c)
    grid_items = [items[concepts[cs[len(cs) * k // 10]][0]]
                  for cs in (by_cat.get(cat) for cat in CATEGORIES) if cs for k in (3, 7)]
    if args.eval_every > 0:
        baseline_quality(args)
    rate = Rate()
    last_ck = last_grid = time.time()
    last_eval = time.time() if args.eval_first_after < 0 else time.time() - args.eval_every + args.eval_first_after
    ema_loss = None
    cat_loss = {c: [0.0, 0] for c in CATEGORIES}
    ema_p = list(ema_u.parameters()) + list(ema_t.parameters())
    bs = args.batch
    peers = None
    if args.procs > 1 and dev.type == "cpu":
        # Rank 0 also samples the batch, steps the optimizer and the EMA while the
        # others wait: it takes a smaller share (16 over 2 processes: 7 and 9; measured
        # CPU, 8 and 8: rank 0 94%, the other 69%; 6 and 10: 62% and 94%).
        lead = args.lead_share if args.lead_share > 0 else max(1, bs // args.procs - bs // 16)
        while lead > 1 and (bs - lead) % (args.procs - 1):
            lead -= 1
        if not 0 < lead < bs or (bs - lead) % (args.procs - 1):
            raise SystemExit("--batch %d does not split over --procs %d with --lead-share %d" % (bs, args.procs, lead))
        peers = Peers(args.procs, args.threads, unet, text, lead)
        log("unet: %d processes of %d thread(s), samples per step: %d on rank 0, %d on each other" % (
            args.procs, args.threads, lead, (bs - lead) // (args.procs - 1)))
    while step < total and not STOP:
        idx, caps, cats = [], [], []
        for _ in range(bs):
            c = sampler.next()
            vs = concepts[c]
            i = vs[rng.randrange(len(vs))]
            idx.append(i)
            caps.append(caption(items[i], rng))
            cats.append(cat_of[c])
        idx = torch.tensor(idx)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape)) * sf
        z0 = z0.to(dev)
        ids = tokc(caps).to(dev)
        t = torch.randint(0, 1000, (bs,)).to(dev)
        noise = torch.randn(z0.shape).to(dev)
        a = ac[t][:, None, None, None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        lr = lr_at(args, step, opt_step0, total)
        for pg in opt.param_groups:
            pg["lr"] = lr
        snr = a.flatten() / (1 - a.flatten())
        w = torch.clamp(snr, max=5.0) / snr  # Min-SNR-5 weighting for epsilon targets
        if peers:
            zt, t, ids, noise, w = peers.step(zt, t, ids, noise, w)
            cats = cats[:len(t)]
        loss, per = unet_loss(unet, text, zt, t, ids, noise, w, bs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if peers:
            peers.sum_grads()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        seen += bs
        rate.add(bs)
        d = min(args.ema, (1 + step - opt_step0) / (10 + step - opt_step0))
        with torch.no_grad():
            for pe, p in zip(ema_p, params):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)
        lm = per.detach().mean().item()  # (rank 0's share alone with --procs)
        ema_loss = lm if ema_loss is None else 0.99 * ema_loss + 0.01 * lm
        for c, l in zip(cats, per.detach().cpu().tolist()):
            cat_loss[c][0] += l
            cat_loss[c][1] += 1
        if step % 25 == 0:
            sps = rate.get()
            log("unet step %d/%d loss %.4f lr %.2e %.1f samples/s pass %d ETA %s" % (
                step, total, ema_loss, lr, sps, sampler.epoch, eta((total - step) * bs / max(sps, 1e-6))))
        if step % 1000 == 0:
            log("unet: loss per category (last 1000 steps): " + ", ".join(
                "%s %.4f" % (c, s / n) for c, (s, n) in cat_loss.items() if n))
            cat_loss = {c: [0.0, 0] for c in CATEGORIES}
        do_eval = args.eval_every > 0 and (time.time() - last_eval > args.eval_every or step == total)
        if time.time() - last_ck > args.ckpt_every or step == total or STOP or do_eval:
            atomic_save({"unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_u.state_dict(),
                         "ema_text": ema_t.state_dict(), "opt": opt.state_dict(), "step": step, "seen": seen,
                         "opt_step0": opt_step0, "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                         "sampler": sampler.state(), "init_from": init_from,
                         "unet_cfg": UNET_CFG, "text_cfg": TEXT_CFG, "scaling_factor": sf,
                         "loss": ema_loss, "data": {"images": len(items), "concepts": len(concepts)}}, path)
            last_ck = time.time()
            log("unet: checkpoint step %d -> %s" % (step, path))
        if STOP:
            break
        if args.grid_every > 0 and (time.time() - last_grid > args.grid_every or step == total):
            ema_u.eval()
            ema_t.eval()
            ids = tokc([it["label"] for it in grid_items])
            x = sample(ema_u, ema_t, vae, sf, ids, tokc([""]), steps=20, guidance=6.0, seed=0, dev=dev)
            ref = to_tensor(np.stack([imgs[items.index(it)] for it in grid_items]))
            cols = len(grid_items) // 2
            save_grid(torch.cat([x.cpu(), ref]), os.path.join(RUNS, "samples_%06d.png" % step), cols)
            shutil.copy(os.path.join(RUNS, "samples_%06d.png" % step), os.path.join(RUNS, "samples_latest.png"))
            log("unet: sample grid step %d (rows 1-2 generated, 3-4 references): %s" % (
                step, ", ".join(it["label"] for it in grid_items)))
            last_grid = time.time()
        if do_eval:  # on the checkpoint just written
            evaluate(args, step)
            last_eval = time.time()
    if peers:
        peers.close()


def lr_at(args, step, opt_step0, total):
    """Linear warm-up after every fresh optimizer, constant, cosine to 10% over the last
    --decay share of the steps."""
    lr = args.lr * min(1.0, (step - opt_step0 + 1) / args.warmup)
    start = total * (1 - args.decay)
    if step > start:
        lr *= 0.5 * (1 + math.cos(math.pi * (step - start) / (total - start))) * 0.9 + 0.1
    return lr


# ----------------------------------------------------------------------------
# the quality bar during training: export the EMA weights, run quality.py's test,
# keep the best export in runs/best/

def quality_log():
    path = os.path.join(RUNS, "quality.tsv")
    rows = []
    if os.path.exists(path):
        for line in open(path):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 5 and f[0] != "time":
                rows.append({"time": f[0], "what": f[1], "sha256": f[2], "pct": float(f[3]),
                             "per_category": json.loads(f[4])})
    return rows


def _append_quality(what, sha, r):
    path = os.path.join(RUNS, "quality.tsv")
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write("time\tmodel\tsha256\tpercent\tper_category\n")
        f.write("%s\t%s\t%s\t%.1f\t%s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), what, sha, r["pct"],
                                              json.dumps(r["per_category"], sort_keys=True)))


def baseline_quality(args):
    """The committed export's score on the bar (once per export): what runs/best must beat."""
    import quality as Q
    prefix = EXPORTED
    if not os.path.exists(prefix + ".json"):
        return
    sha = sha256(prefix + ".fp16.safetensors")
    if any(r["sha256"] == sha for r in quality_log()):
        return
    log("quality: scoring the committed export (%s) once, the score to beat" % os.path.relpath(prefix, REPO))
    r = Q.evaluate(prefix, threads=args.threads, grid=os.path.join(RUNS, "quality_committed.png"))
    _append_quality("committed", sha, r)
    log("quality: committed export %.1f%% (%s)" % (r["pct"], Q.per_category_line(r)))


def evaluate(args, step):
    import export as E
    import quality as Q
    out = os.path.join(RUNS, "eval")
    prefix = E.export(RUNS, out, "stepwise-emoji", log=log)
    r = Q.evaluate(prefix, threads=args.threads * max(args.procs, 1), grid=os.path.join(out, "quality_grid.png"))
    sha = sha256(prefix + ".fp16.safetensors")
    E.add_quality_note(prefix, r)
    _append_quality("step %d" % step, sha, r)
    rows = quality_log()
    committed = [x["pct"] for x in rows if x["what"] == "committed"]
    best_before = max([x["pct"] for x in rows[:-1] if x["what"] != "committed"] + [-1.0])
    to_beat = max(committed[-1:] + [best_before])
    log("quality: step %d %.1f%% (%s); best before %.1f%%, committed export %s" % (
        step, r["pct"], Q.per_category_line(r), best_before, "%.1f%%" % committed[-1] if committed else "unscored"))
    if r["pct"] > to_beat:
        best = os.path.join(RUNS, "best")
        os.makedirs(best, exist_ok=True)
        for f in ("stepwise-emoji.fp16.safetensors", "stepwise-emoji.json", "quality_grid.png"):
            shutil.copy(os.path.join(out, f), os.path.join(best, f + ".tmp"))
            os.replace(os.path.join(best, f + ".tmp"), os.path.join(best, f))
        log("quality: new best %.1f%% -> %s (promote with: tools/train/export.py --promote)" % (r["pct"], best))


# ----------------------------------------------------------------------------

def main():
    global RUNS
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["data", "vae", "latents", "unet", "all"])
    ap.add_argument("--runs", default=RUNS, help="checkpoint folder (default tools/train/runs)")
    ap.add_argument("--init", default=EXPORTED,
                    help="exported model prefix for the warm start when runs/ has no checkpoint ('' = none)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (2 gave no more samples/s than 1 on the 2-core machine, and 1 leaves a core free)")
    ap.add_argument("--procs", type=int, default=min(os.cpu_count() or 1, 4),
                    help="U-Net stage on the CPU: processes that share each batch (data parallel; default: CPUs, at most 4)")
    ap.add_argument("--lead-share", type=int, default=-1,
                    help="--procs: samples of each batch rank 0 takes (default: an even share less batch/16)")
    ap.add_argument("--vae-steps", type=int, default=2000)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-lr", type=float, default=5e-4)
    ap.add_argument("--vae-kl", type=float, default=1e-6)
    ap.add_argument("--steps", type=int, default=60000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--decay", type=float, default=0.25, help="cosine decay over this last share of --steps")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--ckpt-every", type=float, default=180, help="seconds")
    ap.add_argument("--grid-every", type=float, default=1200, help="seconds (0 = never)")
    ap.add_argument("--eval-every", type=float, default=7200,
                    help="seconds between quality-bar runs on the EMA weights (0 = never)")
    ap.add_argument("--eval-first-after", type=float, default=-1,
                    help="seconds until the first quality-bar run (default: --eval-every)")
    args = ap.parse_args()
    RUNS = os.path.abspath(args.runs)
    os.environ["STEPWISE_TRAIN_RUNS"] = RUNS  # for export.py / quality.py, which import this file as `train`
    torch.set_num_threads(args.threads)
    os.makedirs(RUNS, exist_ok=True)
    lock = open(os.path.join(RUNS, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SystemExit("another train.py is running on %s (lock %s)" % (RUNS, os.path.join(RUNS, ".lock")))
    with open(os.path.join(RUNS, "train.pid"), "w") as f:
        f.write("%d\n" % os.getpid())
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    log("train.py %s: runs %s, device %s, %d threads, pid %d" % (args.stage, RUNS, device(), args.threads, os.getpid()))
    blas = blas_library()
    if device().type == "cpu" and blas and "openblas" not in blas:
        log("WARNING: torch's matrix products run on %s, the reference BLAS: training is ~3x slower than with "
            "OpenBLAS (apt-get install libopenblas0-pthread)" % blas)
    stages = ["data", "vae", "latents", "unet"] if args.stage == "all" else [args.stage]
    for s in stages:
        globals()["stage_" + s](args)
        if STOP:
            log("stopped (signal); run again to resume")
            return


if __name__ == "__main__":
    main()
