// Package link is the engine's link endpoint: Ethernet frames on a TAP fd
// (optionally with the virtio-net header, so that the kernel and gVisor can
// exchange 64 KiB TCP segments instead of MTU-sized ones) or on a BESS
// SOCK_SEQPACKET connection (one frame per datagram).
//
// Unlike gVisor's fdbased endpoint it reads and writes the virtio-net header
// on a TAP (fdbased only does so on sockets), and it delivers every frame
// whatever its destination MAC, because the guest may address the gateway by
// a stale MAC and the engine's NIC is promiscuous anyway.
//
// # Using it in the engine
//
// The TAP should be opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR and
// TUNSETOFFLOAD(TunFCsum|TunFTSO4|TunFTSO6) (by the helper, or here with
// Options.SetOffloads). Then:
//
//	vnet := false
//	if flags, err := link.TapFlags(fd); err == nil { // not for BESS sockets
//		vnet = flags&unix.IFF_VNET_HDR != 0
//	}
//	ep, err := link.New(fd, link.Options{MTU: mtu, Address: gwMAC, VnetHdr: vnet,
//		Offloads: link.TunFCsum | link.TunFTSO4 | link.TunFTSO6,
//		OnClosed: func(err error) { /* link gone: exit */ }})
//	s.CreateNIC(1, ep); s.SetPromiscuousMode(1, true); s.SetSpoofing(1, true)
//
// Nothing else is needed for GSO: the endpoint advertises
// stack.HostGSOSupported and RX checksum offload itself, and gVisor's TCP
// then hands it segments of up to GSOMaxSize bytes.
//
// Shutting down: Stack.Close does not touch NICs; Stack.Wait removes them,
// which detaches and closes the endpoint, then waits for it while holding
// the stack's lock. Wait therefore does not wait for a delivery stuck on
// that lock, so s.Close(); s.Wait() (or s.Destroy()) cannot deadlock.
// Closing the link first (ep.Close(); ep.Wait(); s.Destroy()) stops
// traffic into a stack that is being torn down and is slightly cleaner.
package link

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/internal/stackgrow"
)

// DefaultGSOMaxSize is the largest segment handed to the kernel when
// Options.GSOMaxSize is zero: the 64 KiB a TAP accepts without BIG TCP.
const DefaultGSOMaxSize = 1 << 16

// maxIovecs is UIO_MAXIOV, the most iovecs a writev accepts.
const maxIovecs = 1024

// Options configures an Endpoint.
type Options struct {
	// MTU is the IP MTU of the link (the --mtu value).
	MTU uint32
	// Address is our (gateway) MAC that the guest sees.
	Address tcpip.LinkAddress
	// VnetHdr says the fd carries a 10-byte struct virtio_net_hdr before
	// each frame (a TAP opened with IFF_VNET_HDR). It enables outbound GSO
	// (the kernel accepts GSO frames on any IFF_VNET_HDR TAP) and turns on
	// RX checksum offload (frames may carry partial checksums).
	VnetHdr bool
	// Offloads are the TUNSETOFFLOAD flags (TunFCsum, TunFTSO4, ...) the
	// reader accepts. When SetOffloads is true, New applies them to the fd
	// with TUNSETOFFLOAD; otherwise they are informational (someone else,
	// e.g. the helper, already did it).
	Offloads uint32
	// SetOffloads makes New issue TUNSETOFFLOAD(Offloads) on the fd.
	SetOffloads bool
	// GSOMaxSize is the largest TCP segment gVisor hands us for the kernel
	// to segment (VnetHdr only). Zero means DefaultGSOMaxSize.
	GSOMaxSize uint32
	// DisableGSO keeps outbound segments at the MTU even with VnetHdr.
	DisableGSO bool
	// RXChecksumOffload makes gVisor skip checksum verification of inbound
	// frames even without VnetHdr. With VnetHdr it is always on: frames
	// with VIRTIO_NET_HDR_F_NEEDS_CSUM carry a partial checksum that gVisor
	// would reject.
	RXChecksumOffload bool
	// OnClosed, if set, is called once when the link ends: with nil
	// after Close, with io.EOF when the peer closed the link (BESS client
	// gone), or with the read error (e.g. EBADFD: the TAP was deleted).
	// Attach(nil) is not an end. It runs on the reader goroutine and must
	// not call Wait.
	OnClosed func(err error)
	// BusyPoll is how long the reader keeps polling the link, and the
	// sources of a FrameTaker that is a BusyPoller, after the link ran dry
	// following frames the taker took, before it sleeps (0: never). Each
	// event caught opens a new window. See DefaultBusyPoll.
	BusyPoll time.Duration
}

