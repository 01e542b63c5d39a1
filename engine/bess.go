package engine

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
)

// BESS mode (--target-type=bess): the supervisor listens on the
// SOCK_SEQPACKET socket and hands the engine the listening socket, so that
// --ready-fd is written before User Mode Linux starts. The engine accepts
// the clients itself:
//
//   - one client at a time: a client that connects while another one is
//     connected is closed at once (it reads EOF), and the connected one
//     keeps working. C slirp4netns 1.2.0 accepts exactly one client and then
//     closes its listener, so every later connect(2) fails with
//     ECONNREFUSED.
//   - when the client disconnects (UML halted or rebooted), the engine
//     waits for a new one and serves it on the same stack: the port
//     forwards, the DHCP leases and the host-side sockets stay. C
//     slirp4netns 1.2.0 keeps running without a client (its poll loop then
//     spins on the EOF) and never accepts another.
//
// bessLink is the link endpoint the NIC sees. It stays attached for the
// engine's lifetime and forwards to the current client's link.Endpoint;
// while no client is connected, outbound frames are dropped.
type bessLink struct {
	ln       *net.UnixListener
	opts     link.Options // for each client's endpoint (OnClosed is set per client)
	log      *log.Logger
	onClosed func(error) // the listener failed: the engine cannot go on
	done     chan struct{}

	mu            sync.Mutex
	dispatcher    stack.NetworkDispatcher
	client        *link.Endpoint // the current client, or nil
	clientConn    *net.UnixConn  // its accepted connection (for peerHungUp)
	clientGoneCh  chan struct{}  // closed when it is gone
	onConnect     func()
	onCloseAction func()
	closed        bool
	warnedBusy    bool
	// retired are the clients that left; Wait joins their readers. One
	// pointer per client for the engine's lifetime (a UML boot each).
	retired []*link.Endpoint
}

var _ stack.LinkEndpoint = (*bessLink)(nil)

// isListening reports whether fd is a listening socket (SO_ACCEPTCONN).
func isListening(fd int) (bool, error) {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return false, fmt.Errorf("getsockopt(SO_ACCEPTCONN) on the link fd: %w", err)
	}
	return v != 0, nil
}

// newBESSLink starts accepting BESS clients on the listening socket f (the
// engine keeps its own duplicate; the caller still closes f). opts are the
// options of each client's endpoint; onClosed is called once if the
// listener fails for good.
func newBESSLink(f *os.File, opts link.Options, logger *log.Logger, onClosed func(error)) (*bessLink, error) {
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("BESS listener: %w", err)
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("BESS listener: not a unix socket (%T)", l)
	}
	// The supervisor created the socket file and removes it; a listener
	// made by FileListener never unlinks it, and must not.
	ul.SetUnlinkOnClose(false)
	opts.OnClosed = nil
	opts.VnetHdr = false // BESS datagrams are bare Ethernet frames
	b := &bessLink{
		ln:       ul,
		opts:     opts,
		log:      logger,
		onClosed: onClosed,
		done:     make(chan struct{}),
	}
	go b.acceptLoop()
	return b, nil
}

// SetOnConnect sets a function called (without locks held) each time a new
// client has been attached.
func (b *bessLink) SetOnConnect(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onConnect = f
}

// acceptLoop accepts clients until the listener is closed or fails.
func (b *bessLink) acceptLoop() {
	defer close(b.done)
	for {
		conn, err := b.ln.AcceptUnix()
		if err != nil {
			if b.acceptFailed(err) {
				return
			}
			continue
		}
		b.serve(conn)
	}
}

// acceptFailed decides whether the accept loop ends after err.
func (b *bessLink) acceptFailed(err error) bool {
	if errors.Is(err, net.ErrClosed) || b.isClosed() {
		return true
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
			// Transient: the client is still queued, try again shortly.
			b.log.Printf("BESS: accept: %v; retrying", err)
			time.Sleep(acceptRetryDelay)
			return false
		}
	}
	b.log.Printf("BESS: accept: %v", err)
	if b.onClosed != nil {
		b.onClosed(fmt.Errorf("BESS listener: %w", err))
	}
	return true
}

