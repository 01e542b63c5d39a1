//go:build linux && cgo

package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// treePID is the pid the programs compared by TestBinaryTreeFiltersDecideAlike
// are built for.
const treePID = 4242

// TestBinaryTreeFiltersDecideAlike: the filters are built as binary trees
// (SetOptimize(2)) because the kernel runs the program for every syscall
// number when it is loaded; the tree must decide exactly as libseccomp's
// default linear program for the same rules. Both are run by a classic
// BPF interpreter over every syscall number of the native ABI, the x32
// range and a foreign architecture, each with zero arguments and with
// deterministic pseudo-random arguments drawn from the constants the
// programs compare with (so that every conditional rule is hit, matching
// and not).
func TestBinaryTreeFiltersDecideAlike(t *testing.T) {
	cases := []struct {
		name         string
		tree, linear func() (*seccomp.ScmpFilter, error)
	}{
		{"engine", engineFilterFor(treePID), func() (*seccomp.ScmpFilter, error) { return linearEngineFilter(treePID) }},
		{"light", lightFilter, linearLightFilter},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tree := libseccompProgram(t, c.tree)
			linear := libseccompProgram(t, c.linear)
			if slices.Equal(tree, linear) {
				t.Fatal("the tree program is the linear one: SetOptimize(2) had no effect")
			}
			consts := programConstants(tree, linear)
			rng := rand.New(rand.NewPCG(1, 2))
			native := nativeAuditArch()
			checked := 0
			for _, arch := range []uint32{native, unix.AUDIT_ARCH_I386} {
				for _, base := range []uint32{0, 0x40000000} { // x32 numbers on amd64
					for nr := base; nr < base+512; nr++ {
						for i := range 40 {
							var d seccompData
							d.nr, d.arch = nr, arch
							if i > 0 {
								for a := range d.args {
									d.args[a] = randomArg(rng, consts)
								}
							}
							got, err := runBPF(tree, &d)
							if err != nil {
								t.Fatalf("tree program: %v", err)
							}
							want, err := runBPF(linear, &d)
							if err != nil {
								t.Fatalf("linear program: %v", err)
							}
							if got != want {
								t.Fatalf("arch %#x nr %d args %#x: tree returns %#x, linear %#x", arch, nr, d.args, got, want)
							}
							checked++
						}
					}
				}
			}
			t.Logf("%d syscalls decided alike (%d vs %d instructions)", checked, len(tree), len(linear))
		})
	}
}

// linearEngineFilter is newEngineFilter with libseccomp's default program
// layout.
func linearEngineFilter(pid int) (*seccomp.ScmpFilter, error) {
	f, err := seccomp.NewFilter(seccomp.ActErrno.SetReturnCode(int16(unix.EPERM)))
	if err != nil {
		return nil, err
	}
	if _, err := populateEngineFilter(f, pid, nil); err != nil {
		f.Release()
		return nil, err
	}
	return f, nil
}

// linearLightFilter is newLightFilter with libseccomp's default layout.
func linearLightFilter() (*seccomp.ScmpFilter, error) { return buildLightFilter(false) }

func nativeAuditArch() uint32 {
	arch, err := seccomp.GetNativeArch()
	if err != nil {
		return unix.AUDIT_ARCH_X86_64
	}
	switch arch {
	case seccomp.ArchARM64:
		return unix.AUDIT_ARCH_AARCH64
	default:
		return unix.AUDIT_ARCH_X86_64
	}
}

// programConstants collects the constants the programs compare with, and
// neighbours of them, as candidate argument halves.
func programConstants(progs ...[]unix.SockFilter) []uint32 {
	seen := map[uint32]bool{0: true, 0xffffffff: true}
	for _, p := range progs {
		for _, ins := range p {
			if ins.Code&0x07 == unix.BPF_JMP || ins.Code&0x07 == unix.BPF_ALU {
				seen[ins.K], seen[ins.K+1], seen[ins.K-1], seen[^ins.K] = true, true, true, true
			}
		}
	}
	out := make([]uint32, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out) // map order is random: a reproducible sequence
	return out
}

// randomArg draws a 64-bit argument whose halves are program constants,
// zero or random bits.
func randomArg(rng *rand.Rand, consts []uint32) uint64 {
	half := func() uint32 {
		switch rng.IntN(4) {
		case 0:
			return 0
		case 1:
			return rng.Uint32()
		default:
			return consts[rng.IntN(len(consts))]
		}
	}
	hi := uint32(0)
	if rng.IntN(4) == 0 {
		hi = half()
	}
	return uint64(hi)<<32 | uint64(half())
}

// seccompData is struct seccomp_data.
type seccompData struct {
	nr, arch uint32
	ip       uint64
	args     [6]uint64
}

func (d *seccompData) word(off uint32) (uint32, bool) {
	var b [64]byte
	binary.NativeEndian.PutUint32(b[0:], d.nr)
	binary.NativeEndian.PutUint32(b[4:], d.arch)
	binary.NativeEndian.PutUint64(b[8:], d.ip)
	for i, a := range d.args {
		binary.NativeEndian.PutUint64(b[16+8*i:], a)
	}
	if off%4 != 0 || off+4 > uint32(len(b)) {
		return 0, false
	}
	return binary.NativeEndian.Uint32(b[off:]), true
}

// runBPF interprets a seccomp classic BPF program (the instructions the
// kernel accepts in seccomp filters) and returns its verdict.
func runBPF(prog []unix.SockFilter, d *seccompData) (uint32, error) {
	var a, x uint32
	var mem [16]uint32
	for pc, steps := 0, 0; pc < len(prog) && steps < 1<<16; steps++ {
		ins := prog[pc]
		pc++
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			v, ok := d.word(ins.K)
			if !ok {
				return 0, errBadInsn(pc-1, ins)
			}
			a = v
		case unix.BPF_LD | unix.BPF_IMM:
			a = ins.K
		case unix.BPF_LDX | unix.BPF_IMM:
			x = ins.K
		case unix.BPF_LD | unix.BPF_MEM:
			a = mem[ins.K&15]
		case unix.BPF_LDX | unix.BPF_MEM:
			x = mem[ins.K&15]
		case unix.BPF_ST:
			mem[ins.K&15] = a
		case unix.BPF_STX:
			mem[ins.K&15] = x
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			a &= ins.K
		case unix.BPF_ALU | unix.BPF_OR | unix.BPF_K:
			a |= ins.K
		case unix.BPF_MISC | unix.BPF_TAX:
			x = a
		case unix.BPF_MISC | unix.BPF_TXA:
			a = x
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(ins.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			pc += jump(a == ins.K, ins)
		case unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K:
			pc += jump(a > ins.K, ins)
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			pc += jump(a >= ins.K, ins)
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			pc += jump(a&ins.K != 0, ins)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_X:
			pc += jump(a == x, ins)
		case unix.BPF_JMP | unix.BPF_JGT | unix.BPF_X:
			pc += jump(a > x, ins)
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_X:
			pc += jump(a >= x, ins)
		case unix.BPF_RET | unix.BPF_K:
			return ins.K, nil
		case unix.BPF_RET | unix.BPF_A:
			return a, nil
		default:
			return 0, errBadInsn(pc-1, ins)
		}
	}
	return 0, errFellOff
}

func jump(cond bool, ins unix.SockFilter) int {
	if cond {
		return int(ins.Jt)
	}
	return int(ins.Jf)
}

var errFellOff = errors.New("program ended without a verdict")

func errBadInsn(pc int, ins unix.SockFilter) error {
	return fmt.Errorf("instruction %d not interpreted: code %#x", pc, ins.Code)
}