// Stats counts frames; all fields are cumulative.
type Stats struct {
	RxFrames, RxBytes, RxDropped uint64
	TxFrames, TxBytes, TxErrors  uint64
	RxGSOFrames, TxGSOFrames     uint64
	// RxGSOLenFixed counts GSO frames whose IP length field was repaired.
	RxGSOLenFixed uint64
}

type counters struct {
	rxFrames, rxBytes, rxDropped atomic.Uint64
	txFrames, txBytes, txErrors  atomic.Uint64
	rxGSO, txGSO                 atomic.Uint64
	rxLenFixed                   atomic.Uint64
}

// Endpoint is a stack.LinkEndpoint (and stack.GSOEndpoint) on a TAP fd or a
// BESS SOCK_SEQPACKET connection.
type Endpoint struct {
	f        *os.File
	rc       syscall.RawConn
	vnet     bool
	caps     stack.LinkEndpointCapabilities
	gsoKind  stack.SupportedGSO
	gsoMax   uint32
	onClosed func(error)
	stats    counters

	mu            sync.RWMutex
	dispatcher    stack.NetworkDispatcher
	addr          tcpip.LinkAddress
	mtu           uint32
	onCloseAction func()
	closed        bool
	running       bool      // a reader goroutine is reading
	stopping      bool      // it was asked to stop by Attach(nil)
	readers       int       // reader goroutines not yet returned
	delivering    bool      // a reader is inside DeliverNetworkPacket
	changed       sync.Cond // on e.mu: readers or delivering changed
	closedOnce    sync.Once

	rx rxState // owned by the reader goroutine

	wmu sync.Mutex // serialises writers; guards tx
	tx  txState

	deferred atomic.Int32 // SYN-ACKs being written by deferSYNACK
}

// New wraps fd (a TAP, or a connected SOCK_SEQPACKET socket) in an
// Endpoint. On success the Endpoint owns fd: Close closes it. fd is put in
// non-blocking mode and driven by Go's poller, so Close and Attach(nil)
// interrupt a pending read. For a TAP, New checks that Options.VnetHdr
// matches the fd's IFF_VNET_HDR flag: a mismatch garbles every frame.
func New(fd int, opts Options) (*Endpoint, error) {
	if opts.MTU == 0 {
		return nil, errors.New("link: MTU must not be zero")
	}
	if err := checkVnetFlag(fd, opts.VnetHdr); err != nil {
		return nil, err
	}
	if opts.SetOffloads && opts.Offloads != 0 && !opts.VnetHdr {
		// Without the header the kernel has no way to tell us that a
		// frame is a GSO frame or carries a partial checksum.
		return nil, errors.New("link: TUNSETOFFLOAD without VnetHdr")
	}
	if opts.SetOffloads {
		if err := SetOffload(fd, opts.Offloads); err != nil {
			return nil, err
		}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("link: set fd %d non-blocking: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "link")
	if f == nil {
		return nil, fmt.Errorf("link: invalid fd %d", fd)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("link: raw conn on fd %d: %w", fd, err)
	}
	e := &Endpoint{
		f:        f,
		rc:       rc,
		vnet:     opts.VnetHdr,
		caps:     stack.CapabilityResolutionRequired,
		onClosed: opts.OnClosed,
		addr:     opts.Address,
		mtu:      opts.MTU,
	}
	e.changed.L = &e.mu
	if opts.VnetHdr || opts.RXChecksumOffload {
		e.caps |= stack.CapabilityRXChecksumOffload
	}
	if opts.VnetHdr && !opts.DisableGSO {
		e.gsoKind = stack.HostGSOSupported
		e.gsoMax = opts.GSOMaxSize
		if e.gsoMax == 0 {
			e.gsoMax = DefaultGSOMaxSize
		}
	}
	e.rx.init(opts.VnetHdr)
	e.rx.bp = busyPoll{base: time.Now(), window: opts.BusyPoll}
	e.rx.flush = e.flushTaken
	e.tx.init(opts.VnetHdr, &e.stats)
	return e, nil
}

var (
	_ stack.LinkEndpoint = (*Endpoint)(nil)
	_ stack.GSOEndpoint  = (*Endpoint)(nil)
)

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (e *Endpoint) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = mtu
}

// MaxHeaderLength implements stack.LinkEndpoint: the Ethernet header. The
// virtio-net header is written from a separate buffer.
func (e *Endpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.addr
}

// SetLinkAddress implements stack.LinkEndpoint.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.addr = addr
}

