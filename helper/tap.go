package helper

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// tunDevice is the clone device every TAP is opened through.
const tunDevice = "/dev/net/tun"

// vnetHdrLen is the size of struct virtio_net_hdr, the kernel's default
// header size on an IFF_VNET_HDR TAP; the engine assumes it, so we never
// change it with TUNSETVNETHDRSZ on a TAP we open.
const vnetHdrLen = 10

// offloadCandidates lists the TUNSETOFFLOAD flag sets to try, best first.
// The kernel refuses TSO without checksum offload, so every set has
// TUN_F_CSUM; TSO6 is harmless when the guest does not use IPv6.
func offloadCandidates() []uint32 {
	return []uint32{
		unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6,
		unix.TUN_F_CSUM | unix.TUN_F_TSO4,
		unix.TUN_F_CSUM,
	}
}

// openTap creates the TAP called name, or attaches to it when it already
// exists. With vnetHdr it asks for IFF_VNET_HDR and offloads and, when the
// kernel refuses either, reopens the TAP without them.
func openTap(name string, vnetHdr bool) (*os.File, proto.TapInfo, error) {
	if vnetHdr {
		f, info, err := openTapFlags(name, unix.IFF_VNET_HDR)
		if err == nil {
			off, oerr := setOffload(int(f.Fd()))
			if oerr == nil {
				info.VnetHdr, info.Offloads = true, off
				return f, info, nil
			}
			// Closing drops a TAP we created (it is not persistent), so
			// the plain reopen below creates it afresh.
			f.Close()
		}
	}
	return openTapFlags(name, 0)
}

// openTapFlags opens the clone device and binds it to the TAP called name
// with IFF_TAP|IFF_NO_PI|extra. IFF_TUN_EXCL makes "create" and "already
// exists" distinguishable without a racy lookup first.
func openTapFlags(name string, extra uint16) (*os.File, proto.TapInfo, error) {
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, proto.TapInfo{}, fmt.Errorf("open %s: %w", tunDevice, err)
	}
	flags := unix.IFF_TAP | unix.IFF_NO_PI | extra
	info := proto.TapInfo{Created: true}
	info.Name, err = tunSetIff(fd, name, flags|unix.IFF_TUN_EXCL)
	switch {
	case errors.Is(err, unix.EBUSY):
		info.Created = false
		info.Name, err = attachTap(fd, name, flags)
	case err != nil:
		err = fmt.Errorf("create TAP %q: TUNSETIFF: %w", name, err)
	}
	if err != nil {
		unix.Close(fd)
		return nil, proto.TapInfo{}, err
	}
	return os.NewFile(uintptr(fd), tunDevice), info, nil
}

// attachTap binds fd to the existing TAP called name. The kernel insists
// that IFF_MULTI_QUEUE matches how the device was created (EINVAL
// otherwise), and sysfs may belong to another network namespace than the
// one we joined, so we try without the flag and then with it.
func attachTap(fd int, name string, flags uint16) (string, error) {
	got, err := tunSetIff(fd, name, flags)
	if err == nil {
		return got, nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return "", fmt.Errorf("attach to existing TAP %q: TUNSETIFF: %w", name, err)
	}
	got, mqErr := tunSetIff(fd, name, flags|unix.IFF_MULTI_QUEUE)
	switch {
	case mqErr == nil:
		return got, nil
	case errors.Is(mqErr, unix.EINVAL):
		return "", fmt.Errorf("attach to existing device %q (is it a TAP device?): TUNSETIFF: %w", name, err)
	default:
		return "", fmt.Errorf("attach to existing multi-queue TAP %q: TUNSETIFF: %w", name, mqErr)
	}
}

// tunSetIff issues TUNSETIFF and returns the device name the kernel chose.
// The ioctl error is returned unwrapped so that callers can test it.
func tunSetIff(fd int, name string, flags uint16) (string, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return "", err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return "", err
	}
	return ifr.Name(), nil
}

// setOffload enables the best offload set the kernel accepts on a TAP
// opened with IFF_VNET_HDR and returns it.
func setOffload(fd int) (uint32, error) {
	var err error
	for _, off := range offloadCandidates() {
		if err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(off)); err == nil {
			return off, nil
		}
	}
	return 0, fmt.Errorf("TUNSETOFFLOAD: %w", err)
}

// InspectTapFD describes an already open TAP descriptor (--netns-type=tapfd).
// It does not take ownership of fd. When the TAP carries virtio-net headers
// it makes sure they are the default 10 bytes and enables offloads, as for
// a TAP the helper opens; VnetHdr is then true even if no offload could be
// enabled, because every frame still carries the header.
func InspectTapFD(fd int) (proto.TapInfo, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return proto.TapInfo{}, fmt.Errorf("ifreq: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return proto.TapInfo{}, fmt.Errorf("TUNGETIFF on fd %d (not a TAP fd?): %w", fd, err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_TAP == 0 {
		return proto.TapInfo{}, fmt.Errorf("fd %d is device %q, a TUN, not a TAP", fd, ifr.Name())
	}
	info := proto.TapInfo{Name: ifr.Name()}
	if flags&unix.IFF_VNET_HDR == 0 {
		return info, nil
	}
	if err := ensureVnetHdrLen(fd); err != nil {
		return proto.TapInfo{}, err
	}
	info.VnetHdr = true
	if off, err := setOffload(fd); err == nil {
		info.Offloads = off
	}
	return info, nil
}

// ensureVnetHdrLen resets the virtio-net header size to the default when
// whoever opened the TAP changed it; the engine reads 10-byte headers.
func ensureVnetHdrLen(fd int) error {
	n, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ)
	if err != nil {
		return fmt.Errorf("TUNGETVNETHDRSZ on fd %d: %w", fd, err)
	}
	if n == vnetHdrLen {
		return nil
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		return fmt.Errorf("TUNSETVNETHDRSZ(%d) on fd %d: %w", vnetHdrLen, fd, err)
	}
	return nil
}
