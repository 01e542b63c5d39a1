//go:build linux && cgo

package sandbox

/*
#include <limits.h>
extern int slirp4netns_sandbox_active;
extern int slirp4netns_sandbox_landlock_abi;
extern int slirp4netns_sandbox_userns;
extern int slirp4netns_sandbox_cap_last;
extern char slirp4netns_sandbox_resolv[PATH_MAX];
*/
import "C"

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

// LandlockABI returns the Landlock ABI version of the domain the sandbox
// added, or 0 when it added none (sandbox off, or a kernel without
// Landlock).
func LandlockABI() int { return int(C.slirp4netns_sandbox_landlock_abi) }

// capLast is the highest capability number the kernel knows, read before
// /proc disappeared (0 when the sandbox is off).
func capLast() int { return int(C.slirp4netns_sandbox_cap_last) }
