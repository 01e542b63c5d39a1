package supervisor

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// TestEngineGOMAXPROCS: the engine starts with policy.EngineProcs Ps,
// unless the user's GOMAXPROCS (passed through) says otherwise.
func TestEngineGOMAXPROCS(t *testing.T) {
	gomaxprocs := func() []string {
		var vals []string
		for _, kv := range engineEnv(false) {
			if v, ok := strings.CutPrefix(kv, "GOMAXPROCS="); ok {
				vals = append(vals, v)
			}
		}
		return vals
	}
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	want := strconv.Itoa(policy.EngineProcs(runtime.NumCPU()))
	if got := gomaxprocs(); len(got) != 1 || got[0] != want {
		t.Errorf("engine GOMAXPROCS = %q, want [%s]", got, want)
	}
	t.Setenv("GOMAXPROCS", "7")
	if got := gomaxprocs(); len(got) != 1 || got[0] != "7" {
		t.Errorf("with the user's GOMAXPROCS=7: engine GOMAXPROCS = %q, want [7]", got)
	}
}
