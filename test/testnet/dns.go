package testnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Zone is the set of names the test DNS server answers, as fully qualified
// lower-case names ("host.slirp.test.") mapped to addresses. A and AAAA
// questions are answered from it; every other name gets NXDOMAIN. The server
// never recurses or forwards, so a query can never leave the namespace.
type Zone map[string][]netip.Addr

// ServeDNS starts an authoritative DNS server for zone on addr over both UDP
// and TCP (on the same port; with port 0, the one UDP got), registers it
// with s, and returns the UDP address once both sockets listen.
func (s *Services) ServeDNS(addr string, zone Zone) (net.Addr, error) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		_ = w.WriteMsg(zone.answer(req))
	})
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("dns: listen udp %s: %w", addr, err)
	}
	ua := pc.LocalAddr().(*net.UDPAddr)
	tcpAddr := net.JoinHostPort(ua.IP.String(), strconv.Itoa(ua.Port))
	ln, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("dns: listen tcp %s: %w", tcpAddr, err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		failed := make(chan error, 1)
		srv.NotifyStartedFunc = func() { close(started) }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			failed <- srv.ActivateAndServe()
		}()
		select {
		case <-started:
			s.add(dnsCloser{srv})
		case err := <-failed:
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("dns: serve on %s: %w", ua, err)
		}
	}
	return ua, nil
}

// dnsCloser adapts dns.Server's Shutdown to io.Closer.
type dnsCloser struct{ srv *dns.Server }

func (c dnsCloser) Close() error { return c.srv.Shutdown() }

// answer builds the reply to req from the zone.
func (z Zone) answer(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	addrs, ok := z[strings.ToLower(q.Name)]
	if !ok {
		m.Rcode = dns.RcodeNameError
		return m
	}
	for _, a := range addrs {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 60}
		switch {
		case q.Qtype == dns.TypeA && a.Is4():
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
		case q.Qtype == dns.TypeAAAA && a.Is6():
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
		}
	}
	return m
}

// LookupA asks server ("10.0.2.3:53") for the A records of name over network
// ("udp" or "tcp") and returns them. A reply other than NOERROR is an error.
func LookupA(ctx context.Context, server, network, name string) ([]netip.Addr, error) {
	// A short timeout: tests also check that queries fail (--disable-dns).
	c := &dns.Client{Net: network, Timeout: 3 * time.Second}
	req := new(dns.Msg)
	req.SetQuestion(dns.Fqdn(name), dns.TypeA)
	resp, _, err := c.ExchangeContext(ctx, req, server)
	if err != nil {
		return nil, fmt.Errorf("dns query %s A over %s to %s: %w", name, network, server, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("dns query %s A over %s to %s: %s", name, network, server, dns.RcodeToString[resp.Rcode])
	}
	var out []netip.Addr
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				out = append(out, ip)
			}
		}
	}
	return out, nil
}
