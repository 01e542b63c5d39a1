//go:build cgo

/*
 * One glibc malloc arena for the whole process.
 *
 * Every thread the Go runtime starts in this cgo binary calls malloc once
 * (pthread_getattr_np, which the runtime uses to learn the thread's stack
 * bounds), and glibc gives each thread that mallocs an arena of its own:
 * a 128 MiB reservation trimmed with two munmaps, an mprotect, and page
 * faults for its header, all for a few bytes. The supervisor starts ~9
 * threads and the engine ~4, per container. Go code never mallocs, so a
 * single arena costs no lock contention. This runs before the Go runtime,
 * in every mode.
 */

#define _GNU_SOURCE
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((constructor)) static void slirp4netns_one_arena(void)
{
	mallopt(M_ARENA_MAX, 1);
}

/*
 * slirp4netns_malloc_arenas returns how many arenas malloc has (the <heap>
 * elements of malloc_info), or -1 if it cannot tell. For the tests.
 */
int slirp4netns_malloc_arenas(void)
{
	char *buf = NULL;
	size_t len = 0;
	int n = 0;
	const char *p;
	FILE *f = open_memstream(&buf, &len);

	if (f == NULL)
		return -1;
	if (malloc_info(0, f) != 0) {
		fclose(f);
		free(buf);
		return -1;
	}
	if (fclose(f) != 0) {
		free(buf);
		return -1;
	}
	for (p = buf; (p = strstr(p, "<heap nr=")) != NULL; p++)
		n++;
	free(buf);
	return n;
}
