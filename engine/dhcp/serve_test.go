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
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

func v4(a string, bits int) tcpip.ProtocolAddress {
	return tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{
		Address: tcpip.AddrFrom4(netip.MustParseAddr(a).As4()), PrefixLen: bits}}
}

// TestServeUdhcpc runs busybox udhcpc on a real TAP in a namespace the test
// creates, against the server on a gVisor stack attached to that TAP.
func TestServeUdhcpc(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	tap := newNetnsTap(t)
	s := newTapStack(t, tap, 1500, v4("10.0.2.2", 24), v4("10.0.2.3", 24))
	plan := testPlan(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, s, 1, plan, Options{MTU: 1400}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
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
		tap.run(t, 30*time.Second, "busybox", "udhcpc", "-i", "tap0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-O", "mtu", "-s", script)
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
	tap := newNetnsTap(t)
	s := newTapStack(t, tap, 1500, v4("10.0.2.2", 24), v4("10.0.2.3", 24))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, s, 1, testPlan(t), Options{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	tap.run(t, 5*time.Second, "ip", "addr", "add", "10.0.2.15/24", "dev", "tap0")
	var conn *net.UDPConn
	var err error
	tap.do(func() { // Unbound address: the NAK comes broadcast.
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: clientPort})
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
func tapMAC(t *testing.T, tap *netnsTap) [6]byte {
	t.Helper()
	var mac [6]byte
	var err error
	tap.do(func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName("tap0"); err == nil {
			copy(mac[:], ifi.HardwareAddr)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func TestServeBindError(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	tap := newNetnsTap(t)
	s := newTapStack(t, tap, 1500)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Serve(ctx, s, 99, testPlan(t), Options{}); err == nil {
		t.Fatal("Serve on a NIC that does not exist succeeded")
	}
}
