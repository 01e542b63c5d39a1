package engine

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// The TCP fast path: a connection the guest opens to the outside is served
// by the engine's own guest-side TCP instead of a gVisor endpoint relayed
// to the host socket. It maps the guest's byte stream onto the host
// socket's: guest data goes from the link's read buffers straight into the
// host socket (and is acknowledged once the host socket took it), host data
// is read into a per-connection buffer and sent to the guest as one frame
// (a GSO frame on a TAP with the virtio-net header) that the buffer keeps
// until the guest acknowledges it. That is the work the C slirp4netns and
// pasta do per segment; through gVisor each segment also crossed its
// network and transport layers, its receive and send queues, a waiter
// notification and a relay goroutine. Measured (scripts/netab, see
// docs/benchmarks.md): engine CPU per 1-byte round trip 92.5 -> 60 us,
// connections/s +30-40 %, guest->host throughput the same at less CPU.
//
// What it needs from TCP is little, because the guest is at the other end
// of a TAP: frames from the guest arrive in order, and are lost on the way
// to us only when the guest's TAP queue overflows or the guest forwards
// for others. Data after such a gap is kept (keepOutOfOrder) and answered
// with an immediate duplicate ACK, with SACK blocks if the guest offered
// SACK: with 1 % of the guest's segments lost that keeps a transfer at
// gVisor's speed (6-8 Gbit/s) where dropping it left 5-30 Mbit/s.
// Timestamps are not offered. Frames to the guest can be dropped (its
// backlog is full): they are retransmitted go-back-N from the first
// unacknowledged byte after three duplicate ACKs or a retransmission
// timeout. The window announced to
// the guest is what the engine can hold of its data that the host socket
// has not taken yet (fastRcvCap), so backpressure from a slow host reader
// reaches the guest as a shrinking window, never as lost data.
//
// It handles only what gVisor's forwarder would have handed to tcpNAT: a
// SYN from a guest address that no gVisor endpoint (a listener of the
// engine's services) claims, passing the checks of the guard and the
// checksums, and the connections of port forwards, which it opens towards
// the guest itself (tcpfastfwd.go). Everything else (segments of unknown
// connections, malformed frames) goes to gVisor as before, so its resets
// and counters stay as they were. SYN handling, limits and the host dial
// are tcpNAT's (acquire, dial).

// TCPFastPathEnv set to "0" in slirp4netns's environment turns the fast
// path off (WithoutTCPFastPath): a diagnostic switch, for comparisons and
// for ruling the fast path out when a connection misbehaves.
const TCPFastPathEnv = "SLIRP4NETNS_GO_TCP_FASTPATH"

// Sizes and times of the fast path.
const (
	// fastRcvCap bounds the guest data held for a host socket that does
	// not take it: the window announced to the guest.
	fastRcvCap = 512 << 10
	// fastRcvWS is the window scale announced (when the guest offers
	// scaling): 512 KiB needs a shift of 4.
	fastRcvWS = 4
	// fastSynWnd is the window of our SYN and SYN-ACK (never scaled).
	fastSynWnd = min(fastRcvCap, 0xffff)
	// fastAckBytes: after this much unacknowledged guest data an ACK goes
	// out at once, not when the link runs dry, so that a sender with a
	// large window is not held up.
	fastAckBytes = 128 << 10
	// fastGSOMax bounds the payload of one GSO frame to the guest (the IP
	// length field and the TAP's 64 KiB).
	fastGSOMax = 65535 - header.IPv6MinimumSize - header.TCPMinimumSize - 60
	// Retransmission timeouts and retries to the guest.
	fastSynRTO     = time.Second
	fastRTO        = 200 * time.Millisecond
	fastMaxRTO     = 30 * time.Second
	fastSynRetries = 5
	fastMaxRetries = 12
)

// holdBufs recycles the buffers of guest data waiting for a host socket.
var holdBufs = sync.Pool{New: func() any {
	b := make([]byte, fastRcvCap)
	return &b
}}

// fastLink is what the fast path needs of the link: link.Endpoint.
type fastLink interface {
	WriteFrame(h link.VnetHdr, head, payload []byte) error
	GSOFrames() bool
	PartialChecksums() bool
}

// tcpFast owns the fast path's connections.
type tcpFast struct {
	e       *Engine
	link    fastLink
	mac     tcpip.LinkAddress
	mtu     int
	gso     bool
	partial bool

	mu    sync.Mutex
	conns map[stack.TransportEndpointID]*fastConn

	// owed holds the connections that owe the guest an ACK, sent when the
	// link runs dry (FlushFrames); the reader goroutine's alone.
	owed []*fastConn
	// g gathers a guest segment's payload for the host socket (reader
	// goroutine).
	g gather
	// took: a segment was taken since wantBusyPoll last asked (reader
	// goroutine).
	took bool
}

