//go:build linux && cgo

/*
 * --enable-sandbox for the engine process.
 *
 * unshare(CLONE_NEWNS) fails in a multi-threaded process (it implies
 * CLONE_FS) and capset(2) only changes the calling thread, while a Go
 * process has several threads from the moment its runtime starts. So the
 * sandbox is entered here, in an ELF constructor that runs before the Go
 * runtime, while the process is still single-threaded (the technique of
 * runc's nsexec). Every thread the runtime creates later inherits the new
 * root, the namespaces and the reduced capabilities.
 *
 * The constructor does nothing unless _SLIRP4NETNS_MODE=engine and
 * _SLIRP4NETNS_SANDBOX=1, so linking this file is harmless in every other
 * mode. The names below must match the Go constants in sandbox.go.
 *
 * Steps (any failure prints "slirp4netns: sandbox: <step>: <error>" and
 * exits 1, because running unsandboxed when the user asked for a sandbox is
 * worse than not running):
 *   1. read what is needed from /proc and resolve /etc/resolv.conf while
 *      the host's filesystem is still visible;
 *   2. a mount namespace of our own (and, when not root, a user namespace of
 *      our own mapping only our uid/gid, so the engine never depends on the
 *      target's user namespace and stays in the host network namespace);
 *   3. a read-only tmpfs root holding only /etc and /run of the host
 *      (read-only) plus the resolv.conf target when it lives elsewhere;
 *   4. no_new_privs, every capability but CAP_NET_BIND_SERVICE dropped from
 *      the bounding, ambient, inheritable, permitted and effective sets;
 *   5. when the kernel has it, a Landlock domain (see restrict_landlock).
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define S4_MODE_ENV "_SLIRP4NETNS_MODE"
#define S4_MODE_ENGINE "engine"
#define S4_SANDBOX_ENV "_SLIRP4NETNS_SANDBOX"

/*
 * <linux/mount.h> clashes with glibc 2.36's <sys/mount.h>, so the few
 * mount_setattr(2) definitions needed are spelled out here. The syscall
 * number is the same on every architecture (it postdates the unified table).
 */
#define S4_SYS_MOUNT_SETATTR 442
#define S4_MOUNT_ATTR_RDONLY 0x00000001ULL
#define S4_AT_RECURSIVE 0x8000
struct s4_mount_attr {
	uint64_t attr_set;
	uint64_t attr_clr;
	uint64_t propagation;
	uint64_t userns_fd;
};

/*
 * Landlock (Linux 5.13+), also spelled out: the headers of older distributions
 * lack the newer fields. Syscall numbers are the same on every architecture.
 */
#define S4_SYS_LANDLOCK_CREATE_RULESET 444
#define S4_SYS_LANDLOCK_RESTRICT_SELF 446
#define S4_LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
struct s4_landlock_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};
/* Filesystem rights the engine never needs (it only reads): execute, write,
 * create, remove, link/rename across directories (ABI 2), truncate (ABI 3). */
#define S4_LL_FS_V1 ((1ULL << 0) | (1ULL << 1) | (0x3fULL << 4) | (1ULL << 10) | (1ULL << 11) | (1ULL << 12))
#define S4_LL_FS_REFER (1ULL << 13)
#define S4_LL_FS_TRUNCATE (1ULL << 14)
/* ABI 6: no abstract unix sockets nor signals outside the domain. */
#define S4_LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define S4_LL_SCOPE_SIGNAL (1ULL << 1)

/* Read from Go (sandbox.go). */
int slirp4netns_sandbox_landlock_abi;
int slirp4netns_sandbox_active;
int slirp4netns_sandbox_userns;
int slirp4netns_sandbox_cap_last;
char slirp4netns_sandbox_resolv[PATH_MAX];

/* Where the new root's tmpfs may be mounted: existing directories that are
 * neither /etc nor /run; the first usable one wins. */
static const char *const root_candidates[] = {
	"/tmp", "/mnt", "/var/tmp", "/opt", "/srv", "/media", "/home", "/var", "/usr",
};

