package presets

import (
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A styles.csv as A1111 writes it (utf-8-sig, Python csv quoting), with a
// duplicate, an empty name and a row shorter than the header.
const sampleStyles = "\ufeffname,prompt,negative_prompt\r\n" +
	"Cinematic,\"cinematic still of {prompt}, shallow depth of field, film grain\",\"cartoon, painting\"\r\n" +
	"Watercolor,\"watercolor, soft edges\",\r\n" +
	"\"Multi\nline\",\"line one\nline two\",\"he said \"\"no\"\"\"\r\n" +
	",orphan prompt,\r\n" +
	"Short,only prompt\r\n" +
	"Watercolor, \"watercolor, wet paper\",blurry\r\n"

func TestImportStyles(t *testing.T) {
	got, err := ImportStyles(strings.NewReader(sampleStyles))
	require.NoError(t, err)
	want := []Style{
		{"Cinematic", "cinematic still of {prompt}, shallow depth of field, film grain", "cartoon, painting"},
		{"Watercolor", "watercolor, wet paper", "blurry"},
		{"Multi\nline", "line one\nline two", `he said "no"`},
		{"Short", "only prompt", ""},
	}
	require.Equal(t, want, got)

	// The old two-column format, and columns in another order.
	got, err = ImportStyles(strings.NewReader("name,text\nOld,old text\n"))
	require.NoError(t, err, "old format")
	require.Equal(t, []Style{{"Old", "old text", ""}}, got, "old format")
	got, err = ImportStyles(strings.NewReader("negative_prompt,description,prompt,name\nneg,ignored,pos,N\n"))
	require.NoError(t, err, "reordered")
	require.Equal(t, []Style{{"N", "pos", "neg"}}, got, "reordered")
	for _, bad := range []string{"", "prompt,negative_prompt\nx,y\n", "name,negative_prompt\nx,y\n"} {
		_, err := ImportStyles(strings.NewReader(bad))
		assert.ErrorContains(t, err, "styles.csv", "ImportStyles(%q)", bad)
	}
}

func TestApplyStyle(t *testing.T) {
	s := Default()
	s.Prompt, s.NegativePrompt = "a cat", "lowres"
	got := ApplyStyle(s, Style{Prompt: "cinematic still of {prompt}, {prompt} again", NegativePrompt: "cartoon"})
	require.Equal(t, "cinematic still of a cat, a cat again", got.Prompt)
	require.Equal(t, "lowres, cartoon", got.NegativePrompt)
	s.Prompt, s.NegativePrompt = "  ", ""
	got = ApplyStyle(s, Style{Prompt: " watercolor ", NegativePrompt: ""})
	require.Equal(t, "watercolor", got.Prompt)
	require.Equal(t, "", got.NegativePrompt)
	require.Equal(t, s.Steps, got.Steps, "ApplyStyle changed other settings")
	require.Equal(t, s.Seed, got.Seed, "ApplyStyle changed other settings")
}

func FuzzImportStyles(f *testing.F) {
	f.Add(sampleStyles)
	f.Add("name,text\nOld,old text\n")
	f.Fuzz(func(t *testing.T, data string) {
		styles, err := ImportStyles(strings.NewReader(data))
		if err != nil {
			require.True(t, strings.HasPrefix(err.Error(), "styles.csv: "), "error does not name styles.csv: %v", err)
			return
		}
		seen := map[string]bool{}
		for _, st := range styles {
			require.NotEmpty(t, strings.TrimSpace(st.Name), "empty name %q", st.Name)
			require.False(t, seen[st.Name], "duplicate name %q", st.Name)
			seen[st.Name] = true
			s := ApplyStyle(Default(), st)
			if !strings.Contains(st.Prompt, "{prompt}") && utf8.ValidString(st.Prompt) {
				require.Equal(t, strings.TrimSpace(st.Prompt), s.Prompt, "style on an empty prompt: %q", st.Prompt)
			}
		}
	})
}

func FuzzLoadPreset(f *testing.F) {
	s := Default()
	s.Prompt, s.Eta = "a \"quoted\"\nprompt", Float(0.3)
	data, err := EncodePreset(s)
	require.NoError(f, err)
	f.Add(data)
	f.Add([]byte("format = 1\nsteps = 30\nsampler = \"DPM++ 2M\"\nschedule = \"karras\"\n"))
	st := NewStore(f.TempDir())
	f.Fuzz(func(t *testing.T, data []byte) {
		// Through the store, as the studio reads a preset file: an error
		// names the file, a success is what DecodePreset gives.
		require.NoError(t, os.WriteFile(st.path("fuzz"), data, 0o644))
		p, ferr := st.Load("fuzz")
		s, err := DecodePreset(data)
		require.Equal(t, err == nil, ferr == nil, "DecodePreset: %v; Store.Load: %v", err, ferr)
		if err != nil {
			require.ErrorContains(t, ferr, st.path("fuzz"), "error does not name the file")
			return
		}
		require.Equal(t, s, p.Settings, "Store.Load vs DecodePreset")
		require.Equal(t, st.path("fuzz"), p.Path, "Store.Load")
		require.NoError(t, s.Validate(), "decoded invalid settings")
		again, err := EncodePreset(s)
		require.NoError(t, err)
		s2, err := DecodePreset(again)
		require.NoError(t, err, "re-encode")
		require.Equal(t, s, s2, "re-encode")
	})
}
