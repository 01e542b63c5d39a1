/* The early TAP's interface between earlytap.c and earlytap.go. */
#ifndef SLIRP4NETNS_EARLYTAP_H
#define SLIRP4NETNS_EARLYTAP_H

#include <limits.h>

/* early_tap is what the command line asked for (tap, netns, mtu, ipv6) and
 * what the thread did (fd, or -1; name; offloads). */
struct early_tap {
	int fd;
	char tap[16];  /* the name asked for (IFNAMSIZ) */
	char name[16]; /* the name the kernel gave */
	char netns[PATH_MAX];
	int mtu;
	int ipv6;
	unsigned int offloads;
};

int early_tap_parse(int argc, char **argv, struct early_tap *r);
int early_tap_take(struct early_tap *out);

#endif
