package presets

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
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
	if err != nil {
		t.Fatal(err)
	}
	want := []Style{
		{"Cinematic", "cinematic still of {prompt}, shallow depth of field, film grain", "cartoon, painting"},
		{"Watercolor", "watercolor, wet paper", "blurry"},
		{"Multi\nline", "line one\nline two", `he said "no"`},
		{"Short", "only prompt", ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}

	// The old two-column format, and columns in another order.
	got, err = ImportStyles(strings.NewReader("name,text\nOld,old text\n"))
	if err != nil || !reflect.DeepEqual(got, []Style{{"Old", "old text", ""}}) {
		t.Fatalf("old format: %q %v", got, err)
	}
	got, err = ImportStyles(strings.NewReader("negative_prompt,description,prompt,name\nneg,ignored,pos,N\n"))
	if err != nil || !reflect.DeepEqual(got, []Style{{"N", "pos", "neg"}}) {
		t.Fatalf("reordered: %q %v", got, err)
	}
	for _, bad := range []string{"", "prompt,negative_prompt\nx,y\n", "name,negative_prompt\nx,y\n"} {
		if _, err := ImportStyles(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "styles.csv") {
			t.Errorf("ImportStyles(%q): %v", bad, err)
		}
	}
}

func TestApplyStyle(t *testing.T) {
	s := Default()
	s.Prompt, s.NegativePrompt = "a cat", "lowres"
	got := ApplyStyle(s, Style{Prompt: "cinematic still of {prompt}, {prompt} again", NegativePrompt: "cartoon"})
	if got.Prompt != "cinematic still of a cat, a cat again" || got.NegativePrompt != "lowres, cartoon" {
		t.Fatalf("got %q / %q", got.Prompt, got.NegativePrompt)
	}
	s.Prompt, s.NegativePrompt = "  ", ""
	got = ApplyStyle(s, Style{Prompt: " watercolor ", NegativePrompt: ""})
	if got.Prompt != "watercolor" || got.NegativePrompt != "" {
		t.Fatalf("got %q / %q", got.Prompt, got.NegativePrompt)
	}
	if got.Steps != s.Steps || got.Seed != s.Seed {
		t.Fatal("ApplyStyle changed other settings")
	}
}

func FuzzImportStyles(f *testing.F) {
	f.Add(sampleStyles)
	f.Add("name,text\nOld,old text\n")
	f.Fuzz(func(t *testing.T, data string) {
		styles, err := ImportStyles(strings.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "styles.csv: ") {
				t.Fatalf("error does not name styles.csv: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, st := range styles {
			if strings.TrimSpace(st.Name) == "" || seen[st.Name] {
				t.Fatalf("empty or duplicate name %q", st.Name)
			}
			seen[st.Name] = true
			s := ApplyStyle(Default(), st)
			if !strings.Contains(st.Prompt, "{prompt}") && utf8.ValidString(st.Prompt) && s.Prompt != strings.TrimSpace(st.Prompt) {
				t.Fatalf("style on an empty prompt: %q -> %q", st.Prompt, s.Prompt)
			}
		}
	})
}

func FuzzLoadPreset(f *testing.F) {
	s := Default()
	s.Prompt, s.Eta = "a \"quoted\"\nprompt", Float(0.3)
	data, err := EncodePreset(s)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("format = 1\nsteps = 30\nsampler = \"DPM++ 2M\"\nschedule = \"karras\"\n"))
	st := NewStore(f.TempDir())
	f.Fuzz(func(t *testing.T, data []byte) {
		// Through the store, as the studio reads a preset file: an error
		// names the file, a success is what DecodePreset gives.
		if err := os.WriteFile(st.path("fuzz"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		p, ferr := st.Load("fuzz")
		s, err := DecodePreset(data)
		if (err == nil) != (ferr == nil) {
			t.Fatalf("DecodePreset: %v; Store.Load: %v", err, ferr)
		}
		if err != nil {
			if !strings.Contains(ferr.Error(), st.path("fuzz")) {
				t.Fatalf("error does not name the file: %v", ferr)
			}
			return
		}
		if !reflect.DeepEqual(p.Settings, s) || p.Path != st.path("fuzz") {
			t.Fatalf("Store.Load gave %+v, DecodePreset %+v", p.Settings, s)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("decoded invalid settings: %v", err)
		}
		again, err := EncodePreset(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := DecodePreset(again)
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("re-encode: %v\n%+v\n%+v", err, s, s2)
		}
	})
}
