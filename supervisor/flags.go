package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// progName is the program name in messages and in the usage text. The C
// version prints argv[0]; we print a fixed name so that the output does not
// depend on how the binary was started (tools match the text, not the path).
const progName = "slirp4netns"

// Options is the result of parsing the command line.
type Options struct {
	// Config is the configuration built from the options; the checks the C
	// version makes while parsing have been made, policy.Validate makes
	// the rest.
	Config policy.Config
	// Help and Version are set when -h/--help or -v/--version was reached
	// before any error; parsing stops there, as in the C version.
	Help, Version bool
	// Warnings are the lines the C version prints while parsing (it prints
	// them to stdout), in order. They are valid even when ParseArgs fails.
	Warnings []string
}

// UsageError is a command-line error after which the C version prints its
// usage text to stdout (the message, if any, goes to stderr). Its exit
// status is 1.
type UsageError struct {
	// Msg is the C version's message; empty when it prints only the usage
	// (missing positional arguments).
	Msg string
}

// Error implements error.
func (e *UsageError) Error() string {
	if e.Msg == "" {
		return "missing arguments"
	}
	return e.Msg
}

func usageErrorf(format string, a ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, a...)}
}

// optID names an option; aliases share one.
type optID int

const (
	optConfigure optID = iota
	optExitFD
	optReadyFD
	optMTU
	optCIDR
	optDisableHostLoopback
	optNoHostLoopback
	optNetnsType
	optUsernsPath
	optAPISocket
	optEnableIPv6
	optEnableSandbox
	optCreateSandbox
	optEnableSeccomp
	optHelp
	optVersion
	optOutboundAddr
	optOutboundAddr6
	optDisableDNS
	optMACAddress
	optTargetType
)

// longOpt is one entry of the long option table.
type longOpt struct {
	name   string
	hasArg bool
	id     optID
	// alias entries are left out of the "possibilities" list of an
	// ambiguous prefix, so that the list is the C version's.
	alias bool
}

// longOpts is in the order of the C version's table: glibc lists the
// possibilities of an ambiguous prefix in table order.
var longOpts = []longOpt{
	{name: "configure", id: optConfigure},
	{name: "exit-fd", hasArg: true, id: optExitFD},
	{name: "ready-fd", hasArg: true, id: optReadyFD},
	{name: "mtu", hasArg: true, id: optMTU},
	{name: "cidr", hasArg: true, id: optCIDR},
	{name: "disable-host-loopback", id: optDisableHostLoopback},
	{name: "no-host-loopback", id: optNoHostLoopback},
	{name: "netns-type", hasArg: true, id: optNetnsType},
	{name: "userns-path", hasArg: true, id: optUsernsPath},
	{name: "api-socket", hasArg: true, id: optAPISocket},
	{name: "enable-ipv6", id: optEnableIPv6},
	{name: "enable-sandbox", id: optEnableSandbox},
	{name: "create-sandbox", id: optCreateSandbox},
	{name: "enable-seccomp", id: optEnableSeccomp},
	{name: "help", id: optHelp},
	{name: "version", id: optVersion},
	{name: "outbound-addr", hasArg: true, id: optOutboundAddr},
	{name: "outbound-addr6", hasArg: true, id: optOutboundAddr6},
	{name: "disable-dns", id: optDisableDNS},
	{name: "macaddress", hasArg: true, id: optMACAddress},
	{name: "target-type", hasArg: true, id: optTargetType},
	// The spellings of --userns-path in the rendered man page.
	{name: "usersns-path", hasArg: true, id: optUsernsPath, alias: true},
	{name: "users-path", hasArg: true, id: optUsernsPath, alias: true},
}

// shortOpt is one letter of the C version's optstring "ce:r:m:a:6hv".
type shortOpt struct {
	hasArg bool
	id     optID
}

