package integration

import (
	"bufio"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// envLoad selects the size of the load tests: "full" runs the issue's
// figures (make test-load); anything else the smaller everyday ones.
const envLoad = "SLIRPTEST_LOAD"

// Host ports of the load tests.
const (
	fwdPortLoad  = 18180
	floodPort    = 18181
	fwdPortFDLim = 18182
	loadEchoPort = 18183 // plainEcho on the outer 127.0.0.1
	fwdPortFlood = 18184
)

// rssBar is the engine's resident memory limit under the full load (issue
// 9: 10,000 concurrent guest connections, 1,000 forwarded ones, a UDP
// flood).
const rssBar = 200 << 20

// rssBarEveryday is the limit for the everyday load (2,000 guest
// connections, 500 forwarded ones): tighter in proportion, so that make
// test fails too if idle connections cost goroutines and buffers again
// (the relay before the readiness-driven one: ~130 MiB at 2,000).
const rssBarEveryday = 100 << 20

func init() {
	tools["echoserve"] = toolEchoServe
	tools["udpflood"] = toolUDPFlood
	tools["fdexhaust"] = toolFDExhaust
	tools["concurrent"] = toolConcurrent
}

// loadSize returns small, or full when the full load run was asked for.
func loadSize(small, full int) int {
	if os.Getenv(envLoad) == "full" {
		return full
	}
	return small
}

// procStatusKiB reads a "kB" field (VmRSS, VmHWM) of /proc/PID/status.
func procStatusKiB(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return -1
}

// dataPID is the process that moves packets: the engine (ours) or
// slirp4netns itself (C).
func dataPID(t *testing.T, s *Slirp) int {
	t.Helper()
	if goImpl() {
		return EnginePID(t, s)
	}
	return s.PID()
}

// raceBuild reports whether the binary under test was built with -race,
// whose shadow memory multiplies the RSS.
func raceBuild() bool {
	bin, err := slirpBin()
	if err != nil {
		return false
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// checkRSS logs the data process's peak RSS and fails the test above bar
// (not for a -race build).
func checkRSS(t *testing.T, pid int, what string, bar int64) {
	t.Helper()
	hwm, rss := procStatusKiB(pid, "VmHWM"), procStatusKiB(pid, "VmRSS")
	race := raceBuild()
	t.Logf("%s: engine RSS %d KiB, peak %d KiB (race build: %v)", what, rss, hwm, race)
	if hwm*1024 > bar && !race {
		t.Errorf("%s: engine peak RSS %d MiB, want < %d MiB", what, hwm>>10, bar>>20)
	}
}

// TestLoadGuestConnections: thousands of guest TCP connections to the outer
// loopback echo server, all started at once (a SYN burst beyond the
// engine's per-guest SYN limit of 256: the rest wait for the guest's
// retransmission) and all open at the same time; then 16 KiB is echoed on
// each and checked byte for byte. The engine's peak RSS must stay under the
// issue's bar (rssBar, rssBarEveryday).
func TestLoadGuestConnections(t *testing.T) {
	t.Parallel()
	n := loadSize(2000, 10000)
	serveEcho(t, hostPort("127.0.0.1", loadEchoPort))
	g := StartGuest(t)
	s := StartSlirp(t, g, "-c", "--mtu=65520")
	size := 16 << 10
	out := GuestTool(t, g, "concurrent", hostPort("10.0.2.2", loadEchoPort), strconv.Itoa(n), strconv.Itoa(size), strconv.Itoa(n))
	t.Logf("%d guest connections open at once, %d KiB echoed on each: %s", n, size>>10, strings.TrimSpace(out))
	checkRSS(t, dataPID(t, s), fmt.Sprintf("after %d guest connections", n), int64(loadSize(rssBarEveryday, rssBar)))
}

// TestLoadForwardedConnections: hundreds of concurrent connections through
// one port forward to an echo server in the guest, each checked.
func TestLoadForwardedConnections(t *testing.T) {
	t.Parallel()
	n := loadSize(500, 1000)
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c", "--mtu=65520"}, API: true})
	startGuestEcho(t, g, "0.0.0.0:7")
	AddHostFwd(t, s.APISocket, "tcp", "127.0.0.1", fwdPortLoad, 7)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = echoTCP(ctx, hostPort("127.0.0.1", fwdPortLoad), 16384) })
	}
	wg.Wait()
	failed := 0
	var first error
	for _, err := range errs {
		if err != nil {
			failed++
			first = cmpOr(first, err)
		}
	}
	t.Logf("%d concurrent forwarded connections x 16 KiB: %d failed, %v", n, failed, time.Since(start))
	switch {
	case !goImpl():
		// libslirp listens with a backlog of 1: bursts overflow it.
		t.Logf("C slirp4netns: %d of %d forwarded connections failed; first: %v", failed, n, first)
	case failed > 0:
		t.Errorf("%d of %d forwarded connections failed; first: %v", failed, n, first)
	}
	checkRSS(t, dataPID(t, s), fmt.Sprintf("after %d forwarded connections", n), int64(loadSize(rssBarEveryday, rssBar)))
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// startGuestEcho runs the echoserve tool in the guest until the test ends.
func startGuestEcho(t *testing.T, g *Guest, addr string) {
	t.Helper()
	runUntilReady(t, g.Command(context.Background(), toolArgv("echoserve", addr)...), "ready", 10*time.Second)
}

// TestLoadUDPFlood: the guest floods UDP (from many source ports, so many
// flows) to an outer sink; meanwhile API calls that go through the engine
// (add_hostfwd, remove_hostfwd in turn) answer within 100 ms and the
// engine's memory stays bounded. Not parallel: on two cores the other
// tests' load would be measured instead of the flood's.
func TestLoadUDPFlood(t *testing.T) {
	secs := loadSize(3, 10)
	sink := listenProbes(t, hostPort(addrA, floodPort))
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	pid := dataPID(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	flood := g.Command(ctx, toolArgv("udpflood", hostPort(addrA, floodPort), strconv.Itoa(secs), "1200", "256")...)
	var out syncBuffer
	flood.Stdout, flood.Stderr = &out, &out
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- flood.Wait() }()
	var lat []time.Duration
	deadline := time.After(time.Duration(secs)*time.Second + 20*time.Second)
loop:
	for {
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("flood tool: %v: %s", err, out.String())
			}
			break loop
		case <-deadline:
			_ = flood.Process.Kill()
			<-waited
			t.Fatal("flood tool did not end")
		case <-time.After(50 * time.Millisecond):
			start := time.Now()
			req := fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":%d,"guest_port":80}}`, fwdPortFlood)
			if len(lat)%2 == 1 {
				req = `{"execute":"remove_hostfwd","arguments":{"id":` + strconv.Itoa(len(lat)/2+1) + `}}`
			}
			r, err := testnet.APIRequest(s.APISocket, req)
			lat = append(lat, time.Since(start))
			if err != nil || !strings.Contains(string(r), `"return"`) {
				t.Errorf("API during the flood: %s: %s, %v", req, r, err)
				break loop
			}
		}
	}
	if len(lat) == 0 {
		t.Fatal("no API call during the flood")
	}
	slices.Sort(lat)
	p95 := lat[len(lat)*95/100]
	t.Logf("UDP flood %ds: %s; sink received %d; %d API calls: median %v, p95 %v, max %v",
		secs, strings.TrimSpace(out.String()), sink.Load(), len(lat), lat[len(lat)/2], p95, lat[len(lat)-1])
	// The 95th percentile, not the maximum: the test process itself shares
	// two cores with the parallel suite and is sometimes not scheduled.
	if p95 > 100*time.Millisecond {
		t.Errorf("API calls took %v (95th percentile) during the flood, want < 100ms", p95)
	}
	if sink.Load() == 0 {
		t.Errorf("no flood datagram reached the sink")
	}
	checkRSS(t, pid, "after the UDP flood", rssBar)
	if !s.Running() {
		t.Fatalf("slirp4netns died during the flood: %s", s.Stderr.String())
	}
	GuestTool(t, g, "echo", "udp", hostPort("10.0.2.2", echoPort), "100")
}

