package models

// LoRA on a loaded pipeline: merged into the device copies of the weights
// (W' = W + multiplier * alpha/rank * up @ down, computed in F32 on the
// device and kept in F32), and taken out again by re-uploading the
// affected weights from the mapped checkpoint, so that changing a LoRA or
// its weight between runs never reloads the model. A prompt's
// <lora:NAME:W> tags name the set (A1111's syntax); SetLoRAs sets it
// directly.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/checkpoint"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/tokenizer"
)

// LoRAUse asks for one LoRA file at a strength: A1111's
// <lora:NAME:TE:UNET> (one number sets both).
type LoRAUse struct {
	// Name is how the prompt names the LoRA (written in "Lora hashes").
	Name string
	Path string
	// TE and UNet multiply the LoRA's text-encoder and U-Net modules
	// (diffusers' lora_scale / cross_attention_kwargs["scale"]).
	TE, UNet float64
}

// AppliedLoRA is one LoRA merged into a pipeline's weights.
type AppliedLoRA struct {
	LoRAUse
	// Hash is A1111's short hash of the file (see checkpoint.LoRA.Hash).
	Hash string
	// Modules counts the weights it changes.
	Modules int
}

// loraState is what a pipeline's weights hold beyond the checkpoint's.
type loraState struct {
	open    map[string]*checkpoint.LoRA // by file identity
	hashes  map[string]string           // identity -> short hash
	applied []AppliedLoRA
	// merged maps "role/param" to the contributions merged into that
	// device weight (absent: the checkpoint's own weight).
	merged map[string][]loraContrib
}

// loraContrib is one LoRA module merged into a weight at a multiplier.
type loraContrib struct {
	id   string // the LoRA file's identity
	mod  checkpoint.LoRAModule
	mult float64
}

func sameContribs(a, b []loraContrib) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].id != b[i].id || a[i].mult != b[i].mult || a[i].mod.Key != b[i].mod.Key {
			return false
		}
	}
	return true
}

// LoRAs lists the LoRAs merged into the weights now, in the order given.
func (p *Pipeline) LoRAs() []AppliedLoRA {
	if p.lora == nil {
		return nil
	}
	return append([]AppliedLoRA(nil), p.lora.applied...)
}

// LoRAHashes is A1111's "Lora hashes" value for the LoRAs applied now:
// "name: hash, name2: hash2" (names without ':' and ','), or "".
func (p *Pipeline) LoRAHashes() string {
	var parts []string
	for _, a := range p.LoRAs() {
		name := strings.NewReplacer(":", "", ",", "").Replace(a.Name)
		parts = append(parts, name+": "+a.Hash)
	}
	return strings.Join(parts, ", ")
}

