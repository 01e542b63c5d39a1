//go:build linux && cgo

package sandbox

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"go/format"
	"os"
	"runtime"
	"slices"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// regenerateEnv set to 1 makes TestPrecompiledFilters write
// precompiledFile from what libseccomp builds now (go generate).
const regenerateEnv = "SLIRP4NETNS_REGENERATE_SECCOMP"

// precompiledArch is the architecture programs are committed for, and
// precompiledFile their file.
const (
	precompiledArch = "amd64"
	precompiledFile = "seccomp_bpf_amd64.go"
)

// Two pids the engine filter is built with to find its pid slots: any
// instruction whose constant follows the pid is a slot, and nothing else
// may differ.
const (
	probePIDA = 0x2a5a5a
	probePIDB = 0x15a5a5
)

// TestPrecompiledFilters: the committed programs are exactly what
// libseccomp builds from seccomp_rules.go now, for the engine filter with
// several pids (every pid the kernel can hand out lies between 1 and
// 4194304) and for the light filter. With SLIRP4NETNS_REGENERATE_SECCOMP=1
// it rewrites the committed file instead.
func TestPrecompiledFilters(t *testing.T) {
	if runtime.GOARCH != precompiledArch {
		if enginePrecompiled != nil || lightPrecompiled != nil {
			t.Fatalf("precompiled programs on %s, where none are generated", runtime.GOARCH)
		}
		if os.Getenv(regenerateEnv) == "1" {
			t.Fatalf("programs are generated on %s only", precompiledArch)
		}
		return
	}
	if os.Getenv(regenerateEnv) == "1" {
		regenerate(t)
		return
	}
	if enginePrecompiled == nil || lightPrecompiled == nil {
		t.Fatal("no precompiled programs; run go generate ./sandbox")
	}
	for _, pid := range []int{1, 2, 300, os.Getpid(), 65535, 65536, 4194304, probePIDA} {
		want := libseccompProgram(t, engineFilterFor(pid))
		if got := enginePrecompiled.instantiate(pid); !slices.Equal(got, want) {
			t.Errorf("engine filter for pid %d: the committed program (%d instructions) differs from libseccomp's (%d): run go generate ./sandbox",
				pid, len(got), len(want))
		}
	}
	want := libseccompProgram(t, lightFilter)
	if got := lightPrecompiled.instantiate(0); !slices.Equal(got, want) {
		t.Errorf("light filter: the committed program (%d instructions) differs from libseccomp's (%d): run go generate ./sandbox",
			len(got), len(want))
	}
}

// TestInstantiate: instantiate patches only the pid slots, of a copy.
func TestInstantiate(t *testing.T) {
	p := &precompiledFilter{
		prog:     []unix.SockFilter{{Code: 1, K: 7}, {Code: 2, K: 0}, {Code: 3, K: 9}},
		pidSlots: []int{1},
	}
	got := p.instantiate(1234)
	want := []unix.SockFilter{{Code: 1, K: 7}, {Code: 2, K: 1234}, {Code: 3, K: 9}}
	if !slices.Equal(got, want) {
		t.Errorf("instantiate = %v, want %v", got, want)
	}
	if p.prog[1].K != 0 {
		t.Error("instantiate modified the template")
	}
}

func engineFilterFor(pid int) func() (*seccomp.ScmpFilter, error) {
	return func() (*seccomp.ScmpFilter, error) {
		f, _, err := newEngineFilter(pid)
		return f, err
	}
}

func lightFilter() (*seccomp.ScmpFilter, error) { return newLightFilter() }

// libseccompProgram builds a filter and returns the BPF program libseccomp
// generates for it (what Load would hand the kernel).
func libseccompProgram(t *testing.T, build func() (*seccomp.ScmpFilter, error)) []unix.SockFilter {
	t.Helper()
	f, err := build()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Release()
	out, err := os.CreateTemp(t.TempDir(), "bpf")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := f.ExportBPF(out); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	prog := make([]unix.SockFilter, len(raw)/8)
	if len(raw)%8 != 0 || len(prog) == 0 {
		t.Fatalf("exported program is %d bytes", len(raw))
	}
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, prog); err != nil {
		t.Fatal(err)
	}
	return prog
}

// pidSlots compares the engine programs built for probePIDA and probePIDB
// and returns the instructions that hold the pid.
func pidSlots(t *testing.T, a, b []unix.SockFilter) []int {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("the program's length depends on the pid: %d vs %d", len(a), len(b))
	}
	var slots []int
	for i := range a {
		x, y := a[i], b[i]
		x.K, y.K = 0, 0
		if x != y {
			t.Fatalf("instruction %d depends on the pid beyond its constant: %v vs %v", i, a[i], b[i])
		}
		switch {
		case a[i].K == b[i].K:
		case a[i].K == probePIDA && b[i].K == probePIDB:
			slots = append(slots, i)
		default:
			t.Fatalf("instruction %d's constant depends on the pid but is not the pid: %#x vs %#x", i, a[i].K, b[i].K)
		}
	}
	if len(slots) == 0 {
		t.Fatal("no instruction holds the pid; the kill/prlimit64 rules changed?")
	}
	return slots
}

// regenerate writes precompiledFile from libseccomp's programs.
func regenerate(t *testing.T) {
	a := libseccompProgram(t, engineFilterFor(probePIDA))
	slots := pidSlots(t, a, libseccompProgram(t, engineFilterFor(probePIDB)))
	for _, i := range slots {
		a[i].K = 0
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "// Code generated by TestPrecompiledFilters (go generate); DO NOT EDIT.\n\n")
	fmt.Fprintf(&b, "//go:build linux && cgo && %s\n\n", precompiledArch)
	fmt.Fprintf(&b, "package sandbox\n\nimport \"golang.org/x/sys/unix\"\n\n")
	fmt.Fprintf(&b, "// Built by libseccomp %s from seccomp_rules.go (seccomp_bpf.go).\n\n", LibseccompVersion())
	writeProgram(&b, "enginePrecompiled", "the engine's filter (ApplySeccomp); its pid goes into pidSlots", a, slots)
	writeProgram(&b, "lightPrecompiled", "the supervisor's and helper's filter (ApplyLightSeccomp)", libseccompProgram(t, lightFilter), nil)
	src, err := format.Source(b.Bytes())
	if err != nil {
		t.Fatalf("format generated source: %v", err)
	}
	if err := os.WriteFile(precompiledFile, src, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: engine %d instructions (%d pid slots), light %d", precompiledFile, len(a), len(slots),
		len(libseccompProgram(t, lightFilter)))
}

func writeProgram(b *bytes.Buffer, name, what string, prog []unix.SockFilter, slots []int) {
	fmt.Fprintf(b, "// %s is %s.\nvar %s = &precompiledFilter{\n", name, what, name)
	if len(slots) > 0 {
		fmt.Fprintf(b, "pidSlots: %#v,\n", slots)
	}
	b.WriteString("prog: []unix.SockFilter{\n")
	for _, in := range prog {
		fmt.Fprintf(b, "{Code: %#04x, Jt: %d, Jf: %d, K: %#08x},\n", in.Code, in.Jt, in.Jf, in.K)
	}
	b.WriteString("},\n}\n\n")
}
