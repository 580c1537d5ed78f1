package tokenizer

import (
	"regexp"
	"strings"
)

// ExtraNetwork is one of A1111's extra-network tags in a prompt,
// <KIND:ARG:ARG...>, e.g. <lora:NAME:0.8>. A1111 removes every such tag
// from the prompt before the attention syntax is parsed (whatever its kind),
// and hands the tags to the extra network of that kind.
type ExtraNetwork struct {
	Kind string // "lora", "hypernet", ...
	// Items are the arguments split at ':' (Items[0] is the network's name).
	Items []string
	// Start and End are the tag's byte offsets in the prompt.
	Start, End int
}

// Text is the tag as written.
func (e ExtraNetwork) Text() string { return "<" + e.Kind + ":" + strings.Join(e.Items, ":") + ">" }

// Positional returns the items that are not NAME=VALUE, as A1111's
// ExtraNetworkParams does (an item with two '=' is positional).
func (e ExtraNetwork) Positional() []string {
	var out []string
	for _, it := range e.Items {
		if strings.Count(it, "=") != 1 {
			out = append(out, it)
		}
	}
	return out
}

// Named returns the NAME=VALUE items.
func (e ExtraNetwork) Named() map[string]string {
	out := map[string]string{}
	for _, it := range e.Items {
		if strings.Count(it, "=") == 1 {
			k, v, _ := strings.Cut(it, "=")
			out[k] = v
		}
	}
	return out
}

// reExtraNetwork is A1111's re_extra_net, <(\w+):([^>]+)>, with Python's
// Unicode \w.
var reExtraNetwork = regexp.MustCompile(`<([\p{L}\p{N}_]+):([^>]+)>`)

// ExtraNetworks removes A1111's extra-network tags (<lora:NAME:W>, ...)
// from prompt in one left-to-right pass, as A1111's
// extra_networks.parse_prompt does, and returns what is left and the tags
// in order. Text that only forms a tag once another is removed stays text,
// as in A1111.
func ExtraNetworks(prompt string) (string, []ExtraNetwork) {
	locs := reExtraNetwork.FindAllStringSubmatchIndex(prompt, -1)
	if len(locs) == 0 {
		return prompt, nil
	}
	var b strings.Builder
	tags := make([]ExtraNetwork, 0, len(locs))
	last := 0
	for _, l := range locs {
		b.WriteString(prompt[last:l[0]])
		last = l[1]
		tags = append(tags, ExtraNetwork{
			Kind:  prompt[l[2]:l[3]],
			Items: strings.Split(prompt[l[4]:l[5]], ":"),
			Start: l[0], End: l[1],
		})
	}
	b.WriteString(prompt[last:])
	return b.String(), tags
}