// TestLowNofile: the data process gets RLIMIT_NOFILE 64 (prlimit). New
// flows beyond it fail (refused, reset or timed out), an established one
// keeps working, new flows work again once others closed, and nothing
// crashes.
func TestLowNofile(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	pid := dataPID(t, s)
	if out, err := exec.Command("prlimit", "--pid", strconv.Itoa(pid), "--nofile=64:64").CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v: %s", err, out)
	}
	out := GuestTool(t, g, "fdexhaust", gwEcho, "150")
	t.Logf("RLIMIT_NOFILE 64: %s", strings.TrimSpace(out))
	var ok, failed int
	if _, err := fmt.Sscanf(out, "ok=%d failed=%d", &ok, &failed); err != nil {
		t.Fatalf("fdexhaust output %q: %v", out, err)
	}
	if failed == 0 {
		t.Errorf("all %d new flows worked under RLIMIT_NOFILE 64: the limit did not bite", ok)
	}
	if !s.Running() {
		t.Fatalf("slirp4netns died under RLIMIT_NOFILE 64: %s", s.Stderr.String())
	}
	// The API (in the supervisor, with its own limit) still works, and so
	// does a forward added now.
	StartGuestServer(t, g, "tcp", "0.0.0.0:80")
	AddHostFwd(t, s.APISocket, "tcp", "127.0.0.1", fwdPortFDLim, 80)
	if got, err := dialPeer(hostPort("127.0.0.1", fwdPortFDLim), ""); err != nil || !strings.HasPrefix(got, "peer=") {
		t.Errorf("forward after fd exhaustion: %q, %v", got, err)
	}
}

