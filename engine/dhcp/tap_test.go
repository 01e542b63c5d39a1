package dhcp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// gatewayMAC is the MAC of the stack's side of the test TAP.
const gatewayMAC = tcpip.LinkAddress("\x52\x55\x0a\x00\x02\x02")

// netnsTap is a TAP device "tap0" inside a network namespace the test
// created. The namespace is held by one locked OS thread, which exits (and
// with it the namespace) at cleanup; nothing is left on the host.
type netnsTap struct {
	fd     int
	nsPath string
	calls  chan func() // run on the namespace's thread
}

// newNetnsTap creates a network namespace and a TAP (IFF_TAP|IFF_NO_PI) in
// it, brings the TAP and lo up, and registers cleanups.
func newNetnsTap(t *testing.T) *netnsTap {
	t.Helper()
	type result struct {
		tap *netnsTap
		err error
	}
	ready := make(chan result, 1)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		// Never unlocked: the thread is in another namespace, so the
		// runtime must destroy it when this goroutine ends.
		runtime.LockOSThread()
		tap, err := tapInNewNetns()
		ready <- result{tap, err}
		if err != nil {
			return
		}
		for {
			select {
			case f := <-tap.calls:
				f()
			case <-done:
				return
			}
		}
	}()
	r := <-ready
	if r.err != nil {
		t.Fatalf("create TAP in a new netns: %v", r.err)
	}
	t.Cleanup(func() {
		unix.Close(r.tap.fd)
		close(done)
		<-exited
	})
	for _, args := range [][]string{{"ip", "link", "set", "lo", "up"}, {"ip", "link", "set", "tap0", "up"}} {
		r.tap.run(t, 10*time.Second, args...)
	}
	return r.tap
}

func tapInNewNetns() (*netnsTap, error) {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("unshare net: %w", err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq("tap0")
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	return &netnsTap{
		fd:     fd,
		nsPath: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid()),
		calls:  make(chan func()),
	}, nil
}

// do runs f on the thread that is in the namespace (sockets it creates
// belong to the namespace and may be used from anywhere afterwards).
func (n *netnsTap) do(f func()) {
	finished := make(chan struct{})
	n.calls <- func() { defer close(finished); f() }
	<-finished
}

// run runs a command inside the namespace and returns its output.
func (n *netnsTap) run(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.nsPath, "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newTapStack attaches a gVisor stack to the TAP as the engine does:
// promiscuous, spoofing, with the given addresses ("10.0.2.2/24", ...).
func newTapStack(t *testing.T, tap *netnsTap, mtu uint32, addrs ...tcpip.ProtocolAddress) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{tap.fd}, MTU: mtu, EthernetHeader: true, Address: gatewayMAC})
	if err != nil {
		t.Fatalf("fdbased: %v", err)
	}
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("create NIC: %v", err)
	}
	// Registered after the TAP's cleanup, so it runs before the fd closes.
	t.Cleanup(func() {
		_ = s.RemoveNIC(1)
		s.Close()
		s.Wait()
	})
	if err := s.SetPromiscuousMode(1, true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSpoofing(1, true); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if err := s.AddProtocolAddress(1, a, stack.AddressProperties{}); err != nil {
			t.Fatalf("add %v: %v", a, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: 1},
		{Destination: header.IPv6EmptySubnet, NIC: 1},
	})
	return s
}
