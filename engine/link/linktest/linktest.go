// Package linktest provides fixtures for testing and benchmarking link
// endpoints against the real kernel: a private network namespace driven from
// one locked OS thread, TAP devices inside it, and a minimal gVisor stack.
// Everything it creates lives in namespaces it made, so test traffic never
// reaches the host's network. It needs root (or CAP_NET_ADMIN and
// CAP_SYS_ADMIN).
package linktest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Netns is a fresh network namespace entered by one dedicated, locked OS
// thread. Functions passed to Do run on that thread, so the sockets, TAPs
// and netlink requests they create belong to the namespace; the resulting
// fds and conns may then be used from any goroutine.
type Netns struct {
	req  chan func()
	done chan struct{}
	tid  int // the thread's id, set before NewNetns returns
}

// NewNetns creates the namespace and its thread, and brings lo up.
func NewNetns() (*Netns, error) {
	n := &Netns{req: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go n.run(errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	err := n.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func (n *Netns) run(errc chan<- error) {
	// Never unlocked: when this goroutine returns, the runtime kills the
	// thread instead of reusing it in the wrong namespace.
	runtime.LockOSThread()
	defer close(n.done)
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
		return
	}
	n.tid = unix.Gettid()
	errc <- nil
	for fn := range n.req {
		fn()
	}
}

// Do runs fn inside the namespace and returns its error.
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	select {
	case n.req <- func() { errc <- fn() }:
	case <-n.done:
		return errors.New("netns: closed")
	}
	return <-errc
}

// Path returns a path naming the namespace (for nsenter --net or setns),
// valid until Close: it goes through the namespace's thread.
func (n *Netns) Path() string {
	return fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), n.tid)
}

// Close stops the namespace's thread. The namespace itself lives on while
// fds opened in it (TAPs, sockets) are open.
func (n *Netns) Close() {
	select {
	case <-n.done:
	default:
		close(n.req)
		<-n.done
	}
}

// TapOptions says how to open a TAP.
type TapOptions struct {
	Name     string
	VnetHdr  bool   // IFF_VNET_HDR
	Offloads uint32 // TUNSETOFFLOAD flags, applied when VnetHdr is set
}

// OpenTap creates (or attaches to) a TAP in the calling thread's network
// namespace (call it through Netns.Do) and returns its fd, in blocking
// mode.
func OpenTap(o TapOptions) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var req [unix.IFNAMSIZ + 64]byte
	copy(req[:unix.IFNAMSIZ-1], o.Name)
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if o.VnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	*(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])) = flags
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF %q: %w", o.Name, errno)
	}
	if o.VnetHdr {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(o.Offloads)); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("TUNSETOFFLOAD %q: %w", o.Name, err)
		}
	}
	return fd, nil
}

// ConfigureLink sets the MTU, adds the addresses (IPv6 ones without DAD)
// and brings the link up, in the calling thread's namespace.
func ConfigureLink(name string, mtu int, addrs ...netip.Prefix) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find link %q: %w", name, err)
	}
	if err := netlink.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set MTU %d on %q: %w", mtu, name, err)
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(l, a); err != nil {
			return fmt.Errorf("add %s to %q: %w", p, name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %q up: %w", name, err)
	}
	return nil
}

// StackOptions tunes NewStack.
type StackOptions struct {
	// TCPBufferMax is the largest TCP send/receive buffer (auto-tuned from
	// 1 MiB). Zero means 8 MiB.
	TCPBufferMax int
}

// NewStack builds the gVisor stack a slirp engine uses, minus forwarders:
// IPv4, IPv6, ARP, TCP, UDP, ICMP; NIC 1 on ep, promiscuous and spoofing;
// the given addresses; default routes through NIC 1.
func NewStack(ep stack.LinkEndpoint, o StackOptions, addrs ...netip.Prefix) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	if err := configureTCP(s, o); err != nil {
		s.Destroy()
		return nil, err
	}
	const nic = 1
	if err := s.CreateNIC(nic, ep); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("create NIC: %s", err)
	}
	if err := s.SetPromiscuousMode(nic, true); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("promiscuous: %s", err)
	}
	if err := s.SetSpoofing(nic, true); err != nil {
		s.Destroy()
		return nil, fmt.Errorf("spoofing: %s", err)
	}
	for _, p := range addrs {
		proto := ipv4.ProtocolNumber
		if p.Addr().Is6() {
			proto = ipv6.ProtocolNumber
		}
		pa := tcpip.ProtocolAddress{
			Protocol: proto,
			AddressWithPrefix: tcpip.AddressWithPrefix{
				Address:   tcpip.AddrFromSlice(p.Addr().AsSlice()),
				PrefixLen: p.Bits(),
			},
		}
		if err := s.AddProtocolAddress(nic, pa, stack.AddressProperties{}); err != nil {
			s.Destroy()
			return nil, fmt.Errorf("add %s: %s", p, err)
		}
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nic},
		{Destination: header.IPv6EmptySubnet, NIC: nic},
	})
	return s, nil
}

func configureTCP(s *stack.Stack, o StackOptions) error {
	maxBuf := o.TCPBufferMax
	if maxBuf == 0 {
		maxBuf = 8 << 20
	}
	sack := tcpip.TCPSACKEnabled(true)
	rcv := tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: maxBuf}
	snd := tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 1 << 20, Max: maxBuf}
	mod := tcpip.TCPModerateReceiveBufferOption(true)
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &rcv, &snd, &mod} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return fmt.Errorf("set TCP option %T: %s", opt, err)
		}
	}
	return nil
}

// SeqpacketPair returns the two ends of a SOCK_SEQPACKET socketpair: a
// stand-in for a BESS connection (or, with virtio-net headers written by
// hand, for a TAP). Both are close-on-exec; the caller closes them.
func SeqpacketPair() (ours, peer int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, fmt.Errorf("socketpair(SOCK_SEQPACKET): %w", err)
	}
	return fds[0], fds[1], nil
}
