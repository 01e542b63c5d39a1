package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestWorkerPoolReusesAndStops: a parked worker takes the next function
// (no new goroutine), at most maxIdleWorkers stay parked, and all exit when
// the context ends.
func TestWorkerPoolReusesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	p := newWorkerPool(ctx, &wg)

	var ran atomic.Int32
	done := make(chan struct{})
	p.run(func() { ran.Add(1); close(done) })
	<-done
	eventually(t, time.Second, "worker parked", func() bool { return idle(p) == 1 })
	done2 := make(chan struct{})
	p.run(func() { ran.Add(1); close(done2) })
	<-done2
	if got := ran.Load(); got != 2 {
		t.Fatalf("ran %d functions, want 2", got)
	}
	eventually(t, time.Second, "worker parked again", func() bool { return idle(p) == 1 })
	time.Sleep(20 * time.Millisecond)
	if got := idle(p); got != 1 {
		t.Fatalf("%d workers parked after two sequential functions, want 1 (the first reused)", got)
	}

	// Many at once: all run, and no more than maxIdleWorkers stay parked.
	release := make(chan struct{})
	var started sync.WaitGroup
	const n = maxIdleWorkers + 8
	started.Add(n)
	for range n {
		p.run(func() { started.Done(); <-release })
	}
	started.Wait()
	close(release)
	eventually(t, time.Second, "workers parked", func() bool { return idle(p) == maxIdleWorkers })

	cancel()
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("workers did not exit after the context ended")
	}
	if got := idle(p); got != 0 {
		t.Errorf("%d workers still counted idle", got)
	}
}

func idle(p *workerPool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idle
}
