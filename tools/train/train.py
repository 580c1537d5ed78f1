"""Trains Stepwise's bundled text-to-emoji latent diffusion model (SD 1.x topology).

Stages (each resumes from its checkpoint under tools/train/runs/, and is skipped
when finished):
    data     fetch emoji-datasource-google + emojibase-data with `npm pack` at pinned
             versions, verify sha256, build the curated subset (64x64 RGB on white)
    vae      AutoencoderKL: L1 + L2 reconstruction + small KL; reports PSNR
    latents  encode the subset once (mean, std), compute scaling_factor = 1/std
    unet     U-Net + CLIP text encoder jointly, epsilon objective, scaled-linear
             betas, Min-SNR-5 weighting, EMA; sample grids now and then
    all      all of the above in order

    nice -n 10 /usr/bin/python3 tools/train/train.py all
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sdmodules as M  # noqa: E402
from tokenizer import CLIPTokenizer  # noqa: E402

DATA = os.path.join(HERE, "data")
RUNS = os.environ.get("STEPWISE_TRAIN_RUNS") or os.path.join(HERE, "runs")
TOKDIR = os.path.join(HERE, "..", "..", "..", "shared", "golden", "sd15-mini", "tokenizer")
if not os.path.isdir(TOKDIR):
    TOKDIR = "/work/shared/golden/sd15-mini/tokenizer"

PACKAGES = {
    # npm package@version: sha256 of the tarball `npm pack` fetches
    "emoji-datasource-google@16.0.0": "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "emojibase-data@17.0.0": "d01d0e2ca4e22cb402679532155342c71e2e871f25c32223c013b8b166ebdf5a",
}

# curated subset: emoji-datasource subcategories (a few hundred of the most used emoji)
SUBCATS = [
    "face-smiling", "face-affection", "face-tongue", "face-hand", "face-neutral-skeptical", "face-sleepy",
    "face-unwell", "face-hat", "face-glasses", "face-concerned", "face-negative", "face-costume",
    "cat-face", "monkey-face", "heart",
    "hand-fingers-open", "hand-fingers-partial", "hand-single-finger", "hand-fingers-closed", "hands",
    "animal-mammal", "animal-bird", "animal-marine",
    "food-fruit", "food-vegetable", "food-prepared", "food-sweet",
    "sky & weather", "event",
]
TONES = {"1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
         "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone"}

# native resolution: the 64x64 Noto PNGs downsampled to 32x32 (CPU budget; see README)
RES = 32

VAE_CFG = {
    "in_channels": 3, "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4,
    "norm_num_groups": 8, "sample_size": RES, "scaling_factor": None,
}
UNET_CFG = {
    "sample_size": RES // 4, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
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


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def atomic_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
        if not os.path.exists(tgz):
            log("npm pack", spec)
            subprocess.run(["npm", "pack", spec, "--silent"], cwd=DATA, check=True, stdout=subprocess.DEVNULL)
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


def stage_data(args):
    out = os.path.join(DATA, "subset.npz")
    if os.path.exists(out) and os.path.exists(os.path.join(DATA, "subset.json")):
        log("data: done (%s)" % out)
        return
    eg, eb = fetch()
    emoji = json.load(open(os.path.join(eg, "emoji.json")))
    base = json.load(open(os.path.join(eb, "en", "data.json")))
    byhex = {}
    for x in base:
        byhex[_norm_hex(x["hexcode"])] = x
        for s in x.get("skins", []):
            byhex[_norm_hex(s["hexcode"])] = dict(s, tags=x.get("tags", []))
    emoji = [x for x in emoji if x["subcategory"] in SUBCATS and x.get("has_img_google")]
    emoji.sort(key=lambda x: x["sort_order"])
    imgs, imgs64, items = [], [], []
    for x in emoji:
        eb_x = byhex.get(_norm_hex(x["unified"]))
        if eb_x is None:
            log("data: no emojibase entry for", x["unified"], x["short_name"])
            continue
        variants = [(x["image"], x["unified"], None)]
        for tone, v in sorted((x.get("skin_variations") or {}).items()):
            if tone in TONES and v.get("has_img_google"):
                variants.append((v["image"], v["unified"], tone))
        concept = len(set(i["concept"] for i in items))
        for img, uni, tone in variants:
            e = byhex.get(_norm_hex(uni))
            if e is None:
                continue
            path = os.path.join(eg, "img", "google", "64", img)
            if not os.path.exists(path):
                continue
            im = Image.open(path).convert("RGBA")
            if im.size != (64, 64):
                raise SystemExit("%s: size %s, want 64x64" % (path, im.size))
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im).convert("RGB")
            imgs64.append(np.asarray(im))
            imgs.append(np.asarray(im.resize((RES, RES), Image.LANCZOS)))
            shorts = [s.replace("_", " ") for s in x["short_names"]]
            if tone:
                shorts = [s + " " + TONES[tone] for s in shorts]
            items.append({"label": e["label"], "tags": eb_x.get("tags", []), "short": shorts,
                          "hex": uni, "concept": concept, "tone": tone, "subcategory": x["subcategory"],
                          "base_label": eb_x["label"]})
    np.savez_compressed(out, images=np.stack(imgs), images64=np.stack(imgs64))
    json.dump(items, open(os.path.join(DATA, "subset.json"), "w"), indent=0)
    log("data: %d images, %d concepts -> %s" % (len(imgs), len(set(i["concept"] for i in items)), out))


def load_data():
    imgs = np.load(os.path.join(DATA, "subset.npz"))["images"]
    items = json.load(open(os.path.join(DATA, "subset.json")))
    return imgs, items


def to_tensor(imgs):
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0


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
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        if ck.get("done"):
            log("vae: done (step %d, PSNR %.2f dB)" % (step, ck.get("psnr", 0)))
            return
    total = args.vae_steps
    bs = args.vae_batch
    g = torch.Generator().manual_seed(SEED + step)
    t0 = time.time()
    last_ck = time.time()
    seen = 0
    ema_loss = None
    while step < total:
        idx = torch.randint(0, len(x_all), (bs,), generator=g)
        x = x_all[idx].to(dev)
        lr = args.vae_lr * min(1.0, (step + 1) / 200) * (0.5 * (1 + math.cos(math.pi * step / total)) * 0.9 + 0.1)
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
        seen += bs
        ema_loss = rec.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * rec.item()
        if step % 25 == 0:
            el = time.time() - t0
            sps = seen / el
            log("vae step %d/%d rec %.4f kl %.1f lr %.2e %.1f samples/s ETA %.1f min" % (
                step, total, ema_loss, kl.item(), lr, sps, (total - step) * bs / sps / 60))
        if time.time() - last_ck > args.ckpt_every or step == total:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "cfg": VAE_CFG}, path)
            last_ck = time.time()
            log("vae: checkpoint step %d, PSNR %.2f dB (first 128 images)" % (step, vae_psnr(vae, x_all[:128], dev)))
    psnr = vae_psnr(vae, x_all, dev)
    log("vae: PSNR %.2f dB on the subset (mean latents)" % psnr)
    atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "cfg": VAE_CFG,
                 "done": True, "psnr": psnr}, path)


@torch.no_grad()
def vae_psnr(vae, x_all, dev, grid=True):
    vae.eval()
    mse = []
    recs = []
    for i in range(0, len(x_all), 64):
        x = x_all[i:i + 64].to(dev)
        y = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
        # PSNR on the 8-bit image scale [0,1]
        mse.append((((y - x) / 2) ** 2).mean(dim=(1, 2, 3)).cpu())
        recs.append(y.cpu())
    vae.train()
    mse = torch.cat(mse)
    if grid:
        n = min(32, len(x_all))
        save_grid(torch.cat([x_all[:n], torch.cat(recs)[:n]]), os.path.join(RUNS, "vae_recon.png"), 8)
    return float((10 * torch.log10(1.0 / mse)).mean())


def save_grid(x, path, cols):
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    n, h, w, _ = x.shape
    rows = (n + cols - 1) // cols
    out = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = x[i]
    Image.fromarray(out).save(path)


def load_vae(dev):
    ck = torch.load(os.path.join(RUNS, "vae.pt"), map_location=dev)
    vae = M.AutoencoderKL(ck["cfg"]).to(dev)
    vae.load_state_dict(ck["model"])
    vae.eval()
    return vae, ck


# ----------------------------------------------------------------------------
# latents

def stage_latents(args):
    path = os.path.join(RUNS, "latents.pt")
    if os.path.exists(path):
        log("latents: done")
        return
    dev = device()
    vae, ck = load_vae(dev)
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
    log("latents: %s, latent std %.4f -> scaling_factor %.5f, posterior std mean %.4f" % (
        tuple(mean.shape), z.std().item(), sf, std.mean().item()))
    atomic_save({"mean": mean, "std": std, "scaling_factor": sf, "psnr": ck.get("psnr")}, path)


# ----------------------------------------------------------------------------
# captions

def caption(item, rng):
    r = rng.random()
    if r < 0.10:
        return ""
    if r < 0.55:
        return item["label"]
    if r < 0.80:
        tags = [t for t in item["tags"] if t not in item["label"].split()]
        rng.shuffle(tags)
        k = rng.randint(1, 3)
        return ", ".join([item["label"]] + tags[:k])
    return rng.choice(item["short"])


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
def sample(unet, text, vae, sf, ids, uncond_ids, steps=20, guidance=6.0, seed=0, dev="cpu"):
    """DDIM (eta 0), 'leading' timesteps with steps_offset 1 (SD1.5 scheduler defaults)."""
    ac = M.scaled_linear_alphas_cumprod().to(dev)
    n = ids.shape[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 4, UNET_CFG["sample_size"], UNET_CFG["sample_size"]), generator=g).to(dev)
    ctx = text(ids.to(dev))
    uctx = text(uncond_ids.to(dev)).expand(n, -1, -1) if uncond_ids.shape[0] == 1 else text(uncond_ids.to(dev))
    ratio = 1000 // steps
    ts = [i * ratio + 1 for i in range(steps)][::-1]
    for i, t in enumerate(ts):
        tt = torch.full((2 * n,), float(t), device=dev)
        e = unet(torch.cat([x, x]), tt, torch.cat([uctx, ctx]))
        eu, ec = e.chunk(2)
        eps = eu + guidance * (ec - eu)
        a = ac[t]
        ap = ac[ts[i + 1]] if i + 1 < len(ts) else ac[0]  # set_alpha_to_one false
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = ap.sqrt() * x0 + (1 - ap).sqrt() * eps
    return vae.decode(x / sf)


def stage_unet(args):
    path = os.path.join(RUNS, "unet.pt")
    dev = device()
    lat = torch.load(os.path.join(RUNS, "latents.pt"))
    mean, std, sf = lat["mean"], lat["std"], lat["scaling_factor"]
    imgs, items = load_data()
    concepts = {}
    for i, it in enumerate(items):
        concepts.setdefault(it["concept"], []).append(i)
    concept_ids = sorted(concepts)
    torch.manual_seed(SEED)
    unet, text = build_unet_text(dev)
    ema_u, ema_t = M.UNet2DConditionModel(UNET_CFG).to(dev), M.CLIPTextModel(TEXT_CFG).to(dev)
    ema_u.load_state_dict(unet.state_dict())
    ema_t.load_state_dict(text.state_dict())
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.99))
    step = 0
    rng = random.Random(SEED)
    if os.path.exists(path):
        ck = torch.load(path, map_location=dev)
        unet.load_state_dict(ck["unet"])
        text.load_state_dict(ck["text"])
        ema_u.load_state_dict(ck["ema_unet"])
        ema_t.load_state_dict(ck["ema_text"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        rng.setstate(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        log("unet: resumed at step %d" % step)
    total = args.steps
    if step >= total:
        log("unet: done (step %d)" % step)
        return
    log("unet: %.2fM params, text %.2fM params, %d images, %d concepts, batch %d, %d steps" % (
        sum(p.numel() for p in unet.parameters()) / 1e6, sum(p.numel() for p in text.parameters()) / 1e6,
        len(items), len(concept_ids), args.batch, total))
    tokc = TokenCache()
    ac = M.scaled_linear_alphas_cumprod().to(dev)
    vae, _ = load_vae(dev)
    grid_items = [items[concepts[c][0]] for c in concept_ids[:: max(1, len(concept_ids) // 16)][:16]]
    t0 = time.time()
    seen = 0
    last_ck = time.time()
    last_grid = time.time()
    ema_loss = None
    ema_p = list(ema_u.parameters()) + list(ema_t.parameters())
    bs = args.batch
    while step < total:
        idx = []
        caps = []
        for _ in range(bs):
            vs = concepts[concept_ids[rng.randrange(len(concept_ids))]]
            i = vs[rng.randrange(len(vs))]
            idx.append(i)
            caps.append(caption(items[i], rng))
        idx = torch.tensor(idx)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape)) * sf
        z0 = z0.to(dev)
        ids = tokc(caps).to(dev)
        t = torch.randint(0, 1000, (bs,), device=dev)
        noise = torch.randn_like(z0)
        a = ac[t][:, None, None, None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        if step > total * 0.6:
            lr *= 0.5 * (1 + math.cos(math.pi * (step - total * 0.6) / (total * 0.4))) * 0.9 + 0.1
        for pg in opt.param_groups:
            pg["lr"] = lr
        pred = unet(zt, t.float(), text(ids))
        snr = a.flatten() / (1 - a.flatten())
        w = torch.clamp(snr, max=5.0) / snr  # Min-SNR-5 weighting for epsilon targets
        loss = (((pred - noise) ** 2).mean(dim=(1, 2, 3)) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        seen += bs
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema_p, params):
                pe.mul_(d).add_(p.detach(), alpha=1 - d)
        ema_loss = loss.item() if ema_loss is None else 0.99 * ema_loss + 0.01 * loss.item()
        if step % 25 == 0:
            el = time.time() - t0
            sps = seen / el
            log("unet step %d/%d loss %.4f lr %.2e %.1f samples/s ETA %.1f min" % (
                step, total, ema_loss, lr, sps, (total - step) * bs / sps / 60))
        if time.time() - last_ck > args.ckpt_every or step == total:
            atomic_save({"unet": unet.state_dict(), "text": text.state_dict(), "ema_unet": ema_u.state_dict(),
                         "ema_text": ema_t.state_dict(), "opt": opt.state_dict(), "step": step,
                         "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                         "unet_cfg": UNET_CFG, "text_cfg": TEXT_CFG, "scaling_factor": sf,
                         "loss": ema_loss, "data": {"images": len(items), "concepts": len(concept_ids)}}, path)
            last_ck = time.time()
            log("unet: checkpoint step %d -> %s" % (step, path))
        if time.time() - last_grid > args.grid_every or step == total:
            ema_u.eval()
            ema_t.eval()
            ids = tokc([it["label"] for it in grid_items])
            x = sample(ema_u, ema_t, vae, sf, ids, tokc([""]), steps=20, guidance=6.0, seed=0, dev=dev)
            ref = to_tensor(np.stack([imgs[items.index(it)] for it in grid_items]))
            save_grid(torch.cat([x.cpu(), ref]), os.path.join(RUNS, "samples_%06d.png" % step), 8)
            shutil.copy(os.path.join(RUNS, "samples_%06d.png" % step), os.path.join(RUNS, "samples_latest.png"))
            log("unet: sample grid step %d (rows 1-2 generated, 3-4 references): %s" % (
                step, ", ".join(it["label"] for it in grid_items)))
            last_grid = time.time()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=["data", "vae", "latents", "unet", "all"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vae-steps", type=int, default=3000)
    ap.add_argument("--vae-batch", type=int, default=16)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--vae-kl", type=float, default=1e-6)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--ckpt-every", type=float, default=180, help="seconds")
    ap.add_argument("--grid-every", type=float, default=600, help="seconds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(RUNS, exist_ok=True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    stages = ["data", "vae", "latents", "unet"] if args.stage == "all" else [args.stage]
    for s in stages:
        globals()["stage_" + s](args)


if __name__ == "__main__":
    main()
