package checkpoint

// LoRA files: kohya / A1111 (lora_unet_*, lora_te_*, lora_te1_*, lora_te2_*
// with .lora_down.weight, .lora_up.weight and .alpha) and diffusers / PEFT
// (unet.<module>.lora_A.weight / lora_B.weight, text_encoder.<module>...,
// no alpha; also diffusers' older lora.down / lora.up and attention-
// processor names). Module names are resolved through the networks' own
// parameter declarations (nets.Decl): a kohya name is the diffusers or the
// original (LDM/SGM, OpenCLIP) module path with '.' replaced by '_', so the
// underscore form of every declared module name is indexed; no list of
// layer names is kept here.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/internal/safefile"
	"github.com/stepwise/stepwise/models/nets"
	"github.com/stepwise/stepwise/models/safetensors"
)

// LoRA file layouts (LoRAKey.Format, LoRA.Format).
const (
	LoRAKohya     = "kohya"     // lora_unet_<module_with_underscores>.lora_down.weight ...
	LoRADiffusers = "diffusers" // unet.<dotted.module>.lora_A.weight (PEFT) ...
)

// LoRA parts (LoRAKey.Part).
const (
	LoRADown  = "down"  // kohya lora_down, PEFT lora_A: [rank, in] or [rank, in, kh, kw]
	LoRAUp    = "up"    // kohya lora_up, PEFT lora_B: [out, rank] or [out, rank, 1, 1]
	LoRAAlpha = "alpha" // the module's alpha (a scalar); absent means alpha = rank
)

// LoRAKey is one tensor name of a LoRA file, parsed.
type LoRAKey struct {
	Format string
	// Role is the network the module belongs to: "unet", "text_encoder" or
	// "text_encoder_2" (a family's TextSpec.Role).
	Role string
	// Module is the module's path as the file writes it: with '_' for '.'
	// in a kohya file ("down_blocks_0_attentions_0_proj_in"), dotted
	// otherwise.
	Module string
	Part   string
}

// kohyaPrefixes map kohya's network prefixes to roles, longest first.
var kohyaPrefixes = []struct{ prefix, role string }{
	{"lora_unet_", "unet"},
	{"lora_te1_", "text_encoder"},
	{"lora_te2_", "text_encoder_2"},
	{"lora_te_", "text_encoder"},
}

// ParseLoRAKey parses one tensor name of a LoRA file. The error says why a
// name is not a LoRA tensor Stepwise can apply (a LyCORIS variant, DoRA,
// another model's network, or no LoRA name at all).
func ParseLoRAKey(key string) (LoRAKey, error) {
	if strings.HasPrefix(key, "lora_") {
		return parseKohyaKey(key)
	}
	return parseDiffusersKey(key)
}

func parseKohyaKey(key string) (LoRAKey, error) {
	for _, p := range []struct{ prefix, what string }{
		{"lora_te3_", "SD3's T5 text encoder (lora_te3_*)"},
		{"lora_transformer_", "an MM-DiT / Flux transformer (lora_transformer_*)"},
	} {
		if strings.HasPrefix(key, p.prefix) {
			return LoRAKey{}, fmt.Errorf("a LoRA for %s, which no family here has", p.what)
		}
	}
	k := LoRAKey{Format: LoRAKohya}
	rest := ""
	for _, p := range kohyaPrefixes {
		if r, ok := strings.CutPrefix(key, p.prefix); ok {
			k.Role, rest = p.role, r
			break
		}
	}
	if k.Role == "" {
		return k, errors.New("not a LoRA name (kohya names start lora_unet_, lora_te_, lora_te1_ or lora_te2_)")
	}
	mod, suffix, ok := strings.Cut(rest, ".")
	if !ok || mod == "" {
		return k, errors.New("no module name before the first '.'")
	}
	k.Module = mod
	switch suffix {
	case "lora_down.weight":
		k.Part = LoRADown
	case "lora_up.weight":
		k.Part = LoRAUp
	case "alpha":
		k.Part = LoRAAlpha
	default:
		return k, unsupportedPart(suffix)
	}
	return k, nil
}

