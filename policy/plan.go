package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Offsets from the network address, from the man page.
const (
	gatewayOffset   = 2
	dnsOffset       = 3
	dhcpStartOffset = 15
	dhcpEndOffset   = 30
	guestOffset     = 100
)

// Fixed IPv6 plan (the man page: fd00::/64, gateway fd00::2, DNS fd00::3).
var (
	network6 = netip.MustParsePrefix("fd00::/64")
	gateway6 = netip.MustParseAddr("fd00::2")
	dns6     = netip.MustParseAddr("fd00::3")
	guest6   = netip.MustParseAddr("fd00::100")
)

// ParseCIDR validates a --cidr value with the C slirp4netns's rules and
// messages: it must look like a.b.c.d/n (1-3 digits per byte, 1-2 digits of
// prefix), be a valid IPv4 address, have a prefix length of 1-25 and be a
// network address (no host bits set). The last message names
// 10.0.2.100/24 whatever the input, exactly as the C version does.
func ParseCIDR(s string) (netip.Prefix, error) {
	addr, bits, ok := splitCIDR(s)
	if !ok {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR: %s", s)
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("invalid network address: %s", addr)
	}
	if bits < MinPrefix || bits > MaxPrefix {
		return netip.Prefix{}, fmt.Errorf("prefix length needs to be %d-%d", MinPrefix, MaxPrefix)
	}
	p := netip.PrefixFrom(a, bits)
	if p.Masked() != p {
		return netip.Prefix{}, errors.New("CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24")
	}
	return p, nil
}

// splitCIDR matches s against ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ (the
// C version's regular expression) and returns the address part and the
// prefix length.
func splitCIDR(s string) (addr string, bits int, ok bool) {
	addr, prefix, found := strings.Cut(s, "/")
	if !found || !digitsOnly(prefix, 1, 2) {
		return "", 0, false
	}
	octets := strings.Split(addr, ".")
	if len(octets) != 4 {
		return "", 0, false
	}
	for _, o := range octets {
		if !digitsOnly(o, 1, 3) {
			return "", 0, false
		}
	}
	bits, err := strconv.Atoi(prefix)
	if err != nil {
		return "", 0, false
	}
	return addr, bits, true
}

// digitsOnly reports whether s is min to max ASCII digits.
func digitsOnly(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// NewPlan derives the address plan from a validated IPv4 network.
func NewPlan(network netip.Prefix) Plan {
	return Plan{
		Network:   network,
		Netmask:   net.CIDRMask(network.Bits(), 32),
		Gateway:   addOffset(network.Addr(), gatewayOffset),
		DNS:       addOffset(network.Addr(), dnsOffset),
		DHCPStart: addOffset(network.Addr(), dhcpStartOffset),
		DHCPEnd:   addOffset(network.Addr(), dhcpEndOffset),
		Guest:     addOffset(network.Addr(), guestOffset),
		Network6:  network6,
		Gateway6:  gateway6,
		DNS6:      dns6,
		Guest6:    guest6,
	}
}

// PlanFor parses cidr and returns its plan.
func PlanFor(cidr string) (Plan, error) {
	p, err := ParseCIDR(cidr)
	if err != nil {
		return Plan{}, err
	}
	return NewPlan(p), nil
}

func addOffset(a netip.Addr, off uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
