//go:build linux && cgo

package sandbox

import (
	"errors"
	"fmt"
	"os"

	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// ApplySeccomp installs the engine's allow-list filter (--enable-seccomp) on
// every thread of the process (TSYNC) and on every thread created later.
// Syscalls outside the list fail with EPERM (a few that runtimes probe with
// ENOSYS); the policy is in seccomp_rules.go. It also sets no_new_privs.
// Call it once, when the engine has made everything the filter forbids
// (unix sockets, listeners, files opened for writing); a second call fails,
// as the filter refuses seccomp(2) itself. Where a precompiled program
// exists (seccomp_bpf.go) it is loaded as is; otherwise libseccomp builds
// the same filter.
func ApplySeccomp() error {
	pid := os.Getpid()
	if enginePrecompiled != nil {
		err := loadPrecompiled(enginePrecompiled.instantiate(pid), true)
		if !errors.Is(err, errNoFastPath) {
			return err
		}
	}
	f, _, err := newEngineFilter(pid)
	if err != nil {
		return err
	}
	defer f.Release()
	if err := f.Load(); err != nil {
		return fmt.Errorf("seccomp: load filter: %w", err)
	}
	return nil
}

// Confine is what the engine calls once it holds everything it needs (the
// link fd, its listeners, its configuration) and before it reports ready:
// with enableSandbox it checks that the constructor entered the sandbox (the
// supervisor must have started it with SandboxEnv=1) and that Verify passes;
// with enableSeccomp it installs the filter. Any error means the engine must
// not run.
func Confine(enableSandbox, enableSeccomp bool) error {
	if enableSandbox {
		if !Active() {
			return errors.New("sandbox: --enable-sandbox was given but the engine did not enter the sandbox (" +
				SandboxEnv + "=1 missing from its environment?)")
		}
		if err := Verify(); err != nil {
			return err
		}
	}
	if enableSeccomp {
		return ApplySeccomp()
	}
	return nil
}

// ApplyLightSeccomp installs a deny-list filter for the supervisor and the
// helper: the syscalls in lightDenyNames (ptrace, mount, kexec, bpf, module
// loading...) fail with EPERM and everything else is allowed, so it costs
// nothing. Filters survive execve: call it only after the last engine that
// must still enter --enable-sandbox has been started.
func ApplyLightSeccomp() error {
	if lightPrecompiled != nil {
		err := loadPrecompiled(lightPrecompiled.instantiate(0), false)
		if !errors.Is(err, errNoFastPath) {
			return err
		}
	}
	f, err := newLightFilter()
	if err != nil {
		return err
	}
	defer f.Release()
	if err := f.Load(); err != nil {
		return fmt.Errorf("seccomp: load filter: %w", err)
	}
	return nil
}

// newLightFilter builds (without loading) ApplyLightSeccomp's filter.
func newLightFilter() (*seccomp.ScmpFilter, error) { return buildLightFilter(true) }

// buildLightFilter builds the light filter, laid out as a binary tree
// (useBinaryTree) or, for the tests that compare both, as libseccomp's
// default linear list.
func buildLightFilter(tree bool) (*seccomp.ScmpFilter, error) {
	f, err := seccomp.NewFilter(seccomp.ActAllow)
	if err != nil {
		return nil, fmt.Errorf("seccomp: new filter: %w", err)
	}
	if tree {
		useBinaryTree(f)
	}
	deny := seccomp.ActErrno.SetReturnCode(int16(unix.EPERM))
	for _, name := range lightDenyNames {
		if _, err := addRule(f, name, deny); err != nil {
			f.Release()
			return nil, err
		}
	}
	return f, nil
}

// useBinaryTree makes libseccomp lay the program out as a binary tree of
// syscall numbers instead of its default linear list: the same decisions
// (TestBinaryTreeFiltersDecideAlike) in ~8 comparisons instead of up to
// ~140 for the engine's allow-list. The kernel runs the program for every
// syscall number when it is loaded, to build its cache of always-allowed
// syscalls, and at every syscall that the cache does not cover. Loading
// (seccomp(2) CPU time, 200 interleaved loads in a Go process): the engine's
// filter 190 -> 94 us, the light filter 75 -> 42 us. A libseccomp before
// 2.5 lacks the attribute; the linear program it then builds decides the
// same.
func useBinaryTree(f *seccomp.ScmpFilter) {
	_ = f.SetOptimize(2)
}

// LibseccompVersion returns the version of the libseccomp the binary runs
// with, e.g. "2.5.4", for --version.
func LibseccompVersion() string {
	major, minor, micro := seccomp.GetLibraryVersion()
	return fmt.Sprintf("%d.%d.%d", major, minor, micro)
}

// newEngineFilter builds (without loading) the engine's filter for the
// native architecture plus extraArchs, and returns how many syscall names it
// allows on the native architecture.
func newEngineFilter(pid int, extraArchs ...seccomp.ScmpArch) (*seccomp.ScmpFilter, int, error) {
	f, err := seccomp.NewFilter(seccomp.ActErrno.SetReturnCode(int16(unix.EPERM)))
	if err != nil {
		return nil, 0, fmt.Errorf("seccomp: new filter: %w", err)
	}
	useBinaryTree(f)
	n, err := populateEngineFilter(f, pid, extraArchs)
	if err != nil {
		f.Release()
		return nil, 0, err
	}
	return f, n, nil
}

func populateEngineFilter(f *seccomp.ScmpFilter, pid int, extraArchs []seccomp.ScmpArch) (int, error) {
	// A syscall of another ABI (i386 int 0x80 or x32 on amd64, arm32 on
	// arm64) would bypass the rules: kill the process instead.
	if err := f.SetBadArchAction(seccomp.ActKillProcess); err != nil {
		return 0, fmt.Errorf("seccomp: set bad-arch action: %w", err)
	}
	for _, a := range extraArchs {
		if err := f.AddArch(a); err != nil {
			return 0, fmt.Errorf("seccomp: add arch %v: %w", a, err)
		}
	}
	count := 0
	for _, g := range allowGroups {
		for _, name := range g.names {
			ok, err := addRule(f, name, seccomp.ActAllow)
			if err != nil {
				return 0, fmt.Errorf("%w (group %q)", err, g.why)
			}
			if ok {
				count++
			}
		}
	}
	enosys := seccomp.ActErrno.SetReturnCode(int16(unix.ENOSYS))
	for _, name := range enosysNames {
		if _, err := addRule(f, name, enosys); err != nil {
			return 0, err
		}
	}
	for _, r := range conditionalRules(pid) {
		ok, err := addRule(f, r.name, seccomp.ActAllow, r.conds...)
		if err != nil {
			return 0, err
		}
		if ok && !r.more {
			count++
		}
	}
	return count, nil
}

// condRule is one conditional allow rule; several rules for the same
// syscall are ORed, the conditions of one rule ANDed. more marks the
// second and later rules of a syscall (so it is counted once).
type condRule struct {
	name  string
	conds []seccomp.ScmpCondition
	more  bool
}

// lo32 is the mask comparing the low 32 bits of an int argument only, so a
// caller that sign-extends (or not) a 32-bit value matches either way.
const lo32 = 0xffffffff

func eq32(arg uint, v uint64) seccomp.ScmpCondition {
	return cond(arg, seccomp.CompareMaskedEqual, lo32, v&lo32)
}

func cond(arg uint, op seccomp.ScmpCompareOp, v ...uint64) seccomp.ScmpCondition {
	c, err := seccomp.MakeCondition(arg, op, v...)
	if err != nil {
		// Only reachable with a bad table entry: a programming error.
		panic(fmt.Sprintf("seccomp condition: %v", err))
	}
	return c
}

// addRule adds action for name with conds. A name the native architecture
// lacks (e.g. "open" on arm64) is skipped and reported as not added.
func addRule(f *seccomp.ScmpFilter, name string, action seccomp.ScmpAction, conds ...seccomp.ScmpCondition) (bool, error) {
	nr, err := seccomp.GetSyscallFromName(name)
	if err != nil || nr < 0 {
		return false, nil
	}
	if len(conds) == 0 {
		err = f.AddRule(nr, action)
	} else {
		err = f.AddRuleConditional(nr, action, conds)
	}
	if err != nil {
		return false, fmt.Errorf("seccomp: rule for %s: %w", name, err)
	}
	return true, nil
}