// newTCPFast returns the fast path for link ep, or nil when ep cannot
// carry it (a link of the tests that is not a link.Endpoint).
func newTCPFast(e *Engine, ep stack.LinkEndpoint) *tcpFast {
	l, ok := ep.(fastLink)
	if !ok || e.opts.noTCPFast {
		return nil
	}
	return &tcpFast{
		e:       e,
		link:    l,
		mac:     ep.LinkAddress(),
		mtu:     int(ep.MTU()),
		gso:     l.GSOFrames() && l.PartialChecksums(),
		partial: l.PartialChecksums(),
		conns:   make(map[stack.TransportEndpointID]*fastConn),
	}
}

// takeFrame handles fr if it is a segment of a fast-path connection or a
// SYN that opens one, and reports whether it did.
func (f *tcpFast) takeFrame(fr link.Frame) bool {
	head := fr.Segs[0]
	s, ok := parseTCPFrame(head, fr.Len())
	if !ok {
		return false
	}
	f.mu.Lock()
	c := f.conns[s.id]
	f.mu.Unlock()
	if c == nil {
		if s.flags&(header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst|header.TCPFlagFin) != header.TCPFlagSyn {
			return false
		}
		if !f.admits(&s, fr) {
			return false
		}
		return f.open(&s, head)
	}
	if !fr.ChecksumValidated && !tcpChecksumValid(&s, fr) {
		return false // gVisor drops and counts it
	}
	c.segment(&s, fr)
	f.took = true
	return true
}

// wantBusyPoll reports whether the fast path took a segment since it was
// last asked: its connections' host sockets are then likely to have
// something soon (an answer, a window opening).
func (f *tcpFast) wantBusyPoll() bool {
	took := f.took
	f.took = false
	return took
}

// admits applies to a SYN what the guard, gVisor's IP layer and its
// demuxer would: a guest source, a unicast destination, valid checksums,
// and no gVisor endpoint claiming it.
func (f *tcpFast) admits(s *tcpSeg, fr link.Frame) bool {
	src, dst := addrOf(s.id.RemoteAddress), addrOf(s.id.LocalAddress)
	if src.IsUnspecified() || !policy.IsGuestSource(f.e.plan, f.e.cfg, src) || !isFastDst(dst) {
		return false
	}
	if s.netProto == header.IPv6ProtocolNumber && !f.e.cfg.EnableIPv6 {
		return false
	}
	if !fr.ChecksumValidated && !tcpChecksumValid(s, fr) {
		return false
	}
	return f.e.stack.FindTransportEndpoint(s.netProto, tcp.ProtocolNumber, s.id, nicID) == nil
}

// open starts a connection for the guest's SYN s (whose frame starts with
// head). The host connect starts here: to the host's loopback (and peers
// as close) it has finished when connect returns, and the SYN-ACK goes out
// at once; a slower one is waited for on a worker.
func (f *tcpFast) open(s *tcpSeg, head []byte) bool {
	t := f.e.tcp
	switch t.acquire(s.id) {
	case acquireDuplicate:
		return true
	case acquireOverLimit:
		f.e.stats.SYNDropped.Add(1)
		return true
	}
	opts := header.ParseSynOptions(head[s.tcpOff+header.TCPMinimumSize:s.dataOff], false)
	c := newFastConn(f, s, opts, tcpip.LinkAddress(head[6:12]))
	f.mu.Lock()
	f.conns[s.id] = c
	f.mu.Unlock()
	dst, local, err := t.target(s.id)
	fd, done := -1, true
	if err == nil {
		fd, done, err = startDial(dst, local)
	}
	if done {
		c.dialed(fd, err)
		return true
	}
	f.e.goFunc(func() {
		nfd, err := waitConnect(f.e.ctx, fd, f.e.opts.dialTimeout)
		c.dialed(nfd, err)
	})
	return true
}

// remove forgets c.
func (f *tcpFast) remove(c *fastConn) {
	f.mu.Lock()
	if f.conns[c.tpl.id] == c {
		delete(f.conns, c.tpl.id)
	}
	f.mu.Unlock()
}

// flush sends the ACKs the connections owe the guest (the link ran dry).
// Delaying those for small segments (in case the host's answer carries
// them) was measured and dropped: 0.5 ms with one engine-wide timer cost
// more CPU per round trip (69 vs 60 us) and a higher p50 in netab rr.
func (f *tcpFast) flush() {
	for i, c := range f.owed {
		c.mu.Lock()
		c.queued = false
		if c.ackOwed && c.state == fcOpen {
			c.sendACK()
		}
		c.mu.Unlock()
		f.owed[i] = nil
	}
	f.owed = f.owed[:0]
}

// count is the number of fast-path connections (tests).
func (f *tcpFast) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

// States of a fast-path connection.
type fcState uint8

