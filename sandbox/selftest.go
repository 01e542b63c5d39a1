//go:build linux && cgo

package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// forbiddenAction is one thing a compromised engine must not be able to do.
// try returns nil when the action succeeded (and undoes it if it can).
type forbiddenAction struct {
	name string
	try  func() error
}

// SelfTest tries, from inside the engine, each action the sandbox and the
// seccomp filter must forbid, and writes one line per action to w:
// "DENIED <action>: <error>" or "ALLOWED <action>". It also writes "INFO"
// lines: the effective capabilities, the first line of /etc/resolv.conf, the
// resolv.conf target bound from outside /etc and /run ("-" if none), whether
// the sandbox made its own user namespace and its Landlock ABI (0: none).
// It returns an error naming the actions that were allowed.
func SelfTest(w io.Writer) error {
	var allowed []string
	for _, a := range forbiddenActions() {
		if err := a.try(); err != nil {
			fmt.Fprintf(w, "%s %s: %v\n", selfTestDenied, a.name, err)
			continue
		}
		fmt.Fprintf(w, "%s %s\n", selfTestAllowed, a.name)
		allowed = append(allowed, a.name)
	}
	if eff, err := CapEff(); err != nil {
		fmt.Fprintf(w, "%s capeff: %v\n", selfTestInfo, err)
	} else {
		fmt.Fprintf(w, "%s capeff %#x\n", selfTestInfo, eff)
	}
	fmt.Fprintf(w, "%s resolv.conf %s\n", selfTestInfo, ResolvFirstLine())
	target := ResolvTarget()
	if target == "" {
		target = "-"
	}
	fmt.Fprintf(w, "%s resolv-target %s\n", selfTestInfo, target)
	fmt.Fprintf(w, "%s own-userns %v\n", selfTestInfo, OwnUserNamespace())
	fmt.Fprintf(w, "%s landlock-abi %d\n", selfTestInfo, LandlockABI())
	if len(allowed) > 0 {
		return fmt.Errorf("sandbox self-test: allowed: %s", strings.Join(allowed, ", "))
	}
	return nil
}

// ResolvFirstLine returns the first line of /etc/resolv.conf, or a
// description of the error reading it.
func ResolvFirstLine() string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return "error: " + err.Error()
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return string(line)
}

func forbiddenActions() []forbiddenAction {
	ppid := os.Getppid()
	abstract := os.Getenv(SelfTestAbstractEnv)
	if abstract == "" {
		abstract = "@slirp4netns-selftest"
	}
	actions := []forbiddenAction{
		{"execve /bin/true", func() error {
			return unix.Exec("/bin/true", []string{"true"}, os.Environ())
		}},
		{"ptrace attach parent", func() error { return ptraceAttach(ppid) }},
		{"mount tmpfs", tryMount},
		{"unshare CLONE_NEWNET", tryUnshareNet},
		{"clone CLONE_NEWUSER", tryCloneUserns},
		{"kill parent signal 0", func() error { return unix.Kill(ppid, 0) }},
		{"read /proc/" + strconv.Itoa(ppid) + "/environ", func() error {
			_, err := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/environ")
			return err
		}},
		{"connect AF_UNIX " + abstract, func() error { return connectUnix(abstract) }},
		{"ioctl TIOCSTI on stderr", tryTIOCSTI},
		{"open /etc/resolv.conf for writing", func() error {
			return closeFD(unix.Open("/etc/resolv.conf", unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0))
		}},
	}
	for _, p := range splitList(os.Getenv(SelfTestFilesEnv)) {
		actions = append(actions, forbiddenAction{"open " + p, func() error {
			return closeFD(unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0))
		}})
	}
	return actions
}

// splitList splits a ':'-separated list, dropping empty elements.
func splitList(list string) []string {
	var out []string
	for _, p := range strings.Split(list, ":") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// connectUnix connects a unix stream socket to name ("@..." for an abstract
// one); the host's abstract sockets are reachable from the host network
// namespace the engine stays in.
func connectUnix(name string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: name})
}

func closeFD(fd int, err error) error {
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// ptraceAttach attaches to pid and, if that worked, detaches at once (from
// the same thread, as ptrace requires).
func ptraceAttach(pid int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceAttach(pid); err != nil {
		return err
	}
	_ = unix.PtraceDetach(pid)
	return nil
}

// tryMount mounts a tmpfs and, if that worked, detaches it again. In the
// sandbox the target is /etc (the engine's own mount namespace, so even a
// success never reaches the host); outside it, a fresh empty directory, so
// that a filter that failed to deny mount hides nothing of the host.
func tryMount() error {
	target := "/etc"
	if !Active() {
		dir, err := os.MkdirTemp("", "slirp4netns-selftest")
		if err != nil {
			return fmt.Errorf("mkdir for the mount target: %w", err)
		}
		defer os.Remove(dir)
		target = dir
	}
	if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_RDONLY, ""); err != nil {
		return err
	}
	_ = unix.Unmount(target, unix.MNT_DETACH)
	return nil
}

// tryTIOCSTI pushes a character into the input queue of the terminal behind
// stderr, which would type commands into the user's shell.
func tryTIOCSTI() error {
	c := byte('\n')
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, 2, unix.TIOCSTI, uintptr(unsafe.Pointer(&c)))
	if errno != 0 {
		return errno
	}
	return nil
}

// tryCloneUserns starts a process in a new user namespace, which would give
// it every capability again there. The process execs a path that does not
// exist, so ENOENT means the clone (and the namespace) succeeded.
func tryCloneUserns() error {
	_, err := syscall.ForkExec("/nonexistent-slirp4netns-selftest", []string{"x"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER},
	})
	if err == nil || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

// tryUnshareNet moves a throwaway thread to a new network namespace. The
// goroutine stays locked to its thread so that, on success, the runtime
// destroys that thread rather than reusing it.
func tryUnshareNet() error {
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		res <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	return <-res
}