// unsupportedPart explains a LoRA tensor suffix that is not down, up or
// alpha.
func unsupportedPart(suffix string) error {
	s := strings.TrimSuffix(suffix, ".weight")
	switch {
	case s == "lora_mid":
		return errors.New("LoCon with a Tucker core (lora_mid) is not supported")
	case strings.HasPrefix(s, "hada_"):
		return errors.New("LyCORIS LoHa (hada_*) is not supported")
	case strings.HasPrefix(s, "lokr_"):
		return errors.New("LyCORIS LoKr (lokr_*) is not supported")
	case strings.HasPrefix(s, "oft_") || s == "oft_blocks" || strings.HasPrefix(s, "boft_"):
		return errors.New("OFT / BOFT is not supported")
	case s == "dora_scale" || strings.HasPrefix(s, "lora_magnitude_vector"):
		return errors.New("DoRA (weight-decomposed LoRA) is not supported")
	case s == "diff" || s == "diff_b" || s == "bias" || s == "w_norm" || s == "b_norm":
		return fmt.Errorf("LyCORIS full/norm weights (%s) are not supported", s)
	case strings.HasPrefix(s, "lora_embedding_"):
		return errors.New("LoRA on an embedding table is not supported")
	}
	return fmt.Errorf("unknown LoRA tensor %q (want lora_down.weight, lora_up.weight or alpha)", suffix)
}

// diffusersSuffixes are the ways diffusers and PEFT end a module's LoRA
// tensors.
var diffusersSuffixes = []struct{ suffix, part string }{
	{".lora_A.weight", LoRADown},
	{".lora_B.weight", LoRAUp},
	{".lora.down.weight", LoRADown}, // diffusers' LoRACompatibleLinear/Conv
	{".lora.up.weight", LoRAUp},
	{".lora_linear_layer.down.weight", LoRADown}, // diffusers' patched text encoder
	{".lora_linear_layer.up.weight", LoRAUp},
	{".lora_down.weight", LoRADown}, // kohya parts on dotted names
	{".lora_up.weight", LoRAUp},
	{".alpha", LoRAAlpha},
}

func parseDiffusersKey(key string) (LoRAKey, error) {
	k := LoRAKey{Format: LoRADiffusers}
	rest := strings.TrimPrefix(key, "base_model.model.") // a bare PEFT save
	switch {
	case strings.HasPrefix(rest, "unet."):
		k.Role, rest = "unet", rest[len("unet."):]
	case strings.HasPrefix(rest, "text_encoder_2."):
		k.Role, rest = "text_encoder_2", rest[len("text_encoder_2."):]
	case strings.HasPrefix(rest, "text_encoder."):
		k.Role, rest = "text_encoder", rest[len("text_encoder."):]
	case strings.HasPrefix(rest, "transformer."):
		return k, errors.New("a LoRA for an MM-DiT / Flux transformer (transformer.*), which no family here has")
	case strings.HasPrefix(rest, "text_encoder_3."):
		return k, errors.New("a LoRA for SD3's T5 text encoder (text_encoder_3.*), which no family here has")
	case strings.HasPrefix(rest, "text_model."):
		k.Role = "text_encoder"
	default:
		k.Role = "unet"
	}
	for _, s := range diffusersSuffixes {
		if mod, ok := strings.CutSuffix(rest, s.suffix); ok {
			k.Module, k.Part = mod, s.part
			break
		}
	}
	if k.Part == "" {
		// PEFT with the adapter's name kept: <module>.lora_A.<adapter>.weight.
		for _, s := range []struct{ mid, part string }{{".lora_A.", LoRADown}, {".lora_B.", LoRAUp}} {
			if i := strings.LastIndex(rest, s.mid); i > 0 {
				adapter, ok := strings.CutSuffix(rest[i+len(s.mid):], ".weight")
				if ok && adapter != "" && !strings.Contains(adapter, ".") {
					k.Module, k.Part = rest[:i], s.part
				}
			}
		}
	}
	if k.Part == "" {
		// diffusers' attention processors: <attn>.processor.to_q_lora.down.weight.
		if i := strings.LastIndex(rest, ".processor."); i > 0 {
			proc := rest[i+len(".processor."):]
			for _, p := range []struct{ name, module string }{
				{"to_q", "to_q"}, {"to_k", "to_k"}, {"to_v", "to_v"}, {"to_out", "to_out.0"},
			} {
				for _, s := range []struct{ suffix, part string }{{"_lora.down.weight", LoRADown}, {"_lora.up.weight", LoRAUp}} {
					if proc == p.name+s.suffix {
						k.Module, k.Part = rest[:i]+"."+p.module, s.part
					}
				}
			}
		}
	}
	if k.Part == "" {
		last := rest
		if i := strings.LastIndex(rest, ".lora"); i >= 0 {
			last = rest[i+1:]
		} else if i := strings.LastIndexByte(rest, '.'); i >= 0 {
			last = rest[i+1:]
		}
		if strings.Contains(key, "lora") || strings.Contains(key, "hada_") || strings.Contains(key, "lokr_") || strings.Contains(key, "dora") {
			return k, unsupportedPart(last)
		}
		return k, errors.New("not a LoRA tensor (no lora_A/lora_B, lora_down/lora_up or alpha)")
	}
	if k.Module == "" || strings.HasPrefix(k.Module, ".") || strings.HasSuffix(k.Module, ".") || strings.Contains(k.Module, "..") {
		return k, errors.New("no module name")
	}
	return k, nil
}

