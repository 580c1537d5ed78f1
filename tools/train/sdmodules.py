"""PyTorch modules with the SD 1.x topology and diffusers/transformers parameter names.

UNet2DConditionModel, AutoencoderKL and CLIPTextModel are re-implemented here (no
diffusers/transformers on this machine) so that a state_dict of these modules has
exactly the diffusers names; export.py maps those names to the original LDM
single-file layout. check_golden.py verifies them against ../shared/golden (beside the repo).
"""

import json
import math
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------
# safetensors (plain format: 8-byte LE header length, JSON header, raw data)

_DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": None}


def load_safetensors(path):
    """Returns {name: torch.Tensor} (F16 stays F16)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=_DT[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (F32/F16/I64) sorted by name, 8-byte aligned header."""
    names = sorted(tensors)
    hdr = {}
    blobs = []
    off = 0
    rev = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}
    for k in names:
        arr = tensors[k].detach().cpu().contiguous().numpy()
        raw = arr.tobytes()
        hdr[k] = {"dtype": rev[arr.dtype], "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        hdr["__metadata__"] = metadata
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ----------------------------------------------------------------------------
# shared blocks

class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, groups, eps, temb_ch=None):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        if temb_ch is not None:
            self.time_emb_proj = nn.Linear(temb_ch, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "conv_shortcut"):
            x = self.conv_shortcut(x)
        return x + h


class Downsample2D(nn.Module):
    def __init__(self, ch, padding):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _attn(q, k, v, heads, mask=None):
    b, n, c = q.shape
    d = c // heads
    q = q.view(b, n, heads, d).transpose(1, 2)
    k = k.view(b, k.shape[1], heads, d).transpose(1, 2)
    v = v.view(b, v.shape[1], heads, d).transpose(1, 2)
    w = torch.matmul(q, k.transpose(-1, -2)) * (d ** -0.5)
    if mask is not None:
        w = w + mask
    w = w.softmax(dim=-1)
    o = torch.matmul(w, v)
    return o.transpose(1, 2).reshape(b, n, c)


class Attention(nn.Module):
    """diffusers Attention (to_q/to_k/to_v/to_out.0), optional group_norm (VAE mid)."""

    def __init__(self, dim, heads, ctx_dim=None, bias=False, group_norm=None):
        super().__init__()
        ctx_dim = ctx_dim or dim
        self.heads = heads
        if group_norm is not None:
            self.group_norm = nn.GroupNorm(group_norm[0], dim, eps=group_norm[1])
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(ctx_dim, dim, bias=bias)
        self.to_v = nn.Linear(ctx_dim, dim, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x, ctx=None):
        if ctx is None:
            ctx = x
        return self.to_out[0](_attn(self.to_q(x), self.to_k(ctx), self.to_v(ctx), self.heads))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x):
        h, g = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(g)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, ctx_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.attn2 = Attention(dim, heads, ctx_dim)
        self.norm3 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = FeedForward(dim)

    def forward(self, x, ctx):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), ctx)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    def __init__(self, ch, heads, ctx_dim, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, heads, ctx_dim)])
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        r = x
        x = self.proj_in(self.norm(x))
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        for blk in self.transformer_blocks:
            x = blk(x, ctx)
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.proj_out(x) + r


# ----------------------------------------------------------------------------
# U-Net

def _at(v, i):
    return v[i] if isinstance(v, (list, tuple)) else v


class _Block(nn.Module):
    pass