// Capabilities implements stack.LinkEndpoint.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities { return e.caps }

// GSOMaxSize implements stack.GSOEndpoint.
func (e *Endpoint) GSOMaxSize() uint32 { return e.gsoMax }

// SupportedGSO implements stack.GSOEndpoint.
func (e *Endpoint) SupportedGSO() stack.SupportedGSO { return e.gsoKind }

// ARPHardwareType implements stack.LinkEndpoint.
func (e *Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint: it pushes the Ethernet header.
func (e *Endpoint) AddHeader(pkt *stack.PacketBuffer) { AddEthernetHeader(pkt, e) }

// ParseHeader implements stack.LinkEndpoint: it consumes the Ethernet
// header and sets the packet's network protocol.
func (e *Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool { return ParseEthernetHeader(pkt) }

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Attach implements stack.LinkEndpoint. A non-nil dispatcher starts the
// reader goroutine. nil asks it to stop (the fd stays open) without waiting:
// the stack calls Attach(nil) while holding its own lock, which the reader
// may need to finish delivering a packet. Use Wait to wait.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
	if d == nil {
		if e.running {
			e.stopping = true
			e.changed.Broadcast()
			// A past deadline makes the pending (or next) read fail.
			_ = e.f.SetReadDeadline(time.Unix(1, 0))
		}
		return
	}
	if e.closed {
		return
	}
	if e.stopping {
		// The old reader has not stopped yet: let it carry on.
		e.stopping = false
		_ = e.f.SetReadDeadline(time.Time{})
	}
	if !e.running {
		e.running = true
		e.readers++
		go e.reader()
	}
}

func (e *Endpoint) reader() {
	// Delivering a frame into gVisor takes this goroutine to 8 KiB: grow
	// there at once, while the copy is shallow (internal/stackgrow).
	stackgrow.To8K()
	if err := e.readLoop(); err != errDetached {
		e.reportClosed(err)
	}
	e.mu.Lock()
	e.readers--
	e.changed.Broadcast()
	e.mu.Unlock()
}

// Wait implements stack.LinkEndpoint: it waits for the reader goroutine to
// return, except that after Close or Attach(nil) it does not wait for a
// delivery in progress. Stack.Wait calls Wait while holding the stack's
// lock, and a delivery may need that lock (to send a RST, say); the reader
// returns as soon as that delivery does, without reading or delivering
// anything else.
func (e *Endpoint) Wait() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for e.readers > 0 && !((e.closed || e.stopping) && e.delivering) {
		e.changed.Wait()
	}
}

// Close implements stack.LinkEndpoint: it runs the on-close action, stops
// the reader and closes the fd. It does not wait; call Wait for that.
func (e *Endpoint) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	e.changed.Broadcast() // a Wait may now skip a blocked delivery
	action := e.onCloseAction
	e.onCloseAction = nil
	e.mu.Unlock()
	if action != nil {
		action()
	}
	// Closing the os.File wakes a reader parked in the poller with
	// os.ErrClosed; the fd itself is released once no read or write
	// holds it.
	_ = e.f.Close()
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *Endpoint) SetOnCloseAction(action func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onCloseAction = action
}

// Stats returns the endpoint's frame counters.
func (e *Endpoint) Stats() Stats {
	c := &e.stats
	return Stats{
		RxFrames: c.rxFrames.Load(), RxBytes: c.rxBytes.Load(), RxDropped: c.rxDropped.Load(),
		TxFrames: c.txFrames.Load(), TxBytes: c.txBytes.Load(), TxErrors: c.txErrors.Load(),
		RxGSOFrames: c.rxGSO.Load(), TxGSOFrames: c.txGSO.Load(),
		RxGSOLenFixed: c.rxLenFixed.Load(),
	}
}

func (e *Endpoint) reportClosed(err error) {
	if e.onClosed == nil {
		return
	}
	e.closedOnce.Do(func() { e.onClosed(err) })
}

