package policy

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
)

func hostFwdArgsFromJSON(t testing.TB, s string) HostFwdArgs {
	t.Helper()
	var a HostFwdArgs
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		t.Fatalf("bad test arguments %s: %v", s, err)
	}
	return a
}

func TestParseHostFwd(t *testing.T) {
	plan := NewPlan(netip.MustParsePrefix("10.0.2.0/24"))
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		args    string
		ipv6    bool
		plan    *Plan // nil: 10.0.2.0/24
		want    HostFwd
		wantErr string // field name, "" for success
	}{
		{name: "full", args: `{"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 8080, GuestAddr: a("10.0.2.100"), GuestPort: 80}},
		{name: "defaults", args: `{"proto":"udp","host_port":53,"guest_port":5353}`,
			want: HostFwd{Proto: "udp", HostAddr: a("0.0.0.0"), HostPort: 53, GuestAddr: a("10.0.2.100"), GuestPort: 5353}},
		{name: "empty strings are defaults (podman)", args: `{"proto":"tcp","host_addr":"","host_port":1,"guest_addr":"","guest_port":65535}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 1, GuestAddr: a("10.0.2.100"), GuestPort: 65535}},
		{name: "null is default", args: `{"proto":"tcp","host_addr":null,"host_port":1,"guest_addr":null,"guest_port":2}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 1, GuestAddr: a("10.0.2.100"), GuestPort: 2}},
		{name: "integral float and exponent ports", args: `{"proto":"tcp","host_port":8080.0,"guest_port":8e1}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 8080, GuestAddr: a("10.0.2.100"), GuestPort: 80}},
		{name: "loopback host", args: `{"proto":"tcp","host_addr":"127.0.0.1","host_port":80,"guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("127.0.0.1"), HostPort: 80, GuestAddr: a("10.0.2.100"), GuestPort: 80}},
		{name: "ipv6 any host keeps ipv4 guest", args: `{"proto":"tcp","host_addr":"::","host_port":80,"guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("::"), HostPort: 80, GuestAddr: a("10.0.2.100"), GuestPort: 80}},
		{name: "ipv6 host without -6", args: `{"proto":"udp","host_addr":"::1","host_port":80,"guest_port":80}`,
			want: HostFwd{Proto: "udp", HostAddr: a("::1"), HostPort: 80, GuestAddr: a("10.0.2.100"), GuestPort: 80}},
		{name: "mapped host unmapped", args: `{"proto":"tcp","host_addr":"::ffff:127.0.0.1","host_port":80,"guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("127.0.0.1"), HostPort: 80, GuestAddr: a("10.0.2.100"), GuestPort: 80}},
		{name: "ipv6 guest with -6", ipv6: true, args: `{"proto":"tcp","host_addr":"::","host_port":80,"guest_addr":"fd00::100","guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("::"), HostPort: 80, GuestAddr: a("fd00::100"), GuestPort: 80}},
		{name: "ipv6 guest other host in /64", ipv6: true, args: `{"proto":"tcp","host_port":80,"guest_addr":"fd00::abcd:1","guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 80, GuestAddr: a("fd00::abcd:1"), GuestPort: 80}},
		{name: "other guest in network", args: `{"proto":"tcp","host_port":80,"guest_addr":"10.0.2.15","guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 80, GuestAddr: a("10.0.2.15"), GuestPort: 80}},
		{name: "custom cidr default guest", plan: planPtrForHostFwd(NewPlan(netip.MustParsePrefix("192.168.64.0/25"))),
			args: `{"proto":"tcp","host_port":80,"guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 80, GuestAddr: a("192.168.64.100"), GuestPort: 80}},
		{name: "escaped proto", args: `{"proto":"tc\u0070","host_port":80,"guest_port":80}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 80, GuestAddr: a("10.0.2.100"), GuestPort: 80}},
		{name: "extra members ignored", args: `{"proto":"tcp","host_port":80,"guest_port":80,"x":[1]}`,
			want: HostFwd{Proto: "tcp", HostAddr: a("0.0.0.0"), HostPort: 80, GuestAddr: a("10.0.2.100"), GuestPort: 80}},

		{name: "missing proto", args: `{"host_port":80,"guest_port":80}`, wantErr: "proto"},
		{name: "empty object", args: `{}`, wantErr: "proto"},
		{name: "null proto", args: `{"proto":null,"host_port":80,"guest_port":80}`, wantErr: "proto"},
		{name: "number proto", args: `{"proto":1,"host_port":80,"guest_port":80}`, wantErr: "proto"},
		{name: "upper-case proto", args: `{"proto":"TCP","host_port":80,"guest_port":80}`, wantErr: "proto"},
		{name: "sctp", args: `{"proto":"sctp","host_port":80,"guest_port":80}`, wantErr: "proto"},
		{name: "proto checked first", args: `{"proto":"x","host_addr":"bad","host_port":0,"guest_addr":"bad","guest_port":0}`, wantErr: "proto"},
		{name: "bad host_addr", args: `{"proto":"tcp","host_addr":"bad","host_port":80,"guest_port":80}`, wantErr: "host_addr"},
		{name: "short ipv4 host_addr", args: `{"proto":"tcp","host_addr":"127.1","host_port":80,"guest_port":80}`, wantErr: "host_addr"},
		{name: "host_addr with space", args: `{"proto":"tcp","host_addr":"0.0.0.0 ","host_port":80,"guest_port":80}`, wantErr: "host_addr"},
		{name: "number host_addr", args: `{"proto":"tcp","host_addr":5,"host_port":80,"guest_port":80}`, wantErr: "host_addr"},
		{name: "host_addr before host_port", args: `{"proto":"tcp","host_addr":"x","host_port":0,"guest_port":80}`, wantErr: "host_addr"},
		{name: "missing host_port", args: `{"proto":"tcp","guest_port":80}`, wantErr: "host_port"},
		{name: "zero host_port", args: `{"proto":"tcp","host_port":0,"guest_port":80}`, wantErr: "host_port"},
		{name: "negative host_port", args: `{"proto":"tcp","host_port":-1,"guest_port":80}`, wantErr: "host_port"},
		{name: "host_port too big", args: `{"proto":"tcp","host_port":65536,"guest_port":80}`, wantErr: "host_port"},
		{name: "fractional host_port", args: `{"proto":"tcp","host_port":80.5,"guest_port":80}`, wantErr: "host_port"},
		{name: "string host_port", args: `{"proto":"tcp","host_port":"80","guest_port":80}`, wantErr: "host_port"},
		{name: "huge host_port", args: `{"proto":"tcp","host_port":1e400,"guest_port":80}`, wantErr: "host_port"},
		{name: "null host_port", args: `{"proto":"tcp","host_port":null,"guest_port":80}`, wantErr: "host_port"},
		{name: "bad guest_addr", args: `{"proto":"tcp","host_port":80,"guest_addr":"bad","guest_port":80}`, wantErr: "guest_addr"},
		{name: "number guest_addr", args: `{"proto":"tcp","host_port":80,"guest_addr":5,"guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest outside network", args: `{"proto":"tcp","host_port":80,"guest_addr":"1.2.3.4","guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest unspecified", args: `{"proto":"tcp","host_port":80,"guest_addr":"0.0.0.0","guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest network address", args: `{"proto":"tcp","host_port":80,"guest_addr":"10.0.2.0","guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest broadcast", args: `{"proto":"tcp","host_port":80,"guest_addr":"10.0.2.255","guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest is gateway", args: `{"proto":"tcp","host_port":80,"guest_addr":"10.0.2.2","guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest is dns", args: `{"proto":"tcp","host_port":80,"guest_addr":"10.0.2.3","guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest broadcast of /25", plan: planPtrForHostFwd(NewPlan(netip.MustParsePrefix("192.168.64.0/25"))),
			args: `{"proto":"tcp","host_port":80,"guest_addr":"192.168.64.127","guest_port":80}`, wantErr: "guest_addr"},
		{name: "ipv6 guest without -6", args: `{"proto":"tcp","host_port":80,"guest_addr":"fd00::100","guest_port":80}`, wantErr: "guest_addr"},
		{name: "ipv6 guest outside /64", ipv6: true, args: `{"proto":"tcp","host_port":80,"guest_addr":"fd00:1::100","guest_port":80}`, wantErr: "guest_addr"},
		{name: "ipv6 guest loopback", ipv6: true, args: `{"proto":"tcp","host_port":80,"guest_addr":"::1","guest_port":80}`, wantErr: "guest_addr"},
		{name: "ipv6 guest gateway", ipv6: true, args: `{"proto":"tcp","host_port":80,"guest_addr":"fd00::2","guest_port":80}`, wantErr: "guest_addr"},
		{name: "ipv6 guest dns", ipv6: true, args: `{"proto":"tcp","host_port":80,"guest_addr":"fd00::3","guest_port":80}`, wantErr: "guest_addr"},
		{name: "ipv6 guest subnet-router", ipv6: true, args: `{"proto":"tcp","host_port":80,"guest_addr":"fd00::","guest_port":80}`, wantErr: "guest_addr"},
		{name: "ipv6 guest zone", ipv6: true, args: `{"proto":"tcp","host_port":80,"guest_addr":"fd00::100%eth0","guest_port":80}`, wantErr: "guest_addr"},
		{name: "guest_addr before guest_port", args: `{"proto":"tcp","host_port":80,"guest_addr":"x"}`, wantErr: "guest_addr"},
		{name: "missing guest_port", args: `{"proto":"tcp","host_port":80}`, wantErr: "guest_port"},
		{name: "zero guest_port", args: `{"proto":"tcp","host_port":80,"guest_port":0}`, wantErr: "guest_port"},
		{name: "guest_port too big", args: `{"proto":"tcp","host_port":80,"guest_port":70000}`, wantErr: "guest_port"},
		{name: "bool guest_port", args: `{"proto":"tcp","host_port":80,"guest_port":true}`, wantErr: "guest_port"},
		{name: "fractional guest_port", args: `{"proto":"tcp","host_port":80,"guest_port":80.7}`, wantErr: "guest_port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := plan
			if tt.plan != nil {
				p = *tt.plan
			}
			got, err := ParseHostFwd(hostFwdArgsFromJSON(t, tt.args), p, tt.ipv6)
			if tt.wantErr != "" {
				var he *HostFwdError
				if !errors.As(err, &he) || he.Field != tt.wantErr {
					t.Fatalf("ParseHostFwd(%s) = %+v, %v; want error on %s", tt.args, got, err, tt.wantErr)
				}
				if want := "bad arguments." + tt.wantErr; err.Error() != want {
					t.Fatalf("error text %q, want %q", err.Error(), want)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseHostFwd(%s) = %+v, %v; want %+v", tt.args, got, err, tt.want)
			}
		})
	}
}

func TestParseHostFwdID(t *testing.T) {
	tests := []struct {
		raw  string // "" means absent
		want int
		ok   bool
	}{
		{"1", 1, true},
		{"42", 42, true},
		{"1.0", 1, true},
		{"1e1", 10, true},
		{" 7 ", 7, true},
		{"2147483647", 2147483647, true},
		{"", 0, false},
		{"0", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{`"1"`, 0, false},
		{"true", 0, false},
		{"null", 0, false},
		{"[1]", 0, false},
		{"2147483648", 0, false},
		{"1e400", 0, false},
	}
	for _, tt := range tests {
		var raw json.RawMessage
		if tt.raw != "" {
			raw = json.RawMessage(tt.raw)
		}
		got, ok := ParseHostFwdID(raw)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseHostFwdID(%q) = %d, %v; want %d, %v", tt.raw, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLastAddr(t *testing.T) {
	tests := map[string]string{
		"10.0.2.0/24":     "10.0.2.255",
		"192.168.64.0/25": "192.168.64.127",
		"10.0.0.0/8":      "10.255.255.255",
		"128.0.0.0/1":     "255.255.255.255",
	}
	for p, want := range tests {
		if got := lastAddr(netip.MustParsePrefix(p)); got != netip.MustParseAddr(want) {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}

func FuzzParseHostFwd(f *testing.F) {
	f.Add(`{"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}`, true)
	f.Add(`{"proto":"udp","host_addr":"::","host_port":1e1,"guest_addr":"fd00::100","guest_port":80.0}`, false)
	f.Add(`{"proto":null,"host_port":-0,"guest_port":"80"}`, true)
	plan := NewPlan(netip.MustParsePrefix("10.0.2.0/24"))
	f.Fuzz(func(t *testing.T, s string, ipv6 bool) {
		var args HostFwdArgs
		if json.Unmarshal([]byte(s), &args) != nil {
			return
		}
		fwd, err := ParseHostFwd(args, plan, ipv6)
		if err != nil {
			return
		}
		if fwd.HostPort == 0 || fwd.GuestPort == 0 || (fwd.Proto != ProtoTCP && fwd.Proto != ProtoUDP) {
			t.Fatalf("accepted invalid %+v from %s", fwd, s)
		}
		if fwd.GuestAddr.Is4() && !plan.Network.Contains(fwd.GuestAddr) {
			t.Fatalf("guest %s outside the network from %s", fwd.GuestAddr, s)
		}
		if fwd.GuestAddr.Is6() && (!ipv6 || !plan.Network6.Contains(fwd.GuestAddr)) {
			t.Fatalf("guest %s accepted from %s (ipv6=%v)", fwd.GuestAddr, s, ipv6)
		}
	})
}

func planPtrForHostFwd(v Plan) *Plan { return &v }
