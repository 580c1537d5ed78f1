package models

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseLoRATags(t *testing.T) {
	tags, err := ParseLoRATags("a <lora:cat v2:0.8>, <lora:style:1:0.25> <lyco:l:te=0.5:unet=2> <lora:plain> (x:1.2)")
	require.NoError(t, err)
	require.Len(t, tags, 4)
	assert.Equal(t, LoRATag{Name: "cat v2", TE: 0.8, UNet: 0.8, Text: "<lora:cat v2:0.8>"}, tags[0])
	assert.Equal(t, [2]float64{1, 0.25}, [2]float64{tags[1].TE, tags[1].UNet})
	assert.Equal(t, [2]float64{0.5, 2}, [2]float64{tags[2].TE, tags[2].UNet})
	assert.Equal(t, [2]float64{1, 1}, [2]float64{tags[3].TE, tags[3].UNet})
	for _, bad := range []string{"<lora::1>", "<lora:a:nan>", "<lora:a:inf>", "<lora:a:1:x>", "<lora:a:te=>", "<lora:a:1:1:4>", "<lora:a:dyn=4>", "<lora:a:foo=1>", "<hypernet:h:1>"} {
		_, err := ParseLoRATags(bad)
		assert.Error(t, err, bad)
	}
	assert.Equal(t, "x <lora:a:0.5>", SetLoRATag("x", "a", 0.5))
	assert.Equal(t, "x <lora:a:0.7> y ", SetLoRATag("x <lora:a:1> y <lora:a:2>", "a", 0.7))
	assert.Equal(t, "x  y", SetLoRATag("x <lora:a:1> y", "a", 0))
	assert.Equal(t, "<lora:a:1>", SetLoRATag("", "a", 1))
}

// FuzzLoRATags: the <lora:...> prompt syntax never panics; weights come out
// finite; SetLoRATag's result names the LoRA at that weight, once.
func FuzzLoRATags(f *testing.F) {
	for _, s := range []string{
		"a cat <lora:cat_v2:0.8>, <lora:style:1:0.5>", "<lora:a>", "<lora::>", "<lora:a:te=0.5:unet=1>",
		"<lora:a:1e400>", "<lora:a:-0>", "<lora: spaced name :.5>", "<lyco:x:1:2>", "<<lora:a:1>lora:b:2>",
	} {
		f.Add(s, "a", 0.5)
	}
	f.Fuzz(func(t *testing.T, prompt, name string, w float64) {
		tags, err := ParseLoRATags(prompt)
		if err == nil {
			for _, tg := range tags {
				if tg.Name == "" || math.IsNaN(tg.TE) || math.IsInf(tg.TE, 0) || math.IsNaN(tg.UNet) || math.IsInf(tg.UNet, 0) {
					t.Fatalf("ParseLoRATags(%q): %+v", prompt, tg)
				}
			}
		}
		name = strings.TrimSpace(name)
		if err != nil || name == "" || strings.ContainsAny(name, ":<>=") || math.IsNaN(w) || math.IsInf(w, 0) || w == 0 || math.Abs(w) > 1e6 {
			return
		}
		out := SetLoRATag(prompt, name, w)
		tags, err = ParseLoRATags(out)
		if err != nil {
			t.Fatalf("SetLoRATag(%q, %q, %v) = %q does not parse: %v", prompt, name, w, out, err)
		}
		n := 0
		for _, tg := range tags {
			if tg.Name == name {
				n++
				if tg.TE != w || tg.UNet != w {
					t.Fatalf("SetLoRATag(%q, %q, %v) = %q: weight %v/%v", prompt, name, w, out, tg.TE, tg.UNet)
				}
			}
		}
		if n != 1 {
			t.Fatalf("SetLoRATag(%q, %q, %v) = %q names it %d times", prompt, name, w, out, n)
		}
	})
}
