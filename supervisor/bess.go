package supervisor

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/slirp4netns-go/slirp4netns/supervisor/api"
)

// bessSocket is the BESS socket file the supervisor created, removed on exit.
type bessSocket struct {
	path string
	info fs.FileInfo // identifies our file: only that one is removed
}

// listenBESS creates the SOCK_SEQPACKET socket of --target-type=bess and
// returns the listening socket for the engine, which accepts the clients
// (engine/bess.go). The supervisor keeps no descriptor of it: once the
// engine is gone, connecting fails with ECONNREFUSED instead of hanging.
// Listening before the engine starts is what lets --ready-fd be written
// before User Mode Linux starts; C slirp4netns 1.2.0 writes it only once
// its one client has connected.
func listenBESS(path string) (*os.File, *bessSocket, error) {
	// Stale socket files are replaced, a live server or anything that is
	// not a socket is refused; the socket is 0600 whatever the umask.
	ln, err := api.ListenUnix("unixpacket", path, "BESS socket")
	if err != nil {
		return nil, nil, err
	}
	// The engine holds the socket from here; the file is removed by
	// bessSocket.remove, not by closing this listener.
	ln.SetUnlinkOnClose(false)
	bound := ln.Addr().String() // ListenUnix turns "@x" into "./@x"
	f, err := ln.File()
	ln.Close()
	if err != nil {
		_ = os.Remove(bound)
		return nil, nil, fmt.Errorf("BESS socket %q: %w", path, err)
	}
	fi, err := os.Lstat(bound)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("BESS socket %q: %w", path, err)
	}
	return f, &bessSocket{path: bound, info: fi}, nil
}

// remove deletes the socket file if it is still the one listenBESS made
// (a new slirp4netns may have replaced it meanwhile). The inode number alone
// does not tell: tmpfs reuses a removed file's number at once.
func (b *bessSocket) remove() {
	fi, err := os.Lstat(b.path)
	if err != nil || !os.SameFile(fi, b.info) || fi.Mode().Type() != fs.ModeSocket ||
		!fi.ModTime().Equal(b.info.ModTime()) {
		return
	}
	_ = os.Remove(b.path)
}
