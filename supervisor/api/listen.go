package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// socketMode is the API socket's permission: only its owner may connect,
// whatever the process umask.
const socketMode = 0o600

// probeTimeout bounds the connect(2) that tells a live server at the socket
// path from a stale socket file left by a dead process.
const probeTimeout = time.Second

// Listen creates the API socket at path, owner-only (0600) whatever the
// umask. A stale socket file at path (nobody accepts on it) is replaced; a
// live server at path, a symlink or any file that is not a socket is an
// error and is left untouched. Closing the returned listener removes the
// socket file.
func Listen(path string) (*net.UnixListener, error) {
	return ListenUnix("unix", path, "API socket")
}

// ListenUnix is Listen for any unix socket type: network is "unix" or
// "unixpacket" (the BESS socket); what names the socket in errors.
func ListenUnix(network, path, what string) (*net.UnixListener, error) {
	switch {
	case path == "":
		// Go would autobind an abstract socket nobody can find.
		return nil, fmt.Errorf("%s path is empty", what)
	case strings.HasPrefix(path, "@"):
		// Go takes a leading "@" for the abstract namespace; the C binds a
		// file of that name, relative to the working directory.
		path = "./" + path
	}
	if err := checkSocketPath(path, what); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(network, path, what); err != nil {
		return nil, err
	}
	ul, err := bindListen(network, path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s %q: %w", what, path, err)
	}
	if err := fixMode(path, what); err != nil {
		ul.Close()
		return nil, err
	}
	return ul, nil
}

// listenBacklog is the backlog asked of listen(2); the kernel caps it at
// net.core.somaxconn, which is what Go's net.Listen asks for (read from
// /proc at the cost of an open and two reads on the way to --ready-fd).
// 65535 also fits the 16-bit field of kernels before 4.1.
const listenBacklog = 1<<16 - 1

// bindListen makes the listening socket with socket, fchmod, bind and
// listen, and hands it to package net. The socket inode gets its mode
// before bind(2): Linux creates the socket file with that mode minus the
// umask, so the file is never reachable by others, not even for an
// instant. Errors read as net.Listen's ("listen unix PATH: bind: ...");
// closing the listener removes the socket file, as for net.Listen's.
func bindListen(network, path string) (*net.UnixListener, error) {
	typ := unix.SOCK_STREAM
	if network == "unixpacket" {
		typ = unix.SOCK_SEQPACKET
	}
	opErr := func(call string, err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: &net.UnixAddr{Name: path, Net: network}, Err: os.NewSyscallError(call, err)}
	}
	// Blocking: os.NewFile then leaves it out of the poller; FileListener's
	// duplicate is the non-blocking one package net polls.
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr("socket", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Fchmod(fd, socketMode); err != nil {
		return nil, fmt.Errorf("fchmod %s: %w", path, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, opErr("bind", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		os.Remove(path) // bind made it: do not leave it behind
		return nil, opErr("listen", err)
	}
	ul, err := adopt(f)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return ul, nil
}

// adopt returns the listening socket f as a listener that removes its
// file when closed (f stays the caller's to close).
func adopt(f *os.File) (*net.UnixListener, error) {
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok { // cannot happen for a unix socket; do not leak it if it does
		ln.Close()
		return nil, fmt.Errorf("unexpected listener %T", ln)
	}
	ul.SetUnlinkOnClose(true)
	return ul, nil
}

// fixMode restores 0600 when a umask also removed owner bits (e.g. 0277),
// which would leave the owner unable to connect.
func fixMode(path, what string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("stat %s %q: %w", what, path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s %q was replaced while it was being created", what, path)
	}
	if fi.Mode().Perm() == socketMode {
		return nil
	}
	if err := os.Chmod(path, socketMode); err != nil {
		return fmt.Errorf("chmod %s %q: %w", what, path, err)
	}
	return nil
}

// removeStaleSocket makes path free for bind(2) when it holds a socket file
// nobody listens on, and refuses everything else that exists there.
func removeStaleSocket(network, path, what string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, path, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%s %q: is a symbolic link, refusing to follow or remove it", what, path)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%s %q: exists and is not a socket, refusing to remove it", what, path)
	}
	conn, err := net.DialTimeout(network, path, probeTimeout)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%s %q: already in use by a running server", what, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s %q: cannot tell whether it is stale: %w", what, path, err)
	}
	// Remove only the file that was probed: if it was swapped meanwhile,
	// the new one is somebody else's.
	again, err := os.Lstat(path)
	if err != nil || !os.SameFile(fi, again) {
		return fmt.Errorf("%s %q: changed while checking whether it is stale", what, path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale %s %q: %w", what, path, err)
	}
	return nil
}

// maxSocketPath is the longest path bind(2) accepts for a unix socket:
// sun_path less its terminating NUL.
const maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1

// checkSocketPath turns the errors bind(2) would give for a bad path
// ("invalid argument", "no such file or directory") into messages that name
// the problem.
func checkSocketPath(path, what string) error {
	if len(path) > maxSocketPath {
		return fmt.Errorf("%s path %q is too long (%d bytes; at most %d)", what, path, len(path), maxSocketPath)
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %q: directory %q does not exist: %w", what, path, dir, fs.ErrNotExist)
	case err != nil:
		return fmt.Errorf("%s %q: %w", what, path, err)
	case !st.IsDir():
		return fmt.Errorf("%s %q: %q is not a directory", what, path, dir)
	}
	return nil
}
