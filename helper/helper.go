// Package helper opens the TAP device inside the target's namespaces.
//
// The supervisor calls OpenTap, which re-executes the running binary in
// helper mode with the target's namespace files as extra descriptors. A cgo
// constructor (nsenter.c) joins those namespaces before the Go runtime
// starts, because joining a user namespace needs a single-threaded process.
// Main, the helper's body, then creates or attaches to the TAP, configures
// it when asked (--configure) and sends the TAP descriptor back over ipc.
package helper

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/slirp4netns-go/slirp4netns/ipc"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/sandbox"
)

// Environment shared by OpenTap, Main and nsenter.c. modeEnv and modeHelper
// are supervisor.ModeEnv and supervisor.ModeHelper, spelled out because
// package supervisor imports this one. nsenter.c has its own copy of all
// four names (it runs before any Go code).
const (
	modeEnv     = "_SLIRP4NETNS_MODE"
	modeHelper  = "helper"
	usernsFDEnv = "_SLIRP4NETNS_USERNS_FD"
	netnsFDEnv  = "_SLIRP4NETNS_NETNS_FD"
)

// ipcFD is the descriptor of the ipc connection in a child process.
const ipcFD = 3

// Main is the helper process's entry point. It returns the exit status: 0
// once the TAP has been sent, 1 on any error (reported on stderr and to the
// supervisor as ipc.TypeError).
func Main() int {
	// Every thread is already in the target's network namespace (the
	// constructor joined it before any thread existed); locking just keeps
	// netlink work on one thread, which costs nothing in this short process.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return serve(ipcFD, os.Stderr)
}

// serve runs the helper protocol on descriptor fd.
func serve(fd int, stderr io.Writer) int {
	conn, err := ipc.FromFD(fd)
	if err != nil {
		fmt.Fprintf(stderr, "slirp4netns helper: %v\n", err)
		return 1
	}
	defer conn.Close()
	tap, info, err := handle(conn, stderr)
	if err == nil {
		defer tap.Close()
		err = conn.SendBody(ipc.TypeTap, 0, info, tap)
	}
	if err != nil {
		// The supervisor prints the error it receives; print it here only
		// when it cannot be delivered, so the user sees it exactly once.
		if serr := conn.Send(ipc.Message{Type: ipc.TypeError, Error: err.Error()}); serr != nil {
			fmt.Fprintf(stderr, "slirp4netns helper: %v\n", err)
		}
		return 1
	}
	return 0
}

// handle receives the configuration and opens (and configures) the TAP.
func handle(conn *ipc.Conn, stderr io.Writer) (*os.File, proto.TapInfo, error) {
	cfg, err := recvConfig(conn)
	if err != nil {
		return nil, proto.TapInfo{}, err
	}
	if !canJoinNamespaces {
		return nil, proto.TapInfo{}, errors.New("built without cgo: cannot join the target's namespaces")
	}
	if cfg.EnableSeccomp {
		// The namespaces are joined already (before the runtime started):
		// from here the helper never needs ptrace, mount, setns, bpf...
		if err := sandbox.ApplyLightSeccomp(); err != nil {
			return nil, proto.TapInfo{}, fmt.Errorf("helper seccomp: %w", err)
		}
	}
	return openAndConfigure(cfg, stderr)
}

// recvConfig reads the supervisor's TypeHelperConfig message.
func recvConfig(conn *ipc.Conn) (proto.HelperConfig, error) {
	m, files, err := conn.Recv()
	closeFiles(files) // none expected
	if err != nil {
		return proto.HelperConfig{}, fmt.Errorf("receive configuration: %w", err)
	}
	cfg, err := parseConfig(m)
	if err != nil {
		return proto.HelperConfig{}, fmt.Errorf("receive configuration: %w", err)
	}
	return cfg, nil
}

// parseConfig checks and decodes a TypeHelperConfig message. Only what the
// helper needs to be well-formed is checked here; the values were validated
// by the supervisor with package policy.
func parseConfig(m ipc.Message) (proto.HelperConfig, error) {
	var cfg proto.HelperConfig
	if m.Type != ipc.TypeHelperConfig {
		return cfg, fmt.Errorf("unexpected message %q", m.Type)
	}
	if err := m.Decode(&cfg); err != nil {
		return cfg, err
	}
	if cfg.TapName == "" {
		return cfg, errors.New("empty TAP name")
	}
	if cfg.Configure && cfg.MTU < 0 {
		return cfg, fmt.Errorf("invalid MTU %d", cfg.MTU)
	}
	return cfg, nil
}
