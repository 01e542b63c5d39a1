package link_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// endpoint's reader, the stack's workers or a netns thread.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
