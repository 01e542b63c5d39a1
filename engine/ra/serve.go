// Package ra makes the engine an IPv6 router on the guest's link: it sends
// router advertisements for fd00::/64 (SLAAC), with the gateway's
// link-local address as router, the MTU and the DNS server fd00::3 (RFC 8106
// RDNSS), unsolicited and in answer to router solicitations.
//
// gVisor does not send router advertisements itself, even with forwarding
// on, so they are built here and sent through raw ICMPv6 endpoints
// (gvisor.dev/gvisor/pkg/tcpip/transport/raw), which do not need the stack
// to be created with a RawFactory.
package ra

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/raw"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/slirp4netns-go/slirp4netns/engine/internal/stackgrow"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// Timing defaults. The lifetimes are libslirp's (so the C slirp4netns's):
// router lifetime 1800 s, prefix valid 1 day and preferred 4 hours.
const (
	// DefaultInterval is the steady-state interval between unsolicited
	// advertisements when Options.Interval is zero.
	DefaultInterval = time.Minute
	// initialInterval and initialCount: the first advertisements come
	// quicker (RFC 4861 6.2.4), so a guest that is just booting learns its
	// router soon even without soliciting.
	initialInterval = 3 * time.Second
	initialCount    = 3
	// minGap bounds the advertisement rate however many solicitations
	// arrive: a solicited advertisement is multicast at most once per gap.
	minGap = time.Second

	minRouterLifetime = 1800 * time.Second
	maxRouterLifetime = 9000 * time.Second // RFC 4861 limit
	validLifetime     = 24 * time.Hour
	preferredLifetime = 4 * time.Hour
	curHopLimit       = 64
	defaultMTU        = 1500
)

// Options configures the advertisements.
type Options struct {
	// MTU is announced in the MTU option; default 1500.
	MTU int
	// DisableDNS omits the RDNSS option (--disable-dns).
	DisableDNS bool
	// Interval between unsolicited advertisements after the first few;
	// default DefaultInterval.
	Interval time.Duration
	// Bound, if set, is called once the service's sockets are bound, so
	// that the engine attaches its link only when the service can answer.
	Bound func()
}

// Serve advertises plan's IPv6 prefix on NIC nic of s until ctx ends, then
// returns nil once its goroutines have finished. Advertisements come from
// the NIC's IPv6 link-local address (the EUI-64 one derived from the NIC's
// MAC if none is assigned; the engine should assign it so that the guest's
// neighbour solicitations for its router are answered).
func Serve(ctx context.Context, s *stack.Stack, nic tcpip.NICID, plan policy.Plan, opts Options) error {
	return serve(ctx, s, nic, plan, opts, true)
}

// serve is Serve; with unsolicited false it only answers solicitations
// (tests use that to check the solicitation path on its own).
func serve(ctx context.Context, s *stack.Stack, nic tcpip.NICID, plan policy.Plan, opts Options, unsolicited bool) error {
	info, ok := s.NICInfo()[nic]
	if !ok {
		return fmt.Errorf("ra: no NIC %d", nic)
	}
	if len(info.LinkAddress) != 6 {
		return fmt.Errorf("ra: NIC %d has no Ethernet address", nic)
	}
	if !plan.Network6.IsValid() {
		return errors.New("ra: plan has no IPv6 prefix")
	}
	ad := newAdvert(plan, [6]byte([]byte(info.LinkAddress)), opts)
	src := linkLocal(s, nic, info.LinkAddress)

	tx, err := newSender(s, nic, src)
	if err != nil {
		return err
	}
	defer tx.Close()
	var rxq waiter.Queue
	rx, err := newReceiver(s, nic, &rxq)
	if err != nil {
		return err
	}
	defer rx.Close()
	if opts.Bound != nil {
		opts.Bound()
	}

	solicited := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() { receiveLoop(ctx, rx, &rxq, solicited) })
	sendLoop(ctx, nic, tx, ad.encode(), opts.Interval, unsolicited, solicited)
	wg.Wait()
	return nil
}

func newAdvert(plan policy.Plan, mac [6]byte, opts Options) *advert {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.MTU <= 0 {
		opts.MTU = defaultMTU
	}
	lifetime := min(max(minRouterLifetime, 3*opts.Interval), maxRouterLifetime)
	ad := &advert{
		curHopLimit:       curHopLimit,
		routerLifetime:    lifetime,
		mac:               mac,
		mtu:               uint32(opts.MTU),
		prefix:            plan.Network6,
		validLifetime:     validLifetime,
		preferredLifetime: preferredLifetime,
	}
	if !opts.DisableDNS && plan.DNS6.IsValid() {
		ad.dns = plan.DNS6
		ad.dnsLifetime = lifetime
	}
	return ad
}

// linkLocal returns the NIC's assigned link-local address, or the EUI-64
// one for mac.
func linkLocal(s *stack.Stack, nic tcpip.NICID, mac tcpip.LinkAddress) tcpip.Address {
	for _, pa := range s.AllAddresses()[nic] {
		if pa.Protocol == ipv6.ProtocolNumber && header.IsV6LinkLocalUnicastAddress(pa.AddressWithPrefix.Address) {
			return pa.AddressWithPrefix.Address
		}
	}
	return header.LinkLocalAddr(mac)
}

