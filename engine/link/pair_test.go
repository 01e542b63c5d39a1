package link_test

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
)

var (
	guestMAC   = tcpip.LinkAddress("\x02\x00\x00\x00\x00\x64")
	otherMAC   = tcpip.LinkAddress("\x02\x99\x99\x99\x99\x99")
	gwIP       = tcpip.AddrFrom4([4]byte{10, 0, 2, 2})
	guestIP    = tcpip.AddrFrom4([4]byte{10, 0, 2, 100})
	broadcastM = tcpip.LinkAddress("\xff\xff\xff\xff\xff\xff")
)

// pairEnv is an endpoint on one end of a SOCK_SEQPACKET socketpair (a BESS
// connection, or a stand-in for a TAP when vnet is set), a gVisor stack on
// it, and the other end for the test to play the guest.
type pairEnv struct {
	peer   *os.File
	vnet   bool
	ep     *link.Endpoint
	s      *stack.Stack
	closed chan error
}

func newPairEnv(t testing.TB, opts link.Options) *pairEnv {
	t.Helper()
	ours, peer, err := linktest.SeqpacketPair()
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(peer, true); err != nil {
		t.Fatal(err)
	}
	env := &pairEnv{peer: os.NewFile(uintptr(peer), "peer"), vnet: opts.VnetHdr, closed: make(chan error, 1)}
	t.Cleanup(func() { env.peer.Close() })
	if opts.MTU == 0 {
		opts.MTU = 1500
	}
	opts.Address = gwMAC
	opts.OnClosed = func(err error) { env.closed <- err }
	env.ep, err = link.New(ours, opts)
	if err != nil {
		t.Fatal(err)
	}
	env.s, err = linktest.NewStack(env.ep, linktest.StackOptions{}, gw4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		env.ep.Close()
		env.ep.Wait()
		env.s.Destroy()
	})
	return env
}

// send writes one frame (with a virtio-net header when the link has them).
func (env *pairEnv) send(t testing.TB, h link.VnetHdr, frame []byte) {
	t.Helper()
	var b []byte
	if env.vnet {
		b = make([]byte, link.VnetHdrSize, link.VnetHdrSize+len(frame))
		h.Encode(b)
	}
	b = append(b, frame...)
	if _, err := env.peer.Write(b); err != nil {
		t.Fatalf("write frame: %v", err)
	}
}

// recv returns the next frame the endpoint wrote, its header, or an error
// after the deadline.
func (env *pairEnv) recv(deadline time.Time) (link.VnetHdr, []byte, error) {
	buf := make([]byte, 70000)
	env.peer.SetReadDeadline(deadline)
	n, err := env.peer.Read(buf)
	if err != nil {
		return link.VnetHdr{}, nil, err
	}
	if !env.vnet {
		return link.VnetHdr{}, buf[:n], nil
	}
	h, err := link.DecodeVnetHdr(buf[:n])
	if err != nil {
		return h, nil, err
	}
	return h, buf[link.VnetHdrSize:n], nil
}

// await reads frames until match accepts one, or fails after d.
func (env *pairEnv) await(t testing.TB, d time.Duration, match func(link.VnetHdr, []byte) bool) ([]byte, bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		h, f, err := env.recv(deadline)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, false
		}
		if err != nil {
			t.Fatalf("read frame: %v", err)
		}
		if match(h, f) {
			return f, true
		}
	}
}

func arpRequest(srcMAC, dstMAC tcpip.LinkAddress, sender, target tcpip.Address) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: srcMAC, DstAddr: dstMAC, Type: header.ARPProtocolNumber})
	a := header.ARP(b[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), srcMAC)
	copy(a.ProtocolAddressSender(), sender.AsSlice())
	copy(a.ProtocolAddressTarget(), target.AsSlice())
	return b
}

