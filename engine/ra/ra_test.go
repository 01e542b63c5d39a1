package ra

import (
	"context"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
)

func TestAdvertEncoding(t *testing.T) {
	mac := [6]byte{0x52, 0x55, 0x0a, 0x00, 0x02, 0x02}
	for _, tc := range []struct {
		name     string
		opts     Options
		wantMTU  uint32
		wantDNS  bool
		lifetime time.Duration
	}{
		{"defaults", Options{}, 1500, true, 1800 * time.Second},
		{"mtu, no dns", Options{MTU: 65520, DisableDNS: true}, 65520, false, 1800 * time.Second},
		{"long interval", Options{Interval: time.Hour}, 1500, true, 9000 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newAdvert(testutil.DefaultPlan(t), mac, tc.opts).encode()
			icmp := header.ICMPv6(b)
			if icmp.Type() != header.ICMPv6RouterAdvert || icmp.Code() != 0 {
				t.Fatalf("type %d code %d", icmp.Type(), icmp.Code())
			}
			ra := header.NDPRouterAdvert(icmp.MessageBody())
			if ra.CurrHopLimit() != 64 || ra.ManagedAddrConfFlag() || ra.OtherConfFlag() || ra.RouterLifetime() != tc.lifetime {
				t.Fatalf("header: hop %d M %v O %v lifetime %v", ra.CurrHopLimit(), ra.ManagedAddrConfFlag(), ra.OtherConfFlag(), ra.RouterLifetime())
			}
			it, err := ra.Options().Iter(true)
			if err != nil {
				t.Fatalf("options: %v", err)
			}
			var gotSLLA, gotPrefix, gotDNS bool
			var gotMTU uint32
			for {
				opt, done, err := it.Next()
				if err != nil {
					t.Fatalf("option: %v", err)
				}
				if done {
					break
				}
				switch o := opt.(type) {
				case header.NDPSourceLinkLayerAddressOption:
					gotSLLA = o.EthernetAddress() == tcpip.LinkAddress(mac[:])
				case header.NDPPrefixInformation:
					gotPrefix = o.Subnet().String() == "fd00::/64" && o.OnLinkFlag() && o.AutonomousAddressConfigurationFlag() &&
						o.ValidLifetime() == 24*time.Hour && o.PreferredLifetime() == 4*time.Hour
				case header.NDPRecursiveDNSServer:
					addrs, err := o.Addresses()
					gotDNS = err == nil && len(addrs) == 1 && addrs[0].String() == "fd00::3" && o.Lifetime() == tc.lifetime
				default:
					// gVisor does not model the MTU option; check the raw bytes below.
				}
			}
			if !gotSLLA || !gotPrefix || gotDNS != tc.wantDNS {
				t.Fatalf("options: slla %v prefix %v dns %v (want dns %v)", gotSLLA, gotPrefix, gotDNS, tc.wantDNS)
			}
			opts := b[raHeaderLen:]
			for len(opts) >= 8 {
				if opts[0] == optMTU {
					gotMTU = uint32(opts[4])<<24 | uint32(opts[5])<<16 | uint32(opts[6])<<8 | uint32(opts[7])
				}
				opts = opts[int(opts[1])*8:]
			}
			if gotMTU != tc.wantMTU {
				t.Fatalf("MTU option %d, want %d", gotMTU, tc.wantMTU)
			}
		})
	}
}

func rsBytes(opts ...byte) []byte { return append([]byte{133, 0, 0, 0, 0, 0, 0, 0}, opts...) }

func TestParseRS(t *testing.T) {
	slla := []byte{1, 1, 0x52, 0x54, 0, 0, 0, 1}
	for _, tc := range []struct {
		name     string
		in       []byte
		wantErr  bool
		wantSLLA bool
	}{
		{"minimal", rsBytes(), false, false},
		{"with slla", rsBytes(slla...), false, true},
		{"unknown option skipped", rsBytes(append([]byte{99, 1, 0, 0, 0, 0, 0, 0}, slla...)...), false, true},
		{"short", rsBytes()[:7], true, false},
		{"empty", nil, true, false},
		{"router advert", append([]byte{134}, rsBytes()[1:]...), true, false},
		{"bad code", append([]byte{133, 1}, rsBytes()[2:]...), true, false},
		{"zero length option", rsBytes(1, 0, 0, 0, 0, 0, 0, 0), true, false},
		{"option overruns", rsBytes(1, 2, 0, 0, 0, 0, 0, 0), true, false},
		{"truncated option", rsBytes(1), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := parseRS(tc.in)
			if (err != nil) != tc.wantErr || (rs.sourceLinkAddr != nil) != tc.wantSLLA {
				t.Fatalf("parseRS = %v, %v; want error %v slla %v", rs, err, tc.wantErr, tc.wantSLLA)
			}
		})
	}
}

