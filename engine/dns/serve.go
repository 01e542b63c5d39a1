package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/internal/stackgrow"
)

const (
	// maxTCPConns bounds concurrent DNS-over-TCP clients; more are closed
	// at once (clients fall back to retrying).
	maxTCPConns = 64
	// tcpIdleTimeout closes TCP connections with no complete query for this
	// long (RFC 7766 suggests seconds).
	tcpIdleTimeout = 10 * time.Second
	// writeTimeout bounds sending one answer to the guest.
	writeTimeout = 5 * time.Second
)

// ServeStack serves DNS over UDP and TCP on each of addrs (NIC, address and
// port; port 0 means 53) of stack s until ctx ends. It returns nil after ctx
// ends and every goroutine it started has finished, or an error at once if
// an address cannot be bound.
func (r *Relay) ServeStack(ctx context.Context, s *stack.Stack, addrs []tcpip.FullAddress) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var closers []func()
	defer func() {
		cancel()
		for _, c := range closers {
			c()
		}
		wg.Wait()
	}()
	tcpSlots := make(chan struct{}, maxTCPConns)
	for _, a := range addrs {
		if a.Port == 0 {
			a.Port = DefaultPort
		}
		proto := netProto(a.Addr)
		uc, err := gonet.DialUDP(s, &a, nil, proto)
		if err != nil {
			return fmt.Errorf("dns: bind udp %s: %w", fullAddrString(a), err)
		}
		closers = append(closers, func() { _ = uc.SetReadDeadline(time.Now()); _ = uc.Close() })
		ln, err := gonet.ListenTCP(s, a, proto)
		if err != nil {
			return fmt.Errorf("dns: listen tcp %s: %w", fullAddrString(a), err)
		}
		closers = append(closers, func() { _ = ln.Close() })
		wg.Go(func() { r.serveUDP(ctx, uc, &wg) })
		wg.Go(func() { r.serveTCP(ctx, ln, &wg, tcpSlots) })
	}
	r.bound()
	<-ctx.Done()
	return nil
}

func netProto(a tcpip.Address) tcpip.NetworkProtocolNumber {
	if a.Len() == 16 {
		return ipv6.ProtocolNumber
	}
	return ipv4.ProtocolNumber
}

func fullAddrString(a tcpip.FullAddress) string {
	return fmt.Sprintf("nic %d %s", a.NIC, net.JoinHostPort(a.Addr.String(), fmt.Sprint(a.Port)))
}

// serveUDP reads queries and answers each in its own goroutine; when all
// concurrency slots are taken it stops reading, so excess datagrams queue
// and then drop in the stack, as on a congested link.
func (r *Relay) serveUDP(ctx context.Context, uc *gonet.UDPConn, wg *sync.WaitGroup) {
	stackgrow.To4K() // gonet's read path needs it: one shallow copy
	buf := make([]byte, maxMessageSize)
	for {
		n, from, err := uc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return
			}
			continue
		}
		if err := r.acquire(ctx); err != nil {
			return
		}
		query := append([]byte(nil), buf[:n]...)
		wg.Go(func() {
			defer r.release()
			resp, err := r.exchange(ctx, query, "udp")
			if err != nil {
				return
			}
			_, _ = uc.WriteTo(resp, from)
		})
	}
}

func (r *Relay) serveTCP(ctx context.Context, ln *gonet.TCPListener, wg *sync.WaitGroup, slots chan struct{}) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Accept fails only when the listener is closed.
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			_ = c.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			r.serveTCPConn(ctx, c)
		})
	}
}

// serveTCPConn answers length-prefixed queries one after another until the
// client closes, goes idle or sends something that is not a query.
func (r *Relay) serveTCPConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	for {
		if err := c.SetReadDeadline(time.Now().Add(tcpIdleTimeout)); err != nil {
			return
		}
		query, err := readTCPMsg(c)
		if err != nil || ctx.Err() != nil {
			return
		}
		if err := r.acquire(ctx); err != nil {
			return
		}
		resp, err := r.exchange(ctx, query, "tcp")
		r.release()
		if err != nil {
			return
		}
		if err := c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
			return
		}
		if err := writeTCPMsg(c, resp); err != nil {
			return
		}
	}
}
