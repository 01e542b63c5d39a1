package engine

import (
	"context"
	"log"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// guestMAC is the test guest's link address.
const guestMAC = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x64")

// testConfig is a default configuration (10.0.2.0/24, IPv6 on).
func testConfig() policy.Config {
	return policy.Config{MTU: 1500, CIDR: policy.DefaultCIDR, EnableIPv6: true}
}

// wire joins two channel endpoints: what one side writes the other
// receives, asynchronously, like a TAP between two kernels.
type wire struct {
	a, b   *channel.Endpoint
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newWire(mtu uint32, addrA, addrB tcpip.LinkAddress) *wire {
	ctx, cancel := context.WithCancel(context.Background())
	w := &wire{a: channel.New(wireQueue, mtu, addrA), b: channel.New(wireQueue, mtu, addrB), cancel: cancel}
	w.a.LinkEPCapabilities = stack.CapabilityResolutionRequired
	w.b.LinkEPCapabilities = stack.CapabilityResolutionRequired
	w.wg.Add(2)
	go w.move(ctx, w.a, w.b)
	go w.move(ctx, w.b, w.a)
	return w
}

func (w *wire) move(ctx context.Context, from, to *channel.Endpoint) {
	defer w.wg.Done()
	for {
		pkt := from.ReadContext(ctx)
		if pkt == nil {
			return
		}
		in := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: pkt.ToBuffer()})
		to.InjectInbound(pkt.NetworkProtocolNumber, in)
		in.DecRef()
		pkt.DecRef()
	}
}

func (w *wire) close() {
	w.cancel()
	w.wg.Wait()
}

// testBed is an engine and a guest stack joined by a wire.
type testBed struct {
	eng   *Engine
	guest *stack.Stack
	w     *wire
}

// newTestBed starts an engine (without services unless opts say otherwise)
// and a guest stack at 10.0.2.100 (and fd00::100) routing via the gateway.
func newTestBed(t testing.TB, cfg policy.Config, opts ...Option) *testBed {
	t.Helper()
	w := newWire(uint32(cfg.MTU), GatewayMAC, guestMAC)
	opts = append([]Option{WithoutServices()}, opts...)
	eng, err := New(cfg, w.a, opts...)
	if err != nil {
		w.close()
		t.Fatalf("New: %v", err)
	}
	g := newGuestStack(t, w.b, eng.Plan())
	tb := &testBed{eng: eng, guest: g, w: w}
	t.Cleanup(tb.close)
	return tb
}

func (tb *testBed) close() {
	tb.guest.Close()
	tb.guest.Wait()
	tb.eng.Close()
	tb.w.close()
}

func newGuestStack(t testing.TB, ep stack.LinkEndpoint, plan policy.Plan) *stack.Stack {
	t.Helper()
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	if err := s.CreateNIC(1, ep); err != nil {
		t.Fatalf("guest CreateNIC: %s", err)
	}
	for _, a := range []netip.Prefix{netip.PrefixFrom(plan.Guest, plan.Network.Bits()), netip.PrefixFrom(plan.Guest6, 64)} {
		pa := tcpip.ProtocolAddress{Protocol: protoOf(a.Addr()), AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpAddr(a.Addr()), PrefixLen: a.Bits()}}
		if err := s.AddProtocolAddress(1, pa, stack.AddressProperties{}); err != nil {
			t.Fatalf("guest address: %s", err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, Gateway: tcpAddr(plan.Gateway), NIC: 1},
		{Destination: header.IPv6EmptySubnet, Gateway: tcpAddr(plan.Gateway6), NIC: 1},
	})
	return s
}

// dialTCP connects from the guest to dst.
func (tb *testBed) dialTCP(ctx context.Context, dst netip.AddrPort) (*gonet.TCPConn, error) {
	return gonet.DialContextTCP(ctx, tb.guest, tcpip.FullAddress{NIC: 1, Addr: tcpAddr(dst.Addr()), Port: dst.Port()}, protoOf(dst.Addr()))
}

// dialUDP opens a guest UDP socket connected to dst.
func (tb *testBed) dialUDP(dst netip.AddrPort) (*gonet.UDPConn, error) {
	return gonet.DialUDP(tb.guest, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpAddr(dst.Addr()), Port: dst.Port()}, protoOf(dst.Addr()))
}

// eventually polls cond until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testLogger logs through t.
func testLogger(t testing.TB) *log.Logger {
	return log.New(testWriter{t}, "engine: ", 0)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// policy4Only is testConfig without IPv6.
func policy4Only() policy.Config {
	c := testConfig()
	c.EnableIPv6 = false
	return c
}

// wireQueue is the packet queue of each wire direction; a full queue drops,
// like a TAP's.
var wireQueue = 1024