class UNet2DConditionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        ch = cfg["block_out_channels"]
        g = cfg.get("norm_num_groups", 32)
        eps = cfg.get("norm_eps", 1e-5)
        lpb = cfg.get("layers_per_block", 2)
        ctx = cfg["cross_attention_dim"]
        heads = cfg.get("attention_head_dim", 8)
        self.freq_shift = cfg.get("freq_shift", 0)
        self.flip = cfg.get("flip_sin_to_cos", True)
        temb = ch[0] * 4
        self.conv_in = nn.Conv2d(cfg.get("in_channels", 4), ch[0], 3, padding=1)
        self.time_embedding = nn.Module()
        self.time_embedding.linear_1 = nn.Linear(ch[0], temb)
        self.time_embedding.linear_2 = nn.Linear(temb, temb)
        self.down_blocks = nn.ModuleList()
        cout = ch[0]
        for i, bt in enumerate(cfg["down_block_types"]):
            cin, cout = cout, ch[i]
            blk = _Block()
            blk.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, g, eps, temb) for j in range(lpb)])
            if bt == "CrossAttnDownBlock2D":
                blk.attentions = nn.ModuleList([Transformer2DModel(cout, _at(heads, i), ctx, g) for _ in range(lpb)])
            if i < len(ch) - 1:
                blk.downsamplers = nn.ModuleList([Downsample2D(cout, cfg.get("downsample_padding", 1))])
            self.down_blocks.append(blk)
        self.mid_block = _Block()
        self.mid_block.resnets = nn.ModuleList([ResnetBlock2D(ch[-1], ch[-1], g, eps, temb) for _ in range(2)])
        self.mid_block.attentions = nn.ModuleList([Transformer2DModel(ch[-1], _at(heads, -1), ctx, g)])
        self.up_blocks = nn.ModuleList()
        rch = list(reversed(ch))
        rheads = list(reversed(heads)) if isinstance(heads, (list, tuple)) else heads
        prev = ch[-1]
        for i, bt in enumerate(cfg["up_block_types"]):
            out = rch[i]
            inp = rch[min(i + 1, len(ch) - 1)]
            blk = _Block()
            res = []
            for j in range(lpb + 1):
                skip = inp if j == lpb else out
                rin = prev if j == 0 else out
                res.append(ResnetBlock2D(rin + skip, out, g, eps, temb))
            blk.resnets = nn.ModuleList(res)
            if bt == "CrossAttnUpBlock2D":
                blk.attentions = nn.ModuleList([Transformer2DModel(out, _at(rheads, i), ctx, g) for _ in range(lpb + 1)])
            if i < len(ch) - 1:
                blk.upsamplers = nn.ModuleList([Upsample2D(out)])
            self.up_blocks.append(blk)
            prev = out
        self.conv_norm_out = nn.GroupNorm(g, ch[0], eps=eps)
        self.conv_out = nn.Conv2d(ch[0], cfg.get("out_channels", 4), 3, padding=1)

    def time_proj(self, t):
        dim = self.cfg["block_out_channels"][0]
        half = dim // 2
        ex = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - self.freq_shift)
        e = t.float()[:, None] * torch.exp(ex)[None, :]
        e = torch.cat([torch.sin(e), torch.cos(e)], dim=-1)
        if self.flip:
            e = torch.cat([e[:, half:], e[:, :half]], dim=-1)
        return e

    def forward(self, x, t, ctx):
        if t.dim() == 0:
            t = t[None]
        t = t.expand(x.shape[0])
        temb = self.time_embedding.linear_2(F.silu(self.time_embedding.linear_1(self.time_proj(t).to(x.dtype))))
        h = self.conv_in(x)
        skips = [h]
        for blk in self.down_blocks:
            for j, r in enumerate(blk.resnets):
                h = r(h, temb)
                if hasattr(blk, "attentions"):
                    h = blk.attentions[j](h, ctx)
                skips.append(h)
            if hasattr(blk, "downsamplers"):
                h = blk.downsamplers[0](h)
                skips.append(h)
        h = self.mid_block.resnets[0](h, temb)
        h = self.mid_block.attentions[0](h, ctx)
        h = self.mid_block.resnets[1](h, temb)
        for blk in self.up_blocks:
            for j, r in enumerate(blk.resnets):
                h = r(torch.cat([h, skips.pop()], dim=1), temb)
                if hasattr(blk, "attentions"):
                    h = blk.attentions[j](h, ctx)
            if hasattr(blk, "upsamplers"):
                h = blk.upsamplers[0](h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


# ----------------------------------------------------------------------------
# VAE

class _VAEMid(nn.Module):
    def __init__(self, ch, g):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, g, 1e-6) for _ in range(2)])
        self.attentions = nn.ModuleList([Attention(ch, 1, bias=True, group_norm=(g, 1e-6))])

    def forward(self, x):
        x = self.resnets[0](x)
        a = self.attentions[0]
        b, c, h, w = x.shape
        y = a.group_norm(x).view(b, c, h * w).transpose(1, 2)
        y = a(y).transpose(1, 2).reshape(b, c, h, w)
        x = x + y
        return self.resnets[1](x)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch = cfg["block_out_channels"]
        g = cfg.get("norm_num_groups", 32)
        lpb = cfg.get("layers_per_block", 2)
        self.conv_in = nn.Conv2d(cfg.get("in_channels", 3), ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        cout = ch[0]
        for i in range(len(ch)):
            cin, cout = cout, ch[i]
            blk = _Block()
            blk.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, g, 1e-6) for j in range(lpb)])
            if i < len(ch) - 1:
                blk.downsamplers = nn.ModuleList([Downsample2D(cout, 0)])
            self.down_blocks.append(blk)
        self.mid_block = _VAEMid(ch[-1], g)
        self.conv_norm_out = nn.GroupNorm(g, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg["latent_channels"], 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for blk in self.down_blocks:
            for r in blk.resnets:
                h = r(h)
            if hasattr(blk, "downsamplers"):
                h = blk.downsamplers[0](h)
        h = self.mid_block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch = cfg["block_out_channels"]
        g = cfg.get("norm_num_groups", 32)
        lpb = cfg.get("layers_per_block", 2)
        self.conv_in = nn.Conv2d(cfg["latent_channels"], ch[-1], 3, padding=1)
        self.mid_block = _VAEMid(ch[-1], g)
        self.up_blocks = nn.ModuleList()
        rch = list(reversed(ch))
        prev = rch[0]
        for i in range(len(ch)):
            out = rch[i]
            blk = _Block()
            blk.resnets = nn.ModuleList([ResnetBlock2D(prev if j == 0 else out, out, g, 1e-6) for j in range(lpb + 1)])
            if i < len(ch) - 1:
                blk.upsamplers = nn.ModuleList([Upsample2D(out)])
            self.up_blocks.append(blk)
            prev = out
        self.conv_norm_out = nn.GroupNorm(g, ch[0], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[0], cfg.get("out_channels", 3), 3, padding=1)

    def forward(self, z):
        h = self.mid_block(self.conv_in(z))
        for blk in self.up_blocks:
            for r in blk.resnets:
                h = r(h)
            if hasattr(blk, "upsamplers"):
                h = blk.upsamplers[0](h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        L = cfg["latent_channels"]
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * L, 2 * L, 1)
        self.post_quant_conv = nn.Conv2d(L, L, 1)

    def encode(self, x):
        """Returns (mean, logvar) as diffusers' DiagonalGaussianDistribution."""
        m = self.quant_conv(self.encoder(x))
        mean, logvar = m.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ----------------------------------------------------------------------------
# CLIP text encoder

class _CLIPLayer(nn.Module):
    def __init__(self, d, inner, heads, eps):
        super().__init__()
        self.heads = heads
        self.self_attn = nn.Module()
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, n, nn.Linear(d, d))
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(d, inner)
        self.mlp.fc2 = nn.Linear(inner, d)
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x, mask):
        a = self.self_attn
        h = self.layer_norm1(x)
        h = a.out_proj(_attn(a.q_proj(h), a.k_proj(h), a.v_proj(h), self.heads, mask))
        x = x + h
        h = self.mlp.fc1(self.layer_norm2(x))
        h = h * torch.sigmoid(1.702 * h)
        return x + self.mlp.fc2(h)


class CLIPTextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        eps = cfg.get("layer_norm_eps", 1e-5)
        tm = nn.Module()
        tm.embeddings = nn.Module()
        tm.embeddings.token_embedding = nn.Embedding(cfg["vocab_size"], d)
        tm.embeddings.position_embedding = nn.Embedding(cfg["max_position_embeddings"], d)
        tm.encoder = nn.Module()
        tm.encoder.layers = nn.ModuleList([
            _CLIPLayer(d, cfg["intermediate_size"], cfg["num_attention_heads"], eps)
            for _ in range(cfg["num_hidden_layers"])])
        tm.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.text_model = tm

    def forward(self, ids):
        tm = self.text_model
        n = ids.shape[1]
        x = tm.embeddings.token_embedding(ids) + tm.embeddings.position_embedding.weight[:n][None]
        mask = torch.full((n, n), float("-inf"), device=ids.device).triu(1)
        for layer in tm.encoder.layers:
            x = layer(x, mask)
        return tm.final_layer_norm(x)


# ----------------------------------------------------------------------------
# scheduler helpers

def scaled_linear_alphas_cumprod(n=1000, b0=0.00085, b1=0.012):
    betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


def load_into(module, sd, strict=True):
    """Loads a diffusers-named state dict (any float dtype) into module (float32)."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own and not k.endswith("position_ids")]
    if strict and (missing or extra):
        raise KeyError("state dict mismatch: missing %s extra %s" % (missing[:5], extra[:5]))
    for k, v in own.items():
        if k in sd:
            if tuple(sd[k].shape) != tuple(v.shape):
                raise ValueError("%s: shape %s want %s" % (k, tuple(sd[k].shape), tuple(v.shape)))
            v.copy_(sd[k].float())