func ipv4Packet(dstMAC tcpip.LinkAddress, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: guestMAC, DstAddr: dstMAC, Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + len(payload)), TTL: 64, Protocol: uint8(proto),
		SrcAddr: guestIP, DstAddr: gwIP,
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	copy(b[header.EthernetMinimumSize+header.IPv4MinimumSize:], payload)
	return b
}

func icmpEcho(id uint16) []byte {
	b := make([]byte, header.ICMPv4MinimumSize+8)
	ic := header.ICMPv4(b)
	ic.SetType(header.ICMPv4Echo)
	ic.SetIdent(id)
	ic.SetSequence(1)
	copy(b[header.ICMPv4MinimumSize:], "slirpgo!")
	ic.SetChecksum(^checksum.Checksum(b, 0))
	return b
}

func isARPReply(f []byte) bool {
	if len(f) < header.EthernetMinimumSize+header.ARPSize || header.Ethernet(f).Type() != header.ARPProtocolNumber {
		return false
	}
	return header.ARP(f[header.EthernetMinimumSize:]).Op() == header.ARPReply
}

func ipv4Payload(f []byte, proto tcpip.TransportProtocolNumber) []byte {
	if len(f) < header.EthernetMinimumSize+header.IPv4MinimumSize || header.Ethernet(f).Type() != header.IPv4ProtocolNumber {
		return nil
	}
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != proto {
		return nil
	}
	return ip.Payload()
}

// TestFramesBothDirections: ARP and ICMP through the endpoint, plain (BESS)
// and with virtio-net headers, including frames sent to a MAC that is not
// the gateway's (the guest may hold a stale one).
func TestFramesBothDirections(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		t.Run(map[bool]string{false: "bess", true: "vnethdr"}[vnet], func(t *testing.T) {
			env := newPairEnv(t, link.Options{VnetHdr: vnet})
			env.send(t, link.VnetHdr{}, arpRequest(guestMAC, broadcastM, guestIP, gwIP))
			f, ok := env.await(t, 5*time.Second, func(_ link.VnetHdr, f []byte) bool { return isARPReply(f) })
			if !ok {
				t.Fatal("no ARP reply")
			}
			if len(f) != header.EthernetMinimumSize+header.ARPSize {
				t.Errorf("ARP reply is %d bytes: not one frame per datagram", len(f))
			}
			if got := tcpip.LinkAddress(header.ARP(f[header.EthernetMinimumSize:]).HardwareAddressSender()); got != gwMAC {
				t.Errorf("ARP reply says %v, want %v", got, gwMAC)
			}
			for i, dst := range []tcpip.LinkAddress{gwMAC, otherMAC} {
				id := uint16(100 + i)
				env.send(t, link.VnetHdr{}, ipv4Packet(dst, header.ICMPv4ProtocolNumber, icmpEcho(id)))
				_, ok := env.await(t, 5*time.Second, func(h link.VnetHdr, f []byte) bool {
					p := ipv4Payload(f, header.ICMPv4ProtocolNumber)
					return len(p) >= header.ICMPv4MinimumSize && header.ICMPv4(p).Type() == header.ICMPv4EchoReply && header.ICMPv4(p).Ident() == id
				})
				if !ok {
					t.Errorf("no echo reply to a frame for MAC %v", dst)
				}
			}
			// The writer counts a frame after its writev returns, which
			// can be after the peer has read it: allow it a moment.
			deadline := time.Now().Add(time.Second)
			st := env.ep.Stats()
			for (st.RxFrames < 3 || st.TxFrames < 3) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
				st = env.ep.Stats()
			}
			if st.RxFrames < 3 || st.TxFrames < 3 {
				t.Errorf("stats %+v: want at least 3 frames each way", st)
			}
		})
	}
}