// handoverWait bounds how long a new client waits for the engine to notice
// that the previous one hung up (its reader reads the remaining frames,
// then EOF). A client that reconnects at once is not refused for that. It
// only applies once the old peer has hung up, so a generous bound costs
// nothing; one second was too short on a loaded 2-core machine.
const handoverWait = 5 * time.Second

// serve makes conn the current client, or refuses it (closes it) when
// another one is connected.
func (b *bessLink) serve(conn *net.UnixConn) {
	if !b.makeRoom() {
		conn.Close()
		return
	}
	ep, err := b.newClient(conn)
	if err != nil {
		b.log.Printf("BESS: %v", err)
		conn.Close()
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		ep.Close()
		conn.Close()
		return
	}
	// conn stays open (the endpoint reads its own duplicate) so that the
	// next client can tell whether this one hung up.
	b.client, b.clientConn, b.clientGoneCh = ep, conn, make(chan struct{})
	if b.dispatcher != nil {
		ep.Attach(b.dispatcher)
	}
	onConnect := b.onConnect
	b.mu.Unlock()
	b.log.Print("BESS: client connected")
	if onConnect != nil {
		onConnect()
	}
}

// makeRoom reports whether a new client may become the current one: when
// none is connected, or when the connected one has hung up and its reader
// noticed within handoverWait. Otherwise the new client is refused, which
// is reported once.
func (b *bessLink) makeRoom() bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	if b.client == nil {
		b.mu.Unlock()
		return true
	}
	conn, gone := b.clientConn, b.clientGoneCh
	b.mu.Unlock()
	if peerHungUp(conn, hangupGrace) {
		select {
		case <-gone:
			return !b.isClosed()
		case <-time.After(handoverWait):
		}
	}
	b.mu.Lock()
	warn := !b.warnedBusy
	b.warnedBusy = true
	b.mu.Unlock()
	if warn {
		b.log.Print("BESS: refusing another client while one is connected (reported once)")
	}
	return false
}

// hangupGrace is how long a new client waits for the connected one's
// hang-up to show: a client's close(2) takes effect only once every copy of
// its descriptor is gone, and a process that forked just then (before its
// exec closed the copy) holds one for a moment. A second client while the
// first is really connected is refused after this delay.
const hangupGrace = 250 * time.Millisecond

// peerHungUp reports whether the other end of conn has closed it, waiting
// up to timeout for that.
func peerHungUp(conn *net.UnixConn, timeout time.Duration) bool {
	rc, err := conn.SyscallConn()
	if err != nil {
		return true
	}
	hup := false
	deadline := time.Now().Add(timeout)
	_ = rc.Control(func(fd uintptr) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		for {
			n, err := unix.Poll(pfd, int(max(time.Until(deadline), 0).Milliseconds()))
			if err == unix.EINTR {
				continue
			}
			hup = err == nil && n > 0 && pfd[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
			return
		}
	})
	return hup
}

// newClient wraps the accepted connection in a link endpoint, which gets
// its own duplicate of the descriptor (conn is closed by the caller).
func (b *bessLink) newClient(conn *net.UnixConn) (*link.Endpoint, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("client fd: %w", err)
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("client fd: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("dup client fd: %w", dupErr)
	}
	opts := b.opts
	var ep *link.Endpoint
	// The reader goroutine, the only caller of OnClosed, starts at Attach,
	// after ep is set.
	opts.OnClosed = func(err error) { b.clientGone(ep, err) }
	ep, err = link.New(fd, opts)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("client endpoint: %w", err)
	}
	return ep, nil
}

// clientGone runs on the client's reader goroutine when it ends: it
// detaches the client so that the next one can connect. err is nil when
// Close ended it (the engine is shutting down).
func (b *bessLink) clientGone(ep *link.Endpoint, err error) {
	b.mu.Lock()
	current := b.client == ep
	var conn *net.UnixConn
	var gone chan struct{}
	if current {
		conn, gone = b.clientConn, b.clientGoneCh
		b.client, b.clientConn, b.clientGoneCh = nil, nil, nil
	}
	shutdown := b.closed || err == nil
	if current && !shutdown {
		// Its reader returns right after this call; Wait joins it.
		b.retired = append(b.retired, ep)
	}
	b.mu.Unlock()
	ep.Close()
	if current {
		conn.Close()
		close(gone)
	}
	if current && !shutdown {
		b.log.Printf("BESS: client disconnected (%v); waiting for a new one", err)
	}
}

