//go:build cgo

package helper

import "testing"

// TestEarlyTapParse checks which command lines the early thread acts on
// (earlytap.c parses them with glibc's getopt_long and the C slirp4netns's
// option table) and what it records; everything else is left to Go.
func TestEarlyTapParse(t *testing.T) {
	podman := []string{"--mtu=65520", "--enable-sandbox", "--enable-seccomp", "--enable-ipv6", "-c", "-e", "3", "-r", "4",
		"--api-socket", "/run/api.sock", "--netns-type=path", "/run/netns/x", "tap0"}
	for _, tc := range []struct {
		args []string
		ok   bool
		mtu  int
		ipv6 bool
	}{
		{podman, true, 65520, true},
		{[]string{"-c", "--netns-type=path", "/run/netns/x", "tap0"}, true, 1500, false},
		{[]string{"/run/netns/x", "tap0", "-c", "--netns-type", "path"}, true, 1500, false}, // GNU permutation
		{[]string{"-c", "--netns-type=path", "--", "/run/netns/x", "tap0"}, true, 1500, false},
		{[]string{"-c6", "-m", "9000", "--netns-type=path", "/run/netns/x", "tap0"}, true, 9000, true},
		{[]string{"-ce3", "-r4", "--netns-type=path", "/run/netns/x", "tap0"}, true, 1500, false},
		{[]string{"--configure", "--mt=9000", "--enable-ip", "--netns-type=path", "/run/netns/x", "tap0"}, true, 9000, true},
		{[]string{"-c", "--disable-host-loopback", "--no-host-loopback", "--disable-dns", "--create-sandbox", "--netns-type=path", "/run/netns/x", "tap0"}, true, 1500, false},
		{[]string{"-c", "--mtu=1500", "--mtu=2000", "--netns-type=path", "/run/netns/x", "tap0"}, true, 2000, false}, // the last one wins
		// Left to Go.
		{[]string{"--netns-type=path", "/run/netns/x", "tap0"}, false, 0, false},      // no --configure
		{[]string{"-c", "/run/netns/x", "tap0"}, false, 0, false},                     // default type: pid
		{[]string{"-c", "--netns-type=pid", "123", "tap0"}, false, 0, false},          //
		{[]string{"-c", "--netns-type=tapfd", "3", "tap0"}, false, 0, false},          //
		{[]string{"-c", "--netns-type=path", "/run/netns/x"}, false, 0, false},        // one positional
		{[]string{"-c", "--netns-type=path", "/x", "tap0", "extra"}, false, 0, false}, // three
		{[]string{"-c", "--cidr=10.0.3.0/24", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--userns-path=/proc/1/ns/user", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--macaddress=02:00:00:00:00:01", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--outbound-addr=127.0.0.1", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--outbound-addr6=::1", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--target-type=bess", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--help", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "-v", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--foo", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--m=9000", "--netns-type=path", "/x", "tap0"}, false, 0, false}, // ambiguous: mtu, macaddress
		{[]string{"-c", "--en", "--netns-type=path", "/x", "tap0"}, false, 0, false},     // ambiguous
		{[]string{"-c", "--mtu=0", "--netns-type=path", "/x", "tap0"}, false, 0, false},  //
		{[]string{"-c", "--mtu=65522", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--mtu=01500", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--mtu=+1500", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--mtu=1000", "-6", "--netns-type=path", "/x", "tap0"}, false, 0, false}, // IPv6 needs 1280
		{[]string{"-c", "-e", "x", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "-r", "-1", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "--api-socket=", "--netns-type=path", "/x", "tap0"}, false, 0, false},
		{[]string{"-c", "-e"}, false, 0, false},                                             // missing argument
		{[]string{"-c", "--netns-type=path", "/x", "tap0123456789abcdef"}, false, 0, false}, // longer than IFNAMSIZ-1
		{[]string{"-c", "--netns-type=path", "", "tap0"}, false, 0, false},
		{[]string{"-c", "--netns-type=path", "/x", ""}, false, 0, false},
	} {
		got, ok := parseEarlyTap(tc.args)
		if ok != tc.ok {
			t.Errorf("%q: acts = %v, want %v", tc.args, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		ns, tap := tc.args[len(tc.args)-2], tc.args[len(tc.args)-1]
		if tc.args[0] == "/run/netns/x" {
			ns, tap = tc.args[0], tc.args[1]
		}
		want := earlyTap{tap: tap, netns: ns, mtu: tc.mtu, ipv6: tc.ipv6}
		if got != want {
			t.Errorf("%q: recorded %+v, want %+v", tc.args, got, want)
		}
	}
}
