package dns

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxNameservers is glibc's MAXNS: the resolver uses at most the first three
// nameserver lines, so the relay does the same.
const maxNameservers = 3

// maxResolvConfSize bounds how much of resolv.conf is read; real files are a
// few hundred bytes.
const maxResolvConfSize = 64 << 10

// fileID identifies one version of a file cheaply (no read needed).
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func fileIDOf(fi os.FileInfo) fileID {
	id := fileID{size: fi.Size(), mtime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(st.Dev), st.Ino
	}
	return id
}

// resolvWatcher caches the nameservers of a resolv.conf file and reloads them
// when the file changes. os.Stat follows symlinks, and a replacement by
// rename shows up as a new inode, so both are picked up.
type resolvWatcher struct {
	path    string
	port    int
	recheck time.Duration // at most one stat per recheck interval

	mu        sync.Mutex
	loaded    bool
	lastCheck time.Time
	id        fileID
	servers   []string // host:port, in file order
}

// nameservers returns the current upstream list. When the file is missing,
// unreadable or empty (e.g. caught mid-rewrite) the last good list is kept.
func (w *resolvWatcher) nameservers(now time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.loaded && now.Sub(w.lastCheck) < w.recheck && now.After(w.lastCheck) {
		return w.servers
	}
	w.lastCheck = now
	fi, err := os.Stat(w.path)
	if err != nil {
		return w.servers
	}
	id := fileIDOf(fi)
	if w.loaded && id == w.id {
		return w.servers
	}
	data, err := readLimited(w.path)
	if err != nil || (len(data) == 0 && w.loaded) {
		return w.servers
	}
	w.servers = parseResolvConf(data, w.port)
	w.id = id
	w.loaded = true
	return w.servers
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxResolvConfSize))
}

// parseResolvConf extracts the "nameserver" addresses of a resolv.conf, as
// host:port strings, keeping at most maxNameservers valid entries.
func parseResolvConf(data []byte, port int) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() && len(out) < maxNameservers {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil {
			continue
		}
		out = append(out, net.JoinHostPort(a.Unmap().String(), strconv.Itoa(port)))
	}
	return out
}
