package supervisor

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// bannerFor parses args (with the target appended) as Main does and
// returns our banner.
func bannerFor(t *testing.T, args []string) string {
	t.Helper()
	opts, err := ParseArgs(append(append([]string{}, args...), "1", "tapx"))
	if err != nil {
		t.Fatalf("ParseArgs(%q): %v", args, err)
	}
	cfg := opts.Config
	if err := policy.Validate(&cfg); err != nil {
		t.Fatalf("Validate(%q): %v", args, err)
	}
	plan, err := policy.PlanFor(cfg.CIDR)
	if err != nil {
		t.Fatal(err)
	}
	var w countingWriter
	PrintBanner(&w, cfg, plan)
	if w.writes != 1 {
		t.Errorf("banner written in %d writes, want 1", w.writes)
	}
	return w.String()
}

// countingWriter is a bytes.Buffer that counts its Write calls.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestPrintWarnings: the parser's warnings, one a line, in one write;
// nothing at all without any.
func TestPrintWarnings(t *testing.T) {
	var w countingWriter
	printWarnings(&w, nil)
	if w.writes != 0 {
		t.Errorf("no warnings: %d writes, want 0", w.writes)
	}
	printWarnings(&w, []string{"WARNING: a", "WARNING: b"})
	if got, want := w.String(), "WARNING: a\nWARNING: b\n"; got != want || w.writes != 1 {
		t.Errorf("warnings %q in %d writes, want %q in 1", got, w.writes, want)
	}
}

func TestPrintBannerGolden(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"banner_default.golden", nil},
		// Taken from the C version run with these options.
		{"banner_full.golden", []string{"-c", "--mtu=65520", "-a", "/tmp/h5/api.sock", "--cidr=10.1.0.0/16",
			"--outbound-addr=lo", "--outbound-addr6=::1", "--macaddress=02:AB:cd:0:1:2", "-6", "--disable-dns"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", tt.golden))
			if err != nil {
				t.Fatal(err)
			}
			if got := bannerFor(t, tt.args); got != string(want) {
				t.Fatalf("banner:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestPrintBannerVariants(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		has, not []string
	}{
		{name: "no host loopback", args: []string{"--disable-host-loopback"}, not: []string{"WARNING"}},
		{name: "disable dns keeps the DNS line", args: []string{"--disable-dns"}, has: []string{"* DNS:             10.0.2.3\n"}},
		{name: "small network", args: []string{"--cidr=192.168.7.128/25"},
			has: []string{"* Netmask:         255.255.255.128\n", "* Recommended IP:  192.168.7.228\n",
				"accessible as 192.168.7.130 "}},
		{name: "unresolvable interface is shown as given", args: []string{"--outbound-addr=nosuchif0"},
			has: []string{"* Outbound IPv4:    nosuchif0\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := bannerFor(t, tt.args)
			for _, s := range tt.has {
				if !strings.Contains(got, s) {
					t.Errorf("banner lacks %q:\n%s", s, got)
				}
			}
			for _, s := range tt.not {
				if strings.Contains(got, s) {
					t.Errorf("banner has %q:\n%s", s, got)
				}
			}
		})
	}
}

// TestPrintBannerMatchesC runs the C slirp4netns in namespaces made for the
// test (it configures a TAP there and touches nothing else) and compares
// its banner with ours.
func TestPrintBannerMatchesC(t *testing.T) {
	bin := cBinary(t)
	dir := t.TempDir()
	tests := [][]string{
		nil,
		{"--disable-host-loopback", "--mtu=9000"},
		{"-c", "--mtu=65520", "-a", filepath.Join(dir, "api.sock"), "--cidr=10.1.0.0/16", "--outbound-addr=lo",
			"--outbound-addr6=::1", "--macaddress=02:AB:cd:0:1:2", "-6", "--disable-dns"},
		{"--cidr=192.168.7.128/25", "--outbound-addr=127.0.0.1", "-c", "--macaddress=0e:00:00:00:00:ff"},
	}
	for i, args := range tests {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			got := cBanner(t, bin, args)
			if want := bannerFor(t, args); got != want {
				t.Fatalf("C banner for %q:\n%s\nours:\n%s", args, got, want)
			}
		})
	}
}

