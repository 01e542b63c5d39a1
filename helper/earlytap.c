//go:build cgo

/*
 * Early TAP: open and configure the guest's TAP while the Go runtime starts.
 *
 * Podman starts us as
 *   slirp4netns --mtu=65520 --enable-sandbox --enable-seccomp --enable-ipv6
 *     -c -e 3 -r 4 --api-socket PATH --netns-type=path NETNS tap0
 * and waits for the ready fd. Opening the TAP inside NETNS and configuring it
 * (~1-2 ms) used to start only once the Go runtime and package init (~3 ms
 * for this binary) and our own start-up had run, on one core while the other
 * idled. For command lines of that shape, this ELF constructor starts a
 * thread before the Go runtime that does the same work as helper/tap.go and
 * helper/configure.go. The thread joins NETNS with setns(2) (allowed to one
 * thread of any process), does its work and ends; it never returns to our
 * network namespace, so it never runs anything else.
 *
 * Go stays in charge: helper.OpenTap takes the result (earlytap.go) only when
 * the configuration Go parsed is the one recorded here, and does the work
 * itself otherwise. Every failure here just closes the TAP, which removes
 * it, since the thread only keeps TAPs it created itself (IFF_TUN_EXCL), and
 * leaves the work, and the error messages, to Go. The parser is glibc's
 * getopt_long with the C slirp4netns's option table, the one
 * supervisor/flags.go reproduces; any option this file does not know the
 * meaning of for the TAP, or any value Go might refuse, means "do nothing".
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "earlytap.h"

#define MODE_ENV "_SLIRP4NETNS_MODE"
#define NO_EARLY_ENV "_SLIRP4NETNS_NO_EARLY_TAP"
#define NO_OFFLOAD_ENV "SLIRP4NETNS_DISABLE_OFFLOAD"

/* The default --cidr (policy.DefaultCIDR): guest .100, gateway .2. */
#define GUEST_ADDR "10.0.2.100"
#define GATEWAY_ADDR "10.0.2.2"
#define BROADCAST_ADDR "10.0.2.255"
#define PREFIX_LEN 24
#define DEFAULT_MTU 1500
#define MAX_MTU 65521
#define MIN_MTU6 1280

static pthread_t early_thread;
static int early_started;
static struct early_tap early_result = {.fd = -1};

/* digits_only_int parses a plain decimal number (no sign, no spaces, no
 * leading zero); anything else is left to Go's parser. */
static int digits_only_int(const char *s, int max, int *out)
{
	long v = 0;

	if (s == NULL || *s == '\0' || (s[0] == '0' && s[1] != '\0'))
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > max)
			return -1;
	}
	*out = (int)v;
	return 0;
}

/* The C slirp4netns's option table ("ce:r:m:a:6hv" and these long options),
 * in its order, so that getopt_long resolves abbreviations as it does. */
enum { O_CONFIGURE = 'c', O_EXITFD = 'e', O_READYFD = 'r', O_MTU = 'm', O_API = 'a', O_IPV6 = '6',
       O_HELP = 'h', O_VERSION = 'v', O_CIDR = 256, O_DISABLE_HOST_LOOPBACK, O_NETNS_TYPE,
       O_USERNS_PATH, O_ENABLE_SANDBOX, O_ENABLE_SECCOMP, O_OUTBOUND_ADDR, O_OUTBOUND_ADDR6,
       O_DISABLE_DNS, O_MACADDRESS, O_TARGET_TYPE };

