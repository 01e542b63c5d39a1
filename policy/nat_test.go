package policy

import (
	"errors"
	"net/netip"
	"testing"
)

func TestOutboundTarget(t *testing.T) {
	plan := NewPlan(netip.MustParsePrefix("10.0.2.0/24"))
	on := Config{EnableIPv6: true}
	noLoop := Config{EnableIPv6: true, DisableHostLoopback: true}
	no6 := Config{}
	tests := []struct {
		name string
		cfg  Config
		dst  string
		want string
		err  error
	}{
		{"gateway to loopback", on, "10.0.2.2", "127.0.0.1", nil},
		{"gateway6 to loopback6", on, "fd00::2", "::1", nil},
		{"mapped gateway", on, "::ffff:10.0.2.2", "127.0.0.1", nil},
		{"gateway loopback disabled", noLoop, "10.0.2.2", "", ErrHostLoopbackDisabled},
		{"gateway6 loopback disabled", noLoop, "fd00::2", "", ErrHostLoopbackDisabled},
		{"dns address", on, "10.0.2.3", "", ErrServiceAddress},
		{"dns6 address", on, "fd00::3", "", ErrServiceAddress},
		{"internet", on, "93.184.216.34", "93.184.216.34", nil},
		{"internet loopback disabled", noLoop, "1.1.1.1", "1.1.1.1", nil},
		{"internet6", on, "2001:db8::1", "2001:db8::1", nil},
		{"ipv6 without -6", no6, "2001:db8::1", "", ErrForbiddenDestination},
		{"loopback direct", on, "127.0.0.1", "", ErrForbiddenDestination},
		{"loopback other", on, "127.1.2.3", "", ErrForbiddenDestination},
		{"loopback6 direct", on, "::1", "", ErrForbiddenDestination},
		{"mapped loopback", on, "::ffff:127.0.0.1", "", ErrForbiddenDestination},
		{"guest network", on, "10.0.2.100", "", ErrForbiddenDestination},
		{"guest network broadcast", on, "10.0.2.255", "", ErrForbiddenDestination},
		{"guest network address", on, "10.0.2.0", "", ErrForbiddenDestination},
		{"guest network6", on, "fd00::100", "", ErrForbiddenDestination},
		{"unspecified", on, "0.0.0.0", "", ErrForbiddenDestination},
		{"unspecified6", on, "::", "", ErrForbiddenDestination},
		{"broadcast", on, "255.255.255.255", "", ErrForbiddenDestination},
		{"multicast", on, "224.0.0.251", "", ErrForbiddenDestination},
		{"multicast6", on, "ff02::1", "", ErrForbiddenDestination},
		{"link-local", on, "169.254.1.1", "", ErrForbiddenDestination},
		{"link-local6", on, "fe80::1", "", ErrForbiddenDestination},
		{"other private", on, "10.0.3.1", "10.0.3.1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OutboundTarget(plan, tt.cfg, netip.MustParseAddr(tt.dst))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("OutboundTarget(%s) error = %v, want %v", tt.dst, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("OutboundTarget(%s) = %v", tt.dst, err)
			}
			if got.String() != tt.want {
				t.Fatalf("OutboundTarget(%s) = %s, want %s", tt.dst, got, tt.want)
			}
		})
	}
}

func TestOutboundTargetOtherCIDR(t *testing.T) {
	plan := NewPlan(netip.MustParsePrefix("192.168.64.0/20"))
	got, err := OutboundTarget(plan, Config{}, netip.MustParseAddr("192.168.64.2"))
	if err != nil || got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("gateway = %v, %v", got, err)
	}
	if _, err := OutboundTarget(plan, Config{}, netip.MustParseAddr("192.168.79.1")); !errors.Is(err, ErrForbiddenDestination) {
		t.Fatalf("guest network: %v", err)
	}
	if _, err := OutboundTarget(plan, Config{}, netip.MustParseAddr("10.0.2.2")); err != nil {
		t.Fatalf("10.0.2.2 outside the plan must be forwarded: %v", err)
	}
}

