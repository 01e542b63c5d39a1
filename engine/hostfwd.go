package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// maxForwardUDPFlows bounds the client flows of one UDP port forward.
const maxForwardUDPFlows = 1024

// acceptRetryDelay is the pause after a temporary Accept error (EMFILE...),
// so that a full fd table does not spin a core.
const acceptRetryDelay = 50 * time.Millisecond

// forward is one host port forward being served.
type forward struct {
	e     *Engine
	id    int
	guest netip.AddrPort

	closer   socket  // the listener or UDP socket
	conns    connSet // its connections and flows
	wg       sync.WaitGroup
	closing  chan struct{}
	closeMux sync.Once
}

// AddForward starts serving a host port forward: sock is the bound,
// listening TCP socket or the bound UDP socket the supervisor made (the
// engine duplicates it; the caller keeps and may close sock). Each host
// connection (each UDP client) becomes a connection (flow) to
// fwd.GuestAddr:fwd.GuestPort inside the stack.
func (e *Engine) AddForward(fwd proto.Forward, sock *os.File) error {
	guest, err := e.forwardTarget(fwd)
	if err != nil {
		return err
	}
	f := &forward{e: e, id: fwd.ID, guest: guest, closing: make(chan struct{})}
	var serve func()
	switch fwd.Proto {
	case "tcp":
		ln, err := net.FileListener(sock)
		if err != nil {
			return fmt.Errorf("forward %d: adopt TCP listener: %w", fwd.ID, err)
		}
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			ln.Close()
			return fmt.Errorf("forward %d: not a TCP listener (%T)", fwd.ID, ln)
		}
		f.closer = tl
		serve = func() { f.serveTCP(tl) }
	case "udp":
		pc, err := net.FilePacketConn(sock)
		if err != nil {
			return fmt.Errorf("forward %d: adopt UDP socket: %w", fwd.ID, err)
		}
		uc, ok := pc.(*net.UDPConn)
		if !ok {
			pc.Close()
			return fmt.Errorf("forward %d: not a UDP socket (%T)", fwd.ID, pc)
		}
		f.closer = uc
		serve = func() { f.serveUDP(uc) }
	default:
		return fmt.Errorf("forward %d: unknown protocol %q", fwd.ID, fwd.Proto)
	}
	e.fmu.Lock()
	defer e.fmu.Unlock()
	if ctxDone(e.ctx) {
		f.closer.Close()
		return errClosed
	}
	if _, dup := e.forwards[fwd.ID]; dup {
		f.closer.Close()
		return fmt.Errorf("forward %d: id already in use", fwd.ID)
	}
	e.forwards[fwd.ID] = f
	f.goFunc(serve)
	return nil
}

// RemoveForward stops forward id: its listener and all its connections and
// flows are closed before it returns.
func (e *Engine) RemoveForward(id int) error {
	e.fmu.Lock()
	f := e.forwards[id]
	delete(e.forwards, id)
	e.fmu.Unlock()
	if f == nil {
		return fmt.Errorf("forward %d: no such forward", id)
	}
	f.close()
	return nil
}

// socket is a host socket the engine serves (*net.TCPListener,
// *net.UDPConn).
type socket interface {
	SyscallConn() (syscall.RawConn, error)
	Close() error
}

// shutdownAndClose shuts s down, then closes it. Close alone does not
// interrupt an Accept or Read blocked in the kernel, which happens when the
// socket's file description was switched back to blocking mode by another
// holder (any os.File.Fd() call on the supervisor's copy does that); a
// shutdown wakes such a call in every case.
func shutdownAndClose(s socket) {
	if rc, err := s.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
	_ = s.Close()
}

// forwardTarget validates the guest side of a forward.
func (e *Engine) forwardTarget(fwd proto.Forward) (netip.AddrPort, error) {
	addr := e.plan.Guest
	if fwd.GuestAddr != "" {
		a, err := netip.ParseAddr(fwd.GuestAddr)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("forward %d: bad guest address %q", fwd.ID, fwd.GuestAddr)
		}
		addr = a.Unmap()
	}
	if addr.Is6() && !e.cfg.EnableIPv6 {
		return netip.AddrPort{}, fmt.Errorf("forward %d: IPv6 guest address %s needs IPv6 enabled", fwd.ID, addr)
	}
	if fwd.GuestPort < 1 || fwd.GuestPort > 65535 {
		return netip.AddrPort{}, fmt.Errorf("forward %d: bad guest port %d", fwd.ID, fwd.GuestPort)
	}
	return netip.AddrPortFrom(addr, uint16(fwd.GuestPort)), nil
}

// goFunc runs fn on a goroutine both the forward and the engine wait for.
func (f *forward) goFunc(fn func()) {
	f.wg.Add(1)
	f.e.goFunc(func() {
		defer f.wg.Done()
		fn()
	})
}

// close stops the forward and waits for its goroutines.
func (f *forward) close() {
	f.closeMux.Do(func() {
		close(f.closing)
		shutdownAndClose(f.closer)
		f.conns.closeAll()
	})
	f.wg.Wait()
}

// pause waits a little after an unexpected socket error (EMFILE...), so
// that a persistent one does not spin a core.
func (f *forward) pause() {
	select {
	case <-f.closing:
	case <-f.e.ctx.Done():
	case <-time.After(acceptRetryDelay):
	}
}

func (f *forward) stopped() bool {
	select {
	case <-f.closing:
		return true
	default:
		return ctxDone(f.e.ctx)
	}
}

