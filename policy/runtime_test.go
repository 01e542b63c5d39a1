package policy

import "testing"

func TestEngineProcs(t *testing.T) {
	for _, tc := range []struct{ ncpu, want int }{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 2}, {16, 8}} {
		if got := EngineProcs(tc.ncpu); got != tc.want {
			t.Errorf("EngineProcs(%d) = %d, want %d", tc.ncpu, got, tc.want)
		}
	}
}
