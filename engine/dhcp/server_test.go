package dhcp

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
)

func macN(n byte) [6]byte { return [6]byte{0x52, 0x54, 0, 0, 0, n} }

// newReq builds a client request of type typ from the given MAC.
func newReq(mac [6]byte, typ byte, opts ...func(*message)) *message {
	m := &message{op: opRequest, htype: htypeEthernet, hlen: hlenEthernet, xid: 0x1234, flags: flagBroadcast}
	copy(m.chaddr[:], mac[:])
	m.ciaddr = netip.IPv4Unspecified()
	m.addOption(optMessageType, []byte{typ})
	for _, o := range opts {
		o(m)
	}
	return m
}

func withRequested(a string) func(*message) {
	return func(m *message) { m.addOption(optRequestedIP, addrBytes(netip.MustParseAddr(a))) }
}

func withServerID(a string) func(*message) {
	return func(m *message) { m.addOption(optServerID, addrBytes(netip.MustParseAddr(a))) }
}

func withCiaddr(a string) func(*message) {
	return func(m *message) { m.ciaddr = netip.MustParseAddr(a) }
}

// roundTrip encodes and re-parses m, as the wire would.
func roundTrip(t *testing.T, m *message) *message {
	t.Helper()
	p, err := parseMessage(m.encode())
	if err != nil {
		t.Fatalf("parse own encoding: %v", err)
	}
	return p
}

func TestHandle(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	type step struct {
		req      *message
		at       time.Duration // after now
		wantType byte          // 0: no reply
		wantAddr string        // yiaddr, "" to skip
		wantDst  string
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"discover request", []step{
			{req: newReq(macN(1), typeDiscover), wantType: typeOffer, wantAddr: "10.0.2.15", wantDst: "255.255.255.255"},
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.15"), withServerID("10.0.2.2")), wantType: typeAck, wantAddr: "10.0.2.15", wantDst: "255.255.255.255"},
		}},
		{"same mac same address, next mac next address", []step{
			{req: newReq(macN(1), typeDiscover), wantType: typeOffer, wantAddr: "10.0.2.15"},
			{req: newReq(macN(2), typeDiscover), wantType: typeOffer, wantAddr: "10.0.2.16"},
			{req: newReq(macN(1), typeDiscover), wantType: typeOffer, wantAddr: "10.0.2.15"},
		}},
		{"requested address honoured when free", []step{
			{req: newReq(macN(1), typeDiscover, withRequested("10.0.2.20")), wantType: typeOffer, wantAddr: "10.0.2.20"},
			{req: newReq(macN(2), typeDiscover, withRequested("10.0.2.20")), wantType: typeOffer, wantAddr: "10.0.2.15"},
			{req: newReq(macN(3), typeDiscover, withRequested("10.0.2.99")), wantType: typeOffer, wantAddr: "10.0.2.16"},
		}},
		{"wrong address nak", []step{
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.100")), wantType: typeNak, wantDst: "255.255.255.255"},
			{req: newReq(macN(1), typeRequest, withRequested("192.168.1.5")), wantType: typeNak},
			{req: newReq(macN(1), typeRequest), wantType: typeNak},
		}},
		{"address of another client nak", []step{
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.15")), wantType: typeAck, wantAddr: "10.0.2.15"},
			{req: newReq(macN(2), typeRequest, withRequested("10.0.2.15")), wantType: typeNak},
		}},
		{"init-reboot request for a free pool address acked", []step{
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.17")), wantType: typeAck, wantAddr: "10.0.2.17"},
		}},
		{"other server chosen", []step{
			{req: newReq(macN(1), typeDiscover), wantType: typeOffer},
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.15"), withServerID("10.0.2.1"))},
		}},
		{"renew unicast", []step{
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.15")), wantType: typeAck},
			{req: newReq(macN(1), typeRequest, withCiaddr("10.0.2.15")), at: time.Hour, wantType: typeAck, wantAddr: "10.0.2.15", wantDst: "10.0.2.15"},
		}},
		{"release keeps the mapping for the same mac", []step{
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.15")), wantType: typeAck},
			{req: newReq(macN(1), typeRelease, withCiaddr("10.0.2.15"))},
			{req: newReq(macN(2), typeDiscover), wantType: typeOffer, wantAddr: "10.0.2.16"},
			{req: newReq(macN(1), typeDiscover), wantType: typeOffer, wantAddr: "10.0.2.15"},
		}},
		{"decline skips the address", []step{
			{req: newReq(macN(1), typeRequest, withRequested("10.0.2.15")), wantType: typeAck},
			{req: newReq(macN(1), typeDecline, withRequested("10.0.2.15"))},
			{req: newReq(macN(1), typeDiscover), wantType: typeOffer, wantAddr: "10.0.2.16"},
			{req: newReq(macN(2), typeDiscover), at: 11 * time.Minute, wantType: typeOffer, wantAddr: "10.0.2.15"},
		}},
		{"inform", []step{
			{req: newReq(macN(1), typeInform, withCiaddr("10.0.2.100")), wantType: typeAck, wantAddr: "0.0.0.0", wantDst: "10.0.2.100"},
			{req: newReq(macN(1), typeInform)},
		}},
		{"not a request", []step{
			{req: func() *message { m := newReq(macN(1), typeDiscover); m.op = opReply; return m }()},
			{req: func() *message { m := newReq(macN(1), typeDiscover); m.hlen = 16; return m }()},
			{req: newReq(macN(1), typeDiscover, func(m *message) { m.giaddr = netip.MustParseAddr("10.9.9.9") })},
			{req: newReq(macN(1), typeOffer)},
			{req: newReq(macN(1), 0)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(testutil.DefaultPlan(t), Options{LeaseTime: DefaultLeaseTime})
			for i, st := range tc.steps {
				rep, ok := s.handle(roundTrip(t, st.req), now.Add(st.at))
				if st.wantType == 0 {
					if ok {
						t.Fatalf("step %d: unexpected reply type %d", i, rep.msg.msgType())
					}
					continue
				}
				if !ok {
					t.Fatalf("step %d: no reply, want type %d", i, st.wantType)
				}
				got := roundTrip(t, rep.msg)
				if got.msgType() != st.wantType {
					t.Fatalf("step %d: reply type %d, want %d", i, got.msgType(), st.wantType)
				}
				if st.wantAddr != "" && got.yiaddr.String() != st.wantAddr {
					t.Fatalf("step %d: yiaddr %s, want %s", i, got.yiaddr, st.wantAddr)
				}
				if st.wantDst != "" && rep.dst.String() != st.wantDst {
					t.Fatalf("step %d: destination %s, want %s", i, rep.dst, st.wantDst)
				}
				if got.xid != st.req.xid || got.op != opReply || got.chaddr != st.req.chaddr {
					t.Fatalf("step %d: reply header does not match the request: %+v", i, got)
				}
				if sid, _ := got.optAddr(optServerID); sid.String() != "10.0.2.2" {
					t.Fatalf("step %d: server id %s", i, sid)
				}
			}
		})
	}
}