func TestIsGuestSource(t *testing.T) {
	plan := NewPlan(netip.MustParsePrefix("10.0.2.0/24"))
	tests := []struct {
		src  string
		v6   bool
		want bool
	}{
		{"10.0.2.100", false, true},
		{"10.0.2.15", false, true},
		{"0.0.0.0", false, true},
		{"10.0.2.2", false, false},
		{"10.0.2.3", false, false},
		{"10.0.3.1", false, false},
		{"127.0.0.1", false, false},
		{"8.8.8.8", false, false},
		{"fd00::100", true, true},
		{"fe80::1", true, true},
		{"::", true, true},
		{"fd00::2", true, false},
		{"fd00:1::1", true, false},
		{"2001:db8::1", true, false},
		{"fd00::100", false, false},
		{"fe80::1", false, false},
	}
	for _, tt := range tests {
		got := IsGuestSource(plan, Config{EnableIPv6: tt.v6}, netip.MustParseAddr(tt.src))
		if got != tt.want {
			t.Errorf("IsGuestSource(%s, v6=%v) = %v, want %v", tt.src, tt.v6, got, tt.want)
		}
	}
}

func TestChooseOutboundAddr(t *testing.T) {
	ifaces := func(name string) ([]netip.Addr, error) {
		switch name {
		case "eth0":
			return []netip.Addr{
				netip.MustParseAddr("fe80::1"),
				netip.MustParseAddr("192.0.2.10"),
				netip.MustParseAddr("2001:db8::10"),
				netip.MustParseAddr("192.0.2.11"),
			}, nil
		case "v4only":
			return []netip.Addr{netip.MustParseAddr("198.51.100.1")}, nil
		}
		return nil, errors.New("no such interface")
	}
	tests := []struct {
		value   string
		want6   bool
		want    string
		wantErr bool
	}{
		{"", false, "invalid IP", false},
		{"192.0.2.1", false, "192.0.2.1", false},
		{"2001:db8::1", true, "2001:db8::1", false},
		{"192.0.2.1", true, "", true},
		{"2001:db8::1", false, "", true},
		{"eth0", false, "192.0.2.10", false},
		{"eth0", true, "2001:db8::10", false},
		{"v4only", true, "", true},
		{"nonexistent", false, "", true},
	}
	for _, tt := range tests {
		got, err := ChooseOutboundAddr(tt.value, tt.want6, ifaces)
		if (err != nil) != tt.wantErr {
			t.Errorf("ChooseOutboundAddr(%q, %v) error = %v, wantErr %v", tt.value, tt.want6, err, tt.wantErr)
			continue
		}
		if err == nil && got.String() != tt.want {
			t.Errorf("ChooseOutboundAddr(%q, %v) = %s, want %s", tt.value, tt.want6, got, tt.want)
		}
	}
}

func TestForwardSource(t *testing.T) {
	plan := NewPlan(netip.MustParsePrefix("10.0.2.0/24"))
	tests := []struct {
		client, guest, want string
	}{
		{"127.0.0.1", "10.0.2.100", "10.0.2.2"},
		{"127.0.0.5", "10.0.2.100", "10.0.2.2"},
		{"::1", "10.0.2.100", "10.0.2.2"},
		{"::ffff:127.0.0.1", "10.0.2.100", "10.0.2.2"},
		{"192.168.1.5", "10.0.2.100", "192.168.1.5"},
		{"::ffff:192.168.1.5", "10.0.2.100", "192.168.1.5"},
		{"2001:db8::5", "10.0.2.100", "10.0.2.2"},
		{"10.0.2.50", "10.0.2.100", "10.0.2.2"},
		{"2001:db8::5", "fd00::100", "2001:db8::5"},
		{"::1", "fd00::100", "fd00::2"},
		{"192.168.1.5", "fd00::100", "fd00::2"},
		{"fd00::7", "fd00::100", "fd00::2"},
	}
	for _, tt := range tests {
		got := ForwardSource(plan, netip.MustParseAddr(tt.client), netip.MustParseAddr(tt.guest))
		if got.String() != tt.want {
			t.Errorf("ForwardSource(%s, %s) = %s, want %s", tt.client, tt.guest, got, tt.want)
		}
	}
}