static void fail(const char *step)
{
	fprintf(stderr, "slirp4netns: sandbox: %s: %s\n", step, strerror(errno));
	_exit(1);
}

static void failmsg(const char *step, const char *msg)
{
	fprintf(stderr, "slirp4netns: sandbox: %s: %s\n", step, msg);
	_exit(1);
}

static int has_prefix_dir(const char *path, const char *dir)
{
	size_t n = strlen(dir);
	return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* read_cap_last returns /proc/sys/kernel/cap_last_cap, or 63 when it cannot
 * be read (PR_CAPBSET_DROP then fails with EINVAL past the last one, which
 * drop_caps tolerates). */
static int read_cap_last(void)
{
	char buf[16] = {0};
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	ssize_t n;
	long v;

	if (fd < 0)
		return 63;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 63;
	v = strtol(buf, NULL, 10);
	if (v <= 0 || v > 63)
		return 63;
	return (int)v;
}

/*
 * resolve_resolv records in slirp4netns_sandbox_resolv the file that
 * /etc/resolv.conf resolves to when it lies outside /etc and /run, so that
 * it can be bound at the same path in the new root (slirp4netns 1.2.1+
 * behaviour; older versions refused to start). A missing resolv.conf is not
 * an error here: DNS forwarding reports it later, as without a sandbox.
 */
static void resolve_resolv(void)
{
	char buf[PATH_MAX];

	slirp4netns_sandbox_resolv[0] = '\0';
	if (realpath("/etc/resolv.conf", buf) == NULL)
		return;
	if (has_prefix_dir(buf, "/etc") || has_prefix_dir(buf, "/run"))
		return;
	if (strcmp(buf, "/") == 0)
		failmsg("resolve /etc/resolv.conf", "resolves to /");
	memcpy(slirp4netns_sandbox_resolv, buf, sizeof(buf));
}

static void write_file(const char *path, const char *data, const char *step)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	size_t n = strlen(data);

	if (fd < 0)
		fail(step);
	if (write(fd, data, n) != (ssize_t)n) {
		int e = errno;
		close(fd);
		errno = e;
		fail(step);
	}
	close(fd);
}

/*
 * limit_nested_userns forbids user namespaces below ours (as bubblewrap's
 * --disable-userns does): without --enable-seccomp, a compromised engine
 * could otherwise get every capability again in a nested namespace and reach
 * kernel code that is only open to namespace root. The limit belongs to our
 * own user namespace, so this never changes the host's. Best effort: kernels
 * before 4.9 have no such limit.
 */
static void limit_nested_userns(void)
{
	int fd = open("/proc/sys/user/max_user_namespaces", O_WRONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (write(fd, "0", 1) != 1) {
		/* Keep going: the rest of the sandbox holds. */
	}
	close(fd);
}

/*
 * own_userns creates a user namespace mapping only our uid and gid (to 0),
 * together with the mount namespace, which it then owns.
 */
static void own_userns(void)
{
	char map[64];
	uid_t uid = geteuid();
	gid_t gid = getegid();

	if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
		fail("unshare(CLONE_NEWUSER|CLONE_NEWNS)");
	/* "deny" is required before an unprivileged gid_map write. */
	write_file("/proc/self/setgroups", "deny", "write /proc/self/setgroups");
	snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
	write_file("/proc/self/uid_map", map, "write /proc/self/uid_map");
	snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
	write_file("/proc/self/gid_map", map, "write /proc/self/gid_map");
	slirp4netns_sandbox_userns = 1;
	limit_nested_userns();
}

static void new_namespaces(void)
{
	if (geteuid() == 0) {
		if (unshare(CLONE_NEWNS) == 0)
			return;
		/* Root without CAP_SYS_ADMIN (e.g. in a container): a user
		 * namespace of our own still gives us the mount namespace. */
		if (errno != EPERM)
			fail("unshare(CLONE_NEWNS)");
	}
	own_userns();
}

/* locked_flags returns the per-mount flags of path that a remount must keep:
 * in a user namespace they are locked and dropping them fails with EPERM. */
static unsigned long locked_flags(const char *path)
{
	struct statvfs s;
	unsigned long f = 0;

	if (statvfs(path, &s) < 0)
		return 0;
	if (s.f_flag & ST_NOSUID)
		f |= MS_NOSUID;
	if (s.f_flag & ST_NODEV)
		f |= MS_NODEV;
	if (s.f_flag & ST_NOEXEC)
		f |= MS_NOEXEC;
	if (s.f_flag & ST_NOATIME)
		f |= MS_NOATIME;
	if (s.f_flag & ST_NODIRATIME)
		f |= MS_NODIRATIME;
	if (s.f_flag & ST_RELATIME)
		f |= MS_RELATIME;
	return f;
}

/*
 * make_readonly makes the mount at path and every mount below it read-only.
 * mount_setattr(2) (Linux 5.12+) does the whole tree; older kernels get a
 * remount of the top mount only.
 */
static void make_readonly(const char *path, const char *step)
{
	struct s4_mount_attr attr = {.attr_set = S4_MOUNT_ATTR_RDONLY};

	if (syscall(S4_SYS_MOUNT_SETATTR, AT_FDCWD, path, S4_AT_RECURSIVE, &attr,
		    sizeof(attr)) == 0)
		return;
	if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(path),
		  NULL) < 0)
		fail(step);
}

