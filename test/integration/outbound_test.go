package integration

import (
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// End-to-end checks of --outbound-addr and --outbound-addr6 (man page:
// "specify outbound ipv4/ipv6 address slirp should bind to", or an
// interface whose address is used), side by side with C slirp4netns 1.2.0.
// TestOutboundAddr (datapath_test.go) covers IPv4 TCP to the outer network;
// these add UDP, IPv6, the gateway's loopback mapping and the values that
// cannot be used.

// Host destinations of the guest's flows: the peer-address servers (see
// startServices), on the outer network and behind the gateway addresses.
var (
	peer4   = hostPort(addrA, peerPort)
	peer6   = hostPort(addrA6, peerPort)
	peerGW4 = hostPort("10.0.2.2", peerPort) // the outer 127.0.0.1
	peerGW6 = hostPort("fd00::2", peerPort)  // the outer ::1
)

// sourceProbe is one guest flow and the source address the outer server
// must see for it.
type sourceProbe struct {
	dst  string // host:port the guest sends to
	want string // the source the server sees, with both implementations
	// wantC, when set, is what the C version's flows show instead of want.
	wantC string
}

func (p sourceProbe) expected() string {
	if p.wantC != "" && !goImpl() {
		return p.wantC
	}
	return p.want
}

// TestOutboundSource: a guest TCP connection and a UDP datagram arrive at
// the outer server from the address --outbound-addr / --outbound-addr6
// chose (an address, or an interface's first address of the family), each
// option acting on its own family only.
//
// Where C 1.2.0 differs: it resolves an --outbound-addr6 interface name by
// looking up the --outbound-addr value instead (main.c passes
// opt->outbound_addr to get_interface_addr), so --outbound-addr6=IFACE alone
// fails at start ("outbound-addr has to be valid ipv4 address or iterface
// name.", exit 1) and, with --outbound-addr=IFACE4, takes IFACE4's IPv6
// address. Both bind every host socket to the outbound address, also those
// of flows to the gateway (the host's loopback).
func TestOutboundSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		c, ours outcome
		probes  []sourceProbe
	}{
		// Without the options the kernel picks the source: for a local
		// destination, the destination itself.
		{name: "default", probes: []sourceProbe{{dst: peer4, want: addrA}, {dst: peer6, want: addrA6}}},
		{name: "v4 address", args: []string{"--outbound-addr=" + addrB2},
			probes: []sourceProbe{{dst: peer4, want: addrB2}, {dst: peer6, want: addrA6}}},
		{name: "v4 interface", args: []string{"--outbound-addr=" + vethB},
			probes: []sourceProbe{{dst: peer4, want: addrB1}, {dst: peer6, want: addrA6}}},
		{name: "v6 address", args: []string{"--outbound-addr6=" + addrB62},
			probes: []sourceProbe{{dst: peer6, want: addrB62}, {dst: peer4, want: addrA}}},
		{name: "v6 interface", args: []string{"--outbound-addr6=" + vethB}, c: fails,
			probes: []sourceProbe{{dst: peer6, want: addrB61}, {dst: peer4, want: addrA}}},
		{name: "both addresses", args: []string{"--outbound-addr=" + addrB2, "--outbound-addr6=" + addrB62},
			probes: []sourceProbe{{dst: peer4, want: addrB2}, {dst: peer6, want: addrB62}}},
		// The man page's example: one interface for both families.
		{name: "both interfaces", args: []string{"--outbound-addr=" + vethB, "--outbound-addr6=" + vethB},
			probes: []sourceProbe{{dst: peer4, want: addrB1}, {dst: peer6, want: addrB61}}},
		// Two interfaces: C takes the IPv6 address of the --outbound-addr one.
		{name: "different interfaces", args: []string{"--outbound-addr=" + vethB, "--outbound-addr6=lo"},
			probes: []sourceProbe{{dst: peer4, want: addrB1}, {dst: peer6, want: "::1", wantC: addrB61}}},
		// The gateway addresses stand for the host's loopback.
		{name: "gateway", args: []string{"--outbound-addr=" + addrB2, "--outbound-addr6=" + addrB62},
			probes: []sourceProbe{{dst: peerGW4, want: addrB2}, {dst: peerGW6, want: addrB62}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startOutboundCase(t, tc.c, tc.ours, tc.args)
			if g == nil {
				return
			}
			for _, p := range tc.probes {
				want := p.expected()
				if out := GuestTool(t, g, "dial", p.dst, "5s"); !strings.Contains(out, "peer="+want+"\n") {
					t.Errorf("TCP to %s: outer server saw %q, want peer=%s", p.dst, out, want)
				}
				if out := GuestTool(t, g, "udp", p.dst, "who"); strings.TrimSpace(out) != "peer="+want {
					t.Errorf("UDP to %s: outer server saw %q, want peer=%s", p.dst, out, want)
				}
			}
		})
	}
}

// outcomeOf returns the outcome of the implementation under test.
func outcomeOf(c, ours outcome) outcome {
	if goImpl() {
		return ours
	}
	return c
}