var shortOpts = map[byte]shortOpt{
	'c': {id: optConfigure},
	'e': {hasArg: true, id: optExitFD},
	'r': {hasArg: true, id: optReadyFD},
	'm': {hasArg: true, id: optMTU},
	'a': {hasArg: true, id: optAPISocket},
	'6': {id: optEnableIPv6},
	'h': {id: optHelp},
	'v': {id: optVersion},
}

// Warnings printed while parsing, verbatim from the C version.
const (
	warnIPv6          = "WARNING: Support for IPv6 is experimental"
	warnSeccomp       = "WARNING: Support for seccomp is experimental"
	warnOutbound      = "WARNING: Support for --outbound-addr is experimental"
	warnOutbound6     = "WARNING: Support for --outbound-addr6 is experimental"
	warnNoHostLoop    = "WARNING: --no-host-loopback is deprecated and will be removed in future releases, please use --disable-host-loopback instead."
	warnCreateSandbox = "WARNING: --create-sandbox is deprecated and will be removed in future releases, please use --enable-sandbox instead."
	warnBESS          = "WARNING: BESS mode is experimental"
	warnTooMany       = "WARNING: too many arguments"
)

// parser holds the state of one ParseArgs call.
type parser struct {
	opts Options
	// requireOrder stops option processing at the first non-option
	// (POSIXLY_CORRECT), instead of GNU permutation.
	requireOrder bool
	// Options whose presence matters even with an empty value, as in the
	// C version where they are NULL-or-not pointers.
	netnsTypeSet, usernsPathSet, targetTypeSet, macSet bool
	outboundSet, outbound6Set                          bool

	stop       bool // -h or -v reached
	positional []string
}

// ParseArgs parses the command line (without argv[0]) with the grammar of
// GNU getopt_long as the C slirp4netns uses it: short options with attached
// or separate arguments and clustering, long options with "=" or a separate
// argument and unambiguous prefixes, "--" and permutation of non-options
// (unless POSIXLY_CORRECT is set). It makes the checks the C version makes
// while parsing, in its order and with its messages; those errors are
// *UsageError. It also rejects --outbound-addr, --outbound-addr6 and
// --macaddress given with an empty value, as the C version does later (a
// plain error: no usage text), and writes a valid MAC address in canonical
// form. TAPNAME defaults to tap0.
//
// Deliberate differences from the C version 1.2.0: TAPNAME is optional;
// --usersns-path and --users-path (the man page's spellings) are aliases of
// --userns-path; --netns-type=tapfd (from 1.3) is supported and conflicts
// with --configure; an unknown --netns-type is an error rather than a path;
// an MTU below 68 is refused here rather than by libslirp; -6 with an MTU
// below 1280 adds a warning; a PID or fd is stored in canonical decimal.
func ParseArgs(args []string) (Options, error) {
	_, posix := os.LookupEnv("POSIXLY_CORRECT")
	p := &parser{requireOrder: posix}
	p.opts.Config = policy.DefaultConfig()
	if err := p.scan(args); err != nil {
		return p.opts, err
	}
	if p.stop {
		return p.opts, nil
	}
	if err := p.finish(); err != nil {
		return p.opts, err
	}
	if err := p.checkEmptyValues(); err != nil {
		return p.opts, err
	}
	p.canonicalMAC()
	return p.opts, nil
}

