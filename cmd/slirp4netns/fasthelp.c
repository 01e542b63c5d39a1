//go:build cgo

/*
 * The --help fast path.
 *
 * podman runs `slirp4netns --help` before every container to detect
 * features; starting the Go runtime of this large static binary only to
 * print a constant text costs about twice as long as the C slirp4netns
 * takes. This ELF constructor, which runs before the Go runtime, answers
 * the argument vectors in fasthelp.h (generated from the Go definitions,
 * see internal/helpgen) with the Go path's exact behaviour: the same bytes
 * on stdout, exit status 0, write errors ignored except EPIPE, which kills
 * the process with SIGPIPE as the Go runtime does for a write to fd 1 (even
 * when SIGPIPE is ignored or blocked). Everything else is left to Go.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fasthelp.h"

/* is_child_mode reports whether main will run a child mode, not the supervisor. */
static int is_child_mode(void)
{
	const char *mode = getenv(FASTHELP_MODE_ENV);

	return mode != NULL && (strcmp(mode, FASTHELP_MODE_HELPER) == 0 || strcmp(mode, FASTHELP_MODE_ENGINE) == 0);
}

/* is_help_form reports whether arg alone on the command line asks for help. */
static int is_help_form(const char *arg)
{
	size_t i;

	for (i = 0; i < sizeof(fasthelp_forms) / sizeof(fasthelp_forms[0]); i++)
		if (strcmp(arg, fasthelp_forms[i]) == 0)
			return 1;
	return 0;
}

/*
 * die_of_sigpipe ends the process as the Go runtime does after EPIPE on
 * stdout (runtime.sigpipe, dieFromSignal): SIGPIPE with its default
 * action, unblocked; exit status 2 should it not kill us.
 */
static void die_of_sigpipe(void)
{
	struct sigaction sa;
	sigset_t set;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGPIPE, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(SIGPIPE);
	_exit(2);
}

/* wait_writable waits until stdout takes data; it returns 0 if poll fails. */
static int wait_writable(void)
{
	struct pollfd pfd = {.fd = STDOUT_FILENO, .events = POLLOUT};

	return poll(&pfd, 1, -1) >= 0 || errno == EINTR;
}

/*
 * write_usage writes the usage text to stdout as os.Stdout.Write does:
 * all of it, retrying after EINTR and waiting out EAGAIN (a non-blocking
 * stdout); any other error ends the write silently, as PrintUsage ignores
 * it.
 */
static void write_usage(void)
{
	const char *p = fasthelp_usage;
	size_t left = sizeof(fasthelp_usage) - 1;

	while (left > 0) {
		ssize_t n = write(STDOUT_FILENO, p, left);
		int err = errno;

		if (n > 0) {
			p += n;
			left -= (size_t)n;
		} else if (n < 0 && err == EPIPE) {
			die_of_sigpipe();
		} else if (n < 0 && err == EAGAIN) {
			if (!wait_writable())
				return;
		} else if (!(n < 0 && err == EINTR)) {
			return;
		}
	}
}

__attribute__((constructor)) static void slirp4netns_fasthelp(int argc, char **argv)
{
	if (argc != 2 || argv == NULL || argv[1] == NULL || !is_help_form(argv[1]) || is_child_mode())
		return;
	write_usage();
	_exit(0);
}
