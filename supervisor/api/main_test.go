package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// nsEnv names, in a re-executed test binary, the check to run inside the
// fresh user+network namespace that runInNamespace made for it.
const nsEnv = "SLIRP4NETNS_API_TEST_IN_NETNS"

// nsDirEnv is a scratch directory for the checks run in a namespace.
const nsDirEnv = "SLIRP4NETNS_API_TEST_DIR"

func TestMain(m *testing.M) {
	if name := os.Getenv(nsEnv); name != "" {
		os.Exit(runNamespaceCheck(name))
	}
	goleak.VerifyTestMain(m)
}

// runNamespaceCheck runs one check in the namespace and returns the exit
// status; details go to stderr, which the outer test shows.
func runNamespaceCheck(name string) int {
	var err error
	switch name {
	case "golden":
		err = goldenInNamespace(os.Getenv(nsDirEnv))
	case "bind":
		err = bindInNamespace(os.Getenv(nsDirEnv))
	default:
		err = fmt.Errorf("unknown namespace check %q", name)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL %s: %v\n", name, err)
		return 1
	}
	return 0
}

// runInNamespace re-executes the test binary in a new user, network, mount
// and PID namespace (loopback up, /etc/resolv.conf naming 127.0.0.1 so that
// nothing started there can query the host's resolver) to run check name.
// Every socket bound there, and every process started there, is private to
// it and dies with it.
func runInNamespace(t *testing.T, name string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	script := `ip link set lo up && mount --bind "$1/resolv.conf" /etc/resolv.conf && exec "$0"`
	cmd := testutil.NamespacedCommand(ctx, "sh", "-c", script, exe, dir)
	cmd.Env = append(os.Environ(), nsEnv+"="+name, nsDirEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("namespace check %s: %v\n%s", name, err, out)
	}
	return string(out)
}

// fakeBackend records the forwards it is handed.
type fakeBackend struct {
	mu        sync.Mutex
	added     map[int]proto.Forward
	removed   []int
	addErr    error
	removeErr error
}

func newFakeBackend() *fakeBackend { return &fakeBackend{added: make(map[int]proto.Forward)} }

func (b *fakeBackend) AddForward(ctx context.Context, fwd proto.Forward, sock *os.File) error {
	if sock == nil {
		return errors.New("fake backend: nil socket")
	}
	if _, err := sock.Stat(); err != nil {
		return fmt.Errorf("fake backend: socket not open: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.addErr != nil {
		return b.addErr
	}
	if _, dup := b.added[fwd.ID]; dup {
		return fmt.Errorf("fake backend: id %d added twice", fwd.ID)
	}
	b.added[fwd.ID] = fwd
	return nil
}

func (b *fakeBackend) RemoveForward(ctx context.Context, id int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.removeErr != nil {
		return b.removeErr
	}
	if _, ok := b.added[id]; !ok {
		return fmt.Errorf("fake backend: remove of unknown id %d", id)
	}
	delete(b.added, id)
	b.removed = append(b.removed, id)
	return nil
}

func (b *fakeBackend) setErrors(add, remove error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addErr, b.removeErr = add, remove
}

// busyPort is a host port the fake binder reports as in use.
const busyPort = 1

// fakeBind stands in for binding: it returns /dev/null (an open file the
// backend can check) and fails for busyPort, so unit tests bind nothing.
func fakeBind(_ context.Context, fwd policy.HostFwd) (*os.File, error) {
	if fwd.HostPort == busyPort {
		return nil, errors.New("fake bind: address already in use")
	}
	return os.Open(os.DevNull)
}

func testPlan() policy.Plan {
	return policy.NewPlan(netip.MustParsePrefix(policy.DefaultCIDR))
}

// startServer serves the API at a fresh socket path with a fake binder;
// the server is closed when the test ends.
func startServer(t *testing.T, be Backend, opts Options) (*Server, string) {
	t.Helper()
	return startServerWith(t, be, opts, fakeBind)
}

func startServerWith(t *testing.T, be Backend, opts Options, bind bindFunc) (*Server, string) {
	t.Helper()
	if !opts.Plan.Network.IsValid() {
		opts.Plan = testPlan()
	}
	path := filepath.Join(t.TempDir(), "api.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(be, opts)
	s.bind = bind
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		testutil.WaitDone(t, done, "Serve")
	})
	return s, path
}

// request sends req the way the man page asks (write, then SHUT_WR) and
// reads the whole reply.
func request(path, req string) (string, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	if err := c.(*net.UnixConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err // on error, b still holds what was read
}

func mustRequest(t *testing.T, path, req string) string {
	t.Helper()
	resp, err := request(path, req)
	if err != nil {
		t.Fatalf("request %s: %v", req, err)
	}
	return resp
}
