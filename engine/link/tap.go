package link

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SetOffload issues TUNSETOFFLOAD on a TAP fd: flags (TunFCsum, TunFTSO4,
// TunFTSO6, ...) are the offloaded frames its reader accepts. The TAP must
// have been opened with IFF_VNET_HDR for TSO flags to be useful.
func SetOffload(fd int, flags uint32) error {
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(flags)); err != nil {
		return fmt.Errorf("TUNSETOFFLOAD(%#x) on fd %d: %w", flags, fd, err)
	}
	return nil
}

// TapFlags returns the IFF_* flags (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, ...)
// a TAP fd was attached with (TUNGETIFF), so the engine can tell whether
// the fd it was handed carries virtio-net headers.
func TapFlags(fd int) (uint16, error) {
	var req [unix.IFNAMSIZ + 64]byte
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNGETIFF, uintptr(unsafe.Pointer(&req[0])))
	if errno != 0 {
		return 0, fmt.Errorf("TUNGETIFF on fd %d: %w", fd, errno)
	}
	return *(*uint16)(unsafe.Pointer(&req[unix.IFNAMSIZ])), nil
}

// IsSocket reports whether fd is a socket (a BESS connection) rather than a
// TAP character device.
func IsSocket(fd int) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, fmt.Errorf("fstat fd %d: %w", fd, err)
	}
	return st.Mode&unix.S_IFMT == unix.S_IFSOCK, nil
}
