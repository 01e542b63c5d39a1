// Package packaging tests what a distribution packages: "make install" and
// "make uninstall" with DESTDIR and PREFIX, the man page and the shell
// completions it installs, and "go install" of the module.
package packaging

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
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

// debFiles are the files the package installs, with their modes.
var debFiles = map[string]fs.FileMode{
	"usr/bin/slirp4netns":                               0o755,
	"usr/share/man/man1/slirp4netns.1.gz":               0o644,
	"usr/share/bash-completion/completions/slirp4netns": 0o644,
	"usr/share/zsh/vendor-completions/_slirp4netns":     0o644,
	"usr/share/doc/slirp4netns-go/copyright":            0o644,
}

// TestMakeDeb: make deb builds a Debian package (nfpm, packaging/nfpm.yaml)
// whose contents (dpkg-deb -c) are the binary, the man page, the two
// completions and the license, with the right modes; whose control fields
// give our version and stand in for Debian's slirp4netns; and whose
// binary and man page work once extracted.
func TestMakeDeb(t *testing.T) {
	if !makeHasTarget(t, "deb") {
		t.Fatal("the Makefile has no deb target")
	}
	out := t.TempDir()
	bin := filepath.Join(t.TempDir(), "slirp4netns")
	runMake(t, "deb", "BIN="+bin, "DEBDIR="+out, "DEBSTAGE="+filepath.Join(t.TempDir(), "stage"))
	debs, _ := filepath.Glob(filepath.Join(out, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %q, want one .deb", debs)
	}
	deb := debs[0]
	checkDebContents(t, deb)

	version := binaryVersion(t, bin)
	want := map[string]string{
		"Package":      "slirp4netns-go",
		"Version":      version,
		"Architecture": runtimeArch(t),
		"Provides":     "slirp4netns (= " + version + ")",
		"Conflicts":    "slirp4netns",
		"Replaces":     "slirp4netns",
	}
	for field, v := range want {
		if got := dpkgField(t, deb, field); got != v {
			t.Errorf("%s: %q, want %q", field, got, v)
		}
	}
	if deps := dpkgField(t, deb, "Depends"); !strings.Contains(deps, "libseccomp2") || !strings.Contains(deps, "libc6") {
		t.Errorf("Depends: %q, want libc6 and libseccomp2", deps)
	}
	if want := filepath.Base(deb); want != fmt.Sprintf("slirp4netns-go_%s_%s.deb", version, runtimeArch(t)) {
		t.Errorf("package file name %s", want)
	}

	root := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	if got := binaryVersion(t, filepath.Join(root, "usr/bin/slirp4netns")); got != version {
		t.Errorf("packaged binary's version %q, want %q", got, version)
	}
	renderMan(t, filepath.Join(root, "usr/share/man/man1/slirp4netns.1.gz"))
}

// checkDebContents compares dpkg-deb -c with debFiles.
func checkDebContents(t *testing.T, deb string) {
	t.Helper()
	listing, err := exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -c %s: %v", deb, err)
	}
	var files []string
	for line := range strings.Lines(string(listing)) {
		// drwxr-xr-x root/root 0 2026-01-01 00:00 ./usr/
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		name := strings.TrimPrefix(f[5], "./")
		files = append(files, name)
		if owner := f[1]; owner != "root/root" {
			t.Errorf("%s owned by %s, want root/root", name, owner)
		}
		if want, ok := debFiles[name]; ok && f[0] != "-"+want.String()[1:] {
			t.Errorf("%s: mode %s, want %v", name, f[0], want)
		}
	}
	slices.Sort(files)
	if want := slices.Sorted(maps.Keys(debFiles)); !slices.Equal(files, want) {
		t.Errorf("package holds %q, want %q\n%s", files, want, listing)
	}
}

// makeHasTarget reports whether the repository's Makefile defines target.
func makeHasTarget(t *testing.T, target string) bool {
	t.Helper()
	mk := readRepo(t, "Makefile")
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).MatchString(mk)
}

// binaryVersion is the version on the first line of bin --version.
func binaryVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	v, ok := strings.CutPrefix(first, "slirp4netns version ")
	if !ok {
		t.Fatalf("%s --version: %q", bin, out)
	}
	return v
}

