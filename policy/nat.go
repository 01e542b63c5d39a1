package policy

import (
	"errors"
	"fmt"
	"net/netip"
)

// Errors returned by OutboundTarget. The engine answers a refused TCP flow
// with a reset and a refused UDP flow with ICMP port unreachable.
var (
	// ErrHostLoopbackDisabled: the guest asked for the gateway address while
	// --disable-host-loopback is set.
	ErrHostLoopbackDisabled = errors.New("host loopback access is disabled")
	// ErrForbiddenDestination: the destination is one the guest must never
	// reach through the NAT (the host's loopback directly, the guest network
	// itself, multicast, unspecified addresses, IPv6 without -6).
	ErrForbiddenDestination = errors.New("destination not allowed")
	// ErrServiceAddress: the destination is the built-in DNS address; only the
	// DNS service answers there, so nothing is forwarded.
	ErrServiceAddress = errors.New("destination is the built-in DNS address")
)

var (
	loopback4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	loopback6 = netip.IPv6Loopback()
)

// OutboundTarget decides where a guest flow to dst goes on the host. It
// returns the address the engine must connect to, or an error saying why the
// flow is refused. The rules, from the man page and the C slirp4netns:
//
//   - the gateway (network+2, fd00::2) is the host's loopback (127.0.0.1,
//     ::1), unless --disable-host-loopback;
//   - the DNS address (network+3, fd00::3) is served only by the DNS service:
//     flows the service does not take are refused;
//   - no other destination may reach the host's loopback: 127.0.0.0/8, ::1 and
//     the guest's own network (IPv4 network, fd00::/64) are refused, as are
//     unspecified, multicast, broadcast and link-local destinations;
//   - everything else goes to dst itself.
//
// IPv4-mapped IPv6 destinations are judged as the IPv4 address they carry.
func OutboundTarget(plan Plan, cfg Config, dst netip.Addr) (netip.Addr, error) {
	dst = dst.Unmap()
	if !dst.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: invalid address", ErrForbiddenDestination)
	}
	if dst.Is6() && !cfg.EnableIPv6 {
		return netip.Addr{}, fmt.Errorf("%w: %s (IPv6 is not enabled)", ErrForbiddenDestination, dst)
	}
	switch dst {
	case plan.Gateway, plan.Gateway6:
		if cfg.DisableHostLoopback {
			return netip.Addr{}, fmt.Errorf("%w: %s", ErrHostLoopbackDisabled, dst)
		}
		if dst.Is4() {
			return loopback4, nil
		}
		return loopback6, nil
	case plan.DNS, plan.DNS6:
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrServiceAddress, dst)
	}
	if reason := forbidden(plan, dst); reason != "" {
		return netip.Addr{}, fmt.Errorf("%w: %s (%s)", ErrForbiddenDestination, dst, reason)
	}
	return dst, nil
}

// forbidden says why dst may never be a NAT destination, or "" if it may.
func forbidden(plan Plan, dst netip.Addr) string {
	switch {
	case dst.IsLoopback():
		return "host loopback"
	case dst.IsUnspecified():
		return "unspecified"
	case dst.IsMulticast(), dst.IsInterfaceLocalMulticast(), dst.IsLinkLocalMulticast():
		return "multicast"
	case dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "broadcast"
	case dst.IsLinkLocalUnicast():
		return "link-local"
	case plan.Network.IsValid() && plan.Network.Contains(dst):
		return "guest network"
	case plan.Network6.IsValid() && plan.Network6.Contains(dst):
		return "guest network"
	}
	return ""
}

// IsGuestSource reports whether src is an acceptable source address for a
// packet coming from the guest: inside the guest network (fd00::/64 or
// link-local with IPv6), or unspecified (DHCP discovery, IPv6 duplicate
// address detection). Packets from anywhere else are spoofed and dropped.
func IsGuestSource(plan Plan, cfg Config, src netip.Addr) bool {
	src = src.Unmap()
	if src.IsUnspecified() {
		return true
	}
	if src.Is4() {
		return plan.Network.Contains(src) && src != plan.Gateway && src != plan.DNS
	}
	if !cfg.EnableIPv6 {
		return false
	}
	if src.IsLinkLocalUnicast() {
		return true
	}
	return plan.Network6.Contains(src) && src != plan.Gateway6 && src != plan.DNS6
}

// ChooseOutboundAddr resolves an --outbound-addr / --outbound-addr6 value:
// an IP address of the wanted family, or the name of an interface whose
// first address of that family is used. ifaceAddrs returns an interface's
// addresses (nil error and no addresses if it has none); it is only called
// when value is not an address. An empty value yields the zero Addr.
func ChooseOutboundAddr(value string, want6 bool, ifaceAddrs func(name string) ([]netip.Addr, error)) (netip.Addr, error) {
	if value == "" {
		return netip.Addr{}, nil
	}
	family := "IPv4"
	if want6 {
		family = "IPv6"
	}
	if a, err := netip.ParseAddr(value); err == nil {
		a = a.Unmap()
		if a.Is6() != want6 {
			return netip.Addr{}, fmt.Errorf("outbound address %q is not an %s address", value, family)
		}
		return a, nil
	}
	addrs, err := ifaceAddrs(value)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("outbound interface %q: %w", value, err)
	}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is6() == want6 && !(want6 && a.IsLinkLocalUnicast()) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("outbound interface %q has no %s address", value, family)
}

// ForwardSource is the source address the guest sees for a host port-forward
// connection from client to guest: the client's own address when it is a
// routable address of the guest's family, so that servers in the guest can
// log and filter real clients; the gateway address for loopback clients
// (and for clients the guest could not answer directly: another address
// family, or an address inside the guest network).
func ForwardSource(plan Plan, client, guest netip.Addr) netip.Addr {
	client, guest = client.Unmap(), guest.Unmap()
	gw := plan.Gateway
	if guest.Is6() {
		gw = plan.Gateway6
	}
	switch {
	case !client.IsValid(), client.Is4() != guest.Is4(), forbidden(plan, client) != "":
		return gw
	}
	return client
}
