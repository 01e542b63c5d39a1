package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
	"github.com/slirp4netns-go/slirp4netns/sandbox"
)

// e2eEnv marks the re-executed test binary that runs inside the test's own
// namespaces.
const e2eEnv = "_ENGINE_TEST_E2E"

// e2eSize is what crosses the engine each way.
const e2eSize = 64 << 20

// TestEndToEndTAP runs the engine on a real TAP whose other end is a guest
// network namespace, and drives it with curl and ping from the guest:
// 64 MiB each way through 10.0.2.2 to a loopback HTTP server, checked by
// SHA-256; a refused port; ICMP echo to the gateway and, relayed, to a
// "remote" address. All of it happens in namespaces the test creates: the
// test re-executes itself in a new user, network, mount and PID namespace
// (the "host"), whose loopback carries every byte.
func TestEndToEndTAP(t *testing.T) {
	if os.Getenv(e2eEnv) != "1" {
		out := runNamespaced(t, 3*time.Minute, "-test.run=^TestEndToEndTAP$", "-test.v", "-test.count=1")
		if !strings.Contains(out, "--- PASS: TestEndToEndTAP") {
			t.Fatal("namespaced run did not pass")
		}
		return
	}
	h := setUpHost(t)
	t.Run("in-process", func(t *testing.T) { runGuest(t, h, false, false) })
	t.Run("in-process/vnet_hdr", func(t *testing.T) { runGuest(t, h, true, false) })
	// The engine process (Main) in its sandbox, under its seccomp filter.
	t.Run("process/vnet_hdr/sandbox+seccomp", func(t *testing.T) { runGuest(t, h, true, true) })
}

// runNamespaced re-executes the test binary with testArgs (the -test flags
// that select one test or benchmark) in a new user, network, mount and PID
// namespace, marked by e2eEnv, for at most timeout. It logs the run's
// output and returns it; a failed run fails tb.
func runNamespaced(tb testing.TB, timeout time.Duration, testArgs ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := append([]string{"--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--mount-proc", os.Args[0]}, testArgs...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), e2eEnv+"=1")
	out, err := cmd.CombinedOutput()
	tb.Logf("namespaced run:\n%s", out)
	if err != nil {
		tb.Fatalf("namespaced run: %v", err)
	}
	return string(out)
}

// e2eHost is the test's "host" namespace set-up.
type e2eHost struct {
	httpPort   uint16
	closedPort uint16
	upload     string // path of the file the guest uploads
	uploadSum  string
	dataSum    string
	remote     netip.Addr // a "remote" address on the host's lo, for ping
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func setUpHost(t *testing.T) *e2eHost {
	run(t, "ip", "link", "set", "lo", "up")
	h := &e2eHost{remote: netip.MustParseAddr("192.0.2.1")}
	run(t, "ip", "addr", "add", h.remote.String()+"/32", "dev", "lo")
	// Unprivileged ICMP sockets for the engine's ping relay.
	if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 0"), 0); err != nil {
		t.Fatalf("ping_group_range: %v", err)
	}
	// The DNS service must never reach the machine's real resolver.
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(resolv, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount resolv.conf: %v", err)
	}
	// Upload file and expected hashes.
	h.upload = filepath.Join(dir, "upload")
	f, err := os.Create(h.upload)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(rand.NewChaCha8([32]byte{2}), e2eSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	h.uploadSum = hex.EncodeToString(sum.Sum(nil))
	sum.Reset()
	io.Copy(sum, io.LimitReader(rand.NewChaCha8([32]byte{3}), e2eSize))
	h.dataSum = hex.EncodeToString(sum.Sum(nil))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.httpPort = ln.Addr().(*net.TCPAddr).AddrPort().Port()
	mux := http.NewServeMux()
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(e2eSize))
		io.Copy(w, io.LimitReader(rand.NewChaCha8([32]byte{3}), e2eSize))
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.New()
		n, err := io.Copy(sum, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x", n, sum.Sum(nil))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	h.closedPort = closedPort(t)
	startDNSServer(t, h.remote)
	return h
}

// startDNSServer answers A queries for e2e.test. with addr on 127.0.0.1:53,
// the only nameserver in the bind-mounted resolv.conf.
func startDNSServer(t *testing.T, addr netip.Addr) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:53")
	if err != nil {
		t.Fatalf("DNS server: %v", err)
	}
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(q)
		switch {
		case len(q.Question) != 1 || q.Question[0].Name != "e2e.test.":
			m.Rcode = mdns.RcodeNameError
		case q.Question[0].Qtype == mdns.TypeA:
			m.Answer = append(m.Answer, &mdns.A{
				Hdr: mdns.RR_Header{Name: "e2e.test.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60},
				A:   addr.AsSlice(),
			})
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
}

// newTapGuest makes a guest network namespace holding tap0 (10.0.2.100/24,
// default route via 10.0.2.2) and returns it and the TAP's fd.
func newTapGuest(t testing.TB, vnet bool, offloads uint32, mtu int) (*linktest.Netns, int) {
	t.Helper()
	ns, err := linktest.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	err = ns.Do(func() error {
		var err error
		fd, err = linktest.OpenTap(linktest.TapOptions{Name: "tap0", VnetHdr: vnet, Offloads: offloads})
		if err != nil {
			return err
		}
		if err := linktest.ConfigureLink("tap0", mtu, netip.MustParsePrefix("10.0.2.100/24")); err != nil {
			return err
		}
		l, err := netlink.LinkByName("tap0")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IPv4(10, 0, 2, 2)})
	})
	if err != nil {
		ns.Close()
		t.Fatalf("guest set-up: %v", err)
	}
	return ns, fd
}

