package supervisor

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTerminationSignals: SIGINT and SIGHUP end us only when they were not
// ignored at start (a shell's background job, nohup); SIGTERM and SIGQUIT
// always do.
func TestTerminationSignals(t *testing.T) {
	for _, ignored := range []os.Signal{nil, unix.SIGINT, unix.SIGHUP, unix.SIGTERM, unix.SIGQUIT} {
		got := terminationSignals(func(sig os.Signal) bool { return sig == ignored })
		for _, sig := range []os.Signal{unix.SIGTERM, unix.SIGQUIT, unix.SIGINT, unix.SIGHUP} {
			want := sig != ignored || sig == unix.SIGTERM || sig == unix.SIGQUIT
			if slices.Contains(got, sig) != want {
				t.Errorf("with %v ignored: %v in %v is %v, want %v", ignored, sig, got, !want, want)
			}
		}
	}
}