func tcpSegment(srcPort, dstPort uint16, seq, ack uint32, flags header.TCPFlags, payload []byte, partial bool) []byte {
	b := make([]byte, header.TCPMinimumSize+len(payload))
	tcp := header.TCP(b)
	tcp.Encode(&header.TCPFields{
		SrcPort: srcPort, DstPort: dstPort, SeqNum: seq, AckNum: ack,
		DataOffset: header.TCPMinimumSize, Flags: flags, WindowSize: 65535,
	})
	copy(b[header.TCPMinimumSize:], payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, guestIP, gwIP, uint16(len(b)))
	if partial {
		// CHECKSUM_PARTIAL: only the pseudo-header sum, as the kernel
		// hands it over with VIRTIO_NET_HDR_F_NEEDS_CSUM.
		tcp.SetChecksum(xsum)
	} else {
		tcp.SetChecksum(^checksum.Checksum(b, xsum))
	}
	return b
}

const csumStart = header.EthernetMinimumSize + header.IPv4MinimumSize

var needsCsum = link.VnetHdr{Flags: link.VnetFlagNeedsCsum, CsumStart: csumStart, CsumOffset: 16}

func isSynAck(f []byte) (header.TCP, bool) {
	p := ipv4Payload(f, header.TCPProtocolNumber)
	if len(p) < header.TCPMinimumSize {
		return nil, false
	}
	tcp := header.TCP(p)
	return tcp, tcp.Flags() == header.TCPFlagSyn|header.TCPFlagAck
}

// TestNeedsCsumSYN: a SYN with only a partial checksum and NEEDS_CSUM is
// accepted by the stack behind a vnet endpoint (RX checksum offload), and
// the same SYN is dropped by a plain link, which must verify checksums.
func TestNeedsCsumSYN(t *testing.T) {
	for _, vnet := range []bool{true, false} {
		t.Run(map[bool]string{false: "plain-drops", true: "vnethdr-accepts"}[vnet], func(t *testing.T) {
			env := newPairEnv(t, link.Options{VnetHdr: vnet})
			ln, err := gonet.ListenTCP(env.s, tcpip.FullAddress{NIC: 1, Addr: gwIP, Port: 80}, ipv4.ProtocolNumber)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			env.send(t, link.VnetHdr{}, arpRequest(guestMAC, broadcastM, guestIP, gwIP))
			syn := tcpSegment(40000, 80, 1000, 0, header.TCPFlagSyn, nil, true)
			env.send(t, needsCsum, ipv4Packet(gwMAC, header.TCPProtocolNumber, syn))
			wait := 5 * time.Second
			if !vnet {
				wait = 500 * time.Millisecond
			}
			f, ok := env.await(t, wait, func(_ link.VnetHdr, f []byte) bool { _, ok := isSynAck(f); return ok })
			if ok != vnet {
				t.Fatalf("SYN-ACK received = %v, want %v", ok, vnet)
			}
			if ok {
				if tcp, _ := isSynAck(f); tcp.AckNumber() != 1001 {
					t.Errorf("SYN-ACK acks %d, want 1001", tcp.AckNumber())
				}
			}
		})
	}
}