// serveTCP accepts host connections until the forward is closed.
func (f *forward) serveTCP(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			f.e.logf("forward %d: accept: %v", f.id, err)
			f.pause()
			continue
		}
		if !f.conns.add(c) {
			return
		}
		f.goFunc(func() {
			defer f.conns.remove(c)
			f.connectTCP(c)
		})
	}
}

// connectTCP connects one host connection into the guest and hands the
// pair to the relay.
func (f *forward) connectTCP(c net.Conn) {
	tc, ok := c.(rawSocket)
	if !ok { // a TCP listener's connections always are
		c.Close()
		return
	}
	client := addrPortOf(c.RemoteAddr())
	src := policy.ForwardSource(f.e.plan, client.Addr(), f.guest.Addr())
	if f.e.fast != nil && f.e.fast.connectGuest(tc, src, f.guest, &f.conns) {
		return
	}
	sched, err := f.e.tcp.relay()
	if err != nil {
		c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(f.e.ctx, f.e.opts.dialTimeout)
	ep, wq, err := dialGuestTCP(ctx, f.e.stack, src, f.guest)
	cancel()
	if err != nil {
		c.Close()
		return
	}
	fd, err := detachFD(tc)
	if err != nil {
		f.e.logf("forward %d: %v", f.id, err)
		ep.Abort()
		return
	}
	sched.start(ep, wq, fd, &f.conns)
}

// dialGuestTCP connects to guest from the local (possibly foreign, thanks to
// spoofing) address src inside the stack. It is gonet.DialTCPWithBind with
// keepalive set, without its endpoint leak on a failed bind and without the
// gonet adapter: it returns the endpoint and its waiter queue.
func dialGuestTCP(ctx context.Context, s interface {
	NewEndpoint(tcpip.TransportProtocolNumber, tcpip.NetworkProtocolNumber, *waiter.Queue) (tcpip.Endpoint, tcpip.Error)
}, src netip.Addr, guest netip.AddrPort) (tcpip.Endpoint, *waiter.Queue, error) {
	wq := new(waiter.Queue)
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, protoOf(guest.Addr()), wq)
	if terr != nil {
		return nil, nil, fmt.Errorf("new endpoint: %s", terr)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(src)}); terr != nil {
		ep.Close()
		return nil, nil, fmt.Errorf("bind %s: %s", src, terr)
	}
	setKeepalive(ep)
	terr = ep.Connect(tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(guest.Addr()), Port: guest.Port()})
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, nil, ctx.Err()
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, nil, fmt.Errorf("connect %s: %s", guest, terr)
	}
	return ep, wq, nil
}

// fwdUDPFlow is one host client of a UDP forward and its flow into the guest.
type fwdUDPFlow struct {
	client netip.AddrPort
	guest  *gonet.UDPConn
	last   atomicTime
}

// serveUDP relays the datagrams of every host client until the forward is
// closed; each client gets its own flow (and source port) in the stack.
func (f *forward) serveUDP(uc *net.UDPConn) {
	var mu sync.Mutex
	flows := make(map[netip.AddrPort]*fwdUDPFlow)
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := uc.ReadFromUDPAddrPort(buf)
		if err != nil || !client.IsValid() {
			// A shut-down socket reads empty datagrams from nobody.
			if f.stopped() || errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				f.pause()
			}
			continue
		}
		client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
		mu.Lock()
		fl := flows[client]
		if fl == nil && len(flows) < maxForwardUDPFlows {
			fl = f.newUDPFlow(uc, client, func(fl *fwdUDPFlow) {
				mu.Lock()
				delete(flows, fl.client)
				mu.Unlock()
			})
			if fl != nil {
				flows[client] = fl
			}
		}
		mu.Unlock()
		if fl == nil {
			continue
		}
		fl.last.touch()
		_, _ = fl.guest.Write(buf[:n])
	}
}

// newUDPFlow opens the stack side of a client's flow and starts relaying the
// guest's answers to the client; done runs when the flow ends.
func (f *forward) newUDPFlow(uc *net.UDPConn, client netip.AddrPort, done func(*fwdUDPFlow)) *fwdUDPFlow {
	src := policy.ForwardSource(f.e.plan, client.Addr(), f.guest.Addr())
	netProto := protoOf(f.guest.Addr())
	gc, err := gonet.DialUDP(f.e.stack,
		&tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(src)},
		&tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(f.guest.Addr()), Port: f.guest.Port()},
		netProto)
	if err != nil {
		f.e.logf("forward %d: udp flow for %s: %v", f.id, client, err)
		return nil
	}
	if !f.conns.add(gc) {
		return nil
	}
	fl := &fwdUDPFlow{client: client, guest: gc}
	fl.last.touch()
	f.goFunc(func() {
		defer done(fl)
		defer f.conns.remove(gc)
		defer gc.Close()
		f.udpReplies(uc, fl)
	})
	return fl
}

// udpReplies relays the guest's datagrams to the client until the flow is
// idle.
func (f *forward) udpReplies(uc *net.UDPConn, fl *fwdUDPFlow) {
	idle := f.e.opts.udpIdle
	buf := make([]byte, maxDatagram)
	for {
		fl.guest.SetReadDeadline(fl.last.get().Add(idle))
		n, err := fl.guest.Read(buf)
		if err != nil {
			if isTimeout(err) && !fl.last.idleFor(idle) {
				continue
			}
			return
		}
		fl.last.touch()
		if _, err := uc.WriteToUDPAddrPort(buf[:n], fl.client); err != nil && f.stopped() {
			return
		}
	}
}

// addrPortOf extracts the address of a TCP or UDP net.Addr.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case *net.UDPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
