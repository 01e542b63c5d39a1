package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Host ports of the forward tests; distinct per test because every test
// shares the outer namespace.
const (
	fwdPortTCP    = 18080
	fwdPortUDP    = 18081
	fwdPortErrors = 18082
	fwdPortList   = 18083
)

// dialPeer connects from src (empty: any) to addr in the outer namespace
// and returns what the server sends ("peer=IP\n"), or the error.
func dialPeer(addr, src string) (string, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestHostFwdTCP: add_hostfwd tcp; connections from the outer loopback and
// from a non-loopback outer address reach the guest's server, which sees
// 10.0.2.2 for loopback and the real address otherwise; after
// remove_hostfwd the port is closed.
func TestHostFwdTCP(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	StartGuestServer(t, g, "tcp", "0.0.0.0:80")
	id := AddHostFwd(t, s.APISocket, "tcp", "0.0.0.0", fwdPortTCP, 80)

	for _, tc := range []struct{ dst, src, want string }{
		{"127.0.0.1", "", "peer=10.0.2.2\n"},
		{addrA, addrA, "peer=" + addrA + "\n"},
		{addrB1, addrB2, "peer=" + addrB2 + "\n"},
	} {
		got, err := dialPeer(hostPort(tc.dst, fwdPortTCP), tc.src)
		if err != nil || got != tc.want {
			t.Errorf("from %q to %s:%d: %q, %v; want %q", tc.src, tc.dst, fwdPortTCP, got, err, tc.want)
		}
	}

	APIOK(t, s.APISocket, fmt.Sprintf(`{"execute":"remove_hostfwd","arguments":{"id":%d}}`, id))
	if got, err := dialPeer(hostPort("127.0.0.1", fwdPortTCP), ""); err == nil {
		t.Errorf("forward still open after remove_hostfwd: %q", got)
	}
}

// TestHostFwdUDP: the same for UDP.
func TestHostFwdUDP(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	StartGuestServer(t, g, "udp", "0.0.0.0:81")
	id := AddHostFwd(t, s.APISocket, "udp", "0.0.0.0", fwdPortUDP, 81)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	for _, tc := range []struct{ dst, src, want string }{
		{"127.0.0.1", "", "peer=10.0.2.2\n"},
		{addrA, addrA, "peer=" + addrA + "\n"},
	} {
		got, err := udpRequest(ctx, hostPort(tc.dst, fwdPortUDP), tc.src, []byte("hello"))
		if err != nil || string(got) != tc.want {
			t.Errorf("from %q to %s:%d: %q, %v; want %q", tc.src, tc.dst, fwdPortUDP, got, err, tc.want)
		}
	}

	APIOK(t, s.APISocket, fmt.Sprintf(`{"execute":"remove_hostfwd","arguments":{"id":%d}}`, id))
	if got, err := udpRequest(ctx, hostPort("127.0.0.1", fwdPortUDP), "", []byte("hello")); err == nil {
		t.Errorf("forward still answers after remove_hostfwd: %q", got)
	}
}

// TestListHostFwd: list_hostfwd shows the forwards with their defaults.
// Deliberate difference: ours wraps the list in {"return": ...} as the man
// page documents; C slirp4netns 1.2.0 answers a bare {"entries": [...]}.
func TestListHostFwd(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	id1 := AddHostFwd(t, s.APISocket, "tcp", "0.0.0.0", fwdPortList, 80)
	id2 := AddHostFwd(t, s.APISocket, "udp", "127.0.0.1", fwdPortList, 81)
	if id1 == id2 {
		t.Fatalf("two forwards got the same id %d", id1)
	}
	r := API(t, s.APISocket, `{"execute":"list_hostfwd"}`)
	if r.Bare() == goImpl() {
		t.Errorf("list_hostfwd reply form: bare=%v, want bare=%v (impl %s)", r.Bare(), !goImpl(), implName())
	}
	fw, err := r.Forwards()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[{%d tcp 0.0.0.0 %d 10.0.2.100 80} {%d udp 127.0.0.1 %d 10.0.2.100 81}]",
		id1, fwdPortList, id2, fwdPortList)
	if got := fmt.Sprint(fw); got != want {
		t.Errorf("list_hostfwd = %s, want %s", got, want)
	}
	APIOK(t, s.APISocket, fmt.Sprintf(`{"execute":"remove_hostfwd","arguments":{"id":%d}}`, id1))
	fw, err = API(t, s.APISocket, `{"execute":"list_hostfwd"}`).Forwards()
	if err != nil || len(fw) != 1 || fw[0].ID != id2 {
		t.Errorf("after removing %d: %v, %v", id1, fw, err)
	}
}

// TestAPIErrors: bad requests get {"error": {"desc": ...}} and leave the
// server working.
func TestAPIErrors(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	AddHostFwd(t, s.APISocket, "tcp", "127.0.0.1", fwdPortErrors, 80)
	for _, req := range []string{
		`garbage`,
		`{"execute":"no_such_command"}`,
		`{"execute":"remove_hostfwd","arguments":{"id":4242}}`,
		`{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":18090,"guest_port":80}}`,
		fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":%d,"guest_port":80}}`, fwdPortErrors),
	} {
		r := API(t, s.APISocket, req)
		if r.Error == nil || strings.TrimSpace(r.Error.Desc) == "" {
			t.Errorf("request %s: got %+v, want an error", req, r)
		}
	}
	fw, err := API(t, s.APISocket, `{"execute":"list_hostfwd"}`).Forwards()
	if err != nil || len(fw) != 1 {
		t.Errorf("after the bad requests: %v, %v; want the one forward", fw, err)
	}
}
