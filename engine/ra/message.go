package ra

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// ICMPv6 / NDP constants (RFC 4861, RFC 8106).
const (
	icmpRouterSolicit = 133
	icmpRouterAdvert  = 134

	ndpHopLimit = 255 // NDP messages must carry hop limit 255

	optSourceLinkAddr = 1
	optPrefixInfo     = 3
	optMTU            = 5
	optRDNSS          = 25

	prefixFlagOnLink = 0x80 // L
	prefixFlagAuto   = 0x40 // A

	raHeaderLen = 16 // type .. retrans timer
	rsHeaderLen = 8  // type .. reserved
)

// advert is the content of one router advertisement.
type advert struct {
	curHopLimit       uint8
	routerLifetime    time.Duration
	mac               [6]byte
	mtu               uint32 // 0: no MTU option
	prefix            netip.Prefix
	validLifetime     time.Duration
	preferredLifetime time.Duration
	dns               netip.Addr // invalid: no RDNSS option
	dnsLifetime       time.Duration
}

// encode returns the ICMPv6 message (checksum zero: the raw endpoint fills
// it in, as RFC 3542 requires of ICMPv6 raw sockets).
func (a *advert) encode() []byte {
	b := make([]byte, raHeaderLen, 128)
	b[0] = icmpRouterAdvert
	b[4] = a.curHopLimit
	// b[5]: M and O flags off: addresses by SLAAC, DNS by RDNSS.
	binary.BigEndian.PutUint16(b[6:8], uint16(seconds(a.routerLifetime)))
	// Reachable time and retrans timer 0: unspecified by this router.

	b = append(b, optSourceLinkAddr, 1)
	b = append(b, a.mac[:]...)

	if a.mtu != 0 {
		b = append(b, optMTU, 1, 0, 0)
		b = binary.BigEndian.AppendUint32(b, a.mtu)
	}

	b = append(b, optPrefixInfo, 4, byte(a.prefix.Bits()), prefixFlagOnLink|prefixFlagAuto)
	b = binary.BigEndian.AppendUint32(b, seconds(a.validLifetime))
	b = binary.BigEndian.AppendUint32(b, seconds(a.preferredLifetime))
	b = append(b, 0, 0, 0, 0)
	p := a.prefix.Masked().Addr().As16()
	b = append(b, p[:]...)

	if a.dns.IsValid() {
		b = append(b, optRDNSS, 3, 0, 0)
		b = binary.BigEndian.AppendUint32(b, seconds(a.dnsLifetime))
		d := a.dns.As16()
		b = append(b, d[:]...)
	}
	return b
}

// seconds converts d to whole seconds, saturating at the field maximum.
func seconds(d time.Duration) uint32 {
	s := d / time.Second
	if s < 0 {
		return 0
	}
	if s > 0xffffffff {
		return 0xffffffff
	}
	return uint32(s)
}

// solicitation is a validated router solicitation.
type solicitation struct {
	// sourceLinkAddr is the sender's link address option, if present.
	sourceLinkAddr []byte
}

var errNotRS = errors.New("not a router solicitation")

// parseRS validates an ICMPv6 message (as read from a raw ICMPv6 endpoint:
// no IP header) as a router solicitation per RFC 4861 6.1.1, minus the
// checks that need the IP header (done by the caller). Lengths from the
// wire are never trusted: every option must fit in b.
func parseRS(b []byte) (solicitation, error) {
	var rs solicitation
	if len(b) < rsHeaderLen || b[0] != icmpRouterSolicit {
		return rs, errNotRS
	}
	if b[1] != 0 {
		return rs, fmt.Errorf("router solicitation: code %d", b[1])
	}
	opts := b[rsHeaderLen:]
	for len(opts) > 0 {
		if len(opts) < 2 {
			return rs, errors.New("router solicitation: truncated option")
		}
		l := int(opts[1]) * 8
		if l == 0 {
			return rs, errors.New("router solicitation: zero-length option")
		}
		if l > len(opts) {
			return rs, fmt.Errorf("router solicitation: option %d of %d bytes overruns message", opts[0], l)
		}
		if opts[0] == optSourceLinkAddr {
			rs.sourceLinkAddr = opts[2:l]
		}
		opts = opts[l:]
	}
	return rs, nil
}
