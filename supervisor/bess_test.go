package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestListenBESS(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bess.sock")
	f, sock, err := listenBESS(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listening, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil || listening != 1 {
		t.Fatalf("SO_ACCEPTCONN = %d, %v; want a listening socket", listening, err)
	}
	typ, err := unix.GetsockoptInt(int(f.Fd()), unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_SEQPACKET {
		t.Fatalf("SO_TYPE = %d, %v; want SOCK_SEQPACKET", typ, err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file: %v, %v; want mode 0600", fi, err)
	}
	// A client connects to the listener the engine would get.
	c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	sock.remove()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file still there after remove: %v", err)
	}
}

// TestBESSSocketRemoveOnlyOurs: a file that replaced ours is not removed.
func TestBESSSocketRemoveOnlyOurs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bess.sock")
	f, sock, err := listenBESS(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock.remove()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("someone else's file was removed: %v", err)
	}
}

func TestListenBESSErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, want string }{
		{filepath.Join(dir, "missing", "bess.sock"), "does not exist"},
		{filepath.Join(file, "bess.sock"), "is not a directory"},
		{filepath.Join(dir, strings.Repeat("x", 110)), "too long"},
		{file, "not a socket"},
	}
	for _, tc := range tests {
		f, _, err := listenBESS(tc.path)
		if err == nil {
			f.Close()
			t.Errorf("listenBESS(%q) succeeded", tc.path)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("listenBESS(%q): %v; want %q", tc.path, err, tc.want)
		}
	}
}