// SetLoRAs makes uses the pipeline's set of LoRAs, replacing the previous
// set: weights no longer changed get the checkpoint's values back (re-read
// from the mapped file), weights whose LoRAs or multipliers changed are
// merged again from the checkpoint's values, the rest stay as they are.
// The base model is never reloaded. Every file is opened and checked
// (names, shapes, family, NaN) before the device is touched: on such an
// error nothing changes. Call it outside any device scope, between runs.
func (p *Pipeline) SetLoRAs(uses []LoRAUse) error {
	if p.lora == nil {
		p.lora = &loraState{open: map[string]*checkpoint.LoRA{}, hashes: map[string]string{}, merged: map[string][]loraContrib{}}
	}
	st := p.lora
	// Open (or reuse) every file first.
	files := map[string]*checkpoint.LoRA{}
	ids := make([]string, len(uses))
	var opened []*checkpoint.LoRA
	fail := func(err error) error {
		for _, l := range opened {
			l.Close()
		}
		return err
	}
	for i, u := range uses {
		id, err := checkpoint.Identity(u.Path)
		if err != nil {
			return fail(fmt.Errorf("lora %s: %w", u.Name, err))
		}
		ids[i] = id
		if files[id] != nil {
			continue
		}
		if l := st.open[id]; l != nil {
			files[id] = l
			continue
		}
		l, err := checkpoint.OpenLoRA(u.Path, p.Model)
		if err != nil {
			return fail(err)
		}
		opened = append(opened, l)
		h, err := l.Hash()
		if err != nil {
			return fail(err)
		}
		files[id], st.hashes[id] = l, h
	}

	// What every weight should hold.
	want := map[string][]loraContrib{}
	var applied []AppliedLoRA
	for i, u := range uses {
		l := files[ids[i]]
		for _, mod := range l.Modules {
			mult := u.UNet
			if mod.Target.Role != "unet" {
				mult = u.TE
			}
			if mult == 0 {
				continue
			}
			key := mod.Target.Role + "/" + mod.Target.Param
			want[key] = append(want[key], loraContrib{id: ids[i], mod: mod, mult: mult})
		}
		applied = append(applied, AppliedLoRA{LoRAUse: u, Hash: st.hashes[ids[i]], Modules: len(l.Modules)})
	}
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range st.merged {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var err error
	for _, k := range keys {
		if sameContribs(st.merged[k], want[k]) {
			continue
		}
		role, param, _ := strings.Cut(k, "/")
		if err = p.mergeWeight(role, param, want[k], files); err != nil {
			break
		}
		if len(want[k]) == 0 {
			delete(st.merged, k)
		} else {
			st.merged[k] = want[k]
		}
	}
	if err == nil {
		err = p.dev.Err()
	}
	if err != nil {
		// The weights hold a mix; merged says which. Files still merged
		// somewhere stay open.
		st.applied = nil
		for id, l := range files {
			st.open[id] = l
		}
		return fmt.Errorf("applying LoRAs: %w", err)
	}
	// Close the files no longer used.
	for id, l := range st.open {
		if files[id] == nil {
			l.Close()
			delete(st.open, id)
			delete(st.hashes, id)
		}
	}
	for id, l := range files {
		st.open[id] = l
	}
	st.applied = applied
	return nil
}

// paramNet is a network whose uploaded weights can be replaced.
type paramNet interface {
	Param(name string) *gpu.Tensor
	ReplaceParam(name string, t *gpu.Tensor) error
}

func (p *Pipeline) netOf(role string) paramNet {
	if role == "unet" {
		return p.unet
	}
	for i, t := range p.Model.Texts {
		if t.Spec.Role == role {
			return p.texts[i]
		}
	}
	return nil
}

// mergeWeight sets the device weight role/param to the checkpoint's value
// plus the contributions, in F32 (or back to the checkpoint's own bytes
// and dtype when there are none).
func (p *Pipeline) mergeWeight(role, param string, cs []loraContrib, files map[string]*checkpoint.LoRA) error {
	net := p.netOf(role)
	if net == nil || net.Param(param) == nil {
		return fmt.Errorf("%s has no weight %s", role, param)
	}
	gw, err := p.Model.GuardedWeights(role)
	if err != nil {
		return err
	}
	base, ok := gw.Get(param)
	if err := gw.Err(); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: the checkpoint has no %s %s", p.Model.Path, role, param)
	}
	d := p.dev
	if base.DType.Quantized() && (len(cs) > 0 || net.Param(param).DType != base.DType) {
		// A quantized weight merges in F32 (no device op reads packed
		// weights but MatMul); one the loader widened is restored widened.
		v, err := ref.Dequantize(base.DType, base.Raw, gpu.Shape(base.Shape).Numel())
		if err != nil {
			return fmt.Errorf("%s %s: %w", role, param, err)
		}
		base = nets.Param{DType: gpu.F16, Shape: base.Shape, Raw: ref.EncodeF16(v)}
	}
	if len(cs) == 0 {
		return net.ReplaceParam(param, d.UploadRaw(base.DType, base.Raw, base.Shape...))
	}
	out := base.Shape[0]
	flat := gpu.Shape(base.Shape).Numel() / out
	d.PushScope()
	acc := d.Cast(d.UploadRaw(base.DType, base.Raw, base.Shape...))
	for _, c := range cs {
		l := files[c.id]
		down, err := l.Read(c.mod.Down)
		if err != nil {
			d.PopScope()
			return err
		}
		up, err := l.Read(c.mod.Up)
		if err != nil {
			d.PopScope()
			return err
		}
		r := c.mod.Rank
		u := d.Cast(d.UploadRaw(c.mod.Up.DType, up, out, r))
		dn := d.UploadRaw(c.mod.Down.DType, down, r, flat)
		delta := d.MatMul(u, dn, gpu.MatMulOpts{Alpha: float32(c.mult * c.mod.Scale())})
		acc = d.Add(acc, delta.View(base.Shape...))
	}
	d.PopScope(acc)
	return net.ReplaceParam(param, acc)
}

