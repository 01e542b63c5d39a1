package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// Addresses the guest uses to reach the outer namespace (default --cidr).
var (
	gwEcho = hostPort("10.0.2.2", echoPort)
	gwHTTP = "http://" + hostPort("10.0.2.2", httpPort)
	dnsUDP = hostPort("10.0.2.3", dnsPort)
)

// transferSize is the size of the bulk transfers (64 MiB).
const transferSize = 64 << 20

// TestTCPEcho: guest → 10.0.2.2 reaches the outer namespace's 127.0.0.1.
func TestTCPEcho(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c")
	for _, size := range []string{"1", "1000", "1000000"} {
		GuestTool(t, g, "echo", "tcp", gwEcho, size)
	}
}

// TestUDPEcho: UDP through 10.0.2.2 to the outer loopback and back.
func TestUDPEcho(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c")
	for _, size := range []string{"1", "1000", "1400"} {
		GuestTool(t, g, "echo", "udp", gwEcho, size)
	}
}

// TestParallelConnections: 50 concurrent TCP connections.
func TestParallelConnections(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c", "--mtu=65520")
	GuestTool(t, g, "parallel", gwEcho, "50", "65536")
}

// TestTransfer: 64 MiB each way at MTU 1500 and 65520, checked by SHA-256:
// download with curl, upload with the upload tool.
func TestTransfer(t *testing.T) {
	t.Parallel()
	want := testnet.BlobSHA256(transferSize)
	for _, mtu := range []int{1500, 65520} {
		t.Run(fmt.Sprintf("mtu%d", mtu), func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			StartSlirp(t, g, "-c", "--mtu="+strconv.Itoa(mtu))
			url := fmt.Sprintf("%s/blob?size=%d", gwHTTP, transferSize)
			out := InGuest(t, g, "bash", "-c", "set -o pipefail; curl -sS --fail --max-time 50 '"+url+"' | sha256sum")
			if got, _, _ := strings.Cut(out, " "); got != want {
				t.Errorf("download: sha256 %q, want %s", out, want)
			}
			out = GuestTool(t, g, "upload", gwHTTP+"/sha256", strconv.Itoa(transferSize))
			if got := strings.TrimSpace(out); got != want {
				t.Errorf("upload: server saw sha256 %q, want %s", got, want)
			}
		})
	}
}

// TestClosedPort: a connection to a closed port is refused at once.
func TestClosedPort(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c")
	out := GuestTool(t, g, "dial", hostPort("10.0.2.2", 9), "5s")
	if !strings.Contains(out, "refused") {
		t.Fatalf("dial closed port: %q, want refused", out)
	}
	if d := elapsed(t, out); d > time.Second {
		t.Errorf("refused after %v, want < 1s", d)
	}
}

// elapsed parses the "elapsed=" line of the dial tool.
func elapsed(t *testing.T, out string) time.Duration {
	t.Helper()
	_, after, ok := strings.Cut(out, "elapsed=")
	if !ok {
		t.Fatalf("no elapsed= in %q", out)
	}
	d, err := time.ParseDuration(strings.TrimSpace(after))
	if err != nil {
		t.Fatalf("elapsed in %q: %v", out, err)
	}
	return d
}

// TestDisableHostLoopback: with --disable-host-loopback the outer
// loopback is unreachable through 10.0.2.2 (the connection fails at once),
// while other outer addresses still are.
func TestDisableHostLoopback(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c", "--disable-host-loopback")
	out := GuestTool(t, g, "dial", gwEcho, "3s")
	if strings.Contains(out, "connected") {
		t.Errorf("reached the outer loopback despite --disable-host-loopback: %q", out)
	}
	if d := elapsed(t, out); d > 2*time.Second {
		t.Errorf("connection failed after %v, want < 2s: %q", d, out)
	}
	out = GuestTool(t, g, "dial", hostPort(addrA, peerPort), "3s")
	if !strings.Contains(out, "peer=") {
		t.Errorf("non-loopback outer address %s unreachable: %q", addrA, out)
	}
}