// underscore is kohya's form of a module path: '.' replaced by '_'.
func underscore(module string) string { return strings.ReplaceAll(module, ".", "_") }

// LoRATarget is one weight a LoRA may change: a declared Linear or Conv2d
// weight of one network.
type LoRATarget struct {
	Role  string
	Param string // the declared (diffusers) name, "...to_q.weight"
	Shape []int  // its shape: [out, in] or [out, in, kh, kw]
}

// loraIndex finds a network's LoRA-able weights by module name: the
// diffusers name and the original name of every declared 2- or 4-D
// ".weight", dotted and with underscores.
type loraIndex struct {
	role    string
	byName  map[string]int // module name (either form) -> decls index; -1: ambiguous
	targets []LoRATarget
}

func newLoRAIndex(role string, decls []nets.Decl) *loraIndex {
	ix := &loraIndex{role: role, byName: map[string]int{}}
	add := func(name string, i int) {
		if prev, ok := ix.byName[name]; ok && prev != i {
			ix.byName[name] = -1
			return
		}
		ix.byName[name] = i
	}
	for _, d := range decls {
		if len(d.Shape) != 2 && len(d.Shape) != 4 {
			continue
		}
		mod, ok := strings.CutSuffix(d.Name, ".weight")
		// Embedding tables (token_embedding, position_embedding) are 2-D
		// weights but not Linear layers: a LoRA there is another thing.
		if !ok || strings.HasSuffix(mod, "embedding") {
			continue
		}
		i := len(ix.targets)
		ix.targets = append(ix.targets, LoRATarget{Role: role, Param: d.Name, Shape: d.Shape})
		names := []string{mod}
		// The original name, where it is one module's own weight (not a
		// slice of a fused in_proj, nor stored transposed).
		if o, ok := strings.CutSuffix(d.Orig, ".weight"); ok && d.Parts <= 1 && !d.Transpose && o != "" {
			names = append(names, o)
		}
		for _, n := range names {
			add(n, i)
			add(underscore(n), i)
		}
	}
	return ix
}

// lookup resolves a module name of a LoRA file.
func (ix *loraIndex) lookup(module string) (LoRATarget, bool, bool) {
	i, ok := ix.byName[module]
	switch {
	case !ok:
		return LoRATarget{}, false, false
	case i < 0:
		return LoRATarget{}, true, true // ambiguous
	}
	return ix.targets[i], true, false
}

// LoRAIndexes builds the module index of every network of m (U-Net and
// text encoders) by role.
func loraIndexes(m *Model) (map[string]*loraIndex, error) {
	ud, _, tds, err := declsOf(m)
	if err != nil {
		return nil, err
	}
	out := map[string]*loraIndex{"unet": newLoRAIndex("unet", ud)}
	for i, t := range m.Texts {
		out[t.Spec.Role] = newLoRAIndex(t.Spec.Role, tds[i])
	}
	return out, nil
}

// LoRAModule is one module of a LoRA: the weight it changes and its
// low-rank factors, W' = W + multiplier * Alpha/Rank * Up @ Down.
type LoRAModule struct {
	Target LoRATarget
	// Key is the module's name in the file, for messages
	// ("lora_unet_down_blocks_0_attentions_0_proj_in").
	Key      string
	Down, Up nets.Param // Raw in the mapped file
	Rank     int
	Alpha    float64 // = Rank when the file has none (PEFT)
}

// Scale is Alpha/Rank, the factor of Up @ Down at multiplier 1.
func (l LoRAModule) Scale() float64 { return l.Alpha / float64(l.Rank) }

