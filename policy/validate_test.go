package policy

import (
	"strconv"
	"strings"
	"testing"
)

// validConfig is a configuration that Validate accepts; each case of
// TestValidate changes one thing.
func validConfig() Config {
	c := DefaultConfig()
	c.Target = "1234"
	return c
}

func TestValidate(t *testing.T) {
	const macHint = "macaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr string
	}{
		{name: "defaults", edit: func(c *Config) {}},
		{name: "everything", edit: func(c *Config) {
			c.Configure, c.ExitFD, c.ReadyFD, c.MTU, c.EnableIPv6 = true, 3, 4, 65520, true
			c.APISocket, c.CIDR, c.DisableHostLoopback = "/tmp/api.sock", "10.1.0.0/16", true
			c.EnableSandbox, c.EnableSeccomp, c.DisableDNS = true, true, true
			c.OutboundAddr, c.OutboundAddr6, c.MACAddress = "192.0.2.1", "2001:db8::1", "02:00:00:00:00:01"
			c.NetnsType, c.TargetType, c.UsernsPath, c.TapName = NetnsPID, TargetNetns, "/proc/1/ns/user", "eth0"
		}},
		{name: "path", edit: func(c *Config) { c.NetnsType, c.Target = NetnsPath, "/run/netns/x" }},
		{name: "tapfd", edit: func(c *Config) { c.NetnsType, c.Target, c.TapName = NetnsTapFD, "0", "" }},
		{name: "bess", edit: func(c *Config) { c.TargetType, c.Target = TargetBESS, "/tmp/bess.sock" }},
		{name: "outbound interface names", edit: func(c *Config) { c.OutboundAddr, c.OutboundAddr6 = "eth0", "wlp0s20f3" }},
		{name: "mtu min", edit: func(c *Config) { c.MTU = 68 }},
		{name: "mtu max", edit: func(c *Config) { c.MTU = 65521 }},

		{name: "mtu zero", edit: func(c *Config) { c.MTU = 0 }, wantErr: "MTU must be a positive integer (< 65522)"},
		{name: "mtu too big", edit: func(c *Config) { c.MTU = 65522 }, wantErr: "MTU must be a positive integer (< 65522)"},
		{name: "mtu too small", edit: func(c *Config) { c.MTU = 67 }, wantErr: "MTU must be at least 68"},
		{name: "exit fd", edit: func(c *Config) { c.ExitFD = -2 }, wantErr: "exit-fd must be a non-negative integer"},
		{name: "ready fd", edit: func(c *Config) { c.ReadyFD = -5 }, wantErr: "ready-fd must be a non-negative integer"},
		{name: "mac without configure", edit: func(c *Config) { c.MACAddress = "02:00:00:00:00:01" },
			wantErr: "--macaddr cannot be specified when --configure or -c is not specified"},
		{name: "bess without path", edit: func(c *Config) { c.TargetType, c.Target = TargetBESS, "" }, wantErr: "missing the BESS socket path"},
		{name: "bess configure", edit: func(c *Config) { c.TargetType, c.Configure = TargetBESS, true },
			wantErr: "--configure conflicts with --target-type=bess"},
		{name: "bess netns type", edit: func(c *Config) { c.TargetType, c.NetnsType = TargetBESS, NetnsPID },
			wantErr: "--netns-type conflicts with --target-type=bess"},
		{name: "bess userns", edit: func(c *Config) { c.TargetType, c.UsernsPath = TargetBESS, "/x" },
			wantErr: "--userns-path conflicts with --target-type=bess"},
		{name: "target type", edit: func(c *Config) { c.TargetType = "vde" }, wantErr: `--target-type must be either "netns" or "bess"`},
		{name: "netns type", edit: func(c *Config) { c.NetnsType = "fd" }, wantErr: `--netns-type must be either "pid", "path" or "tapfd"`},
		{name: "pid zero", edit: func(c *Config) { c.Target = "0" }, wantErr: "PID must be a positive integer"},
		{name: "pid text", edit: func(c *Config) { c.Target = "abc" }, wantErr: "PID must be a positive integer"},
		{name: "pid empty", edit: func(c *Config) { c.Target = "" }, wantErr: "PID must be a positive integer"},
		{name: "pid overflow", edit: func(c *Config) { c.Target = "4294967297" }, wantErr: "PID must be a positive integer"},
		{name: "tapfd negative", edit: func(c *Config) { c.NetnsType, c.Target = NetnsTapFD, "-1" }, wantErr: "TAPFD must be a file descriptor"},
		{name: "tapfd empty", edit: func(c *Config) { c.NetnsType, c.Target = NetnsTapFD, "" }, wantErr: "TAPFD must be a file descriptor"},
		{name: "tapfd configure", edit: func(c *Config) { c.NetnsType, c.Target, c.Configure = NetnsTapFD, "3", true },
			wantErr: "--configure conflicts with --netns-type=tapfd"},
		{name: "path empty", edit: func(c *Config) { c.NetnsType, c.Target = NetnsPath, "" }, wantErr: "missing PID|PATH"},
		{name: "tap name long", edit: func(c *Config) { c.TapName = "abcdefghijklmnop" },
			wantErr: `TAPNAME must be a valid interface name, not "abcdefghijklmnop"`},
		{name: "tap name slash", edit: func(c *Config) { c.TapName = "a/b" }, wantErr: `TAPNAME must be a valid interface name, not "a/b"`},
		{name: "cidr", edit: func(c *Config) { c.CIDR = "10.0.2.0/26" }, wantErr: "prefix length needs to be 1-25"},
		{name: "cidr empty", edit: func(c *Config) { c.CIDR = "" }, wantErr: "invalid CIDR: "},
		{name: "outbound v6 for v4", edit: func(c *Config) { c.OutboundAddr = "::1" },
			wantErr: "outbound-addr has to be valid ipv4 address or interface name."},
		{name: "outbound bad name", edit: func(c *Config) { c.OutboundAddr = "a:b" },
			wantErr: "outbound-addr has to be valid ipv4 address or interface name."},
		{name: "outbound6 v4", edit: func(c *Config) { c.OutboundAddr6 = "1.2.3.4" },
			wantErr: "outbound-addr6 has to be valid ipv6 address or interface name."},
		{name: "mac", edit: func(c *Config) { c.Configure, c.MACAddress = true, "zz" },
			wantErr: "\"zz\" is an invalid MAC address.\n" + macHint},
		// Order: the C version checks the CIDR before the outbound address.
		{name: "order cidr first", edit: func(c *Config) { c.CIDR, c.OutboundAddr = "x", "::1" }, wantErr: "invalid CIDR: x"},
		// and the MTU before everything.
		{name: "order mtu first", edit: func(c *Config) { c.MTU, c.Target = 0, "x" }, wantErr: "MTU must be a positive integer (< 65522)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.edit(&c)
			err := Validate(&c)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Validate error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateFillsDefaults(t *testing.T) {
	c := validConfig()
	if err := Validate(&c); err != nil {
		t.Fatal(err)
	}
	if c.NetnsType != NetnsPID || c.TargetType != TargetNetns {
		t.Fatalf("defaults not filled: %q %q", c.NetnsType, c.TargetType)
	}
	b := validConfig()
	b.TargetType, b.Target = TargetBESS, "/x"
	if err := Validate(&b); err != nil {
		t.Fatal(err)
	}
	if b.NetnsType != "" {
		t.Fatalf("bess NetnsType = %q, want empty", b.NetnsType)
	}
}

func TestCanonicalTarget(t *testing.T) {
	tests := []struct {
		t            NetnsType
		target, want string
	}{
		{NetnsPID, "1234", "1234"},
		{"", " +1234", "1234"},
		{NetnsTapFD, "007", "7"},
		{NetnsPath, " +1234", " +1234"},
		{NetnsPID, "junk", "junk"},
	}
	for _, tt := range tests {
		if got := CanonicalTarget(tt.t, tt.target); got != tt.want {
			t.Errorf("CanonicalTarget(%q, %q) = %q, want %q", tt.t, tt.target, got, tt.want)
		}
	}
	c := validConfig()
	c.Target = "+42"
	if err := Validate(&c); err != nil || c.Target != "42" {
		t.Fatalf("Validate: %v, Target %q", err, c.Target)
	}
}

func TestParseCInt(t *testing.T) {
	tests := []struct {
		in     string
		want   int64
		wantOK bool
	}{
		{"0", 0, true},
		{"42", 42, true},
		{"+42", 42, true},
		{"-42", -42, true},
		{"  7", 7, true},
		{"\t\n7", 7, true},
		{"", 0, true}, // strtol leaves end at the start, which is '\0'
		{"007", 7, true},
		{" ", 0, false},
		{"7 ", 0, false},
		{"7x", 0, false},
		{"0x10", 0, false},
		{"+-1", 0, false},
		{"--1", 0, false},
		{"-", 0, false},
		{"1_000", 0, false},
		{"9223372036854775807", 9223372036854775807, true},
		{"9223372036854775808", 0, false},
		{"١", 0, false}, // non-ASCII digit
	}
	for _, tt := range tests {
		got, ok := ParseCInt(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseCInt(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func FuzzParseCInt(f *testing.F) {
	for _, s := range []string{"0", "-1", " +5", "", "12a", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := ParseCInt(s)
		if !ok {
			return
		}
		// What was accepted is white space, at most one sign and digits.
		t2 := strings.TrimLeft(s, " \t\n\v\f\r")
		if t2 == "" {
			if n != 0 || s != "" {
				t.Fatalf("ParseCInt(%q) = %d, true", s, n)
			}
			return
		}
		if m, err := strconv.ParseInt(t2, 10, 64); err != nil || m != n {
			t.Fatalf("ParseCInt(%q) = %d; strconv says %d, %v", s, n, m, err)
		}
	})
}

func TestParseMAC(t *testing.T) {
	const hint = "\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "02:00:00:00:00:01", want: "02:00:00:00:00:01"},
		{in: "02:AB:cd:0:1:2", want: "02:ab:cd:00:01:02"},
		{in: "ff:ff:ff:ff:ff:ff", want: "ff:ff:ff:ff:ff:ff"},
		{in: "zz", wantErr: `"zz" is an invalid MAC address.` + hint},
		{in: "", wantErr: `"" is an invalid MAC address.` + hint},
		{in: "00:11:22:33:44", wantErr: `"00:11:22:33:44" is an invalid MAC address.` + hint},
		{in: "00:11:22:33:44:55:66", wantErr: `"00:11:22:33:44:55:66" is an invalid MAC address.  Is it too long?` + hint},
		{in: "000:11:22:33:44:55", wantErr: `"000:11:22:33:44:55" is an invalid MAC address.` + hint},
		{in: "00:11:22:33:44:", wantErr: `"00:11:22:33:44:" is an invalid MAC address.` + hint},
		{in: "00-11-22-33-44-55", wantErr: `"00-11-22-33-44-55" is an invalid MAC address.` + hint},
		{in: "+1:11:22:33:44:55", wantErr: `"+1:11:22:33:44:55" is an invalid MAC address.` + hint},
	}
	for _, tt := range tests {
		got, err := ParseMAC(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseMAC(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParseMAC(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseMAC(f *testing.F) {
	for _, s := range []string{"02:00:00:00:00:01", "zz", "1:2:3:4:5:6:7", "::::::", "a:b:c:d:e:f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := ParseMAC(s)
		if err != nil {
			if !strings.Contains(err.Error(), "is an invalid MAC address.") {
				t.Fatalf("unexpected error text %q", err)
			}
			return
		}
		// Round trip: what was accepted denotes the same six bytes.
		again, err := ParseMAC(mac.String())
		if err != nil || again.String() != mac.String() || len(mac) != 6 {
			t.Fatalf("ParseMAC(%q) = %v; round trip %v, %v", s, mac, again, err)
		}
		if strings.Count(s, ":") != 5 {
			t.Fatalf("ParseMAC(%q) accepted %d separators", s, strings.Count(s, ":"))
		}
	})
}

func TestValidateOutboundAddr(t *testing.T) {
	tests := []struct {
		value string
		want6 bool
		ok    bool
	}{
		{"", false, true},
		{"1.2.3.4", false, true},
		{"eth0", false, true},
		{"lo", true, true},
		{"::1", true, true},
		{"2001:db8::1", true, true},
		{"::1", false, false},
		{"1.2.3.4", true, false},
		{"::ffff:1.2.3.4", true, false},
		{"::ffff:1.2.3.4", false, false},
		{"fe80::1%eth0", true, false},
		{"1.2.3.4/24", false, false},
		{"a b", false, false},
		{"sixteen-chars-xx", false, false},
	}
	for _, tt := range tests {
		err := ValidateOutboundAddr(tt.value, tt.want6)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateOutboundAddr(%q, %v) = %v, want ok=%v", tt.value, tt.want6, err, tt.ok)
		}
		if err != nil && err.Error() != OutboundError(tt.want6).Error() {
			t.Errorf("message %q, want %q", err, OutboundError(tt.want6))
		}
	}
}

func TestValidInterfaceName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"tap0", true},
		{"fifteen-chars-x", true},
		{"sixteen-chars-xx", false},
		{"", false},
		{".", false},
		{"..", false},
		{"...", true},
		{"a/b", false},
		{"a:b", false},
		{"a b", false},
		{"a\tb", false},
	}
	for _, tt := range tests {
		if got := ValidInterfaceName(tt.name); got != tt.ok {
			t.Errorf("ValidInterfaceName(%q) = %v, want %v", tt.name, got, tt.ok)
		}
	}
}

func TestValidateMTU(t *testing.T) {
	for mtu, want := range map[int]string{
		-1: "MTU must be a positive integer (< 65522)", 0: "MTU must be a positive integer (< 65522)",
		1: "MTU must be at least 68", 67: "MTU must be at least 68", 68: "", 1500: "", 65521: "",
		65522: "MTU must be a positive integer (< 65522)",
	} {
		err := ValidateMTU(mtu)
		if (want == "" && err != nil) || (want != "" && (err == nil || err.Error() != want)) {
			t.Errorf("ValidateMTU(%d) = %v, want %q", mtu, err, want)
		}
	}
}
