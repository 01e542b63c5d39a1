package policy

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// MinMTU is the smallest MTU the stack accepts: the IPv4 minimum (RFC 791).
// The C slirp4netns accepts smaller values at parse time and then fails in
// libslirp with an assertion; we reject them up front.
const MinMTU = 68

// MinMTU6 is the IPv6 minimum link MTU (RFC 8200). Below it IPv6 cannot
// work; the supervisor warns rather than refusing, as the C version runs.
const MinMTU6 = 1280

// maxIfNameLen is IFNAMSIZ-1: the longest Linux interface name.
const maxIfNameLen = 15

// Messages of the C slirp4netns 1.2.0, kept verbatim because scripts and
// users compare them.
const (
	msgMTU             = "MTU must be a positive integer (< 65522)"
	msgMACNeedsConfig  = "--macaddr cannot be specified when --configure or -c is not specified"
	msgTargetType      = `--target-type must be either "netns" or "bess"`
	msgPID             = "PID must be a positive integer"
	msgMACHint         = "macaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."
	msgOutbound4       = "outbound-addr has to be valid ipv4 address or interface name."
	msgOutbound6       = "outbound-addr6 has to be valid ipv6 address or interface name."
	msgNetnsType       = `--netns-type must be either "pid", "path" or "tapfd"`
	msgTapFD           = "TAPFD must be a file descriptor"
	msgMissingBESSPath = "missing the BESS socket path"
	msgMissingTarget   = "missing PID|PATH"
)

// DefaultConfig returns the configuration slirp4netns uses when no option
// is given. NetnsType and TargetType are left empty, which means "pid" and
// "netns": the C version distinguishes an explicit --netns-type=pid (an
// error with --target-type=bess) from the default.
func DefaultConfig() Config {
	return Config{
		ExitFD:  -1,
		ReadyFD: -1,
		MTU:     DefaultMTU,
		CIDR:    DefaultCIDR,
		TapName: DefaultTapName,
	}
}

