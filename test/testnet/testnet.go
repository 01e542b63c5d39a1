// Package testnet holds the small network services that the integration
// tests and the demo run in their outer "host" namespace: an authoritative
// DNS server for a few test names, TCP and UDP echo servers, servers that
// report the peer address they see, and an HTTP server that serves and
// checksums deterministic blobs.
//
// Everything here listens only where it is told to; the callers bind it to
// loopback or to addresses inside network namespaces they created, so that
// no test traffic can leave the machine.
package testnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// Services is a set of servers started together and stopped together.
// The zero value is ready to use.
type Services struct {
	mu      sync.Mutex
	closers []io.Closer
	wg      sync.WaitGroup
}

// ServeTCP listens on network ("tcp", "tcp4", "tcp6") and addr and runs
// handle in a new goroutine for every accepted connection; handle need not
// close the connection.
func (s *Services) ServeTCP(network, addr string, handle func(net.Conn)) (net.Addr, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, addr, err)
	}
	s.add(ln)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.acceptLoop(ln, handle)
	}()
	return ln.Addr(), nil
}

func (s *Services) acceptLoop(ln net.Listener, handle func(net.Conn)) {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.add(c) // so that Close also ends connections still being served
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			handle(c)
		}()
	}
}

// ServeUDP binds network ("udp", "udp4", "udp6") and addr and runs serve
// with the socket in a goroutine; serve returns when the socket is closed.
func (s *Services) ServeUDP(network, addr string, serve func(net.PacketConn)) (net.Addr, error) {
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, addr, err)
	}
	s.add(pc)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		serve(pc)
	}()
	return pc.LocalAddr(), nil
}

// AddCloser registers c to be closed by Close (e.g. a DNS server).
func (s *Services) AddCloser(c io.Closer) { s.add(c) }

func (s *Services) add(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, c)
}

// Close stops every server and connection and waits for their goroutines.
func (s *Services) Close() error {
	s.mu.Lock()
	closers := s.closers
	s.closers = nil
	s.mu.Unlock()
	var errs []error
	for _, c := range closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// EchoTCP copies everything it reads back to the peer.
func EchoTCP(c net.Conn) {
	_, _ = io.Copy(c, c)
}

// EchoUDP answers every datagram with the same bytes, until pc is closed.
func EchoUDP(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo(buf[:n], from)
	}
}

// PeerTCP writes "peer=IP\n" with the address the connection came from,
// then closes it. Tests use it to check which source address a forwarder
// used.
func PeerTCP(c net.Conn) {
	fmt.Fprintf(c, "peer=%s\n", PeerIP(c.RemoteAddr()))
}

// PeerUDP answers every datagram with "peer=IP\n", until pc is closed.
func PeerUDP(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = pc.WriteTo([]byte("peer="+PeerIP(from)+"\n"), from)
	}
}

// PeerIP returns the IP part of a TCP or UDP address, unmapping IPv4-mapped
// IPv6 addresses so that tests compare plain dotted quads.
func PeerIP(a net.Addr) string {
	var ip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return a.String()
	}
	if v4 := ip.To4(); v4 != nil {
		return v4.String()
	}
	return ip.String()
}

func listenTCP(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return ln, nil
}
