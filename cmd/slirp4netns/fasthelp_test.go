//go:build cgo

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/supervisor"
)

// goPathEnv makes the re-executed test binary choose its mode as main does.
// The test binary links fasthelp.c too, so an argument list of one help
// form is answered by the fast path before TestMain runs; the same form
// given twice reaches the Go path (ParseArgs stops at the first).
const goPathEnv = "FASTHELP_TEST_GO_PATH"

// childModeStatus is the exit status of the re-executed test binary when
// main would have run a child mode.
const childModeStatus = 3

func TestMain(m *testing.M) {
	if os.Getenv(goPathEnv) == "1" {
		switch os.Getenv(supervisor.ModeEnv) {
		case supervisor.ModeHelper, supervisor.ModeEngine:
			fmt.Fprintln(os.Stderr, "child mode")
			os.Exit(childModeStatus)
		}
		os.Exit(supervisor.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// helpForms returns the forms fasthelp.h lists (internal/helpgen.HelpForms,
// whose test proves them help for the Go parser).
func helpForms(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("fasthelp.h")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "fasthelp_forms[] = {")
	block, _, ok2 := strings.Cut(block, "};")
	if !ok || !ok2 {
		t.Fatal("fasthelp.h has no fasthelp_forms block")
	}
	var forms []string
	for _, l := range strings.Fields(block) {
		f, err := strconv.Unquote(strings.TrimSuffix(l, ","))
		if err != nil {
			t.Fatalf("fasthelp.h form %s: %v", l, err)
		}
		forms = append(forms, f)
	}
	if len(forms) == 0 {
		t.Fatal("fasthelp.h lists no form")
	}
	return forms
}

// result is what a run of the test binary showed.
type result struct {
	stdout, stderr string
	status         string // "exit N" or "signal S"
}

// run describes one run of the test binary.
type run struct {
	args []string
	env  []string // added to ours, with goPathEnv=1
	// stdout is a pipe unless: "closed-pipe" (its read end is closed),
	// "full" (/dev/full), "closed" (fd 1 closed).
	stdout string
	// ignorePipe leaves SIGPIPE ignored in the child, as a caller may.
	ignorePipe bool
}

func runSelf(t *testing.T, r run) result {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// sh execs the binary with the dispositions and descriptors asked for.
	script := `exec "$0" "$@"`
	if r.ignorePipe {
		script = `trap '' PIPE; ` + script
	}
	switch r.stdout {
	case "full":
		script += " >/dev/full"
	case "closed":
		script += " >&-"
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, self}, r.args...)...)
	cmd.Env = append(append(os.Environ(), goPathEnv+"=1"), r.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if r.stdout == "closed-pipe" {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pr.Close()
		defer pw.Close()
		cmd.Stdout = pw
	}
	err = cmd.Run()
	res := result{stdout: out.String(), stderr: errb.String(), status: "exit 0"}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			res.status = "signal " + ws.Signal().String()
		} else {
			res.status = fmt.Sprintf("exit %d", ws.ExitStatus())
		}
	case err != nil:
		t.Fatal(err)
	}
	return res
}

func usageText() string {
	var b bytes.Buffer
	supervisor.PrintUsage(&b)
	return b.String()
}

// TestFastHelp: for each help form the fast path prints
// supervisor.PrintUsage's text and behaves as the Go path does, also when
// stdout fails: exit 0 after any write error but EPIPE, which kills with
// SIGPIPE even when SIGPIPE is ignored (the Go runtime's rule for fd 1).
func TestFastHelp(t *testing.T) {
	want := map[string]result{
		"pipe":        {stdout: usageText(), status: "exit 0"},
		"closed-pipe": {status: "signal broken pipe"},
		"full":        {status: "exit 0"},
		"closed":      {status: "exit 0"},
	}
	for _, form := range helpForms(t) {
		for _, stdout := range []string{"pipe", "closed-pipe", "full", "closed"} {
			for _, ignore := range []bool{false, true} {
				fast := runSelf(t, run{args: []string{form}, stdout: stdout, ignorePipe: ignore})
				slow := runSelf(t, run{args: []string{form, form}, stdout: stdout, ignorePipe: ignore})
				if fast != want[stdout] || slow != want[stdout] {
					t.Errorf("%s, stdout %s, SIGPIPE ignored %v: fast path %+v, Go path %+v, want %+v",
						form, stdout, ignore, fast, slow, want[stdout])
				}
			}
		}
	}
}

// TestFastHelpLeavesOthers: other argument lists, and a help form in a
// child mode, reach Go.
func TestFastHelpLeavesOthers(t *testing.T) {
	usage := usageText()
	for _, tc := range []struct {
		r    run
		want result
	}{
		{run{args: []string{"--helpx"}}, result{usage, "slirp4netns: unrecognized option '--helpx'\n", "exit 1"}},
		{run{args: []string{"--help=1"}}, result{usage, "slirp4netns: option '--help' doesn't allow an argument\n", "exit 1"}},
		{run{args: []string{"-6", "--help"}}, result{"WARNING: Support for IPv6 is experimental\n" + usage, "", "exit 0"}},
		{run{args: []string{"--help"}, env: []string{supervisor.ModeEnv + "=" + supervisor.ModeEngine}}, result{"", "child mode\n", "exit 3"}},
	} {
		if got := runSelf(t, tc.r); got != tc.want {
			t.Errorf("%q %q: %+v, want %+v", tc.r.env, tc.r.args, got, tc.want)
		}
	}
	// In the helper mode the helper's own constructor may end the process
	// before TestMain; either way, not with the usage text.
	r := run{args: []string{"--help"}, env: []string{supervisor.ModeEnv + "=" + supervisor.ModeHelper}}
	if got := runSelf(t, r); got.stdout != "" || got.status == "exit 0" {
		t.Errorf("helper mode, --help: %+v; want no usage text and a failure", got)
	}
}