func TestPoolExhaustionReclaimsExpired(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := newServer(testutil.DefaultPlan(t), Options{LeaseTime: time.Hour})
	for i := range 16 {
		rep, ok := s.handle(newReq(macN(byte(i)), typeRequest, withRequested(netip.AddrFrom4([4]byte{10, 0, 2, byte(15 + i)}).String())), now)
		if !ok || rep.msg.msgType() != typeAck {
			t.Fatalf("lease %d not granted", i)
		}
	}
	if _, ok := s.handle(newReq(macN(100), typeDiscover), now.Add(time.Minute)); ok {
		t.Fatal("offer from a full pool")
	}
	// Renew all but the lease of MAC 3, then let the others' terms run.
	for i := range 16 {
		if i != 3 {
			s.handle(newReq(macN(byte(i)), typeRequest, withCiaddr(netip.AddrFrom4([4]byte{10, 0, 2, byte(15 + i)}).String())), now.Add(50*time.Minute))
		}
	}
	rep, ok := s.handle(newReq(macN(100), typeDiscover), now.Add(61*time.Minute))
	if !ok || rep.msg.yiaddr.String() != "10.0.2.18" {
		t.Fatalf("expired lease not reclaimed: ok=%v %v", ok, rep.msg)
	}
	// The new holder's request is granted; the old holder is then NAKed.
	rep2, _ := s.handle(newReq(macN(100), typeRequest, withRequested("10.0.2.18")), now.Add(62*time.Minute))
	if rep2.msg.msgType() != typeAck {
		t.Fatalf("new holder's request: type %d", rep2.msg.msgType())
	}
	rep, _ = s.handle(newReq(macN(3), typeRequest, withCiaddr("10.0.2.18")), now.Add(63*time.Minute))
	if rep.msg.msgType() != typeNak {
		t.Fatalf("old holder's request after takeover: type %d", rep.msg.msgType())
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     Options
		wantDNS  bool
		wantMTU  []byte
		wantTime []byte
	}{
		{"defaults", Options{LeaseTime: DefaultLeaseTime}, true, nil, be32(86400)},
		{"mtu 65520, no dns", Options{MTU: 65520, DisableDNS: true, LeaseTime: time.Hour}, false, be16(65520), be32(3600)},
		{"mtu 1500 not sent", Options{MTU: 1500, LeaseTime: time.Hour}, true, nil, be32(3600)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(testutil.DefaultPlan(t), tc.opts)
			rep, ok := s.handle(newReq(macN(1), typeDiscover), time.Now())
			if !ok {
				t.Fatal("no offer")
			}
			m := roundTrip(t, rep.msg)
			if !bytes.Equal(m.options[optSubnetMask], []byte{255, 255, 255, 0}) {
				t.Errorf("mask %v", m.options[optSubnetMask])
			}
			if r, _ := m.optAddr(optRouter); r.String() != "10.0.2.2" {
				t.Errorf("router %v", r)
			}
			d, hasDNS := m.optAddr(optDNS)
			if hasDNS != tc.wantDNS || (hasDNS && d.String() != "10.0.2.3") {
				t.Errorf("dns %v present=%v, want present=%v", d, hasDNS, tc.wantDNS)
			}
			if !bytes.Equal(m.options[optMTU], tc.wantMTU) {
				t.Errorf("mtu option %v, want %v", m.options[optMTU], tc.wantMTU)
			}
			if !bytes.Equal(m.options[optLeaseTime], tc.wantTime) {
				t.Errorf("lease time %v, want %v", m.options[optLeaseTime], tc.wantTime)
			}
		})
	}
}

