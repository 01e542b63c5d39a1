package helper

import (
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// earlyTap is what earlytap.c parsed from the command line and did: the TAP
// it was asked for (tap, in netns, with mtu, IPv6's sysctls when ipv6), the
// name the kernel gave it and the offloads it took. It always uses
// policy.DefaultCIDR's addresses, a virtio-net header and --configure.
type earlyTap struct {
	tap, name, netns string
	mtu              int
	ipv6             bool
	offloads         uint32
}

// matches reports whether the early thread did what OpenTap would do for
// req: the same namespace (no user namespace to join), TAP name and
// configuration.
func (t earlyTap) matches(req Request) bool {
	c := req.Config
	if req.UsernsPath != "" || req.NetnsPath != t.netns || c.TapName != t.tap || !c.Configure ||
		c.MTU != t.mtu || c.EnableIPv6 != t.ipv6 || c.MACAddress != "" || c.DisableOffload {
		return false
	}
	plan, err := policy.PlanFor(c.CIDR)
	def, _ := policy.PlanFor(policy.DefaultCIDR)
	return err == nil && plan.Network == def.Network && plan.Guest == def.Guest && plan.Gateway == def.Gateway
}

// info is the TapInfo OpenTap returns for a TAP it created with a
// virtio-net header.
func (t earlyTap) info() proto.TapInfo {
	return proto.TapInfo{Name: t.name, Created: true, VnetHdr: true, Offloads: t.offloads}
}
