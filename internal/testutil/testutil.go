// Package testutil holds the small helpers that the tests of several
// packages share: waiting for a server goroutine, the default address
// plan, a buffer for a child's output, a copy of the test binary that
// another user can run, and running code or commands in namespaces of
// their own. It is imported by tests only. (TAPs in a fresh network
// namespace, with a gVisor stack on them, are in engine/link/linktest.)
package testutil

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// StopTimeout bounds how long a server may take to return once told to
// stop.
const StopTimeout = 5 * time.Second

// WaitDone waits up to StopTimeout for a server goroutine's result on done
// and reports a non-nil result, or no result, as an error of tb. It uses
// Errorf, not Fatalf, so that it may run in a cleanup.
func WaitDone(tb testing.TB, done <-chan error, name string) {
	tb.Helper()
	select {
	case err := <-done:
		if err != nil {
			tb.Errorf("%s: %v", name, err)
		}
	case <-time.After(StopTimeout):
		tb.Errorf("%s did not return after it was stopped", name)
	}
}

// ServeUntilCleanup runs serve in a goroutine with a context that tb's
// cleanup cancels; the cleanup then expects serve to return nil (see
// WaitDone). Register it after the cleanups of what serve uses, so that it
// stops first.
func ServeUntilCleanup(tb testing.TB, name string, serve func(ctx context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		WaitDone(tb, done, name)
	})
}

// DefaultPlan returns the address plan of the default network,
// 10.0.2.0/24.
func DefaultPlan(tb testing.TB) policy.Plan {
	tb.Helper()
	p, err := policy.PlanFor("10.0.2.0/24")
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers:
// the stdout or stderr of a child that the test reads while it runs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// SharedTempDir returns a new directory of mode 0755 outside t.TempDir
// (whose parent is 0700), so that another user (uid 65534 in the
// unprivileged runs) can reach what the test puts there. It is removed at
// tb's cleanup.
func SharedTempDir(tb testing.TB, pattern string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// CopyTestBinary copies the running test binary into dir as name, mode
// 0755, and returns the copy's path: another user can run it from a
// SharedTempDir.
func CopyTestBinary(tb testing.TB, dir, name string) string {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		tb.Fatalf("read the test binary: %v", err)
	}
	bin := filepath.Join(dir, name)
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		tb.Fatalf("copy the test binary: %v", err)
	}
	return bin
}
