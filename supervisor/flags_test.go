package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// Warnings as the C version prints them.
const (
	wIPv6    = "WARNING: Support for IPv6 is experimental"
	wSeccomp = "WARNING: Support for seccomp is experimental"
	wOut     = "WARNING: Support for --outbound-addr is experimental"
	wOut6    = "WARNING: Support for --outbound-addr6 is experimental"
	wNoLoop  = "WARNING: --no-host-loopback is deprecated and will be removed in future releases, please use --disable-host-loopback instead."
	wCreate  = "WARNING: --create-sandbox is deprecated and will be removed in future releases, please use --enable-sandbox instead."
	wBESS    = "WARNING: BESS mode is experimental"
	wTooMany = "WARNING: too many arguments"
)

// cfgWith returns the configuration ParseArgs builds for "PID" with the
// given changes.
func cfgWith(edit func(c *policy.Config)) policy.Config {
	c := policy.DefaultConfig()
	c.NetnsType, c.TargetType, c.Target = policy.NetnsPID, policy.TargetNetns, "1234"
	if edit != nil {
		edit(&c)
	}
	return c
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		want     policy.Config
		warnings []string
		help     bool
		version  bool
	}{
		{name: "pid only, tap0 default", args: []string{"1234"}, want: cfgWith(nil)},
		{name: "pid and tap", args: []string{"1234", "tap1"}, want: cfgWith(func(c *policy.Config) { c.TapName = "tap1" })},
		{name: "short flag", args: []string{"-c", "1234", "tap0"}, want: cfgWith(func(c *policy.Config) { c.Configure = true })},
		{name: "cluster", args: []string{"-c6", "1234"}, warnings: []string{wIPv6},
			want: cfgWith(func(c *policy.Config) { c.Configure, c.EnableIPv6 = true, true })},
		{name: "cluster with attached arg", args: []string{"-cr3", "1234"},
			want: cfgWith(func(c *policy.Config) { c.Configure, c.ReadyFD = true, 3 })},
		{name: "cluster with separate arg", args: []string{"-cr", "3", "1234"},
			want: cfgWith(func(c *policy.Config) { c.Configure, c.ReadyFD = true, 3 })},
		{name: "attached and separate", args: []string{"-r3", "-e", "4", "1234"},
			want: cfgWith(func(c *policy.Config) { c.ReadyFD, c.ExitFD = 3, 4 })},
		{name: "short arg may start with dash", args: []string{"-a", "-x", "1234"},
			want: cfgWith(func(c *policy.Config) { c.APISocket = "-x" })},
		{name: "long separate", args: []string{"--mtu", "65520", "1234"}, want: cfgWith(func(c *policy.Config) { c.MTU = 65520 })},
		{name: "long equals", args: []string{"--mtu=65520", "1234"}, want: cfgWith(func(c *policy.Config) { c.MTU = 65520 })},
		{name: "short m", args: []string{"-m65520", "1234"}, want: cfgWith(func(c *policy.Config) { c.MTU = 65520 })},
		{name: "pid in canonical form", args: []string{" +01234"}, want: cfgWith(nil)},
		{name: "strtol leniency", args: []string{"-m", "+9000", "1234"}, want: cfgWith(func(c *policy.Config) { c.MTU = 9000 })},
		{name: "prefix", args: []string{"--conf", "--mt=9000", "1234"},
			want: cfgWith(func(c *policy.Config) { c.Configure, c.MTU = true, 9000 })},
		{name: "prefix of alias pair is not ambiguous", args: []string{"--user=/", "1234"},
			want: cfgWith(func(c *policy.Config) { c.UsernsPath = "/" })},
		{name: "usersns-path alias", args: []string{"--usersns-path", "/", "1234"},
			want: cfgWith(func(c *policy.Config) { c.UsernsPath = "/" })},
		{name: "users-path alias", args: []string{"--users-path", "/", "1234"},
			want: cfgWith(func(c *policy.Config) { c.UsernsPath = "/" })},
		{name: "prefix of the aliases", args: []string{"--users=/", "1234"},
			want: cfgWith(func(c *policy.Config) { c.UsernsPath = "/" })},
		{name: "exact match beats prefix", args: []string{"--outbound-addr=1.2.3.4", "1234"}, warnings: []string{wOut},
			want: cfgWith(func(c *policy.Config) { c.OutboundAddr = "1.2.3.4" })},
		{name: "permutation", args: []string{"1234", "--configure", "tap1", "-m", "1400"},
			want: cfgWith(func(c *policy.Config) { c.Configure, c.TapName, c.MTU = true, "tap1", 1400 })},
		{name: "double dash", args: []string{"1234", "--", "-c"}, warnings: nil,
			want: cfgWith(func(c *policy.Config) { c.TapName = "-c" })},
		{name: "double dash as value", args: []string{"--api-socket", "--", "1234"},
			want: cfgWith(func(c *policy.Config) { c.APISocket = "--" })},
		{name: "too many", args: []string{"1234", "tap0", "x"}, warnings: []string{wTooMany}, want: cfgWith(nil)},
		{name: "everything", args: []string{
			"-c", "-e", "3", "-r", "4", "-m", "65520", "-6", "-a", "/tmp/api.sock", "--cidr=10.1.0.0/16",
			"--disable-host-loopback", "--userns-path=/", "--enable-sandbox", "--enable-seccomp",
			"--outbound-addr=lo", "--outbound-addr6=::1", "--disable-dns", "--macaddress=02:00:00:00:00:01",
			"--target-type=netns", "--netns-type=pid", "1234", "tap9"},
			warnings: []string{wIPv6, wSeccomp, wOut, wOut6},
			want: cfgWith(func(c *policy.Config) {
				c.Configure, c.ExitFD, c.ReadyFD, c.MTU, c.EnableIPv6 = true, 3, 4, 65520, true
				c.APISocket, c.CIDR, c.DisableHostLoopback, c.UsernsPath = "/tmp/api.sock", "10.1.0.0/16", true, "/"
				c.EnableSandbox, c.EnableSeccomp, c.OutboundAddr, c.OutboundAddr6 = true, true, "lo", "::1"
				c.DisableDNS, c.MACAddress, c.TapName = true, "02:00:00:00:00:01", "tap9"
			})},
		{name: "deprecated aliases", args: []string{"--no-host-loopback", "--create-sandbox", "1234"},
			warnings: []string{wNoLoop, wCreate},
			want:     cfgWith(func(c *policy.Config) { c.DisableHostLoopback, c.EnableSandbox = true, true })},
		{name: "netns path", args: []string{"--netns-type=path", "/", "tap0"},
			want: cfgWith(func(c *policy.Config) { c.NetnsType, c.Target = policy.NetnsPath, "/" })},
		{name: "tapfd", args: []string{"--netns-type", "tapfd", "5"},
			want: cfgWith(func(c *policy.Config) { c.NetnsType, c.Target = policy.NetnsTapFD, "5" })},
		{name: "tapfd too many", args: []string{"--netns-type", "tapfd", "5", "tap0"}, warnings: []string{wTooMany},
			want: cfgWith(func(c *policy.Config) { c.NetnsType, c.Target = policy.NetnsTapFD, "5" })},
		{name: "bess", args: []string{"--target-type=bess", "/tmp/bess.sock"}, warnings: []string{wBESS},
			want: cfgWith(func(c *policy.Config) { c.TargetType, c.NetnsType, c.Target = policy.TargetBESS, "", "/tmp/bess.sock" })},
		{name: "ipv6 small mtu warns", args: []string{"-6", "-m", "1000", "1234"},
			warnings: []string{wIPv6, "WARNING: MTU 1000 is below 1280, the IPv6 minimum: IPv6 will not work"},
			want:     cfgWith(func(c *policy.Config) { c.EnableIPv6, c.MTU = true, 1000 })},
		{name: "one-digit mac bytes in canonical form", args: []string{"-c", "--macaddress=2:0:0:0:0:A", "1234"},
			want: cfgWith(func(c *policy.Config) { c.Configure, c.MACAddress = true, "02:00:00:00:00:0a" })},
		{name: "empty outbound after a bad cidr is left to Validate", args: []string{"--cidr=x", "--outbound-addr=", "1234"},
			warnings: []string{wOut}, want: cfgWith(func(c *policy.Config) { c.CIDR = "x" })},
		{name: "empty exit fd is 0 as in C", args: []string{"-e", "", "1234"}, want: cfgWith(func(c *policy.Config) { c.ExitFD = 0 })},

		{name: "help", args: []string{"--help"}, help: true, want: policy.DefaultConfig()},
		{name: "help short", args: []string{"-h"}, help: true, want: policy.DefaultConfig()},
		{name: "help prefix", args: []string{"--he"}, help: true, want: policy.DefaultConfig()},
		{name: "help stops parsing", args: []string{"--help", "--mtu=0", "--bogus"}, help: true, want: policy.DefaultConfig()},
		{name: "help after warning", args: []string{"-6", "--help"}, help: true, warnings: []string{wIPv6},
			want: func() policy.Config { c := policy.DefaultConfig(); c.EnableIPv6 = true; return c }()},
		{name: "version", args: []string{"--version"}, version: true, want: policy.DefaultConfig()},
		{name: "version first in cluster", args: []string{"-vh"}, version: true, want: policy.DefaultConfig()},
		{name: "version after positional", args: []string{"1234", "-v"}, version: true, want: policy.DefaultConfig()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := ParseArgs(tt.args)
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(opts.Config, tt.want) {
				t.Errorf("Config =\n%+v\nwant\n%+v", opts.Config, tt.want)
			}
			if !reflect.DeepEqual(opts.Warnings, tt.warnings) {
				t.Errorf("Warnings = %q, want %q", opts.Warnings, tt.warnings)
			}
			if opts.Help != tt.help || opts.Version != tt.version {
				t.Errorf("Help, Version = %v, %v; want %v, %v", opts.Help, opts.Version, tt.help, tt.version)
			}
		})
	}
}