// TestInboundGSOSegment: after a handshake, a TCP GSO frame carrying 4000
// bytes (more than the 1500 MTU), with a partial checksum and an IPv4
// total length of 0 (as a BIG TCP frame has), is delivered as one segment.
func TestInboundGSOSegment(t *testing.T) {
	env := newPairEnv(t, link.Options{VnetHdr: true})
	ln, err := gonet.ListenTCP(env.s, tcpip.FullAddress{NIC: 1, Addr: gwIP, Port: 80}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	env.send(t, link.VnetHdr{}, arpRequest(guestMAC, broadcastM, guestIP, gwIP))
	env.send(t, needsCsum, ipv4Packet(gwMAC, header.TCPProtocolNumber, tcpSegment(40001, 80, 5000, 0, header.TCPFlagSyn, nil, true)))
	f, ok := env.await(t, 5*time.Second, func(_ link.VnetHdr, f []byte) bool { _, ok := isSynAck(f); return ok })
	if !ok {
		t.Fatal("no SYN-ACK")
	}
	synAck, _ := isSynAck(f)
	ack := synAck.SequenceNumber() + 1
	env.send(t, needsCsum, ipv4Packet(gwMAC, header.TCPProtocolNumber, tcpSegment(40001, 80, 5001, ack, header.TCPFlagAck, nil, true)))
	c := <-accepted
	if c == nil {
		t.Fatal("accept failed")
	}
	defer c.Close()

	payload := make([]byte, 4000)
	for i := range payload {
		payload[i] = byte(i % 251)
	}
	frame := ipv4Packet(gwMAC, header.TCPProtocolNumber, tcpSegment(40001, 80, 5001, ack, header.TCPFlagAck|header.TCPFlagPsh, payload, true))
	ip := header.IPv4(frame[header.EthernetMinimumSize:])
	ip.SetTotalLength(0)
	ip.SetChecksum(0)
	ip.SetChecksum(^ip.CalculateChecksum())
	env.send(t, link.VnetHdr{
		Flags: link.VnetFlagNeedsCsum, GSOType: link.VnetGSOTCPv4, GSOSize: 1460,
		HdrLen: csumStart + header.TCPMinimumSize, CsumStart: csumStart, CsumOffset: 16,
	}, frame)

	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v (stats %+v)", err, env.ep.Stats())
	}
	for i := range got {
		if got[i] != payload[i] {
			t.Fatalf("byte %d = %d, want %d", i, got[i], payload[i])
		}
	}
	st := env.ep.Stats()
	if st.RxGSOFrames != 1 || st.RxGSOLenFixed != 1 {
		t.Errorf("stats %+v: want one GSO frame, length fixed", st)
	}
	// The ACK for the whole 4000 bytes shows it was taken as one segment.
	if _, ok := env.await(t, 5*time.Second, func(_ link.VnetHdr, f []byte) bool {
		p := ipv4Payload(f, header.TCPProtocolNumber)
		return len(p) >= header.TCPMinimumSize && header.TCP(p).AckNumber() == 5001+uint32(len(payload))
	}); !ok {
		t.Error("no ACK covering the GSO segment")
	}
}

// TestMalformedFramesDropped: runts, bad GSO types and bad checksum ranges
// are counted as dropped and the link keeps working.
func TestMalformedFramesDropped(t *testing.T) {
	env := newPairEnv(t, link.Options{VnetHdr: true})
	bad := []struct {
		h     link.VnetHdr
		frame []byte
	}{
		{link.VnetHdr{}, []byte{1, 2, 3}},
		{link.VnetHdr{GSOType: link.VnetGSOUDPL4}, arpRequest(guestMAC, broadcastM, guestIP, gwIP)},
		{link.VnetHdr{GSOType: link.VnetGSOTCPv6}, arpRequest(guestMAC, broadcastM, guestIP, gwIP)},
		{link.VnetHdr{Flags: link.VnetFlagNeedsCsum, CsumStart: 1000}, arpRequest(guestMAC, broadcastM, guestIP, gwIP)},
	}
	for _, b := range bad {
		env.send(t, b.h, b.frame)
	}
	if _, err := env.peer.Write([]byte{1, 2, 3}); err != nil { // shorter than the vnet header
		t.Fatal(err)
	}
	env.send(t, link.VnetHdr{}, arpRequest(guestMAC, broadcastM, guestIP, gwIP))
	if _, ok := env.await(t, 5*time.Second, func(_ link.VnetHdr, f []byte) bool { return isARPReply(f) }); !ok {
		t.Fatal("link dead after malformed frames")
	}
	if st := env.ep.Stats(); st.RxDropped != uint64(len(bad)+1) || st.RxFrames != 1 {
		t.Errorf("stats %+v: want %d dropped, 1 delivered", st, len(bad)+1)
	}
}

// TestPeerEOF: when the BESS client goes away, the reader stops and
// OnClosed reports io.EOF.
func TestPeerEOF(t *testing.T) {
	env := newPairEnv(t, link.Options{})
	env.peer.Close()
	select {
	case err := <-env.closed:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("OnClosed(%v), want io.EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnClosed not called after peer EOF")
	}
	env.ep.Wait()
}