static const struct option long_options[] = {
	{"configure", no_argument, NULL, O_CONFIGURE},
	{"exit-fd", required_argument, NULL, O_EXITFD},
	{"ready-fd", required_argument, NULL, O_READYFD},
	{"mtu", required_argument, NULL, O_MTU},
	{"cidr", required_argument, NULL, O_CIDR},
	{"disable-host-loopback", no_argument, NULL, O_DISABLE_HOST_LOOPBACK},
	{"no-host-loopback", no_argument, NULL, O_DISABLE_HOST_LOOPBACK},
	{"netns-type", required_argument, NULL, O_NETNS_TYPE},
	{"userns-path", required_argument, NULL, O_USERNS_PATH},
	{"api-socket", required_argument, NULL, O_API},
	{"enable-ipv6", no_argument, NULL, O_IPV6},
	{"enable-sandbox", no_argument, NULL, O_ENABLE_SANDBOX},
	{"create-sandbox", no_argument, NULL, O_ENABLE_SANDBOX},
	{"enable-seccomp", no_argument, NULL, O_ENABLE_SECCOMP},
	{"help", no_argument, NULL, O_HELP},
	{"version", no_argument, NULL, O_VERSION},
	{"outbound-addr", required_argument, NULL, O_OUTBOUND_ADDR},
	{"outbound-addr6", required_argument, NULL, O_OUTBOUND_ADDR6},
	{"disable-dns", no_argument, NULL, O_DISABLE_DNS},
	{"macaddress", required_argument, NULL, O_MACADDRESS},
	{"target-type", required_argument, NULL, O_TARGET_TYPE},
	{"usersns-path", required_argument, NULL, O_USERNS_PATH},
	{"users-path", required_argument, NULL, O_USERNS_PATH},
	{NULL, 0, NULL, 0},
};

/* apply_option records one parsed option; it returns -1 for anything that
 * makes us leave the TAP to Go. */
static int apply_option(int c, const char *arg, struct early_tap *r, int *configure, int *path_type)
{
	int n;

	switch (c) {
	case O_CONFIGURE:
		*configure = 1;
		return 0;
	case O_EXITFD:
	case O_READYFD:
		return digits_only_int(arg, INT_MAX, &n);
	case O_MTU:
		return digits_only_int(arg, MAX_MTU, &r->mtu) == 0 && r->mtu > 0 ? 0 : -1;
	case O_API:
		return arg != NULL && *arg != '\0' ? 0 : -1;
	case O_IPV6:
		r->ipv6 = 1;
		return 0;
	case O_NETNS_TYPE:
		*path_type = arg != NULL && strcmp(arg, "path") == 0;
		return 0;
	case O_DISABLE_HOST_LOOPBACK:
	case O_ENABLE_SANDBOX:
	case O_ENABLE_SECCOMP:
	case O_DISABLE_DNS:
		return 0;
	default:
		/* --help, --version, --cidr, --userns-path, --outbound-addr*,
		 * --macaddress, --target-type, errors ('?', ':'). */
		return -1;
	}
}

/* early_tap_parse decides from argv whether the thread may do the TAP's
 * work and fills r with what it is to do. It works on a copy of argv:
 * getopt_long permutes the array, and the Go runtime reads it later. */
int early_tap_parse(int argc, char **argv, struct early_tap *r)
{
	char **av;
	int c, configure = 0, path_type = 0, bad = 0;

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->mtu = DEFAULT_MTU;
	if (argc < 3 || argv == NULL || getenv("POSIXLY_CORRECT") != NULL)
		return -1;
	av = calloc((size_t)argc + 1, sizeof(*av));
	if (av == NULL)
		return -1;
	memcpy(av, argv, (size_t)argc * sizeof(*av));
	opterr = 0;
	optind = 0; /* 0: glibc reinitialises its state */
	while (!bad && (c = getopt_long(argc, av, "ce:r:m:a:6hv", long_options, NULL)) != -1)
		bad = apply_option(c, optarg, r, &configure, &path_type) != 0;
	if (!bad && (argc - optind != 2 || !configure || !path_type))
		bad = 1;
	if (!bad && (r->ipv6 && r->mtu < MIN_MTU6))
		bad = 1;
	if (!bad) {
		const char *ns = av[optind], *tap = av[optind + 1];
		if (*ns == '\0' || strlen(ns) >= sizeof(r->netns) || *tap == '\0' || strlen(tap) >= IFNAMSIZ)
			bad = 1;
		else {
			strcpy(r->netns, ns);
			strcpy(r->tap, tap);
		}
	}
	optind = 0;
	free(av);
	return bad ? -1 : 0;
}

/* nl_request sends one rtnetlink request and waits for its acknowledgement. */
static int nl_request(int sock, struct nlmsghdr *h)
{
	char buf[1024];
	struct nlmsgerr *e;
	ssize_t n;

	h->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	if (send(sock, h, h->nlmsg_len, 0) != (ssize_t)h->nlmsg_len)
		return -1;
	n = recv(sock, buf, sizeof(buf), 0);
	if (n < (ssize_t)(NLMSG_HDRLEN + sizeof(*e)))
		return -1;
	h = (struct nlmsghdr *)buf;
	if (h->nlmsg_type != NLMSG_ERROR)
		return -1;
	e = NLMSG_DATA(h);
	return e->error == 0 ? 0 : -1;
}

