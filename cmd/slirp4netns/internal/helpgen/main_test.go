package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/supervisor"
)

// TestHeaderFresh fails when the committed fasthelp.h is not what the Go
// definitions render: run `go generate ./cmd/slirp4netns`.
func TestHeaderFresh(t *testing.T) {
	path := filepath.Join("..", "..", "fasthelp.h")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := header(); !bytes.Equal(got, want) {
		t.Errorf("%s is stale; run `go generate ./cmd/slirp4netns`. It should be:\n%s", path, want)
	}
}

// TestFormsAreHelp: every argument list the fast path answers is one the
// Go parser answers with the usage text alone (no warning, no error, no
// other option), whether or not POSIXLY_CORRECT is set.
func TestFormsAreHelp(t *testing.T) {
	t.Setenv("POSIXLY_CORRECT", "") // restores the caller's value afterwards
	os.Unsetenv("POSIXLY_CORRECT")
	checkFormsAreHelp(t, "without POSIXLY_CORRECT")
	os.Setenv("POSIXLY_CORRECT", "1")
	checkFormsAreHelp(t, "with POSIXLY_CORRECT")
}

func checkFormsAreHelp(t *testing.T, env string) {
	t.Helper()
	for _, form := range HelpForms {
		opts, err := supervisor.ParseArgs([]string{form})
		if err != nil || !opts.Help || opts.Version || len(opts.Warnings) != 0 {
			t.Errorf("ParseArgs(%q) %s = help %v, version %v, warnings %q, %v; want help alone",
				form, env, opts.Help, opts.Version, opts.Warnings, err)
		}
	}
}

// TestCString: the escapes keep every byte and never form a trigraph or
// an escape that runs into the next character.
func TestCString(t *testing.T) {
	for in, want := range map[string]string{
		"a\tb\n":     `"a\tb\n"`,
		`"\`:         `"\"\\"`,
		"??=":        `"\077\077="`,
		"\x01" + "7": `"\0017"`,
		"é":          `"\303\251"`,
	} {
		if got := cString(in); got != want {
			t.Errorf("cString(%q) = %s, want %s", in, got, want)
		}
	}
}
