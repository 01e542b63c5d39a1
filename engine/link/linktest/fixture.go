package linktest

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Tap is a plain TAP device (IFF_TAP|IFF_NO_PI, no virtio-net header) in a
// fresh network namespace of its own, made for one test: the guest side
// that a server attached to FD talks to.
type Tap struct {
	*Netns
	// Name is the TAP's name inside the namespace.
	Name string
	// FD is the TAP's fd, in blocking mode.
	FD int
}

// NewTap creates a network namespace (lo up) holding the TAP name, which
// it leaves down so that the test chooses when the guest kernel starts
// talking. Both are closed at tb's cleanup; any error fails tb.
func NewTap(tb testing.TB, name string) *Tap {
	tb.Helper()
	ns, err := NewNetns()
	if err != nil {
		tb.Fatalf("new netns: %v", err)
	}
	fd := -1
	err = ns.Do(func() error {
		var err error
		fd, err = OpenTap(TapOptions{Name: name})
		return err
	})
	if err != nil {
		ns.Close()
		tb.Fatalf("open TAP in the new netns: %v", err)
	}
	tb.Cleanup(func() {
		unix.Close(fd)
		ns.Close()
	})
	return &Tap{Netns: ns, Name: name, FD: fd}
}

// AttachStack attaches a stack made by NewTestStack to the TAP through
// gVisor's fdbased endpoint, which answers as mac. Its cleanup runs
// before the TAP's (cleanups run last-in first-out), so the stack lets go
// of the fd before it is closed.
func (t *Tap) AttachStack(tb testing.TB, mtu uint32, mac tcpip.LinkAddress, addrs ...netip.Prefix) *stack.Stack {
	tb.Helper()
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{t.FD}, MTU: mtu, EthernetHeader: true, Address: mac})
	if err != nil {
		tb.Fatalf("fdbased endpoint on %s: %v", t.Name, err)
	}
	return NewTestStack(tb, ep, addrs...)
}

// NewTestStack is NewStack (with default options) for a test: any error
// fails tb, and tb's cleanup removes the NIC (stopping ep's dispatcher)
// and destroys the stack.
func NewTestStack(tb testing.TB, ep stack.LinkEndpoint, addrs ...netip.Prefix) *stack.Stack {
	tb.Helper()
	s, err := NewStack(ep, StackOptions{}, addrs...)
	if err != nil {
		tb.Fatalf("new stack: %v", err)
	}
	tb.Cleanup(func() {
		_ = s.RemoveNIC(1)
		s.Destroy()
	})
	return s
}

// Run runs the command args inside the namespace (through nsenter), for
// at most timeout, and returns its combined output. A failure fails tb.
func (n *Netns) Run(tb testing.TB, timeout time.Duration, args ...string) string {
	tb.Helper()
	out, err := n.TryRun(timeout, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TryRun is Run for a command that may fail: it returns the error, with
// the command and its output, instead of failing the test.
func (n *Netns) TryRun(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nsArgs := append([]string{"--net=" + n.Path(), "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", nsArgs...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
