package link_test

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
)

// takingDispatcher is a FrameTaker that takes the frames whose first
// payload byte (after the IPv4 header) is odd and records, in order, what
// the endpoint asked of it.
type takingDispatcher struct {
	mu     sync.Mutex
	events []string
	frames [][]byte // copies of the frames offered
	csum   []bool   // their ChecksumValidated
	segs   []int    // their number of segments
}

func marker(frame []byte) byte {
	return frame[header.EthernetMinimumSize+header.IPv4MinimumSize]
}

func (d *takingDispatcher) TakeFrame(fr link.Frame) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	var b []byte
	for _, s := range fr.Segs {
		b = append(b, s...)
	}
	if len(b) != fr.Len() {
		d.events = append(d.events, "bad length")
	}
	d.frames = append(d.frames, b)
	d.csum = append(d.csum, fr.ChecksumValidated)
	d.segs = append(d.segs, len(fr.Segs))
	m := marker(b)
	if m%2 == 1 {
		d.events = append(d.events, fmt.Sprintf("take %d", m))
		return true
	}
	d.events = append(d.events, fmt.Sprintf("offer %d", m))
	return false
}

func (d *takingDispatcher) FlushFrames() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, "flush")
}

func (d *takingDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	defer v.Release()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.events = append(d.events, fmt.Sprintf("deliver %d", marker(v.AsSlice())))
}

func (d *takingDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (d *takingDispatcher) snapshot() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.events)
}

// TestFrameTaker: a dispatcher that is a FrameTaker is offered every frame
// first; the frames it takes never reach DeliverNetworkPacket, those it
// declines do, and it is told to flush before a declined frame is
// delivered and when the link runs dry, so that frames keep their order.
// The frame it is offered is the frame sent, in segments of the read
// buffers (the 5000-byte one in several), with ChecksumValidated set when
// the link has the virtio-net header.
func TestFrameTaker(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		t.Run(fmt.Sprintf("vnet=%v", vnet), func(t *testing.T) {
			env := newPairEnv(t, link.Options{VnetHdr: vnet, MTU: 9000})
			env.ep.Attach(nil)
			env.ep.Wait() // the reader stops; frames queue in the socket
			sizes := map[byte]int{1: 100, 3: 5000, 4: 60, 5: 100, 6: 100, 7: 1400}
			order := []byte{1, 3, 4, 5, 6, 7}
			var sent [][]byte
			for _, m := range order {
				payload := bytes.Repeat([]byte{m}, sizes[m])
				f := ipv4Packet(gwMAC, header.UDPProtocolNumber, payload)
				sent = append(sent, f)
				env.send(t, link.VnetHdr{}, f)
			}
			d := &takingDispatcher{}
			env.ep.Attach(d)
			want := []string{"take 1", "take 3", "offer 4", "flush", "deliver 4", "take 5", "offer 6", "flush", "deliver 6", "take 7", "flush"}
			deadline := time.Now().Add(10 * time.Second)
			for len(d.snapshot()) < len(want) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			env.ep.Attach(nil)
			env.ep.Wait()
			if got := d.snapshot(); !slices.Equal(got, want) {
				t.Fatalf("events %q, want %q", got, want)
			}
			for i, f := range d.frames {
				if !bytes.Equal(f, sent[i]) {
					t.Errorf("frame %d offered as %d bytes differing from the %d sent", i, len(f), len(sent[i]))
				}
				if d.csum[i] != vnet {
					t.Errorf("frame %d: ChecksumValidated %v, want %v", i, d.csum[i], vnet)
				}
			}
			if d.segs[1] < 2 || d.segs[0] != 1 {
				t.Errorf("segments per frame %v: want 1 for 100 bytes, several for 5000", d.segs)
			}
			if s := env.ep.Stats(); s.RxFrames != uint64(len(order)) || s.RxDropped != 0 {
				t.Errorf("stats %+v: want %d frames received, none dropped", s, len(order))
			}
		})
	}
}
