package helper

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// printNetnsEnv makes a re-executed test binary print the network and user
// namespaces it ended up in (after the constructor ran) instead of acting
// as the helper; it tests nsenter.c on its own.
const printNetnsEnv = "HELPER_TEST_PRINT_NS"

// TestMain lets the test binary serve as the helper: OpenTap re-executes
// /proc/self/exe, which here is this binary.
func TestMain(m *testing.M) {
	if os.Getenv(modeEnv) == modeHelper {
		if os.Getenv(noHelperEnv) == "1" {
			fmt.Fprintln(os.Stderr, "helper process refused")
			os.Exit(3)
		}
		if os.Getenv(printNetnsEnv) == "1" {
			os.Exit(printNamespaces())
		}
		os.Exit(Main())
	}
	// After the helper check: the helper inherits this variable.
	if probe := os.Getenv(discardProbeEnv); probe != "" {
		os.Exit(discardProbe(probe))
	}
	if mtu := os.Getenv(earlyProbeEnv); mtu != "" {
		os.Exit(earlyTapProbe(mtu))
	}
	if pid := os.Getenv(probePIDEnv); pid != "" {
		os.Exit(probe(pid))
	}
	goleak.VerifyTestMain(m)
}

func printNamespaces() int {
	for _, ns := range []string{"net", "user"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println(l)
	}
	return 0
}