// errDetached ends the reader after Attach(nil); it is not reported.
var errDetached = errors.New("link: detached")

// readLoop reads frames until the fd fails, reaches EOF, is closed or the
// endpoint is detached. It returns nil for the last two.
// yieldEvery is how many frames the reader delivers in a row before it
// lets other goroutines run.
const yieldEvery = 64

func (e *Endpoint) readLoop() error {
	defer e.rx.release()
	for i := 1; ; i++ {
		if i%yieldEvery == 0 {
			// Under a flood the TAP never runs dry and this goroutine
			// never parks; with one P (engine/tune.go) everything else
			// (API requests, relay work, timers) would wait for the
			// runtime's 10 ms preemption: add_hostfwd during a UDP flood
			// took 28 ms (median) instead of 1.
			runtime.Gosched()
		}
		n, err := e.rx.read(e.rc)
		if err == nil && n == 0 {
			err = io.EOF
		}
		if err != nil {
			if stop, res := e.readFailed(err); stop {
				return res
			}
			continue
		}
		e.deliver(n)
	}
}

// readFailed decides, under e.mu so that it cannot race with Attach, whether
// the reader stops after err, and what it reports.
func (e *Endpoint) readFailed(err error) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		// Close makes the read fail with poll's "use of closed file",
		// not os.ErrClosed.
		e.running, e.stopping = false, false
		return true, nil
	case e.stopping:
		e.running, e.stopping = false, false
		return true, errDetached
	case errors.Is(err, os.ErrDeadlineExceeded):
		// Attach(d) cancelled a detach after the deadline fired.
		_ = e.f.SetReadDeadline(time.Time{})
		return false, nil
	case err == io.EOF:
		e.running = false
		return true, io.EOF
	default:
		e.running = false
		return true, fmt.Errorf("link: read: %w", err)
	}
}

// deliver hands the n bytes just read (virtio-net header included) to the
// dispatcher's FrameTaker, if it has one and takes them, else to the stack,
// or drops them.
func (e *Endpoint) deliver(n int) {
	frameLen, ok := e.rx.check(n, &e.stats)
	if !ok || frameLen < header.EthernetMinimumSize {
		e.stats.rxDropped.Add(1)
		return
	}
	d := e.beginDelivery()
	if d == nil {
		e.stats.rxDropped.Add(1)
		return
	}
	defer e.endDelivery()
	e.stats.rxFrames.Add(1)
	e.stats.rxBytes.Add(uint64(frameLen))
	if t, ok := d.(FrameTaker); ok {
		if t.TakeFrame(e.rx.frame(frameLen, e.caps&stack.CapabilityRXChecksumOffload != 0)) {
			// Taken: the read buffers stay ours and are read into again.
			e.rx.taker = t
			return
		}
		if prev := e.rx.taker; prev != nil {
			e.rx.taker = nil
			prev.FlushFrames()
		}
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: e.rx.take(frameLen)})
	defer pkt.DecRef()
	e.ParseHeader(pkt) // cannot fail: the frame holds an Ethernet header
	d.DeliverNetworkPacket(pkt.NetworkProtocolNumber, pkt)
}

// flushTaken has the FrameTaker finish the frames it took (the TAP is
// empty for now), unless the endpoint was closed or detached meanwhile.
func (e *Endpoint) flushTaken() {
	t := e.rx.taker
	e.rx.taker = nil
	if e.beginDelivery() == nil {
		return
	}
	t.FlushFrames()
	e.endDelivery()
}

// beginDelivery returns the dispatcher to deliver to and marks the reader
// as delivering, or returns nil once the endpoint is closed or detached:
// checking and marking under one lock is what lets Wait skip a delivery
// that is blocked on the stack.
func (e *Endpoint) beginDelivery() stack.NetworkDispatcher {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.stopping || e.dispatcher == nil {
		return nil
	}
	e.delivering = true
	return e.dispatcher
}

func (e *Endpoint) endDelivery() {
	e.mu.Lock()
	e.delivering = false
	e.mu.Unlock()
}

// rxViewSizes returns the sizes of the buffers one read scatters into. The
// first holds a whole standard-MTU frame (so headers are contiguous);
// together they hold the largest frame a TAP can produce (a 64 KiB GSO frame,
// or a 65535-byte MTU plus headers). Only the views a frame used go to the
// stack, so small frames do not pin 64 KiB each and no byte is copied.
func rxViewSizes() [rxViews]int { return [rxViews]int{2048, 2048, 4096, 8192, 16384, 32768, 1024} }