// closeLoRAs releases the LoRA files (the device weights go with the
// networks).
func (p *Pipeline) closeLoRAs() {
	if p.lora == nil {
		return
	}
	for _, l := range p.lora.open {
		l.Close()
	}
	p.lora = nil
}

// LoRATag is one <lora:...> tag of a prompt, read as A1111 reads it.
type LoRATag struct {
	Name     string
	TE, UNet float64
	Text     string // the tag as written
}

// ParseLoRATags reads the LoRA tags of a prompt: <lora:NAME>,
// <lora:NAME:W> (text encoders and U-Net), <lora:NAME:TE:UNET>, and the
// named forms te=W and unet=W (A1111's extra_networks_lora; <lyco:...> is
// the same). Other extra-network kinds (<hypernet:...>) are refused, as
// are weights that are not finite numbers and A1111's dyn (rank cut).
func ParseLoRATags(prompt string) ([]LoRATag, error) {
	_, nets := tokenizer.ExtraNetworks(prompt)
	var out []LoRATag
	for _, e := range nets {
		text := e.Text()
		if len(text) > 80 {
			text = text[:77] + "..."
		}
		switch strings.ToLower(e.Kind) {
		case "lora", "lyco":
		default:
			return nil, fmt.Errorf("%q: extra network %q is not supported (only lora)", text, e.Kind)
		}
		pos, named := e.Positional(), e.Named()
		if len(pos) == 0 || strings.TrimSpace(pos[0]) == "" {
			return nil, fmt.Errorf("%q: no LoRA name", text)
		}
		t := LoRATag{Name: strings.TrimSpace(pos[0]), TE: 1, Text: e.Text()}
		num := func(s, what string) (float64, error) {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil || v != v || v > 1e6 || v < -1e6 {
				return 0, fmt.Errorf("%q: %s weight %q is not a number (want e.g. <lora:%s:0.8>)", text, what, s, t.Name)
			}
			return v, nil
		}
		var err error
		if len(pos) > 1 {
			if t.TE, err = num(pos[1], "the"); err != nil {
				return nil, err
			}
		}
		if v, ok := named["te"]; ok {
			if t.TE, err = num(v, "the te"); err != nil {
				return nil, err
			}
		}
		t.UNet = t.TE
		if len(pos) > 2 {
			if t.UNet, err = num(pos[2], "the unet"); err != nil {
				return nil, err
			}
		}
		if v, ok := named["unet"]; ok {
			if t.UNet, err = num(v, "the unet"); err != nil {
				return nil, err
			}
		}
		if _, ok := named["dyn"]; ok || len(pos) > 3 {
			return nil, fmt.Errorf("%q: dyn (A1111's rank cut) is not supported", text)
		}
		for k := range named {
			if k != "te" && k != "unet" && k != "dyn" {
				return nil, fmt.Errorf("%q: unknown argument %q (want te= or unet=)", text, k)
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// ResolveLoRA finds the file of a LoRA named in a prompt: NAME.safetensors
// in dir or, as A1111 looks, in any folder below it (the first in lexical
// order). Pickle files (.pt, .ckpt) are never loaded.
func ResolveLoRA(dir, name string) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("lora %q: no LoRA folder (pass --lora-dir DIR)", name)
	}
	if st, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("lora %q: %w", name, err)
	} else if !st.IsDir() {
		return "", fmt.Errorf("lora %q: %s is not a folder", name, dir)
	}
	stem := strings.TrimSuffix(name, ".safetensors")
	if stem != "" && !strings.ContainsAny(stem, `/\`) && stem != "." && stem != ".." {
		p := filepath.Join(dir, stem+".safetensors")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	found, pickle := "", ""
	const maxEntries = 100000 // a LoRA folder, not a file system
	n := 0
	errStop := errors.New("stop")
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable folders are skipped
		}
		if n++; n > maxEntries {
			return errStop
		}
		if e.IsDir() {
			return nil
		}
		base := e.Name()
		ext := filepath.Ext(base)
		if strings.TrimSuffix(base, ext) != stem {
			return nil
		}
		switch strings.ToLower(ext) {
		case ".safetensors":
			found = path
			return errStop
		case ".pt", ".ckpt", ".pth", ".bin":
			pickle = path
		}
		return nil
	})
	if err != nil && err != errStop {
		return "", fmt.Errorf("lora %q: %w", name, err)
	}
	switch {
	case found != "":
		return found, nil
	case pickle != "":
		return "", fmt.Errorf("lora %q: %s: %w", name, pickle, checkpoint.ErrPickle)
	}
	return "", fmt.Errorf("lora %q: no %s.safetensors in %s or its folders", name, stem, dir)
}

// PromptLoRAs reads a prompt's LoRA tags and finds their files in dir.
func PromptLoRAs(prompt, dir string) ([]LoRAUse, error) {
	tags, err := ParseLoRATags(prompt)
	if err != nil {
		return nil, err
	}
	var out []LoRAUse
	for _, t := range tags {
		path, err := ResolveLoRA(dir, t.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, LoRAUse{Name: t.Name, Path: path, TE: t.TE, UNet: t.UNet})
	}
	return out, nil
}

// applyPromptLoRAs makes the prompt's LoRA tags the pipeline's set; the
// negative prompt may not carry any (A1111 would read them as words).
func (p *Pipeline) applyPromptLoRAs(prompt, negative string) error {
	if _, tags := tokenizer.ExtraNetworks(negative); len(tags) > 0 {
		return fmt.Errorf("negative prompt: %q: extra-network tags work in the prompt only", tags[0].Text())
	}
	uses, err := PromptLoRAs(prompt, p.LoRADir)
	if err != nil {
		return fmt.Errorf("prompt: %w", err)
	}
	if len(uses) == 0 && (p.lora == nil || len(p.lora.merged) == 0 && len(p.lora.applied) == 0) {
		return nil
	}
	return p.SetLoRAs(uses)
}

// SetLoRATag returns prompt with the LoRA name at weight w: its first
// <lora:name:...> tag rewritten as <lora:name:w> (later tags of the same
// name removed), or the tag appended when there is none; w 0 removes the
// LoRA's tags. For studio fields that edit the LoRAs of a prompt; name
// must not hold ':' or '>', which a tag cannot carry.
func SetLoRATag(prompt, name string, w float64) string {
	_, tags := tokenizer.ExtraNetworks(prompt)
	var b strings.Builder
	last, done := 0, false
	for _, e := range tags {
		k := strings.ToLower(e.Kind)
		pos := e.Positional()
		if (k != "lora" && k != "lyco") || len(pos) == 0 || strings.TrimSpace(pos[0]) != name {
			continue
		}
		b.WriteString(prompt[last:e.Start])
		last = e.End
		if !done && w != 0 {
			b.WriteString(loraTag(name, w))
		}
		done = true
	}
	b.WriteString(prompt[last:])
	out := b.String()
	if !done && w != 0 {
		tag := loraTag(name, w)
		sep := ""
		if out != "" && !strings.HasSuffix(out, " ") {
			sep = " "
		}
		// Appended, unless an unclosed "<word:" before it would swallow
		// it into another tag: then in front.
		if _, got := tokenizer.ExtraNetworks(out + sep + tag); len(got) > 0 && got[len(got)-1].Text() == tag {
			return out + sep + tag
		}
		return tag + " " + out
	}
	return out
}

func loraTag(name string, w float64) string {
	return "<lora:" + name + ":" + strconv.FormatFloat(w, 'f', -1, 64) + ">"
}