// TestDNS: 10.0.2.3 answers (over UDP and TCP) from the outer namespace's
// resolv.conf server; NXDOMAIN passes through.
func TestDNS(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c")
	for _, network := range []string{"udp", "tcp"} {
		out := GuestTool(t, g, "dns", dnsUDP, network, testName)
		if got := strings.TrimSpace(out); got != testNameAddr {
			t.Errorf("%s: %s A = %q, want %s", network, testName, got, testNameAddr)
		}
	}
	out, err := GuestToolErr(g, commandTimeout, "dns", dnsUDP, "udp", "nonexistent.slirp.test")
	if err == nil || !strings.Contains(out, "NXDOMAIN") {
		t.Errorf("unknown name: %v %q, want NXDOMAIN", err, out)
	}
}

// TestDisableDNS: with --disable-dns nothing answers on 10.0.2.3.
func TestDisableDNS(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c", "--disable-dns")
	out, err := GuestToolErr(g, commandTimeout, "dns", dnsUDP, "udp", testName)
	if err == nil {
		t.Errorf("DNS answered despite --disable-dns: %q", out)
	}
}

// TestDHCP: without -c, DHCP on the TAP leases network+15 with the gateway
// and DNS of the plan.
func TestDHCP(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g)
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	body := "#!/bin/sh\necho \"udhcpc $1 ip=$ip mask=$mask router=$router dns=$dns\"\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	InGuest(t, g, "ip", "link", "set", "tap0", "up")
	out := InGuest(t, g, "busybox", "udhcpc", "-i", "tap0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-s", script)
	want := "udhcpc bound ip=10.0.2.15 mask=24 router=10.0.2.2 dns=10.0.2.3"
	if !strings.Contains(out, want) {
		t.Errorf("udhcpc output lacks %q:\n%s", want, out)
	}
}

// TestOutboundAddr: the outer server sees the source address chosen with
// --outbound-addr (an address, or an interface's first address).
func TestOutboundAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"default", nil, addrA}, // the kernel's choice for a local destination
		{"address", []string{"--outbound-addr=" + addrB2}, addrB2},
		{"interface", []string{"--outbound-addr=" + vethB}, addrB1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			StartSlirp(t, g, append([]string{"-c"}, tc.args...)...)
			out := GuestTool(t, g, "dial", hostPort(addrA, peerPort), "5s")
			if !strings.Contains(out, "peer="+tc.want+"\n") {
				t.Errorf("outer server saw %q, want peer=%s", out, tc.want)
			}
		})
	}
}

// TestIPv6: with -6 the guest gets a fd00::/64 address by SLAAC, pings
// fd00::2, and reaches the outer ::1 through it.
func TestIPv6(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	StartSlirp(t, g, "-c", "-6")
	WaitGuestGlobal6(t, g, "tap0", "fd00:")
	Ping(t, g, "fd00::2")
	GuestTool(t, g, "echo", "tcp", hostPort("fd00::2", echoPort), "100000")
}

// TestSandbox: with --enable-sandbox and --enable-seccomp the data path,
// DNS and the API still work. Deliberate difference: ours removes its API
// socket on exit; C 1.2.0 cannot once sandboxed and leaves it.
func TestSandbox(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--enable-sandbox"},
		{"--enable-sandbox", "--enable-seccomp"},
	} {
		t.Run(strings.Join(args, ","), func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			s := StartSlirpWith(t, g, SlirpOptions{Args: append([]string{"-c"}, args...), API: true, LeavesAPISocket: !goImpl()})
			GuestTool(t, g, "echo", "tcp", gwEcho, "100000")
			GuestTool(t, g, "echo", "udp", gwEcho, "1000")
			if out := GuestTool(t, g, "dns", dnsUDP, "udp", testName); strings.TrimSpace(out) != testNameAddr {
				t.Errorf("DNS: %q, want %s", out, testNameAddr)
			}
			r := API(t, s.APISocket, `{"execute":"list_hostfwd"}`)
			if _, err := r.Forwards(); err != nil {
				t.Errorf("list_hostfwd: %v", err)
			}
		})
	}
}
