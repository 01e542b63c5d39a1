package engine

import (
	"math/rand/v2"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
)

// Forwarded connections on the fast path. A host connection accepted by
// a port forward becomes a fast-path connection that we open towards the
// guest (SYN, the guest's SYN-ACK, our ACK); from then on it is the same
// as one the guest opened. Through gVisor, host->guest throughput at MTU
// 1500 was ~1 Gbit/s, half of the C slirp4netns's: gVisor's sender answers
// each of the guest's ACKs (one per two segments, as the TAP does no GRO)
// with a frame of the window or congestion room just freed, so frames
// stayed at one or two segments, and each cost a full trip through
// gVisor. The fast path sends what the guest has room for as one GSO
// frame, as it does for connections the guest opened (~10 Gbit/s there).
// The guest's link address comes from gVisor's neighbour table, resolved
// first if need be.

// fastFwdPorts is the range our source ports towards the guest come from
// (Linux's default ephemeral range); fastFwdPortTries bounds the search
// for a free one.
const (
	fastFwdPortMin   = 32768
	fastFwdPortMax   = 60999
	fastFwdPortTries = 16
)

// fastResolveWait bounds the wait for the guest's link address (gVisor
// reports a failure itself after its probes, ~3 s).
const fastResolveWait = 5 * time.Second

// connectGuest takes over the forwarded host connection hc: it opens a
// fast-path connection from src to guest and relays hc to it. It returns
// false, leaving hc alone, when the fast path cannot: the guest's link
// address cannot be resolved, or no source port is free. It may wait for
// the guest's link address (the forward's goroutine runs it).
func (f *tcpFast) connectGuest(hc rawSocket, src netip.Addr, guest netip.AddrPort, set *connSet) bool {
	mac, ok := f.resolve(guest.Addr())
	if !ok {
		return false
	}
	sched, err := f.e.tcp.relay()
	if err != nil {
		return false
	}
	c := f.newActive(src, guest, mac)
	if c == nil {
		return false
	}
	fd, err := detachFD(hc)
	if err != nil {
		f.e.logf("forward: %v", err)
		f.remove(c)
		return true
	}
	c.start(fd, sched, set)
	return true
}

// start has c, registered by newActive, relay the host socket fd: it joins
// the poller and set, and sends the SYN.
func (c *fastConn) start(fd int, sched *relaySched, set *connSet) {
	c.mu.Lock()
	c.fd, c.sched = fd, sched
	c.owner = set
	if !sched.add(c) {
		c.sched = nil
		c.finish(true)
		c.mu.Unlock()
		return
	}
	c.sendSYN()
	c.restartTimer()
	c.mu.Unlock()
	// connSet.add closes c itself, under its lock, when the set is
	// closed: finish must then not call back into the set (inSet).
	if !set.add(c) {
		return
	}
	c.mu.Lock()
	c.inSet = c.state != fcDone
	done := !c.inSet
	c.mu.Unlock()
	if done {
		set.remove(c) // it ended before it was counted
	}
}

// resolve returns the link address of the guest address a: from gVisor's
// neighbour table, or else once gVisor has resolved it (an ARP request or
// a neighbour solicitation, as its own connect would send); false when it
// cannot be resolved.
func (f *tcpFast) resolve(a netip.Addr) (tcpip.LinkAddress, bool) {
	if mac, ok := f.neighbor(a); ok {
		return mac, true
	}
	ch := make(chan stack.LinkResolutionResult, 1)
	err := f.e.stack.GetLinkAddress(nicID, tcpAddr(a), tcpip.Address{}, protoOf(a), func(r stack.LinkResolutionResult) { ch <- r })
	switch err.(type) {
	case nil, *tcpip.ErrWouldBlock:
	default:
		return "", false
	}
	t := time.NewTimer(fastResolveWait)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.LinkAddress, r.Err == nil && r.LinkAddress != ""
	case <-t.C:
	case <-f.e.ctx.Done():
	}
	return "", false
}

// neighbor is the link address gVisor's neighbour table has for the guest
// address a, if it has a usable one.
func (f *tcpFast) neighbor(a netip.Addr) (tcpip.LinkAddress, bool) {
	entries, err := f.e.stack.Neighbors(nicID, protoOf(a))
	if err != nil {
		return "", false
	}
	want := tcpAddr(a)
	for _, n := range entries {
		if n.Addr != want || n.LinkAddr == "" {
			continue
		}
		switch n.State {
		case stack.Reachable, stack.Stale, stack.Delay, stack.Probe, stack.Static:
			return n.LinkAddr, true
		}
	}
	return "", false
}

