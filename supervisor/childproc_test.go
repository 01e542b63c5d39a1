package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStartChild: the child gets what os/exec gave the engine (stdin and
// stdout on /dev/null, the extra file as fd 3, the environment given,
// a process group of its own) and its stderr reaches a writer that is not
// a file; kill reaps it.
func TestStartChild(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var stderr bytes.Buffer
	// The shell's own descriptors are looked at once it has become sleep
	// (the same process), which closes fd 3 and so ends the report.
	script := `echo "$FOO" >&3; echo $$ >&3; echo to-stderr >&2; exec sleep 30 3>&-`
	p, err := startChild("/bin/sh", []string{"sh", "-c", script}, []string{"FOO=bar"}, w, &stderr)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer p.kill()
	var lines []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 2 || lines[0] != "bar" || lines[1] != strconv.Itoa(p.pid) {
		t.Fatalf("child reported %q, want [bar %d]", lines, p.pid)
	}
	fd := func(n int) string {
		l, err := os.Readlink("/proc/" + lines[1] + "/fd/" + strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if in, out := fd(0), fd(1); in != os.DevNull || out != os.DevNull {
		t.Errorf("stdin %q, stdout %q; want %s", in, out, os.DevNull)
	}
	stat, err := os.ReadFile("/proc/" + lines[1] + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's closing parenthesis: state ppid pgrp.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 3 || f[2] != lines[1] {
		t.Errorf("child's process group %v, want its own (%s)", f[2:3], lines[1])
	}
	p.kill()
	if err := unix.Kill(p.pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("after kill, kill(%d, 0) = %v; want ESRCH (reaped)", p.pid, err)
	}
	if got := stderr.String(); got != "to-stderr\n" {
		t.Errorf("stderr %q, want %q", got, "to-stderr\n")
	}
}

// TestStartChildExecError: a child that cannot be executed is reported as
// os/exec reports it.
func TestStartChildExecError(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	_, err = startChild("/nonexistent/engine", []string{"x"}, nil, w, os.Stderr)
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "fork/exec" || !errors.Is(err, syscall.ENOENT) ||
		!strings.HasPrefix(err.Error(), "fork/exec /nonexistent/engine: ") {
		t.Errorf("startChild of a missing file: %v; want fork/exec /nonexistent/engine: ENOENT", err)
	}
}