/* nl_attr appends one attribute to the request in h (whose buffer holds
 * at least 512 bytes). */
static void nl_attr(struct nlmsghdr *h, unsigned short type, const void *data, size_t len)
{
	struct rtattr *a = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));

	a->rta_type = type;
	a->rta_len = RTA_LENGTH(len);
	memcpy(RTA_DATA(a), data, len);
	h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Requests are built in a union so that the header and the message that
 * follows it are aligned for both. */
union nl_buf {
	struct nlmsghdr h;
	char b[512];
};

/* nl_begin starts a request of type with flags (besides NLM_F_REQUEST and
 * NLM_F_ACK, which nl_request adds) in the zeroed m, with room for a
 * len-byte message header, and returns that header. */
static void *nl_begin(union nl_buf *m, unsigned short type, unsigned short flags, size_t len)
{
	m->h.nlmsg_len = NLMSG_LENGTH(len);
	m->h.nlmsg_type = type;
	m->h.nlmsg_flags = flags;
	return NLMSG_DATA(&m->h);
}

/* link_up sets ifindex up (RTM_NEWLINK), as netlink.LinkSetUp does. */
static int link_up(int sock, int ifindex)
{
	union nl_buf m = {0};
	struct ifinfomsg *ifi = nl_begin(&m, RTM_NEWLINK, 0, sizeof(*ifi));

	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	ifi->ifi_flags = IFF_UP;
	ifi->ifi_change = IFF_UP;
	return nl_request(sock, &m.h);
}

/* link_set_mtu sets ifindex's MTU (RTM_SETLINK), as netlink.LinkSetMTU does. */
static int link_set_mtu(int sock, int ifindex, int mtu)
{
	union nl_buf m = {0};
	struct ifinfomsg *ifi = nl_begin(&m, RTM_SETLINK, 0, sizeof(*ifi));
	unsigned int v = (unsigned int)mtu;

	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	nl_attr(&m.h, IFLA_MTU, &v, sizeof(v));
	return nl_request(sock, &m.h);
}

/* addr_replace is `ip addr replace GUEST/PREFIX broadcast + dev ifindex`,
 * the request netlink.AddrReplace sends. */
static int addr_replace(int sock, int ifindex)
{
	union nl_buf m = {0};
	struct ifaddrmsg *ifa = nl_begin(&m, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, sizeof(*ifa));
	struct in_addr local, brd;

	if (inet_pton(AF_INET, GUEST_ADDR, &local) != 1 || inet_pton(AF_INET, BROADCAST_ADDR, &brd) != 1)
		return -1;
	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = PREFIX_LEN;
	ifa->ifa_index = (unsigned int)ifindex;
	nl_attr(&m.h, IFA_LOCAL, &local, sizeof(local));
	nl_attr(&m.h, IFA_ADDRESS, &local, sizeof(local));
	nl_attr(&m.h, IFA_BROADCAST, &brd, sizeof(brd));
	return nl_request(sock, &m.h);
}

/* route_append is `ip route append default via GATEWAY dev ifindex`, the
 * request netlink.RouteAppend sends. */
static int route_append(int sock, int ifindex)
{
	union nl_buf m = {0};
	struct rtmsg *rt = nl_begin(&m, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_APPEND, sizeof(*rt));
	struct in_addr gw;
	unsigned int oif = (unsigned int)ifindex;

	if (inet_pton(AF_INET, GATEWAY_ADDR, &gw) != 1)
		return -1;
	rt->rtm_family = AF_INET;
	rt->rtm_table = RT_TABLE_MAIN;
	rt->rtm_protocol = RTPROT_BOOT;
	rt->rtm_scope = RT_SCOPE_UNIVERSE;
	rt->rtm_type = RTN_UNICAST;
	nl_attr(&m.h, RTA_GATEWAY, &gw, sizeof(gw));
	nl_attr(&m.h, RTA_OIF, &oif, sizeof(oif));
	return nl_request(sock, &m.h);
}

/* write_sysctl writes value to /proc/sys/net/ipv6/conf/<dev>/<key>; /proc/sys/net
 * shows the namespace of the thread that opens it. */
