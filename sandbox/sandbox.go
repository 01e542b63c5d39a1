//go:build linux && cgo

// Package sandbox confines the engine process: --enable-sandbox (a mount
// namespace whose read-only tmpfs root holds only the host's /etc and /run,
// no_new_privs, every capability but CAP_NET_BIND_SERVICE dropped) and
// --enable-seccomp (an allow-list seccomp filter).
//
// The sandbox itself is entered by a C constructor (sandbox.c) before the Go
// runtime starts, because unshare(CLONE_NEWNS) and capset(2) need a
// single-threaded process. It acts only when the environment holds
// _SLIRP4NETNS_MODE=engine and _SLIRP4NETNS_SANDBOX=1, which the supervisor
// sets when it starts the engine; importing the package changes nothing
// else. The seccomp filter is installed later from Go with TSYNC so that
// every thread gets it.
package sandbox

/*
#include <limits.h>
extern int slirp4netns_sandbox_active;
extern int slirp4netns_sandbox_userns;
extern int slirp4netns_sandbox_cap_last;
extern char slirp4netns_sandbox_root_dir[64];
extern char slirp4netns_sandbox_resolv[PATH_MAX];
*/
import "C"

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

// Active reports whether the constructor entered the sandbox. When the
// environment asked for the sandbox and it could not be entered, the process
// has already exited with status 1, so a false result with SandboxEnv=1 means
// the constructor was not linked (a build without cgo).
func Active() bool { return C.slirp4netns_sandbox_active == 1 }

// OwnUserNamespace reports whether the sandbox created a user namespace of
// its own (the engine was not started as root, or root lacked
// CAP_SYS_ADMIN).
func OwnUserNamespace() bool { return C.slirp4netns_sandbox_userns == 1 }

// ResolvTarget returns the file /etc/resolv.conf resolved to when it lies
// outside /etc and /run and was therefore bound at the same path inside the
// sandbox, or "" when no such bind was needed (or the sandbox is off).
func ResolvTarget() string { return C.GoString(&C.slirp4netns_sandbox_resolv[0]) }

// capLast is the highest capability number the kernel knows, read before
// /proc disappeared (0 when the sandbox is off).
func capLast() int { return int(C.slirp4netns_sandbox_cap_last) }
