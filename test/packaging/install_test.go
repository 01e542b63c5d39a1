// Package packaging tests what a distribution packages: "make install" and
// "make uninstall" with DESTDIR and PREFIX, the man page and the shell
// completions it installs, and "go install" of the module.
package packaging

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// repo is the repository root, from this package's directory.
const repo = "../.."

// buildTimeout bounds one build (make install or go install).
const buildTimeout = 5 * time.Minute

// installed are the files "make install PREFIX=/usr" puts under DESTDIR,
// with their modes.
var installed = map[string]fs.FileMode{
	"usr/bin/slirp4netns":                               0o755,
	"usr/share/man/man1/slirp4netns.1":                  0o644,
	"usr/share/bash-completion/completions/slirp4netns": 0o644,
	"usr/share/zsh/site-functions/_slirp4netns":         0o644,
}

// TestMakeInstall: make install PREFIX=/usr DESTDIR=... installs the binary,
// the man page and the completions with the right modes, the installed
// binary runs, and make uninstall removes every file again.
func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	// BIN outside the checkout, so that the test does not replace the
	// bin/slirp4netns other runs use.
	bin := filepath.Join(t.TempDir(), "slirp4netns")
	runMake(t, "install", "PREFIX=/usr", "DESTDIR="+dest, "BIN="+bin)
	var got []string
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		got = append(got, rel)
		st, err := d.Info()
		if err != nil {
			return err
		}
		if want, ok := installed[rel]; ok && st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", rel, st.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(maps.Keys(installed))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("installed %q, want %q", got, want)
	}
	out, err := exec.Command(filepath.Join(dest, "usr/bin/slirp4netns"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "slirp4netns version ") {
		t.Errorf("installed binary --version: %q, %v", out, err)
	}
	renderMan(t, filepath.Join(dest, "usr/share/man/man1/slirp4netns.1"))

	runMake(t, "uninstall", "PREFIX=/usr", "DESTDIR="+dest)
	for rel := range installed {
		if _, err := os.Lstat(filepath.Join(dest, rel)); err == nil {
			t.Errorf("%s still there after make uninstall", rel)
		}
	}
}

// runMake runs make in the repository and fails the test if it fails.
func runMake(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append([]string{"--no-print-directory", "-C", repo}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %q: %v\n%s", args, err, out)
	}
}

// renderMan renders a man page with man -l and fails on any warning.
func renderMan(t *testing.T, page string) {
	t.Helper()
	cmd := exec.Command("man", "-l", page)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=0", "LC_ALL=C.UTF-8", "MANPAGER=cat", "PAGER=cat")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Errorf("man -l %s: %v\n%s", page, err, stderr.String())
	}
	out = regexp.MustCompile(".\x08").ReplaceAll(out, nil) // overstrike bold and underline
	if !bytes.Contains(out, []byte("SYNOPSIS")) || !bytes.Contains(out, []byte("--netns-type")) {
		t.Errorf("man -l %s rendered no synopsis or options:\n%s", page, out)
	}
}

// goInstall builds the command with "go install" into a temporary GOBIN
// and returns the binary.
func goInstall(t *testing.T) string {
	t.Helper()
	gobin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "./cmd/slirp4netns")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install ./cmd/slirp4netns: %v\n%s", err, out)
	}
	return filepath.Join(gobin, "slirp4netns")
}

// TestGoInstall: go install of the module builds a working binary whose
// only shared library besides the C library is libseccomp (as the README
// says).
func TestGoInstall(t *testing.T) {
	bin := goInstall(t)
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "libseccomp: ") {
		t.Fatalf("%s --version: %q, %v", bin, out, err)
	}
	ldd, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("ldd %s: %v\n%s", bin, err, ldd)
	}
	for line := range strings.Lines(string(ldd)) {
		lib := strings.Fields(line)
		if len(lib) == 0 {
			continue
		}
		name := filepath.Base(lib[0])
		if !slices.ContainsFunc([]string{"linux-vdso.so", "libc.so", "ld-linux", "libseccomp.so"}, func(p string) bool {
			return strings.HasPrefix(name, p)
		}) {
			t.Errorf("unexpected shared library %q (ldd: %s)", name, ldd)
		}
	}
}

// longOptions lists the long options of slirp4netns --help.
func longOptions(t *testing.T, bin string) []string {
	t.Helper()
	out, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --help: %v\n%s", bin, err, out)
	}
	opts := regexp.MustCompile(`--[a-z0-9-]+`).FindAllString(string(out), -1)
	slices.Sort(opts)
	opts = slices.Compact(opts)
	if len(opts) < 15 {
		t.Fatalf("only %d long options in --help: %q", len(opts), opts)
	}
	return opts
}

// TestDocsCoverOptions: the man page and both completions name every
// option of --help, and the man page documents the tapfd type and our
// differences from the C version.
func TestDocsCoverOptions(t *testing.T) {
	bin := goInstall(t)
	man := readRepo(t, "docs/slirp4netns.1")
	bash := readRepo(t, "contrib/completions/bash/slirp4netns")
	zsh := readRepo(t, "contrib/completions/zsh/_slirp4netns")
	for _, o := range longOptions(t, bin) {
		if !strings.Contains(man, strings.ReplaceAll(o, "-", `\-`)) {
			t.Errorf("man page does not document %s", o)
		}
		if !strings.Contains(bash, o) {
			t.Errorf("bash completion lacks %s", o)
		}
		if !strings.Contains(zsh, o) {
			t.Errorf("zsh completion lacks %s", o)
		}
	}
	for _, s := range []string{`\-\-netns\-type=tapfd`, "list_hostfwd", "SIGTERM", "TAPNAME", "BESS", "fd00::/64", "libseccomp"} {
		if !strings.Contains(man, s) {
			t.Errorf("man page does not mention %s", s)
		}
	}
	renderMan(t, filepath.Join(repo, "docs/slirp4netns.1"))
}

func readRepo(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBashCompletion: with bash-completion loaded, the completion offers the
// option names, the --netns-type and --target-type values and tap0.
func TestBashCompletion(t *testing.T) {
	const lib = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(lib); err != nil {
		t.Fatalf("bash-completion (scripts/install-deps installs it): %v", err)
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"--netns"}, "--netns-type="},
		{[]string{"--netns-type", ""}, "pid path tapfd"},
		{[]string{"--target-type", ""}, "netns bess"},
		{[]string{"--enable-s"}, "--enable-sandbox --enable-seccomp"},
		{[]string{"-c", "1234", ""}, "tap0"},
	} {
		words := append([]string{"slirp4netns"}, tc.words...)
		script := fmt.Sprintf(`source %s
source %s/contrib/completions/bash/slirp4netns
COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
_slirp4netns slirp4netns "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
echo "${COMPREPLY[*]}"`, lib, repo, shellQuote(words), len(words)-1)
		out, err := exec.Command("bash", "-c", script).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("complete %q: %q, %v; want %q", tc.words, got, err, tc.want)
		}
	}
}

// TestZshCompletionSyntax: zsh parses the completion function.
func TestZshCompletionSyntax(t *testing.T) {
	out, err := exec.Command("zsh", "-n", filepath.Join(repo, "contrib/completions/zsh/_slirp4netns")).CombinedOutput()
	if err != nil {
		t.Errorf("zsh -n: %v\n%s", err, out)
	}
}

func shellQuote(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
