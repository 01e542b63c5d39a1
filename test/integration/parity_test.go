package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// Side-by-side checks against the C slirp4netns 1.2.0 from a user's side:
// each case says what each implementation does with an input, and the suite
// (which runs against one of them, see SLIRP4NETNS_IMPL) asserts that one's
// behaviour. The parser's table in supervisor/flags_test.go checks messages
// and exit statuses against the C binary for the inputs that fail before
// anything starts; the cases here need a namespace. Every difference is a
// deliberate one, listed in README.md ("Differences from C slirp4netns").

const fwdPortParity = 18400 // .. +1; no other test uses these ports

// outcome is what an implementation does with a command line.
type outcome int

const (
	starts outcome = iota // writes the ready-fd and keeps running
	fails                 // exits non-zero with a message, never ready
)

func (o outcome) String() string {
	if o == starts {
		return "starts"
	}
	return "fails"
}

// parityCase is one command line and what each implementation does with it.
type parityCase struct {
	name string
	args []string
	// positional replaces "PID tap0"; "PID" stands for the guest's PID.
	positional []string
	c, ours    outcome
	// check runs when the implementation under test started.
	check func(t *testing.T, g *Guest)
}

func (tc parityCase) want() outcome {
	if goImpl() {
		return tc.ours
	}
	return tc.c
}

// linkIs checks tap0's MTU (when mtu is not 0) and MAC (when mac is not "").
func linkIs(mtu int, mac string) func(t *testing.T, g *Guest) {
	return func(t *testing.T, g *Guest) {
		t.Helper()
		l := GuestLink(t, g, "tap0")
		if mtu != 0 && l.MTU != mtu {
			t.Errorf("tap0 MTU = %d, want %d", l.MTU, mtu)
		}
		if mac != "" && l.Address != mac {
			t.Errorf("tap0 MAC = %q, want %q", l.Address, mac)
		}
		if !l.HasAddr("10.0.2.100", 24) {
			t.Errorf("tap0 lacks 10.0.2.100/24: %+v", l.AddrInfo)
		}
	}
}

