package dhcp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
)

// gatewayMAC is the MAC of the stack's side of the test TAP.
const gatewayMAC = tcpip.LinkAddress("\x52\x55\x0a\x00\x02\x02")

// gatewayAddrs are the stack's addresses: the gateway and the DNS server.
var gatewayAddrs = []netip.Prefix{netip.MustParsePrefix("10.0.2.2/24"), netip.MustParsePrefix("10.0.2.3/24")}

// newGuest makes a guest namespace holding tap0, up, and a gVisor stack
// with addrs attached to the TAP, as the engine's is.
func newGuest(t *testing.T, addrs ...netip.Prefix) (*linktest.Tap, *stack.Stack) {
	t.Helper()
	tap := linktest.NewTap(t, "tap0")
	tap.Run(t, 10*time.Second, "ip", "link", "set", "tap0", "up")
	return tap, tap.AttachStack(t, 1500, gatewayMAC, addrs...)
}

// TestServeUdhcpc runs busybox udhcpc on a real TAP in a namespace the test
// creates, against the server on a gVisor stack attached to that TAP.
func TestServeUdhcpc(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	tap, s := newGuest(t, gatewayAddrs...)
	plan := testutil.DefaultPlan(t)
	testutil.ServeUntilCleanup(t, "Serve", func(ctx context.Context) error {
		return Serve(ctx, s, 1, plan, Options{MTU: 1400})
	})

	dir := t.TempDir()
	out := filepath.Join(dir, "lease")
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte(`#!/bin/sh
if [ "$1" = bound ]; then
	echo "ip=$ip subnet=$subnet router=$router dns=$dns mtu=$mtu lease=$lease serverid=$serverid" >> `+out+`
fi
`), 0o755); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second run must get the same address (same MAC)
		tap.Run(t, 30*time.Second, "busybox", "udhcpc", "-i", "tap0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-O", "mtu", "-s", script)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("udhcpc script never ran for a lease: %v", err)
	}
	want := "ip=10.0.2.15 subnet=255.255.255.0 router=10.0.2.2 dns=10.0.2.3 mtu=1400 lease=86400 serverid=10.0.2.2\n"
	if string(got) != want+want {
		t.Fatalf("udhcpc saw\n%s\nwant twice\n%s", got, want)
	}
}

// TestServeRenewUnicast sends a renewal from a configured guest to the
// gateway address (unicast) and expects a unicast ACK: the path of a
// RENEWING client, not covered by udhcpc -q.
func TestServeRenewUnicast(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	tap, s := newGuest(t, gatewayAddrs...)
	plan := testutil.DefaultPlan(t)
	testutil.ServeUntilCleanup(t, "Serve", func(ctx context.Context) error {
		return Serve(ctx, s, 1, plan, Options{})
	})
	tap.Run(t, 5*time.Second, "ip", "addr", "add", "10.0.2.15/24", "dev", "tap0")
	var conn *net.UDPConn
	var err error
	err = tap.Do(func() error { // Unbound address: the NAK comes broadcast.
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: clientPort})
		return err
	})
	if err != nil {
		t.Fatalf("listen in the guest namespace: %v", err)
	}
	defer conn.Close()
	mac := tapMAC(t, tap)
	server := &net.UDPAddr{IP: net.IPv4(10, 0, 2, 2), Port: serverPort}
	for _, tc := range []struct {
		ciaddr   string
		wantType byte
	}{
		{"10.0.2.15", typeAck},
		{"10.0.2.100", typeNak}, // not a pool address
	} {
		req := newReq(mac, typeRequest, withCiaddr(tc.ciaddr))
		req.flags = 0
		var rep *message
		for range 20 { // the first tries may race with the server's bind
			if _, err := conn.WriteToUDP(req.encode(), server); err != nil {
				t.Fatalf("send renewal: %v", err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
			buf := make([]byte, 1500)
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				continue
			}
			if from.String() != "10.0.2.2:67" {
				t.Fatalf("reply from %v, want the gateway 10.0.2.2:67", from)
			}
			if rep, err = parseMessage(buf[:n]); err != nil {
				t.Fatalf("reply: %v", err)
			}
			break
		}
		if rep == nil || rep.msgType() != tc.wantType || rep.xid != req.xid {
			t.Fatalf("renewal of %s: reply %+v, want type %d", tc.ciaddr, rep, tc.wantType)
		}
	}
}

// tapMAC returns the guest side's MAC address.
func tapMAC(t *testing.T, tap *linktest.Tap) [6]byte {
	t.Helper()
	var mac [6]byte
	err := tap.Do(func() error {
		ifi, err := net.InterfaceByName(tap.Name)
		if err == nil {
			copy(mac[:], ifi.HardwareAddr)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func TestServeBindError(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	_, s := newGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Serve(ctx, s, 99, testutil.DefaultPlan(t), Options{}); err == nil {
		t.Fatal("Serve on a NIC that does not exist succeeded")
	}
}
