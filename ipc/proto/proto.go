// Package proto defines the bodies of the ipc messages exchanged between the
// supervisor, the helper and the engine. It is separate from package ipc so
// that ipc itself depends on nothing but x/sys/unix.
package proto

import "github.com/slirp4netns-go/slirp4netns/policy"

// HelperConfig is what the helper needs after it has joined the target's
// namespaces (the joining itself happens before the Go runtime starts, driven
// by environment variables; see package helper).
type HelperConfig struct {
	TapName    string `json:"tap_name"`
	Configure  bool   `json:"configure"`
	MTU        int    `json:"mtu"`
	CIDR       string `json:"cidr"`
	EnableIPv6 bool   `json:"enable_ipv6"`
	MACAddress string `json:"mac_address,omitempty"`
	// EnableSeccomp asks the helper to put the light deny-list filter
	// (sandbox.ApplyLightSeccomp) on itself before it touches the TAP.
	EnableSeccomp bool `json:"enable_seccomp,omitempty"`
	// DisableOffload opens the TAP without IFF_VNET_HDR (no virtio-net
	// header, no TSO/checksum offload); for benchmarking and debugging.
	DisableOffload bool `json:"disable_offload,omitempty"`
}

// TapInfo describes the TAP the helper sends back.
type TapInfo struct {
	Name string `json:"name"`
	// VnetHdr is true when every frame on the TAP fd carries a 10-byte
	// struct virtio_net_hdr (IFF_VNET_HDR). A TAP the helper opens has it
	// only together with offloads; an inherited --netns-type=tapfd fd may
	// have it with Offloads == 0 (the header is still there).
	VnetHdr bool `json:"vnet_hdr"`
	// Offloads is the TUNSETOFFLOAD flag set that was accepted.
	Offloads uint32 `json:"offloads"`
	// Created is true when the helper created the TAP (false: it attached
	// to an existing, persistent one).
	Created bool `json:"created"`
}

// LinkKind says what the engine's link fd is.
type LinkKind string

// Link kinds.
const (
	LinkTap  LinkKind = "tap"
	LinkBESS LinkKind = "bess"
)

// EngineStart is the engine's whole configuration; the fd attached is the link.
type EngineStart struct {
	Config policy.Config `json:"config"`
	Link   LinkKind      `json:"link"`
	Tap    TapInfo       `json:"tap"`
}

// Forward is a host port forward the engine must serve; the attached fd is a
// bound TCP listener or UDP socket on the host, made by the supervisor.
type Forward struct {
	ID        int    `json:"id"`
	Proto     string `json:"proto"` // "tcp" or "udp"
	GuestAddr string `json:"guest_addr,omitempty"`
	GuestPort int    `json:"guest_port,omitempty"`
	// HostAddr and HostPort say where the supervisor bound the attached
	// socket (for messages only: the engine serves the fd it is given).
	HostAddr string `json:"host_addr,omitempty"`
	HostPort int    `json:"host_port,omitempty"`
}