// newActive registers a connection from src (on a free port) to guest in
// fcSynSent, or returns nil when no port is free.
func (f *tcpFast) newActive(src netip.Addr, guest netip.AddrPort, mac tcpip.LinkAddress) *fastConn {
	id := stack.TransportEndpointID{
		LocalAddress:  tcpAddr(src),
		RemotePort:    guest.Port(),
		RemoteAddress: tcpAddr(guest.Addr()),
	}
	netProto := protoOf(guest.Addr())
	f.mu.Lock()
	defer f.mu.Unlock()
	for range fastFwdPortTries {
		id.LocalPort = uint16(fastFwdPortMin + rand.IntN(fastFwdPortMax-fastFwdPortMin+1))
		if f.conns[id] != nil || f.e.stack.FindTransportEndpoint(netProto, tcp.ProtocolNumber, id, nicID) != nil {
			continue
		}
		c := f.newConn(id, netProto, mac)
		c.state = fcSynSent
		c.rcvWS, c.sackOK = fastRcvWS, true // offered; dropped if the guest does not
		c.mss = c.maxMSS()
		f.conns[id] = c
		return c
	}
	return nil
}

// maxMSS is the largest segment the link's MTU allows.
func (c *fastConn) maxMSS() int { return c.f.mtu - c.tpl.ipLen() - header.TCPMinimumSize }

// peerMSS is the segment size to send with: the guest's MSS option (536
// without one) within what the MTU allows, and no less than 64.
func (c *fastConn) peerMSS(opts header.TCPSynOptions) int {
	return max(min(int(opts.MSS), c.maxMSS()), 64)
}

// sendSYN sends our SYN, offering window scaling and SACK.
func (c *fastConn) sendSYN() {
	var ob [12]byte
	c.send(&segOut{flags: header.TCPFlagSyn, seq: c.iss, wnd: fastSynWnd, opts: c.synOpts(&ob)})
}

// synSent handles a guest segment in fcSynSent: the SYN-ACK opens the
// connection, a reset (the guest's port is closed) closes the host
// connection, as a failed connect through gVisor does.
func (c *fastConn) synSent(s *tcpSeg, fr link.Frame) {
	switch {
	case s.flags&header.TCPFlagAck != 0 && s.ack != c.iss+1:
		if s.flags&header.TCPFlagRst == 0 {
			c.send(&segOut{flags: header.TCPFlagRst, seq: s.ack})
		}
		return
	case s.flags&header.TCPFlagRst != 0:
		if s.flags&header.TCPFlagAck != 0 {
			c.finish(false)
		}
		return
	case s.flags&(header.TCPFlagSyn|header.TCPFlagAck) != header.TCPFlagSyn|header.TCPFlagAck:
		return // a simultaneous open: not for a forward's connection
	}
	head := fr.Segs[0]
	opts := header.ParseSynOptions(head[s.tcpOff+header.TCPMinimumSize:s.dataOff], true)
	c.irs, c.rcvNxt = s.seq, s.seq+1
	c.rcvEdge = c.rcvNxt + fastSynWnd // our SYN's window
	c.mss = c.peerMSS(opts)
	if opts.WS >= 0 {
		c.sndWS = uint8(min(opts.WS, header.MaxWndScale))
	} else {
		c.rcvWS = 0
	}
	c.sackOK = opts.SACKPermitted
	c.sndWnd = uint32(s.wnd) // not scaled in a SYN-ACK
	c.sndUna = s.ack
	c.state = fcOpen
	c.retries, c.rto = 0, fastRTO
	c.stopTimer()
	c.sendACK()
	c.pushToGuest() // what the host sent meanwhile
	c.maybeFinish()
}

// Close implements io.Closer for the forward's connection set: the
// forward is removed or the engine closes; both sides are reset.
func (c *fastConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reset()
	return nil
}

// forgetOwner takes c out of its forward's connection set (finish).
func (c *fastConn) forgetOwner() {
	if c.inSet {
		c.inSet = false
		c.owner.remove(c)
	}
}
