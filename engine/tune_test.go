package engine

import (
	"runtime"
	"testing"
	"time"
)

func TestTrimmerTrimsOnceAfterBurst(t *testing.T) {
	const mib = 1 << 20
	tr := trimmer{}
	steps := []struct {
		name  string
		alloc uint64 // allocated during the interval
		want  bool
	}{
		{"idle start", 0, false},
		{"small activity is no burst", 100 << 10, false},
		{"burst, still busy", 40 * mib, false},
		{"still busy", 20 * mib, false},
		{"quiet after the burst", 10 << 10, true},
		{"quiet again: nothing new to give back", 0, false},
		{"activity below a burst", 200 << 10, false},
		{"busy again", 9 * mib, false},
		{"quiet after the second burst", 0, true},
	}
	var total uint64
	for _, s := range steps {
		total += s.alloc
		if got := tr.observe(total); got != s.want {
			t.Fatalf("%s: observe = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestTrimmerTrickleAddsUpToABurst(t *testing.T) {
	tr := trimmer{}
	var total uint64
	trims := 0
	// Quiet intervals only, each below trimQuietBytes: a trim once enough
	// has accumulated, then the count starts again.
	const samples = 1000
	for i := 0; i < samples; i++ {
		total += trimQuietBytes - 1
		if tr.observe(total) {
			trims++
		}
	}
	// The trim resets the count, so each one takes a whole number of
	// samples.
	perTrim := (trimMinBurst + trimQuietBytes - 2) / (trimQuietBytes - 1)
	want := samples / perTrim
	if want == 0 {
		t.Fatal("test needs more samples to reach a burst")
	}
	if trims != want {
		t.Fatalf("%d trims, want %d", trims, want)
	}
}

func TestTrimHeapReturnsFreePages(t *testing.T) {
	// Garbage that the heap grew for: after the trim, free heap pages are
	// back with the kernel rather than held by the runtime.
	keep := make([][]byte, 0, 2048)
	for i := 0; i < 2048; i++ {
		keep = append(keep, make([]byte, 8<<10))
	}
	runtime.KeepAlive(keep)
	keep = nil
	trimHeap()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if held := ms.HeapIdle - ms.HeapReleased; held > 4<<20 {
		t.Fatalf("%d KiB of free heap still held after the trim", held>>10)
	}
}

func TestAfterFirstGC(t *testing.T) {
	ran := make(chan struct{})
	afterFirstGC(func() { close(ran) })
	runtime.GC()
	// The finalizer goroutine runs it after the collection; bounded wait.
	for range 1000 {
		select {
		case <-ran:
			return
		default:
			runtime.Gosched()
			time.Sleep(time.Millisecond)
		}
	}
	t.Fatal("did not run after a collection")
}