// LoRA is an opened, validated LoRA file, resolved against one model's
// networks. Its tensors stay mapped until Close.
type LoRA struct {
	Path   string
	Format string
	// Modules are sorted by role, then parameter name.
	Modules  []LoRAModule
	Metadata map[string]string
	// Family is the family of the model the LoRA was resolved against.
	Family string

	file *safetensors.File
	hash string
}

// LoRAError reports why a LoRA file cannot be applied to a model: every
// unknown, unmatched, mis-shaped or non-finite tensor by name and, when the
// file looks made for another family, that reason first.
type LoRAError struct {
	Path   string
	Family string // the model's family
	// Reason is the one-line summary (another family, no LoRA at all).
	Reason   string
	Problems []string
}

func (e *LoRAError) Error() string {
	const show = 20
	var b strings.Builder
	fmt.Fprintf(&b, "lora %s", e.Path)
	if e.Reason != "" {
		fmt.Fprintf(&b, ": %s", e.Reason)
	}
	if len(e.Problems) == 0 {
		return b.String()
	}
	if e.Reason == "" {
		fmt.Fprintf(&b, ": %d problem", len(e.Problems))
		if len(e.Problems) != 1 {
			b.WriteString("s")
		}
		if e.Family != "" {
			fmt.Fprintf(&b, " with this %s model", e.Family)
		}
	}
	b.WriteString(":")
	writeProblems(&b, e.Problems, show)
	return b.String()
}

