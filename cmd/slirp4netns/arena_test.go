//go:build cgo

package main

import (
	"runtime"
	"sync"
	"testing"
)

// TestOneMallocArena: however many threads the runtime starts (each one
// mallocs in glibc as it starts), glibc keeps one arena (arena.c). Without
// the constructor every thread that mallocs first gets an arena of its own.
func TestOneMallocArena(t *testing.T) {
	const threads = 6
	var started, release sync.WaitGroup
	started.Add(threads)
	release.Add(1)
	for range threads {
		go func() {
			// A locked goroutine keeps its thread, so the runtime must
			// start others for the rest.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			started.Done()
			release.Wait()
		}()
	}
	started.Wait()
	n := mallocArenas()
	release.Done()
	if n != 1 {
		t.Fatalf("glibc malloc has %d arenas with %d locked threads, want 1", n, threads)
	}
}
