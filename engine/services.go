package engine

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/slirp4netns-go/slirp4netns/engine/dhcp"
	"github.com/slirp4netns-go/slirp4netns/engine/dns"
	"github.com/slirp4netns-go/slirp4netns/engine/ra"
)

// startServices starts the built-in services on the stack: the DNS relay on
// the DNS addresses (unless --disable-dns), the DHCP server and, with -6,
// router advertisements. Each runs until the engine closes; one that stops
// with an error reports it on ServiceErrors.
func (e *Engine) startServices() error {
	// Each service reports when its sockets are bound (or it failed);
	// New attaches the link only after that, so that the guest's first
	// DHCP request, RS or DNS query is not refused.
	var bound sync.WaitGroup
	if !e.cfg.DisableDNS {
		e.startDNS(&bound)
	}
	dhcpBound := boundHook(&bound)
	dhcpOpts := dhcp.Options{MTU: e.cfg.MTU, DisableDNS: e.cfg.DisableDNS, Bound: dhcpBound}
	e.runService("dhcp", dhcpBound, func(ctx context.Context) error {
		return dhcp.Serve(ctx, e.stack, nicID, e.plan, dhcpOpts)
	})
	if e.cfg.EnableIPv6 {
		raBound := boundHook(&bound)
		raOpts := ra.Options{MTU: e.cfg.MTU, DisableDNS: e.cfg.DisableDNS, Bound: raBound}
		e.runService("ra", raBound, func(ctx context.Context) error {
			return ra.Serve(ctx, e.stack, nicID, e.plan, raOpts)
		})
	}
	bound.Wait()
	return nil
}

// startDNS serves DNS on network+3 (and fd00::3 with -6), relaying to the
// host's resolv.conf nameservers.
func (e *Engine) startDNS(bound *sync.WaitGroup) {
	addrs := []tcpip.FullAddress{{NIC: nicID, Addr: tcpAddr(e.plan.DNS)}}
	if e.cfg.EnableIPv6 {
		addrs = append(addrs, tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(e.plan.DNS6)})
	}
	done := boundHook(bound)
	relay := dns.NewRelay(dns.Options{Dial: e.dialOutbound, Bound: done})
	e.runService("dns", done, func(ctx context.Context) error { return relay.ServeStack(ctx, e.stack, addrs) })
}

// boundHook counts a service in bound and returns its Bound hook, which
// may be called any number of times (the service calls it once bound, and
// runService again when it returns, in case it failed before binding).
func boundHook(bound *sync.WaitGroup) func() {
	bound.Add(1)
	return sync.OnceFunc(bound.Done)
}

// runService runs serve until the engine closes; bound is called when
// serve returns.
func (e *Engine) runService(name string, bound func(), serve func(ctx context.Context) error) {
	e.goFunc(func() {
		err := serve(e.ctx)
		bound()
		if err != nil && e.ctx.Err() == nil {
			e.logf("%s service: %v", name, err)
			select {
			case e.servicesErr <- fmt.Errorf("%s service: %w", name, err):
			default:
			}
		}
	})
}

// dialOutbound dials a host address binding to --outbound-addr(6) when
// given, for services that talk to the host's world (DNS upstreams).
func (e *Engine) dialOutbound(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		if la := e.outboundFor(ap.Addr().Unmap()); la.IsValid() {
			switch network {
			case "udp", "udp4", "udp6":
				d.LocalAddr = &net.UDPAddr{IP: la.AsSlice()}
			default:
				d.LocalAddr = &net.TCPAddr{IP: la.AsSlice()}
			}
		}
	}
	return d.DialContext(ctx, network, addr)
}
