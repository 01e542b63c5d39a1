package link

// FrameTaker is implemented by a dispatcher (the stack.NetworkDispatcher an
// Endpoint is attached to) that handles some frames itself, straight from
// the endpoint's read buffers: the engine's fast path for established UDP
// flows. The endpoint offers it every frame that passed its own checks
// before it builds a PacketBuffer; a frame TakeFrame declines goes to
// DeliverNetworkPacket as usual. Taking a frame costs no allocation: the
// read buffers are reused for the next frame.
type FrameTaker interface {
	// TakeFrame reports whether it consumed fr. It runs on the reader
	// goroutine, as DeliverNetworkPacket does, and must not keep fr's bytes
	// after it returns.
	TakeFrame(fr Frame) bool
	// FlushFrames finishes the work of the frames taken so far (a taker
	// may keep copies of several and send them together). The endpoint
	// calls it, on the reader goroutine, before it waits for the next
	// frame and before it delivers a frame TakeFrame declined, so frames
	// keep their order and none waits for the next one.
	FlushFrames()
}

// Frame is an inbound Ethernet frame offered to a FrameTaker.
type Frame struct {
	// Segs hold the frame's bytes in order, starting with the Ethernet
	// header; Segs[0] holds the first min(frame length, 2048) bytes, so
	// the headers of a frame are contiguous. Their total length is the
	// frame's length (a GSO frame's IP length already repaired).
	Segs [][]byte
	// ChecksumValidated says the endpoint has RX checksum offload: the
	// stack would not verify the frame's checksums (a TAP with the
	// virtio-net header, whose frames may carry partial checksums), so a
	// taker must not either.
	ChecksumValidated bool
}

// Len is the frame's length.
func (fr Frame) Len() int {
	n := 0
	for _, s := range fr.Segs {
		n += len(s)
	}
	return n
}