// cBanner runs the C binary on PID 1 of fresh user, network, mount and PID
// namespaces; stdin is a pipe that closes after a second, and -e 0 makes
// it exit cleanly then, flushing its stdout.
func cBanner(t *testing.T, bin string, args []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	script := `ip link set lo up && sleep 1 | "$0" -e 0 "$@" 1 tapx`
	cmd := testutil.NamespacedCommand(ctx, append([]string{"sh", "-c", script, bin}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("C slirp4netns %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errb.String())
	}
	s := out.String()
	i := strings.Index(s, "Starting slirp\n")
	if i < 0 {
		t.Fatalf("no banner from C slirp4netns %q:\n%s\nstderr:\n%s", args, s, errb.String())
	}
	return s[i:]
}

func TestPrintVersion(t *testing.T) {
	tests := []struct {
		name string
		v    VersionInfo
		want string
	}{
		{name: "full", v: VersionInfo{Version: "1.2.0+go0.1", Commit: "abc123", GVisor: "v0.0.0-20260905035102-160fafc42237",
			Go: "go1.26.8", Libseccomp: "2.5.4"},
			want: "slirp4netns version 1.2.0+go0.1\ncommit: abc123\ngvisor: v0.0.0-20260905035102-160fafc42237\n" +
				"go: go1.26.8\nlibseccomp: 2.5.4\n"},
		{name: "unknowns", v: VersionInfo{Version: "1.2.0+go0.1"},
			want: "slirp4netns version 1.2.0+go0.1\ncommit: unknown\ngvisor: unknown\ngo: unknown\nlibseccomp: unknown\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			PrintVersion(&b, tt.v)
			if b.String() != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
}

// TestVersionParsers checks the output the way its consumers read it.
func TestVersionParsers(t *testing.T) {
	var b bytes.Buffer
	PrintVersion(&b, BuildVersionInfo())
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	// podman/rootlesskit style: the first line is "slirp4netns version X".
	ver, ok := strings.CutPrefix(lines[0], "slirp4netns version ")
	if !ok || ver != Version {
		t.Fatalf("first line %q", lines[0])
	}
	// Docker style: the last line containing "version" is the first line.
	for _, l := range lines[1:] {
		if strings.Contains(strings.ToLower(l), "version") {
			t.Errorf("line %q contains \"version\"", l)
		}
	}
	if !strings.HasPrefix(lines[1], "commit: ") {
		t.Errorf("second line %q, want commit: ...", lines[1])
	}
	// Clients comparing versions must see at least 1.2.0.
	core, _, _ := strings.Cut(ver, "+")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		t.Fatalf("version %q is not X.Y.Z+meta", ver)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("version %q: %v", ver, err)
		}
		n[i] = v
	}
	if n[0] < 1 || (n[0] == 1 && n[1] < 2) {
		t.Fatalf("version %q sorts before 1.2.0", ver)
	}
}

func TestBuildVersionInfo(t *testing.T) {
	v := BuildVersionInfo()
	if v.Version != Version || v.Go != runtime.Version() || v.Commit == "" || v.GVisor == "" || v.Libseccomp != "" {
		t.Fatalf("BuildVersionInfo() = %+v", v)
	}
}

func TestResolveOutbound(t *testing.T) {
	tests := []struct {
		value   string
		want6   bool
		want    string
		wantErr string
	}{
		{value: "192.0.2.1", want: "192.0.2.1"},
		{value: "2001:db8::1", want6: true, want: "2001:db8::1"},
		{value: "lo", want: "127.0.0.1"},
		{value: "nosuchif0", wantErr: "outbound-addr has to be valid ipv4 address or interface name."},
		{value: "nosuchif0", want6: true, wantErr: "outbound-addr6 has to be valid ipv6 address or interface name."},
		{value: "::1", wantErr: "outbound-addr has to be valid ipv4 address or interface name."},
	}
	for _, tt := range tests {
		a, err := ResolveOutbound(tt.value, tt.want6)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ResolveOutbound(%q, %v) = %v, %v; want %q", tt.value, tt.want6, a, err, tt.wantErr)
			}
			continue
		}
		if err != nil || a.String() != tt.want {
			t.Errorf("ResolveOutbound(%q, %v) = %v, %v; want %s", tt.value, tt.want6, a, err, tt.want)
		}
	}
	if err := CheckOutbound(cfgWith(func(c *policy.Config) { c.OutboundAddr, c.OutboundAddr6 = "lo", "::1" })); err != nil {
		t.Errorf("CheckOutbound: %v", err)
	}
	if err := CheckOutbound(cfgWith(func(c *policy.Config) { c.OutboundAddr6 = "nosuchif0" })); err == nil {
		t.Error("CheckOutbound accepted a missing interface")
	}
}
