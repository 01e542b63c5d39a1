package engine

import (
	"context"
	"fmt"
	"net"
	"net/netip"

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
	if !e.cfg.DisableDNS {
		e.startDNS()
	}
	dhcpOpts := dhcp.Options{MTU: e.cfg.MTU, DisableDNS: e.cfg.DisableDNS}
	e.runService("dhcp", func(ctx context.Context) error {
		return dhcp.Serve(ctx, e.stack, nicID, e.plan, dhcpOpts)
	})
	if e.cfg.EnableIPv6 {
		raOpts := ra.Options{MTU: e.cfg.MTU, DisableDNS: e.cfg.DisableDNS}
		e.runService("ra", func(ctx context.Context) error {
			return ra.Serve(ctx, e.stack, nicID, e.plan, raOpts)
		})
	}
	return nil
}

// startDNS serves DNS on network+3 (and fd00::3 with -6), relaying to the
// host's resolv.conf nameservers.
func (e *Engine) startDNS() {
	addrs := []tcpip.FullAddress{{NIC: nicID, Addr: tcpAddr(e.plan.DNS)}}
	if e.cfg.EnableIPv6 {
		addrs = append(addrs, tcpip.FullAddress{NIC: nicID, Addr: tcpAddr(e.plan.DNS6)})
	}
	relay := dns.NewRelay(dns.Options{Dial: e.dialOutbound})
	e.runService("dns", func(ctx context.Context) error { return relay.ServeStack(ctx, e.stack, addrs) })
}

// runService runs serve until the engine closes.
func (e *Engine) runService(name string, serve func(ctx context.Context) error) {
	e.goFunc(func() {
		if err := serve(e.ctx); err != nil && e.ctx.Err() == nil {
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