static int write_sysctl(const char *dev, const char *key, const char *value)
{
	char path[128];
	int fd, ok;

	if ((size_t)snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/%s", dev, key) >= sizeof(path))
		return -1;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ok = write(fd, value, strlen(value)) == (ssize_t)strlen(value);
	close(fd);
	return ok ? 0 : -1;
}

/* ifindex_of looks name up in the namespace sock was created in. */
static int ifindex_of(int sock, const char *name)
{
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
	if (ioctl(sock, SIOCGIFINDEX, &ifr) != 0)
		return -1;
	return ifr.ifr_ifindex;
}

/* configure does what helper/configure.go does, in the same order: lo up;
 * the TAP's MTU and address; with IPv6 the two sysctls; the TAP up; the
 * default route appended. */
static int configure(const struct early_tap *r)
{
	int sock, lo, tap, err = -1;

	sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (sock < 0)
		return -1;
	lo = ifindex_of(sock, "lo");
	tap = ifindex_of(sock, r->name);
	if (lo < 0 || tap < 0 || link_up(sock, lo) != 0 || link_set_mtu(sock, tap, r->mtu) != 0 ||
	    addr_replace(sock, tap) != 0)
		goto out;
	if (r->ipv6 && (write_sysctl(r->name, "disable_ipv6", "0") != 0 ||
			write_sysctl(r->name, "accept_ra", "1") != 0))
		goto out;
	if (link_up(sock, tap) != 0 || route_append(sock, tap) != 0)
		goto out;
	err = 0;
out:
	close(sock);
	return err;
}

/* open_tap creates the TAP with a virtio-net header and the best offloads,
 * as helper/tap.go's openTap does on its first try; an existing TAP, or a
 * kernel that refuses either, is left to Go. */
static int open_tap(struct early_tap *r)
{
	static const unsigned int offloads[] = {
		TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
		TUN_F_CSUM | TUN_F_TSO4,
		TUN_F_CSUM,
	};
	struct ifreq ifr;
	size_t i;
	int fd;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, r->tap, IFNAMSIZ - 1);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL;
	if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
		close(fd);
		return -1;
	}
	for (i = 0; i < sizeof(offloads) / sizeof(offloads[0]); i++) {
		if (ioctl(fd, TUNSETOFFLOAD, offloads[i]) == 0)
			break;
	}
	if (i == sizeof(offloads) / sizeof(offloads[0])) {
		close(fd);
		return -1;
	}
	r->offloads = offloads[i];
	memcpy(r->name, ifr.ifr_name, IFNAMSIZ);
	r->name[IFNAMSIZ - 1] = '\0';
	return fd;
}

/* early_tap_work is the thread: join the target's network namespace, create
 * and configure the TAP, record its fd in r (left -1 on any failure). */
static void *early_tap_work(void *arg)
{
	struct early_tap *r = arg;
	int ns, fd;

	ns = open(r->netns, O_RDONLY | O_CLOEXEC);
	if (ns < 0)
		return NULL;
	if (setns(ns, CLONE_NEWNET) != 0) {
		close(ns);
		return NULL;
	}
	close(ns);
	fd = open_tap(r);
	if (fd < 0)
		return NULL;
	if (configure(r) != 0) {
		close(fd); /* removes the TAP we created */
		return NULL;
	}
	r->fd = fd;
	return NULL;
}

__attribute__((constructor)) static void slirp4netns_early_tap(int argc, char **argv)
{
	sigset_t all, old;

	if (getenv(MODE_ENV) != NULL || getenv(NO_EARLY_ENV) != NULL || getenv(NO_OFFLOAD_ENV) != NULL)
		return;
	if (early_tap_parse(argc, argv, &early_result) != 0)
		return;
	/* The thread takes no signals: the Go runtime, once up, expects its
	 * own threads to. It inherits this mask. */
	sigfillset(&all);
	if (pthread_sigmask(SIG_SETMASK, &all, &old) != 0)
		return;
	early_started = pthread_create(&early_thread, NULL, early_tap_work, &early_result) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* early_tap_take waits for the thread (once) and hands over its result; it
 * returns 0 when there is a TAP in out->fd. */
int early_tap_take(struct early_tap *out)
{
	if (!early_started)
		return -1;
	early_started = 0;
	pthread_join(early_thread, NULL);
	*out = early_result;
	early_result.fd = -1;
	return out->fd >= 0 ? 0 : -1;
}
