package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// Host ports of the tests of what we do beyond the C version.
const (
	fwdPortIPv6     = 18084
	fwdPortBulk     = 18085
	fwdPortDual     = 18086
	fwdPortChurnLow = 19500 // .. +concurrentAPIClients; no other test uses this range
)

// concurrentAPIClients is how many API clients add and remove forwards at
// once in TestAPIConcurrentWithTransfer.
const concurrentAPIClients = 100

// toolHTTP: http ADDR — serve testnet.HTTPHandler (GET /blob?size=N) in the
// guest; prints "ready" once listening and runs until killed.
func toolHTTP(ctx context.Context, args []string) error {
	if err := wantArgs(args, 1, "http ADDR"); err != nil {
		return err
	}
	var s testnet.Services
	defer s.Close()
	if err := s.ServeHTTP(args[0]); err != nil {
		return err
	}
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return nil
}

// goOnly reports whether the test applies: these cases test what only our
// implementation does (the C slirp4netns 1.2.0 forwards IPv4 only and stops
// the world during API calls), so they are not run against the C binary.
func goOnly(t *testing.T) bool {
	if !goImpl() {
		t.Logf("not applicable to %s: a feature beyond the C version", implName())
		return false
	}
	return true
}

// TestHostFwdIPv6: with -6, a forward from the host's ::1 reaches a guest
// server on its SLAAC address, and the guest sees the IPv6 gateway as the
// client (a loopback client appears as the gateway); an IPv4 client of a
// dual-stack "::" forward reaches the IPv4 guest address.
func TestHostFwdIPv6(t *testing.T) {
	t.Parallel()
	if !goOnly(t) {
		return
	}
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c", "-6"}, API: true})
	guest6 := WaitGuestGlobal6(t, g, "tap0", "fd00::")
	StartGuestServer(t, g, "tcp", "[::]:80")

	req := fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"::1","host_port":%d,"guest_addr":%q,"guest_port":80}}`,
		fwdPortIPv6, guest6)
	APIOK(t, s.APISocket, req)
	got, err := dialPeer(hostPort("::1", fwdPortIPv6), "")
	if want := "peer=fd00::2\n"; err != nil || got != want {
		t.Errorf("IPv6 forward [::1]:%d -> [%s]:80: %q, %v; want %q", fwdPortIPv6, guest6, got, err, want)
	}

	dual := AddHostFwd(t, s.APISocket, "tcp", "::", fwdPortDual, 80)
	got, err = dialPeer(hostPort("127.0.0.1", fwdPortDual), "")
	if want := "peer=10.0.2.2\n"; err != nil || got != want {
		t.Errorf("dual-stack forward from 127.0.0.1: %q, %v; want %q", got, err, want)
	}
	APIOK(t, s.APISocket, fmt.Sprintf(`{"execute":"remove_hostfwd","arguments":{"id":%d}}`, dual))
}

// TestAPIConcurrentWithTransfer: 100 API clients add and remove forwards at
// once while a 64 MiB transfer runs through another forward; the transfer
// completes intact and every response is correct (no stop-the-world).
func TestAPIConcurrentWithTransfer(t *testing.T) {
	t.Parallel()
	if !goOnly(t) {
		return
	}
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c", "--mtu=65520"}, API: true})
	startGuestHTTP(t, g, "0.0.0.0:80")
	AddHostFwd(t, s.APISocket, "tcp", "127.0.0.1", fwdPortBulk, 80)

	const size = 64 << 20
	transfer := make(chan error, 1)
	go func() { transfer <- fetchBlob(hostPort("127.0.0.1", fwdPortBulk), size) }()

	ids := churnForwards(t, s.APISocket)
	seen := make(map[int]bool)
	for _, id := range ids {
		if seen[id] {
			t.Errorf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	if err := <-transfer; err != nil {
		t.Errorf("transfer during API load: %v", err)
	}
	fw, err := API(t, s.APISocket, `{"execute":"list_hostfwd"}`).Forwards()
	if err != nil || len(fw) != 1 {
		t.Errorf("after the churn: %v, %v; want only the bulk forward", fw, err)
	}
}

// churnForwards runs concurrentAPIClients clients that each add a forward
// and remove it again, checking each response; it returns the ids issued.
func churnForwards(t *testing.T, sock string) []int {
	t.Helper()
	ids := make([]int, concurrentAPIClients)
	var wg sync.WaitGroup
	for i := range concurrentAPIClients {
		wg.Go(func() {
			id, err := addThenRemove(sock, fwdPortChurnLow+i)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	return ids
}

// addThenRemove adds a TCP forward on port and removes it again.
func addThenRemove(sock string, port int) (int, error) {
	add := fmt.Sprintf(`{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":%d,"guest_port":80}}`, port)
	b, err := testnet.APIRequest(sock, add)
	if err != nil {
		return 0, fmt.Errorf("add: %w", err)
	}
	var r struct {
		Return struct {
			ID int `json:"id"`
		} `json:"return"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Return.ID <= 0 {
		return 0, fmt.Errorf("add: reply %s", b)
	}
	rm := fmt.Sprintf(`{"execute":"remove_hostfwd","arguments":{"id":%d}}`, r.Return.ID)
	b, err = testnet.APIRequest(sock, rm)
	if err != nil {
		return r.Return.ID, fmt.Errorf("remove: %w", err)
	}
	if string(b) != `{"return":{}}` {
		return r.Return.ID, fmt.Errorf("remove: reply %s", b)
	}
	return r.Return.ID, nil
}

// fetchBlob downloads /blob?size=N from addr and checks its SHA-256.
func fetchBlob(addr string, size int64) error {
	c := http.Client{Timeout: 60 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s/blob?size=%d", addr, size))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), testnet.BlobSHA256(size); n != size || got != want {
		return fmt.Errorf("got %d bytes with sha256 %s, want %d bytes with %s", n, got, size, want)
	}
	return nil
}

// startGuestHTTP runs the "http" tool in the guest and waits until it
// listens.
func startGuestHTTP(t *testing.T, g *Guest, addr string) {
	t.Helper()
	cmd := g.Command(context.Background(), toolArgv("http", addr)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start guest http server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	_, port, _ := net.SplitHostPort(addr)
	waitFor(t, 10*time.Second, "guest http server", func() bool { return guestListening(g, port) })
}

// guestListening reports whether something in the guest listens on TCP port.
func guestListening(g *Guest, port string) bool {
	out, err := InGuestErr(g, 2*time.Second, "ss", "-Htln", "sport = :"+port)
	return err == nil && len(out) > 0
}