// dpkgField is one control field of a package file.
func dpkgField(t *testing.T, deb, field string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
	if err != nil {
		t.Fatalf("dpkg-deb -f %s %s: %v", deb, field, err)
	}
	return strings.TrimSpace(string(out))
}

// runtimeArch is Debian's name for the architecture we build for.
func runtimeArch(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatalf("dpkg --print-architecture: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// modulePath is the module's import path (go.mod).
const modulePath = "github.com/slirp4netns-go/slirp4netns"

// TestGoInstallAtVersion: "go install MODULE/cmd/slirp4netns@VERSION", the
// way users install a Go command, builds a working binary. The module is
// not published, so the test serves the repository's files (tracked and
// new ones, as git lists them) from a file:// module proxy under a version
// made from their content; dependencies come from the module cache or the
// usual proxy. It catches what "go install ./cmd/slirp4netns" in the
// checkout cannot: replace directives, files the module zip leaves out.
func TestGoInstallAtVersion(t *testing.T) {
	proxy := t.TempDir()
	version := writeModuleProxy(t, proxy)
	t.Cleanup(func() { removeFromModCache(t, modulePath, version) })
	gobin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", modulePath+"/cmd/slirp4netns@"+version)
	cmd.Dir = t.TempDir() // outside the module: the proxy's copy is built
	fallback, err := exec.Command("go", "env", "GOPROXY").Output()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=1", "GOFLAGS=", "GOWORK=off",
		"GOPROXY=file://"+proxy+","+strings.TrimSpace(string(fallback)), "GONOSUMDB="+modulePath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s@%s: %v\n%s", modulePath, version, err, out)
	}
	out, err := exec.Command(filepath.Join(gobin, "slirp4netns"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "libseccomp: ") {
		t.Errorf("installed binary --version: %q, %v", out, err)
	}
}

// writeModuleProxy lays out a file:// module proxy serving the repository
// as modulePath at a version derived from the files' content, and returns
// that version.
func writeModuleProxy(t *testing.T, proxy string) string {
	t.Helper()
	list, err := exec.Command("git", "-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	var files []string
	for _, f := range strings.Split(string(list), "\x00") {
		if st, err := os.Lstat(filepath.Join(repo, f)); f != "" && err == nil && st.Mode().IsRegular() {
			files = append(files, f)
		}
	}
	slices.Sort(files)
	sum := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(repo, f))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(sum, "%s %d\n", f, len(b))
		sum.Write(b)
	}
	// A prerelease named by the content: the shared module cache keeps
	// what it extracted, so a version must never stand for two contents.
	version := fmt.Sprintf("v0.0.0-test.%x", sum.Sum(nil)[:6])
	dir := filepath.Join(proxy, modulePath, "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gomod := readRepo(t, "go.mod")
	info := fmt.Sprintf(`{"Version":%q,"Time":"2026-01-01T00:00:00Z"}`, version)
	for name, content := range map[string]string{"list": version + "\n", version + ".info": info, version + ".mod": gomod} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeModuleZip(t, filepath.Join(dir, version+".zip"), modulePath+"@"+version, files)
	return version
}

// writeModuleZip writes the module zip: every file under "path@version/".
func writeModuleZip(t *testing.T, zipPath, prefix string, files []string) {
	t.Helper()
	f, err := os.Create(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	for _, name := range files {
		b, err := os.ReadFile(filepath.Join(repo, name))
		if err != nil {
			t.Fatal(err)
		}
		w, err := zw.Create(prefix + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// removeFromModCache deletes what the go command stored for path@version in
// the module cache (the extracted tree is read-only), so that test
// versions do not pile up there.
func removeFromModCache(t *testing.T, path, version string) {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Errorf("go env GOMODCACHE: %v", err)
		return
	}
	cache := strings.TrimSpace(string(out))
	tree := filepath.Join(cache, path+"@"+version)
	_ = filepath.WalkDir(tree, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(tree); err != nil {
		t.Errorf("remove %s: %v", tree, err)
	}
	dl, _ := filepath.Glob(filepath.Join(cache, "cache", "download", path, "@v", version+".*"))
	for _, f := range dl {
		if err := os.Remove(f); err != nil {
			t.Errorf("remove %s: %v", f, err)
		}
	}
}
