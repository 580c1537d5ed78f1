#!/usr/bin/env python3
"""Times the same networks as `stepwise bench --random KIND` in PyTorch on this
machine (fp32 by default; --half for fp16 on CUDA), so every report carries
the ratio Stepwise/PyTorch from one run. The modules are tools/train's
diffusers-named PyTorch implementations (checked against the goldens).

usage: /usr/bin/python3 tools/bench/torch_bench.py --random sd15 --size 512 --steps 4 [--threads 2] [--cuda] [--half]
Prints one JSON object: seconds per stage (text encoder, U-Net CFG step, VAE decode).
"""
import argparse, json, os, sys, time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "train"))
import torch  # noqa: E402
import sdmodules as sd  # noqa: E402

SD15 = {
    "unet": {"block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
             "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "in_channels": 4, "out_channels": 4},
    "vae": {"block_out_channels": [128, 256, 512, 512], "latent_channels": 4, "norm_num_groups": 32,
            "layers_per_block": 2, "in_channels": 3, "out_channels": 3},
    "text": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
             "num_hidden_layers": 12, "max_position_embeddings": 77},
}
MINI = {
    "unet": dict(SD15["unet"], block_out_channels=[32, 64, 128, 128], cross_attention_dim=64),
    "vae": dict(SD15["vae"], block_out_channels=[16, 32, 64, 64], norm_num_groups=8),
    "text": dict(SD15["text"], hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=3),
}


def timed(f, dev, reps):
    out, best = None, float("inf")
    for _ in range(reps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = f()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return out, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--random", default="sd15-mini", choices=["sd15", "sd15-mini"])
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--half", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    cfg = SD15 if a.random == "sd15" else MINI
    size = a.size or (512 if a.random == "sd15" else 64)
    dev = torch.device("cuda" if a.cuda else "cpu")
    dt = torch.float16 if a.half else torch.float32
    text = sd.CLIPTextModel(cfg["text"]).to(dev, dt).eval()
    unet = sd.UNet2DConditionModel(cfg["unet"]).to(dev, dt).eval()
    vae = sd.AutoencoderKL(cfg["vae"]).to(dev, dt).eval()
    h = size // 8
    res = {"model": a.random, "size": size, "device": str(dev), "dtype": str(dt), "threads": a.threads,
           "torch": torch.__version__}
    with torch.no_grad():
        ids = torch.randint(0, 49407, (2, 77), device=dev)
        emb, res["text_encoder_seconds"] = timed(lambda: text(ids), dev, 2)
        x = torch.randn(2, 4, h, h, device=dev, dtype=dt)
        t = torch.tensor([500.0, 500.0], device=dev)
        _, res["unet_cfg_step_seconds"] = timed(lambda: unet(x, t, emb.to(dt)), dev, a.steps)
        z = torch.randn(1, 4, h, h, device=dev, dtype=dt)
        _, res["vae_decode_seconds"] = timed(lambda: vae.decode(z), dev, 2)
    json.dump(res, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