// TestCloseStopsReader: Close interrupts a pending read, OnClosed gets nil,
// Wait returns, and writes afterwards fail instead of hitting a reused fd.
func TestCloseStopsReader(t *testing.T) {
	env := newPairEnv(t, link.Options{})
	var once sync.Once
	action := make(chan struct{})
	env.ep.SetOnCloseAction(func() { once.Do(func() { close(action) }) })
	env.ep.Close()
	select {
	case err := <-env.closed:
		if err != nil {
			t.Fatalf("OnClosed(%v), want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader did not stop on Close")
	}
	env.ep.Wait()
	select {
	case <-action:
	default:
		t.Error("on-close action not run")
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 14})
	env.ep.AddHeader(pkt)
	var l stack.PacketBufferList
	l.PushBack(pkt)
	if n, err := env.ep.WritePackets(l); n != 0 || err == nil {
		t.Errorf("WritePackets after Close = %d, %v; want an error", n, err)
	}
	l.DecRef()
}

// TestDetachReattach: Attach(nil) stops the reader without closing the fd;
// attaching again resumes delivery.
func TestDetachReattach(t *testing.T) {
	env := newPairEnv(t, link.Options{})
	d := &countingDispatcher{}
	env.ep.Attach(nil)
	if env.ep.IsAttached() {
		t.Fatal("still attached")
	}
	env.ep.Wait() // the reader stops
	select {
	case err := <-env.closed:
		t.Fatalf("OnClosed(%v) on detach", err)
	default:
	}
	env.send(t, link.VnetHdr{}, arpRequest(guestMAC, broadcastM, guestIP, gwIP))
	env.ep.Attach(d)
	deadline := time.Now().Add(5 * time.Second)
	for d.count() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d.count() != 1 {
		t.Fatalf("re-attached dispatcher got %d frames, want 1", d.count())
	}
	env.ep.Attach(nil)
}

type countingDispatcher struct {
	mu sync.Mutex
	n  int
}

func (d *countingDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.mu.Lock()
	d.n++
	d.mu.Unlock()
}