// ParseCInt parses s the way the C version's strtol(s, &end, 10) with a
// check of *end == '\0' does: leading white space and a sign are allowed,
// the empty string is 0, trailing characters and overflow are errors.
// Scripts rely on this leniency (e.g. "--mtu=+1500"), so it is kept.
func ParseCInt(s string) (int64, bool) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	if s == "" {
		return 0, true
	}
	digits := strings.TrimLeft(t, "+-")
	if len(t)-len(digits) > 1 || digits == "" {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// ValidateMTU checks a --mtu value.
func ValidateMTU(mtu int) error {
	if mtu <= 0 || mtu > MaxMTU {
		return errors.New(msgMTU)
	}
	if mtu < MinMTU {
		return fmt.Errorf("MTU must be at least %d", MinMTU)
	}
	return nil
}

// ValidateFD checks an --exit-fd or --ready-fd value (flag is "exit-fd" or
// "ready-fd"). -1 means "not given".
func ValidateFD(flag string, fd int) error {
	if fd < -1 || fd > math.MaxInt32 {
		return fmt.Errorf("%s must be a non-negative integer", flag)
	}
	return nil
}

// ValidateTargetType checks an explicit --target-type value.
func ValidateTargetType(t TargetType) error {
	if t != TargetNetns && t != TargetBESS {
		return errors.New(msgTargetType)
	}
	return nil
}

// ValidateNetnsType checks an explicit --netns-type value. The C version
// treats every value other than "pid" as "path"; we reject unknown ones so
// that a typo does not turn a PID into a path.
func ValidateNetnsType(t NetnsType) error {
	switch t {
	case NetnsPID, NetnsPath, NetnsTapFD:
		return nil
	}
	return errors.New(msgNetnsType)
}

// ValidateMACNeedsConfigure rejects --macaddress without --configure.
func ValidateMACNeedsConfigure(cfg *Config) error {
	if cfg.MACAddress != "" && !cfg.Configure {
		return errors.New(msgMACNeedsConfig)
	}
	return nil
}

// ValidateBESS rejects the options that conflict with --target-type=bess.
// NetnsType must be empty: even an explicit --netns-type=pid conflicts.
func ValidateBESS(cfg *Config) error {
	switch {
	case cfg.Configure:
		return errors.New("--configure conflicts with --target-type=bess")
	case cfg.NetnsType != "":
		return errors.New("--netns-type conflicts with --target-type=bess")
	case cfg.UsernsPath != "":
		return errors.New("--userns-path conflicts with --target-type=bess")
	}
	return nil
}

// ValidateTarget checks the positional PID|PATH|FD argument for the given
// --netns-type ("" means pid). It does not look at the file system.
func ValidateTarget(t NetnsType, target string) error {
	switch t {
	case "", NetnsPID:
		if n, ok := ParseCInt(target); !ok || n <= 0 || n > math.MaxInt32 {
			return errors.New(msgPID)
		}
	case NetnsTapFD:
		if n, ok := ParseCInt(target); !ok || target == "" || n < 0 || n > math.MaxInt32 {
			return errors.New(msgTapFD)
		}
	case NetnsPath:
		if target == "" {
			return errors.New(msgMissingTarget)
		}
	default:
		return errors.New(msgNetnsType)
	}
	return nil
}

// CanonicalTarget returns the positional argument as the rest of the
// program should use it: a PID or fd in canonical decimal (the C version
// accepts " +42" and uses the number), a path unchanged. It assumes
// ValidateTarget accepted it.
func CanonicalTarget(t NetnsType, target string) string {
	if t == NetnsPath {
		return target
	}
	if n, ok := ParseCInt(target); ok {
		return strconv.FormatInt(n, 10)
	}
	return target
}

// ValidateTapFDConflicts rejects options that need the helper, which does
// not run when the TAP fd is inherited (--netns-type=tapfd): the C version
// silently ignores --configure there, we refuse it.
func ValidateTapFDConflicts(cfg *Config) error {
	if cfg.NetnsType == NetnsTapFD && cfg.Configure {
		return errors.New("--configure conflicts with --netns-type=tapfd")
	}
	return nil
}

// ValidateOutboundAddr checks an --outbound-addr (want6 false) or
// --outbound-addr6 (want6 true) value: an address of that family, or
// something that can be an interface name (whether the interface exists is
// for the caller to check, it is not a pure question). The empty string
// means "not given".
func ValidateOutboundAddr(value string, want6 bool) error {
	if value == "" {
		return nil
	}
	msg := msgOutbound4
	if want6 {
		msg = msgOutbound6
	}
	if a, err := netip.ParseAddr(value); err == nil {
		if a.Zone() != "" || a.Is4() == want6 || a.Is4In6() {
			return errors.New(msg)
		}
		return nil
	}
	if !ValidInterfaceName(value) {
		return errors.New(msg)
	}
	return nil
}

// OutboundError returns the C version's message for an --outbound-addr
// (want6 false) or --outbound-addr6 value that cannot be used.
func OutboundError(want6 bool) error {
	if want6 {
		return errors.New(msgOutbound6)
	}
	return errors.New(msgOutbound4)
}

// ValidInterfaceName reports whether s is acceptable to the Linux kernel as
// a network interface name (dev_valid_name): 1 to 15 bytes, not "." or
// "..", without '/', ':' or white space.
func ValidInterfaceName(s string) bool {
	if s == "" || len(s) > maxIfNameLen || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n\v\f\r")
}

// ParseMAC parses a --macaddress value: six bytes of one or two hex digits
// separated by ':'. The errors carry the C version's two-line message.
func ParseMAC(s string) (net.HardwareAddr, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 6 {
		return nil, fmt.Errorf("%q is an invalid MAC address.  Is it too long?\n%s", s, msgMACHint)
	}
	bad := fmt.Errorf("%q is an invalid MAC address.\n%s", s, msgMACHint)
	if len(parts) != 6 {
		return nil, bad
	}
	mac := make(net.HardwareAddr, 6)
	for i, p := range parts {
		if len(p) < 1 || len(p) > 2 {
			return nil, bad
		}
		v, err := strconv.ParseUint(p, 16, 8)
		if err != nil {
			return nil, bad
		}
		mac[i] = byte(v)
	}
	return mac, nil
}

// ValidateTapName checks TAPNAME: it must be a valid interface name (the C
// version silently truncated long names).
func ValidateTapName(name string) error {
	if !ValidInterfaceName(name) {
		return fmt.Errorf("TAPNAME must be a valid interface name, not %q", name)
	}
	return nil
}

// Validate checks a whole configuration, in the order and with the messages
// of the C version (first the checks it makes while parsing argv, then
// those it makes when building the slirp configuration). Empty NetnsType
// and TargetType mean the defaults; Validate fills them in for the netns
// target type, and rewrites a PID or fd Target in canonical decimal. It is
// pure: interface existence, namespace paths and fds are checked by the
// supervisor.
func Validate(cfg *Config) error {
	checks := []func(*Config) error{
		func(c *Config) error { return ValidateMTU(c.MTU) },
		func(c *Config) error { return ValidateFD("exit-fd", c.ExitFD) },
		func(c *Config) error { return ValidateFD("ready-fd", c.ReadyFD) },
		ValidateMACNeedsConfigure,
		validateTargetKind,
		func(c *Config) error { _, err := ParseCIDR(c.CIDR); return err },
		func(c *Config) error { return ValidateOutboundAddr(c.OutboundAddr, false) },
		func(c *Config) error { return ValidateOutboundAddr(c.OutboundAddr6, true) },
		validateMAC,
	}
	for _, check := range checks {
		if err := check(cfg); err != nil {
			return err
		}
	}
	if cfg.TargetType == "" {
		cfg.TargetType = TargetNetns
	}
	if cfg.TargetType == TargetNetns && cfg.NetnsType == "" {
		cfg.NetnsType = NetnsPID
	}
	return nil
}

// validateTargetKind checks what the positional arguments mean for the
// target type: a BESS socket path, or a PID, path or fd and a TAP name.
func validateTargetKind(cfg *Config) error {
	if cfg.TargetType == TargetBESS {
		if cfg.Target == "" {
			return errors.New(msgMissingBESSPath)
		}
		return ValidateBESS(cfg)
	}
	if cfg.TargetType != "" {
		if err := ValidateTargetType(cfg.TargetType); err != nil {
			return err
		}
	}
	if cfg.NetnsType != "" {
		if err := ValidateNetnsType(cfg.NetnsType); err != nil {
			return err
		}
	}
	if err := ValidateTarget(cfg.NetnsType, cfg.Target); err != nil {
		return err
	}
	cfg.Target = CanonicalTarget(cfg.NetnsType, cfg.Target)
	if err := ValidateTapFDConflicts(cfg); err != nil {
		return err
	}
	if cfg.NetnsType == NetnsTapFD {
		return nil // no TAP is created: the name is unused
	}
	return ValidateTapName(cfg.TapName)
}

func validateMAC(cfg *Config) error {
	if cfg.MACAddress == "" {
		return nil
	}
	_, err := ParseMAC(cfg.MACAddress)
	return err
}