// runGuest makes a guest namespace with a TAP, runs the engine on it (in
// this process, or as an engine process with seccomp) and checks the
// traffic.
func runGuest(t *testing.T, h *e2eHost, vnet, process bool) {
	offloads := uint32(link.TunFCsum | link.TunFTSO4 | link.TunFTSO6)
	ns, fd := newTapGuest(t, vnet, offloads, 1500)
	defer ns.Close()
	cfg := testConfig()
	cfg.EnableIPv6 = false
	var stats *Stats
	if process {
		cfg.EnableSeccomp = true
		cfg.EnableSandbox = true
		startEngineWithTap(t, cfg, fd, vnet, offloads)
	} else {
		ep, err := link.New(fd, link.Options{MTU: 1500, Address: GatewayMAC, VnetHdr: vnet, Offloads: offloads})
		if err != nil {
			t.Fatal(err)
		}
		eng, err := New(cfg, ep, WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		stats = eng.Stats()
	}
	guest := func(timeout time.Duration, name string, args ...string) (string, error) {
		var out []byte
		err := ns.Do(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			var err error
			out, err = exec.CommandContext(ctx, name, args...).CombinedOutput()
			return err
		})
		return string(out), err
	}
	base := fmt.Sprintf("http://10.0.2.2:%d", h.httpPort)

	start := time.Now()
	out, err := guest(time.Minute, "sh", "-c", "curl -sS --fail "+base+"/data | sha256sum")
	if err != nil || !strings.HasPrefix(out, h.dataSum) {
		t.Fatalf("download: %v %q, want %s", err, out, h.dataSum)
	}
	t.Logf("64 MiB guest<-host in %v", time.Since(start))

	start = time.Now()
	out, err = guest(time.Minute, "curl", "-sS", "--fail", "--data-binary", "@"+h.upload, base+"/upload")
	if want := fmt.Sprintf("%d %s", e2eSize, h.uploadSum); err != nil || out != want {
		t.Fatalf("upload: %v %q, want %q", err, out, want)
	}
	t.Logf("64 MiB guest->host in %v", time.Since(start))

	start = time.Now()
	out, err = guest(10*time.Second, "curl", "-sS", fmt.Sprintf("http://10.0.2.2:%d/", h.closedPort))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 || time.Since(start) > time.Second {
		t.Fatalf("closed port: %v %q after %v, want a quick 'connection refused'", err, out, time.Since(start))
	}

	for _, dst := range []string{"10.0.2.2", h.remote.String()} {
		if out, err := guest(10*time.Second, "busybox", "ping", "-c", "1", "-W", "5", dst); err != nil {
			t.Fatalf("ping %s: %v\n%s", dst, err, out)
		}
	}
	if stats != nil && stats.PingsRelayed.Load() == 0 {
		t.Fatal("the ping to the remote address was not relayed")
	}
	// The services: a DHCP lease from the engine, a DNS answer relayed
	// from the host's resolver.
	out, err = guest(20*time.Second, "busybox", "udhcpc", "-i", "tap0", "-n", "-q", "-f", "-t", "3", "-T", "2", "-s", "/bin/true")
	if err != nil || !strings.Contains(out, "10.0.2.15") {
		t.Fatalf("udhcpc: %v\n%s", err, out)
	}
	out, err = guest(20*time.Second, "busybox", "nslookup", "e2e.test", "10.0.2.3")
	if err != nil || !strings.Contains(out, h.remote.String()) {
		t.Fatalf("nslookup: %v\n%s", err, out)
	}

	// A ping to an address nobody has must stay unanswered (gVisor alone
	// would answer it).
	if out, err := guest(10*time.Second, "busybox", "ping", "-c", "1", "-W", "1", "10.0.2.77"); err == nil {
		t.Fatalf("ping to a nonexistent guest-network address answered:\n%s", out)
	}
}

// startEngineWithTap runs Main in a child process on the TAP fd (which it
// takes over) and waits until it is ready and, with seccomp, filtered.
func startEngineWithTap(t *testing.T, cfg policy.Config, fd int, vnet bool, offloads uint32) {
	t.Helper()
	tap := os.NewFile(uintptr(fd), "tap")
	defer tap.Close()
	var env []string
	if cfg.EnableSandbox {
		// What the supervisor sets so that package sandbox's constructor
		// confines the engine before the Go runtime starts.
		env = []string{sandbox.ModeEnv + "=" + sandbox.ModeEngine, sandbox.SandboxEnv + "=1"}
	}
	p := startEngineProc(t, env...)
	start := proto.EngineStart{Config: cfg, Link: proto.LinkTap, Tap: proto.TapInfo{Name: "tap0", VnetHdr: vnet, Offloads: offloads}}
	if err := p.conn.SendBody(ipc.TypeEngineStart, 0, start, tap); err != nil {
		t.Fatal(err)
	}
	if m := p.recv(t); m.Type != ipc.TypeReady {
		t.Fatalf("engine: %+v (stderr: %s)", m, p.stderr)
	}
	if cfg.EnableSeccomp {
		checkSeccomp(t, p.cmd.Process.Pid)
	}
	t.Cleanup(func() {
		p.conn.SendBody(ipc.TypeShutdown, 0, nil)
		if code := p.wait(t, 5*time.Second); code != 0 {
			t.Errorf("engine exit code %d (stderr: %s)", code, p.stderr)
		}
	})
}
