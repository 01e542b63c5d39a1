package api

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// bindFunc binds a forward's host socket and returns it as a file that can
// be passed to the engine.
type bindFunc func(ctx context.Context, fwd policy.HostFwd) (*os.File, error)

// bindHostSocket binds fwd's host side: a listening TCP socket or a bound
// UDP socket, in the supervisor's (the host's) network namespace.
func bindHostSocket(ctx context.Context, fwd policy.HostFwd) (*os.File, error) {
	network := hostNetwork(fwd.Proto, fwd.HostAddr)
	addr := netip.AddrPortFrom(fwd.HostAddr, fwd.HostPort).String()
	var lc net.ListenConfig
	if fwd.Proto == policy.ProtoUDP {
		return bindUDP(ctx, &lc, network, addr)
	}
	return bindTCP(ctx, &lc, network, addr)
}

// hostNetwork picks the Go network name for a bind: an IPv4 address binds
// IPv4 only (Go's "tcp" would make 0.0.0.0 dual-stack), "::" binds
// dual-stack as Go does, any other IPv6 address binds IPv6 only.
func hostNetwork(proto string, addr netip.Addr) string {
	switch {
	case addr.Is4():
		return proto + "4"
	case addr.IsUnspecified():
		return proto
	default:
		return proto + "6"
	}
}

func bindTCP(ctx context.Context, lc *net.ListenConfig, network, addr string) (*os.File, error) {
	ln, err := lc.Listen(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, addr, err)
	}
	// File duplicates the descriptor; the listener's own copy is not needed.
	defer ln.Close()
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("listen %s %s: unexpected listener %T", network, addr, ln)
	}
	f, err := tl.File()
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", network, addr, err)
	}
	return f, nil
}

func bindUDP(ctx context.Context, lc *net.ListenConfig, network, addr string) (*os.File, error) {
	pc, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("bind %s %s: %w", network, addr, err)
	}
	defer pc.Close()
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("bind %s %s: unexpected socket %T", network, addr, pc)
	}
	f, err := uc.File()
	if err != nil {
		return nil, fmt.Errorf("bind %s %s: %w", network, addr, err)
	}
	return f, nil
}
