package checkpoint

import (
	"strconv"
	"strings"
)

// openTarget is where one OpenCLIP tensor (below cond_stage_model.model.)
// goes: a transformers CLIP parameter, or one third of the fused in_proj.
type openTarget struct {
	name        string
	part, parts int
}

// openCLIPNames maps the OpenCLIP text tower of SD 2.x single files to
// transformers' CLIPTextModel names for the layers the text layout has
// (diffusers keeps the 23 layers SD 2.x uses, the penultimate output).
func openCLIPNames(l *layout) (byKey map[string][]openTarget, keyOf map[string]string) {
	byKey, keyOf = map[string][]openTarget{}, map[string]string{}
	add := func(key, name string, part, parts int) {
		byKey[key] = append(byKey[key], openTarget{name, part, parts})
		keyOf[name] = key
	}
	renames := []struct{ from, to string }{
		{".layer_norm1.", ".ln_1."}, {".layer_norm2.", ".ln_2."},
		{".mlp.fc1.", ".mlp.c_fc."}, {".mlp.fc2.", ".mlp.c_proj."},
		{".self_attn.out_proj.", ".attn.out_proj."},
	}
	for _, s := range l.slots {
		n := s.name
		switch {
		case n == "text_model.embeddings.token_embedding.weight":
			add("token_embedding.weight", n, 0, 1)
		case n == "text_model.embeddings.position_embedding.weight":
			add("positional_embedding", n, 0, 1)
		case strings.HasPrefix(n, "text_model.final_layer_norm."):
			add("ln_final."+strings.TrimPrefix(n, "text_model.final_layer_norm."), n, 0, 1)
		case strings.HasPrefix(n, "text_model.encoder.layers."):
			rest := strings.TrimPrefix(n, "text_model.encoder.layers.")
			i := strings.IndexByte(rest, '.')
			key := "transformer.resblocks." + rest[:i] + rest[i:]
			for j, p := range []string{".self_attn.q_proj.", ".self_attn.k_proj.", ".self_attn.v_proj."} {
				if strings.Contains(key, p) {
					suffix := key[strings.LastIndexByte(key, '.')+1:]
					add(key[:strings.Index(key, p)]+".attn.in_proj_"+suffix, n, j, 3)
					key = ""
				}
			}
			if key == "" {
				continue
			}
			for _, r := range renames {
				key = strings.Replace(key, r.from, r.to, 1)
			}
			add(key, n, 0, 1)
		}
	}
	return byKey, keyOf
}

// openCLIPUnused reports OpenCLIP tensors inference does not use: the
// contrastive head and the layers after the penultimate one.
func openCLIPUnused(key string, layers int) bool {
	switch key {
	case "text_projection", "logit_scale", "attn_mask":
		return true
	}
	if rest, ok := strings.CutPrefix(key, "transformer.resblocks."); ok {
		if i := strings.IndexByte(rest, '.'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil && n >= layers {
				return true
			}
		}
	}
	return false
}