func TestValidSolicitation(t *testing.T) {
	ll := tcpip.AddrFrom16(netip.MustParseAddr("fe80::1").As16())
	res := func(hop uint8, src tcpip.Address) tcpip.ReadResult {
		var r tcpip.ReadResult
		r.ControlMessages.HasHopLimit = true
		r.ControlMessages.HopLimit = hop
		r.RemoteAddr.Addr = src
		return r
	}
	slla := rsBytes(1, 1, 0x52, 0x54, 0, 0, 0, 1)
	for _, tc := range []struct {
		name string
		b    []byte
		res  tcpip.ReadResult
		want bool
	}{
		{"valid", slla, res(255, ll), true},
		{"unspecified source without slla", rsBytes(), res(255, header.IPv6Any), true},
		{"unspecified source with slla", slla, res(255, header.IPv6Any), false},
		{"forwarded (hop limit 254)", slla, res(254, ll), false},
		{"no hop limit", slla, tcpip.ReadResult{}, false},
		{"garbage", []byte{133}, res(255, ll), false},
	} {
		if got := validSolicitation(tc.b, tc.res); got != tc.want {
			t.Errorf("%s: validSolicitation = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzParseRS(f *testing.F) {
	f.Add(rsBytes())
	f.Add(rsBytes(1, 1, 0x52, 0x54, 0, 0, 0, 1))
	f.Add(rsBytes(1, 255))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := parseRS(b)
		if err == nil && rs.sourceLinkAddr != nil && len(rs.sourceLinkAddr) > len(b) {
			t.Fatal("option larger than the message")
		}
	})
}

// gatewayMAC is the MAC of the stack's side of the test TAP.
const gatewayMAC = tcpip.LinkAddress("\x52\x55\x0a\x00\x02\x02")

// TestKernelGuest attaches the server to a real TAP whose other side is a
// Linux network namespace, and checks that the kernel autoconfigures an
// fd00::/64 address, a default route via the router's link-local address
// and the advertised MTU.
func TestKernelGuest(t *testing.T) {
	for _, tc := range []struct {
		name string
		// solicitedOnly: no unsolicited advertisements, so only answering
		// the kernel's router solicitation can configure it.
		solicitedOnly bool
	}{
		{"solicited", true},
		{"unsolicited", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) })
			tap := linktest.NewTap(t, "tap0")
			routerLL := header.LinkLocalAddr(gatewayMAC)
			s := tap.AttachStack(t, 1500, gatewayMAC, netip.PrefixFrom(netip.AddrFrom16(routerLL.As16()), 64),
				netip.MustParsePrefix("fd00::2/64"), netip.MustParsePrefix("fd00::3/64"))
			if tc.solicitedOnly {
				tap.Run(t, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.tap0.router_solicitations=3")
			} else {
				// The kernel must not solicit: it has to wait for an
				// unsolicited advertisement.
				tap.Run(t, 5*time.Second, "sysctl", "-qw", "net.ipv6.conf.tap0.router_solicitations=0")
				tap.Run(t, 5*time.Second, "ip", "link", "set", "tap0", "up")
			}

			plan, opts := testutil.DefaultPlan(t), Options{MTU: 1400, Interval: time.Hour}
			testutil.ServeUntilCleanup(t, "Serve", func(ctx context.Context) error {
				return serve(ctx, s, 1, plan, opts, !tc.solicitedOnly)
			})
			if tc.solicitedOnly {
				tap.Run(t, 5*time.Second, "ip", "link", "set", "tap0", "up")
			}

			addrRE := regexp.MustCompile(`inet6 fd00::[0-9a-f:]+/64 scope global`)
			routeRE := regexp.MustCompile(`default via ` + regexp.QuoteMeta(routerLL.String()) + ` dev tap0 proto ra`)
			deadline := time.Now().Add(20 * time.Second)
			var addrs, routes string
			for time.Now().Before(deadline) {
				addrs = tap.Run(t, 5*time.Second, "ip", "-6", "addr", "show", "dev", "tap0")
				routes = tap.Run(t, 5*time.Second, "ip", "-6", "route", "show")
				if addrRE.MatchString(addrs) && routeRE.MatchString(routes) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if !addrRE.MatchString(addrs) || !routeRE.MatchString(routes) {
				t.Fatalf("guest not configured by RA:\n%s\n%s", addrs, routes)
			}
			// The router the guest learnt answers (NDP for it works), once
			// the guest's addresses have left the tentative (DAD) state.
			var pingErr error
			for range 20 {
				if _, pingErr = tap.TryRun(5*time.Second, "busybox", "ping", "-6", "-c", "1", "-W", "1", routerLL.String()+"%tap0"); pingErr == nil {
					break
				}
				time.Sleep(250 * time.Millisecond)
			}
			if pingErr != nil {
				t.Fatalf("router unreachable: %v", pingErr)
			}
			if mtu := strings.TrimSpace(tap.Run(t, 5*time.Second, "cat", "/proc/sys/net/ipv6/conf/tap0/mtu")); mtu != "1400" {
				t.Fatalf("guest IPv6 MTU %s, want 1400 from the MTU option", mtu)
			}
			// Our own advertisements must not loop back into our stack (it
			// would process them as a host would).
			if n := s.Stats().ICMP.V6.PacketsReceived.RouterAdvert.Value(); n != 0 {
				t.Fatalf("stack received %d of its own router advertisements", n)
			}
		})
	}
}
