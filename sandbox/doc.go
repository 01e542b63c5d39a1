// Package sandbox confines the engine process: --enable-sandbox and
// --enable-seccomp.
//
// --enable-sandbox is entered by a C constructor (sandbox.c) before the Go
// runtime starts, because unshare(CLONE_NEWNS) and capset(2) need a
// single-threaded process. It acts only when the environment holds
// _SLIRP4NETNS_MODE=engine and _SLIRP4NETNS_SANDBOX=1, which the supervisor
// sets when it starts the engine; importing the package changes nothing
// else. It gives the engine a mount namespace (and, unless it runs as root,
// a user namespace of its own mapping only its uid and gid, with nested user
// namespaces forbidden) whose read-only tmpfs root holds only the host's
// /etc and /run, read-only, plus the file /etc/resolv.conf points to when
// that lies elsewhere; no_new_privs; every capability but
// CAP_NET_BIND_SERVICE dropped from every set; and, where the kernel has
// Landlock, a domain that forbids executing or writing files and (Linux
// 6.12+) signalling processes or reaching abstract unix sockets outside the
// engine. The engine stays in the host's network namespace.
//
// --enable-seccomp is ApplySeccomp: an allow-list filter (seccomp_rules.go)
// installed from Go with TSYNC so that every thread gets it. On amd64 the
// BPF program libseccomp makes of the rules is generated ahead of time
// (seccomp_bpf.go); elsewhere libseccomp builds it at run time.
//
// The engine calls Confine(enableSandbox, enableSeccomp) once it holds
// everything it needs, before it reports ready.
package sandbox