const rxViews = 7

type rxState struct {
	vnet  bool
	hdr   [VnetHdrSize]byte
	sizes [rxViews]int
	views [rxViews]*buffer.View
	segs  [rxViews][]byte // Frame.Segs's backing array
	// taker took frames since its last FlushFrames: the next read that
	// finds the fd empty calls flush (Endpoint.flushTaken) before waiting.
	taker FrameTaker
	flush func()
	bp    busyPoll
	iov   []unix.Iovec
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func (r *rxState) init(vnet bool) {
	r.vnet = vnet
	r.sizes = rxViewSizes()
	n := rxViews
	if vnet {
		n++
		r.iov = make([]unix.Iovec, n)
		r.iov[0].Base = &r.hdr[0]
		r.iov[0].SetLen(VnetHdrSize)
	} else {
		r.iov = make([]unix.Iovec, n)
	}
	r.fn = r.readv
}

// fill allocates the views the previous frame took and points the iovecs at
// them.
func (r *rxState) fill() {
	off := 0
	if r.vnet {
		off = 1
	}
	for i, v := range r.views {
		if v != nil {
			continue
		}
		v = buffer.NewViewSize(r.sizes[i])
		r.views[i] = v
		r.iov[i+off].Base = &v.AsSlice()[0]
		r.iov[i+off].SetLen(r.sizes[i])
	}
}

// readv reads one frame. The fd is non-blocking, so it uses RawSyscall:
// Syscall's entersyscall/exitsyscall would let the runtime hand this P to
// another thread while the call runs, and wakes the sysmon thread from its
// idle sleep on the first call after every quiet spell, which in a 1-byte
// request/response exchange is every round trip. Measured on netbench's
// round trip (scripts/netab rr, same runs): on a quiet machine engine CPU
// per round trip 84 -> 58 us, thread switches 5.5 -> 3.9, p50 111 -> 76 us;
// under heavy load within noise; with GOMAXPROCS=1 it is what keeps the
// round trip on one thread.
func (r *rxState) readv(fd uintptr) bool {
	for {
		n, errno := r.readOnce(fd)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if t := r.taker; t != nil {
				// Flush before waiting, and wait within this same
				// RawConn.Read: a frame that comes in meanwhile (the
				// guest's kernel answers a flushed frame inside our
				// writev) is an edge the poller has kept, so the next
				// readv runs only if one did. Returning to flush
				// outside would cost a readv that fails on every wake-up
				// (rc.Read forgets readiness when it starts).
				r.flush()
				if p, ok := t.(BusyPoller); ok && p.WantBusyPoll() && r.spin(fd, p) {
					return true
				}
			}
			r.bp.parked()
			return false
		}
		r.n, r.errno = n, errno
		return true
	}
}

// readOnce is one readv into the read buffers.
func (r *rxState) readOnce(fd uintptr) (int, syscall.Errno) {
	n, _, errno := unix.RawSyscall(unix.SYS_READV, fd, uintptr(unsafe.Pointer(&r.iov[0])), uintptr(len(r.iov)))
	return int(n), errno
}

// read performs one readv, waiting in Go's poller while the fd is empty.
func (r *rxState) read(rc syscall.RawConn) (int, error) {
	r.fill()
	if err := rc.Read(r.fn); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, r.errno
	}
	return r.n, nil
}

// check validates the header of the n bytes just read, repairs GSO
// lengths, and returns the Ethernet frame's length.
func (r *rxState) check(n int, c *counters) (int, bool) {
	frameLen := n
	if r.vnet {
		frameLen -= VnetHdrSize
	}
	head := r.views[0].AsSlice()
	head = head[:min(len(head), max(frameLen, 0))]
	if !r.vnet {
		return frameLen, frameLen >= ethHdrLen
	}
	if n < VnetHdrSize {
		return 0, false
	}
	h, _ := DecodeVnetHdr(r.hdr[:])
	if err := CheckInbound(h, head, frameLen); err != nil {
		return 0, false
	}
	if h.GSOType != VnetGSONone {
		c.rxGSO.Add(1)
		if FixGSOLength(head, frameLen) {
			c.rxLenFixed.Add(1)
		}
	}
	return frameLen, true
}