const (
	fcDialing fcState = iota // the host dial runs; nothing sent to the guest
	fcSynRcvd                // SYN-ACK sent, waiting for the guest's ACK
	fcSynSent                // a forward's: SYN sent, waiting for the SYN-ACK
	fcOpen                   // established (either side may have closed)
	fcDone                   // closed, or reset
)

// fastConn is one guest connection on the fast path. Its fields are
// guarded by mu: the link's reader (guest segments), the poller (host
// events), a worker (the dial) and the timer all lock it.
type fastConn struct {
	f     *tcpFast
	sched *relaySched
	key   uint64 // poller key

	mu    sync.Mutex
	state fcState
	slot  bool // holds an attempt's slot (releaseSlot)
	fd    int  // host socket, -1 until dialed
	tpl   tcpTemplate
	// owner is a forward's connection set (connectGuest), inSet whether
	// c is counted in it.
	owner *connSet
	inSet bool

	// Guest to host.
	irs     uint32 // the guest's initial sequence number
	rcvNxt  uint32
	rcvEdge uint32 // right edge of the window announced
	rcvWS   uint8
	// hold keeps acknowledged guest data the host socket has not taken.
	hold     byteQueue
	unacked  int // guest bytes taken since the last ACK
	ackOwed  bool
	queued   bool // in f.owed
	guestFIN bool
	hostShut bool // the guest's FIN went on to the host (shutdown)
	outArmed bool // EPOLLOUT armed for hold
	// ooo keeps guest data that came after a gap, by sequence number,
	// until the gap is filled; oooBytes is its size.
	ooo      []oooSeg
	oooBytes int
	sackOK   bool     // the guest offered SACK: ACKs carry SACK blocks
	optBuf   [40]byte // sackOpts's

	// Host to guest.
	iss       uint32
	sndUna    uint32
	sndNxt    uint32
	sndWnd    uint32 // the guest's window, in bytes
	sndWS     uint8
	mss       int
	sbuf      byteQueue // host data from sndUna on
	hostReady bool      // the host socket may have data or EOF to read
	hostDrain bool      // read it until EAGAIN (see relayConn.hostDrain)
	hostEOF   bool
	sndMax    uint32 // the highest sequence number sent, plus one
	finSent   bool   // our FIN is in sndNxt
	finAcked  bool
	dupAcks   int
	retries   int
	rto       time.Duration
	timer     *time.Timer
	timerOn   bool
}

// oooSeg is guest data kept after a gap (keepOutOfOrder).
type oooSeg struct {
	seq  uint32
	data []byte
}

func newFastConn(f *tcpFast, s *tcpSeg, opts header.TCPSynOptions, guestMAC tcpip.LinkAddress) *fastConn {
	c := f.newConn(s.id, s.netProto, guestMAC)
	c.slot = true
	c.irs, c.rcvNxt = s.seq, s.seq+1
	c.mss = c.peerMSS(opts)
	c.sackOK = opts.SACKPermitted
	if opts.WS >= 0 {
		c.sndWS, c.rcvWS = uint8(min(opts.WS, header.MaxWndScale)), fastRcvWS
	}
	c.sndWnd = uint32(s.wnd) // not scaled in a SYN
	return c
}

// newConn is what a connection of either direction starts with: its
// buffers (empty until used), no host socket, our initial sequence number,
// and the frame template of id towards the guest's link address.
func (f *tcpFast) newConn(id stack.TransportEndpointID, netProto tcpip.NetworkProtocolNumber, guestMAC tcpip.LinkAddress) *fastConn {
	c := &fastConn{
		f:    f,
		hold: byteQueue{pool: &holdBufs},
		sbuf: byteQueue{pool: &copyBufs},
		fd:   -1,
		iss:  rand.Uint32(),
		rto:  fastSynRTO,
	}
	c.tpl = tcpTemplate{
		id:      id,
		v6:      netProto == header.IPv6ProtocolNumber,
		src:     f.mac,
		dst:     guestMAC,
		partial: f.partial,
	}
	c.sndUna, c.sndNxt, c.sndMax = c.iss, c.iss+1, c.iss+1
	return c
}

