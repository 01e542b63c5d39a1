package engine

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// udpSink counts the datagrams that reach a host socket on 127.0.0.1.
func udpSink(t *testing.T) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	pc.SetReadBuffer(8 << 20) // best effort: capped by net.core.rmem_max
	var n atomic.Int64
	go func() {
		buf := make([]byte, maxDatagram)
		for {
			if _, err := pc.Read(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), &n
}

// TestUDPGuestBurstNotDroppedByFlowEndpoint sends bursts of 1400-byte
// datagrams from the guest, as iperf3's pacing does at a high rate, and
// checks that the flow's gVisor endpoint does not drop any for want of
// receive buffer while its copy goroutine writes them to the host socket.
// With gVisor's default 212 KiB buffer this dropped ~1/3 of the datagrams.
func TestUDPGuestBurstNotDroppedByFlowEndpoint(t *testing.T) {
	const (
		bursts   = 20
		perBurst = 400 // 560 kB: more than gVisor's 212 KiB default
		size     = 1400
	)
	dst, received := udpSink(t)
	tb := newTestBed(t, policy4Only())
	c, err := tb.dialUDP(netip.AddrPortFrom(tb.eng.Plan().Gateway, dst.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, size)
	for i := range bursts {
		for range perBurst {
			if _, err := c.Write(payload); err != nil {
				t.Fatal(err)
			}
		}
		// Let the flow drain, as a paced sender's gaps do (bounded: the
		// sink or the wire may lose a few, which is not what is tested).
		want := int64((i + 1) * perBurst)
		for deadline := time.Now().Add(2 * time.Second); received.Load() < want && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	udp := tb.eng.stack.Stats().UDP
	t.Logf("sent %d, host received %d, engine UDP ReceiveBufferErrors %d",
		bursts*perBurst, received.Load(), udp.ReceiveBufferErrors.Value())
	if e := udp.ReceiveBufferErrors.Value(); e != 0 {
		t.Errorf("engine UDP ReceiveBufferErrors = %d, want 0 (flow endpoint receive buffer overflowed)", e)
	}
}

// TestUDPBigReceiveBuffersBounded checks that only udpBigFlows flows hold a
// big receive buffer and that ending flows gives their buffers back.
func TestUDPBigReceiveBuffersBounded(t *testing.T) {
	srv := udpEchoServer(t)
	tb := newTestBed(t, policy4Only(), WithUDPIdleTimeout(300*time.Millisecond, 300*time.Millisecond))
	dst := netip.AddrPortFrom(tb.eng.Plan().Gateway, srv.Port())
	const flows = udpBigFlows + 4
	for i := range flows {
		c, err := tb.dialUDP(dst)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hi"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 10)); err != nil {
			t.Fatalf("flow %d: %v", i, err)
		}
	}
	u := tb.eng.udp
	u.mu.Lock()
	big, n := u.big, len(u.flows)
	marked := 0
	for _, f := range u.flows {
		if f.big {
			marked++
		}
	}
	u.mu.Unlock()
	if n != flows || big != udpBigFlows || marked != udpBigFlows {
		t.Fatalf("flows %d, big %d, marked big %d; want %d, %d, %d", n, big, marked, flows, udpBigFlows, udpBigFlows)
	}
	eventually(t, 5*time.Second, "UDP flow expiry", func() bool { return u.count() == 0 })
	u.mu.Lock()
	big = u.big
	u.mu.Unlock()
	if big != 0 {
		t.Fatalf("big = %d after every flow ended, want 0", big)
	}
}