func TestParseArgsPosixlyCorrect(t *testing.T) {
	t.Setenv("POSIXLY_CORRECT", "1")
	opts, err := ParseArgs([]string{"-m", "1400", "1234", "-c"})
	if err != nil {
		t.Fatal(err)
	}
	want := cfgWith(func(c *policy.Config) { c.MTU, c.TapName = 1400, "-c" })
	if !reflect.DeepEqual(opts.Config, want) {
		t.Fatalf("Config = %+v, want %+v", opts.Config, want)
	}
}

// cliCase is one command line and what the C slirp4netns 1.2.0 does with
// it before it starts anything: the lines on stdout before the usage text,
// whether the usage text follows, stderr and the exit status. Unless ours
// is set, we behave the same.
type cliCase struct {
	name   string
	args   []string
	stdout []string // warnings
	usage  bool
	stderr string // without the final newline
	code   int
	// ours, when set, is what we do instead (deliberate differences).
	ours *cliResult
	// noC: the C version would get past its checks and start; not run.
	noC bool
}

type cliResult struct {
	stdout []string
	usage  bool
	stderr string
	code   int
}

// nopid is a PID that cannot exist (above the kernel's PID_MAX_LIMIT), for
// the cases where the C version must not find its target.
const nopid = "999999999"

var cliCases = []cliCase{
	{name: "ambiguous", args: []string{"--e", "1"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--e' is ambiguous; possibilities: '--exit-fd' '--enable-ipv6' '--enable-sandbox' '--enable-seccomp'"},
	{name: "ambiguous with value", args: []string{"--e=3", "1"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--e=3' is ambiguous; possibilities: '--exit-fd' '--enable-ipv6' '--enable-sandbox' '--enable-seccomp'"},
	{name: "ambiguous outbound", args: []string{"--outbound", "1"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--outbound' is ambiguous; possibilities: '--outbound-addr' '--outbound-addr6'"},
	{name: "ambiguous disable", args: []string{"--disable", "1"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--disable' is ambiguous; possibilities: '--disable-host-loopback' '--disable-dns'"},
	{name: "ambiguous empty name", args: []string{"--=x", "1"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--=x' is ambiguous; possibilities: '--configure' '--exit-fd' '--ready-fd' '--mtu' '--cidr' " +
			"'--disable-host-loopback' '--no-host-loopback' '--netns-type' '--userns-path' '--api-socket' '--enable-ipv6' " +
			"'--enable-sandbox' '--create-sandbox' '--enable-seccomp' '--help' '--version' '--outbound-addr' '--outbound-addr6' " +
			"'--disable-dns' '--macaddress' '--target-type'"},
	{name: "unrecognized", args: []string{"--foo"}, usage: true, code: 1, stderr: "slirp4netns: unrecognized option '--foo'"},
	{name: "unrecognized with value", args: []string{"--foo=bar", "1"}, usage: true, code: 1,
		stderr: "slirp4netns: unrecognized option '--foo=bar'"},
	{name: "invalid short", args: []string{"-x", "1"}, usage: true, code: 1, stderr: "slirp4netns: invalid option -- 'x'"},
	{name: "invalid short W", args: []string{"-W", "foo"}, usage: true, code: 1, stderr: "slirp4netns: invalid option -- 'W'"},
	{name: "invalid short colon", args: []string{"-:"}, usage: true, code: 1, stderr: "slirp4netns: invalid option -- ':'"},
	{name: "invalid in cluster", args: []string{"-6x", "1"}, stdout: []string{wIPv6}, usage: true, code: 1,
		stderr: "slirp4netns: invalid option -- 'x'"},
	{name: "invalid short non-ASCII", args: []string{"-\u00e9", "1"}, usage: true, code: 1, stderr: "slirp4netns: invalid option -- '\xc3'"},
	{name: "single dash long", args: []string{"-configure", "1"}, usage: true, code: 1, stderr: "slirp4netns: invalid option -- 'o'"},
	{name: "short missing arg", args: []string{"-r"}, usage: true, code: 1, stderr: "slirp4netns: option requires an argument -- 'r'"},
	{name: "short missing arg in cluster", args: []string{"1", "-cm"}, usage: true, code: 1,
		stderr: "slirp4netns: option requires an argument -- 'm'"},
	{name: "long missing arg", args: []string{"--mtu"}, usage: true, code: 1, stderr: "slirp4netns: option '--mtu' requires an argument"},
	{name: "prefix missing arg names the option", args: []string{"--mt"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--mtu' requires an argument"},
	{name: "no argument allowed", args: []string{"--conf=x", "1"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--configure' doesn't allow an argument"},
	{name: "help with argument", args: []string{"--help=x"}, usage: true, code: 1,
		stderr: "slirp4netns: option '--help' doesn't allow an argument"},
	{name: "mtu zero", args: []string{"--mtu=0", "1", "t"}, usage: true, code: 1, stderr: "MTU must be a positive integer (< 65522)"},
	{name: "mtu too big", args: []string{"--mtu=65522", "1", "t"}, usage: true, code: 1, stderr: "MTU must be a positive integer (< 65522)"},
	{name: "mtu negative", args: []string{"--mtu=-1", "1", "t"}, usage: true, code: 1, stderr: "MTU must be a positive integer (< 65522)"},
	{name: "mtu empty", args: []string{"--mtu=", "1", "t"}, usage: true, code: 1, stderr: "MTU must be a positive integer (< 65522)"},
	{name: "mtu junk", args: []string{"-m", "1x", "1", "t"}, usage: true, code: 1, stderr: "MTU must be a positive integer (< 65522)"},
	{name: "mtu below IPv4 minimum", args: []string{"-m", "60", nopid, "t"}, noC: true,
		ours: &cliResult{usage: true, code: 1, stderr: "MTU must be at least 68"}},
	{name: "exit fd negative", args: []string{"-e", "-1", "1", "t"}, usage: true, code: 1, stderr: "exit-fd must be a non-negative integer"},
	{name: "ready fd junk", args: []string{"-r", "abc", "1", "t"}, usage: true, code: 1, stderr: "ready-fd must be a non-negative integer"},
	{name: "ready fd overflow", args: []string{"-r", "99999999999999999999", "1", "t"}, usage: true, code: 1,
		stderr: "ready-fd must be a non-negative integer"},
	{name: "mac without configure", args: []string{"--macaddress=zz", "1", "t"}, usage: true, code: 1,
		stderr: "--macaddr cannot be specified when --configure or -c is not specified"},
	{name: "bad mac", args: []string{"-c", "--macaddress=zz", nopid, "t"}, code: 1,
		stderr: "\"zz\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."},
	{name: "mac too long", args: []string{"-c", "--macaddress=00:11:22:33:44:55:66", nopid, "t"}, code: 1,
		stderr: "\"00:11:22:33:44:55:66\" is an invalid MAC address.  Is it too long?\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."},
	{name: "target type", args: []string{"--target-type=foo", "1", "t"}, usage: true, code: 1,
		stderr: `--target-type must be either "netns" or "bess"`},
	{name: "target type empty", args: []string{"--target-type=", "1", "t"}, usage: true, code: 1,
		stderr: `--target-type must be either "netns" or "bess"`},
	{name: "bess configure", args: []string{"--target-type=bess", "-c", "/nonexistent-h5"}, usage: true, code: 1,
		stderr: "--configure conflicts with --target-type=bess"},
	{name: "bess netns type", args: []string{"--target-type=bess", "--netns-type=pid", "/nonexistent-h5"}, usage: true, code: 1,
		stderr: "--netns-type conflicts with --target-type=bess"},
	{name: "bess userns", args: []string{"--target-type=bess", "--userns-path=/", "/nonexistent-h5"}, usage: true, code: 1,
		stderr: "--userns-path conflicts with --target-type=bess"},
	{name: "bess no socket", args: []string{"--target-type=bess"}, usage: true, code: 1},
	{name: "bess too many", args: []string{"--target-type=bess", "a", "b"}, usage: true, code: 1, stderr: "too many arguments"},
	{name: "bess mac before count", args: []string{"--target-type=bess", "--macaddress=x"}, usage: true, code: 1,
		stderr: "--macaddr cannot be specified when --configure or -c is not specified"},
	{name: "userns missing", args: []string{"--userns-path=/nonexistent-h5", "1", "t"}, usage: true, code: 1,
		stderr: "userns path doesn't exist: /nonexistent-h5"},
	{name: "pid zero", args: []string{"0", "t"}, usage: true, code: 1, stderr: "PID must be a positive integer"},
	{name: "pid text", args: []string{"abc", "t"}, usage: true, code: 1, stderr: "PID must be a positive integer"},
	{name: "double dash makes -c the pid", args: []string{"--", "-c", "1"}, usage: true, code: 1, stderr: "PID must be a positive integer"},
	{name: "no arguments", args: []string{}, usage: true, code: 1},
	{name: "dash alone is positional", args: []string{"-"}, usage: true, code: 1,
		ours: &cliResult{usage: true, code: 1, stderr: "PID must be a positive integer"}},
	{name: "tap name optional", args: []string{"1"}, usage: true, code: 1,
		ours: &cliResult{code: 0}, noC: false},
	{name: "netns path missing", args: []string{"--netns-type=path", "/nonexistent-h5", "t"}, usage: true, code: 1,
		stderr: "existing path expected when --netns-type=path: No such file or directory"},
	{name: "netns type unknown", args: []string{"--netns-type=foo", "/nonexistent-h5", "t"}, usage: true, code: 1,
		stderr: "existing path expected when --netns-type=path: No such file or directory",
		ours:   &cliResult{usage: true, code: 1, stderr: `--netns-type must be either "pid", "path" or "tapfd"`}},
	{name: "tapfd negative", args: []string{"--netns-type=tapfd", "--", "-1"}, noC: true,
		ours: &cliResult{usage: true, code: 1, stderr: "TAPFD must be a file descriptor"}},
	{name: "tapfd configure", args: []string{"-c", "--netns-type=tapfd", "3"}, noC: true,
		ours: &cliResult{usage: true, code: 1, stderr: "--configure conflicts with --netns-type=tapfd"}},
	{name: "usersns-path alias", args: []string{"--usersns-path=/", nopid, "t"}, usage: true, code: 1,
		stderr: "slirp4netns: unrecognized option '--usersns-path=/'", ours: &cliResult{code: 0}},
	{name: "cidr not network", args: []string{"--cidr=10.0.2.1/24", nopid, "t"}, code: 1,
		stderr: "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24"},
	{name: "cidr prefix", args: []string{"--cidr=10.0.2.0/26", nopid, "t"}, code: 1, stderr: "prefix length needs to be 1-25"},
	{name: "cidr prefix zero", args: []string{"--cidr=10.0.2.0/0", nopid, "t"}, code: 1, stderr: "prefix length needs to be 1-25"},
	{name: "cidr address", args: []string{"--cidr=300.0.2.0/24", nopid, "t"}, code: 1, stderr: "invalid network address: 300.0.2.0"},
	{name: "cidr syntax", args: []string{"--cidr=10.0.2.0", nopid, "t"}, code: 1, stderr: "invalid CIDR: 10.0.2.0"},
	{name: "cidr after mtu", args: []string{"--mtu=65521", "--cidr=bad", nopid, "t"}, code: 1, stderr: "invalid CIDR: bad"},
	{name: "outbound interface missing", args: []string{"--outbound-addr=nosuchif0", nopid, "t"}, stdout: []string{wOut}, code: 1,
		stderr: "outbound-addr has to be valid ipv4 address or interface name."},
	{name: "outbound6 interface missing", args: []string{"--outbound-addr6=nosuchif0", nopid, "t"}, stdout: []string{wOut6}, code: 1,
		stderr: "outbound-addr has to be valid ipv4 address or iterface name.",
		ours:   &cliResult{stdout: []string{wOut6}, code: 1, stderr: "outbound-addr6 has to be valid ipv6 address or interface name."}},
	{name: "outbound6 v4 address", args: []string{"--outbound-addr6=1.2.3.4", nopid, "t"}, stdout: []string{wOut6}, code: 1,
		stderr: "outbound-addr has to be valid ipv4 address or iterface name.",
		ours:   &cliResult{stdout: []string{wOut6}, code: 1, stderr: "outbound-addr6 has to be valid ipv6 address or interface name."}},
	{name: "warnings before error", args: []string{"-6", "--enable-seccomp", "--no-host-loopback", "--create-sandbox",
		"--outbound-addr=1.2.3.4", "--mtu=0", nopid, "t"},
		stdout: []string{wIPv6, wSeccomp, wNoLoop, wCreate, wOut}, usage: true, code: 1,
		stderr: "MTU must be a positive integer (< 65522)"},
	{name: "error before help", args: []string{"--mtu=0", "--help"}, usage: true, code: 1, stderr: "MTU must be a positive integer (< 65522)"},
	{name: "help before error", args: []string{"--help", "--mtu=0"}, usage: true, code: 0},
	{name: "empty pid", args: []string{"", "t"}, usage: true, code: 1, stderr: "PID must be a positive integer"},
	{name: "empty exit fd is accepted", args: []string{"-e", "", "-m", "0", "1", "t"}, usage: true, code: 1,
		stderr: "MTU must be a positive integer (< 65522)"},
	{name: "last netns type wins", args: []string{"--netns-type=path", "--netns-type=pid", "0", "t"}, usage: true, code: 1,
		stderr: "PID must be a positive integer"},
	{name: "options after positionals", args: []string{"1", "t", "-x"}, usage: true, code: 1, stderr: "slirp4netns: invalid option -- 'x'"},
	{name: "long option takes an option-like value", args: []string{"--ready-fd", "--mtu=0", "1"}, usage: true, code: 1,
		stderr: "ready-fd must be a non-negative integer"},
	{name: "double dash before path", args: []string{"--netns-type=path", "--", "/nonexistent-h5"}, usage: true, code: 1,
		ours: &cliResult{usage: true, code: 1, stderr: "existing path expected when --netns-type=path: No such file or directory"}},
	{name: "bess empty netns type", args: []string{"--target-type=bess", "--netns-type=", "/x"}, usage: true, code: 1,
		stderr: "--netns-type conflicts with --target-type=bess"},
	// Options given with an empty value: the C version rejects them when
	// it builds its configuration, in its order (CIDR, outbound addresses,
	// MAC address).
	{name: "empty mac", args: []string{"-c", "--macaddress=", nopid, "t"}, code: 1,
		stderr: "\"\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."},
	{name: "empty outbound", args: []string{"--outbound-addr=", nopid, "t"}, stdout: []string{wOut}, code: 1,
		stderr: "outbound-addr has to be valid ipv4 address or interface name."},
	{name: "empty outbound6", args: []string{"--outbound-addr6", "", nopid, "t"}, stdout: []string{wOut6}, code: 1,
		stderr: "outbound-addr has to be valid ipv4 address or iterface name.",
		ours:   &cliResult{stdout: []string{wOut6}, code: 1, stderr: "outbound-addr6 has to be valid ipv6 address or interface name."}},
	{name: "bad cidr before empty outbound", args: []string{"--outbound-addr=", "--cidr=bad", nopid, "t"}, stdout: []string{wOut}, code: 1,
		stderr: "invalid CIDR: bad"},
	{name: "bad outbound before empty outbound6", args: []string{"--outbound-addr6=", "--outbound-addr=nosuchif0", nopid, "t"},
		stdout: []string{wOut6, wOut}, code: 1, stderr: "outbound-addr has to be valid ipv4 address or interface name."},
	{name: "empty outbound before empty mac", args: []string{"-c", "--macaddress=", "--outbound-addr=", nopid, "t"},
		stdout: []string{wOut}, code: 1, stderr: "outbound-addr has to be valid ipv4 address or interface name."},
	{name: "bad mac after good outbound", args: []string{"-c", "--macaddress=", "--outbound-addr=127.0.0.1", nopid, "t"},
		stdout: []string{wOut}, code: 1,
		stderr: "\"\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."},
	{name: "bess empty outbound", args: []string{"--target-type=bess", "--outbound-addr=", "/nonexistent-h5/b.sock"},
		stdout: []string{wOut, wBESS}, code: 1, stderr: "outbound-addr has to be valid ipv4 address or interface name."},
	{name: "mac plus sign", args: []string{"-c", "--macaddress=+2:00:00:00:00:01", nopid, "t"}, noC: true,
		ours: &cliResult{code: 1, stderr: "\"+2:00:00:00:00:01\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."}},
	// inet_pton takes it; an IPv4-mapped source cannot be bound for IPv6.
	{name: "outbound6 v4-mapped", args: []string{"--outbound-addr6=::ffff:1.2.3.4", nopid, "t"}, noC: true,
		ours: &cliResult{stdout: []string{wOut6}, code: 1, stderr: "outbound-addr6 has to be valid ipv6 address or interface name."}},
	// The C version passes an empty TAPNAME to the kernel (which names the
	// TAP) and truncates a long one; we want a valid interface name.
	{name: "tap name empty", args: []string{nopid, ""}, noC: true,
		ours: &cliResult{code: 1, stderr: `TAPNAME must be a valid interface name, not ""`}},
	{name: "tap name too long", args: []string{nopid, "tap456789abcdef0"}, noC: true,
		ours: &cliResult{code: 1, stderr: `TAPNAME must be a valid interface name, not "tap456789abcdef0"`}},
	// MAC addresses the C version's sscanf("%x") loop takes in part or
	// misreads (it would set 02:00:00:00:00:00 for the first two); we
	// refuse them with its message.
	{name: "mac with dashes", args: []string{"-c", "--macaddress=02-00-00-00-00-01", nopid, "t"}, noC: true,
		ours: &cliResult{code: 1, stderr: "\"02-00-00-00-00-01\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."}},
	{name: "mac five bytes", args: []string{"-c", "--macaddress=02:00:00:00:00", nopid, "t"}, noC: true,
		ours: &cliResult{code: 1, stderr: "\"02:00:00:00:00\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."}},
	{name: "mac hex prefix", args: []string{"-c", "--macaddress=0x2:00:00:00:00:01", nopid, "t"}, noC: true,
		ours: &cliResult{code: 1, stderr: "\"0x2:00:00:00:00:01\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."}},
	{name: "mac trailing junk", args: []string{"-c", "--macaddress=02:00:00:00:00:0g", nopid, "t"}, noC: true,
		ours: &cliResult{code: 1, stderr: "\"02:00:00:00:00:0g\" is an invalid MAC address.\nmacaddress has to be a valid MAC address (hex string, 6 bytes, each byte separated by a ':')."}},
	{name: "help first in cluster", args: []string{"-h6"}, usage: true, code: 0},
	{name: "help last in cluster", args: []string{"-6h"}, stdout: []string{wIPv6}, usage: true, code: 0},
	{name: "warning then help", args: []string{"-6", "--help"}, stdout: []string{wIPv6}, usage: true, code: 0},
}

// frontEnd runs what Main runs before it starts anything, writing what
// Main writes (the warnings to stdout, as the C version does).
func frontEnd(args []string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	code = func() int {
		opts, err := ParseArgs(args)
		for _, w := range opts.Warnings {
			fmt.Fprintln(&out, w)
		}
		if err != nil {
			return ReportParseError(&out, &errb, err)
		}
		if opts.Help {
			PrintUsage(&out)
			return 0
		}
		cfg := opts.Config
		if err := policy.Validate(&cfg); err != nil {
			fmt.Fprintln(&errb, err)
			return 1
		}
		if err := CheckOutbound(cfg); err != nil {
			fmt.Fprintln(&errb, err)
			return 1
		}
		return 0
	}()
	return out.String(), errb.String(), code
}

func (c cliCase) expected(ours bool) (stdout, stderr string, code int) {
	r := cliResult{stdout: c.stdout, usage: c.usage, stderr: c.stderr, code: c.code}
	if ours && c.ours != nil {
		r = *c.ours
	}
	var b strings.Builder
	for _, w := range r.stdout {
		b.WriteString(w + "\n")
	}
	if r.usage {
		b.WriteString(usageText)
	}
	if r.stderr != "" {
		stderr = r.stderr + "\n"
	}
	return b.String(), stderr, r.code
}

func TestCommandLineErrors(t *testing.T) {
	for _, c := range cliCases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := frontEnd(c.args)
			wantOut, wantErr, wantCode := c.expected(true)
			if stdout != wantOut || stderr != wantErr || code != wantCode {
				t.Errorf("args %q:\nstdout %q\nstderr %q\ncode %d\nwant\nstdout %q\nstderr %q\ncode %d",
					c.args, stdout, stderr, code, wantOut, wantErr, wantCode)
			}
		})
	}
}

// cBinary is the C slirp4netns the table was taken from; CI installs it.
func cBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv("SLIRP4NETNS_C_BINARY")
	if path == "" {
		path = "/usr/bin/slirp4netns"
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the C slirp4netns is needed to check the table (set SLIRP4NETNS_C_BINARY): %v", err)
	}
	return path
}

// runC runs the C slirp4netns as "slirp4netns" with args, in an empty
// directory, and returns what it printed (stderr with a final newline, which
// some of its messages lack).
func runC(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Args = append([]string{"slirp4netns"}, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run C slirp4netns: %v", err)
	}
	stderr = errb.String()
	if stderr != "" && !strings.HasSuffix(stderr, "\n") {
		stderr += "\n"
	}
	return out.String(), stderr, code
}

// TestCommandLineErrorsMatchC re-checks the table against the C binary.
func TestCommandLineErrorsMatchC(t *testing.T) {
	bin := cBinary(t)
	for _, c := range cliCases {
		if c.noC {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runC(t, bin, c.args...)
			wantOut, wantErr, wantCode := c.expected(false)
			if stdout != wantOut || stderr != wantErr || code != wantCode {
				t.Errorf("C slirp4netns %q:\nstdout %q\nstderr %q\ncode %d\ntable says\nstdout %q\nstderr %q\ncode %d",
					c.args, stdout, stderr, code, wantOut, wantErr, wantCode)
			}
		})
	}
}

func TestHelpGolden(t *testing.T) {
	want, err := os.ReadFile("testdata/help.golden")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	PrintUsage(&b)
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("usage differs from testdata/help.golden:\n%s", b.String())
	}
}

func TestHelpMatchesC(t *testing.T) {
	bin := cBinary(t)
	for _, flag := range []string{"--help", "-h"} {
		stdout, stderr, code := runC(t, bin, flag)
		var b bytes.Buffer
		PrintUsage(&b)
		if stdout != b.String() || stderr != "" || code != 0 {
			t.Errorf("C %s: code %d stderr %q stdout\n%s\nours\n%s", flag, code, stderr, stdout, b.String())
		}
	}
}

// TestHelpMentionsFeatures checks the strings rootlesskit and podman look
// for in --help to detect features.
func TestHelpMentionsFeatures(t *testing.T) {
	var b bytes.Buffer
	PrintUsage(&b)
	for _, s := range []string{"--netns-type", "--userns-path", "--cidr", "--disable-host-loopback", "--api-socket",
		"--enable-sandbox", "--enable-seccomp", "--enable-ipv6", "--outbound-addr", "--disable-dns", "--macaddress", "--mtu"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("usage lacks %q", s)
		}
	}
}

func TestReportParseError(t *testing.T) {
	tests := []struct {
		err              error
		wantOut, wantErr string
	}{
		{&UsageError{Msg: "bad"}, usageText, "bad\n"},
		{&UsageError{}, usageText, ""},
		{fmt.Errorf("wrapped: %w", &UsageError{Msg: "inner"}), usageText, "inner\n"},
		{errors.New("plain"), "", "plain\n"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if code := ReportParseError(&out, &errb, tt.err); code != 1 {
			t.Errorf("%v: code %d", tt.err, code)
		}
		if out.String() != tt.wantOut || errb.String() != tt.wantErr {
			t.Errorf("%v: stdout %q stderr %q", tt.err, out.String(), errb.String())
		}
	}
}

func TestCheckFDs(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	open := int(w.Fd())
	closed := int(r.Fd())
	if err := CheckFDs(cfgWith(func(c *policy.Config) { c.ExitFD, c.ReadyFD = open, -1 })); err != nil {
		t.Errorf("open fd rejected: %v", err)
	}
	if err := CheckFDs(cfgWith(nil)); err != nil {
		t.Errorf("no fds: %v", err)
	}
	w.Close()
	err = CheckFDs(cfgWith(func(c *policy.Config) { c.ReadyFD = open }))
	if err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("ready-fd %d is not an open file descriptor", open)) {
		t.Errorf("closed ready fd: %v", err)
	}
	err = CheckFDs(cfgWith(func(c *policy.Config) { c.ExitFD, c.ReadyFD = open, closed }))
	if err == nil || !strings.HasPrefix(err.Error(), "exit-fd") {
		t.Errorf("closed exit fd: %v", err)
	}
}

func FuzzParseArgs(f *testing.F) {
	for _, c := range cliCases {
		f.Add(strings.Join(c.args, "\x00"))
	}
	f.Add("-c6\x00--mtu\x0065520\x001234\x00tap0")
	f.Add("--target-type=bess\x00/x")
	f.Fuzz(func(t *testing.T, joined string) {
		args := strings.Split(joined, "\x00")
		opts, err := ParseArgs(args)
		if err != nil {
			// Besides usage errors, only an option given an empty value
			// that the C version refuses after parsing.
			var ue *UsageError
			if !errors.As(err, &ue) && !strings.HasPrefix(err.Error(), `"" is an invalid MAC address.`) &&
				!strings.HasPrefix(err.Error(), "outbound-addr") {
				t.Fatalf("ParseArgs(%q): error %v is not a *UsageError", args, err)
			}
			if err.Error() == "" {
				t.Fatalf("ParseArgs(%q): empty error text", args)
			}
			return
		}
		if opts.Help || opts.Version {
			return
		}
		c := opts.Config
		if c.TargetType == policy.TargetNetns && c.Target == "" {
			t.Fatalf("ParseArgs(%q) accepted without a target: %+v", args, c)
		}
		if c.TargetType == policy.TargetNetns && c.NetnsType != policy.NetnsPath {
			if n, err := strconv.Atoi(c.Target); err != nil || n < 0 || strconv.Itoa(n) != c.Target {
				t.Fatalf("ParseArgs(%q) accepted target %q", args, c.Target)
			}
		}
		if policy.ValidateMTU(c.MTU) != nil || c.ExitFD < -1 || c.ReadyFD < -1 {
			t.Fatalf("ParseArgs(%q) accepted %+v", args, c)
		}
	})
}
