package api

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func TestListenMode(t *testing.T) {
	for _, umask := range []int{0o000, 0o022, 0o077, 0o277} {
		path := filepath.Join(t.TempDir(), "api.sock")
		// The umask is process-wide: restore it before anything else runs.
		old := syscall.Umask(umask)
		ln, err := Listen(path)
		syscall.Umask(old)
		if err != nil {
			t.Fatalf("umask %03o: %v", umask, err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Errorf("umask %03o: mode %v, want socket 0600", umask, fi.Mode())
		}
		ln.Close()
		if fileExists(path) {
			t.Errorf("umask %03o: socket file left after Close", umask)
		}
	}
}

func TestListenStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	// A socket file whose server is gone, as a killed process leaves it.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if !fileExists(path) {
		t.Fatal("test set-up: stale socket file missing")
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("new socket not reachable: %v", err)
	}
	c.Close()
}

func TestListenLiveServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.sock")
	live, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if ln, err := Listen(path); err == nil {
		ln.Close()
		t.Fatal("Listen took over the socket of a live server")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error %q does not say the socket is in use", err)
	}
	// The live server's socket still works.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("live server's socket broken: %v", err)
	}
	c.Close()
}

func TestListenRefusesNonSockets(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "stale.sock")
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()

	tests := []struct {
		name  string
		setup func(path string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("data"), 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"symlink to file", func(p string) error { return os.Symlink(target, p) }},
		{"symlink to stale socket", func(p string) error { return os.Symlink(stale, p) }},
		{"dangling symlink", func(p string) error { return os.Symlink(filepath.Join(dir, "nothing"), p) }},
		{"fifo", func(p string) error { return syscall.Mkfifo(p, 0o600) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "api.sock")
			if err := tt.setup(path); err != nil {
				t.Fatal(err)
			}
			before, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if ln, err := Listen(path); err == nil {
				ln.Close()
				t.Fatal("Listen accepted it")
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) || after.Mode() != before.Mode() {
				t.Fatalf("path changed: %v", err)
			}
		})
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "keep me" {
		t.Fatalf("symlink target changed: %q, %v", b, err)
	}
	if fi, err := os.Lstat(stale); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("symlinked stale socket touched: %v", err)
	}
}

func TestListenMissingDirectory(t *testing.T) {
	_, err := Listen(filepath.Join(t.TempDir(), "no", "such", "api.sock"))
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("got %v, want a not-exist error", err)
	}
}

func TestListenOddPaths(t *testing.T) {
	if ln, err := Listen(""); err == nil {
		ln.Close()
		t.Fatal("Listen(\"\") succeeded")
	}
	// "@name" is a file in the working directory, as in the C version, not
	// an abstract socket.
	dir := t.TempDir()
	t.Chdir(dir)
	ln, err := Listen("@api.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if fi, err := os.Lstat(filepath.Join(dir, "@api.sock")); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("no socket file @api.sock in the working directory: %v", err)
	}
}

// TestListenUnixKinds: both socket types listen, accept a connection of
// their type, name the path as their address, and remove the file on
// Close.
func TestListenUnixKinds(t *testing.T) {
	for _, network := range []string{"unix", "unixpacket"} {
		path := filepath.Join(t.TempDir(), "s.sock")
		ln, err := ListenUnix(network, path, "test socket")
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if a := ln.Addr(); a.Network() != network || a.String() != path {
			t.Errorf("%s: address %s %s, want %s %s", network, a.Network(), a.String(), network, path)
		}
		c, err := net.Dial(network, path)
		if err != nil {
			t.Fatalf("%s: dial: %v", network, err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatalf("%s: accept: %v", network, err)
		}
		s.Close()
		c.Close()
		ln.Close()
		if fileExists(path) {
			t.Errorf("%s: socket file left after Close", network)
		}
	}
}

// TestListenBindErrorText: a failing bind reads as net.Listen's would.
func TestListenBindErrorText(t *testing.T) {
	// A directory is in the way; removeStaleSocket would refuse a file,
	// so bind itself is called through bindListen.
	path := t.TempDir()
	_, err := bindListen("unix", path)
	_, want := net.Listen("unix", path)
	if err == nil || want == nil || err.Error() != want.Error() {
		t.Errorf("bind error %v, want net.Listen's %v", err, want)
	}
}