// frame describes the n frame bytes just read, still in the read buffers.
func (r *rxState) frame(n int, csumValidated bool) Frame {
	segs := r.segs[:0]
	for _, v := range r.views {
		if n <= 0 {
			break
		}
		b := v.AsSlice()
		b = b[:min(len(b), n)]
		n -= len(b)
		segs = append(segs, b)
	}
	return Frame{Segs: segs, ChecksumValidated: csumValidated}
}

// take detaches the views holding the first n frame bytes into a Buffer.
func (r *rxState) take(n int) buffer.Buffer {
	var b buffer.Buffer
	for i, v := range r.views {
		if n <= 0 {
			break
		}
		if v.Size() > n {
			v.CapLength(n)
		}
		n -= v.Size()
		b.Append(v)
		r.views[i] = nil
	}
	return b
}

func (r *rxState) release() {
	for i, v := range r.views {
		if v != nil {
			v.Release()
			r.views[i] = nil
		}
	}
}

type txState struct {
	vnet    bool
	hdr     [VnetHdrSize]byte
	iov     []unix.Iovec
	pkts    []*stack.PacketBuffer
	next    int // index of the next packet to write
	written int // packets written
	errno   syscall.Errno
	blocked bool // EAGAIN seen while not waiting
	wait    bool // on EAGAIN, wait in the poller
	stats   *counters
	fn      func(fd uintptr) bool
	raw     rawTx // WriteFrame's
}

func (t *txState) init(vnet bool, c *counters) {
	t.vnet, t.stats = vnet, c
	t.iov = make([]unix.Iovec, 0, 16)
	t.fn = t.writeAll
}

// writeBlockLimit bounds how long WritePackets waits for a full socket
// (a BESS peer that reads slowly) before dropping the rest of a batch. A
// TAP never blocks: the kernel drops when its queue is full.
const writeBlockLimit = 50 * time.Millisecond

// WritePackets implements stack.LinkWriter: one writev per packet (so each
// is one datagram on SEQPACKET), the virtio-net header from a side buffer,
// the packet's own views as the other iovecs. A packet the kernel refuses
// is counted and skipped; the others are still sent.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	all := pkts.AsSlice()
	if e.deferSYNACK(all) {
		return 1, nil
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	return e.writeLocked(all)
}

// writeLocked writes pkts; e.wmu must be held.
func (e *Endpoint) writeLocked(pkts []*stack.PacketBuffer) (int, tcpip.Error) {
	t := &e.tx
	t.reset(pkts)
	defer t.reset(nil)
	err := e.rc.Write(t.fn)
	if err == nil && t.blocked {
		// Wait in the poller for room, but not forever: a peer that
		// stopped reading must not wedge the stack's goroutine.
		t.blocked, t.wait = false, true
		_ = e.f.SetWriteDeadline(time.Now().Add(writeBlockLimit))
		err = e.rc.Write(t.fn)
		_ = e.f.SetWriteDeadline(time.Time{})
	}
	e.stats.txFrames.Add(uint64(t.written))
	if failed := len(t.pkts) - t.written; failed > 0 {
		e.stats.txErrors.Add(uint64(failed))
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return t.written, &tcpip.ErrWouldBlock{}
	case err != nil:
		return t.written, &tcpip.ErrClosedForSend{}
	case t.errno != 0:
		return t.written, tcpip.TranslateErrno(t.errno)
	}
	return t.written, nil
}

func (t *txState) countSent(pkt *stack.PacketBuffer) {
	t.stats.txBytes.Add(uint64(pkt.Size()))
	if pkt.GSOOptions.Type != stack.GSONone && pkt.Data().Size() > int(pkt.GSOOptions.MSS) {
		t.stats.txGSO.Add(1)
	}
}

func (t *txState) reset(pkts []*stack.PacketBuffer) {
	t.pkts, t.next, t.written, t.errno = pkts, 0, 0, 0
	t.blocked, t.wait = false, false
}