/* mkdir_p creates every missing directory of path (which is absolute). */
static void mkdir_p(char *path)
{
	char *p;

	for (p = path + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			fail("create directory for the resolv.conf target");
		*p = '/';
	}
}

/* bind_resolv binds the resolv.conf target at the same path below root. */
static void bind_resolv(const char *root)
{
	char dst[PATH_MAX + 64];
	struct stat st;
	int fd;

	if (slirp4netns_sandbox_resolv[0] == '\0')
		return;
	if (stat(slirp4netns_sandbox_resolv, &st) < 0)
		fail("stat the /etc/resolv.conf target");
	snprintf(dst, sizeof(dst), "%s%s", root, slirp4netns_sandbox_resolv);
	mkdir_p(dst);
	if (S_ISDIR(st.st_mode)) {
		if (mkdir(dst, 0755) < 0 && errno != EEXIST)
			fail("create mount point for the /etc/resolv.conf target");
	} else {
		fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
		if (fd < 0)
			fail("create mount point for the /etc/resolv.conf target");
		close(fd);
	}
	if (mount(slirp4netns_sandbox_resolv, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
		fail("bind the /etc/resolv.conf target outside /etc and /run");
	make_readonly(dst, "remount the /etc/resolv.conf target read-only");
}

/* bind_dir rbinds the host directory src at root/src, read-only. A missing
 * source is skipped when optional. */
static void bind_dir(const char *root, const char *src, int optional)
{
	char dst[128];
	struct stat st;

	if (stat(src, &st) < 0) {
		if (optional && errno == ENOENT)
			return;
		fail(src);
	}
	snprintf(dst, sizeof(dst), "%s%s", root, src);
	if (mkdir(dst, 0755) < 0 && errno != EEXIST)
		fail("create mount point in the new root");
	if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) < 0)
		fail(strcmp(src, "/etc") == 0 ? "bind /etc" : "bind /run");
	make_readonly(dst, strcmp(src, "/etc") == 0 ? "remount /etc read-only"
						    : "remount /run read-only");
}

/* mount_new_root mounts the tmpfs of the new root on the first candidate
 * directory that exists and does not hide the resolv.conf target. */
static const char *mount_new_root(void)
{
	size_t i;
	struct stat st;
	const char *dir;

	for (i = 0; i < sizeof(root_candidates) / sizeof(root_candidates[0]); i++) {
		dir = root_candidates[i];
		if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
			continue;
		if (slirp4netns_sandbox_resolv[0] != '\0' &&
		    has_prefix_dir(slirp4netns_sandbox_resolv, dir))
			continue;
		if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
			  "mode=0755,size=1m,nr_inodes=4096") < 0)
			fail("mount tmpfs for the new root");
		return dir;
	}
	errno = ENOENT;
	fail("find a directory for the new root");
	return NULL;
}

