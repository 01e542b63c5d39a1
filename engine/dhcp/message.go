package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// BOOTP/DHCP wire constants (RFC 2131, RFC 2132).
const (
	opRequest = 1
	opReply   = 2

	htypeEthernet = 1
	hlenEthernet  = 6

	fixedLen   = 236 // op .. file
	magicLen   = 4
	minMsgLen  = fixedLen + magicLen
	minReplyLn = 300 // BOOTP minimum; some clients drop shorter replies

	flagBroadcast = 0x8000
)

var magicCookie = [magicLen]byte{99, 130, 83, 99}

// Option codes used here.
const (
	optPad         = 0
	optSubnetMask  = 1
	optRouter      = 3
	optDNS         = 6
	optMTU         = 26
	optRequestedIP = 50
	optLeaseTime   = 51
	optMessageType = 53
	optServerID    = 54
	optRenewalT1   = 58
	optRebindingT2 = 59
	optEnd         = 255
)

// DHCP message types (option 53).
const (
	typeDiscover = 1
	typeOffer    = 2
	typeRequest  = 3
	typeDecline  = 4
	typeAck      = 5
	typeNak      = 6
	typeRelease  = 7
	typeInform   = 8
)

// message is a parsed BOOTP/DHCP message. sname and file are not kept: the
// server neither reads nor sets them.
type message struct {
	op, htype, hlen, hops byte
	xid                   uint32
	secs, flags           uint16
	ciaddr, yiaddr        netip.Addr
	siaddr, giaddr        netip.Addr
	chaddr                [16]byte
	// options holds each option's data; repeated options are concatenated
	// (RFC 3396). order keeps first-appearance order for encoding.
	options map[byte][]byte
	order   []byte
}

var errShort = errors.New("dhcp: message too short")

// parseMessage decodes b. It never trusts a length from the wire: every
// option must fit inside b.
func parseMessage(b []byte) (*message, error) {
	if len(b) < minMsgLen {
		return nil, errShort
	}
	if [magicLen]byte(b[fixedLen:minMsgLen]) != magicCookie {
		return nil, errors.New("dhcp: bad magic cookie")
	}
	m := &message{
		op: b[0], htype: b[1], hlen: b[2], hops: b[3],
		xid:     binary.BigEndian.Uint32(b[4:8]),
		secs:    binary.BigEndian.Uint16(b[8:10]),
		flags:   binary.BigEndian.Uint16(b[10:12]),
		ciaddr:  addr4(b[12:16]),
		yiaddr:  addr4(b[16:20]),
		siaddr:  addr4(b[20:24]),
		giaddr:  addr4(b[24:28]),
		options: map[byte][]byte{},
	}
	copy(m.chaddr[:], b[28:44])
	if err := m.parseOptions(b[minMsgLen:]); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *message) parseOptions(b []byte) error {
	for i := 0; i < len(b); {
		code := b[i]
		switch code {
		case optPad:
			i++
			continue
		case optEnd:
			return nil
		}
		if i+1 >= len(b) {
			return fmt.Errorf("dhcp: option %d: missing length", code)
		}
		l := int(b[i+1])
		if i+2+l > len(b) {
			return fmt.Errorf("dhcp: option %d: length %d overruns message", code, l)
		}
		m.addOption(code, b[i+2:i+2+l])
		i += 2 + l
	}
	// A missing end option is tolerated, as most servers do.
	return nil
}

// addOption appends data to option code (concatenating repeats).
func (m *message) addOption(code byte, data []byte) {
	if m.options == nil {
		m.options = map[byte][]byte{}
	}
	old, ok := m.options[code]
	if !ok {
		m.order = append(m.order, code)
	}
	m.options[code] = append(append([]byte(nil), old...), data...)
}

func addr4(b []byte) netip.Addr { return netip.AddrFrom4([4]byte(b)) }

// optAddr returns option code as one IPv4 address, if it is exactly that.
func (m *message) optAddr(code byte) (netip.Addr, bool) {
	v, ok := m.options[code]
	if !ok || len(v) != 4 {
		return netip.Addr{}, false
	}
	return addr4(v), true
}

// msgType returns the DHCP message type, 0 if absent or malformed.
func (m *message) msgType() byte {
	v := m.options[optMessageType]
	if len(v) != 1 {
		return 0
	}
	return v[0]
}

// mac returns the client hardware address (Ethernet only).
func (m *message) mac() [6]byte { return [6]byte(m.chaddr[:6]) }

// encode serialises m. Options longer than 255 bytes are split into
// repeated options (RFC 3396).
func (m *message) encode() []byte {
	b := make([]byte, minMsgLen, minReplyLn)
	b[0], b[1], b[2], b[3] = m.op, m.htype, m.hlen, m.hops
	binary.BigEndian.PutUint32(b[4:8], m.xid)
	binary.BigEndian.PutUint16(b[8:10], m.secs)
	binary.BigEndian.PutUint16(b[10:12], m.flags)
	for i, a := range []netip.Addr{m.ciaddr, m.yiaddr, m.siaddr, m.giaddr} {
		if a.Is4() {
			a4 := a.As4()
			copy(b[12+4*i:], a4[:])
		}
	}
	copy(b[28:44], m.chaddr[:])
	copy(b[fixedLen:], magicCookie[:])
	for _, code := range m.order {
		v := m.options[code]
		for {
			n := min(len(v), 255)
			b = append(b, code, byte(n))
			b = append(b, v[:n]...)
			v = v[n:]
			if len(v) == 0 {
				break
			}
		}
	}
	b = append(b, optEnd)
	for len(b) < minReplyLn {
		b = append(b, optPad)
	}
	return b
}

// be32 encodes v big-endian.
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// be16 encodes v big-endian.
func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// addrBytes returns the 4 bytes of an IPv4 address.
func addrBytes(a netip.Addr) []byte { b := a.As4(); return b[:] }