// newSender returns a raw ICMPv6 endpoint bound to src on nic, sending with
// hop limit 255 and not looping its multicasts back into our own stack
// (which would otherwise process its own advertisements).
func newSender(s *stack.Stack, nic tcpip.NICID, src tcpip.Address) (tcpip.Endpoint, error) {
	var wq waiter.Queue
	ep, terr := raw.NewEndpoint(s, ipv6.ProtocolNumber, header.ICMPv6ProtocolNumber, &wq)
	if terr != nil {
		return nil, fmt.Errorf("ra: raw ICMPv6 endpoint: %s", terr)
	}
	ep.SocketOptions().SetMulticastLoop(false)
	var denyAll tcpip.ICMPv6Filter
	for i := range denyAll.DenyType {
		denyAll.DenyType[i] = ^uint32(0)
	}
	steps := []struct {
		what string
		f    func() tcpip.Error
	}{
		{"receive filter", func() tcpip.Error { return ep.SetSockOpt(&denyAll) }},
		{"hop limit", func() tcpip.Error { return ep.SetSockOptInt(tcpip.IPv6HopLimitOption, ndpHopLimit) }},
		{"multicast hop limit", func() tcpip.Error { return ep.SetSockOptInt(tcpip.MulticastTTLOption, ndpHopLimit) }},
		{"bind " + src.String(), func() tcpip.Error { return ep.Bind(tcpip.FullAddress{NIC: nic, Addr: src}) }},
	}
	for _, st := range steps {
		if terr := st.f(); terr != nil {
			ep.Close()
			return nil, fmt.Errorf("ra: sender %s: %s", st.what, terr)
		}
	}
	return ep, nil
}

// newReceiver returns a raw ICMPv6 endpoint on nic that queues router
// solicitations only. It is not bound to an address: solicitations go to
// ff02::2, and raw endpoints see them whatever groups the NIC joined.
func newReceiver(s *stack.Stack, nic tcpip.NICID, wq *waiter.Queue) (tcpip.Endpoint, error) {
	ep, terr := raw.NewEndpoint(s, ipv6.ProtocolNumber, header.ICMPv6ProtocolNumber, wq)
	if terr != nil {
		return nil, fmt.Errorf("ra: raw ICMPv6 endpoint: %s", terr)
	}
	var onlyRS tcpip.ICMPv6Filter
	for i := range onlyRS.DenyType {
		onlyRS.DenyType[i] = ^uint32(0)
	}
	onlyRS.DenyType[icmpRouterSolicit/32] &^= 1 << (icmpRouterSolicit % 32)
	ep.SocketOptions().SetReceiveHopLimit(true)
	if terr := ep.SetSockOpt(&onlyRS); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("ra: receiver filter: %s", terr)
	}
	if terr := ep.Bind(tcpip.FullAddress{NIC: nic}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("ra: receiver bind nic %d: %s", nic, terr)
	}
	return ep, nil
}

// receiveLoop signals solicited for each valid router solicitation.
func receiveLoop(ctx context.Context, ep tcpip.Endpoint, wq *waiter.Queue, solicited chan<- struct{}) {
	stackgrow.To4K() // the endpoint's read path needs it: one shallow copy
	entry, notify := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	for {
		var buf bytes.Buffer
		res, terr := ep.Read(&buf, tcpip.ReadOptions{NeedRemoteAddr: true})
		switch terr.(type) {
		case nil:
			if validSolicitation(buf.Bytes(), res) {
				select {
				case solicited <- struct{}{}:
				default: // one pending signal is enough
				}
			}
			continue
		case *tcpip.ErrWouldBlock:
		default:
			return // closed
		}
		select {
		case <-ctx.Done():
			return
		case <-notify:
		}
	}
}

// validSolicitation applies RFC 4861 6.1.1 to a received message.
func validSolicitation(b []byte, res tcpip.ReadResult) bool {
	if !res.ControlMessages.HasHopLimit || res.ControlMessages.HopLimit != ndpHopLimit {
		return false
	}
	rs, err := parseRS(b)
	if err != nil {
		return false
	}
	// No source link-layer option from the unspecified address.
	return !(res.RemoteAddr.Addr == header.IPv6Any && rs.sourceLinkAddr != nil)
}

// sendLoop multicasts msg to all nodes: initialCount times initialInterval
// apart, then every interval, and soon after each solicitation (at most
// once per minGap).
func sendLoop(ctx context.Context, nic tcpip.NICID, ep tcpip.Endpoint, msg []byte, interval time.Duration, unsolicited bool, solicited <-chan struct{}) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	first := min(initialInterval, interval)
	dst := tcpip.FullAddress{NIC: nic, Addr: header.IPv6AllNodesMulticastAddress}
	var last time.Time
	sent := 0
	next := time.Now()
	if !unsolicited {
		next = next.Add(100 * 365 * 24 * time.Hour) // never, unless solicited
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timer.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return
		case <-solicited:
			soon := last.Add(minGap)
			if now := time.Now(); soon.Before(now) {
				soon = now
			}
			if soon.Before(next) {
				next = soon
			}
		case <-timer.C:
			// A failed send (e.g. link down) is retried at the next tick.
			_, _ = ep.Write(bytes.NewReader(msg), tcpip.WriteOptions{To: &dst})
			last = time.Now()
			sent++
			switch {
			case !unsolicited:
				next = last.Add(100 * 365 * 24 * time.Hour)
			case sent < initialCount:
				next = last.Add(first)
			default:
				next = last.Add(interval)
			}
		}
	}
}
