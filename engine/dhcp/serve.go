// Package dhcp is the engine's DHCPv4 server: it leases the addresses
// network+15 .. network+30 of the address plan to the guest, by client MAC,
// and hands out the gateway (network+2), the DNS server (network+3) and the
// MTU. It runs on the engine's gVisor stack.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/slirp4netns-go/slirp4netns/engine/internal/stackgrow"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// DefaultLeaseTime is the lease time when Options.LeaseTime is zero: 24
// hours, as libslirp (and so the C slirp4netns) uses.
const DefaultLeaseTime = 24 * time.Hour

// Well-known ports.
const (
	serverPort = 67
	clientPort = 68
)

// writeTimeout bounds sending one reply.
const writeTimeout = 2 * time.Second

// Options configures the server.
type Options struct {
	// MTU is announced (option 26) when it is set and not 1500.
	MTU int
	// DisableDNS omits the DNS server option (--disable-dns).
	DisableDNS bool
	// LeaseTime is the lease duration; default DefaultLeaseTime.
	LeaseTime time.Duration
	// Bound, if set, is called once the service's sockets are bound, so
	// that the engine attaches its link only when the service can answer.
	Bound func()
}

// Serve runs the DHCP server on UDP port 67 of NIC nic of s until ctx ends,
// then returns nil once its goroutines have finished. It answers requests
// broadcast to 255.255.255.255 and requests unicast to the gateway address
// (renewals); replies come from the gateway address, which must be assigned
// to the NIC. An error is returned at once if the ports cannot be bound.
func Serve(ctx context.Context, s *stack.Stack, nic tcpip.NICID, plan policy.Plan, opts Options) error {
	if !plan.Gateway.Is4() {
		return errors.New("dhcp: plan has no IPv4 gateway")
	}
	// Replies are sent from the gateway-bound endpoint; broadcast requests
	// only reach an endpoint bound to the broadcast (or any) address, and an
	// any-address endpoint would also swallow the guest's port-67 traffic to
	// the outside, which the NAT must forward.
	uc, err := listen(s, nic, plan.Gateway)
	if err != nil {
		return err
	}
	bc, err := listen(s, nic, broadcast)
	if err != nil {
		uc.Close()
		return err
	}
	if opts.Bound != nil {
		opts.Bound()
	}
	srv := &lockedServer{srv: newServer(plan, opts)}
	var wg sync.WaitGroup
	for _, c := range []*gonet.UDPConn{uc, bc} {
		wg.Go(func() { srv.readLoop(ctx, c, uc) })
	}
	<-ctx.Done()
	for _, c := range []*gonet.UDPConn{uc, bc} {
		_ = c.SetDeadline(time.Now())
		_ = c.Close()
	}
	wg.Wait()
	return nil
}

// listen binds a broadcast-enabled UDP endpoint to addr:67 on nic.
func listen(s *stack.Stack, nic tcpip.NICID, addr netip.Addr) (*gonet.UDPConn, error) {
	var wq waiter.Queue
	ep, terr := s.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return nil, fmt.Errorf("dhcp: new udp endpoint: %s", terr)
	}
	ep.SocketOptions().SetBroadcast(true)
	fa := tcpip.FullAddress{NIC: nic, Addr: tcpip.AddrFrom4(addr.As4()), Port: serverPort}
	if terr := ep.Bind(fa); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("dhcp: bind %s:%d on nic %d: %s", addr, serverPort, nic, terr)
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// lockedServer serialises the two read loops' access to the lease table.
type lockedServer struct {
	mu  sync.Mutex
	srv *server
}

func (l *lockedServer) handle(req *message, now time.Time) (reply, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.srv.handle(req, now)
}

// readLoop answers requests read from in, sending replies through out.
func (l *lockedServer) readLoop(ctx context.Context, in, out *gonet.UDPConn) {
	stackgrow.To4K() // gonet's read path needs it: one shallow copy
	buf := make([]byte, 65536)
	for {
		n, _, err := in.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.Is(err, net.ErrClosed) || (errors.As(err, &ne) && ne.Timeout()) {
				return
			}
			continue
		}
		req, err := parseMessage(buf[:n])
		if err != nil {
			continue
		}
		rep, ok := l.handle(req, time.Now())
		if !ok {
			continue
		}
		dst := &net.UDPAddr{IP: rep.dst.AsSlice(), Port: clientPort}
		_ = out.SetWriteDeadline(time.Now().Add(writeTimeout))
		_, _ = out.WriteTo(rep.msg.encode(), dst)
	}
}