// startOutboundCase starts a guest for a case with args, or, when this
// implementation's outcome (c or ours) is that it fails, checks that it
// refuses them at start and returns nil.
func startOutboundCase(t *testing.T, c, ours outcome, args []string) *Guest {
	t.Helper()
	t.Logf("%s: C %v, ours %v", implName(), c, ours)
	if outcomeOf(c, ours) == fails {
		expectStartFailure(t, args)
		return nil
	}
	return startIPv6Guest(t, args)
}

// startIPv6Guest starts slirp4netns with -c --enable-ipv6 and args for a
// new guest and waits for the guest's SLAAC address.
func startIPv6Guest(t *testing.T, args []string) *Guest {
	t.Helper()
	g := StartGuest(t)
	StartSlirp(t, g, append([]string{"-c", "--enable-ipv6"}, args...)...)
	WaitGuestGlobal6(t, g, "tap0", "fd00:")
	return g
}

// outboundMessage is the error message for an unusable --outbound-addr
// (want6 false) or --outbound-addr6 value. C 1.2.0 words the IPv6 one as
// the IPv4 one, with a typo; ours names the option.
func outboundMessage(want6 bool) string {
	switch {
	case !want6:
		return "outbound-addr has to be valid ipv4 address or interface name."
	case goImpl():
		return "outbound-addr6 has to be valid ipv6 address or interface name."
	}
	return "outbound-addr has to be valid ipv4 address or iterface name."
}

// expectStartFailure runs slirp4netns -c --enable-ipv6 with args and
// expects it to refuse them before it is ready, with exit status 1 and the
// message (see outboundMessage) of the option that fails: args' last one.
func expectStartFailure(t *testing.T, args []string) {
	t.Helper()
	g := StartGuest(t)
	res := RunSlirpFail(t, g, SlirpOptions{Args: append([]string{"-c", "--enable-ipv6"}, args...), Tap: "tap0"})
	var ee *exec.ExitError
	if errors.As(res.Err, &ee) && ee.ExitCode() != 1 {
		t.Errorf("exit status %d, want 1", ee.ExitCode())
	}
	msg := outboundMessage(strings.HasPrefix(args[len(args)-1], "--outbound-addr6="))
	if !strings.Contains(res.Stderr, msg) {
		t.Errorf("stderr lacks %q:\n%s", msg, res.Stderr)
	}
}

// TestOutboundUnusable: values that name no usable address. A name that is
// neither an address of the option's family nor an interface with such an
// address is refused at start with exit status 1 by both implementations
// (C refuses every --outbound-addr6 interface name without --outbound-addr,
// see TestOutboundSource). An address of the right family is taken as it
// is, as the C version does, even if no interface has it (or, link-local,
// it has no scope): slirp4netns starts, and the guest's flows of that
// family fail because the host refuses to bind to it.
func TestOutboundUnusable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		c, ours outcome
		// probe is a flow that must fail when slirp4netns starts.
		probe string
	}{
		{name: "v4 unknown interface", args: []string{"--outbound-addr=nosuch0"}, c: fails, ours: fails},
		{name: "v6 unknown interface", args: []string{"--outbound-addr6=nosuch0"}, c: fails, ours: fails},
		{name: "v4 IPv6 address", args: []string{"--outbound-addr=" + addrB62}, c: fails, ours: fails},
		{name: "v6 IPv4 address", args: []string{"--outbound-addr6=" + addrB2}, c: fails, ours: fails},
		{name: "v4 interface without IPv4", args: []string{"--outbound-addr=" + vethC}, c: fails, ours: fails},
		{name: "v6 interface with link-local only", args: []string{"--outbound-addr6=" + vethC}, c: fails, ours: fails},
		{name: "v4 address on no interface", args: []string{"--outbound-addr=192.0.2.99"}, probe: peer4},
		{name: "v6 address on no interface", args: []string{"--outbound-addr6=2001:db8:ffff::99"}, probe: peer6},
		// The man page's example form: a link-local address carries no
		// scope, so the host cannot bind to it.
		{name: "v6 link-local address", args: []string{"--outbound-addr6=" + addrC6L}, probe: peer6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := startOutboundCase(t, tc.c, tc.ours, tc.args)
			if g == nil {
				return
			}
			if out := GuestTool(t, g, "dial", tc.probe, "3s"); strings.Contains(out, "connected") {
				t.Errorf("TCP to %s connected despite an unusable outbound address: %q", tc.probe, out)
			}
			if out := GuestTool(t, g, "udp", tc.probe, "who"); strings.Contains(out, "peer=") {
				t.Errorf("UDP to %s answered despite an unusable outbound address: %q", tc.probe, out)
			}
			// Flows of the other family are not affected.
			other := peer4
			if netip.MustParseAddrPort(tc.probe).Addr().Is4() {
				other = peer6
			}
			if out := GuestTool(t, g, "dial", other, "5s"); !strings.Contains(out, "peer=") {
				t.Errorf("TCP to %s failed: %q", other, out)
			}
		})
	}
}
