package helper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// errNoInProcess says the TAP cannot be opened from this process (setns
// refused): the re-executed helper process does it instead.
var errNoInProcess = errors.New("cannot join the network namespace from this process")

// needsUserns reports whether joining userns (nil: none asked for) means
// leaving our own user namespace, which only a single-threaded process can
// do (the helper's constructor, before the Go runtime starts).
func needsUserns(userns *os.File) bool {
	if userns == nil {
		return false
	}
	var target, self unix.Stat_t
	if unix.Fstat(int(userns.Fd()), &target) != nil || unix.Stat("/proc/self/ns/user", &self) != nil {
		return true
	}
	return target.Dev != self.Dev || target.Ino != self.Ino
}

// openInProcess opens (and configures) the TAP from a thread of this
// process that joins the target's network namespace: joining only a
// network namespace is allowed to one thread of a multi-threaded process
// (DESIGN.md), and it saves re-executing the helper, a third of the
// start-up time. When the thread cannot come back to our own network
// namespace (rootless podman: our netns is the host's, owned by a user
// namespace we have no capabilities in) it is discarded, but only if
// mayDiscard says that is safe (Request.ThreadMayExit). It returns
// errNoInProcess when the helper process must do the work instead.
func openInProcess(netns *os.File, cfg proto.HelperConfig, mayDiscard bool, stderr io.Writer) (*os.File, proto.TapInfo, error) {
	rejoin := canRejoinOwnNetns()
	if !rejoin && !mayDiscard {
		return nil, proto.TapInfo{}, errNoInProcess
	}
	tap, info, err := onSpareThread(!rejoin, func() (*os.File, proto.TapInfo, error) {
		return inNetns(netns, func() (*os.File, proto.TapInfo, error) {
			return openAndConfigure(cfg, stderr)
		})
	})
	if err != nil && !errors.Is(err, errNoInProcess) {
		// The same prefix as errors reported by the helper process.
		err = fmt.Errorf("helper: %w", err)
	}
	return tap, info, err
}

type tapResult struct {
	tap  *os.File
	info proto.TapInfo
	err  error
}

// onSpareThread runs fn on a new goroutine and waits for it. fn may leave
// its thread locked (see inNetns), and the runtime then terminates that
// thread when the goroutine ends (runtime.LockOSThread) — except the main
// thread, which the runtime cannot end and wedges instead (runtime.mexit:
// "This is the main thread. Just wedge it."), so it would stay in the
// target's namespace for our lifetime. With notMain, a goroutine that finds
// itself on the main thread keeps it locked while a further goroutine,
// which therefore runs on another thread, calls fn.
func onSpareThread(notMain bool, fn func() (*os.File, proto.TapInfo, error)) (*os.File, proto.TapInfo, error) {
	ch := make(chan tapResult, 1)
	go func() {
		if notMain {
			runtime.LockOSThread()
			if unix.Gettid() == unix.Getpid() {
				tap, info, err := onSpareThread(true, fn)
				runtime.UnlockOSThread()
				ch <- tapResult{tap, info, err}
				return
			}
			// fn locks the thread again: the count must drop to zero for
			// the thread to go back to the pool.
			defer runtime.UnlockOSThread()
		}
		tap, info, err := fn()
		ch <- tapResult{tap, info, err}
	}()
	r := <-ch
	return r.tap, r.info, r.err
}

// inNetns runs fn on this goroutine's thread while it is in netns. If the
// thread cannot be returned to its own namespace it stays locked, so the
// runtime terminates it when the goroutine ends instead of reusing it.
//
// Locking first also starts the runtime's template thread (if it is not
// running yet) while this thread is still in a known-good state: from a
// locked thread the runtime never clones new threads itself but asks the
// template thread to (runtime.newm), so no thread is ever created in the
// target's namespace. Children started with Pdeathsig from this thread
// would be killed when it ends: fn starts none, and no other goroutine can
// run on a locked thread.
func inNetns(netns *os.File, fn func() (*os.File, proto.TapInfo, error)) (*os.File, proto.TapInfo, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, proto.TapInfo{}, errNoInProcess
	}
	defer orig.Close()
	if err := unix.Setns(int(netns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, proto.TapInfo{}, errNoInProcess
	}
	tap, info, err := fn()
	if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
		runtime.UnlockOSThread()
	}
	return tap, info, err
}

// openAndConfigure is the helper's work once inside the network namespace,
// in the helper process or on a thread of the supervisor.
func openAndConfigure(cfg proto.HelperConfig, stderr io.Writer) (*os.File, proto.TapInfo, error) {
	tap, info, err := openTap(cfg.TapName, !cfg.DisableOffload)
	if err != nil {
		return nil, proto.TapInfo{}, err
	}
	if cfg.Configure {
		if err := configure(info.Name, cfg, stderr); err != nil {
			tap.Close()
			return nil, proto.TapInfo{}, err
		}
	}
	return tap, info, nil
}

// canRejoinOwnNetns reports whether a thread that leaves our network
// namespace can come back: only with CAP_SYS_ADMIN in the user namespace
// that owns it. Rootless podman runs us in its user namespace while our
// network namespace is the host's: there the thread cannot return and must
// be discarded, which would also fire the parent-death signal of any child
// started from it (prctl(2): the "parent" is the creating thread).
func canRejoinOwnNetns() bool {
	netns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return false
	}
	defer netns.Close()
	owner, err := unix.IoctlRetInt(int(netns.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		return false
	}
	defer unix.Close(owner)
	var own, self unix.Stat_t
	if unix.Fstat(owner, &own) != nil || unix.Stat("/proc/self/ns/user", &self) != nil ||
		own.Dev != self.Dev || own.Ino != self.Ino {
		return false
	}
	return hasCapSysAdmin()
}

// hasCapSysAdmin reports whether CAP_SYS_ADMIN is in our effective set.
func hasCapSysAdmin() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[unix.CAP_SYS_ADMIN/32].Effective&(1<<(unix.CAP_SYS_ADMIN%32)) != 0
}
