package policy

// EngineProcs is the engine process's GOMAXPROCS on a machine with ncpu
// usable CPUs: half of them. The supervisor puts it in the engine's
// environment (unless the user set GOMAXPROCS, which then wins) so that
// the engine's runtime starts with it; the engine applies it itself when
// started otherwise.
//
// Every byte the engine moves is also moved by two other parties on the
// same machine (the guest's kernel behind the TAP and the host's socket
// peer), so the engine alone should not claim every core. With a P per
// core, each hand-off on the data path (link reader -> gVisor's TCP
// processor -> relay) readies a goroutine and wakes another idle thread (a
// futex wake, an IPI on VMs) that mostly finds nothing to do; with fewer Ps
// the readied goroutine runs on the current thread. Measured on 2 CPUs (1 P
// vs 2, interleaved runs, docs/benchmarks.md): 1-byte round trip p50 69-100
// vs 109-125 us, thread switches per round trip 1.8-2.6 vs 3.5-3.9,
// guest->host at MTU 65520 8.4-12.4 vs 4.2-9.7 Gbit/s at 0.55-0.67 vs
// 0.74-1.0 CPU-s/GB; connection rate and host->guest unchanged.
func EngineProcs(ncpu int) int {
	return max(1, ncpu/2)
}
