package link_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/engine/link/linktest"
)

var (
	gwMAC   = tcpip.LinkAddress("\x52\x55\x0a\x00\x02\x02")
	gw4     = netip.MustParsePrefix("10.0.2.2/24")
	guest4  = netip.MustParsePrefix("10.0.2.100/24")
	gw6     = netip.MustParsePrefix("fd00::2/64")
	guest6  = netip.MustParsePrefix("fd00::100/64")
	offAll  = uint32(link.TunFCsum | link.TunFTSO4 | link.TunFTSO6)
	ioLimit = 60 * time.Second
)

// linkKind selects the endpoint under test.
type linkKind int

const (
	kindVnet    linkKind = iota // our endpoint, IFF_VNET_HDR + offloads
	kindPlain                   // our endpoint, plain frames
	kindFdbased                 // gVisor's fdbased, plain frames (baseline)
)

func (k linkKind) String() string {
	return [...]string{"vnethdr", "plain", "fdbased"}[k]
}

// tapEnv is a TAP in a private netns (the "guest" kernel side, at
// 10.0.2.100 and fd00::100) wired to a gVisor stack (at 10.0.2.2, fd00::2).
type tapEnv struct {
	ns *linktest.Netns
	s  *stack.Stack
	ep *link.Endpoint // nil for kindFdbased
}

func newTapEnv(tb testing.TB, kind linkKind, mtu int) *tapEnv {
	tb.Helper()
	ns, err := linktest.NewNetns()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ns.Close)
	var fd int
	err = ns.Do(func() error {
		var err error
		fd, err = linktest.OpenTap(linktest.TapOptions{Name: "tap0", VnetHdr: kind == kindVnet, Offloads: offAll})
		if err != nil {
			return err
		}
		return linktest.ConfigureLink("tap0", mtu, guest4, guest6)
	})
	if err != nil {
		tb.Fatal(err)
	}
	env := &tapEnv{ns: ns}
	var lep stack.LinkEndpoint
	switch kind {
	case kindFdbased:
		lep, err = fdbased.New(&fdbased.Options{
			FDs: []int{fd}, MTU: uint32(mtu), EthernetHeader: true, Address: gwMAC,
			RXChecksumOffload: true,
		})
	default:
		env.ep, err = link.New(fd, link.Options{
			MTU: uint32(mtu), Address: gwMAC, VnetHdr: kind == kindVnet, Offloads: offAll,
		})
		lep = env.ep
	}
	if err != nil {
		tb.Fatal(err)
	}
	env.s, err = linktest.NewStack(lep, linktest.StackOptions{}, gw4, gw6)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		// Stop the link first: Stack.Close does not detach NICs, and
		// RemoveNIC would wait for the reader under the stack's lock.
		if env.ep != nil {
			env.ep.Close()
			env.ep.Wait()
		} else {
			env.s.RemoveNIC(1)
			unix.Close(fd)
		}
		env.s.Destroy()
	})
	return env
}

// dialKernel connects from the netns (kernel TCP) to addr.
func (env *tapEnv) dialKernel(addr string) (net.Conn, error) {
	var c net.Conn
	err := env.ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, 10*time.Second)
		return err
	})
	return c, err
}

// listenKernel listens in the netns.
func (env *tapEnv) listenKernel(addr string) (net.Listener, error) {
	var l net.Listener
	err := env.ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

func gvisorAddr(p netip.Prefix, port uint16) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv4.ProtocolNumber
	if p.Addr().Is6() {
		proto = ipv6.ProtocolNumber
	}
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFromSlice(p.Addr().AsSlice()), Port: port}, proto
}

// sendStream writes n pseudo-random bytes (seeded) to w and returns their
// SHA-256.
func sendStream(w io.Writer, n int64, seed uint64) ([32]byte, error) {
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for n > 0 {
		chunk := buf[:min(int64(len(buf)), n)]
		rng.Read(chunk)
		h.Write(chunk)
		if _, err := w.Write(chunk); err != nil {
			return [32]byte{}, fmt.Errorf("write: %w", err)
		}
		n -= int64(len(chunk))
	}
	return [32]byte(h.Sum(nil)), nil
}

type recvResult struct {
	n   int64
	sum [32]byte
	err error
}

func recvStream(r io.Reader) recvResult {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r, make([]byte, 256<<10))
	return recvResult{n: n, sum: [32]byte(h.Sum(nil)), err: err}
}

type closeWriter interface{ CloseWrite() error }

// transfer sends size bytes over the pair (from writes, to reads) and checks
// that what arrived is what was sent.
func transfer(t *testing.T, from, to net.Conn, size int64) {
	t.Helper()
	deadline := time.Now().Add(ioLimit)
	from.SetDeadline(deadline)
	to.SetDeadline(deadline)
	res := make(chan recvResult, 1)
	go func() { res <- recvStream(to) }()
	sum, err := sendStream(from, size, uint64(size))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := from.(closeWriter).CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	got := <-res
	if got.err != nil {
		t.Fatalf("receive: %v", got.err)
	}
	if got.n != size || !bytes.Equal(got.sum[:], sum[:]) {
		t.Fatalf("received %d bytes (sha256 %x), sent %d (sha256 %x)", got.n, got.sum[:8], size, sum[:8])
	}
}

