package engine

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// maxDatagram is the largest UDP payload relayed (the IPv4 maximum).
const maxDatagram = 65535

// dnsPort gets the shorter idle timeout: a DNS exchange is one round trip.
const dnsPort = 53

// Receive buffers of the flows' gVisor endpoints, which queue the guest's
// datagrams between the link reader (which delivers them inline) and the
// flow's copy goroutine. gVisor's default, 212 KiB, holds ~3.5 ms of a
// 500 Mbit/s stream of 1400-byte datagrams; a copy goroutine kept off a CPU
// longer than that on a busy machine made the endpoint drop (netbench
// "UDP guest->host @500M" lost 0.6-4.4 % where the C slirp4netns, which
// sends synchronously, lost 0.2 %; TestUDPGuestBurstNotDroppedByFlowEndpoint
// shows the drops in gVisor's UDP.ReceiveBufferErrors). The first
// udpBigFlows live flows get udpBigRcvBuf; later ones keep the default, so
// the table's worst case grows by at most udpBigFlows*udpBigRcvBuf (32 MiB
// of payload; gVisor counts payload only, and each queued datagram also pins
// its link buffer, 2 KiB for a 1400-byte one) however many flows exist. The
// buffer is a limit, not an allocation: idle flows cost nothing extra.
const (
	udpBigRcvBuf = 1 << 20
	udpBigFlows  = 32
)

// udpNAT turns each guest UDP flow (guest addr:port → dst:port) into a
// connected host UDP socket, until the flow has been idle for a while.
type udpNAT struct {
	e *Engine

	mu     sync.Mutex
	closed bool
	flows  map[stack.TransportEndpointID]*udpFlow
	big    int // live flows holding a udpBigRcvBuf receive buffer
}

// udpFlow is one guest UDP flow and its host socket.
type udpFlow struct {
	id    stack.TransportEndpointID
	guest *gonet.UDPConn
	host  *net.UDPConn
	idle  time.Duration
	last  atomicTime
	once  sync.Once
	big   bool // holds one of the udpBigFlows big receive buffers
}

func newUDPNAT(e *Engine) *udpNAT {
	u := &udpNAT{e: e, flows: make(map[stack.TransportEndpointID]*udpFlow)}
	fwd := udp.NewForwarder(e.stack, u.handle)
	e.stack.SetTransportProtocolHandler(udp.ProtocolNumber, fwd.HandlePacket)
	return u
}

// handle is called in the packet path for the first datagram of a flow (no
// endpoint matched it). Returning false makes the stack answer with ICMP
// port unreachable, which is what a refused destination deserves.
func (u *udpNAT) handle(r *udp.ForwarderRequest) bool {
	id := r.ID()
	target, err := policy.OutboundTarget(u.e.plan, u.e.cfg, netipAddr(id.LocalAddress))
	if err != nil {
		return false
	}
	u.mu.Lock()
	full := len(u.flows) >= u.e.opts.maxUDPFlows
	closed := u.closed
	u.mu.Unlock()
	if closed {
		return true
	}
	if full {
		u.e.stats.UDPFlowsDropped.Add(1)
		return true
	}
	host, err := u.dial(target, id.LocalPort)
	if err != nil {
		return false // e.g. no route: the guest gets port unreachable
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		host.Close()
		return true
	}
	f := &udpFlow{
		id:    id,
		guest: gonet.NewUDPConn(&wq, ep),
		host:  host,
		idle:  u.e.opts.udpIdle,
	}
	if id.LocalPort == dnsPort || id.RemotePort == dnsPort {
		f.idle = u.e.opts.dnsIdle
	}
	f.last.touch()
	if !u.add(f) {
		f.close()
		return true
	}
	if f.big {
		// Raised after add so a refused flow never held a big buffer.
		ep.SocketOptions().SetReceiveBufferSize(udpBigRcvBuf, true)
	}
	// The first datagram is already queued on the new endpoint.
	u.e.goFunc(func() { u.guestToHost(f) })
	u.e.goFunc(func() { u.hostToGuest(f) })
	return true
}

// dial opens the connected host socket of a flow.
func (u *udpNAT) dial(target netip.Addr, port uint16) (*net.UDPConn, error) {
	var laddr *net.UDPAddr
	if la := u.e.outboundFor(target); la.IsValid() {
		laddr = &net.UDPAddr{IP: la.AsSlice()}
	}
	return net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(target, port)))
}

func (u *udpNAT) add(f *udpFlow) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.flows[f.id] = f
	if u.big < udpBigFlows {
		u.big++
		f.big = true
	}
	return true
}

// end closes a flow and forgets it; the next datagram starts a new one.
func (u *udpNAT) end(f *udpFlow) {
	u.mu.Lock()
	if u.flows[f.id] == f {
		delete(u.flows, f.id)
		if f.big {
			u.big--
		}
	}
	u.mu.Unlock()
	f.close()
}

func (u *udpNAT) closeAll() {
	u.mu.Lock()
	u.closed = true
	flows := u.flows
	u.flows = map[stack.TransportEndpointID]*udpFlow{}
	u.big = 0
	u.mu.Unlock()
	for _, f := range flows {
		f.close()
	}
}

// count is the number of live flows (for tests).
func (u *udpNAT) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.flows)
}

func (f *udpFlow) close() {
	f.once.Do(func() {
		f.guest.Close()
		f.host.Close()
	})
}

// guestToHost relays the guest's datagrams until the flow ends (hostToGuest
// decides when it is idle and closes both sockets).
func (u *udpNAT) guestToHost(f *udpFlow) {
	defer u.end(f)
	buf := make([]byte, maxDatagram)
	for {
		n, err := f.guest.Read(buf)
		if err != nil {
			return
		}
		f.last.touch()
		if _, err := f.host.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				u.e.ping.portUnreachable(f.id)
			}
			return
		}
	}
}

// hostToGuest relays the host's answers until the flow is idle for its
// timeout (checked here: this side always has a read pending).
func (u *udpNAT) hostToGuest(f *udpFlow) {
	defer u.end(f)
	buf := make([]byte, maxDatagram)
	for {
		f.host.SetReadDeadline(f.last.get().Add(f.idle))
		n, err := f.host.Read(buf)
		if err != nil {
			if isTimeout(err) && !f.last.idleFor(f.idle) {
				continue
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				u.e.ping.portUnreachable(f.id)
			}
			return
		}
		f.last.touch()
		if _, err := f.guest.Write(buf[:n]); err != nil {
			return
		}
	}
}

// isTimeout reports whether err is a deadline expiry.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// atomicTime is a time readable and writable from several goroutines
// (nanoseconds since the Unix epoch).
type atomicTime struct{ ns atomic.Int64 }

func (a *atomicTime) touch()         { a.ns.Store(time.Now().UnixNano()) }
func (a *atomicTime) get() time.Time { return time.Unix(0, a.ns.Load()) }

func (a *atomicTime) idleFor(d time.Duration) bool { return time.Since(a.get()) >= d }
