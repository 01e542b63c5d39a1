package policy

import (
	"bytes"
	"encoding/json"
	"math"
	"net/netip"
	"strconv"
)

// Host port-forward protocols accepted by add_hostfwd.
const (
	ProtoTCP = "tcp"
	ProtoUDP = "udp"
)

// DefaultHostFwdAddr is the host_addr used when add_hostfwd omits it.
const DefaultHostFwdAddr = "0.0.0.0"

// HostFwd is a validated host port forward: connections (TCP) or datagrams
// (UDP) arriving at HostAddr:HostPort on the host go to GuestAddr:GuestPort
// in the guest.
type HostFwd struct {
	Proto     string     // ProtoTCP or ProtoUDP
	HostAddr  netip.Addr // IPv4 or IPv6; never an IPv4-mapped IPv6 address
	HostPort  uint16     // 1-65535
	GuestAddr netip.Addr // inside the guest network (or fd00::/64 with IPv6)
	GuestPort uint16     // 1-65535
}

// HostFwdArgs holds the members of an add_hostfwd "arguments" object exactly
// as they arrived; a nil field means the member was absent.
type HostFwdArgs struct {
	Proto     json.RawMessage `json:"proto"`
	HostAddr  json.RawMessage `json:"host_addr"`
	HostPort  json.RawMessage `json:"host_port"`
	GuestAddr json.RawMessage `json:"guest_addr"`
	GuestPort json.RawMessage `json:"guest_port"`
}

// HostFwdError names the add_hostfwd argument that is invalid. Its text is
// the C slirp4netns's wording, "bad arguments.<field>".
type HostFwdError struct {
	Field string // "proto", "host_addr", "host_port", "guest_addr" or "guest_port"
}

func (e *HostFwdError) Error() string { return "bad arguments." + e.Field }

// ParseHostFwd validates add_hostfwd arguments against the address plan,
// checking the fields in the C slirp4netns's order (proto, host_addr,
// host_port, guest_addr, guest_port) so that the first bad one is reported.
//
// Rules (C slirp4netns 1.2.0 behaviour, and where we are stricter):
//   - proto is the string "tcp" or "udp" (the C crashes when it is absent).
//   - host_addr absent, null or "" means 0.0.0.0. Otherwise an IPv4 or IPv6
//     address (the C accepts IPv4 only, and treats a non-string as absent;
//     we reject a non-string). IPv6 does not need -6: it only concerns the
//     host side.
//   - host_port and guest_port are integral JSON numbers 1-65535 (the C
//     truncates fractions and wraps values outside 0-65535; we reject them).
//   - guest_addr absent, null or "" means the --configure address
//     (network+100), also for an IPv6 host_addr. Otherwise an IPv4 address
//     inside the guest network that is not the network, broadcast, gateway
//     or DNS address, or, when enableIPv6, an address of fd00::/64 other
//     than fd00::, the gateway fd00::2 and the DNS fd00::3. (The C accepts
//     any IPv4 address; forwarding outside the guest network or to
//     slirp's own addresses cannot reach the guest.)
func ParseHostFwd(args HostFwdArgs, plan Plan, enableIPv6 bool) (HostFwd, error) {
	var fwd HostFwd
	var ok bool
	if fwd.Proto, ok = parseProto(args.Proto); !ok {
		return HostFwd{}, &HostFwdError{Field: "proto"}
	}
	if fwd.HostAddr, ok = parseHostAddr(args.HostAddr); !ok {
		return HostFwd{}, &HostFwdError{Field: "host_addr"}
	}
	if fwd.HostPort, ok = parsePort(args.HostPort); !ok {
		return HostFwd{}, &HostFwdError{Field: "host_port"}
	}
	if fwd.GuestAddr, ok = parseGuestAddr(args.GuestAddr, plan, enableIPv6); !ok {
		return HostFwd{}, &HostFwdError{Field: "guest_addr"}
	}
	if fwd.GuestPort, ok = parsePort(args.GuestPort); !ok {
		return HostFwd{}, &HostFwdError{Field: "guest_port"}
	}
	return fwd, nil
}

// ParseHostFwdID validates a remove_hostfwd "id": an integral JSON number of
// at least 1. (The C truncates 1.5 to 1; we reject it.)
func ParseHostFwdID(raw json.RawMessage) (int, bool) {
	v, ok := parseIntegral(raw)
	if !ok || v < 1 || v > math.MaxInt32 {
		return 0, false
	}
	return int(v), true
}

func parseProto(raw json.RawMessage) (string, bool) {
	s, isString := jsonString(raw)
	if !isString || (s != ProtoTCP && s != ProtoUDP) {
		return "", false
	}
	return s, true
}

func parseHostAddr(raw json.RawMessage) (netip.Addr, bool) {
	s, ok := optionalString(raw)
	if !ok {
		return netip.Addr{}, false
	}
	if s == "" {
		s = DefaultHostFwdAddr
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	// An IPv4-mapped address would bind an IPv6 socket that only ever sees
	// IPv4 traffic; bind the IPv4 address it stands for instead.
	return a.Unmap(), true
}

func parseGuestAddr(raw json.RawMessage, plan Plan, enableIPv6 bool) (netip.Addr, bool) {
	s, ok := optionalString(raw)
	if !ok {
		return netip.Addr{}, false
	}
	if s == "" {
		return plan.Guest, true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	a = a.Unmap()
	if a.Is4() {
		return a, validGuest4(a, plan)
	}
	return a, enableIPv6 && validGuest6(a, plan)
}

// validGuest4 reports whether a can be a guest address of plan's network:
// inside it, and none of the addresses slirp itself answers for.
func validGuest4(a netip.Addr, plan Plan) bool {
	if !plan.Network.Contains(a) {
		return false
	}
	return a != plan.Network.Addr() && a != lastAddr(plan.Network) &&
		a != plan.Gateway && a != plan.DNS
}

func validGuest6(a netip.Addr, plan Plan) bool {
	if !plan.Network6.Contains(a) {
		return false
	}
	return a != plan.Network6.Addr() && a != plan.Gateway6 && a != plan.DNS6
}

// lastAddr returns the broadcast address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= ^uint32(0) >> p.Bits()
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func parsePort(raw json.RawMessage) (uint16, bool) {
	v, ok := parseIntegral(raw)
	if !ok || v < 1 || v > math.MaxUint16 {
		return 0, false
	}
	return uint16(v), true
}

// parseIntegral accepts a JSON number with an integral value, written in any
// JSON form ("80", "80.0", "8e1"), as the C's parser does.
func parseIntegral(raw json.RawMessage) (int64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false // absent, or not a number
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// jsonString decodes raw when it is a JSON string.
func jsonString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// optionalString decodes an optional string member: absent and null give
// "" (the C treats both as "use the default"); another type is invalid.
func optionalString(raw json.RawMessage) (string, bool) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return "", true
	}
	return jsonString(trimmed)
}
