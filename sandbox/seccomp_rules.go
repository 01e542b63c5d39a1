//go:build linux && cgo

package sandbox

import (
	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// This file is the whole seccomp policy: the engine's allow-list (with the
// argument conditions), the syscalls answered with ENOSYS, and the light
// deny-list for the supervisor and the helper. Names that do not exist on the
// running architecture (open, poll, arch_prctl... are amd64-only; arm64 has
// only the *at and p* forms) are skipped when the filter is built, so one
// list serves amd64 and arm64.

// allowGroups are the syscalls the engine may make with any arguments.
var allowGroups = []struct {
	why   string
	names []string
}{
	{"Go runtime and cgo/glibc threads: scheduling, thread creation (clone is conditional, below), exit", []string{
		"futex", "sched_yield", "sched_getaffinity", "getcpu", "membarrier", "rseq",
		"set_robust_list", "set_tid_address", "arch_prctl", "exit", "exit_group",
		"restart_syscall", "gettid", "getpid", "getppid",
		"uname", "sysinfo", "getrusage", "getrandom",
	}},
	{"memory: the Go heap, goroutine stacks, glibc malloc", []string{
		"mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "mincore",
	}},
	{"time: clocks, sleeps, the runtime's timers and the profiler's", []string{
		"clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
		"timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete",
		"setitimer", "getitimer", "timerfd_create", "timerfd_settime", "timerfd_gettime",
	}},
	{"signals: handlers, masks, alternate stacks (sending is conditional, below)", []string{
		"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
	}},
	{"credentials, read-only: Go's os/user and the sandbox's self-check", []string{
		"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
		"capget", "getrlimit",
	}},
	{"file I/O on descriptors we hold: /etc/resolv.conf, /etc/hosts, the TAP fd, stderr, ipc", []string{
		"read", "write", "readv", "writev", "pread64", "preadv", "close", "close_range",
		"lseek", "dup", "dup2", "dup3",
		"fstat", "newfstatat", "stat", "lstat", "statx", "fstatfs", "statfs",
		"getdents64", "getdents", "readlinkat", "readlink", "faccessat", "faccessat2",
		"access", "getcwd",
	}},
	{"pipes and zero-copy: Go's splice(2) path for TCP-to-TCP copies", []string{
		"pipe", "pipe2", "splice", "sendfile",
	}},
	{"polling: netpoll (epoll), gVisor's fdbased dispatcher (ppoll, eventfd)", []string{
		"epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
		"eventfd", "eventfd2", "poll", "ppoll", "pselect6",
	}},
	// No listen(2): the supervisor makes the forwards' listening sockets
	// (docs/architecture.md), so the engine cannot open a TCP port on the
	// host. bind stays: --outbound-addr and UDP flows bind their sockets.
	// accept4 also serves --target-type=bess: the engine accepts the UML
	// clients on the listening socket the supervisor hands it.
	{"sockets we hold or create: outbound TCP/UDP/ICMP, host port forwards, netlink, ipc", []string{
		"connect", "bind", "accept", "accept4", "getsockname", "getpeername",
		"setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg",
		"sendmmsg", "recvmmsg", "shutdown",
	}},
}

// enosysNames are answered with ENOSYS rather than EPERM: runtimes and libc
// probe them and fall back to an older call only on ENOSYS (glibc's
// pthread_create tries clone3 then clone; Go probes pidfd_open). openat2 is
// here because its flags live in a struct seccomp cannot inspect, which would
// bypass the read-only condition on openat.
var enosysNames = []string{
	"clone3", "openat2", "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
	"io_uring_setup", "io_uring_enter", "io_uring_register", "futex_waitv",
	"map_shadow_stack", "landlock_create_ruleset",
}

// cloneNamespaceFlags may never accompany clone(2): the engine creates
// threads, not namespaces.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// openWriteFlags may not be passed to open/openat: the engine only reads
// files (every mount of the sandbox is read-only too, but seccomp also holds
// without --enable-sandbox).
const openWriteFlags = unix.O_WRONLY | unix.O_RDWR | unix.O_CREAT | unix.O_TRUNC | unix.O_APPEND

// Generic ioctl numbers (amd64 and arm64 share them) that x/sys/unix does
// not export for every architecture.
const (
	ioctlFIONREAD = 0x541b
	ioctlFIONBIO  = 0x5421
	ioctlFIONCLEX = 0x5450
	ioctlFIOCLEX  = 0x5451
)

// allowedIoctls are the ioctl(2) requests the engine may make. Everything
// else is refused, TIOCSTI (typing into the terminal behind stderr) and
// FIOSETOWN/SIOCSPGRP (signals to other processes) in particular.
var allowedIoctls = []uint64{
	ioctlFIONREAD, ioctlFIONBIO, ioctlFIOCLEX, ioctlFIONCLEX, // socket/pipe state
	unix.TCGETS, unix.TIOCGWINSZ, unix.TIOCOUTQ, // isatty-style queries; TIOCOUTQ is SIOCOUTQ
	unix.SIOCGIFINDEX, unix.SIOCGIFMTU, unix.SIOCGIFHWADDR, unix.SIOCGIFFLAGS, unix.SIOCGIFNAME, // interface queries
	unix.TUNGETIFF, unix.TUNGETFEATURES, unix.TUNSETOFFLOAD, unix.TUNSETVNETHDRSZ, // the TAP fd's offloads
	unix.TUNGETVNETHDRSZ, unix.TUNSETQUEUE,
}

// allowedFcntls are the fcntl(2) commands the engine may use: descriptor
// flags, O_NONBLOCK, duplication and pipe sizes. F_SETOWN/F_SETSIG (which
// would let it signal other processes through SIGIO) and locks are refused.
var allowedFcntls = []uint64{
	unix.F_DUPFD, unix.F_DUPFD_CLOEXEC, unix.F_GETFD, unix.F_SETFD, unix.F_GETFL, unix.F_SETFL,
	unix.F_GETPIPE_SZ, unix.F_SETPIPE_SZ,
}

// allowedPrctls are the prctl(2) options the engine may use: thread names,
// the runtime's mapping names, PDEATHSIG, and reads of its own state.
var allowedPrctls = []uint64{
	unix.PR_SET_NAME, unix.PR_GET_NAME, unix.PR_SET_VMA, unix.PR_SET_PDEATHSIG,
	unix.PR_GET_PDEATHSIG, unix.PR_GET_NO_NEW_PRIVS, unix.PR_CAPBSET_READ, unix.PR_GET_DUMPABLE,
	unix.PR_GET_SECUREBITS, unix.PR_GET_KEEPCAPS,
}

// socketRule is one allowed socket(2) call: a domain, a type (SOCK_NONBLOCK
// and SOCK_CLOEXEC aside) and, when protocol >= 0, a protocol.
type socketRule struct {
	domain, typ uint64
	protocol    int64
}

// allowedSockets: TCP and UDP in both families (outbound flows, forwards),
// which includes unprivileged ICMP echo sockets (SOCK_DGRAM, IPPROTO_ICMP),
// and NETLINK_ROUTE for net.Interfaces and addresses. No AF_UNIX: in the
// sandbox /run holds the user's sockets (dbus, podman, docker), and the
// host's abstract sockets are reachable from the host network namespace.
// No raw or packet sockets.
var allowedSockets = []socketRule{
	{unix.AF_INET, unix.SOCK_STREAM, -1},
	{unix.AF_INET, unix.SOCK_DGRAM, -1},
	{unix.AF_INET6, unix.SOCK_STREAM, -1},
	{unix.AF_INET6, unix.SOCK_DGRAM, -1},
	{unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE},
	{unix.AF_NETLINK, unix.SOCK_DGRAM, unix.NETLINK_ROUTE},
}

// Everything not allowed here, execve, execveat, ptrace, mount, umount2,
// pivot_root, unshare, setns, bpf, keyctl, socketpair, listen, fork and
// vfork included, fails with EPERM.

// conditionalRules are the syscalls allowed with some arguments only:
//   - clone: only with CLONE_THREAD and no namespace flag (threads, never
//     processes: no fork, no vfork, no posix_spawn);
//   - open, openat: only without openWriteFlags;
//   - kill, tkill, tgkill: only to our own pid (the runtime's preemption
//     signals and crash path), never to another process;
//   - prlimit64: only reading our own limits;
//   - ioctl, fcntl, prctl, socket: the tables above.
func conditionalRules(pid int) []condRule {
	self := uint64(pid)
	rules := []condRule{
		{name: "clone", conds: []seccomp.ScmpCondition{
			cond(0, seccomp.CompareMaskedEqual, unix.CLONE_THREAD|cloneNamespaceFlags, unix.CLONE_THREAD)}},
		{name: "openat", conds: []seccomp.ScmpCondition{cond(2, seccomp.CompareMaskedEqual, openWriteFlags, 0)}},
		{name: "open", conds: []seccomp.ScmpCondition{cond(1, seccomp.CompareMaskedEqual, openWriteFlags, 0)}},
		{name: "kill", conds: []seccomp.ScmpCondition{eq32(0, self)}},
		{name: "tkill", conds: []seccomp.ScmpCondition{eq32(0, self)}},
		{name: "tgkill", conds: []seccomp.ScmpCondition{eq32(0, self)}},
		{name: "prlimit64", conds: []seccomp.ScmpCondition{eq32(0, 0), cond(2, seccomp.CompareEqual, 0)}},
		{name: "prlimit64", more: true, conds: []seccomp.ScmpCondition{eq32(0, self), cond(2, seccomp.CompareEqual, 0)}},
	}
	rules = appendArgList(rules, "ioctl", 1, allowedIoctls)
	rules = appendArgList(rules, "fcntl", 1, allowedFcntls)
	rules = appendArgList(rules, "prctl", 0, allowedPrctls)
	for i, s := range allowedSockets {
		conds := []seccomp.ScmpCondition{eq32(0, s.domain), cond(1, seccomp.CompareMaskedEqual, 0xf, s.typ)}
		if s.protocol >= 0 {
			conds = append(conds, eq32(2, uint64(s.protocol)))
		}
		rules = append(rules, condRule{name: "socket", conds: conds, more: i > 0})
	}
	return rules
}

// appendArgList adds one rule per allowed value of argument arg of name.
func appendArgList(rules []condRule, name string, arg uint, values []uint64) []condRule {
	for i, v := range values {
		rules = append(rules, condRule{name: name, conds: []seccomp.ScmpCondition{eq32(arg, v)}, more: i > 0})
	}
	return rules
}

// lightDenyNames are refused (EPERM) by ApplyLightSeccomp: the supervisor and
// the helper never need them. Filters survive execve, so the mount family is
// refused too: a process may apply this only after it has started every
// engine that still has to enter --enable-sandbox.
var lightDenyNames = []string{
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
	"mount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount", "fsopen",
	"fsconfig", "fsmount", "fspick", "mount_setattr",
	"kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
	"bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
	"open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "acct", "quotactl",
	"syslog", "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"lookup_dcookie", "uselib", "vhangup", "nfsservctl", "sysfs", "_sysctl",
}
