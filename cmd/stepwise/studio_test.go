package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/presets"
	"github.com/stepwise/stepwise/render"
)

// TestStudioInTmux runs the real binary in tmux at 120x40 and 80x24: it
// types a prompt, sets 3 steps, generates, exports, opens the image page,
// paints a mask with the mouse on an init image (studioMask), quits, and checks the screen, the exit status, the restored terminal and the PNG. With
// STEPWISE_CAPTURE_DIR set, the screens are also written there
// (tui/testdata/screens holds a set made this way).
func TestStudioInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and drives it in tmux; skipped with -short")
	}
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed")
	}
	g := golden.Dir(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "stepwise")
	build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build:\n%s", out)
	for _, sz := range [][2]int{{120, 40}, {80, 24}} {
		t.Run(fmt.Sprintf("%dx%d", sz[0], sz[1]), func(t *testing.T) {
			studioSession(t, tmux, bin, g, sz[0], sz[1])
		})
	}
	for _, where := range []string{"update", "view", "worker"} {
		t.Run("panic in "+where, func(t *testing.T) { crashSession(t, tmux, bin, g, where) })
	}
}

// crashSession makes the studio panic (STEPWISE_TEST_PANIC) in Update, View
// or the worker at ctrl+g and checks that it exits with status 2, prints
// where to report the crash with the trace, and leaves the terminal as it
// found it (echo and canonical mode on, the alternate screen left).
func crashSession(t *testing.T, tmux, bin, g, where string) {
	work := t.TempDir()
	exit, sttyOut, stderrPath := filepath.Join(work, "exit"), filepath.Join(work, "stty"), filepath.Join(work, "stderr")
	s := tmuxSession{t: t, tmux: tmux, sock: filepath.Join(work, "sock")}
	shell := fmt.Sprintf("cd %q && STEPWISE_TEST_PANIC=%s XDG_CONFIG_HOME=%q %q --model %q --config %q --device ref 2>%q; echo $? > %q; stty -a > %q; echo shell-is-back; sleep 60",
		work, where, filepath.Join(work, "cfg"), bin, filepath.Join(g, "sd15-mini.fp16.safetensors"),
		filepath.Join(g, "sd15_mini_config.json"), stderrPath, exit, sttyOut)
	s.cmd("new-session", "-d", "-s", "studio", "-x", "100", "-y", "30", shell)
	t.Cleanup(func() { exec.Command(tmux, "-S", s.sock, "kill-server").Run() })
	s.waitScreen("loaded sd15-mini", 60*time.Second)
	s.cmd("send-keys", "-t", "studio", "C-g")
	screen := s.waitScreen("shell-is-back", 30*time.Second)
	code, _ := os.ReadFile(exit)
	assert.Equal(t, "2", strings.TrimSpace(string(code)), "exit status")
	stderr, _ := os.ReadFile(stderrPath)
	for _, want := range []string{"stepwise crashed: a panic in ", "STEPWISE_TEST_PANIC=" + where,
		"Please report it at " + reportURL, "with this trace", "goroutine "} {
		assert.Contains(t, string(stderr), want, "stderr")
	}
	stty, _ := os.ReadFile(sttyOut)
	modes := map[string]bool{}
	for _, f := range strings.Fields(string(stty)) {
		modes[f] = true
	}
	for _, m := range []string{"echo", "icanon", "isig"} {
		assert.True(t, modes[m], "terminal not restored: stty shows %s off:\n%s", m, stty)
		assert.False(t, modes["-"+m], "terminal not restored: stty shows %s off:\n%s", m, stty)
	}
	assert.NotContains(t, screen, "ctrl+g generate", "the studio's screen is still up")
}

// tmuxSession is one tmux server on a private socket.
type tmuxSession struct {
	t          *testing.T
	tmux, sock string
}

