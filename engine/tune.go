package engine

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/slirp4netns-go/slirp4netns/policy"
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

// startGCPercent is the engine's GOGC until its first collection. The
// runtime's first heap goal is 4 MiB scaled by GOGC (its heap minimum:
// 1.4 MiB at 35), and what the engine's start-up leaves on the heap
// (~1.4 MiB counting the spans the allocator holds) crossed the goal at
// gcPercent: every engine collected once while starting, ~0.9 ms of its
// start-up CPU and +0.5 MiB of RSS, competing with the container runtime
// podman starts at the same time. At 60 the first goal is 2.4 MiB, so an
// idle engine does not collect at all, and a busy one collects first at
// 2.4 MiB and then at gcPercent of what is live. Measured (interleaved,
// docs/benchmarks.md): a first goal of 4 MiB (GOGC 100) added ~1 MiB to
// the peak RSS under sequential connections and UDP, 2-2.8 MiB (50-70)
// 0.1-0.3 MiB. If the start-up grows past it, the engine just collects
// once while starting, as before.
const startGCPercent = 60

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
//
// Until the first collection GOGC is startGCPercent, gcPercent after it.
func tuneRuntime() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(startGCPercent)
		afterFirstGC(func() { debug.SetGCPercent(gcPercent) })
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		// Normally the supervisor has set it in our environment already
		// (policy.EngineProcs): a runtime that starts with more Ps and
		// drops them here pays a stop-the-world and the threads it started
		// for them, ~0.4 ms of CPU per start. This covers engines started
		// otherwise.
		runtime.GOMAXPROCS(policy.EngineProcs(runtime.NumCPU()))
	}
}

// afterFirstGC runs f (on the runtime's finalizer goroutine) once the
// first collection from now has finished: the collection finds the
// sentinel unreachable and queues its finalizer. The sentinel holds a
// pointer so that it is not batched into a tiny-allocator block, whose
// finalizers may run late or never.
func afterFirstGC(f func()) {
	type sentinel struct{ _ *byte }
	runtime.SetFinalizer(&sentinel{}, func(*sentinel) { f() })
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
	// No sample now: the first metrics.Read builds the runtime's metrics
	// tables (~20 us), which an engine that lives less than a second (a
	// `podman run` of a short command) need never pay. Counting from zero
	// only adds the start-up's allocations to the first interval, which
	// is then no quiet one.
	var t trimmer
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
