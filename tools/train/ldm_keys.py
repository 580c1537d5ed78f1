"""diffusers -> original LDM (SD single-file) key mapping for U-Net, VAE and CLIP text.

Follows the layout diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
writes; generalised to any number of U-Net levels and layers_per_block.
"""

import re


def unet_to_ldm(sd, cfg):
    lpb = cfg.get("layers_per_block", 2)
    up_types = cfg["up_block_types"]
    out = {}
    for k, v in sd.items():
        n = None
        m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = (lpb + 1) * i + j + 1
            if kind == "resnets":
                n = "input_blocks.%d.0.%s" % (idx, _resnet(rest))
            else:
                n = "input_blocks.%d.1.%s" % (idx, rest)
        if n is None:
            m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", k)
            if m:
                n = "input_blocks.%d.0.op.%s" % ((lpb + 1) * (int(m[1]) + 1), m[2])
        if n is None:
            m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", k)
            if m:
                i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
                idx = (lpb + 1) * i + j
                if kind == "resnets":
                    n = "output_blocks.%d.0.%s" % (idx, _resnet(rest))
                else:
                    n = "output_blocks.%d.1.%s" % (idx, rest)
        if n is None:
            m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", k)
            if m:
                i = int(m[1])
                sub = 2 if up_types[i].startswith("CrossAttn") else 1
                n = "output_blocks.%d.%d.%s" % ((lpb + 1) * i + lpb, sub, m[2])
        if n is None:
            m = re.match(r"mid_block\.resnets\.(\d+)\.(.*)", k)
            if m:
                n = "middle_block.%d.%s" % (2 * int(m[1]), _resnet(m[2]))
        if n is None:
            m = re.match(r"mid_block\.attentions\.0\.(.*)", k)
            if m:
                n = "middle_block.1.%s" % m[1]
        if n is None:
            fixed = {
                "time_embedding.linear_1.": "time_embed.0.",
                "time_embedding.linear_2.": "time_embed.2.",
                "conv_in.": "input_blocks.0.0.",
                "conv_norm_out.": "out.0.",
                "conv_out.": "out.2.",
            }
            for a, b in fixed.items():
                if k.startswith(a):
                    n = b + k[len(a):]
        if n is None:
            raise KeyError("no LDM name for unet key " + k)
        out["model.diffusion_model." + n] = v
    return out


def _resnet(rest):
    for a, b in (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
                 ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection.")):
        if rest.startswith(a):
            return b + rest[len(a):]
    raise KeyError("resnet key " + rest)


def vae_to_ldm(sd, cfg):
    nlev = len(cfg["block_out_channels"])
    out = {}
    for k, v in sd.items():
        n = k
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", n)
        n = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", n)
        m = re.match(r"^decoder\.up_blocks\.(\d+)\.(.*)", n)
        if m:
            i = nlev - 1 - int(m[1])
            rest = m[2].replace("resnets.", "block.", 1).replace("upsamplers.0.", "upsample.", 1)
            n = "decoder.up.%d.%s" % (i, rest)
        n = re.sub(r"\.mid_block\.resnets\.(\d+)\.", lambda mm: ".mid.block_%d." % (int(mm[1]) + 1), n)
        if ".mid_block.attentions.0." in n:
            n = n.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for a, b in (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                         ("to_out.0.", "proj_out.")):
                n = n.replace("attn_1." + a, "attn_1." + b)
            if n.endswith(".weight") and v.dim() == 2:
                v = v.reshape(v.shape[0], v.shape[1], 1, 1)
        n = n.replace(".conv_norm_out.", ".norm_out.").replace(".conv_shortcut.", ".nin_shortcut.")
        out["first_stage_model." + n] = v
    return out


def text_to_ldm(sd):
    return {"cond_stage_model.transformer." + k: v for k, v in sd.items() if not k.endswith("position_ids")}


def to_ldm(unet_sd, unet_cfg, vae_sd, vae_cfg, text_sd):
    out = {}
    out.update(unet_to_ldm(unet_sd, unet_cfg))
    out.update(vae_to_ldm(vae_sd, vae_cfg))
    out.update(text_to_ldm(text_sd))
    return out
