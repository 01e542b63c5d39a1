package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Environment variables read by the constructor in sandbox.c; the names are
// repeated there.
const (
	// ModeEnv and ModeEngine: the constructor acts only in the engine
	// (same values as supervisor.ModeEnv and supervisor.ModeEngine, which
	// this package may not import).
	ModeEnv    = "_SLIRP4NETNS_MODE"
	ModeEngine = "engine"
	// SandboxEnv set to "1" asks the constructor to enter the sandbox.
	SandboxEnv = "_SLIRP4NETNS_SANDBOX"
)

// Environment of the hidden self-test (for tests, not a user-facing flag).
const (
	// SelfTestEnv set to "1" asks the engine to run SelfTest once the
	// sandbox and the seccomp filter are in place, and exit.
	SelfTestEnv = "_SLIRP4NETNS_SANDBOX_SELFTEST"
	// SelfTestFilesEnv lists, separated by ':', files the test created
	// outside /etc and /run that the sandboxed engine must not open.
	SelfTestFilesEnv = "_SLIRP4NETNS_SANDBOX_SELFTEST_FILES"
	// SelfTestAbstractEnv names an abstract unix socket ("@name") the test
	// listens on, that the engine must not reach.
	SelfTestAbstractEnv = "_SLIRP4NETNS_SANDBOX_SELFTEST_ABSTRACT"
)

// SelfTestRequested reports whether SelfTestEnv asks for the self-test.
func SelfTestRequested() bool { return os.Getenv(SelfTestEnv) == "1" }

// Result words of SelfTest's lines.
const (
	selfTestDenied  = "DENIED"
	selfTestAllowed = "ALLOWED"
	selfTestInfo    = "INFO"
)

// ParseSelfTest reads SelfTest's output and returns the actions that were
// denied and allowed, and the INFO lines as key → value.
func ParseSelfTest(r io.Reader) (denied, allowed []string, info map[string]string, err error) {
	info = map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		word, rest, _ := strings.Cut(sc.Text(), " ")
		switch word {
		case selfTestDenied:
			name, _, _ := strings.Cut(rest, ": ")
			denied = append(denied, name)
		case selfTestAllowed:
			allowed = append(allowed, rest)
		case selfTestInfo:
			k, v, _ := strings.Cut(rest, " ")
			info[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("read self-test output: %w", err)
	}
	if len(denied)+len(allowed) == 0 {
		return nil, nil, nil, errors.New("no self-test output")
	}
	return denied, allowed, info, nil
}