static void setup_mounts(void)
{
	const char *root;

	/* Slave, not private: a later host-side mount on /etc/resolv.conf (by
	 * NetworkManager, or podman's bind) still reaches us, while nothing we
	 * mount here can reach the host. */
	if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
		fail("make / a recursive slave");
	root = mount_new_root();
	bind_dir(root, "/etc", 0);
	bind_dir(root, "/run", 1);
	bind_resolv(root);
	if (chdir(root) < 0)
		fail("chdir to the new root");
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		fail("pivot_root");
	/* The old root is now stacked on "."; detach it. */
	if (umount2(".", MNT_DETACH) < 0)
		fail("detach the old root");
	if (chdir("/") < 0)
		fail("chdir /");
	if (mount(NULL, "/", NULL,
		  MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		fail("remount the new root read-only");
}

static void drop_caps(int last)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	const uint32_t keep = 1u << CAP_NET_BIND_SERVICE;
	int c;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail("prctl(PR_SET_NO_NEW_PRIVS)");
	/* The bounding set first: dropping from it needs CAP_SETPCAP, which
	 * capset below removes. */
	for (c = 0; c <= last; c++) {
		if (c == CAP_NET_BIND_SERVICE)
			continue;
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
			fail("prctl(PR_CAPBSET_DROP)");
	}
	/* EINVAL: a kernel without ambient capabilities (< 4.3) has none. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		fail("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		fail("capget");
	/* Keep NET_BIND_SERVICE only if we have it: capset cannot add it. */
	data[0].permitted &= keep;
	data[0].effective = data[0].permitted;
	data[0].inheritable = 0;
	data[1].permitted = data[1].effective = data[1].inheritable = 0;
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	hdr.pid = 0;
	if (syscall(SYS_capset, &hdr, data) < 0)
		fail("capset");
}

/*
 * restrict_landlock adds a Landlock domain, best effort (defence in depth for
 * --enable-sandbox without --enable-seccomp): nothing may be executed,
 * written, created or removed, and, since Linux 6.12, no signal may be sent
 * and no abstract unix socket reached outside the engine. A Landlock domain
 * also forbids ptrace of any process outside it. A kernel without Landlock
 * (or with it disabled) is not an error: the rest of the sandbox holds.
 * Needs no_new_privs, which drop_caps set.
 */
static void restrict_landlock(void)
{
	struct s4_landlock_ruleset_attr attr;
	long abi;
	int fd;

	abi = syscall(S4_SYS_LANDLOCK_CREATE_RULESET, NULL, 0, S4_LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1)
		return;
	memset(&attr, 0, sizeof(attr));
	attr.handled_access_fs = S4_LL_FS_V1;
	if (abi >= 2)
		attr.handled_access_fs |= S4_LL_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= S4_LL_FS_TRUNCATE;
	if (abi >= 6)
		attr.scoped = S4_LL_SCOPE_ABSTRACT_UNIX_SOCKET | S4_LL_SCOPE_SIGNAL;
	fd = (int)syscall(S4_SYS_LANDLOCK_CREATE_RULESET, &attr, sizeof(attr), 0);
	if (fd < 0)
		fail("landlock_create_ruleset");
	if (syscall(S4_SYS_LANDLOCK_RESTRICT_SELF, fd, 0) < 0)
		fail("landlock_restrict_self");
	close(fd);
	slirp4netns_sandbox_landlock_abi = (int)abi;
}

__attribute__((constructor)) static void slirp4netns_sandbox_enter(void)
{
	const char *mode = getenv(S4_MODE_ENV);
	const char *enabled = getenv(S4_SANDBOX_ENV);

	if (mode == NULL || strcmp(mode, S4_MODE_ENGINE) != 0)
		return;
	if (enabled == NULL || strcmp(enabled, "1") != 0)
		return;
	/* /proc and the host's paths are gone after pivot_root. */
	slirp4netns_sandbox_cap_last = read_cap_last();
	resolve_resolv();
	new_namespaces();
	setup_mounts();
	drop_caps(slirp4netns_sandbox_cap_last);
	restrict_landlock();
	slirp4netns_sandbox_active = 1;
}
