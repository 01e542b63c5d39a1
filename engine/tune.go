package engine

import (
	"os"
	"runtime/debug"
)

// gcPercent is the engine process's GOGC. The engine's heap is mostly
// packet buffers that live for microseconds; at the default 100 the heap
// (and the peak RSS that users see) grows to twice the live data for no
// gain. Measured with netbench: 50 lowered the engine's peak RSS under the
// TCP tests by ~3 MiB (30.9 -> 27.4 MiB for all our processes) with
// throughput, round-trip latency and CPU per GB unchanged within noise; 25
// bought ~1.5 MiB more at visibly more GC CPU. A memory limit
// (GOMEMLIMIT 8-14 MiB) made the GC thrash under load.
const gcPercent = 50

// tuneRuntime applies the engine process's runtime settings, unless the
// user set GOGC, which then wins.
func tuneRuntime() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}