func (b *bessLink) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *bessLink) current() *link.Endpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.client
}

// MTU implements stack.LinkEndpoint.
func (b *bessLink) MTU() uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts.MTU
}

// SetMTU implements stack.LinkEndpoint.
func (b *bessLink) SetMTU(mtu uint32) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opts.MTU = mtu
	if b.client != nil {
		b.client.SetMTU(mtu)
	}
}

// MaxHeaderLength implements stack.LinkEndpoint: the Ethernet header.
func (b *bessLink) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (b *bessLink) LinkAddress() tcpip.LinkAddress {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts.Address
}

// SetLinkAddress implements stack.LinkEndpoint.
func (b *bessLink) SetLinkAddress(addr tcpip.LinkAddress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opts.Address = addr
	if b.client != nil {
		b.client.SetLinkAddress(addr)
	}
}

// Capabilities implements stack.LinkEndpoint: those of a link.Endpoint
// without the virtio-net header.
func (b *bessLink) Capabilities() stack.LinkEndpointCapabilities {
	caps := stack.CapabilityResolutionRequired
	if b.opts.RXChecksumOffload {
		caps |= stack.CapabilityRXChecksumOffload
	}
	return caps
}

// ARPHardwareType implements stack.LinkEndpoint.
func (b *bessLink) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint. It must work without a client
// too: the stack adds the header before WritePackets drops the frame.
func (b *bessLink) AddHeader(pkt *stack.PacketBuffer) { link.AddEthernetHeader(pkt, b) }

// ParseHeader implements stack.LinkEndpoint.
func (b *bessLink) ParseHeader(pkt *stack.PacketBuffer) bool { return link.ParseEthernetHeader(pkt) }

// WritePackets implements stack.LinkEndpoint: to the current client, or
// dropped while there is none, as by a cable without a peer.
func (b *bessLink) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	if c := b.current(); c != nil {
		return c.WritePackets(pkts)
	}
	return pkts.Len(), nil
}

// Attach implements stack.LinkEndpoint: the dispatcher is handed to every
// client, the current one and those that connect later. Like
// link.Endpoint.Attach it does not wait.
func (b *bessLink) Attach(d stack.NetworkDispatcher) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dispatcher = d
	if b.client != nil {
		b.client.Attach(d)
	}
}

// IsAttached implements stack.LinkEndpoint.
func (b *bessLink) IsAttached() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dispatcher != nil
}

// Wait implements stack.LinkEndpoint: it waits for the readers of the
// current and the past clients, with link.Endpoint.Wait's guarantee (a
// delivery blocked on the stack's lock is not waited for after Attach(nil)
// or Close). The stack calls it while holding its lock, so it does not wait
// for the accept loop, which may need that lock (onConnect); Close does.
func (b *bessLink) Wait() {
	b.mu.Lock()
	eps := append([]*link.Endpoint{}, b.retired...)
	if b.client != nil {
		eps = append(eps, b.client)
	}
	b.mu.Unlock()
	// Not under b.mu: a reader that is ending calls clientGone.
	for _, ep := range eps {
		ep.Wait()
	}
}

// Close implements stack.LinkEndpoint: it stops accepting, closes the
// current client and waits for the accept loop and the clients' readers.
// The stack calls it without holding its lock.
func (b *bessLink) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	c, conn := b.client, b.clientConn
	action := b.onCloseAction
	b.onCloseAction = nil
	b.mu.Unlock()
	if action != nil {
		action()
	}
	b.ln.Close()
	if c != nil {
		c.Close()
		conn.Close()
		c.Wait()
	}
	<-b.done
	b.Wait()
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (b *bessLink) SetOnCloseAction(action func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onCloseAction = action
}

// clearNeighbors forgets the link addresses the stack learnt on nic: a new
// BESS client (a rebooted UML) has a new MAC, and frames to the old one
// would be dropped by the guest until the entries went stale.
func clearNeighbors(s *stack.Stack, nic tcpip.NICID) {
	for _, p := range []tcpip.NetworkProtocolNumber{ipv4.ProtocolNumber, ipv6.ProtocolNumber} {
		// ErrNotSupported: IPv6 has no neighbour table without -6.
		_ = s.ClearNeighbors(nic, p)
	}
}
