package integration

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// The outer namespace: what "the host" looks like to slirp4netns.
const (
	// vethA/vethB are a veth pair standing in for the host's real
	// interfaces, with TEST-NET addresses (RFC 5737) that exist only here.
	vethA  = "h7a"
	addrA  = "192.0.2.10"
	vethB  = "h7b"
	addrB1 = "198.51.100.20" // vethB's first (primary) address
	addrB2 = "198.51.100.21"

	// The same pair carries an IPv6 network with documentation addresses
	// (RFC 3849), added with nodad so that they are usable at once. The
	// kernel lists a link's IPv6 addresses newest first, so addrB61, added
	// last, is vethB's first IPv6 address (its link-local one comes after
	// the global ones).
	addrA6  = "2001:db8:a::10"
	addrB61 = "2001:db8:b::20" // vethB's first IPv6 address
	addrB62 = "2001:db8:b::21"

	// vethC/vethD are a second veth pair with no IPv4 address and, on
	// vethC, only a fixed link-local IPv6 address: an interface that
	// --outbound-addr and --outbound-addr6 cannot use.
	vethC   = "h7c"
	vethD   = "h7d"
	addrC6L = "fe80::c"

	dnsPort  = 53   // the test DNS server, on 127.0.0.1 (resolv.conf names it)
	echoPort = 7    // TCP+UDP echo on 127.0.0.1, TCP echo on [::1]
	httpPort = 8080 // testnet.HTTPHandler on 127.0.0.1
	peerPort = 9001 // TCP+UDP peer-address reports on addrA, addrA6, 127.0.0.1, ::1

	// testName resolves to testNameAddr through the test DNS server.
	testName     = "host.slirp.test"
	testNameAddr = addrA
)

// outer is the set-up of the outer namespace, undone by Close.
type outer struct {
	services testnet.Services
	tmp      string
}

// setupOuter prepares the outer namespace the inner stage runs in. It
// refuses to run anywhere else: the stage is only ever started by runInit.
func setupOuter() (*outer, error) {
	if err := checkNotInitialUserns(); err != nil {
		return nil, err
	}
	o := &outer{}
	if err := o.setup(); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

func (o *outer) setup() error {
	cmds := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", vethA, "type", "veth", "peer", "name", vethB},
		{"ip", "addr", "add", addrA + "/24", "dev", vethA},
		{"ip", "addr", "add", addrB1 + "/24", "dev", vethB},
		{"ip", "addr", "add", addrB2 + "/24", "dev", vethB},
		{"ip", "link", "set", vethA, "up"},
		{"ip", "link", "set", vethB, "up"},
		{"ip", "-6", "addr", "add", addrA6 + "/64", "dev", vethA, "nodad"},
		{"ip", "-6", "addr", "add", addrB62 + "/64", "dev", vethB, "nodad"},
		{"ip", "-6", "addr", "add", addrB61 + "/64", "dev", vethB, "nodad"},
		{"ip", "link", "add", vethC, "type", "veth", "peer", "name", vethD},
		// No automatic link-local address: vethC has addrC6L only.
		{"ip", "link", "set", vethC, "addrgenmode", "none"},
		{"ip", "-6", "addr", "add", addrC6L + "/64", "dev", vethC, "nodad"},
		{"ip", "link", "set", vethC, "up"},
		{"ip", "link", "set", vethD, "up"},
	}
	for _, c := range cmds {
		if err := run(c...); err != nil {
			return err
		}
	}
	if err := o.bindResolvConf(); err != nil {
		return err
	}
	return o.startServices()
}

// bindResolvConf points this namespace's /etc/resolv.conf at the test DNS
// server, so that neither slirp4netns nor anything else here can send a
// query to the host's real resolver.
func (o *outer) bindResolvConf() error {
	dir, err := os.MkdirTemp("", "slirptest-outer-")
	if err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	o.tmp = dir
	f := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(f, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return run("mount", "--bind", f, "/etc/resolv.conf")
}

func (o *outer) startServices() error {
	s := &o.services
	zone := testnet.Zone{testName + ".": {netip.MustParseAddr(testNameAddr)}}
	if _, err := s.ServeDNS(hostPort("127.0.0.1", dnsPort), zone); err != nil {
		return err
	}
	if err := s.ServeHTTP(hostPort("127.0.0.1", httpPort)); err != nil {
		return err
	}
	for _, a := range []string{"127.0.0.1", "::1"} {
		if _, err := s.ServeTCP("tcp", hostPort(a, echoPort), testnet.EchoTCP); err != nil {
			return err
		}
		if _, err := s.ServeUDP("udp", hostPort(a, echoPort), testnet.EchoUDP); err != nil {
			return err
		}
	}
	// Peer-address reports: on the outer network, and on the loopback
	// addresses the guest reaches through the gateway (10.0.2.2, fd00::2).
	for _, a := range []string{addrA, addrA6, "127.0.0.1", "::1"} {
		if _, err := s.ServeTCP("tcp", hostPort(a, peerPort), testnet.PeerTCP); err != nil {
			return err
		}
		if _, err := s.ServeUDP("udp", hostPort(a, peerPort), testnet.PeerUDP); err != nil {
			return err
		}
	}
	return nil
}

// checkNotInitialUserns guards the host: the set-up mounts over
// /etc/resolv.conf and adds interfaces, which must only ever happen in a
// namespace made for the tests. The initial user namespace maps every uid.
func checkNotInitialUserns() error {
	m, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return fmt.Errorf("read uid_map: %w", err)
	}
	f := strings.Fields(string(m))
	if len(f) >= 3 && f[2] == "4294967295" {
		return errors.New("refusing to set up the outer namespace in the initial user namespace")
	}
	return nil
}

// Close stops the services; the namespace itself ends with PID 1.
func (o *outer) Close() error {
	err := o.services.Close()
	if o.tmp != "" {
		_ = run("umount", "/etc/resolv.conf")
		err = errors.Join(err, os.RemoveAll(o.tmp))
	}
	return err
}

func hostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
