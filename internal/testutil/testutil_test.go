package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
)

// recorder is a testing.TB that records Errorf calls instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestWaitDone(t *testing.T) {
	for _, tc := range []struct {
		result  error
		wantErr string
	}{
		{nil, ""},
		{errors.New("boom"), "Serve: boom"},
	} {
		done := make(chan error, 1)
		done <- tc.result
		r := &recorder{TB: t}
		WaitDone(r, done, "Serve")
		if got := strings.Join(r.errs, "\n"); got != tc.wantErr {
			t.Errorf("WaitDone(%v) reported %q, want %q", tc.result, got, tc.wantErr)
		}
	}
}

func TestServeUntilCleanup(t *testing.T) {
	stopped := make(chan error, 1)
	t.Run("serve", func(t *testing.T) {
		ServeUntilCleanup(t, "serve", func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- ctx.Err()
			return nil
		})
	})
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("serve saw %v, want context.Canceled", err)
		}
	default:
		t.Fatal("serve was still running after the subtest's cleanup")
	}
}

func TestDefaultPlan(t *testing.T) {
	if got := DefaultPlan(t).Network.String(); got != "10.0.2.0/24" {
		t.Fatalf("network %s, want 10.0.2.0/24", got)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			fmt.Fprint(&b, "x")
		}
	}()
	for range 100 {
		_ = b.String()
	}
	<-done
	if got := b.String(); got != strings.Repeat("x", 100) {
		t.Fatalf("got %q", got)
	}
}

// TestCopyTestBinary runs the copy, which must list this very test.
func TestCopyTestBinary(t *testing.T) {
	dir := SharedTempDir(t, "testutil")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("shared dir: %v, %v", fi, err)
	}
	bin := CopyTestBinary(t, dir, "copy.test")
	out, err := exec.Command(bin, "-test.list=^TestCopyTestBinary$").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "TestCopyTestBinary" {
		t.Fatalf("copy ran: %v\n%s", err, out)
	}
}

func TestInNetns(t *testing.T) {
	ns, err := linktest.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	want, err := os.Readlink(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	var got string
	err = InNetns(ns.Path(), func() error {
		var err error
		got, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	})
	if err != nil || got != want {
		t.Fatalf("InNetns ran in %q (%v), want %q", got, err, want)
	}
	if here, _ := os.Readlink("/proc/thread-self/ns/net"); here == want {
		t.Fatal("the calling thread was moved into the namespace")
	}
	if err := InNetns("/nonexistent", func() error { return nil }); err == nil {
		t.Fatal("InNetns with a bad path succeeded")
	}
}

// TestNamespacedCommand: the command runs as root, as PID 1, in a network
// namespace that is not ours.
func TestNamespacedCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := NamespacedCommand(ctx, "sh", "-c", `echo "$(id -u) $$ $(readlink /proc/self/ns/net)"`).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ours, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	uid, rest, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	pid, netns, _ := strings.Cut(rest, " ")
	if uid != "0" || pid != "1" || netns == ours || !strings.HasPrefix(netns, "net:") {
		t.Fatalf("uid %q, pid %q, netns %q (ours %q); want root, PID 1, another netns", uid, pid, netns, ours)
	}
}