func (s tmuxSession) cmd(args ...string) string {
	s.t.Helper()
	out, err := exec.Command(s.tmux, append([]string{"-S", s.sock}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (s tmuxSession) capture() string { return s.cmd("capture-pane", "-p", "-t", "studio") }

// waitScreen polls the screen until it contains want.
func (s tmuxSession) waitScreen(want string, d time.Duration) string {
	s.t.Helper()
	return s.waitScreenAll(d, want)
}

// waitScreenAll polls the screen until it contains every one of wants: a
// page is asserted only once tmux has seen all of it drawn (a capture can
// fall between two parts of a redraw).
func (s tmuxSession) waitScreenAll(d time.Duration, wants ...string) string {
	s.t.Helper()
	end := time.Now().Add(d)
	for {
		scr := s.capture()
		missing := ""
		for _, w := range wants {
			if !strings.Contains(scr, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return scr
		}
		if time.Now().After(end) {
			s.t.Fatalf("screen never showed %q; last screen:\n%s", missing, scr)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func studioSession(t *testing.T, tmux, bin, g string, w, h int) {
	work := t.TempDir()
	out := filepath.Join(work, "out")
	require.NoError(t, os.Mkdir(out, 0o755))
	exit := filepath.Join(work, "exit")
	s := tmuxSession{t: t, tmux: tmux, sock: filepath.Join(work, "sock")}
	shell := fmt.Sprintf("cd %q && XDG_CONFIG_HOME=%q %q --model %q --config %q --device ref --out %q 2>%q; echo $? > %q; sleep 60",
		work, filepath.Join(work, "cfg"), bin, filepath.Join(g, "sd15-mini.fp16.safetensors"),
		filepath.Join(g, "sd15_mini_config.json"), out, filepath.Join(work, "stderr"), exit)
	s.cmd("new-session", "-d", "-s", "studio", "-x", fmt.Sprint(w), "-y", fmt.Sprint(h), shell)
	t.Cleanup(func() { exec.Command(tmux, "-S", s.sock, "kill-server").Run() })

	s.waitScreen("loaded sd15-mini", 60*time.Second)
	const prompt = "a red fox in snow!"
	studioDefects(t, s, h, negative)
	s.cmd("send-keys", "-t", "studio", "Tab", "Tab", "Tab", "C-u")
	s.cmd("send-keys", "-t", "studio", "-l", "3")
	s.cmd("send-keys", "-t", "studio", "C-g")
	main := s.waitScreen("run 1 done", 60*time.Second)
	for _, want := range []string{prompt, "run 1", "step 3/3", "final image (VAE)", "history [#1✓]", "space pause/resume"} {
		assert.Contains(t, main, want, "the screen after the run")
	}
	s.cmd("send-keys", "-t", "studio", "C-x")
	exported := s.waitScreen("exported", 30*time.Second)
	pngPath := filepath.Join(out, "stepwise_0001.png")
	_, err := os.Stat(pngPath)
	require.NoError(t, err, "export; screen:\n%s", exported)

	// The timeline scrubbed back, then the four explanation views.
	s.cmd("send-keys", "-t", "studio", "Home", ".")
	timeline := s.waitScreen("step 1/3", 10*time.Second)
	screens := map[string]string{"main": exported, "timeline": timeline}
	for _, v := range []struct{ key, name, want string }{
		{"M-2", "schedule", "Noise schedule"},
		{"M-3", "forward", "forward  q(x_t|x0)"},
		{"M-5", "trace", "VAE decoder"},
	} {
		s.cmd("send-keys", "-t", "studio", v.key)
		screens[v.name] = s.waitScreen(v.want, 30*time.Second)
	}
	s.cmd("send-keys", "-t", "studio", "M-4")
	screens["sweep"] = s.waitScreen("guidance sweep done", 90*time.Second)

	// The image page fits the terminal: every field of it on screen.
	s.cmd("send-keys", "-t", "studio", "M-i")
	imageFields := []string{"Init img", "Strength", "Mask blur", "Ctrl net", "Ctrl img", "Ctrl str", "IP adapt", "IP image", "IP scale", "LoRA dir", "TAESD", "alt+i"}
	// Waiting for the first and the last lines only: a missing field in
	// between is the failure asserted below, not a slow redraw.
	screens["image"] = s.waitScreenAll(10*time.Second, "Image inputs", "TAESD")
	for _, want := range imageFields {
		assert.Contains(t, screens["image"], want, "the image page")
	}
	screens["mask"] = studioMask(t, s, work, out)

	s.cmd("send-keys", "-t", "studio", "C-c")
	end := time.Now().Add(20 * time.Second)
	var code []byte
	for {
		var err error
		if code, err = os.ReadFile(exit); err == nil && len(code) > 0 {
			break
		}
		if time.Now().After(end) {
			require.Failf(t, "the studio did not quit on ctrl+c", "screen:\n%s", s.capture())
		}
		time.Sleep(100 * time.Millisecond)
	}
	stderr, _ := os.ReadFile(filepath.Join(work, "stderr"))
	assert.Equal(t, "0", strings.TrimSpace(string(code)), "exit status; stderr:\n%s", stderr)
	assert.NotContains(t, s.capture(), "ctrl+g generate", "the terminal is restored after quitting")

	text, err := render.ReadPNGTextFile(pngPath)
	require.NoError(t, err)
	st, _, err := presets.ParseInfotext(text["parameters"])
	require.NoError(t, err)
	assert.Equal(t, prompt, st.Prompt)
	assert.Equal(t, negative, st.NegativePrompt)
	assert.Equal(t, 3, st.Steps)
	assert.Equal(t, [2]int{64, 64}, [2]int{st.Width, st.Height})
	f, err := os.Open(pngPath)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	assert.Equal(t, [2]int{64, 64}, [2]int{img.Bounds().Dx(), img.Bounds().Dy()}, "PNG size")

	if cd := os.Getenv("STEPWISE_CAPTURE_DIR"); cd != "" {
		for name, scr := range screens {
			p := filepath.Join(cd, fmt.Sprintf("studio_%dx%d_%s.txt", w, h, name))
			assert.NoError(t, os.WriteFile(p, []byte(scr), 0o644))
		}
	}
}

// negative is the negative prompt studioDefects types: a skin-toned emoji
// and a heart with its variation selector (grapheme clusters of two code
// points, two cells each).
const negative = "❤️ 👍🏽 blurry"

// studioDefects drives the studio's fixed defects (issue 14) through the
// real binary at this size, from the freshly loaded model to the prompt
// "a red fox in snow!" in the prompt field: "?" in the empty prompt opens
// the modal help, whose keys edit nothing; readline's ctrl+a/ctrl+e move
// in the prompt instead of exporting; emoji in the negative prompt keep
// every line inside the screen; an out-of-range CFG is flagged as typed;
// a built-in preset keeps the typed prompts and ctrl+z takes it back; the
// token counter follows the prompt.
func studioDefects(t *testing.T, s tmuxSession, h int, negative string) {
	t.Helper()
	send := func(keys ...string) { s.cmd(append([]string{"send-keys", "-t", "studio"}, keys...)...) }
	typeText := func(text string) { send("-l", text) }

	send("?")
	help := s.waitScreen("everywhere", 10*time.Second)
	assert.Contains(t, help, "fields", "the full help")
	send("j", "j", "x")
	send("Escape")
	scr := s.waitScreen("Prompt     0/75", 10*time.Second) // nothing was typed under the help
	assert.NotContains(t, scr, "everywhere", "esc closes the help")

	typeText("red fox in snow")
	send("C-a")
	typeText("a ")
	send("C-e")
	typeText("!")
	scr = s.waitScreen("a red fox in snow!", 10*time.Second)
	assert.Contains(t, scr, "Prompt     6/75", "the token counter")
	assert.NotContains(t, scr, "exported", "ctrl+e in a text field is end of line")

	send("Tab")
	typeText(negative)
	send("Tab", "C-u")
	typeText("150")
	scr = s.waitScreen("150 is outside", 10*time.Second)
	lines := strings.Split(strings.TrimRight(scr, "\n"), "\n")
	assert.LessOrEqual(t, len(lines), h, "no line wrapped with emoji on screen")
	assert.Contains(t, lines[len(lines)-1], "ctrl+c quit", "the help bar stays on the last line")
	assert.Contains(t, scr, "blurry", "the negative prompt with emoji")
	send("C-u")
	typeText("7")

	send("C-p")
	s.waitScreen("(built-in)", 10*time.Second)
	send("Enter")
	scr = s.waitScreen("applied preset", 10*time.Second)
	assert.Contains(t, scr, "a red fox in snow!", "a built-in preset keeps the typed prompt")
	send("C-z")
	s.waitScreen("undone", 10*time.Second)
	send("BTab", "BTab") // back to the prompt field
}

// studioMask paints an inpainting mask with the mouse in the real binary:
// on the image page (alt+i, the Init field focused) it types the path of a
// 64x64 PNG written in work, enters mask painting (alt+m), finds the
// picture on the screen (its half-block cells), drags the left button from
// a quarter of the way in to the middle as SGR mouse reports (what
// bubbletea's cell-motion mode reads; tmux passes literal input through),
// and leaves with esc. The mask PNG saved in the export folder out is white
// where the stroke went and black in the corners, and the Mask field shows
// its path. It returns the screen while painting.
func studioMask(t *testing.T, s tmuxSession, work, out string) string {
	t.Helper()
	send := func(keys ...string) { s.cmd(append([]string{"send-keys", "-t", "studio"}, keys...)...) }
	init := filepath.Join(work, "photo.png")
	pic := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			pic.SetNRGBA(x, y, color.NRGBA{uint8(4 * x), uint8(4 * y), 128, 255})
		}
	}
	f, err := os.Create(init)
	require.NoError(t, err)
	require.NoError(t, png.Encode(f, pic))
	require.NoError(t, f.Close())

	s.waitScreen("img2img:", 10*time.Second) // the Init field has focus
	send("-l", init)
	s.waitScreen("init image · photo.png", 10*time.Second)
	send("M-m")
	scr := s.waitScreen("✎ mask: paint", 10*time.Second)

	// The picture: the cells drawn with "▀" (one pixel column, two rows).
	top, left, rows, cols := -1, -1, 0, 0
	for y, line := range strings.Split(scr, "\n") {
		r := []rune(line)
		first, last := -1, -1
		for x, c := range r {
			if c == '▀' {
				if first < 0 {
					first = x
				}
				last = x
			}
		}
		if first < 0 || first < len(r)/3 { // no picture on this line (or in the form)
			continue
		}
		if top < 0 {
			top, left, cols = y, first, last-first+1
		}
		rows++
	}
	require.Greater(t, rows, 4, "the init image on screen:\n%s", scr)
	require.Greater(t, cols, 4, "the init image on screen:\n%s", scr)

	// SGR reports are 1-based: button 0 press "M", 32 = motion with the
	// left button held, release "m".
	at := func(cx, cy int) string { return fmt.Sprintf("%d;%d", left+cx+1, top+cy+1) }
	a := [2]int{cols / 4, rows / 4}
	b := [2]int{cols / 2, rows / 2}
	send("-l", "\x1b[<0;"+at(a[0], a[1])+"M")
	send("-l", "\x1b[<32;"+at((a[0]+b[0])/2, (a[1]+b[1])/2)+"M")
	send("-l", "\x1b[<32;"+at(b[0], b[1])+"M")
	send("-l", "\x1b[<0;"+at(b[0], b[1])+"m")
	send("Escape")
	saved := s.waitScreen("mask saved as", 10*time.Second)
	maskPath := filepath.Join(out, "photo_mask_0001.png")
	assert.Contains(t, saved, "photo_mask_0001.png", "the status names the mask")
	var maskLine string
	for _, line := range strings.Split(saved, "\n") {
		if strings.HasPrefix(line, "Mask      ") { // not "Mask blur"
			maskLine = line
		}
	}
	assert.Contains(t, maskLine, "0001.png", "the Mask field shows the saved mask")

	mf, err := os.Open(maskPath)
	require.NoError(t, err, "the mask PNG in the export folder; screen:\n%s", saved)
	defer mf.Close()
	mask, err := png.Decode(mf)
	require.NoError(t, err)
	require.Equal(t, image.Pt(64, 64), mask.Bounds().Size(), "the init image's size")
	white := func(x, y int) bool { r, _, _, _ := mask.At(x, y).RGBA(); return r == 0xffff }
	// The image pixel under a cell's centre: cells are 64/cols pixels
	// across and 64/(2 rows) a half-block row.
	under := func(c [2]int) (int, int) {
		return int((float64(c[0]) + 0.5) * 64 / float64(cols)), int((2*float64(c[1]) + 1) * 64 / float64(2*rows))
	}
	for _, c := range [][2]int{a, b} {
		x, y := under(c)
		assert.True(t, white(x, y), "painted cell %v (pixel %d,%d) is white", c, x, y)
	}
	n := 0
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			if white(x, y) {
				n++
			}
		}
	}
	assert.Greater(t, n, 1, "white pixels along the stroke")
	assert.Less(t, n, 64*64/4, "only the stroke is white")
	for _, c := range [][2]int{{0, 0}, {63, 63}, {63, 0}, {0, 63}} {
		assert.False(t, white(c[0], c[1]), "the unpainted corner %v is black", c)
	}
	return scr
}

// TestStudioFlags: bad flags fail before the terminal is touched.
func TestStudioFlags(t *testing.T) {
	for _, args := range [][]string{
		{"studio", "--out", filepath.Join(t.TempDir(), "missing")},
		{"studio", "stray"},
		{"--no-such-flag"},
	} {
		assert.NotEqual(t, 0, run(args), "stepwise %v exited 0", args)
	}
	assert.ErrorContains(t, runStudio([]string{"--out", filepath.Join(t.TempDir(), "missing")}), "not a folder", "--out missing")
}
