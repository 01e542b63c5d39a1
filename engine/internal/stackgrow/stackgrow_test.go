package stackgrow

import (
	"testing"
	"unsafe"
)

// need2K, need5K and need20K have frames that fit in the stacks To4K,
// To8K and To32K make, on top of a shallow caller.
//
//go:noinline
func need2K() { var pad [7 << 8]byte; keep(pad[:]) }

//go:noinline
func need5K() { var pad [5 << 10]byte; keep(pad[:]) }

//go:noinline
func need20K() { var pad [20 << 10]byte; keep(pad[:]) }

// moves reports, from a fresh goroutine (2 KiB stack), whether grow moved
// the stack (a copy moves every frame, so a local's address changes) and
// whether need moved it again afterwards.
func moves(grow, need func()) (grew, movedAfter bool) {
	type result struct{ grew, movedAfter bool }
	done := make(chan result)
	go func() {
		var x byte
		at := func() uintptr { return uintptr(unsafe.Pointer(&x)) }
		before := at()
		grow()
		grown := at()
		need()
		done <- result{before != grown, grown != at()}
	}()
	r := <-done
	return r.grew, r.movedAfter
}

// TestGrowOnce: each To* grows a fresh goroutine's stack, after which a
// frame of the size it promises needs no further copy; without it, the
// same frame does copy the stack (the check can tell).
func TestGrowOnce(t *testing.T) {
	for _, c := range []struct {
		name       string
		grow, need func()
	}{
		{"To4K", To4K, need2K},
		{"To8K", To8K, need5K},
		{"To32K", To32K, need20K},
	} {
		if grew, again := moves(c.grow, c.need); !grew || again {
			t.Errorf("%s: stack moved by it %v, moved again by the frame it makes room for %v", c.name, grew, again)
		}
		if _, moved := moves(func() {}, c.need); !moved {
			t.Errorf("%s: the frame it makes room for did not move a fresh stack: the check cannot tell", c.name)
		}
	}
}