// dialed takes the host socket of a finished dial and answers the guest:
// a SYN-ACK, or a reset when the dial failed (err).
func (c *fastConn) dialed(fd int, err error) {
	t := c.f.e.tcp
	var sched *relaySched
	if err == nil {
		sched, err = t.relay()
		if err != nil {
			c.f.e.logf("tcp: %v", err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == fcDone { // the guest reset meanwhile
		if fd >= 0 {
			resetFD(fd)
		}
		return
	}
	if err != nil {
		if fd >= 0 {
			resetFD(fd)
		}
		t.e.stats.TCPRefused.Add(1)
		c.send(&segOut{flags: header.TCPFlagRst | header.TCPFlagAck, ack: c.rcvNxt})
		c.finish(false)
		return
	}
	c.fd, c.sched = fd, sched
	if !sched.add(c) {
		c.send(&segOut{flags: header.TCPFlagRst | header.TCPFlagAck, ack: c.rcvNxt})
		c.sched = nil
		c.finish(true)
		return
	}
	c.state = fcSynRcvd
	c.sendSYNACK()
	c.restartTimer()
}

// synOpts are the SYN-ACK's options: MSS, the window scale when the
// guest offered scaling, SACK permitted when it offered SACK.
func (c *fastConn) synOpts(b *[12]byte) []byte {
	mss := c.maxMSS()
	b[0], b[1], b[2], b[3] = header.TCPOptionMSS, header.TCPOptionMSSLength, byte(mss>>8), byte(mss)
	n := 4
	if c.rcvWS != 0 {
		b[n], b[n+1], b[n+2], b[n+3] = header.TCPOptionNOP, header.TCPOptionWS, header.TCPOptionWSLength, c.rcvWS
		n += 4
	}
	if c.sackOK {
		b[n], b[n+1], b[n+2], b[n+3] = header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionSACKPermitted, header.TCPOptionSackPermittedLength
		n += 4
	}
	return b[:n]
}

// sackOpts are the SACK blocks of the out-of-order data kept (at most
// four, the most an ACK without timestamps has room for), or nil.
func (c *fastConn) sackOpts(b *[40]byte) []byte {
	if !c.sackOK || len(c.ooo) == 0 {
		return nil
	}
	b[0], b[1], b[2] = header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionSACK
	n, blocks := 4, 0
	for i := 0; i < len(c.ooo) && blocks < 4; blocks++ {
		left := c.ooo[i].seq
		right := left + uint32(len(c.ooo[i].data))
		for i++; i < len(c.ooo) && seqLEQ(c.ooo[i].seq, right); i++ {
			right = maxSeq(right, c.ooo[i].seq+uint32(len(c.ooo[i].data)))
		}
		binary.BigEndian.PutUint32(b[n:], left)
		binary.BigEndian.PutUint32(b[n+4:], right)
		n += 8
	}
	b[3] = byte(n - 2)
	return b[:n]
}

func (c *fastConn) sendSYNACK() {
	var ob [12]byte
	wnd := uint32(fastSynWnd)
	c.rcvEdge = c.rcvNxt + wnd
	c.send(&segOut{
		flags: header.TCPFlagSyn | header.TCPFlagAck,
		seq:   c.iss,
		ack:   c.rcvNxt,
		wnd:   uint16(wnd),
		opts:  c.synOpts(&ob),
	})
}

// send writes one segment to the guest. A frame the link drops is lost
// like any other: the retransmission covers it. An ACK without data
// carries SACK blocks while out-of-order data is kept (with data they
// would take room from its segments).
func (c *fastConn) send(s *segOut) {
	if s.opts == nil && len(s.payload) == 0 && s.flags&(header.TCPFlagSyn|header.TCPFlagRst) == 0 {
		s.opts = c.sackOpts(&c.optBuf)
	}
	if s.flags&header.TCPFlagAck != 0 && s.ack == c.rcvNxt && s.seq == c.sndNxt {
		// An in-sequence segment carries the ACK owed (a window probe's
		// old sequence number makes the guest drop it unread).
		c.ackOwed, c.unacked = false, 0
	}
	head, vh := c.tpl.build(s)
	_ = c.f.link.WriteFrame(vh, head, s.payload)
}

// window returns the window field to announce and moves the announced
// right edge, which never moves left.
func (c *fastConn) window() uint16 {
	free := max(fastRcvCap-c.held(), 0)
	if edge := c.rcvNxt + uint32(free); seqLT(c.rcvEdge, edge) {
		c.rcvEdge = edge
	}
	return uint16(min(uint32(c.rcvRoom())>>c.rcvWS, 0xffff))
}

// rcvRoom is what the window announced last still admits (0 once the
// guest's FIN took the sequence number after its edge).
func (c *fastConn) rcvRoom() int { return max(int(int32(c.rcvEdge-c.rcvNxt)), 0) }

// sendACK sends a bare ACK with the current window.
func (c *fastConn) sendACK() {
	c.send(&segOut{flags: header.TCPFlagAck, seq: c.sndNxt, ack: c.rcvNxt, wnd: c.window()})
}

// owe has the ACK sent when the link runs dry (reader goroutine only).
func (c *fastConn) owe() {
	c.ackOwed = true
	if !c.queued {
		c.queued = true
		c.f.owed = append(c.f.owed, c)
	}
}

// segment handles a guest segment of this connection (reader goroutine).
func (c *fastConn) segment(s *tcpSeg, fr link.Frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case fcDialing:
		if s.flags&header.TCPFlagRst != 0 && s.seq == c.rcvNxt {
			c.finish(false) // dial sees it and resets the host socket
		}
		return
	case fcSynRcvd:
		if !c.handshakeDone(s) {
			return
		}
	case fcSynSent:
		c.synSent(s, fr)
		return
	case fcDone:
		return
	}
	c.established(s, fr)
}

// handshakeDone handles a segment in fcSynRcvd and reports whether it
// completed the handshake (and is to be processed as established).
func (c *fastConn) handshakeDone(s *tcpSeg) bool {
	switch {
	case s.flags&header.TCPFlagRst != 0:
		if s.seq == c.rcvNxt {
			c.finish(true)
		}
		return false
	case s.flags&header.TCPFlagSyn != 0:
		if s.flags&header.TCPFlagAck == 0 && s.seq == c.irs {
			c.sendSYNACK() // our SYN-ACK was lost
		}
		return false
	case s.flags&header.TCPFlagAck == 0:
		return false
	case s.ack != c.iss+1:
		c.send(&segOut{flags: header.TCPFlagRst, seq: s.ack})
		return false
	}
	c.state = fcOpen
	c.releaseSlot()
	c.sndUna = s.ack
	c.retries, c.rto = 0, fastRTO
	c.stopTimer()
	return true
}

// established handles a segment of an open connection.
func (c *fastConn) established(s *tcpSeg, fr link.Frame) {
	switch {
	case s.flags&header.TCPFlagRst != 0:
		if seqLEQ(c.rcvNxt, s.seq) && seqLEQ(s.seq, c.rcvEdge) {
			c.finish(true)
		}
		return
	case s.flags&header.TCPFlagSyn != 0:
		c.owe() // a challenge ACK
		return
	case s.flags&header.TCPFlagAck == 0:
		return
	}
	if !c.ackArrived(s) {
		return
	}
	if !c.dataArrived(s, fr) {
		return
	}
	c.pushToGuest()
	c.maybeFinish()
}

// ackArrived processes the ACK and window of s; false means drop s.
func (c *fastConn) ackArrived(s *tcpSeg) bool {
	ack := s.ack
	if seqLT(c.sndMax, ack) {
		c.owe() // acknowledges what was never sent
		return false
	}
	if seqLT(c.sndNxt, ack) {
		// Sent before a go-back and received after all.
		c.sndNxt = ack
		if c.hostEOF && ack == c.sndMax && c.sbuf.len() == int(ack-c.sndUna)-1 {
			c.finSent = true // the FIN was the last of it
		}
	}
	if seqLT(ack, c.sndUna) {
		return true // an old ACK: its data may still be new
	}
	wnd := uint32(s.wnd) << c.sndWS
	switch {
	case ack != c.sndUna:
		c.acked(ack)
	case s.dataLen() == 0 && s.flags&header.TCPFlagFin == 0 && c.sndNxt != c.sndUna && wnd == c.sndWnd:
		c.dupAcks++
		if c.dupAcks == 3 {
			c.goBack()
		}
	}
	if wnd == 0 {
		// An answer to a window probe: the guest is there, only not
		// reading. Probing goes on as long as it answers.
		c.retries = 0
	}
	c.sndWnd = wnd
	return true
}

// acked drops what the guest acknowledged up to ack from the send buffer.
func (c *fastConn) acked(ack uint32) {
	n := int(ack - c.sndUna)
	if c.finSent && ack == c.sndNxt {
		c.finAcked = true
		n--
	}
	c.sbuf.consume(n)
	c.sndUna = ack
	c.dupAcks, c.retries, c.rto = 0, 0, fastRTO
	if c.sndUna == c.sndNxt {
		c.stopTimer()
	} else {
		c.restartTimer()
	}
}

// goBack has everything unacknowledged sent again.
func (c *fastConn) goBack() {
	if c.finSent && !c.finAcked {
		c.finSent = false
	}
	c.sndNxt = c.sndUna
}

// dataArrived passes the payload (and FIN) of s on to the host; false
// means the connection ended.
func (c *fastConn) dataArrived(s *tcpSeg, fr link.Frame) bool {
	n, off, seq := s.dataLen(), s.dataOff, s.seq
	fin := s.flags&header.TCPFlagFin != 0
	if n == 0 && !fin {
		return true
	}
	if seqLT(seq, c.rcvNxt) { // a retransmit: skip what we have
		skip := int(c.rcvNxt - seq)
		if skip >= n+boolInt(fin) {
			c.owe()
			return true
		}
		off, n, seq = off+skip, n-skip, c.rcvNxt
	}
	if c.guestFIN {
		c.owe()
		return true
	}
	if seq != c.rcvNxt {
		// A gap: a frame of the guest's was lost before us (its queue
		// overflowed, or it forwards for others). Keep this one and
		// answer with a duplicate ACK at once, which starts the guest's
		// fast retransmit; once the gap is filled, everything kept goes
		// on and one ACK covers it.
		c.keepOutOfOrder(seq, fr.Segs, off, off+n)
		c.sendACK()
		return true
	}
	if room := c.rcvRoom(); n > room {
		n, fin = room, false
	}
	if n > 0 {
		if err := c.toHost(fr.Segs, off, off+n); err != nil {
			c.reset()
			return false
		}
		c.rcvNxt += uint32(n)
		c.unacked += n
	}
	took := false
	if len(c.ooo) > 0 && !fin {
		var err error
		if took, err = c.takeOutOfOrder(); err != nil {
			c.reset()
			return false
		}
	}
	if fin {
		c.rcvNxt++
		c.guestFIN = true
		if err := c.shutHost(); err != nil {
			c.reset()
			return false
		}
	}
	if fin || took || c.unacked >= fastAckBytes {
		c.sendACK() // after kept data: at once, the guest is recovering
	} else {
		c.owe()
	}
	return true
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// keepOutOfOrder keeps the bytes [from, to) of segs, guest data from
// sequence number seq after a gap, as far as the window announced admits
// and no more than fastRcvCap in all.
func (c *fastConn) keepOutOfOrder(seq uint32, segs [][]byte, from, to int) {
	n := min(to-from, int(int32(c.rcvEdge-seq)))
	if n <= 0 || c.oooBytes+n > fastRcvCap {
		return
	}
	i := 0
	for i < len(c.ooo) && seqLT(c.ooo[i].seq, seq) {
		i++
	}
	if i < len(c.ooo) && c.ooo[i].seq == seq && len(c.ooo[i].data) >= n {
		return // a retransmit of what is kept
	}
	data := make([]byte, 0, n)
	forSegRange(segs, from, from+n, func(b []byte) { data = append(data, b...) })
	c.ooo = slices.Insert(c.ooo, i, oooSeg{seq: seq, data: data})
	c.oooBytes += n
}

// takeOutOfOrder passes on the kept data that the gap's filling made
// contiguous, and drops what is covered already; took reports whether
// any was passed on.
func (c *fastConn) takeOutOfOrder() (took bool, err error) {
	for len(c.ooo) > 0 && seqLEQ(c.ooo[0].seq, c.rcvNxt) {
		o := c.ooo[0]
		c.ooo = c.ooo[1:]
		c.oooBytes -= len(o.data)
		if skip := int(c.rcvNxt - o.seq); skip < len(o.data) {
			b := o.data[skip:]
			if err := c.toHost([][]byte{b}, 0, len(b)); err != nil {
				return took, err
			}
			c.rcvNxt += uint32(len(b))
			c.unacked += len(b)
			took = true
		}
	}
	if len(c.ooo) == 0 {
		c.ooo = nil
	}
	return took, nil
}

// toHost writes the bytes [from, to) of segs to the host socket and keeps
// what it does not take in hold.
func (c *fastConn) toHost(segs [][]byte, from, to int) error {
	if c.held() > 0 || c.hostShut {
		forSegRange(segs, from, to, c.keep)
		return nil
	}
	g := &c.f.g // the reader goroutine's
	forSegRange(segs, from, to, func(b []byte) { _, _ = g.Write(b) })
	n, err := 0, error(nil)
	if g.n == to-from {
		n, err = g.writeTo(c.fd)
	}
	g.reset()
	switch {
	case err == unix.EAGAIN:
		n = 0
	case err != nil:
		return err
	}
	done := 0
	forSegRange(segs, from, to, func(b []byte) {
		if skip := min(n-done, len(b)); skip < len(b) {
			c.keep(b[max(skip, 0):])
		}
		done += len(b)
	})
	if c.held() > 0 {
		return c.armOut(true)
	}
	return nil
}

// flushHold writes held guest data to the host socket (it became
// writable), then passes on a FIN that waited for it.
func (c *fastConn) flushHold() error {
	for c.held() > 0 {
		n, err := rawWrite(c.fd, c.hold.data())
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return err
		}
		c.hold.consume(n)
	}
	if err := c.armOut(false); err != nil {
		return err
	}
	if err := c.shutHost(); err != nil {
		return err
	}
	if c.rcvRoom() < fastRcvCap/2 {
		c.sendACK() // a window update
	}
	return nil
}

// shutHost passes the guest's FIN on once its data is out.
func (c *fastConn) shutHost() error {
	if !c.guestFIN || c.hostShut || c.held() > 0 {
		return nil
	}
	c.hostShut = true
	return rawShutdownWrite(c.fd)
}

// armOut adds or removes EPOLLOUT for the host socket.
func (c *fastConn) armOut(on bool) error { return c.sched.setOut(c, &c.outArmed, on) }

// pushToGuest sends the guest what it has room for of the host's data,
// reading more from the host socket as the buffer allows, then the FIN
// after the host's EOF.
func (c *fastConn) pushToGuest() {
	for c.sendData() || c.readHost() {
	}
	if c.state != fcOpen {
		return
	}
	if c.hostEOF && !c.finSent && c.unsent() == 0 {
		c.send(&segOut{flags: header.TCPFlagFin | header.TCPFlagAck, seq: c.sndNxt, ack: c.rcvNxt, wnd: c.window()})
		c.advance(1)
		c.finSent = true
		c.startTimer()
	}
	if c.unsent() > 0 && c.sndWnd == 0 {
		c.startTimer() // probe the closed window
	}
}

// advance moves sndNxt past n sequence numbers just sent.
func (c *fastConn) advance(n uint32) {
	c.sndNxt += n
	c.sndMax = maxSeq(c.sndMax, c.sndNxt)
}

// unsent is how much of the send buffer has not been sent.
func (c *fastConn) unsent() int {
	inFlight := int(c.sndNxt - c.sndUna)
	if c.finSent && !c.finAcked {
		inFlight-- // the FIN takes a sequence number, not a byte
	}
	return c.sbuf.len() - inFlight
}

// sendData sends one frame of unsent data if the guest's window allows
// and reports whether it did.
func (c *fastConn) sendData() bool {
	unsent := c.unsent()
	if unsent <= 0 || c.state != fcOpen {
		return false
	}
	allow := int(int32(c.sndUna + c.sndWnd - c.sndNxt))
	if allow <= 0 {
		return false
	}
	n, mss := min(unsent, allow), 0
	if c.f.gso && n > c.mss && 2*c.mss <= fastGSOMax {
		// A GSO frame of whole segments (the last may be short).
		mss = c.mss
		if n > fastGSOMax {
			n = fastGSOMax - fastGSOMax%c.mss
		}
	} else {
		n = min(n, c.mss)
	}
	start := c.sbuf.len() - unsent
	flags := header.TCPFlagAck
	if n == unsent {
		flags |= header.TCPFlagPsh
	}
	c.send(&segOut{
		flags:   flags,
		seq:     c.sndNxt,
		ack:     c.rcvNxt,
		wnd:     c.window(),
		payload: c.sbuf.data()[start : start+n],
		mss:     mss,
	})
	c.advance(uint32(n))
	c.startTimer()
	return true
}

// readHost reads from the host socket into the send buffer if it may have
// data and the buffer has room, and reports whether it read any.
func (c *fastConn) readHost() bool {
	if !c.hostReady || c.hostEOF || c.state != fcOpen {
		return false
	}
	room := c.sbuf.room(1)
	if len(room) == 0 {
		return false // full: more once the guest acknowledges
	}
	n, err := rawRead(c.fd, room)
	if (n <= 0 || err != nil) && c.sbuf.len() == 0 {
		c.sbuf.put() // nothing read or queued: no buffer held while idle
	}
	switch {
	case err == unix.EAGAIN:
		c.hostReady = false
		return false
	case err != nil:
		c.reset()
		return false
	case n == 0:
		c.hostReady, c.hostEOF = false, true
		return false
	}
	if n < len(room) && !c.hostDrain {
		c.hostReady = false // a short read: the socket is empty
	}
	c.sbuf.grow(n)
	return true
}

// maybeFinish closes the connection once both FINs went through.
func (c *fastConn) maybeFinish() {
	if c.state == fcOpen && c.hostShut && c.finAcked {
		c.finish(false)
	}
}

// reset ends the connection with a reset on both sides (a host error).
func (c *fastConn) reset() {
	switch c.state {
	case fcDone:
		return
	case fcSynSent:
		c.send(&segOut{flags: header.TCPFlagRst, seq: c.sndNxt})
	default:
		c.send(&segOut{flags: header.TCPFlagRst | header.TCPFlagAck, seq: c.sndNxt, ack: c.rcvNxt})
	}
	c.finish(true)
}

// finish closes the host socket (with a reset when abort) and forgets the
// connection.
func (c *fastConn) finish(abort bool) {
	if c.state == fcDone {
		return
	}
	c.state = fcDone
	c.releaseSlot()
	c.stopTimer()
	c.f.remove(c)
	c.forgetOwner()
	if c.fd >= 0 {
		if c.sched != nil {
			c.sched.remove(c)
		}
		if abort {
			resetFD(c.fd)
		} else {
			rawClose(c.fd)
		}
		c.fd = -1
	}
	c.sbuf.put()
	c.hold.put()
	c.ooo, c.oooBytes = nil, 0
}

// held is how much guest data waits for the host socket.
func (c *fastConn) held() int { return c.hold.len() }

// keep appends b to the held guest data. It always fits: the window
// announced never exceeds the room left (window).
func (c *fastConn) keep(b []byte) {
	c.hold.grow(copy(c.hold.room(len(b)), b))
}

// releaseSlot gives back the connection attempt's slot in tcpNAT's limits
// (acquire), held from the SYN until the handshake is done or failed, as
// for a connection through gVisor: a guest's SYN flood cannot hold more
// host sockets than those limits allow.
func (c *fastConn) releaseSlot() {
	if c.slot {
		c.slot = false
		c.f.e.tcp.release(c.tpl.id)
	}
}

// byteQueue is a queue of bytes in a buffer from pool, taken when it is
// first needed and given back when the queue empties: a connection holds
// a buffer only while it has data queued.
type byteQueue struct {
	pool     *sync.Pool
	buf      *[]byte
	off, end int // the queued bytes: (*buf)[off:end]
}

func (q *byteQueue) len() int { return q.end - q.off }

// data is the queued bytes.
func (q *byteQueue) data() []byte {
	if q.buf == nil {
		return nil
	}
	return (*q.buf)[q.off:q.end]
}

// room returns the free space after the queued bytes, moving them to the
// buffer's front first when fewer than want bytes are free there.
func (q *byteQueue) room(want int) []byte {
	if q.buf == nil {
		q.buf = q.pool.Get().(*[]byte)
		q.off, q.end = 0, 0
	}
	b := *q.buf
	if len(b)-q.end < want && q.off > 0 {
		q.end = copy(b, b[q.off:q.end])
		q.off = 0
	}
	return b[q.end:]
}

// grow queues the n bytes just written into room's slice.
func (q *byteQueue) grow(n int) { q.end += n }

// consume drops the first n queued bytes, and the buffer once empty.
func (q *byteQueue) consume(n int) {
	q.off += n
	if q.off == q.end {
		q.put()
	}
}

// put gives the buffer back (what it held is dropped).
func (q *byteQueue) put() {
	if q.buf != nil {
		q.pool.Put(q.buf)
		q.buf, q.off, q.end = nil, 0, 0
	}
}

// hostEvent implements polledConn (the poller goroutine).
func (c *fastConn) hostEvent(events uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == fcDialing || c.state == fcDone {
		return
	}
	if events&unix.EPOLLERR != 0 {
		if errno, err := rawGetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && errno != 0 {
			c.reset()
			return
		}
	}
	c.hostReady = true
	if events&hostDrainEvents != 0 {
		c.hostDrain = true
	}
	if c.state != fcOpen {
		return // until the handshake is done, host data waits in the socket
	}
	if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && c.held() > 0 {
		if err := c.flushHold(); err != nil {
			c.reset()
			return
		}
	}
	c.pushToGuest()
	c.maybeFinish()
}

func (c *fastConn) pollFD() int           { return c.fd }
func (c *fastConn) pollKey() uint64       { return c.key }
func (c *fastConn) setPollKey(key uint64) { c.key = key }

// abort implements polledConn: the engine is closing.
func (c *fastConn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
}

// Timers: one per connection, running while something sent is
// unacknowledged (the SYN-ACK, data, the FIN) or the guest's window is
// closed on unsent data.

func (c *fastConn) startTimer() {
	if !c.timerOn {
		c.restartTimer()
	}
}

func (c *fastConn) restartTimer() {
	c.timerOn = true
	if c.timer == nil {
		c.timer = time.AfterFunc(c.rto, c.expired)
		return
	}
	c.timer.Reset(c.rto)
}

func (c *fastConn) stopTimer() {
	if c.timerOn {
		c.timerOn = false
		c.timer.Stop()
	}
}

// expired is the retransmission (and window probe) timer.
func (c *fastConn) expired() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.timerOn {
		return
	}
	c.timerOn = false
	switch c.state {
	case fcSynRcvd, fcSynSent:
		c.retries++
		if c.retries > fastSynRetries {
			// The guest never completed the handshake: the host socket
			// is reset, or for a forward's connection (the guest did
			// not answer our SYN) closed, as gVisor's failed connect
			// closed it.
			c.finish(c.state == fcSynRcvd)
			return
		}
		c.rto = min(2*c.rto, fastMaxRTO)
		if c.state == fcSynRcvd {
			c.sendSYNACK()
		} else {
			c.sendSYN()
		}
		c.restartTimer()
	case fcOpen:
		c.retransmit()
	}
}

// retransmit resends after a timeout, or probes a closed window.
func (c *fastConn) retransmit() {
	if c.sndNxt == c.sndUna {
		if c.unsent() > 0 && c.sndWnd == 0 {
			// A window probe: an old sequence number makes the guest
			// answer with its current window.
			c.send(&segOut{flags: header.TCPFlagAck, seq: c.sndNxt - 1, ack: c.rcvNxt, wnd: c.window()})
			c.rto = min(2*c.rto, fastMaxRTO)
			c.restartTimer()
		}
		return
	}
	c.retries++
	if c.retries > fastMaxRetries {
		c.reset()
		return
	}
	c.rto = min(2*c.rto, fastMaxRTO)
	c.goBack()
	c.pushToGuest()
	c.startTimer()
}