// TestParityCommandLine: command lines from the man page and from users'
// habits (GNU getopt forms, odd values) that get past the parser.
func TestParityCommandLine(t *testing.T) {
	t.Parallel()
	notNS := filepath.Join(t.TempDir(), "not-a-namespace")
	if err := os.WriteFile(notNS, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []parityCase{
		// The man page's example, and the getopt forms it implies.
		{name: "man page example", args: []string{"--configure", "--mtu=65520"}, check: linkIs(65520, "")},
		{name: "short options clustered", args: []string{"-c6m1400"}, check: linkIs(1400, "")},
		{name: "long option prefixes", args: []string{"--conf", "--mt=9000", "--disable-h"}, check: linkIs(9000, "")},
		{name: "separate long values", args: []string{"--mtu", "1400", "--macaddress", "02:00:00:00:00:42", "--configure"},
			check: linkIs(1400, "02:00:00:00:00:42")},
		{name: "options after the positionals", positional: []string{"PID", "tap0", "-c", "--mtu=1300"}, check: linkIs(1300, "")},
		{name: "double dash", args: []string{"-c"}, positional: []string{"--", "PID", "tap0"}, check: linkIs(0, "")},
		// The C version reads each byte with sscanf("%x").
		{name: "one-digit MAC bytes", args: []string{"-c", "--macaddress=2:0:0:0:0:a"}, check: linkIs(0, "02:00:00:00:00:0a")},
		{name: "upper-case MAC", args: []string{"-c", "--macaddress=02:AB:CD:EF:01:23"}, check: linkIs(0, "02:ab:cd:ef:01:23")},
		// The C version takes "02" and sets 02:00:00:00:00:00; we refuse.
		{name: "MAC with dashes", args: []string{"-c", "--macaddress=02-00-00-00-00-01"}, ours: fails,
			check: linkIs(0, "02:00:00:00:00:00")},
		{name: "MAC of five bytes", args: []string{"-c", "--macaddress=02:00:00:00:01"}, ours: fails},
		// Empty values: the C version rejects them when it builds its
		// configuration.
		{name: "empty MAC", args: []string{"-c", "--macaddress="}, c: fails, ours: fails},
		{name: "empty outbound-addr", args: []string{"-c", "--outbound-addr="}, c: fails, ours: fails},
		{name: "empty outbound-addr6", args: []string{"-c", "--outbound-addr6="}, c: fails, ours: fails},
		// libslirp refuses it after start-up; we refuse it while parsing.
		{name: "MTU below 68", args: []string{"-c", "--mtu=67"}, c: fails, ours: fails},
		// The C version ignores a failed setns(CLONE_NEWUSER); we say the
		// path is not a user namespace.
		{name: "userns-path not a namespace", args: []string{"-c", "--userns-path=" + notNS}, ours: fails, check: linkIs(0, "")},
		{name: "userns-path of a network namespace", args: []string{"-c", "--userns-path=NETNS"}, ours: fails, check: linkIs(0, "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := StartGuest(t)
			subst := func(args []string) []string {
				out := make([]string, len(args))
				for i, a := range args {
					a = strings.ReplaceAll(a, "NETNS", g.NetnsPath())
					if a == "PID" {
						a = strconv.Itoa(g.PID)
					}
					out[i] = a
				}
				return out
			}
			o := SlirpOptions{Args: subst(tc.args), Tap: "tap0"}
			if tc.positional != nil {
				o.Positional = subst(tc.positional)
			}
			t.Logf("%s: C %v, ours %v", implName(), tc.c, tc.ours)
			if tc.want() == fails {
				res := RunSlirpFail(t, g, o)
				t.Logf("stderr: %s", firstLine(res.Stderr))
				return
			}
			StartSlirpWith(t, g, o)
			if tc.check != nil {
				tc.check(t, g)
			}
		})
	}
}

// TestParityExitFDData: only a hang-up (or error) on the exit-fd ends
// slirp4netns, as in the C version, which polls it for POLLHUP: data
// written to it does not.
func TestParityExitFDData(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	s := StartSlirp(t, g, "-c")
	if _, err := s.exitW.Write([]byte("x")); err != nil {
		t.Fatalf("write to the exit-fd: %v", err)
	}
	// A round trip through slirp4netns: it has seen the byte by then.
	Ping(t, g, "10.0.2.2")
	if !s.Running() {
		t.Fatalf("slirp4netns exited when data was written to its exit-fd:\n%s", s.Stderr.String())
	}
	// The cleanup closes the exit-fd and expects a clean exit.
}

// rawAPI is testnet.APIExchange that fails the test on an error.
func rawAPI(t *testing.T, sock string, shut bool, chunks ...string) string {
	t.Helper()
	b, err := testnet.APIExchange(sock, shut, chunks...)
	if err != nil {
		t.Fatalf("%q: %v (got %q)", chunks, err, b)
	}
	return string(b)
}

// TestParityAPI: the API socket from a client's side, in one sequence on
// one instance (ids depend on the order). Replies are compared byte for
// byte with each implementation's.
func TestParityAPI(t *testing.T) {
	t.Parallel()
	g := StartGuest(t)
	// The C 1.2.0 with --enable-sandbox (SLIRPTEST_EXTRA_ARGS) cannot
	// remove its socket after pivot_root.
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true, LeavesAPISocket: !goImpl()})
	const list = `{"execute": "list_hostfwd"}`
	add := fmt.Sprintf(`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": %d, "guest_addr": "10.0.2.100", "guest_port": 80}}`,
		fwdPortParity)
	entry := fmt.Sprintf(`{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":%d,"guest_addr":"10.0.2.100","guest_port":80}`, fwdPortParity)
	// lists is the list_hostfwd reply of each implementation: the C 1.2.0
	// omits the man page's "return" wrapper.
	lists := func(entries string) (c, ours string) {
		return `{"entries":[` + entries + `]}`, `{"return":{"entries":[` + entries + `]}}`
	}
	listC1, listOurs1 := lists(entry)
	listC0, listOurs0 := lists("")
	tests := []struct {
		name    string
		chunks  []string
		noShut  bool   // the client does not shut down its write side
		c, ours string // replies; ours "" means the C's
		cSkip   string // why the C is not asked (it crashes or blocks)
	}{
		{name: "man page add_hostfwd", chunks: []string{add}, c: `{"return":{"id":1}}`},
		{name: "duplicate", chunks: []string{add}, c: `{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}`},
		{name: "list", chunks: []string{list}, c: listC1, ours: listOurs1},
		{name: "no shutdown of the write side", chunks: []string{list}, noShut: true, c: listC1, ours: listOurs1},
		// One request per connection: the first is answered, the rest
		// ignored.
		{name: "two requests in one write", chunks: []string{list + list}, c: listC1, ours: listOurs1},
		{name: "guest_addr outside the network", chunks: []string{
			fmt.Sprintf(`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": %d, "guest_addr": "10.0.3.100", "guest_port": 80}}`, fwdPortParity+1)},
			c: `{"return":{"id":2}}`, ours: `{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}`},
		{name: "remove the C's extra forward", chunks: []string{`{"execute": "remove_hostfwd", "arguments": {"id": 2}}`},
			c: `{"return":{}}`, ours: `{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}`},
		{name: "arguments not an object", chunks: []string{`{"execute": "add_hostfwd", "arguments": "x"}`},
			ours: `{"error":{"desc":"bad request: add_hostfwd: bad arguments.proto"}}`, cSkip: "the C 1.2.0 crashes (SIGSEGV)"},
		{name: "remove", chunks: []string{`{"execute": "remove_hostfwd", "arguments": {"id": 1}}`}, c: `{"return":{}}`},
		{name: "list after", chunks: []string{list}, c: listC0, ours: listOurs0},
	}
	for _, tc := range tests {
		want := tc.c
		if goImpl() && tc.ours != "" {
			want = tc.ours
		}
		if !goImpl() && tc.cSkip != "" {
			t.Logf("%s: not sent to the C: %s", tc.name, tc.cSkip)
			continue
		}
		if got := rawAPI(t, s.APISocket, !tc.noShut, tc.chunks...); got != want {
			t.Errorf("%s: %q -> %q, want %q", tc.name, tc.chunks, got, want)
		}
	}
	if !s.Running() {
		t.Fatalf("slirp4netns exited during the API requests:\n%s", s.Stderr.String())
	}
}

// TestParityAPISilentClient: a client that connects and sends nothing does
// not hold up the others. The C 1.2.0 serves one client at a time ("stops
// the world", says its man page): it waits for that client's request.
func TestParityAPISilentClient(t *testing.T) {
	t.Parallel()
	if !goImpl() {
		t.Log("not checked against the C 1.2.0: it blocks until the silent client sends or closes")
		return
	}
	g := StartGuest(t)
	s := StartSlirpWith(t, g, SlirpOptions{Args: []string{"-c"}, API: true})
	silent, err := net.DialTimeout("unix", s.APISocket, testnet.APITimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	const want = `{"return":{"entries":[]}}`
	if got := rawAPI(t, s.APISocket, true, `{"execute": "list_hostfwd"}`); got != want {
		t.Errorf("while a silent client is connected: %q, want %q", got, want)
	}
}
