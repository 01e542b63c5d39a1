package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs fn on an OS thread of its own that has joined the network
// namespace at path (/proc/PID/ns/net, say), and returns fn's error. The
// thread is never given back to the runtime's pool: it exits when fn
// returns, so no other goroutine runs in the wrong namespace. The sockets
// and devices fn opens stay in the namespace and may be used from any
// goroutine.
func InNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the goroutine ends locked, so its thread
		// is destroyed.
		runtime.LockOSThread()
		errc <- joinAndRun(path, fn)
	}()
	return <-errc
}

func joinAndRun(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", path, err)
	}
	return fn()
}

// NamespacedCommand returns a command running args (via unshare(1)) as
// root of new user, network, mount and PID namespaces, with a /proc of its
// own and lo down: whatever it binds, mounts or starts is private to it
// and dies with it, and no packet it sends reaches the host's network.
func NamespacedCommand(ctx context.Context, args ...string) *exec.Cmd {
	unshare := []string{"--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc"}
	return exec.CommandContext(ctx, "unshare", append(unshare, args...)...)
}