func TestParseMessage(t *testing.T) {
	good := newReq(macN(1), typeDiscover, withRequested("10.0.2.20")).encode()
	withOpts := func(opts ...byte) []byte {
		b := append([]byte(nil), good[:minMsgLen]...)
		return append(b, opts...)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr bool
	}{
		{"good", good, false},
		{"empty", nil, true},
		{"short", good[:minMsgLen-1], true},
		{"bad cookie", append(append([]byte(nil), good[:fixedLen]...), 1, 2, 3, 4, 255), true},
		{"no options", withOpts(), false},
		{"no end option", withOpts(53, 1, 1), false},
		{"length overruns", withOpts(53, 200, 1), true},
		{"missing length", withOpts(0, 0, 53), true},
		{"pads then end", withOpts(0, 0, 0, 255, 9, 9), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseMessage(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseMessage error = %v, want error %v", err, tc.wantErr)
			}
		})
	}
	// Repeated options concatenate (RFC 3396), and long ones split on encode.
	m, err := parseMessage(withOpts(12, 2, 'a', 'b', 12, 1, 'c', 255))
	if err != nil || string(m.options[12]) != "abc" {
		t.Fatalf("concatenation: %q %v", m.options[12], err)
	}
	long := &message{op: opReply}
	long.addOption(12, bytes.Repeat([]byte{'x'}, 300))
	back, err := parseMessage(long.encode())
	if err != nil || len(back.options[12]) != 300 {
		t.Fatalf("long option round trip: %d %v", len(back.options[12]), err)
	}
	if l := len(newReq(macN(1), typeDiscover).encode()); l < minReplyLn {
		t.Fatalf("encoded length %d < %d", l, minReplyLn)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(newReq(macN(1), typeDiscover, withRequested("10.0.2.20")).encode())
	f.Add(newReq(macN(2), typeRequest, withCiaddr("10.0.2.15")).encode())
	f.Add(newReq(macN(3), typeInform, withCiaddr("10.0.2.100")).encode()[:minMsgLen+3])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		// Whatever parses must survive the server and re-encoding.
		s := newServer(testutil.DefaultPlan(t), Options{LeaseTime: time.Hour, MTU: 9000})
		if rep, ok := s.handle(m, time.Now()); ok {
			if _, err := parseMessage(rep.msg.encode()); err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
		}
		if _, err := parseMessage(m.encode()); err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
	})
}
