package testnet

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var testZone = Zone{
	"host.slirp.test.": {netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")},
}

func TestZoneAnswer(t *testing.T) {
	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		want  []string
	}{
		{"A", "host.slirp.test.", dns.TypeA, dns.RcodeSuccess, []string{"192.0.2.10"}},
		{"AAAA", "host.slirp.test.", dns.TypeAAAA, dns.RcodeSuccess, []string{"2001:db8::10"}},
		{"case insensitive", "HOST.Slirp.Test.", dns.TypeA, dns.RcodeSuccess, []string{"192.0.2.10"}},
		{"MX: no data", "host.slirp.test.", dns.TypeMX, dns.RcodeSuccess, nil},
		{"unknown name", "other.slirp.test.", dns.TypeA, dns.RcodeNameError, nil},
		{"never recurses", "example.com.", dns.TypeA, dns.RcodeNameError, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := new(dns.Msg)
			req.SetQuestion(tc.qname, tc.qtype)
			resp := testZone.answer(req)
			if resp.Rcode != tc.rcode || !resp.Authoritative || resp.Id != req.Id {
				t.Fatalf("rcode %d aa %v id %d, want rcode %d aa id %d", resp.Rcode, resp.Authoritative, resp.Id, tc.rcode, req.Id)
			}
			var got []string
			for _, rr := range resp.Answer {
				switch rr := rr.(type) {
				case *dns.A:
					got = append(got, rr.A.String())
				case *dns.AAAA:
					got = append(got, rr.AAAA.String())
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("answers %v, want %v", got, tc.want)
			}
		})
	}
	if r := testZone.answer(new(dns.Msg)); r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: rcode %d, want FORMERR", r.Rcode)
	}
}

// FuzzZoneAnswer: whatever a client sends, the reply can be packed (and so
// sent) and never answers a name outside the zone.
func FuzzZoneAnswer(f *testing.F) {
	for _, q := range []struct {
		name string
		t    uint16
	}{{"host.slirp.test.", dns.TypeA}, {"x.", dns.TypeAAAA}, {"host.slirp.test.", dns.TypeANY}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(dns.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		resp := testZone.answer(req)
		if _, err := resp.Pack(); err != nil {
			t.Fatalf("reply to %v cannot be packed: %v", req.Question, err)
		}
		for _, rr := range resp.Answer {
			if _, ok := testZone[strings.ToLower(rr.Header().Name)]; !ok {
				t.Fatalf("answered %q, not in the zone", rr.Header().Name)
			}
		}
	})
}

func TestServeDNSAndLookupA(t *testing.T) {
	var s Services
	defer s.Close()
	addr, err := s.ServeDNS("127.0.0.1:0", testZone)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, network := range []string{"udp", "tcp"} {
		got, err := LookupA(ctx, addr.String(), network, "host.slirp.test")
		if err != nil || len(got) != 1 || got[0].String() != "192.0.2.10" {
			t.Errorf("%s: %v, %v; want [192.0.2.10]", network, got, err)
		}
		if _, err := LookupA(ctx, addr.String(), network, "nope.slirp.test"); err == nil || !strings.Contains(err.Error(), "NXDOMAIN") {
			t.Errorf("%s: unknown name: %v, want NXDOMAIN", network, err)
		}
	}
}

func TestBlob(t *testing.T) {
	a, _ := io.ReadAll(Blob(100000))
	b, _ := io.ReadAll(Blob(100000))
	if len(a) != 100000 || string(a) != string(b) {
		t.Fatalf("Blob is not deterministic or has the wrong size (%d)", len(a))
	}
	sum := sha256.Sum256(a)
	if got := BlobSHA256(100000); got != hex.EncodeToString(sum[:]) {
		t.Errorf("BlobSHA256 = %s, want %x", got, sum)
	}
	if prefix, _ := io.ReadAll(Blob(10)); string(prefix) != string(a[:10]) {
		t.Error("a shorter blob is not a prefix of a longer one")
	}
}

func TestHTTPHandler(t *testing.T) {
	srv := httptest.NewServer(HTTPHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/blob?size=5000")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(body)
	if len(body) != 5000 || hex.EncodeToString(sum[:]) != BlobSHA256(5000) {
		t.Errorf("GET /blob: %d bytes, sha %x", len(body), sum)
	}
	resp, err = http.Post(srv.URL+"/sha256", "application/octet-stream", Blob(5000))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != BlobSHA256(5000) {
		t.Errorf("POST /sha256 = %q", body)
	}
	for _, bad := range []string{"/blob", "/blob?size=-1", "/blob?size=99999999999"} {
		resp, err := http.Get(srv.URL + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET %s: %s, want 400", bad, resp.Status)
		}
	}
}

func TestEchoAndPeer(t *testing.T) {
	var s Services
	defer s.Close()
	tcpEcho, err := s.ServeTCP("tcp", "127.0.0.1:0", EchoTCP)
	if err != nil {
		t.Fatal(err)
	}
	udpEcho, err := s.ServeUDP("udp", "127.0.0.1:0", EchoUDP)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := s.ServeTCP("tcp", "127.0.0.1:0", PeerTCP)
	if err != nil {
		t.Fatal(err)
	}
	udpPeer, err := s.ServeUDP("udp", "127.0.0.1:0", PeerUDP)
	if err != nil {
		t.Fatal(err)
	}

	c, err := net.Dial("tcp", tcpEcho.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "hello\n" {
		t.Errorf("tcp echo: %q, %v", line, err)
	}
	for _, tc := range []struct {
		addr net.Addr
		send string
		want string
	}{{udpEcho, "ping", "ping"}, {udpPeer, "x", "peer=127.0.0.1\n"}} {
		u, err := net.Dial("udp", tc.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		u.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(u, tc.send)
		buf := make([]byte, 100)
		n, err := u.Read(buf)
		u.Close()
		if err != nil || string(buf[:n]) != tc.want {
			t.Errorf("udp %s: %q, %v; want %q", tc.addr, buf[:n], err, tc.want)
		}
	}
	pc, err := net.Dial("tcp", peer.String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if b, err := io.ReadAll(pc); err != nil || string(b) != "peer=127.0.0.1\n" {
		t.Errorf("peer: %q, %v", b, err)
	}
}

func TestServicesCloseEndsOpenConnections(t *testing.T) {
	var s Services
	addr, err := s.ServeTCP("tcp", "127.0.0.1:0", EchoTCP)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "x")
	c.Read(make([]byte, 1)) // the connection is being served
	done := make(chan error)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs while a connection is open")
	}
}

func TestAPIRequest(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		req, _ := io.ReadAll(c) // returns only after the client's SHUT_WR
		got <- string(req)
		io.WriteString(c, `{"return":{"id":7}}`)
	}()
	reply, err := APIRequest(sock, `{"execute":"list_hostfwd"}`)
	if err != nil || string(reply) != `{"return":{"id":7}}` {
		t.Errorf("APIRequest: %q, %v", reply, err)
	}
	if req := <-got; req != `{"execute":"list_hostfwd"}` {
		t.Errorf("server got %q", req)
	}
	if _, err := APIRequest(filepath.Join(t.TempDir(), "missing.sock"), "{}"); err == nil {
		t.Error("APIRequest to a missing socket succeeded")
	}
	_ = os.Remove(sock)
}
