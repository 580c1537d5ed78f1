// Command stepwise is a terminal studio for diffusion models: with no
// subcommand it starts the studio; subcommands generate images, describe
// checkpoints and show how prompts are tokenized.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stepwise/stepwise/internal/termsafe"
	"github.com/stepwise/stepwise/tui"
)

// command is one subcommand. Files of this package register theirs in init.
type command struct {
	name    string
	summary string
	run     func(args []string) error
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

// errUsage marks an error whose message already explains the correct usage.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:]))
}

// reportURL is where crashes are reported.
const reportURL = "https://github.com/stepwise/stepwise/issues"

// printCrash tells the user that stepwise crashed, where to report it, and
// the trace to include.
func printCrash(w io.Writer, what, stack string) {
	fmt.Fprintf(w, "\nstepwise crashed: %s\nPlease report it at %s (the Stepwise issue tracker) with this trace:\n\n", what, reportURL)
	if stack != "" {
		fmt.Fprintln(w, stack)
	}
}

func run(args []string) (code int) {
	// A panic on this goroutine outside the studio (the studio catches its
	// own and restores the terminal first) ends here.
	defer func() {
		if p := recover(); p != nil {
			printCrash(os.Stderr, fmt.Sprint(p), string(debug.Stack()))
			code = 2
		}
	}()
	name := "studio"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage()
		return 0
	}
	if name == "studio" && len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			// The top level's help lists the subcommands too.
			usage()
			fmt.Fprintln(os.Stderr, "\nThe studio's flags ('stepwise studio -h'):")
			commands["studio"].run([]string{"-h"})
			return 0
		case "-version", "--version":
			fmt.Println(versionString())
			return 0
		}
	}
	if name == "version" {
		fmt.Println(versionString())
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "stepwise: unknown command %q\n\n", name)
		usage()
		return 2
	}
	if err := c.run(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var crash *tui.CrashError
		if errors.As(err, &crash) {
			printCrash(os.Stderr, crash.Error(), crash.Stack)
			return 2
		}
		// A command stopped by a signal exits with 128+signal, as shells
		// expect (SIGTERM used to exit 0 from the studio).
		var sig interface{ ExitCode() int }
		if errors.As(err, &sig) {
			fmt.Fprintf(os.Stderr, "stepwise %s: %s\n", name, termsafe.Text(err.Error()))
			return sig.ExitCode()
		}
		// Errors quote file names and contents: escape what a terminal obeys.
		fmt.Fprintf(os.Stderr, "stepwise %s: %s\n", name, termsafe.Text(err.Error()))
		return 1
	}
	return 0
}

// signalError is a command's error after a signal stopped it.
type signalError struct {
	sig syscall.Signal
	err error // what the command said, if anything
}

func (e *signalError) Error() string {
	if e.err == nil {
		return "stopped by " + signalName(e.sig)
	}
	return e.err.Error() + " (stopped by " + signalName(e.sig) + ")"
}

func (e *signalError) Unwrap() error { return e.err }

// ExitCode is 128 + the signal's number.
func (e *signalError) ExitCode() int { return 128 + int(e.sig) }

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.String()
}

// stopGrace is how long a command may take to stop after a signal before
// it is ended anyway (a GL dispatch cannot be interrupted).
const stopGrace = 2 * time.Second

// onSignal calls stop at the first SIGINT, SIGTERM or SIGHUP and returns a
// function reporting which signal came (0: none). Should the process still
// run stopGrace later, it exits with 128+signal.
func onSignal(name string, stop func()) func() syscall.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	var got atomic.Int32
	go func() {
		s := (<-ch).(syscall.Signal)
		got.Store(int32(s))
		stop()
		time.AfterFunc(stopGrace, func() {
			fmt.Fprintf(os.Stderr, "stepwise %s: stopped by %s; nothing written\n", name, signalName(s))
			os.Exit(128 + int(s))
		})
	}()
	return func() syscall.Signal { return syscall.Signal(got.Load()) }
}

// versionString is the module version and VCS revision the binary was
// built from, as the Go toolchain recorded them.
func versionString() string {
	v, rev, dirty := "(devel)", "", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+modified"
				}
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return fmt.Sprintf("stepwise %s %s%s", v, rev, dirty)
	}
	return "stepwise " + v
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: stepwise [command] [flags]")
	fmt.Fprintln(os.Stderr, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "  %-10s %s\n", "version", "print the version (also --version)")
	fmt.Fprintln(os.Stderr, "\nRun 'stepwise COMMAND -h' for a command's flags.")
}
