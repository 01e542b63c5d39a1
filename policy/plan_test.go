package policy

import (
	"net"
	"net/netip"
	"testing"
)

func TestParseCIDR(t *testing.T) {
	tests := []struct {
		in      string
		want    string // prefix, when valid
		wantErr string
	}{
		{in: "10.0.2.0/24", want: "10.0.2.0/24"},
		{in: "10.1.0.0/16", want: "10.1.0.0/16"},
		{in: "192.168.100.0/25", want: "192.168.100.0/25"},
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "128.0.0.0/1", want: "128.0.0.0/1"},
		{in: "10.0.0.0/08", want: "10.0.0.0/8"}, // strtoul accepts a leading zero
		{in: "10.0.2.0/26", wantErr: "prefix length needs to be 1-25"},
		{in: "10.0.2.0/32", wantErr: "prefix length needs to be 1-25"},
		{in: "10.0.2.0/0", wantErr: "prefix length needs to be 1-25"},
		{in: "10.0.2.0/00", wantErr: "prefix length needs to be 1-25"},
		{in: "10.0.2.1/24", wantErr: "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24"},
		{in: "10.0.2.128/24", wantErr: "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24"},
		{in: "300.0.2.0/24", wantErr: "invalid network address: 300.0.2.0"},
		{in: "010.0.2.0/24", wantErr: "invalid network address: 010.0.2.0"},
		{in: "10.0.2.0", wantErr: "invalid CIDR: 10.0.2.0"},
		{in: "10.0.2.0/024", wantErr: "invalid CIDR: 10.0.2.0/024"},
		{in: "10.0.2/24", wantErr: "invalid CIDR: 10.0.2/24"},
		{in: "1000.0.2.0/24", wantErr: "invalid CIDR: 1000.0.2.0/24"},
		{in: "fd00::/64", wantErr: "invalid CIDR: fd00::/64"},
		{in: " 10.0.2.0/24", wantErr: "invalid CIDR:  10.0.2.0/24"},
		{in: "10.0.2.0/24 ", wantErr: "invalid CIDR: 10.0.2.0/24 "},
		{in: "10.0.2.0/+4", wantErr: "invalid CIDR: 10.0.2.0/+4"},
		{in: "", wantErr: "invalid CIDR: "},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParseCIDR(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ParseCIDR(%q) = %v, %v; want error %q", tt.in, p, err, tt.wantErr)
				}
				return
			}
			if err != nil || p.String() != tt.want {
				t.Fatalf("ParseCIDR(%q) = %v, %v; want %s", tt.in, p, err, tt.want)
			}
		})
	}
}

func TestNewPlan(t *testing.T) {
	tests := []struct {
		cidr                                     string
		mask, gw, dns, dhcpStart, dhcpEnd, guest string
	}{
		{"10.0.2.0/24", "255.255.255.0", "10.0.2.2", "10.0.2.3", "10.0.2.15", "10.0.2.30", "10.0.2.100"},
		{"10.1.0.0/16", "255.255.0.0", "10.1.0.2", "10.1.0.3", "10.1.0.15", "10.1.0.30", "10.1.0.100"},
		{"192.168.7.128/25", "255.255.255.128", "192.168.7.130", "192.168.7.131", "192.168.7.143", "192.168.7.158", "192.168.7.228"},
		{"10.0.0.0/8", "255.0.0.0", "10.0.0.2", "10.0.0.3", "10.0.0.15", "10.0.0.30", "10.0.0.100"},
		// The offsets carry across bytes.
		{"10.0.255.0/24", "255.255.255.0", "10.0.255.2", "10.0.255.3", "10.0.255.15", "10.0.255.30", "10.0.255.100"},
	}
	for _, tt := range tests {
		t.Run(tt.cidr, func(t *testing.T) {
			plan, err := PlanFor(tt.cidr)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{net.IP(plan.Netmask).String(), plan.Gateway.String(), plan.DNS.String(),
				plan.DHCPStart.String(), plan.DHCPEnd.String(), plan.Guest.String()}
			want := []string{tt.mask, tt.gw, tt.dns, tt.dhcpStart, tt.dhcpEnd, tt.guest}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("field %d = %s, want %s", i, got[i], want[i])
				}
			}
			if plan.Network.String() != tt.cidr {
				t.Errorf("Network = %s, want %s", plan.Network, tt.cidr)
			}
			if plan.Network6.String() != "fd00::/64" || plan.Gateway6.String() != "fd00::2" ||
				plan.DNS6.String() != "fd00::3" || plan.Guest6.String() != "fd00::100" {
				t.Errorf("IPv6 plan = %v %v %v %v", plan.Network6, plan.Gateway6, plan.DNS6, plan.Guest6)
			}
		})
	}
}

func TestPlanForError(t *testing.T) {
	if _, err := PlanFor("10.0.2.0/30"); err == nil || err.Error() != "prefix length needs to be 1-25" {
		t.Fatalf("PlanFor(/30) error = %v", err)
	}
}

func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{"10.0.2.0/24", "10.0.2.1/24", "1.2.3.4/1", "0.0.0.0/25", "255.255.255.128/25", "a/b", "1.2.3.4/99"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCIDR(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if !p.Addr().Is4() || p.Bits() < MinPrefix || p.Bits() > MaxPrefix || p.Masked() != p {
			t.Fatalf("ParseCIDR(%q) accepted %v", s, p)
		}
		plan := NewPlan(p)
		for _, a := range []netip.Addr{plan.Gateway, plan.DNS, plan.DHCPStart, plan.DHCPEnd, plan.Guest} {
			if !p.Contains(a) {
				t.Fatalf("plan address %v outside %v", a, p)
			}
		}
	})
}
