//go:build cgo

/*
 * Namespace entry for the helper process.
 *
 * Joining a user namespace with setns(2) requires a single-threaded caller,
 * and a Go process is multi-threaded from the moment its runtime starts. So
 * the helper joins the target's namespaces here, in an ELF constructor that
 * runs before the Go runtime (the same technique runc's nsexec uses).
 *
 * The constructor does nothing unless _SLIRP4NETNS_MODE=helper, so linking
 * this file into the slirp4netns binary is harmless in every other mode.
 * The names below must match the Go constants in nsenter.go.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLIRP4NETNS_MODE_ENV "_SLIRP4NETNS_MODE"
#define SLIRP4NETNS_MODE_HELPER "helper"
#define SLIRP4NETNS_USERNS_FD_ENV "_SLIRP4NETNS_USERNS_FD"
#define SLIRP4NETNS_NETNS_FD_ENV "_SLIRP4NETNS_NETNS_FD"

/*
 * env_fd parses the descriptor number held by environment variable name.
 * It returns -1 when the variable is unset or empty, and exits when the value
 * is malformed: the supervisor sets these, so garbage means a bug or misuse.
 */
static int env_fd(const char *name)
{
	const char *v = getenv(name);
	char *end = NULL;
	long fd;

	if (v == NULL || *v == '\0')
		return -1;
	errno = 0;
	fd = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || fd < 0 || fd > INT_MAX) {
		fprintf(stderr, "slirp4netns helper: invalid %s=%s\n", name, v);
		_exit(1);
	}
	return (int)fd;
}

/*
 * same_userns reports whether fd names the user namespace we are already in.
 * setns(2) into one's own user namespace fails with EINVAL, and the common
 * case (a netns owned by our own userns) must not print a warning.
 */
static int same_userns(int fd)
{
	struct stat self, target;

	if (fstat(fd, &target) < 0 || stat("/proc/self/ns/user", &self) < 0)
		return 0;
	return self.st_ino == target.st_ino && self.st_dev == target.st_dev;
}

/*
 * join_userns enters the target's user namespace. Failure is only a warning,
 * as in the C slirp4netns: joining the network namespace may still work (for
 * example when we are privileged over it already).
 */
static void join_userns(int fd)
{
	if (!same_userns(fd) && setns(fd, CLONE_NEWUSER) < 0)
		fprintf(stderr, "WARNING: setns(CLONE_NEWUSER): %s\n", strerror(errno));
	close(fd);
}

/* join_netns enters the target's network namespace or exits. */
static void join_netns(int fd)
{
	if (setns(fd, CLONE_NEWNET) < 0) {
		fprintf(stderr, "setns(CLONE_NEWNET): %s\n", strerror(errno));
		_exit(1);
	}
	close(fd);
}

__attribute__((constructor)) static void slirp4netns_helper_nsenter(void)
{
	const char *mode = getenv(SLIRP4NETNS_MODE_ENV);
	int userns_fd, netns_fd;

	if (mode == NULL || strcmp(mode, SLIRP4NETNS_MODE_HELPER) != 0)
		return;
	userns_fd = env_fd(SLIRP4NETNS_USERNS_FD_ENV);
	netns_fd = env_fd(SLIRP4NETNS_NETNS_FD_ENV);
	if (netns_fd < 0) {
		fprintf(stderr, "slirp4netns helper: %s is not set\n", SLIRP4NETNS_NETNS_FD_ENV);
		_exit(1);
	}
	if (userns_fd >= 0)
		join_userns(userns_fd);
	join_netns(netns_fd);
}
