package helper

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// configure does what --configure promises, in the network namespace the
// process joined before the Go runtime started (so every thread, and every
// netlink socket, is in it): lo up; the TAP's MTU, MAC and address
// (network+100); the TAP up; a default route via network+2; with IPv6, the
// TAP accepts router advertisements so SLAAC gives the guest an fd00::/64
// address from the engine's RAs.
//
// Without cfg.MACAddress the TAP keeps the random, locally administered
// unicast MAC the kernel gave it when it was created (as the C version does).
func configure(name string, cfg proto.HelperConfig, stderr io.Writer) error {
	plan, err := policy.PlanFor(cfg.CIDR)
	if err != nil {
		return fmt.Errorf("configure: %w", err)
	}
	// One netlink socket for every step (the package-level functions open
	// one per call); it is opened in this thread's network namespace.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("configure: netlink: %w", err)
	}
	defer h.Close()
	if err := linkUp(h, "lo"); err != nil {
		return err
	}
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("configure: find link %q: %w", name, err)
	}
	if err := setLinkParams(h, link, cfg); err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: plan.Guest.AsSlice(), Mask: plan.Netmask}}
	if err := h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("configure: set address %s on %q: %w", addr.IPNet, name, err)
	}
	if cfg.EnableIPv6 {
		acceptRA(name, stderr)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("configure: set %q up: %w", name, err)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: plan.Gateway.AsSlice()}
	// Append, not add: a guest that already has a default route gets a
	// second one, as with the C version (whose ioctl(SIOCADDRT) appends),
	// instead of failing with "file exists".
	if err := h.RouteAppend(route); err != nil {
		return fmt.Errorf("configure: add default route via %s: %w", plan.Gateway, err)
	}
	return nil
}

// linkUp brings the named link up.
func linkUp(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("configure: find link %q: %w", name, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("configure: set %q up: %w", name, err)
	}
	return nil
}

// setLinkParams sets the TAP's MTU and, when asked, its MAC address.
func setLinkParams(h *netlink.Handle, link netlink.Link, cfg proto.HelperConfig) error {
	name := link.Attrs().Name
	if cfg.MTU > 0 {
		if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("configure: set MTU %d on %q: %w", cfg.MTU, name, err)
		}
	}
	if cfg.MACAddress == "" {
		return nil
	}
	hw, err := net.ParseMAC(cfg.MACAddress)
	if err != nil {
		return fmt.Errorf("configure: MAC address %q: %w", cfg.MACAddress, err)
	}
	if err := h.LinkSetHardwareAddr(link, hw); err != nil {
		return fmt.Errorf("configure: set MAC %s on %q: %w", hw, name, err)
	}
	return nil
}

// acceptRA makes sure IPv6 is on for the TAP and that it accepts router
// advertisements. These are the namespace's defaults, so failing to write
// them (a read-only /proc/sys, no IPv6 in the kernel) is only a warning.
func acceptRA(name string, stderr io.Writer) {
	dir := filepath.Join("/proc/sys/net/ipv6/conf", name)
	for _, kv := range [][2]string{{"disable_ipv6", "0"}, {"accept_ra", "1"}} {
		p := filepath.Join(dir, kv[0])
		if err := os.WriteFile(p, []byte(kv[1]), 0); err != nil {
			fmt.Fprintf(stderr, "WARNING: configure: %v\n", err)
		}
	}
}
