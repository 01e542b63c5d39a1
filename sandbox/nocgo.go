//go:build !(linux && cgo)

package sandbox

import (
	"errors"
	"io"
)

// errNoCgo: the sandbox constructor and libseccomp need cgo on Linux.
var errNoCgo = errors.New("sandbox: not supported by this build (needs Linux and cgo)")

// Active reports whether the constructor entered the sandbox: never in this
// build, which has no constructor.
func Active() bool { return false }

// OwnUserNamespace reports whether the sandbox created a user namespace of
// its own: never in this build.
func OwnUserNamespace() bool { return false }

// ResolvTarget returns the resolv.conf target bound into the sandbox: none
// in this build.
func ResolvTarget() string { return "" }

// LandlockABI returns 0: no Landlock domain in this build.
func LandlockABI() int { return 0 }

// Verify fails: this build has no sandbox.
func Verify() error { return errNoCgo }

// CapEff is not available in this build.
func CapEff() (uint64, error) { return 0, errNoCgo }

// ApplySeccomp fails: this build has no libseccomp.
func ApplySeccomp() error { return errNoCgo }

// Confine fails when asked for anything: this build has no sandbox.
func Confine(enableSandbox, enableSeccomp bool) error {
	if enableSandbox || enableSeccomp {
		return errNoCgo
	}
	return nil
}

// ApplyLightSeccomp fails: this build has no libseccomp.
func ApplyLightSeccomp() error { return errNoCgo }

// LibseccompVersion returns "" as this build has no libseccomp.
func LibseccompVersion() string { return "" }

// SelfTest writes nothing and fails: this build has no sandbox.
func SelfTest(w io.Writer) error { return errNoCgo }

// ResolvFirstLine is not available in this build.
func ResolvFirstLine() string { return "" }
