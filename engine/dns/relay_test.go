package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"go.uber.org/goleak"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
)

// verifyNoLeaks checks for leaked goroutines after every other cleanup of
// the test has run (cleanups run last-in first-out).
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// upstream is a test DNS server on a loopback address: it answers A and
// AAAA queries for names under "test." and counts what it sees.
type upstream struct {
	addr    string // ip:port
	port    int
	queries atomic.Int64
	tcp     atomic.Int64
	servers []*mdns.Server
	answerA string       // the A record it returns
	rcode   atomic.Int32 // when not 0, answer every query with this rcode
}

func (u *upstream) ServeDNS(w mdns.ResponseWriter, q *mdns.Msg) {
	u.queries.Add(1)
	isTCP := w.RemoteAddr().Network() == "tcp"
	if isTCP {
		u.tcp.Add(1)
	}
	m := new(mdns.Msg)
	m.SetReply(q)
	name := q.Question[0].Name
	switch {
	case u.rcode.Load() != 0:
		m.Rcode = int(u.rcode.Load())
	case name == "big.test." && !isTCP:
		m.Truncated = true
	case q.Question[0].Qtype == mdns.TypeA:
		rr, _ := mdns.NewRR(name + " 60 IN A " + u.answerA)
		m.Answer = append(m.Answer, rr)
	case q.Question[0].Qtype == mdns.TypeAAAA:
		rr, _ := mdns.NewRR(name + " 60 IN AAAA 2001:db8::1")
		m.Answer = append(m.Answer, rr)
	}
	_ = w.WriteMsg(m)
}

// startUpstream serves DNS on ip over UDP and TCP with the same port; port
// 0 picks a free one.
func startUpstream(t *testing.T, ip string, port int, answerA string) *upstream {
	t.Helper()
	u := &upstream{answerA: answerA}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		pc, err = net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err = net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
		if err == nil {
			u.port = p
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("listen upstream: %v", err)
	}
	u.addr = net.JoinHostPort(ip, strconv.Itoa(u.port))
	var started sync.WaitGroup
	started.Add(2)
	u.servers = []*mdns.Server{
		{PacketConn: pc, Handler: u, NotifyStartedFunc: started.Done},
		{Listener: ln, Handler: u, NotifyStartedFunc: started.Done},
	}
	for _, s := range u.servers {
		go func() { _ = s.ActivateAndServe() }()
	}
	started.Wait()
	t.Cleanup(func() {
		for _, s := range u.servers {
			_ = s.Shutdown()
		}
	})
	return u
}

// newLocalRelay starts an upstream on 127.0.0.1 (answering A queries with
// 192.0.2.1) and returns it with a relay whose resolv.conf names it alone.
func newLocalRelay(t *testing.T) (*Relay, *upstream) {
	t.Helper()
	up := startUpstream(t, "127.0.0.1", 0, "192.0.2.1")
	rc := newResolvConf(t, "nameserver 127.0.0.1\n")
	return NewRelay(Options{ResolvConf: rc, Port: up.port}), up
}

// newResolvConf writes content to a resolv.conf of the test's own and
// returns its path.
func newResolvConf(t *testing.T, content string) string {
	t.Helper()
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	writeResolvConf(t, rc, content)
	return rc
}

// writeResolvConf replaces path with content atomically, as an editor or
// resolvconf would.
func writeResolvConf(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func query(t testing.TB, name string, qtype uint16) []byte {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustAnswer(t *testing.T, b []byte, wantRcode int, wantAnswers int) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("unpack answer: %v", err)
	}
	if m.Rcode != wantRcode || len(m.Answer) != wantAnswers {
		t.Fatalf("answer rcode %d with %d records, want %d with %d: %v", m.Rcode, len(m.Answer), wantRcode, wantAnswers, m)
	}
	return m
}

