// Command testnetd runs the test services of package testnet until it gets
// SIGINT or SIGTERM: the demo (scripts/demo) starts it in its outer
// namespace. It prints "ready" on stdout once every server listens.
//
// It must only be started inside a network namespace made for the purpose:
// it binds port 53, and the DNS server answers only the names given with
// -record (it never forwards a query).
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// records collects repeated -record name=ip flags.
type records testnet.Zone

func (r records) String() string { return fmt.Sprint(map[string][]netip.Addr(r)) }

func (r records) Set(v string) error {
	name, ip, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want name=ip, got %q", v)
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("record %q: %w", v, err)
	}
	fq := strings.ToLower(strings.TrimSuffix(name, ".")) + "."
	r[fq] = append(r[fq], a)
	return nil
}

func main() {
	os.Exit(run())
}

func run() int {
	zone := records{}
	dnsAddr := flag.String("dns", "", "serve DNS (UDP and TCP) on this address, e.g. 127.0.0.1:53")
	httpAddr := flag.String("http", "", "serve HTTP on this address, e.g. 127.0.0.1:8080")
	echoAddr := flag.String("echo", "", "serve TCP and UDP echo on this address, e.g. 127.0.0.1:7")
	peerAddr := flag.String("peer", "", "serve TCP and UDP peer-address reports on this address")
	flag.Var(zone, "record", "name=ip answered by the DNS server (repeatable)")
	flag.Parse()

	var s testnet.Services
	defer s.Close()
	if err := start(&s, *dnsAddr, *httpAddr, *echoAddr, *peerAddr, testnet.Zone(zone)); err != nil {
		fmt.Fprintln(os.Stderr, "testnetd:", err)
		return 1
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return 0
}

func start(s *testnet.Services, dnsAddr, httpAddr, echoAddr, peerAddr string, zone testnet.Zone) error {
	if dnsAddr != "" {
		if _, err := s.ServeDNS(dnsAddr, zone); err != nil {
			return err
		}
	}
	if httpAddr != "" {
		if err := s.ServeHTTP(httpAddr); err != nil {
			return err
		}
	}
	if echoAddr != "" {
		if _, err := s.ServeTCP("tcp", echoAddr, testnet.EchoTCP); err != nil {
			return err
		}
		if _, err := s.ServeUDP("udp", echoAddr, testnet.EchoUDP); err != nil {
			return err
		}
	}
	if peerAddr != "" {
		if _, err := s.ServeTCP("tcp", peerAddr, testnet.PeerTCP); err != nil {
			return err
		}
		if _, err := s.ServeUDP("udp", peerAddr, testnet.PeerUDP); err != nil {
			return err
		}
	}
	return nil
}
