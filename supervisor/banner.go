package supervisor

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"

	"github.com/slirp4netns-go/slirp4netns/policy"
	"github.com/slirp4netns-go/slirp4netns/sandbox"
)

// Version is the version this program reports. It is the C version it
// replaces plus build metadata, so that clients comparing versions (which
// ignore "+..." as semver does, or compare the leading numbers) see 1.2.0.
const Version = "1.2.0+go0.1"

// gvisorModule is the module path whose version --version reports.
const gvisorModule = "gvisor.dev/gvisor"

// unknown is printed for a component whose version is not known.
const unknown = "unknown"

// VersionInfo is what --version prints.
type VersionInfo struct {
	// Version is the program version (normally the constant Version).
	Version string
	// Commit is the VCS revision the binary was built from.
	Commit string
	// GVisor is the version of the gVisor module linked in.
	GVisor string
	// Go is the Go toolchain version.
	Go string
	// Libseccomp is the version of the libseccomp library in use, filled
	// in by the caller (the sandbox package knows it).
	Libseccomp string
}

// BuildVersionInfo returns the VersionInfo of this binary from its build
// information; Libseccomp is left empty for the caller to fill.
func BuildVersionInfo() VersionInfo {
	v := VersionInfo{Version: Version, Commit: unknown, GVisor: unknown, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && s.Value != "" {
			v.Commit = s.Value
		}
	}
	for _, d := range bi.Deps {
		if d.Path != gvisorModule {
			continue
		}
		v.GVisor = d.Version
		if d.Replace != nil && d.Replace.Version != "" {
			v.GVisor = d.Replace.Version
		}
	}
	return v
}

// PrintVersion writes the --version text. The first line is the one tools
// parse ("slirp4netns version X", as runc prints); no later line contains
// the word "version", because Docker takes the last line that does. Empty
// fields print as "unknown".
func PrintVersion(w io.Writer, v VersionInfo) {
	fmt.Fprintf(w, "%s version %s\n", progName, orUnknown(v.Version))
	fmt.Fprintf(w, "commit: %s\n", orUnknown(v.Commit))
	fmt.Fprintf(w, "gvisor: %s\n", orUnknown(v.GVisor))
	fmt.Fprintf(w, "go: %s\n", orUnknown(v.Go))
	fmt.Fprintf(w, "libseccomp: %s\n", orUnknown(v.Libseccomp))
}

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

// PrintBanner writes the block the C version prints on stdout once the TAP
// is open ("Starting slirp" and the address plan), line for line. An
// --outbound-addr given as an interface name is shown as the address it
// resolves to, as the C version does. It is one write, as the C
// version's buffered stdio makes it: a dozen write(2)s to a log file cost
// ~0.1 ms on the way to --ready-fd.
func PrintBanner(w io.Writer, cfg policy.Config, plan policy.Plan) {
	var b bytes.Buffer
	writeBanner(&b, cfg, plan)
	_, _ = w.Write(b.Bytes())
}

// writeBanner formats the banner into b.
func writeBanner(w *bytes.Buffer, cfg policy.Config, plan policy.Plan) {
	fmt.Fprintln(w, "Starting slirp")
	fmt.Fprintf(w, "* MTU:             %d\n", cfg.MTU)
	fmt.Fprintf(w, "* Network:         %s\n", plan.Network.Addr())
	fmt.Fprintf(w, "* Netmask:         %s\n", net.IP(plan.Netmask))
	fmt.Fprintf(w, "* Gateway:         %s\n", plan.Gateway)
	fmt.Fprintf(w, "* DNS:             %s\n", plan.DNS)
	fmt.Fprintf(w, "* DHCP begin:      %s\n", plan.DHCPStart)
	fmt.Fprintf(w, "* DHCP end:        %s\n", plan.DHCPEnd)
	fmt.Fprintf(w, "* Recommended IP:  %s\n", plan.Guest)
	if cfg.APISocket != "" {
		fmt.Fprintf(w, "* API Socket:      %s\n", cfg.APISocket)
	}
	// The C version aligns these two lines one column further right.
	if cfg.OutboundAddr != "" {
		fmt.Fprintf(w, "* Outbound IPv4:    %s\n", showOutbound(cfg.OutboundAddr, false))
	}
	if cfg.OutboundAddr6 != "" {
		fmt.Fprintf(w, "* Outbound IPv6:    %s\n", showOutbound(cfg.OutboundAddr6, true))
	}
	if mac, err := policy.ParseMAC(cfg.MACAddress); cfg.MACAddress != "" && err == nil {
		fmt.Fprintf(w, "* MAC address:     %s\n", mac)
	}
	if !cfg.DisableHostLoopback {
		fmt.Fprintf(w, "WARNING: 127.0.0.1:* on the host is accessible as %s (set --disable-host-loopback to prohibit connecting to 127.0.0.1:*)\n", plan.Gateway)
	}
}

// printWarnings writes the option parser's warnings, one a line, on w
// (the C version prints them on stdout) in one write, like the banner.
func printWarnings(w io.Writer, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	var b bytes.Buffer
	for _, s := range warnings {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	_, _ = w.Write(b.Bytes())
}

// showOutbound returns the address an --outbound-addr(6) value stands for,
// or the value itself when it cannot be resolved (CheckOutbound reports
// that case before the banner is printed).
func showOutbound(value string, want6 bool) string {
	a, err := ResolveOutbound(value, want6)
	if err != nil {
		return value
	}
	return a.String()
}

// ResolveOutbound returns the address an --outbound-addr (want6 false) or
// --outbound-addr6 value stands for: the address itself, or the first
// address of that family of the named interface. Errors carry the C
// version's message.
func ResolveOutbound(value string, want6 bool) (netip.Addr, error) {
	a, err := policy.ChooseOutboundAddr(value, want6, interfaceAddrs)
	if err != nil {
		return netip.Addr{}, policy.OutboundError(want6)
	}
	return a, nil
}

// CheckOutbound checks that --outbound-addr and --outbound-addr6 name an
// address of the right family or an existing interface that has one, as
// the C version does before it starts.
func CheckOutbound(cfg policy.Config) error {
	if cfg.OutboundAddr != "" {
		if _, err := ResolveOutbound(cfg.OutboundAddr, false); err != nil {
			return err
		}
	}
	if cfg.OutboundAddr6 != "" {
		if _, err := ResolveOutbound(cfg.OutboundAddr6, true); err != nil {
			return err
		}
	}
	return nil
}

// interfaceAddrs lists the addresses of the interface called name.
func interfaceAddrs(name string) ([]netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %q: %w", name, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
			out = append(out, ip)
		}
	}
	return out, nil
}

// versionInfo is the VersionInfo that Main prints, with the version of the
// libseccomp we are linked against.
func versionInfo() VersionInfo {
	v := BuildVersionInfo()
	v.Libseccomp = sandbox.LibseccompVersion()
	return v
}