// writeAll runs inside RawConn.Write, resuming at t.next. On EAGAIN it
// either asks the poller to wait (t.wait) or records t.blocked and returns.
// The fd is non-blocking, so the writev is a RawSyscall (see rxState.readv).
// On a TAP the guest's receive path runs inside this writev, so it takes
// microseconds, not more; the P stays with this thread meanwhile, which is
// what we want: the goroutines it would be handed to are the ones waiting
// for this very write.
func (t *txState) writeAll(fd uintptr) bool {
	for t.next < len(t.pkts) {
		iov := t.iovecs(t.pkts[t.next])
		if len(iov) == 0 {
			t.errno = unix.EINVAL // an empty packet: nothing to send
			t.next++
			continue
		}
		_, _, errno := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch errno {
		case 0:
			t.written++
			t.countSent(t.pkts[t.next])
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if t.wait {
				return false
			}
			t.blocked = true
			return true
		default:
			t.errno = errno
		}
		t.next++
	}
	return true
}

// iovecs builds the iovec list for pkt into t.iov.
func (t *txState) iovecs(pkt *stack.PacketBuffer) []unix.Iovec {
	iov := t.iov[:0]
	if t.vnet {
		h := OutboundHdr(pkt)
		h.Encode(t.hdr[:])
		iov = appendIovec(iov, t.hdr[:])
	}
	views, off := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if off >= len(s) {
			off -= len(s)
			continue
		}
		iov = appendIovec(iov, s[off:])
		off = 0
	}
	if len(iov) > maxIovecs {
		iov = t.flatten(pkt)
	}
	t.iov = iov[:0]
	return iov
}

// flatten copies a packet with more views than writev accepts into one
// buffer; gVisor rarely builds such packets.
func (t *txState) flatten(pkt *stack.PacketBuffer) []unix.Iovec {
	v := pkt.ToView()
	data := v.ToSlice()
	v.Release()
	iov := t.iov[:0]
	if t.vnet {
		iov = appendIovec(iov, t.hdr[:])
	}
	return appendIovec(iov, data)
}

func appendIovec(iov []unix.Iovec, b []byte) []unix.Iovec {
	if len(b) == 0 {
		return iov
	}
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return append(iov, v)
}

// OutboundHdr returns the virtio-net header for an outbound packet whose
// link, network and transport headers are set. TCP packets of an endpoint
// using host GSO carry only the pseudo-header checksum (NeedsCsum), so they
// get VIRTIO_NET_HDR_F_NEEDS_CSUM even when they are not segmented.
func OutboundHdr(pkt *stack.PacketBuffer) VnetHdr {
	g := pkt.GSOOptions
	if g.Type == stack.GSONone {
		return VnetHdr{}
	}
	linkLen := len(pkt.LinkHeader().Slice())
	netLen := len(pkt.NetworkHeader().Slice())
	transLen := len(pkt.TransportHeader().Slice())
	return BuildOutboundHdr(g, linkLen, netLen, transLen, pkt.Data().Size())
}

// BuildOutboundHdr computes the virtio-net header for a packet with GSO
// options g, header lengths linkLen/netLen/transLen and dataLen payload
// bytes.
func BuildOutboundHdr(g stack.GSO, linkLen, netLen, transLen, dataLen int) VnetHdr {
	var h VnetHdr
	if g.Type == stack.GSONone {
		return h
	}
	h.HdrLen = uint16(linkLen + netLen + transLen)
	if g.NeedsCsum {
		h.Flags = VnetFlagNeedsCsum
		h.CsumStart = uint16(linkLen + netLen)
		h.CsumOffset = g.CsumOffset
	}
	if g.MSS == 0 || dataLen <= int(g.MSS) {
		return h
	}
	switch g.Type {
	case stack.GSOTCPv4:
		h.GSOType = VnetGSOTCPv4
	case stack.GSOTCPv6:
		h.GSOType = VnetGSOTCPv6
	default:
		return h
	}
	h.GSOSize = g.MSS
	return h
}

// checkVnetFlag fails when fd is a TAP whose IFF_VNET_HDR flag differs from
// want. Sockets (BESS) and fds TUNGETIFF does not understand are not
// checked.
func checkVnetFlag(fd int, want bool) error {
	sock, err := IsSocket(fd)
	if err != nil {
		return fmt.Errorf("link: %w", err)
	}
	if sock {
		return nil
	}
	flags, err := TapFlags(fd)
	if err != nil {
		return nil
	}
	if has := flags&unix.IFF_VNET_HDR != 0; has != want {
		return fmt.Errorf("link: TAP fd %d has IFF_VNET_HDR=%v but Options.VnetHdr=%v", fd, has, want)
	}
	return nil
}
