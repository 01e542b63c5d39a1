package dhcp

import (
	"net/netip"
	"time"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

const (
	// offerHold is how long an address offered in answer to a DISCOVER
	// stays reserved for that client before its REQUEST.
	offerHold = 2 * time.Minute
	// declineHold is how long an address a client DECLINEd (someone else
	// uses it) is skipped.
	declineHold = 10 * time.Minute
)

// lease binds a client MAC to an address. Entries are kept after expiry so
// that a returning client gets the same address; an expired entry is only
// reclaimed when the pool has no never-used address left.
type lease struct {
	addr   netip.Addr
	expiry time.Time
}

// server is the DHCP state machine, independent of any socket: handle maps
// a request to a reply. It is not safe for concurrent use.
type server struct {
	plan      policy.Plan
	opts      Options
	leases    map[[6]byte]*lease
	byAddr    map[netip.Addr][6]byte
	declined  map[netip.Addr]time.Time
	leaseSecs uint32
}

func newServer(plan policy.Plan, opts Options) *server {
	if opts.LeaseTime <= 0 {
		opts.LeaseTime = DefaultLeaseTime
	}
	// The option is 32 bits of seconds; 0xffffffff would mean infinite.
	opts.LeaseTime = min(opts.LeaseTime, 0xfffffffe*time.Second)
	return &server{
		plan:      plan,
		opts:      opts,
		leases:    map[[6]byte]*lease{},
		byAddr:    map[netip.Addr][6]byte{},
		declined:  map[netip.Addr]time.Time{},
		leaseSecs: uint32(opts.LeaseTime / time.Second),
	}
}

// reply is what handle decides to send.
type reply struct {
	msg *message
	// dst is the destination address: the client's ciaddr, or the limited
	// broadcast address while the client has no address.
	dst netip.Addr
}

var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// handle processes one request and returns the reply to send, if any.
func (s *server) handle(req *message, now time.Time) (reply, bool) {
	if req.op != opRequest || req.htype != htypeEthernet || req.hlen != hlenEthernet {
		return reply{}, false
	}
	// Relayed requests cannot happen on this point-to-point link.
	if req.giaddr.IsValid() && !req.giaddr.IsUnspecified() {
		return reply{}, false
	}
	switch req.msgType() {
	case typeDiscover:
		return s.discover(req, now)
	case typeRequest:
		return s.request(req, now)
	case typeRelease:
		s.release(req, now)
	case typeDecline:
		s.decline(req, now)
	case typeInform:
		return s.inform(req)
	}
	return reply{}, false
}

func (s *server) discover(req *message, now time.Time) (reply, bool) {
	want, _ := req.optAddr(optRequestedIP)
	a, ok := s.allocate(req.mac(), want, now)
	if !ok {
		return reply{}, false
	}
	if l := s.leases[req.mac()]; l.expiry.Before(now.Add(offerHold)) {
		l.expiry = now.Add(offerHold)
	}
	m := s.newReply(req, typeOffer)
	m.yiaddr = a
	s.addConfig(m, true)
	return reply{msg: m, dst: s.replyDst(req)}, true
}

func (s *server) request(req *message, now time.Time) (reply, bool) {
	if sid, ok := req.optAddr(optServerID); ok && sid != s.plan.Gateway {
		// The client chose another server's offer; its reservation here
		// simply expires.
		return reply{}, false
	}
	want, ok := req.optAddr(optRequestedIP)
	if !ok {
		want = req.ciaddr // RENEWING or REBINDING
	}
	if !s.grantable(req.mac(), want, now) {
		return s.nak(req), true
	}
	s.bind(req.mac(), want, now.Add(s.opts.LeaseTime))
	m := s.newReply(req, typeAck)
	m.ciaddr = req.ciaddr
	m.yiaddr = want
	s.addConfig(m, true)
	return reply{msg: m, dst: s.replyDst(req)}, true
}

func (s *server) nak(req *message) reply {
	m := s.newReply(req, typeNak)
	// A NAK is always broadcast (RFC 2131 4.3.2): the client's address is
	// what is being refused.
	m.flags |= flagBroadcast
	return reply{msg: m, dst: broadcast}
}

func (s *server) release(req *message, now time.Time) {
	if l, ok := s.leases[req.mac()]; ok && l.addr == req.ciaddr {
		l.expiry = now
	}
}

func (s *server) decline(req *message, now time.Time) {
	a, ok := req.optAddr(optRequestedIP)
	if l, have := s.leases[req.mac()]; ok && have && l.addr == a {
		s.unbind(req.mac())
		s.declined[a] = now.Add(declineHold)
	}
}

func (s *server) inform(req *message) (reply, bool) {
	if !req.ciaddr.Is4() || req.ciaddr.IsUnspecified() {
		return reply{}, false
	}
	m := s.newReply(req, typeAck)
	m.ciaddr = req.ciaddr
	s.addConfig(m, false)
	return reply{msg: m, dst: req.ciaddr}, true
}

// replyDst picks the destination per RFC 2131 4.1: unicast to a client that
// already has an address, broadcast otherwise (unicast to yiaddr would need
// an ARP entry the client cannot answer for yet).
func (s *server) replyDst(req *message) netip.Addr {
	if req.ciaddr.Is4() && !req.ciaddr.IsUnspecified() {
		return req.ciaddr
	}
	return broadcast
}

func (s *server) newReply(req *message, typ byte) *message {
	m := &message{
		op: opReply, htype: req.htype, hlen: req.hlen,
		xid: req.xid, flags: req.flags, giaddr: req.giaddr, chaddr: req.chaddr,
	}
	m.addOption(optMessageType, []byte{typ})
	m.addOption(optServerID, addrBytes(s.plan.Gateway))
	return m
}

// addConfig adds the network configuration options; withLease adds the
// lease time and renewal timers (not for INFORM).
func (s *server) addConfig(m *message, withLease bool) {
	if withLease {
		m.addOption(optLeaseTime, be32(s.leaseSecs))
		m.addOption(optRenewalT1, be32(s.leaseSecs/2))
		m.addOption(optRebindingT2, be32(uint32(uint64(s.leaseSecs)*7/8)))
	}
	m.addOption(optSubnetMask, []byte(s.plan.Netmask))
	m.addOption(optRouter, addrBytes(s.plan.Gateway))
	if !s.opts.DisableDNS {
		m.addOption(optDNS, addrBytes(s.plan.DNS))
	}
	if s.opts.MTU > 0 && s.opts.MTU != 1500 && s.opts.MTU <= 0xffff {
		m.addOption(optMTU, be16(uint16(s.opts.MTU)))
	}
}

func (s *server) inPool(a netip.Addr) bool {
	return a.Is4() && a.Compare(s.plan.DHCPStart) >= 0 && a.Compare(s.plan.DHCPEnd) <= 0
}

// usable reports whether a is a pool address that mac may take now without
// taking it from anyone: never used, or already mac's.
func (s *server) usable(mac [6]byte, a netip.Addr, now time.Time) bool {
	if !s.inPool(a) || now.Before(s.declined[a]) {
		return false
	}
	owner, taken := s.byAddr[a]
	return !taken || owner == mac
}

// grantable reports whether mac may have a now: usable, or held by another
// client whose lease has expired.
func (s *server) grantable(mac [6]byte, a netip.Addr, now time.Time) bool {
	if s.usable(mac, a, now) {
		return true
	}
	if !s.inPool(a) || now.Before(s.declined[a]) {
		return false
	}
	return !s.leases[s.byAddr[a]].expiry.After(now)
}

// allocate returns mac's address: its current one, else the one it asks
// for if it can have it, else the first never-used one, else the one whose
// lease expired longest ago. The address is bound to mac (already expired:
// the caller sets the expiry).
func (s *server) allocate(mac [6]byte, want netip.Addr, now time.Time) (netip.Addr, bool) {
	if l, ok := s.leases[mac]; ok && !now.Before(s.declined[l.addr]) {
		return l.addr, true
	}
	if s.grantable(mac, want, now) {
		s.bind(mac, want, now)
		return want, true
	}
	for a := s.plan.DHCPStart; s.inPool(a); a = a.Next() {
		if s.usable(mac, a, now) {
			s.bind(mac, a, now)
			return a, true
		}
	}
	var oldest *lease
	for _, l := range s.leases {
		if l.expiry.After(now) || now.Before(s.declined[l.addr]) {
			continue
		}
		if oldest == nil || l.expiry.Before(oldest.expiry) {
			oldest = l
		}
	}
	if oldest == nil {
		return netip.Addr{}, false
	}
	a := oldest.addr
	s.bind(mac, a, now)
	return a, true
}

// bind records that a belongs to mac until expiry, taking it from any
// previous holder and releasing mac's previous address.
func (s *server) bind(mac [6]byte, a netip.Addr, expiry time.Time) {
	if owner, ok := s.byAddr[a]; ok && owner != mac {
		delete(s.leases, owner)
	}
	if l, ok := s.leases[mac]; ok && l.addr != a {
		delete(s.byAddr, l.addr)
	}
	s.leases[mac] = &lease{addr: a, expiry: expiry}
	s.byAddr[a] = mac
}

func (s *server) unbind(mac [6]byte) {
	if l, ok := s.leases[mac]; ok {
		delete(s.byAddr, l.addr)
		delete(s.leases, mac)
	}
}
