package link

import (
	"testing"
	"time"
)

// TestBusyPollPolicy walks the busy-poll state through sequences of windows:
// off when the window is 0, a backoff after busyPollMisses empty windows in
// a row (a caught event in between resets the count), and a run of windows
// that ends after busyPollMaxRun until the reader parks.
func TestBusyPollPolicy(t *testing.T) {
	const us = time.Microsecond
	type step struct {
		op     string // "allow", "caught", "missed", "parked"
		at     time.Duration
		wantOK bool // for "allow"
	}
	for _, tc := range []struct {
		name   string
		window time.Duration
		steps  []step
	}{
		{"off", 0, []step{{"allow", 1 * us, false}, {"parked", 2 * us, false}, {"allow", 3 * us, false}}},
		{"first window", 100 * us, []step{{"allow", 1 * us, true}}},
		{"caught keeps polling", 100 * us, []step{
			{"allow", 0, true}, {"caught", 50 * us, false},
			{"allow", 60 * us, true}, {"caught", 150 * us, false},
			{"allow", 160 * us, true},
		}},
		{"one miss is not a backoff", 100 * us, []step{
			{"allow", 0, true}, {"missed", 100 * us, false}, {"parked", 100 * us, false},
			{"allow", 200 * us, true},
		}},
		{"two misses back off", 100 * us, []step{
			{"allow", 0, true}, {"missed", 100 * us, false}, {"parked", 100 * us, false},
			{"allow", 200 * us, true}, {"missed", 300 * us, false}, {"parked", 300 * us, false},
			{"allow", 400 * us, false},
			{"allow", 300*us + busyPollBackoff - us, false},
			{"allow", 300*us + busyPollBackoff, true},
		}},
		{"a catch resets the misses", 100 * us, []step{
			{"allow", 0, true}, {"missed", 100 * us, false}, {"parked", 100 * us, false},
			{"allow", 200 * us, true}, {"caught", 250 * us, false},
			{"allow", 260 * us, true}, {"missed", 360 * us, false}, {"parked", 360 * us, false},
			{"allow", 400 * us, true},
		}},
		{"a run ends after busyPollMaxRun", 100 * us, []step{
			{"allow", 10 * us, true}, {"caught", 90 * us, false},
			{"allow", 10*us + busyPollMaxRun - us, true}, {"caught", 10*us + busyPollMaxRun, false},
			{"allow", 10*us + busyPollMaxRun, false},
			{"parked", 10*us + busyPollMaxRun, false},
			{"allow", 20*us + busyPollMaxRun, true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := busyPoll{window: tc.window}
			for i, s := range tc.steps {
				switch s.op {
				case "allow":
					if got := b.allow(s.at); got != s.wantOK {
						t.Fatalf("step %d: allow(%v) = %v, want %v (state %+v)", i, s.at, got, s.wantOK, b)
					}
				case "caught", "missed":
					b.done(s.op == "caught", s.at)
				case "parked":
					b.parked()
				default:
					t.Fatalf("step %d: bad op %q", i, s.op)
				}
			}
		})
	}
}
