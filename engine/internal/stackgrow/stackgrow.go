// Package stackgrow grows a goroutine's stack while it is still shallow.
//
// A goroutine starts with a 2 KiB stack and the runtime doubles it, by
// copying, whenever a call needs more. Each copy walks every frame on the
// stack and decodes its stack map, so a goroutine whose first calls are
// deep (gVisor's stack and endpoint code) pays several copies, the last
// ones with many frames, and the first decoding of each function's tables
// touches pclntab pages for the first time. Measured on the engine's
// start-up (perf probes on runtime.copystack, podman's flags): the main
// goroutine grew 2 -> 32 KiB in four copies, the link reader and each
// worker 2 -> 8 KiB in two, ~18 copies per start, ~0.3 ms of CPU by perf
// samples. Growing once to the size the goroutine reaches anyway, at its
// first line, is one copy of two or three frames (13 copies per start,
// the deep ones gone): engine CPU per start -0.21 ms (paired median, 200
// interleaved starts in podman's layout).
package stackgrow

// To4K makes sure the calling goroutine's stack is at least 4 KiB.
//
//go:noinline
func To4K() {
	var pad [2 << 10]byte
	keep(pad[:])
}

// To8K makes sure the calling goroutine's stack is at least 8 KiB.
//
//go:noinline
func To8K() {
	var pad [6 << 10]byte
	keep(pad[:])
}

// To32K makes sure the calling goroutine's stack is at least 32 KiB.
//
//go:noinline
func To32K() {
	var pad [24 << 10]byte
	keep(pad[:])
}

// keep uses b so that the compiler keeps the caller's frame as declared.
//
//go:noinline
func keep(b []byte) { b[len(b)-1] = 1 }
