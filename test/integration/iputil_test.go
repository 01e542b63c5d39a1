package integration

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// ipLink is one entry of `ip -j addr show`.
type ipLink struct {
	Ifname    string   `json:"ifname"`
	MTU       int      `json:"mtu"`
	Address   string   `json:"address"`
	Flags     []string `json:"flags"`
	Operstate string   `json:"operstate"`
	AddrInfo  []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		Prefixlen int    `json:"prefixlen"`
		Scope     string `json:"scope"`
		Tentative bool   `json:"tentative"`
	} `json:"addr_info"`
}

// Up reports whether the link is administratively up.
func (l ipLink) Up() bool { return slices.Contains(l.Flags, "UP") }

// HasAddr reports whether the link has addr/prefixlen.
func (l ipLink) HasAddr(addr string, prefixlen int) bool {
	for _, a := range l.AddrInfo {
		if a.Local == addr && a.Prefixlen == prefixlen {
			return true
		}
	}
	return false
}

// Global6 returns the link's global IPv6 addresses inside prefix (e.g.
// "fd00:"), non-tentative ones only.
func (l ipLink) Global6(prefix string) []string {
	var out []string
	for _, a := range l.AddrInfo {
		if a.Family == "inet6" && a.Scope == "global" && !a.Tentative && strings.HasPrefix(a.Local, prefix) {
			out = append(out, a.Local)
		}
	}
	return out
}

// GuestLink returns the guest's link called name.
func GuestLink(t *testing.T, g *Guest, name string) ipLink {
	t.Helper()
	out := InGuest(t, g, "ip", "-j", "addr", "show", "dev", name)
	var links []ipLink
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j addr show dev %s: %v: %s", name, err, out)
	}
	return links[0]
}

// ipRoute is one entry of `ip -j route show`.
type ipRoute struct {
	Dst     string `json:"dst"`
	Gateway string `json:"gateway"`
	Dev     string `json:"dev"`
}

// GuestDefaultRoute returns the guest's IPv4 default route(s).
func GuestDefaultRoute(t *testing.T, g *Guest) []ipRoute {
	t.Helper()
	out := InGuest(t, g, "ip", "-j", "-4", "route", "show", "default")
	var routes []ipRoute
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		t.Fatalf("ip -j route show default: %v: %s", err, out)
	}
	return routes
}

// WaitGuestGlobal6 waits for SLAAC to give the guest's link a usable
// address in prefix and returns it.
func WaitGuestGlobal6(t *testing.T, g *Guest, dev, prefix string) string {
	t.Helper()
	var addr string
	waitFor(t, 15*time.Second, "a "+prefix+" address (SLAAC) on "+dev, func() bool {
		if a := GuestLink(t, g, dev).Global6(prefix); len(a) > 0 {
			addr = a[0]
			return true
		}
		return false
	})
	return addr
}

// Ping pings addr once from the guest (busybox ping; ping6 for IPv6),
// failing the test if there is no reply.
func Ping(t *testing.T, g *Guest, addr string) {
	t.Helper()
	cmd := "ping"
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		cmd = "ping6"
	}
	var out string
	var err error
	// A few tries: the first may be lost while the guest resolves the
	// gateway's MAC or IPv6 DAD finishes.
	for range 3 {
		if out, err = InGuestErr(g, commandTimeout, "busybox", cmd, "-c", "1", "-W", "2", addr); err == nil {
			return
		}
	}
	t.Fatalf("%s %s from the guest: %v\n%s", cmd, addr, err, out)
}
