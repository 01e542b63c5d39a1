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

// pollingTaker is a FrameTaker and BusyPoller that takes the frames whose
// marker is odd and records what the endpoint asked of it. Its first
// BusyPoll stands for a host socket's event: it has the peer send the frame
// with marker onPoll (as the guest would answer what the event made us
// send) and reports an event.
type pollingTaker struct {
	mu     sync.Mutex
	events []string
	polls  int
	onPoll func()
	noWant bool // WantBusyPoll says no
}

func (d *pollingTaker) log(e string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	// Runs of polls are logged once: how many fit in a window is the
	// machine's business.
	if e == "poll" && len(d.events) > 0 && d.events[len(d.events)-1] == "poll" {
		return
	}
	d.events = append(d.events, e)
}

func (d *pollingTaker) TakeFrame(fr link.Frame) bool {
	m := fr.Segs[0][header.EthernetMinimumSize+header.IPv4MinimumSize]
	if m%2 == 0 {
		d.log(fmt.Sprintf("offer %d", m))
		return false
	}
	d.log(fmt.Sprintf("take %d", m))
	return true
}

func (d *pollingTaker) FlushFrames() { d.log("flush") }

func (d *pollingTaker) WantBusyPoll() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.noWant
}

func (d *pollingTaker) BusyPoll() bool {
	d.log("poll")
	d.mu.Lock()
	d.polls++
	first := d.polls == 1
	d.mu.Unlock()
	if first && d.onPoll != nil {
		d.onPoll()
		return true
	}
	return false
}

func (d *pollingTaker) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	v := pkt.ToView()
	defer v.Release()
	d.log(fmt.Sprintf("deliver %d", marker(v.AsSlice())))
}

func (d *pollingTaker) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func (d *pollingTaker) snapshot() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.events)
}

// waitEvents waits (bounded) until d logged want's length of events.
func (d *pollingTaker) waitEvents(n int) []string {
	deadline := time.Now().Add(10 * time.Second)
	for len(d.snapshot()) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return d.snapshot()
}

// TestBusyPoll: with Options.BusyPoll, a reader that ran dry after taken
// frames polls the taker's sources and the link before it sleeps: a frame
// that arrives meanwhile (here, sent by the first poll) is read in that
// window. Without
// BusyPoll, after frames the taker declined, or when the taker does not
// want a window, nothing is polled: the next frame's events follow the
// flush directly.
func TestBusyPoll(t *testing.T) {
	frame := func(m byte) []byte { return ipv4Packet(gwMAC, header.UDPProtocolNumber, bytes.Repeat([]byte{m}, 64)) }
	for _, tc := range []struct {
		name   string
		window time.Duration
		first  byte // marker of the first frame
		noWant bool // the taker's WantBusyPoll says no
		want   []string
		// then: polls may follow want (a second window of a run opens
		// only within busyPollMaxRun of the first: a slow machine may
		// take longer to get there).
		then bool
	}{
		{"polls after taken frames", 50 * time.Millisecond, 1, false,
			[]string{"take 1", "flush", "poll", "take 3", "flush"}, true},
		{"off", 0, 1, false,
			[]string{"take 1", "flush", "take 3", "flush"}, false},
		{"not after declined frames", 50 * time.Millisecond, 2, false,
			[]string{"offer 2", "deliver 2", "take 3", "flush", "poll"}, false},
		{"not unless the taker wants it", 50 * time.Millisecond, 1, true,
			[]string{"take 1", "flush", "take 3", "flush"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newPairEnv(t, link.Options{BusyPoll: tc.window})
			d := &pollingTaker{noWant: tc.noWant}
			d.onPoll = func() { env.send(t, link.VnetHdr{}, frame(3)) }
			if tc.window == 0 || tc.first%2 == 0 || tc.noWant {
				// Nothing polls: frame 3 is sent once the first is done.
				d.onPoll = nil
			}
			env.ep.Attach(d)
			env.send(t, link.VnetHdr{}, frame(tc.first))
			if d.onPoll == nil {
				d.waitEvents(2)
				env.send(t, link.VnetHdr{}, frame(3))
			}
			got := d.waitEvents(len(tc.want))
			env.ep.Attach(nil)
			env.ep.Wait()
			got = d.snapshot()
			if tc.then && len(got) == len(tc.want)+1 && got[len(got)-1] == "poll" {
				got = got[:len(tc.want)]
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
		})
	}
}
