// Package supervisor is the process users start: it parses the command
// line, validates it with package policy, runs the helper that opens the TAP,
// starts the engine, serves the API socket and handles --ready-fd, --exit-fd
// and signals. It never touches packets.
package supervisor

// ModeEnv selects the mode of a re-executed child; see cmd/slirp4netns.
const ModeEnv = "_SLIRP4NETNS_MODE"

// Child modes.
const (
	ModeHelper = "helper"
	ModeEngine = "engine"
)