// OpenLoRA opens a LoRA .safetensors file and resolves it against m's
// networks. Everything is checked before a caller touches a device: every
// tensor name must parse and name a Linear or Conv2d weight of m, the
// factors' shapes must fit that weight, alpha must be a finite scalar and
// no factor may hold NaN or Inf. The error (a *LoRAError, or the file's
// own format error) names the file.
func OpenLoRA(path string, m *Model) (*LoRA, error) {
	ext := strings.ToLower(filepath.Ext(path))
	for _, e := range pickleExts {
		if ext == e {
			return nil, fmt.Errorf("lora %s: %w", path, ErrPickle)
		}
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	l, err := resolveLoRA(f, m)
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// OpenLoRABytes is OpenLoRA for a file held in memory.
func OpenLoRABytes(name string, data []byte, m *Model) (*LoRA, error) {
	f, err := safetensors.FromBytes(name, data)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	return resolveLoRA(f, m)
}

// loraGroup gathers the tensors of one module.
type loraGroup struct {
	key                 LoRAKey
	down, up, alpha     string // file keys
	downInfo, upInfo    safetensors.TensorInfo
	alphaInfo           safetensors.TensorInfo
	name                string // the module's name in the file, for messages
	duplicate, conflict bool
}

func resolveLoRA(f *safetensors.File, m *Model) (*LoRA, error) {
	path := f.Path()
	lerr := &LoRAError{Path: path, Family: m.Family}
	infos := f.Tensors()
	if len(infos) == 0 {
		lerr.Reason = "the file holds no tensors"
		return nil, lerr
	}
	idx, err := loraIndexes(m)
	if err != nil {
		return nil, fmt.Errorf("lora %s: %w", path, err)
	}
	groups := map[string]*loraGroup{} // role + "/" + module
	var order []string
	formats := map[string]int{}
	roles := map[string]int{}
	var unparsed []string
	for _, t := range infos {
		k, err := ParseLoRAKey(t.Name)
		if err != nil {
			unparsed = append(unparsed, fmt.Sprintf("tensor %q: %v", t.Name, err))
			continue
		}
		formats[k.Format]++
		id := k.Role + "/" + k.Module
		g := groups[id]
		if g == nil {
			g = &loraGroup{key: k, name: loraModuleName(t.Name, k)}
			groups[id] = g
			order = append(order, id)
			roles[k.Role]++
		}
		switch k.Part {
		case LoRADown:
			g.duplicate = g.duplicate || g.down != ""
			g.down, g.downInfo = t.Name, t
		case LoRAUp:
			g.duplicate = g.duplicate || g.up != ""
			g.up, g.upInfo = t.Name, t
		case LoRAAlpha:
			g.duplicate = g.duplicate || g.alpha != ""
			g.alpha, g.alphaInfo = t.Name, t
		}
	}
	if len(groups) == 0 {
		lerr.Reason = "no LoRA tensors in the file (kohya lora_unet_* / lora_te_*, or diffusers unet.*.lora_A.weight)"
		if notACheckpoint(infos) == "" {
			lerr.Reason = "this is a full checkpoint (model.diffusion_model.*, ...), not a LoRA: load it as the model"
		} else {
			lerr.Problems = unparsed
		}
		return nil, lerr
	}
	lerr.Problems = append(lerr.Problems, unparsed...)
	l := &LoRA{Path: path, Metadata: f.Metadata(), Family: m.Family, file: f}
	l.Format = LoRAKohya
	if formats[LoRADiffusers] > formats[LoRAKohya] {
		l.Format = LoRADiffusers
	}

	// Networks the model does not have: the clearest sign of another family.
	var missingRoles []string
	for r := range roles {
		if idx[r] == nil {
			missingRoles = append(missingRoles, r)
		}
	}
	sort.Strings(missingRoles)

	sort.Strings(order)
	var unmatched, misfit int
	targets := map[string]string{} // role/param -> module name, for duplicates
	for _, id := range order {
		g := groups[id]
		ix := idx[g.key.Role]
		if ix == nil {
			unmatched++
			lerr.Problems = append(lerr.Problems, fmt.Sprintf("module %s: this %s model has no %s", g.name, m.Family, g.key.Role))
			continue
		}
		tgt, found, ambiguous := ix.lookup(g.key.Module)
		switch {
		case ambiguous:
			unmatched++
			lerr.Problems = append(lerr.Problems, fmt.Sprintf("module %s: the name fits several %s layers", g.name, g.key.Role))
			continue
		case !found:
			unmatched++
			lerr.Problems = append(lerr.Problems, fmt.Sprintf("module %s: no such Linear or Conv2d layer in the %s", g.name, g.key.Role))
			continue
		}
		if prev, dup := targets[tgt.Role+"/"+tgt.Param]; dup {
			lerr.Problems = append(lerr.Problems, fmt.Sprintf("module %s: changes %s %s, as module %s does", g.name, tgt.Role, tgt.Param, prev))
			continue
		}
		targets[tgt.Role+"/"+tgt.Param] = g.name
		mod, problems := checkLoRAModule(f, g, tgt)
		if len(problems) > 0 {
			misfit++
			lerr.Problems = append(lerr.Problems, problems...)
			continue
		}
		l.Modules = append(l.Modules, mod)
	}
	if len(lerr.Problems) == 0 {
		if bad := l.nonFinite(); len(bad) > 0 {
			lerr.Reason = "non-finite LoRA weights (NaN or Inf): the file is damaged or was saved from a diverged training run"
			lerr.Problems = bad
			return nil, lerr
		}
		sort.Slice(l.Modules, func(i, j int) bool {
			a, b := l.Modules[i].Target, l.Modules[j].Target
			if a.Role != b.Role {
				return a.Role < b.Role
			}
			return a.Param < b.Param
		})
		return l, nil
	}
	lerr.Reason = familyReason(m, l.Metadata, missingRoles, unmatched+misfit, len(groups))
	return nil, lerr
}

// loraModuleName is a module's name as its file writes it, for messages.
func loraModuleName(key string, k LoRAKey) string {
	if k.Format == LoRAKohya {
		name, _, _ := strings.Cut(key, ".")
		return name
	}
	for _, s := range diffusersSuffixes {
		if n, ok := strings.CutSuffix(key, s.suffix); ok {
			return n
		}
	}
	return k.Role + "." + k.Module
}

// checkLoRAModule checks one module's tensors against the weight they
// change and reads its alpha.
func checkLoRAModule(f *safetensors.File, g *loraGroup, tgt LoRATarget) (LoRAModule, []string) {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("module %s: ", g.name)+fmt.Sprintf(format, args...))
	}
	if g.duplicate {
		bad("a tensor is given twice (in two name styles?)")
	}
	if g.down == "" || g.up == "" {
		var miss []string
		if g.down == "" {
			miss = append(miss, "down (lora_down / lora_A)")
		}
		if g.up == "" {
			miss = append(miss, "up (lora_up / lora_B)")
		}
		bad("no %s factor", strings.Join(miss, " and "))
		return LoRAModule{}, problems
	}
	mod := LoRAModule{Target: tgt, Key: g.name}
	param := func(info safetensors.TensorInfo, part string) nets.Param {
		dt, ok := info.DType.GPU()
		if !ok || dt.Quantized() {
			bad("%s %q: dtype %s is not supported (want F32, F16 or BF16)", part, info.Name, info.DType)
			return nets.Param{}
		}
		raw, err := f.Data(info.Name)
		if err != nil {
			bad("%v", err)
		}
		return nets.Param{DType: dt, Shape: append([]int(nil), info.Shape...), Raw: raw}
	}
	mod.Down, mod.Up = param(g.downInfo, "down"), param(g.upInfo, "up")
	out, in := tgt.Shape[0], tgt.Shape[1]
	kh, kw := 1, 1
	if len(tgt.Shape) == 4 {
		kh, kw = tgt.Shape[2], tgt.Shape[3]
	}
	ds, us := g.downInfo.Shape, g.upInfo.Shape
	rank := 0
	if len(ds) > 0 {
		rank = ds[0]
	}
	// down: [r, in] (a Linear, or a 1x1 conv written as one) or
	// [r, in, kh, kw]; up: [out, r] or [out, r, 1, 1].
	downOK := rank > 0 && ((len(ds) == 2 && ds[1] == in && kh == 1 && kw == 1) ||
		(len(ds) == 4 && ds[1] == in && ds[2] == kh && ds[3] == kw))
	upOK := rank > 0 && ((len(us) == 2 && us[0] == out && us[1] == rank) ||
		(len(us) == 4 && us[0] == out && us[1] == rank && us[2] == 1 && us[3] == 1))
	if !downOK || !upOK {
		what := "Linear"
		if len(tgt.Shape) == 4 {
			what = "Conv2d"
		}
		bad("down %v and up %v do not fit the %s %s %s %v (want down [rank, %d%s] and up [%d, rank])",
			gpu.Shape(ds), gpu.Shape(us), what, tgt.Role, tgt.Param, gpu.Shape(tgt.Shape), in, kernelDims(kh, kw), out)
		return mod, problems
	}
	mod.Rank = rank
	mod.Alpha = float64(rank)
	if g.alpha != "" {
		a, err := scalar(f, g.alphaInfo)
		switch {
		case err != nil:
			bad("alpha %q: %v", g.alpha, err)
		case math.IsNaN(a) || math.IsInf(a, 0):
			bad("alpha %q is %v", g.alpha, a)
		case a != 0: // kohya: alpha 0 means alpha = rank
			mod.Alpha = a
		}
	}
	return mod, problems
}

