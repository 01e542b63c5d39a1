package main

import (
	"os/exec"
	"strings"
	"testing"
)

// heavyPackages are packages the binary must not link. Every one of our
// processes ends up with nearly all of the binary's code resident (the
// kernel maps whole large page-cache folios), so code that no process runs
// still costs RSS in each of them; these ones came in once through a DNS
// library and added ~1.2 MB (docs/benchmarks.md, "Where the memory goes").
var heavyPackages = []string{
	"github.com/miekg/dns",
	"crypto/tls",
	"crypto/x509",
	"crypto/rsa",
	"crypto/ecdsa",
	"net/http",
	"runtime/pprof",
}

func TestNoHeavyDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	if !deps["github.com/slirp4netns-go/slirp4netns/engine"] {
		t.Fatalf("go list -deps did not list the engine: %q", out)
	}
	for _, p := range heavyPackages {
		if deps[p] {
			t.Errorf("the binary links %s; see heavyPackages", p)
		}
	}
}
