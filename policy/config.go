// Package policy holds every rule of the slirp4netns man page as plain Go:
// the address plan derived from --cidr, option defaults and validation, the
// host-loopback rule and host port-forward validation. It imports only the
// standard library so that every rule can be table-tested without a kernel.
package policy

import (
	"net"
	"net/netip"
)

// Defaults from the man page.
const (
	DefaultMTU     = 1500
	MaxMTU         = 65521
	DefaultCIDR    = "10.0.2.0/24"
	DefaultTapName = "tap0"
	// MinPrefix and MaxPrefix bound the --cidr prefix length; the plan needs
	// network+100 to be inside the network, hence /25 at most.
	MinPrefix = 1
	MaxPrefix = 25
)

// NetnsType says how the positional PID|PATH argument is interpreted.
type NetnsType string

// Values of --netns-type.
const (
	NetnsPID   NetnsType = "pid"
	NetnsPath  NetnsType = "path"
	NetnsTapFD NetnsType = "tapfd"
)

// TargetType is the value of --target-type.
type TargetType string

// Values of --target-type.
const (
	TargetNetns TargetType = "netns"
	TargetBESS  TargetType = "bess"
)

// Config is the validated configuration of one slirp4netns instance. The
// supervisor builds it from argv; the helper and the engine receive the parts
// they need over ipc (it is JSON-serialisable).
type Config struct {
	Configure           bool       `json:"configure"`
	ExitFD              int        `json:"exit_fd"`  // -1: none
	ReadyFD             int        `json:"ready_fd"` // -1: none
	MTU                 int        `json:"mtu"`
	EnableIPv6          bool       `json:"enable_ipv6"`
	APISocket           string     `json:"api_socket,omitempty"`
	CIDR                string     `json:"cidr"`
	DisableHostLoopback bool       `json:"disable_host_loopback"`
	NetnsType           NetnsType  `json:"netns_type"`
	UsernsPath          string     `json:"userns_path,omitempty"`
	EnableSandbox       bool       `json:"enable_sandbox"`
	EnableSeccomp       bool       `json:"enable_seccomp"`
	OutboundAddr        string     `json:"outbound_addr,omitempty"`  // IPv4 address or interface name, as given
	OutboundAddr6       string     `json:"outbound_addr6,omitempty"` // IPv6 address or interface name, as given
	DisableDNS          bool       `json:"disable_dns"`
	MACAddress          string     `json:"mac_address,omitempty"` // guest TAP MAC (only with Configure)
	TargetType          TargetType `json:"target_type"`
	// Target is the positional PID|PATH (or BESS socket path, or tap fd number).
	Target  string `json:"target"`
	TapName string `json:"tap_name"`
}

// Plan is the address plan derived from --cidr (and -6), per the man page.
type Plan struct {
	Network   netip.Prefix // e.g. 10.0.2.0/24
	Netmask   net.IPMask
	Gateway   netip.Addr   // network+2
	DNS       netip.Addr   // network+3
	DHCPStart netip.Addr   // network+15
	DHCPEnd   netip.Addr   // network+30
	Guest     netip.Addr   // network+100 (--configure address)
	Network6  netip.Prefix // fd00::/64
	Gateway6  netip.Addr   // fd00::2
	DNS6      netip.Addr   // fd00::3
	Guest6    netip.Addr   // fd00::100 (default guest_addr for IPv6 hostfwd)
}
