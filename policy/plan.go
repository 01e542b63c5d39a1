package policy

import (
	"fmt"
	"net"
	"net/netip"
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
// messages: it must parse, be IPv4, have a prefix length of 1-25 and be a
// network address (no host bits set).
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR: %s", s)
	}
	if p.Bits() < MinPrefix || p.Bits() > MaxPrefix {
		return netip.Prefix{}, fmt.Errorf("prefix length needs to be %d-%d", MinPrefix, MaxPrefix)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("CIDR needs to be a network address like 10.0.2.0/24, not like %s", s)
	}
	return p, nil
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
