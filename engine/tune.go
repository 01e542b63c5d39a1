package engine

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// gcPercent is the engine process's GOGC. The engine's heap is mostly
// packet buffers (gVisor's chunk pools, relay buffers) that live for
// microseconds; at the default 100 the heap, and the peak RSS that users
// see, grows to twice the live data for no gain. Measured with netbench and
// iperf3 at MTU 65520 (docs/benchmarks.md): 100 -> 50 lowered the engine's
// peak RSS by ~3 MiB; 50 -> 35 by another 1.2-2 MiB of anonymous memory
// under bulk TCP, host->guest and UDP, with CPU per connection (sequential
// connect/echo/close, 3 pairs) and CPU per GB unchanged within noise: bulk
// transfers recycle pooled buffers and collect a few times a second at
// most. 25 bought nothing more over 35. A memory limit (GOMEMLIMIT 8-14 MiB)
// made the GC thrash under load.
const gcPercent = 35

// Idle trimming. After a burst the heap keeps what it grew to, and the Go
// runtime returns free pages only slowly and never collects while nothing
// allocates, so an engine that moved a few GB and went quiet would stay at
// its peak RSS indefinitely (sync.Pool contents are freed only by
// collections). Once the engine is quiet after a burst, two collections
// and a scavenge give that memory back to the kernel: real memory, not just
// a smaller figure, and a podman container's network is idle most of its
// life. The cost is a few milliseconds of CPU per burst and page faults
// when the next burst grows the heap again.
const (
	// trimInterval is how often the allocation counter is sampled.
	trimInterval = time.Second
	// trimQuietBytes: an interval that allocated less than this is quiet.
	trimQuietBytes = 256 << 10
	// trimMinBurst: a trim is worth it only after this much was allocated
	// since the previous one; below it there is little to give back.
	trimMinBurst = 8 << 20
)

// tuneRuntime applies the engine process's runtime settings, unless the
// user set GOGC or GOMAXPROCS, which then win. It runs before the stack is
// created: gVisor sizes its TCP processor pool from GOMAXPROCS.
func tuneRuntime() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(engineProcs(runtime.NumCPU()))
	}
}

// engineProcs is the engine's GOMAXPROCS on a machine with ncpu usable
// CPUs: half of them. Every byte the engine moves is also moved by two
// other parties on the same machine (the guest's kernel behind the TAP and
// the host's socket peer), so the engine alone should not claim every
// core. With a P per core, each hand-off on the data path (link reader ->
// gVisor's TCP processor -> relay) readies a goroutine and wakes another
// idle thread (a futex wake, an IPI on VMs) that mostly finds nothing to
// do; with fewer Ps the readied goroutine runs on the current thread.
// Measured on 2 CPUs (1 P vs 2, interleaved runs, docs/benchmarks.md):
// 1-byte round trip p50 69-100 vs 109-125 us, thread switches per round
// trip 1.8-2.6 vs 3.5-3.9, guest->host at MTU 65520 8.4-12.4 vs 4.2-9.7
// Gbit/s at 0.55-0.67 vs 0.74-1.0 CPU-s/GB; connection rate and
// host->guest unchanged.
func engineProcs(ncpu int) int {
	return max(1, ncpu/2)
}

// trimmer decides when to trim from samples of the cumulative number of
// bytes allocated; it has no clock, so that tests can drive it.
type trimmer struct {
	last      uint64 // counter at the previous sample
	sinceTrim uint64 // allocated since the last trim
}

// observe records a sample and reports whether to trim now: the interval
// just ended was quiet and a burst came before it.
func (t *trimmer) observe(total uint64) bool {
	d := total - t.last
	t.last = total
	t.sinceTrim += d
	if d >= trimQuietBytes || t.sinceTrim < trimMinBurst {
		return false
	}
	t.sinceTrim = 0
	return true
}

// trimWhenIdle samples the allocation counter every trimInterval until
// done is closed and returns memory to the kernel after each burst.
func trimWhenIdle(done <-chan struct{}) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	t := trimmer{last: read()}
	tick := time.NewTicker(trimInterval)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if t.observe(read()) {
			trimHeap()
			t.last = read() // what the collections allocated is no burst
		}
	}
}

// trimHeap frees what the heap holds beyond its live data and returns the
// free pages to the kernel. Objects in a sync.Pool survive one collection
// (they move to its victim cache), hence the collection before
// FreeOSMemory's own.
func trimHeap() {
	runtime.GC()
	debug.FreeOSMemory()
}