// kernelToGvisor: the netns kernel connects to a gVisor listener and sends.
func kernelToGvisor(t *testing.T, env *tapEnv, gw netip.Prefix, size int64) {
	laddr, proto := gvisorAddr(gw, 5001)
	ln, err := gonet.ListenTCP(env.s, laddr, proto)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acc <- nil
			return
		}
		acc <- c
	}()
	kc, err := env.dialKernel(netip.AddrPortFrom(gw.Addr(), 5001).String())
	if err != nil {
		t.Fatalf("kernel dial: %v", err)
	}
	defer kc.Close()
	gc := <-acc
	if gc == nil {
		t.Fatal("accept failed")
	}
	defer gc.Close()
	transfer(t, kc, gc, size)
}

// gvisorToKernel: gVisor connects to a kernel listener in the netns and sends.
func gvisorToKernel(t *testing.T, env *tapEnv, guest netip.Prefix, size int64) {
	kl, err := env.listenKernel(netip.AddrPortFrom(guest.Addr(), 5002).String())
	if err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	raddr, proto := gvisorAddr(guest, 5002)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gc, err := gonet.DialContextTCP(ctx, env.s, raddr, proto)
	if err != nil {
		t.Fatalf("gVisor dial: %v", err)
	}
	defer gc.Close()
	kc, err := kl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	transfer(t, gc, kc, size)
}

// TestTapEndToEnd moves 64 MiB each way over a real TAP, for IPv4 and
// IPv6, at MTU 1500 and 65520, with and without the virtio-net header. With
// the header, GSO frames must have been used in both directions.
func TestTapEndToEnd(t *testing.T) {
	const size = 64 << 20
	for _, kind := range []linkKind{kindVnet, kindPlain} {
		for _, mtu := range []int{1500, 65520} {
			t.Run(fmt.Sprintf("%v/mtu%d", kind, mtu), func(t *testing.T) {
				env := newTapEnv(t, kind, mtu)
				for _, fam := range []struct {
					name      string
					gw, guest netip.Prefix
				}{{"ipv4", gw4, guest4}, {"ipv6", gw6, guest6}} {
					t.Run(fam.name+"/kernel-to-gvisor", func(t *testing.T) {
						before := env.ep.Stats()
						kernelToGvisor(t, env, fam.gw, size)
						st := env.ep.Stats()
						t.Logf("rx frames %d (gso %d, length fixed %d), dropped %d", st.RxFrames-before.RxFrames,
							st.RxGSOFrames-before.RxGSOFrames, st.RxGSOLenFixed-before.RxGSOLenFixed, st.RxDropped-before.RxDropped)
						if st.RxDropped != before.RxDropped {
							t.Errorf("%d frames dropped", st.RxDropped-before.RxDropped)
						}
						if kind == kindVnet && mtu == 1500 && st.RxGSOFrames == before.RxGSOFrames {
							t.Error("no GSO frame received from the kernel")
						}
					})
					t.Run(fam.name+"/gvisor-to-kernel", func(t *testing.T) {
						before := env.ep.Stats()
						gvisorToKernel(t, env, fam.guest, size)
						st := env.ep.Stats()
						t.Logf("tx frames %d (gso %d), errors %d", st.TxFrames-before.TxFrames, st.TxGSOFrames-before.TxGSOFrames, st.TxErrors-before.TxErrors)
						if st.TxErrors != before.TxErrors {
							t.Errorf("%d write errors", st.TxErrors-before.TxErrors)
						}
						if kind == kindVnet && mtu == 1500 && st.TxGSOFrames == before.TxGSOFrames {
							t.Error("no GSO frame sent to the kernel")
						}
					})
				}
			})
		}
	}
}

// TestStackTeardownUnderLoad tears the stack down the way the engine does
// (Stack.Close then Stack.Wait, with the link still attached) while the
// kernel is streaming into it. Stack.Wait removes the NIC and waits for the
// link endpoint while holding the stack's lock, and the reader may be in the
// middle of a delivery that needs that lock (to answer with a RST): Wait
// must not deadlock on it.
func TestStackTeardownUnderLoad(t *testing.T) {
	for _, kind := range []linkKind{kindVnet, kindPlain} {
		t.Run(kind.String(), func(t *testing.T) {
			env := newTapEnv(t, kind, 1500)
			laddr, proto := gvisorAddr(gw4, 5003)
			ln, err := gonet.ListenTCP(env.s, laddr, proto)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			kc, gc := connectPair(t, ln, func() (net.Conn, error) { return env.dialKernel("10.0.2.2:5003") })
			defer kc.Close()
			defer gc.Close()
			deadline := time.Now().Add(ioLimit)
			kc.SetDeadline(deadline)
			gc.SetDeadline(deadline)
			go io.Copy(io.Discard, gc)
			go func() {
				buf := make([]byte, 1<<20)
				for {
					if _, err := kc.Write(buf); err != nil {
						return
					}
				}
			}()
			time.Sleep(300 * time.Millisecond)
			done := make(chan struct{})
			go func() {
				env.s.Close()
				env.s.Wait()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Stack.Close/Wait deadlocked with the link endpoint")
			}
			kc.Close()
		})
	}
}