func TestExchange(t *testing.T) {
	verifyNoLeaks(t)
	up := startUpstream(t, "127.0.0.1", 0, "192.0.2.1")
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	// 127.0.0.2 has nothing listening: refused at once, then fallback.
	writeResolvConf(t, rc, "# test\nsearch example\nnameserver 127.0.0.2\nnameserver 127.0.0.1 ; comment\n")
	r := NewRelay(Options{ResolvConf: rc, Port: up.port, Timeout: time.Second})
	ctx := context.Background()

	resp, err := r.Exchange(ctx, query(t, "a.test.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	m := mustAnswer(t, resp, mdns.RcodeSuccess, 1)
	if a := m.Answer[0].(*mdns.A).A.String(); a != "192.0.2.1" {
		t.Fatalf("A = %s", a)
	}
	resp, err = r.Exchange(ctx, query(t, "big.test.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if m := mustAnswer(t, resp, mdns.RcodeSuccess, 0); !m.Truncated {
		t.Fatal("TC answer not passed through to UDP client")
	}
	resp, err = r.exchange(ctx, query(t, "big.test.", mdns.TypeA), "tcp")
	if err != nil {
		t.Fatal(err)
	}
	if m := mustAnswer(t, resp, mdns.RcodeSuccess, 1); m.Truncated {
		t.Fatal("TCP answer truncated")
	}
	if up.tcp.Load() != 1 {
		t.Fatalf("upstream saw %d TCP queries, want 1", up.tcp.Load())
	}
}

func TestMalformedNotForwarded(t *testing.T) {
	verifyNoLeaks(t)
	r, up := newLocalRelay(t)

	resp := new(mdns.Msg)
	resp.SetQuestion("a.test.", mdns.TypeA)
	resp.Response = true
	respBytes, _ := resp.Pack()
	update := new(mdns.Msg)
	update.SetUpdate("test.")
	updateBytes, _ := update.Pack()
	twoQ := new(mdns.Msg)
	twoQ.SetQuestion("a.test.", mdns.TypeA)
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	twoQBytes, _ := twoQ.Pack()
	noQ := new(mdns.Msg)
	noQBytes, _ := noQ.Pack()
	withAnswer := new(mdns.Msg)
	withAnswer.SetQuestion("a.test.", mdns.TypeA)
	rr, _ := mdns.NewRR("a.test. 60 IN A 192.0.2.9")
	withAnswer.Answer = []mdns.RR{rr}
	withAnswerBytes, _ := withAnswer.Pack()

	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", []byte{1, 2, 3}},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"truncated question", query(t, "a.test.", mdns.TypeA)[:15]},
		{"response", respBytes},
		{"update opcode", updateBytes},
		{"two questions", twoQBytes},
		{"no question", noQBytes},
		{"answer section", withAnswerBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := r.Exchange(context.Background(), tc.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Exchange error = %v, want ErrMalformed", err)
			}
		})
	}
	if n := up.queries.Load(); n != 0 {
		t.Fatalf("upstream received %d queries from malformed input", n)
	}
}

func TestResolvConfReload(t *testing.T) {
	verifyNoLeaks(t)
	first := startUpstream(t, "127.0.0.1", 0, "192.0.2.1")
	startUpstream(t, "127.0.0.4", first.port, "192.0.2.4")
	dir := t.TempDir()
	target := filepath.Join(dir, "real.conf")
	rc := filepath.Join(dir, "resolv.conf")
	writeResolvConf(t, target, "nameserver 127.0.0.1\n")
	if err := os.Symlink(target, rc); err != nil {
		t.Fatal(err)
	}
	r := NewRelay(Options{ResolvConf: rc, Port: first.port})
	r.resolv.recheck = 0 // no waiting for the once-a-second check
	ask := func(want string) {
		t.Helper()
		resp, err := r.Exchange(context.Background(), query(t, "a.test.", mdns.TypeA))
		if err != nil {
			t.Fatal(err)
		}
		m := mustAnswer(t, resp, mdns.RcodeSuccess, 1)
		if got := m.Answer[0].(*mdns.A).A.String(); got != want {
			t.Fatalf("answer %s, want %s", got, want)
		}
	}
	ask("192.0.2.1")
	writeResolvConf(t, target, "nameserver 127.0.0.4\n") // replaced by rename
	ask("192.0.2.4")
	if err := os.Remove(target); err != nil { // gone: keep the last good list
		t.Fatal(err)
	}
	ask("192.0.2.4")
	writeResolvConf(t, target, "") // empty (mid-rewrite): keep the last list
	ask("192.0.2.4")
	writeResolvConf(t, target, "nameserver 127.0.0.1\n")
	ask("192.0.2.1")
}

func TestResolvRecheckRateLimited(t *testing.T) {
	rc := newResolvConf(t, "nameserver 127.0.0.1\n")
	w := &resolvWatcher{path: rc, port: 53, recheck: time.Second}
	t0 := time.Now()
	if got := w.nameservers(t0); len(got) != 1 || got[0] != "127.0.0.1:53" {
		t.Fatalf("nameservers = %v", got)
	}
	writeResolvConf(t, rc, "nameserver 127.0.0.9\n")
	if got := w.nameservers(t0.Add(500 * time.Millisecond)); got[0] != "127.0.0.1:53" {
		t.Fatalf("re-read before the recheck interval: %v", got)
	}
	if got := w.nameservers(t0.Add(1100 * time.Millisecond)); got[0] != "127.0.0.9:53" {
		t.Fatalf("change not picked up after the recheck interval: %v", got)
	}
}

func TestParseResolvConf(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"nameserver 10.0.0.1\n", []string{"10.0.0.1:53"}},
		{"nameserver ::1\nnameserver fe80::1%eth0\n", []string{"[::1]:53", "[fe80::1%eth0]:53"}},
		{"#nameserver 1.1.1.1\n;nameserver 1.0.0.1\nnameserver bogus\nnameserver\n", nil},
		{"nameserver 1.1.1.1 # x\n  nameserver\t127.0.0.53  \n", []string{"1.1.1.1:53", "127.0.0.53:53"}},
		{"nameserver 1.1.1.1\nnameserver 1.1.1.2\nnameserver 1.1.1.3\nnameserver 1.1.1.4\n", []string{"1.1.1.1:53", "1.1.1.2:53", "1.1.1.3:53"}},
		{"options ndots:5\nnameserver ::ffff:1.2.3.4\n", []string{"1.2.3.4:53"}},
	} {
		got := parseResolvConf([]byte(tc.in), 53)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("parseResolvConf(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestNoNameserversServfail(t *testing.T) {
	rc := newResolvConf(t, "search example\n")
	r := NewRelay(Options{ResolvConf: rc})
	q := query(t, "a.test.", mdns.TypeA)
	resp, err := r.Exchange(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	m := mustAnswer(t, resp, mdns.RcodeServerFailure, 0)
	qm := new(mdns.Msg)
	_ = qm.Unpack(q)
	if m.Id != qm.Id || len(m.Question) != 1 || m.Question[0].Name != "a.test." {
		t.Fatalf("SERVFAIL does not answer the query: %v", m)
	}
	// A missing resolv.conf behaves the same.
	r = NewRelay(Options{ResolvConf: filepath.Join(t.TempDir(), "missing")})
	resp, err = r.Exchange(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, resp, mdns.RcodeServerFailure, 0)
}

func TestTimeoutFallback(t *testing.T) {
	verifyNoLeaks(t)
	up := startUpstream(t, "127.0.0.1", 0, "192.0.2.1")
	// A server that receives but never answers.
	hole, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.5", strconv.Itoa(up.port)))
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	rc := newResolvConf(t, "nameserver 127.0.0.5\nnameserver 127.0.0.1\n")
	r := NewRelay(Options{ResolvConf: rc, Port: up.port, Timeout: 200 * time.Millisecond})
	start := time.Now()
	resp, err := r.Exchange(context.Background(), query(t, "a.test.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, resp, mdns.RcodeSuccess, 1)
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("fallback after %v, want just over the 200ms timeout", d)
	}
	// Cancellation ends an exchange early with the context's error.
	writeResolvConf(t, rc, "nameserver 127.0.0.5\n")
	r = NewRelay(Options{ResolvConf: rc, Port: up.port, Timeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := r.Exchange(ctx, query(t, "a.test.", mdns.TypeA)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exchange after cancel: %v", err)
	}
}

// newTestStack returns a gVisor stack with one loopback NIC holding the DNS
// addresses, so that a gonet client on it reaches the relay.
func newTestStack(t *testing.T) *stack.Stack {
	t.Helper()
	return linktest.NewTestStack(t, loopback.New(), netip.MustParsePrefix("10.0.2.3/24"), netip.MustParsePrefix("fd00::3/64"))
}

func TestServeStack(t *testing.T) {
	verifyNoLeaks(t)
	r, up := newLocalRelay(t)
	s := newTestStack(t)
	dns4 := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4([4]byte{10, 0, 2, 3}), Port: 53}
	dns6 := tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom16Slice(netip.MustParseAddr("fd00::3").AsSlice()), Port: 53}

	testutil.ServeUntilCleanup(t, "ServeStack", func(ctx context.Context) error {
		return r.ServeStack(ctx, s, []tcpip.FullAddress{dns4, dns6})
	})

	for _, srv := range []tcpip.FullAddress{dns4, dns6} {
		t.Run(srv.Addr.String()+"/udp", func(t *testing.T) {
			c, err := gonet.DialUDP(s, nil, &srv, netProto(srv.Addr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
				resp := roundTripUDP(t, c, query(t, "host.test.", qt))
				mustAnswer(t, resp, mdns.RcodeSuccess, 1)
			}
		})
		t.Run(srv.Addr.String()+"/tcp", func(t *testing.T) {
			c, err := dialTCPRetry(s, srv)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			// Several queries on one connection, pipelined.
			names := []string{"one.test.", "two.test.", "big.test."}
			for _, n := range names {
				if err := writeTCPMsg(c, query(t, n, mdns.TypeA)); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range names {
				b, err := readTCPMsg(c)
				if err != nil {
					t.Fatal(err)
				}
				m := mustAnswer(t, b, mdns.RcodeSuccess, 1)
				if m.Question[0].Name != n || m.Truncated {
					t.Fatalf("answer %v for %s", m, n)
				}
			}
		})
	}
	// A malformed TCP query closes the connection without forwarding.
	before := up.queries.Load()
	c, err := dialTCPRetry(s, dns4)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := writeTCPMsg(c, []byte("not dns at all")); err != nil {
		t.Fatal(err)
	}
	if _, err := readTCPMsg(c); err == nil {
		t.Fatal("malformed TCP query got an answer")
	}
	c.Close()
	if up.queries.Load() != before {
		t.Fatal("malformed TCP query reached upstream")
	}
}

func TestServeStackBindError(t *testing.T) {
	verifyNoLeaks(t)
	s := newTestStack(t)
	r := NewRelay(Options{ResolvConf: filepath.Join(t.TempDir(), "none")})
	bad := tcpip.FullAddress{NIC: 99, Addr: tcpip.AddrFrom4([4]byte{10, 0, 2, 3}), Port: 53}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.ServeStack(ctx, s, []tcpip.FullAddress{bad}); err == nil {
		t.Fatal("ServeStack on an address the stack does not have succeeded")
	}
}

func roundTripUDP(t *testing.T, c *gonet.UDPConn, q []byte) []byte {
	t.Helper()
	buf := make([]byte, 65535)
	// The relay may not be bound yet on the first tries (the read then fails
	// at once with "connection refused"): retry for a while.
	for range 50 {
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			return buf[:n]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no UDP answer")
	return nil
}

func dialTCPRetry(s *stack.Stack, a tcpip.FullAddress) (*gonet.TCPConn, error) {
	var err error
	for range 50 {
		var c *gonet.TCPConn
		if c, err = gonet.DialTCP(s, a, netProto(a.Addr)); err == nil {
			return c, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func FuzzExchange(f *testing.F) {
	f.Add(query(f, "a.test.", mdns.TypeA))
	f.Add(query(f, "xn--bcher-kva.example.", mdns.TypeAAAA))
	edns := new(mdns.Msg)
	edns.SetQuestion("e.test.", mdns.TypeTXT)
	edns.SetEdns0(4096, true)
	b, _ := edns.Pack()
	f.Add(b)
	f.Add([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}) // self-pointing name
	f.Add([]byte{})
	rc := filepath.Join(f.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("# no nameservers: nothing leaves the process\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	r := NewRelay(Options{ResolvConf: rc})
	f.Fuzz(func(t *testing.T, in []byte) {
		resp, err := r.Exchange(context.Background(), in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		q, err := parseQuery(in)
		if err != nil {
			t.Fatalf("Exchange accepted what parseQuery rejects: %v", err)
		}
		m := new(mdns.Msg)
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if !m.Response || m.Id != q.Header.ID || m.Rcode != mdns.RcodeServerFailure {
			t.Fatalf("bad SERVFAIL answer %v", m)
		}
	})
}

func TestConcurrencyBound(t *testing.T) {
	rc := newResolvConf(t, "")
	r := NewRelay(Options{ResolvConf: rc, MaxInFlight: 2})
	for range 2 {
		if err := r.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := r.Exchange(ctx, query(t, "a.test.", mdns.TypeA)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Exchange with every slot taken: %v, want a deadline error", err)
	}
	r.release()
	if _, err := r.Exchange(context.Background(), query(t, "a.test.", mdns.TypeA)); err != nil {
		t.Fatalf("Exchange after a slot was freed: %v", err)
	}
}

// TestStrayAnswersIgnored: datagrams that do not answer the query (wrong
// id, wrong question, not a response, not DNS) are skipped, and the real
// answer that follows is returned.
func TestStrayAnswersIgnored(t *testing.T) {
	verifyNoLeaks(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := new(mdns.Msg)
		if q.Unpack(buf[:n]) != nil {
			return
		}
		send := func(m *mdns.Msg) {
			b, _ := m.Pack()
			_, _ = pc.WriteTo(b, from)
		}
		wrongID := new(mdns.Msg)
		wrongID.SetReply(q)
		wrongID.Id++
		send(wrongID)
		wrongQ := new(mdns.Msg)
		wrongQ.SetReply(q)
		wrongQ.Question[0].Name = "evil.test."
		send(wrongQ)
		notResp := q.Copy()
		send(notResp)
		_, _ = pc.WriteTo([]byte("junk"), from)
		good := new(mdns.Msg)
		good.SetReply(q)
		rr, _ := mdns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.77")
		good.Answer = []mdns.RR{rr}
		send(good)
	}()
	rc := newResolvConf(t, "nameserver 127.0.0.1\n")
	r := NewRelay(Options{ResolvConf: rc, Port: pc.LocalAddr().(*net.UDPAddr).Port})
	resp, err := r.Exchange(context.Background(), query(t, "a.test.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	m := mustAnswer(t, resp, mdns.RcodeSuccess, 1)
	if got := m.Answer[0].(*mdns.A).A.String(); got != "192.0.2.77" {
		t.Fatalf("answer %s", got)
	}
	<-done
}

func TestServfailFallback(t *testing.T) {
	verifyNoLeaks(t)
	good := startUpstream(t, "127.0.0.1", 0, "192.0.2.1")
	bad := startUpstream(t, "127.0.0.6", good.port, "192.0.2.6")
	bad.rcode.Store(mdns.RcodeServerFailure)
	rc := newResolvConf(t, "nameserver 127.0.0.6\nnameserver 127.0.0.1\n")
	r := NewRelay(Options{ResolvConf: rc, Port: good.port})
	resp, err := r.Exchange(context.Background(), query(t, "a.test.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, resp, mdns.RcodeSuccess, 1)
	// With only failing servers, their SERVFAIL is returned.
	writeResolvConf(t, rc, "nameserver 127.0.0.6\n")
	r = NewRelay(Options{ResolvConf: rc, Port: good.port})
	resp, err = r.Exchange(context.Background(), query(t, "a.test.", mdns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	mustAnswer(t, resp, mdns.RcodeServerFailure, 0)
	if bad.queries.Load() != 2 {
		t.Fatalf("failing server saw %d queries, want 2", bad.queries.Load())
	}
}
