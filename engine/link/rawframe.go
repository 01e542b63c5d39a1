package link

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// errFrameTooLarge is WriteFrame's answer to a GSO frame on an endpoint
// that cannot segment it.
var errFrameTooLarge = errors.New("link: GSO frame without GSO support")

// GSOFrames reports whether WriteFrame accepts frames larger than the MTU
// with a GSO type in their virtio-net header (a TAP with the header and GSO
// not disabled): the kernel segments them for the guest.
func (e *Endpoint) GSOFrames() bool { return e.vnet && e.gsoKind == stack.HostGSOSupported }

// PartialChecksums reports whether a frame written with WriteFrame may
// carry a partial TCP or UDP checksum (VnetFlagNeedsCsum): the TAP hands it
// to the guest as CHECKSUM_PARTIAL, which the guest's stack accepts without
// computing it. Without the virtio-net header the checksums must be
// complete.
func (e *Endpoint) PartialChecksums() bool { return e.vnet }

// WriteFrame writes one Ethernet frame that the caller built itself (the
// engine's TCP fast path): head holds its headers, payload the rest (may
// be empty), h its virtio-net header (written only when the fd carries one).
// It never waits: a TAP drops what its queue cannot take, and a BESS peer
// that does not read loses the frame (unix.EAGAIN); the sender's TCP
// retransmits as for any lost frame.
func (e *Endpoint) WriteFrame(h VnetHdr, head, payload []byte) error {
	if h.GSOType != VnetGSONone && !e.GSOFrames() {
		return errFrameTooLarge
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	r := &e.tx.raw
	iov := r.iov[:0]
	if e.vnet {
		h.Encode(e.tx.hdr[:])
		iov = appendIovec(iov, e.tx.hdr[:])
	}
	iov = appendIovec(appendIovec(iov, head), payload)
	r.n = len(iov)
	if r.fn == nil {
		r.fn = r.writev
	}
	err := e.rc.Write(r.fn)
	r.iov = [3]unix.Iovec{} // drop the references to the caller's buffers
	if err == nil && r.errno != 0 {
		err = r.errno
	}
	if err != nil {
		e.stats.txErrors.Add(1)
		return err
	}
	e.stats.txFrames.Add(1)
	e.stats.txBytes.Add(uint64(len(head) + len(payload)))
	if h.GSOType != VnetGSONone {
		e.stats.txGSO.Add(1)
	}
	return nil
}

// rawTx is WriteFrame's state, kept in the Endpoint (under wmu) so that a
// frame's write allocates nothing.
type rawTx struct {
	iov   [3]unix.Iovec
	n     int
	errno unix.Errno
	fn    func(fd uintptr) bool
}

// writev runs inside RawConn.Write: one non-blocking writev, never waiting.
func (r *rawTx) writev(fd uintptr) bool {
	for {
		_, _, r.errno = unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&r.iov[0])), uintptr(r.n))
		if r.errno != unix.EINTR {
			return true
		}
	}
}
