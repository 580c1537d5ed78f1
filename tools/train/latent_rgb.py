"""Fits the linear latent -> RGB projection that Stepwise uses for free step
previews (no VAE), for the bundled model's own latent space, the way the
published SD 1.x factors were made: least squares from the scaled latents of
the training images to the images average-pooled to latent size, in [-1, 1].

    /usr/bin/python3 tools/train/latent_rgb.py [--config models/bundled/stepwise-emoji.json]

Writes "latent_rgb_factors" ([channels][3]) and "latent_rgb_bias" ([3]) into
the config's "vae" section and prints the fit's R^2 per colour.
"""
import argparse, json, os, sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train as T  # noqa: E402


def fit(runs=None):
    """Returns {"latent_rgb_factors", "latent_rgb_bias"} and prints the fit's R^2."""
    lat = torch.load(os.path.join(runs or T.RUNS, "latents.pt"))
    z = (lat["mean"] * lat["scaling_factor"]).numpy()  # [N, C, h, w], the sampler's space
    imgs, _ = T.load_data()
    x = T.to_tensor(imgs)  # [N, 3, H, W] in [-1, 1]
    f = x.shape[-1] // z.shape[-1]
    x = torch.nn.functional.avg_pool2d(x, f).numpy()
    n, c = z.shape[0], z.shape[1]
    A = np.concatenate([z.transpose(0, 2, 3, 1).reshape(-1, c), np.ones((z.shape[0] * z.shape[2] * z.shape[3], 1))], 1)
    B = x.transpose(0, 2, 3, 1).reshape(-1, 3)
    W, *_ = np.linalg.lstsq(A, B, rcond=None)
    pred = A @ W
    r2 = 1 - ((B - pred) ** 2).sum(0) / ((B - B.mean(0)) ** 2).sum(0)
    out = {"latent_rgb_factors": [[round(float(v), 6) for v in W[i]] for i in range(c)],
           "latent_rgb_bias": [round(float(v), 6) for v in W[c]]}
    print("latent_rgb: R^2 per colour", [round(float(v), 3) for v in r2])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(HERE, "..", "..", "models", "bundled", "stepwise-emoji.json"))
    ap.add_argument("--runs", default=T.RUNS)
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    cfg["vae"].update(fit(a.runs))
    tmp = a.config + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(cfg, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, a.config)


if __name__ == "__main__":
    main()