func kernelDims(kh, kw int) string {
	if kh == 1 && kw == 1 {
		return ""
	}
	return fmt.Sprintf(", %d, %d", kh, kw)
}

// scalar reads a one-element float tensor.
func scalar(f *safetensors.File, info safetensors.TensorInfo) (float64, error) {
	if info.NumElements() != 1 {
		return 0, fmt.Errorf("shape %v, want a scalar", gpu.Shape(info.Shape))
	}
	raw, err := f.Data(info.Name)
	if err != nil {
		return 0, err
	}
	var v float64
	ferr := safefile.Guard(f.Path(), func() {
		switch info.DType {
		case safetensors.F16:
			v = float64(ref.HalfToFloat(binary.LittleEndian.Uint16(raw)))
		case safetensors.BF16:
			v = float64(ref.BF16ToFloat(binary.LittleEndian.Uint16(raw)))
		case safetensors.F32:
			v = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw)))
		case safetensors.F64:
			v = math.Float64frombits(binary.LittleEndian.Uint64(raw))
		default:
			err = fmt.Errorf("dtype %s, want a float", info.DType)
		}
	})
	if ferr != nil {
		return 0, ferr
	}
	return v, err
}

// nonFinite lists the factors holding NaN or Inf.
func (l *LoRA) nonFinite() []string {
	var out []string
	for _, mod := range l.Modules {
		for _, p := range []struct {
			part string
			p    nets.Param
		}{{"down", mod.Down}, {"up", mod.Up}} {
			var n int64
			if err := safefile.Guard(l.Path, func() { n = CountNonFinite(p.p.DType, p.p.Raw) }); err != nil {
				return []string{err.Error()}
			}
			if n > 0 {
				out = append(out, fmt.Sprintf("module %s %s: %d of %d values are NaN or Inf", mod.Key, p.part, n, len(p.p.Raw)/p.p.DType.Size()))
			}
		}
	}
	return out
}

