package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

func TestHostNetwork(t *testing.T) {
	tests := []struct {
		proto, addr, want string
	}{
		{"tcp", "0.0.0.0", "tcp4"}, // Go's "tcp" would make it dual-stack
		{"tcp", "127.0.0.1", "tcp4"},
		{"udp", "0.0.0.0", "udp4"},
		{"tcp", "::", "tcp"}, // dual-stack, as Go does
		{"udp", "::", "udp"},
		{"tcp", "::1", "tcp6"},
		{"udp", "fe80::1%lo", "udp6"},
	}
	for _, tt := range tests {
		if got := hostNetwork(tt.proto, netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("hostNetwork(%s, %s) = %s, want %s", tt.proto, tt.addr, got, tt.want)
		}
	}
}

// TestRealBind binds real host sockets, in a private network namespace.
func TestRealBind(t *testing.T) {
	t.Log(runInNamespace(t, "bind"))
}

// inspectBackend checks each socket it is handed is what the forward says
// and records its local address. It keeps no copy, so a socket is released
// as soon as the server closes its own.
type inspectBackend struct {
	mu    sync.Mutex
	addrs map[int]string
	fail  bool
}

func (b *inspectBackend) AddForward(_ context.Context, fwd proto.Forward, sock *os.File) error {
	addr, err := socketAddr(fwd.Proto, sock)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return errors.New("inspect backend: failing on purpose")
	}
	b.addrs[fwd.ID] = addr
	return nil
}

func (b *inspectBackend) RemoveForward(context.Context, int) error { return nil }

// socketAddr checks sock is a listening TCP socket or a bound UDP socket.
func socketAddr(protocol string, sock *os.File) (string, error) {
	if protocol == policy.ProtoUDP {
		pc, err := net.FilePacketConn(sock)
		if err != nil {
			return "", fmt.Errorf("not a UDP socket: %w", err)
		}
		defer pc.Close()
		if _, ok := pc.(*net.UDPConn); !ok {
			return "", fmt.Errorf("not a UDP socket: %T", pc)
		}
		return pc.LocalAddr().String(), nil
	}
	ln, err := net.FileListener(sock)
	if err != nil {
		return "", fmt.Errorf("not a listening socket: %w", err)
	}
	defer ln.Close()
	if _, ok := ln.(*net.TCPListener); !ok {
		return "", fmt.Errorf("not a TCP listener: %T", ln)
	}
	return ln.Addr().String(), nil
}

// bindInNamespace runs in the namespace made by runInNamespace.
func bindInNamespace(dir string) error {
	path := filepath.Join(dir, "bind.sock")
	ln, err := Listen(path)
	if err != nil {
		return err
	}
	be := &inspectBackend{addrs: make(map[int]string)}
	s := NewServer(be, Options{Plan: testPlan(), EnableIPv6: true})
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	err = bindChecks(path, be)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if serr := <-done; err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	// Close released every host socket.
	for _, a := range [][2]string{{"tcp", "[::]:8090"}, {"tcp4", "0.0.0.0:8091"}, {"tcp6", "[::1]:8080"}} {
		if err := canListen(a[0], a[1]); err != nil {
			return fmt.Errorf("after Close: %w", err)
		}
	}
	fmt.Println("bind: all checks passed")
	return nil
}

type bindStep struct {
	req, want string
	check     func() error // run after the request, when set
}

func bindChecks(path string, be *inspectBackend) error {
	wantAddr := func(id int, addr string) func() error {
		return func() error {
			be.mu.Lock()
			defer be.mu.Unlock()
			if be.addrs[id] != addr {
				return fmt.Errorf("forward %d bound %q, want %q", id, be.addrs[id], addr)
			}
			return nil
		}
	}
	steps := []bindStep{
		{addReq(`{"proto": "tcp", "host_port": 8080, "guest_port": 80}`), idResp(1), wantAddr(1, "0.0.0.0:8080")},
		{addReq(`{"proto": "tcp", "host_port": 8080, "guest_port": 80}`), errAddFailed, nil},
		// "::" is dual-stack, so it collides with 0.0.0.0:8080 ...
		{addReq(`{"proto": "tcp", "host_addr": "::", "host_port": 8080, "guest_port": 80}`), errAddFailed, nil},
		// ... while ::1 is IPv6 only, and 0.0.0.0 IPv4 only.
		{addReq(`{"proto": "tcp", "host_addr": "::1", "host_port": 8080, "guest_port": 80}`), idResp(2), wantAddr(2, "[::1]:8080")},
		{addReq(`{"proto": "udp", "host_port": 8080, "guest_port": 53}`), idResp(3), wantAddr(3, "0.0.0.0:8080")},
		{addReq(`{"proto": "udp", "host_addr": "127.0.0.1", "host_port": 8080, "guest_port": 53}`), errAddFailed, nil},
		{addReq(`{"proto": "tcp", "host_addr": "::", "host_port": 8090, "guest_port": 80}`), idResp(4), func() error {
			if err := wantAddr(4, "[::]:8090")(); err != nil {
				return err
			}
			if canListen("tcp4", "127.0.0.1:8090") == nil {
				return errors.New(`"::" forward is not dual-stack: 127.0.0.1:8090 is free`)
			}
			return nil
		}},
		{addReq(`{"proto": "tcp", "host_port": 8091, "guest_port": 80}`), idResp(5), func() error {
			return canListen("tcp6", "[::1]:8091") // 0.0.0.0 stays IPv4 only
		}},
		{addReq(`{"proto": "tcp", "host_addr": "192.0.2.1", "host_port": 8092, "guest_port": 80}`), errAddFailed, nil},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 1}}`, respEmpty, func() error {
			return canListen("tcp4", "0.0.0.0:8080") // the server closed its copy
		}},
		{addReq(`{"proto": "tcp", "host_port": 8080, "guest_port": 80}`), idResp(6), wantAddr(6, "0.0.0.0:8080")},
	}
	if err := runBindSteps(path, steps); err != nil {
		return err
	}
	// A backend failure closes the socket it was handed.
	be.mu.Lock()
	be.fail = true
	be.mu.Unlock()
	return runBindSteps(path, []bindStep{
		{addReq(`{"proto": "tcp", "host_port": 8095, "guest_port": 80}`), errAddFailed, func() error {
			return canListen("tcp4", "0.0.0.0:8095")
		}},
		{addReq(`{"proto": "udp", "host_port": 8095, "guest_port": 80}`), errAddFailed, func() error {
			return canListenPacket("udp4", "0.0.0.0:8095")
		}},
	})
}

func runBindSteps(path string, steps []bindStep) error {
	for i, st := range steps {
		got, err := request(path, st.req)
		if err != nil {
			return fmt.Errorf("step %d %s: %w", i, st.req, err)
		}
		if got != st.want {
			return fmt.Errorf("step %d %s: got %s, want %s", i, st.req, got, st.want)
		}
		if st.check != nil {
			if err := st.check(); err != nil {
				return fmt.Errorf("step %d %s: %w", i, st.req, err)
			}
		}
	}
	return nil
}

func canListen(network, addr string) error {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("%s %s should be free: %w", network, addr, err)
	}
	return ln.Close()
}

func canListenPacket(network, addr string) error {
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return fmt.Errorf("%s %s should be free: %w", network, addr, err)
	}
	return pc.Close()
}