// toolEchoServe: echoserve ADDR — a TCP echo server; prints "ready" once
// listening and runs until killed or toolTimeout.
func toolEchoServe(ctx context.Context, args []string) error {
	if err := wantArgs(args, 1, "echoserve ADDR"); err != nil {
		return err
	}
	var s testnet.Services
	defer s.Close()
	if _, err := s.ServeTCP("tcp", args[0], plainEcho); err != nil {
		return err
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}

// toolUDPFlood: udpflood ADDR SECONDS SIZE FLOWS — send SIZE-byte datagrams
// to ADDR as fast as possible for SECONDS from FLOWS sockets in turn, then
// print "sent=N".
func toolUDPFlood(ctx context.Context, args []string) error {
	if err := wantArgs(args, 4, "udpflood ADDR SECONDS SIZE FLOWS"); err != nil {
		return err
	}
	secs, err1 := strconv.Atoi(args[1])
	size, err2 := strconv.Atoi(args[2])
	flows, err3 := strconv.Atoi(args[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	conns := make([]net.Conn, 0, flows)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range flows {
		c, err := net.Dial("udp", args[0])
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	msg := randomBytes(size)
	end := time.Now().Add(time.Duration(secs) * time.Second)
	var sent, dropped int64
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		if _, err := conns[i%flows].Write(msg); err != nil {
			dropped++ // ENOBUFS or ICMP errors from earlier sends
			continue
		}
		sent++
	}
	fmt.Printf("sent=%d errors=%d\n", sent, dropped)
	return nil
}

// toolFDExhaust: fdexhaust ADDR N — with one echo connection open, open N
// more at once (3 s to connect and echo each), check the first still
// echoes, close them all and check that a new one works again. Prints
// "ok=X failed=Y"; fails if the first connection or the recovery fails.
func toolFDExhaust(ctx context.Context, args []string) error {
	if err := wantArgs(args, 2, "fdexhaust ADDR N"); err != nil {
		return err
	}
	n, err := strconv.Atoi(args[1])
	if err != nil {
		return err
	}
	first, err := net.DialTimeout("tcp", args[0], 3*time.Second)
	if err != nil {
		return fmt.Errorf("first connection: %w", err)
	}
	defer first.Close()
	if err := echoOnce(first, 1024); err != nil {
		return fmt.Errorf("first connection: %w", err)
	}
	var okN, failN, timeouts atomic.Int64
	var mu sync.Mutex
	var held []net.Conn
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", args[0], 3*time.Second)
			if err == nil {
				if err = echoOnce(c, 1024); err == nil {
					mu.Lock()
					held = append(held, c)
					mu.Unlock()
					okN.Add(1)
					return
				}
				c.Close()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				timeouts.Add(1)
			}
			failN.Add(1)
		})
	}
	wg.Wait()
	batch := time.Since(start)
	if err := echoOnce(first, 1024); err != nil {
		return fmt.Errorf("established connection broken by the exhaustion: %w", err)
	}
	for _, c := range held {
		c.Close()
	}
	var rerr error
	for try := 0; try < 10 && ctx.Err() == nil; try++ {
		time.Sleep(500 * time.Millisecond)
		if rerr = echoTCP(ctx, args[0], 1024); rerr == nil {
			break
		}
	}
	if rerr != nil {
		return fmt.Errorf("no new connection after the others closed: %w", rerr)
	}
	fmt.Printf("ok=%d failed=%d (timed out %d; %v for the batch)\n", okN.Load(), failN.Load(), timeouts.Load(), batch)
	return nil
}

// echoOnce sends size random bytes on c and checks that they come back
// within 3 s; it leaves c without a deadline.
func echoOnce(c net.Conn, size int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	defer c.SetDeadline(time.Time{})
	return echoConn(ctx, c, size)
}

// toolConcurrent: concurrent ADDR N SIZE DIALS — open N TCP connections to
// an echo server (at most DIALS connecting at a time) and keep them all
// open; once all are established, echo SIZE random bytes on every one at
// once. Prints the timings; fails on any error.
func toolConcurrent(ctx context.Context, args []string) error {
	if err := wantArgs(args, 4, "concurrent ADDR N SIZE DIALS"); err != nil {
		return err
	}
	n, err1 := strconv.Atoi(args[1])
	size, err2 := strconv.Atoi(args[2])
	dials, err3 := strconv.Atoi(args[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	conns := make([]net.Conn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	start := time.Now()
	errs := make([]error, n)
	sem := make(chan struct{}, dials)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var d net.Dialer
			conns[i], errs[i] = d.DialContext(ctx, "tcp", args[0])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	connected := time.Since(start)
	for i, c := range conns {
		wg.Go(func() { errs[i] = echoConn(ctx, c, size) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Printf("all %d connected in %v, echoed in %v\n", n, connected, time.Since(start)-connected)
	return nil
}

// plainEcho echoes with a user-space buffer. testnet.EchoTCP's io.Copy
// splices through a pipe per connection, three fds a connection, which
// at 10,000 connections exceeds the test process's RLIMIT_NOFILE.
func plainEcho(c net.Conn) {
	buf := make([]byte, 16<<10)
	_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
}

// serveEcho runs plainEcho on addr in the outer namespace until the test
// ends.
func serveEcho(t *testing.T, addr string) {
	t.Helper()
	var s testnet.Services
	if _, err := s.ServeTCP("tcp", addr, plainEcho); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
}
