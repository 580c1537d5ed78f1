"""Verifies sdmodules.py + ldm_keys.py + tokenizer.py against ../shared/golden (beside the repo).

Loads sd15-mini (diffusers folder) into our modules, compares U-Net / VAE / text
outputs with the goldens (max abs diff <= 1e-4), compares the tokenizer with
tokenizer.safetensors (exact, ftfy-free ASCII prompts only), and exports the
loaded weights with our LDM mapping and checks key set + shapes against
sd15_mini_keys.txt. Exit status 1 on any failure.

    /usr/bin/python3 tools/train/check_golden.py [golden_dir]
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sdmodules as M  # noqa: E402
import ldm_keys  # noqa: E402
import tokenizer as T  # noqa: E402

G = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "golden")
ok = True


def cmp(name, got, want, tol=1e-4):
    global ok
    d = (got.double() - want.double()).abs().max().item()
    good = d <= tol
    ok &= good
    print("%-34s max|diff| %.3g %s" % (name, d, "ok" if good else "FAIL"))


def main():
    torch.set_num_threads(2)
    cfg = json.load(open(os.path.join(G, "sd15_mini_config.json")))
    mini = os.path.join(G, "sd15-mini")
    unet = M.UNet2DConditionModel(cfg["unet"]).eval()
    vae = M.AutoencoderKL(cfg["vae"]).eval()
    text = M.CLIPTextModel(cfg["text_encoder"]).eval()
    usd = M.load_safetensors(os.path.join(mini, "unet/diffusion_pytorch_model.fp16.safetensors"))
    vsd = M.load_safetensors(os.path.join(mini, "vae/diffusion_pytorch_model.fp16.safetensors"))
    tsd = M.load_safetensors(os.path.join(mini, "text_encoder/model.fp16.safetensors"))
    M.load_into(unet, usd)
    M.load_into(vae, vsd)
    M.load_into(text, tsd)
    with torch.no_grad():
        g = M.load_safetensors(os.path.join(G, "text_encoder.safetensors"))
        cmp("text last_hidden_state", text(g["input_ids"]), g["last_hidden_state"])
        g = M.load_safetensors(os.path.join(G, "unet.safetensors"))
        cases = sorted(k[:-4] for k in g if k.endswith(".out") and ".intermediate." not in k)
        for c in cases:
            out = unet(g[c + ".sample"], g[c + ".timestep"], g[c + ".encoder_hidden_states"])
            cmp("unet " + c, out, g[c + ".out"])
        g = M.load_safetensors(os.path.join(G, "vae.safetensors"))
        for c in ("decode", "decode_b2"):
            cmp("vae " + c, vae.decode(g[c + ".latent"] / 0.18215), g[c + ".image"])
        mean, logvar = vae.encode(g["encode.image"])
        cmp("vae encode.mean", mean, g["encode.mean"])
        cmp("vae encode.logvar", logvar, g["encode.logvar"])
    # tokenizer (ASCII prompts: we do no ftfy)
    global ok
    tg = M.load_safetensors(os.path.join(G, "tokenizer.safetensors"))
    tj = json.load(open(os.path.join(G, "tokenizer.json")))
    prompts = [p["prompt"] if isinstance(p, dict) else p for p in tj["prompts"]]
    tok = T.CLIPTokenizer(os.path.join(mini, "tokenizer"))
    n_ok = n = 0
    for i, p in enumerate(prompts):
        if not all(32 <= ord(ch) < 127 for ch in p):
            continue
        n += 1
        got = tok.encode_padded(p)
        # ftfy unescapes HTML entities; without ftfy the fallback ids are the reference
        if got == tg["input_ids"][i].tolist() or got == tg["input_ids_noftfy"][i].tolist():
            n_ok += 1
        else:
            ok = False
            print("tokenizer mismatch:", repr(p))
    print("tokenizer ASCII prompts %d/%d exact" % (n_ok, n))
    # LDM key layout
    ldm = ldm_keys.to_ldm(unet.state_dict(), cfg["unet"], vae.state_dict(), cfg["vae"], text.state_dict())
    want = {}
    for line in open(os.path.join(G, "sd15_mini_keys.txt")):
        if line.startswith("#") or not line.strip():
            continue
        k, shp = line.rstrip("\n").split("\t")
        want[k] = json.loads(shp)
    got = {k: list(v.shape) for k, v in ldm.items()}
    miss = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    bad = [k for k in want if k in got and want[k] != got[k]]
    good = not miss and not extra and not bad
    ok &= good
    print("LDM keys: %d want, %d got, missing %s, extra %s, bad shapes %s -> %s" % (
        len(want), len(got), miss[:3], extra[:3], bad[:3], "ok" if good else "FAIL"))
    # the committed single file must hold the same values under those names
    single = M.load_safetensors(os.path.join(G, "sd15-mini.fp16.safetensors"))
    diff = [k for k in want if not torch.equal(single[k].float(), ldm[k].float())]
    ok &= not diff
    print("LDM values vs sd15-mini.fp16.safetensors: %d differ %s" % (len(diff), diff[:3]))
    print("ALL OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
