// Package engine runs gVisor's netstack on the link fd and NATs the guest's
// flows to host sockets.
package engine

// Main is the engine process's entry point.
func Main() int { return 1 }
