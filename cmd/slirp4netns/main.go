// Command slirp4netns provides user-mode networking for unprivileged network
// namespaces. The same binary runs as the supervisor (what users start), the
// short-lived helper that opens the TAP inside the target namespaces, and the
// engine that runs the network stack; the mode is chosen by an environment
// variable that only the supervisor sets when it re-executes itself.
// The runtime would otherwise keep cgroup files open for re-reading the CPU
// limit; those descriptors could take the number of a --ready-fd/--exit-fd
// that the caller left closed and hide the mistake.
//
//go:debug updatemaxprocs=0
//go:debug containermaxprocs=0
package main

import (
	"os"

	"github.com/slirp4netns-go/slirp4netns/engine"
	"github.com/slirp4netns-go/slirp4netns/helper"
	"github.com/slirp4netns-go/slirp4netns/supervisor"
)

func main() {
	switch os.Getenv(supervisor.ModeEnv) {
	case supervisor.ModeHelper:
		os.Exit(helper.Main())
	case supervisor.ModeEngine:
		os.Exit(engine.Main())
	default:
		os.Exit(supervisor.Main(os.Args[1:]))
	}
}
