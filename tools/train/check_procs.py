"""Checks train.py's CPU speed-ups against the plain computation they replace:

* --procs: rank 0's gradient after Peers (2 processes, shares 7 and 9 of a batch of 16,
  the token table's rows only) equals one process's gradient on the whole batch;
* FastAdamW: 50 steps land on torch.optim.AdamW's parameters, and either loads the
  other's state.

    /usr/bin/python3 tools/train/check_procs.py      (~20 s; exits 1 on a mismatch)
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train as T  # noqa: E402


def check_peers():
    torch.manual_seed(0)
    unet, text = T.build_unet_text("cpu")
    for p in unet.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.02)  # the zero-initialised output would stop every gradient
    b = 16
    zt, t = torch.randn(b, 4, 16, 16), torch.randint(0, 1000, (b,))
    ids, noise, w = torch.randint(0, 49408, (b, 77)), torch.randn(b, 4, 16, 16), torch.rand(b)
    named = list(unet.named_parameters()) + list(text.named_parameters())
    loss, _ = T.unet_loss(unet, text, zt, t, ids, noise, w, b)
    loss.backward()
    want = {n: p.grad.clone() for n, p in named}
    peers = T.Peers(2, 1, unet, text, 7)
    try:
        z2, t2, i2, n2, w2 = peers.step(zt, t, ids, noise, w)
        for _, p in named:
            p.grad = None
        loss, _ = T.unet_loss(unet, text, z2, t2, i2, n2, w2, b)
        loss.backward()
        peers.sum_grads()
    finally:
        peers.close()
    # k_proj's bias has no gradient in exact arithmetic (softmax ignores a constant per
    # query); its rounding noise is skipped.
    worst, name = max(((p.grad - want[n]).abs().max().item() / (want[n].abs().max().item() + 1e-12), n)
                      for n, p in named if "k_proj.bias" not in n)
    print("--procs 2: worst relative gradient difference %.2g (%s)" % (worst, name))
    return worst <= 1e-4


def check_adamw():
    torch.manual_seed(1)
    a = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
    b = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Linear(5, 3))
    b.load_state_dict(a.state_dict())
    oa = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.9, 0.99))
    ob = T.FastAdamW(b.parameters(), lr=1e-2, weight_decay=0.01, betas=(0.9, 0.99))
    for _ in range(50):
        x = torch.randn(4, 7)
        for m, o in ((a, oa), (b, ob)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    ob.load_state_dict(oa.state_dict())
    oa.load_state_dict(ob.state_dict())
    print("FastAdamW: max parameter difference to torch's AdamW after 50 steps %.2g" % diff)
    return diff <= 1e-6


if __name__ == "__main__":
    torch.set_num_threads(1)
    ok = [check_peers(), check_adamw()]
    sys.exit(0 if all(ok) else 1)
