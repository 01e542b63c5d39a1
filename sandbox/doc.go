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