// scan walks argv, handling options as they come and collecting the
// non-options.
func (p *parser) scan(args []string) error {
	for i := 0; i < len(args) && !p.stop; i++ {
		a := args[i]
		var err error
		switch {
		case a == "--":
			p.positional = append(p.positional, args[i+1:]...)
			return nil
		case len(a) < 2 || a[0] != '-':
			if p.requireOrder {
				p.positional = append(p.positional, args[i:]...)
				return nil
			}
			p.positional = append(p.positional, a)
		case a[1] == '-':
			i, err = p.long(args, i)
		default:
			i, err = p.short(args, i)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// long handles the long option args[i] and returns the index of the last
// argument it consumed.
func (p *parser) long(args []string, i int) (int, error) {
	text := args[i][2:]
	name, value, hasValue := strings.Cut(text, "=")
	o, err := lookupLong(name, text)
	if err != nil {
		return i, err
	}
	switch {
	case hasValue && !o.hasArg:
		return i, usageErrorf("%s: option '--%s' doesn't allow an argument", progName, o.name)
	case !hasValue && o.hasArg:
		if i+1 >= len(args) {
			return i, usageErrorf("%s: option '--%s' requires an argument", progName, o.name)
		}
		i++
		value = args[i]
	}
	return i, p.apply(o.id, value)
}

// lookupLong finds the long option name (text is the whole argument after
// "--", for messages): an exact match, else the only option it is a prefix
// of. Prefixes of several options that differ are ambiguous.
func lookupLong(name, text string) (longOpt, error) {
	for _, o := range longOpts {
		if o.name == name {
			return o, nil
		}
	}
	var found *longOpt
	ambiguous := false
	for k := range longOpts {
		o := &longOpts[k]
		if !strings.HasPrefix(o.name, name) {
			continue
		}
		if found == nil {
			found = o
		} else if o.hasArg != found.hasArg || o.id != found.id {
			ambiguous = true
		}
	}
	switch {
	case found == nil:
		return longOpt{}, usageErrorf("%s: unrecognized option '--%s'", progName, text)
	case ambiguous:
		return longOpt{}, ambiguousError(name, text)
	}
	return *found, nil
}

// ambiguousError lists, in table order, the options name is a prefix of,
// as glibc does.
func ambiguousError(name, text string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: option '--%s' is ambiguous; possibilities:", progName, text)
	for _, o := range longOpts {
		if strings.HasPrefix(o.name, name) && !o.alias {
			fmt.Fprintf(&b, " '--%s'", o.name)
		}
	}
	return &UsageError{Msg: b.String()}
}

// short handles the cluster of short options args[i] and returns the index
// of the last argument it consumed.
func (p *parser) short(args []string, i int) (int, error) {
	cluster := args[i][1:]
	for j := 0; j < len(cluster) && !p.stop; j++ {
		c := cluster[j]
		o, ok := shortOpts[c]
		if !ok {
			// The byte itself, as glibc prints it (%c of a byte would
			// print the rune of that value).
			return i, usageErrorf("%s: invalid option -- '%s'", progName, string([]byte{c}))
		}
		if !o.hasArg {
			if err := p.apply(o.id, ""); err != nil {
				return i, err
			}
			continue
		}
		value := cluster[j+1:]
		if value == "" {
			if i+1 >= len(args) {
				return i, usageErrorf("%s: option requires an argument -- '%s'", progName, string([]byte{c}))
			}
			i++
			value = args[i]
		}
		return i, p.apply(o.id, value)
	}
	return i, nil
}

// apply records one option, with the checks and warnings the C version
// makes at that point.
func (p *parser) apply(id optID, value string) error {
	id, warning := optionNotice(id)
	if warning != "" {
		p.warn(warning)
	}
	switch id {
	case optOutboundAddr:
		p.outboundSet = true
	case optOutboundAddr6:
		p.outbound6Set = true
	}
	cfg := &p.opts.Config
	switch f := plainField(cfg, id).(type) {
	case *bool: // an option without argument that turns a setting on
		*f = true
		return nil
	case *string: // an option whose argument is stored unchecked
		*f = value
		return nil
	}
	switch id {
	case optExitFD:
		return parseFD("exit-fd", value, &cfg.ExitFD)
	case optReadyFD:
		return parseFD("ready-fd", value, &cfg.ReadyFD)
	case optMTU:
		return parseMTU(value, &cfg.MTU)
	case optNetnsType:
		p.netnsTypeSet = true
		cfg.NetnsType = policy.NetnsType(value)
	case optUsernsPath:
		p.usernsPathSet = true
		cfg.UsernsPath = value
		if unix.Access(value, unix.F_OK) != nil {
			return usageErrorf("userns path doesn't exist: %s", value)
		}
	case optMACAddress:
		p.macSet = true
		cfg.MACAddress = value
	case optTargetType:
		p.targetTypeSet = true
		cfg.TargetType = policy.TargetType(value)
	case optHelp:
		p.opts.Help, p.stop = true, true
	case optVersion:
		p.opts.Version, p.stop = true, true
	default:
		return fmt.Errorf("internal error: unhandled option %d", id)
	}
	return nil
}

// plainField returns the setting that option id sets with no check: a
// *bool it turns on or a *string it stores its argument in; nil for the
// options apply handles itself.
func plainField(cfg *policy.Config, id optID) any {
	return map[optID]any{
		optConfigure:           &cfg.Configure,
		optDisableHostLoopback: &cfg.DisableHostLoopback,
		optEnableSandbox:       &cfg.EnableSandbox,
		optEnableSeccomp:       &cfg.EnableSeccomp,
		optEnableIPv6:          &cfg.EnableIPv6,
		optDisableDNS:          &cfg.DisableDNS,
		optCIDR:                &cfg.CIDR,
		optAPISocket:           &cfg.APISocket,
		optOutboundAddr:        &cfg.OutboundAddr,
		optOutboundAddr6:       &cfg.OutboundAddr6,
	}[id]
}

// optionNotice returns the option that id stands for (a deprecated
// option's replacement, otherwise id itself) and the warning the C version
// prints when it reads id, if any.
func optionNotice(id optID) (optID, string) {
	switch id {
	case optNoHostLoopback:
		return optDisableHostLoopback, warnNoHostLoop
	case optCreateSandbox:
		return optEnableSandbox, warnCreateSandbox
	case optEnableSeccomp:
		return id, warnSeccomp
	case optEnableIPv6:
		return id, warnIPv6
	case optOutboundAddr:
		return id, warnOutbound
	case optOutboundAddr6:
		return id, warnOutbound6
	}
	return id, ""
}

func (p *parser) warn(w string) { p.opts.Warnings = append(p.opts.Warnings, w) }

func parseFD(flag, value string, dst *int) error {
	n, ok := policy.ParseCInt(value)
	if !ok || n < 0 {
		n = -2 // invalid whatever the range check
	}
	return storeChecked(n, func(v int) error { return policy.ValidateFD(flag, v) }, dst)
}

func parseMTU(value string, dst *int) error {
	n, ok := policy.ParseCInt(value)
	if !ok {
		n = -1
	}
	return storeChecked(n, policy.ValidateMTU, dst)
}

// storeChecked stores n in dst if check accepts it (clamped, so that an
// out-of-range value cannot pass as a valid int), else returns check's
// error as a usage error.
func storeChecked(n int64, check func(int) error, dst *int) error {
	if err := check(int(clamp(n))); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	*dst = int(n)
	return nil
}

// clamp keeps n inside the int32 range plus one on each side, so that the
// int conversion cannot wrap an out-of-range value into a valid one.
func clamp(n int64) int64 {
	const lo, hi = -1 << 31, 1 << 31
	return max(lo-1, min(n, hi))
}

// finish makes the checks the C version makes after the option loop, in its
// order, and fills in the positional arguments.
func (p *parser) finish() error {
	cfg := &p.opts.Config
	given := p.given()
	if err := policy.ValidateMACNeedsConfigure(&given); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	if p.targetTypeSet && cfg.TargetType == policy.TargetBESS {
		return p.finishBESS()
	}
	if p.targetTypeSet {
		if err := policy.ValidateTargetType(cfg.TargetType); err != nil {
			return &UsageError{Msg: err.Error()}
		}
	}
	cfg.TargetType = policy.TargetNetns
	if len(p.positional) < 1 {
		return &UsageError{}
	}
	if err := p.finishTarget(); err != nil {
		return err
	}
	if err := policy.ValidateTapFDConflicts(cfg); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	if cfg.EnableIPv6 && cfg.MTU < policy.MinMTU6 {
		p.warn(fmt.Sprintf("WARNING: MTU %d is below %d, the IPv6 minimum: IPv6 will not work", cfg.MTU, policy.MinMTU6))
	}
	return nil
}

// given returns a copy of the configuration in which the options that were
// given with an empty value are non-empty: for the C version an option is
// present or not, whatever its value, and the policy checks test presence
// by non-emptiness.
func (p *parser) given() policy.Config {
	c := p.opts.Config
	const placeholder = "-"
	if p.netnsTypeSet && c.NetnsType == "" {
		c.NetnsType = placeholder
	}
	if p.usernsPathSet && c.UsernsPath == "" {
		c.UsernsPath = placeholder
	}
	if p.macSet && c.MACAddress == "" {
		c.MACAddress = placeholder
	}
	return c
}

// checkEmptyValues reports --outbound-addr, --outbound-addr6 or
// --macaddress given with an empty value, which the C version rejects when
// it builds its configuration (policy.Config cannot tell such an option
// from an absent one, so policy.Validate would let it pass). The C version
// checks the CIDR, then the outbound addresses, then the MAC address: an
// error it reports before the empty value's is left to policy.Validate and
// CheckOutbound. Errors are not usage errors, as in the C version.
func (p *parser) checkEmptyValues() error {
	cfg := p.opts.Config
	emptyOut := p.outboundSet && cfg.OutboundAddr == ""
	emptyOut6 := p.outbound6Set && cfg.OutboundAddr6 == ""
	emptyMAC := p.macSet && cfg.MACAddress == ""
	if !emptyOut && !emptyOut6 && !emptyMAC {
		return nil
	}
	if _, err := policy.ParseCIDR(cfg.CIDR); err != nil {
		return nil
	}
	for _, o := range []struct {
		set   bool
		value string
		want6 bool
	}{{p.outboundSet, cfg.OutboundAddr, false}, {p.outbound6Set, cfg.OutboundAddr6, true}} {
		switch {
		case !o.set:
		case o.value == "":
			return policy.OutboundError(o.want6)
		case policy.ValidateOutboundAddr(o.value, o.want6) != nil:
			return nil
		default:
			if _, err := ResolveOutbound(o.value, o.want6); err != nil {
				return nil
			}
		}
	}
	if emptyMAC {
		_, err := policy.ParseMAC("")
		return err
	}
	return nil
}

// canonicalMAC rewrites a valid --macaddress in the usual two-digit form:
// the C version accepts one-digit bytes ("2:0:0:0:0:1"), and the helper
// that sets the address parses the canonical form only.
func (p *parser) canonicalMAC() {
	cfg := &p.opts.Config
	if cfg.MACAddress == "" {
		return
	}
	if mac, err := policy.ParseMAC(cfg.MACAddress); err == nil {
		cfg.MACAddress = mac.String()
	}
}

// finishBESS handles --target-type=bess: one positional, the socket path.
func (p *parser) finishBESS() error {
	cfg := &p.opts.Config
	switch {
	case len(p.positional) < 1:
		return &UsageError{}
	case len(p.positional) > 1:
		return &UsageError{Msg: "too many arguments"}
	}
	cfg.Target = p.positional[0]
	given := p.given()
	if err := policy.ValidateBESS(&given); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	p.warn(warnBESS)
	return nil
}

// finishTarget interprets the positional PID|PATH|FD [TAPNAME].
func (p *parser) finishTarget() error {
	cfg := &p.opts.Config
	if !p.netnsTypeSet {
		cfg.NetnsType = policy.NetnsPID
	}
	if err := policy.ValidateNetnsType(cfg.NetnsType); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	cfg.Target = p.positional[0]
	if err := policy.ValidateTarget(cfg.NetnsType, cfg.Target); err != nil {
		return &UsageError{Msg: err.Error()}
	}
	cfg.Target = policy.CanonicalTarget(cfg.NetnsType, cfg.Target)
	if cfg.NetnsType == policy.NetnsPath {
		if err := unix.Access(cfg.Target, unix.F_OK); err != nil {
			return usageErrorf("existing path expected when --netns-type=path: %s", errnoText(err))
		}
	}
	maxArgs := 2
	if cfg.NetnsType == policy.NetnsTapFD {
		maxArgs = 1
	} else if len(p.positional) > 1 {
		cfg.TapName = p.positional[1]
	}
	if len(p.positional) > maxArgs {
		p.warn(warnTooMany)
	}
	return nil
}

// errnoText is strerror(3)'s text for err, as perror(3) prints it (Go's
// texts for errnos are lower-case; glibc's start with a capital).
func errnoText(err error) string {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return err.Error()
	}
	s := errno.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// reportParseError prints a ParseArgs error as the C version does and
// returns the exit status.
func reportParseError(err error) int {
	return ReportParseError(os.Stdout, os.Stderr, err)
}

// ReportParseError prints err to stderr and, for a *UsageError, the usage
// text to stdout, as the C version does; it returns the exit status (1).
func ReportParseError(stdout, stderr io.Writer, err error) int {
	var ue *UsageError
	if errors.As(err, &ue) {
		if ue.Msg != "" {
			fmt.Fprintln(stderr, ue.Msg)
		}
		PrintUsage(stdout)
		return 1
	}
	fmt.Fprintln(stderr, err)
	return 1
}

// usageText is `slirp4netns --help` of the C version 1.2.0, byte for byte
// (including its two tab characters): podman, rootlesskit and others
// detect features by searching it for option names.
const usageText = `Usage: ` + progName + ` [OPTION]... PID|PATH [TAPNAME]
User-mode networking for unprivileged network namespaces.

-c, --configure          bring up the interface
-e, --exit-fd=FD         specify the FD for terminating slirp4netns
-r, --ready-fd=FD        specify the FD to write to when the network is configured
-m, --mtu=MTU            specify MTU (default=1500, max=65521)
-6, --enable-ipv6        enable IPv6 (experimental)
-a, --api-socket=PATH    specify API socket path
--cidr=CIDR              specify network address CIDR (default=10.0.2.0/24)
--disable-host-loopback  prohibit connecting to 127.0.0.1:* on the host namespace
--netns-type=TYPE ` + "\t" + ` specify network namespace type ([path|pid], default=pid)
--userns-path=PATH` + "\t" + ` specify user namespace path
--enable-sandbox         create a new mount namespace (and drop all caps except CAP_NET_BIND_SERVICE if running as the root)
--enable-seccomp         enable seccomp to limit syscalls (experimental)
--outbound-addr=IPv4     sets outbound ipv4 address to bound to (experimental)
--outbound-addr6=IPv6    sets outbound ipv6 address to bound to (experimental)
--disable-dns            disables 10.0.2.3 (or configured internal ip) to host dns redirect (experimental)
--macaddress=MAC         specify the MAC address of the TAP (only valid with -c)
--target-type=TYPE       specify the target type ([netns|bess], default=netns)
-h, --help               show this help and exit
-v, --version            show version and exit
`

// PrintUsage writes the --help text, identical to the C version 1.2.0's.
func PrintUsage(w io.Writer) {
	io.WriteString(w, usageText)
}

// CheckFDs checks that --exit-fd and --ready-fd name open file descriptors
// (the C version finds out later, when it polls or writes them).
func CheckFDs(cfg policy.Config) error {
	for _, fd := range []struct {
		flag string
		fd   int
	}{{"exit-fd", cfg.ExitFD}, {"ready-fd", cfg.ReadyFD}} {
		if fd.fd < 0 {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd.fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("%s %d is not an open file descriptor: %w", fd.flag, fd.fd, err)
		}
	}
	return nil
}