// familyReason says why a LoRA that does not fit m looks made for another
// family, or "" when nothing suggests it.
func familyReason(m *Model, meta map[string]string, missingRoles []string, bad, total int) string {
	var why []string
	if len(missingRoles) > 0 {
		var names []string
		for _, r := range missingRoles {
			names = append(names, r+" ("+kohyaPrefixOf(r)+"*)")
		}
		guess := ""
		if contains(missingRoles, "text_encoder_2") {
			guess = " (SDXL has two)"
		}
		why = append(why, fmt.Sprintf("it has weights for %s, a text encoder this %s model does not have%s",
			strings.Join(names, ", "), m.Family, guess))
	}
	if fam := metadataFamily(meta); fam != "" && !strings.EqualFold(fam, m.Family) {
		why = append(why, "its metadata says it was trained for "+fam)
	}
	if len(why) == 0 && bad*2 > total {
		why = append(why, fmt.Sprintf("%d of its %d modules do not fit this %s model (no such layer, or other shapes)", bad, total, m.Family))
	}
	if len(why) == 0 {
		return ""
	}
	return fmt.Sprintf("a LoRA for another family, not this %s model: %s", m.Family, strings.Join(why, "; "))
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func kohyaPrefixOf(role string) string {
	switch role {
	case "text_encoder_2":
		return "lora_te2_"
	case "text_encoder":
		return "lora_te_"
	}
	return "lora_unet_"
}

// metadataFamily reads the base model a LoRA's metadata names (kohya's
// ss_base_model_version, or modelspec.architecture), as a family name.
func metadataFamily(meta map[string]string) string {
	v := strings.ToLower(meta["ss_base_model_version"] + " " + meta["modelspec.architecture"])
	switch {
	case strings.Contains(v, "sdxl") || strings.Contains(v, "stable-diffusion-xl"):
		return "SDXL"
	case strings.Contains(v, "sd_v2") || strings.Contains(v, "stable-diffusion-v2"):
		return "SD 2.x"
	case strings.Contains(v, "sd_v1") || strings.Contains(v, "stable-diffusion-v1"):
		return "SD 1.x"
	case strings.Contains(v, "sd3") || strings.Contains(v, "stable-diffusion-v3"):
		return "SD3"
	case strings.Contains(v, "flux"):
		return "Flux"
	}
	return ""
}

// Close releases the mapped file; the modules' tensors must not be used after.
func (l *LoRA) Close() error {
	if l.file == nil {
		return nil
	}
	err := l.file.Close()
	l.file = nil
	return err
}

// Read copies a factor's bytes out of the mapped file, guarded: a file
// truncated since it was opened gives an error naming it, not a SIGBUS.
func (l *LoRA) Read(p nets.Param) ([]byte, error) {
	raw := make([]byte, len(p.Raw))
	if err := safefile.Guard(l.Path, func() { copy(raw, p.Raw) }); err != nil {
		return nil, err
	}
	return raw, nil
}

// Hash is the short hash A1111 writes in "Lora hashes": the first 12 hex
// digits of kohya's "addnet" hash, the SHA-256 of the file after its
// header (of the whole file for other formats), or of the sshs_model_hash
// the file's metadata carries.
func (l *LoRA) Hash() (string, error) {
	if l.hash != "" {
		return l.hash, nil
	}
	if h := strings.TrimSpace(l.Metadata["sshs_model_hash"]); len(h) >= 12 {
		l.hash = strings.ToLower(h[:12])
		return l.hash, nil
	}
	h, err := AddnetHash(l.Path)
	if err != nil {
		return "", err
	}
	l.hash = h[:12]
	return l.hash, nil
}

// AddnetHash is kohya's (and A1111's) hash of a .safetensors file: the
// SHA-256 of the bytes after the 8-byte length and the JSON header, hex.
func AddnetHash(path string) (string, error) {
	fd, _, err := safefile.Open(path)
	if err != nil {
		return "", fmt.Errorf("lora: %w", err)
	}
	defer fd.Close()
	var n [8]byte
	if _, err := io.ReadFull(fd, n[:]); err != nil {
		return "", fmt.Errorf("lora %s: reading the header length: %w", path, err)
	}
	if _, err := fd.Seek(int64(8+binary.LittleEndian.Uint64(n[:])), io.SeekStart); err != nil {
		return "", fmt.Errorf("lora %s: %w", path, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, fd); err != nil {
		return "", fmt.Errorf("lora %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Identity names a file's current version: a LoRA changed on disk (another
// size or modification time) is a different LoRA.
func Identity(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s|%d|%d", path, st.Size(), st.ModTime().UnixNano()), nil
}