func (d *countingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (d *countingDispatcher) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// TestTapHelpers: TapFlags reads back IFF_VNET_HDR, SetOffload works on a
// TAP and fails on a socket, IsSocket tells them apart.
func TestTapHelpers(t *testing.T) {
	ns, err := linktest.NewNetns()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	for _, vnet := range []bool{false, true} {
		var fd int
		if err := ns.Do(func() error {
			var err error
			fd, err = linktest.OpenTap(linktest.TapOptions{Name: "tapx", VnetHdr: vnet})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		flags, err := link.TapFlags(fd)
		if err != nil {
			t.Fatal(err)
		}
		if got := flags&unix.IFF_VNET_HDR != 0; got != vnet || flags&unix.IFF_TAP == 0 {
			t.Errorf("TapFlags = %#x, want TAP and vnet=%v", flags, vnet)
		}
		if sock, err := link.IsSocket(fd); err != nil || sock {
			t.Errorf("IsSocket(tap) = %v, %v", sock, err)
		}
		if vnet {
			if err := link.SetOffload(fd, link.TunFCsum|link.TunFTSO4|link.TunFTSO6); err != nil {
				t.Error(err)
			}
		}
		// A header flag that disagrees with the TAP's would garble frames.
		if _, err := link.New(fd, link.Options{MTU: 1500, VnetHdr: !vnet}); err == nil {
			t.Errorf("New(VnetHdr=%v) on a TAP with IFF_VNET_HDR=%v succeeded", !vnet, vnet)
		}
		unix.Close(fd)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if sock, err := link.IsSocket(fds[0]); err != nil || !sock {
		t.Errorf("IsSocket(socket) = %v, %v", sock, err)
	}
	if err := link.SetOffload(fds[0], link.TunFCsum); err == nil {
		t.Error("SetOffload on a socket succeeded")
	}
	if _, err := link.New(fds[0], link.Options{}); err == nil {
		t.Error("New with MTU 0 succeeded")
	}
	if _, err := link.New(fds[0], link.Options{MTU: 1500, SetOffloads: true, Offloads: link.TunFTSO4}); err == nil {
		t.Error("New with offloads but no VnetHdr succeeded")
	}
}

// TestSeqpacketBackpressure: a burst larger than a SOCK_SEQPACKET queue
// (net.unix.max_dgram_qlen datagrams) is not dropped while the peer keeps
// reading: WritePackets waits for room, one datagram per packet.
func TestSeqpacketBackpressure(t *testing.T) {
	env := newPairEnv(t, link.Options{})
	env.ep.Attach(nil) // keep the stack from answering our frames
	env.ep.Wait()
	const count, size = 600, 1000
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 70000)
		env.peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		n := 0
		for n < count {
			m, err := env.peer.Read(buf)
			if err != nil || m != header.EthernetMinimumSize+size {
				break
			}
			n++
		}
		got <- n
	}()
	var l stack.PacketBufferList
	for range count {
		pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{
			ReserveHeaderBytes: header.EthernetMinimumSize,
			Payload:            buffer.MakeWithData(make([]byte, size)),
		})
		pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
		env.ep.AddHeader(pkt)
		l.PushBack(pkt)
	}
	n, err := env.ep.WritePackets(l)
	l.DecRef()
	if n != count || err != nil {
		t.Fatalf("WritePackets = %d, %v; want %d, nil", n, err, count)
	}
	if r := <-got; r != count {
		t.Fatalf("peer read %d datagrams, want %d", r, count)
	}
}

// FuzzEndpoint writes arbitrary bytes (a virtio-net header and whatever
// follows) into a vnet endpoint with a real stack behind it, then checks
// the link still answers a ping: no input may panic the reader or the
// stack, or wedge the link.
func FuzzEndpoint(f *testing.F) {
	hdr := func(h link.VnetHdr, frame []byte) []byte {
		b := make([]byte, link.VnetHdrSize, link.VnetHdrSize+len(frame))
		h.Encode(b)
		return append(b, frame...)
	}
	syn := ipv4Packet(gwMAC, header.TCPProtocolNumber, tcpSegment(40000, 80, 1, 0, header.TCPFlagSyn, nil, true))
	f.Add(hdr(needsCsum, syn))
	f.Add(hdr(link.VnetHdr{GSOType: link.VnetGSOTCPv4, GSOSize: 100, Flags: link.VnetFlagNeedsCsum, CsumStart: csumStart, CsumOffset: 16}, syn))
	f.Add(hdr(link.VnetHdr{}, arpRequest(guestMAC, broadcastM, guestIP, gwIP)))
	f.Add(hdr(link.VnetHdr{}, ipv4Packet(otherMAC, header.ICMPv4ProtocolNumber, icmpEcho(7))))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0})
	env := newPairEnv(f, link.Options{VnetHdr: true})
	env.send(f, link.VnetHdr{}, arpRequest(guestMAC, broadcastM, guestIP, gwIP))
	var id uint16
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 0 {
			if _, err := env.peer.Write(in); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
		id++
		want := id
		env.send(t, link.VnetHdr{}, ipv4Packet(gwMAC, header.ICMPv4ProtocolNumber, icmpEcho(want)))
		if _, ok := env.await(t, 5*time.Second, func(_ link.VnetHdr, fr []byte) bool {
			p := ipv4Payload(fr, header.ICMPv4ProtocolNumber)
			return len(p) >= header.ICMPv4MinimumSize && header.ICMPv4(p).Type() == header.ICMPv4EchoReply && header.ICMPv4(p).Ident() == want
		}); !ok {
			t.Fatalf("no echo reply after input %x", in)
		}
	})
}
