package helper

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// earlyProbeEnv makes a re-executed test binary act as a supervisor whose
// command line is its argv: it takes the early TAP (or opens the TAP the
// usual way), prints what it got and holds the TAP until stdin closes. The
// variable's value is the MTU its Request asks for.
const earlyProbeEnv = "HELPER_TEST_EARLY_TAP"

// earlyProbeReport is the probe's one line of output.
type earlyProbeReport struct {
	Early bool          // the early thread's TAP was taken
	Info  proto.TapInfo // what OpenTap would return
	// Foreign lists our threads still in the target's network namespace
	// once the TAP is ours (none: the early thread has ended).
	Foreign []string
	Err     string
}

// earlyTapProbe runs in the re-executed test binary: argv is
// [-c] [--enable-ipv6] --netns-type=path NETNS TAP, as a supervisor would
// pass them.
func earlyTapProbe(mtu string) int {
	args := os.Args[1:]
	n, _ := strconv.Atoi(mtu)
	req := Request{
		NetnsPath: args[len(args)-2],
		Config: proto.HelperConfig{
			TapName: args[len(args)-1], Configure: true, MTU: n, CIDR: policy.DefaultCIDR,
			EnableIPv6: strings.Contains(strings.Join(args, " "), "--enable-ipv6"),
		},
	}
	var rep earlyProbeReport
	f, info, early := TakeEarlyTap(req)
	if !early {
		var err error
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		f, info, err = OpenTap(ctx, req)
		cancel()
		if err != nil {
			rep.Err = err.Error()
		}
	}
	rep.Early, rep.Info = early, info
	if ns, err := os.Readlink(req.NetnsPath); err == nil {
		rep.Foreign = threadsIn(ns)
	}
	b, _ := json.Marshal(rep)
	fmt.Println(string(b))
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // hold the TAP
	if f != nil {
		f.Close()
	}
	return 0
}

// startEarlyProbe re-executes the test binary as earlyTapProbe with args and
// the Request's MTU, and returns its report; the probe holds the TAP until
// the test ends.
func startEarlyProbe(t *testing.T, mtu int, noEarly bool, args ...string) earlyProbeReport {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Env = append(os.Environ(), earlyProbeEnv+"="+strconv.Itoa(mtu))
	if noEarly {
		cmd.Env = append(cmd.Env, "_SLIRP4NETNS_NO_EARLY_TAP=1")
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("probe %q: %v", args, err)
	}
	var rep earlyProbeReport
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		t.Fatalf("probe %q: %q: %v", args, line, err)
	}
	if rep.Err != "" {
		t.Fatalf("probe %q: %s", args, rep.Err)
	}
	return rep
}

// netnsState is what --configure leaves in the guest's namespace, without
// what differs between any two TAPs (index, MAC, addresses derived from it,
// counters).
func netnsState(t *testing.T, tg target) string {
	t.Helper()
	var b strings.Builder
	link := tg.run(t, "ip", "-d", "-o", "link", "show", "tap0")
	for _, f := range strings.Fields(link) {
		if strings.Contains(f, ":") && strings.Count(f, ":") == 5 || f == "2:" {
			continue // MAC, index
		}
		b.WriteString(f + " ")
	}
	b.WriteString("\n" + tg.run(t, "ip", "-4", "-o", "addr", "show", "dev", "tap0"))
	b.WriteString("\n" + tg.run(t, "ip", "route", "show", "table", "all", "type", "unicast"))
	b.WriteString("\n" + tg.run(t, "ip", "-o", "link", "show", "lo"))
	for _, k := range []string{"disable_ipv6", "accept_ra"} {
		b.WriteString("\n" + k + "=" + tg.run(t, "cat", "/proc/sys/net/ipv6/conf/tap0/"+k))
	}
	return b.String()
}

// TestEarlyTapSameAsGo runs a podman-like command line twice: once the
// early thread (earlytap.c) opens and configures the TAP, once Go does
// (helper/tap.go, configure.go); the namespaces must end up the same.
func TestEarlyTapSameAsGo(t *testing.T) {
	for _, tc := range []struct {
		name string
		mtu  int
		args []string
	}{
		{"default", 1500, []string{"-c"}},
		{"podman", 65520, []string{"--mtu=65520", "--enable-sandbox", "--enable-seccomp", "--enable-ipv6", "-c", "-e", "3", "-r", "4", "--api-socket", "/nonexistent/api.sock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var states [2]string
			for i, noEarly := range []bool{false, true} {
				tg := newTarget(t, false)
				args := append(append([]string{}, tc.args...), "--netns-type=path", tg.netnsPath(), "tap0")
				rep := startEarlyProbe(t, tc.mtu, noEarly, args...)
				if rep.Early == noEarly {
					t.Fatalf("early TAP taken = %v with _SLIRP4NETNS_NO_EARLY_TAP=%v", rep.Early, noEarly)
				}
				if len(rep.Foreign) != 0 {
					t.Errorf("threads %v still in the target's network namespace", rep.Foreign)
				}
				want := proto.TapInfo{Name: "tap0", Created: true, VnetHdr: true, Offloads: wantOffloads}
				if rep.Info != want {
					t.Errorf("TapInfo %+v, want %+v", rep.Info, want)
				}
				states[i] = netnsState(t, tg)
			}
			t.Logf("namespace after --configure:\n%s", states[0])
			if states[0] != states[1] {
				t.Errorf("early thread's namespace:\n%s\nGo's:\n%s", states[0], states[1])
			}
		})
	}
}

// TestEarlyTapMismatchRedone: when Go's configuration is not what the early
// thread did, its TAP is closed (and so removed) and Go opens its own.
func TestEarlyTapMismatchRedone(t *testing.T) {
	tg := newTarget(t, false)
	rep := startEarlyProbe(t, 9000, false, "-c", "--netns-type=path", tg.netnsPath(), "tap0")
	if rep.Early {
		t.Fatal("early TAP with MTU 1500 taken for a Request with MTU 9000")
	}
	if link := tg.run(t, "ip", "-o", "link", "show", "tap0"); !strings.Contains(link, " mtu 9000 ") {
		t.Errorf("tap0 is %s, want MTU 9000", link)
	}
}

// TestEarlyTapMatches: the early TAP is taken only for the Request it was
// made for.
func TestEarlyTapMatches(t *testing.T) {
	early := earlyTap{tap: "tap0", name: "tap0", netns: "/run/netns/x", mtu: 65520, ipv6: true}
	base := Request{NetnsPath: "/run/netns/x", Config: proto.HelperConfig{
		TapName: "tap0", Configure: true, MTU: 65520, CIDR: policy.DefaultCIDR, EnableIPv6: true, EnableSeccomp: true}}
	for _, tc := range []struct {
		name string
		edit func(*Request)
		want bool
	}{
		{"same", func(*Request) {}, true},
		{"empty CIDR", func(r *Request) { r.Config.CIDR = "" }, false}, // never passed: the flags default to policy.DefaultCIDR
		{"other CIDR", func(r *Request) { r.Config.CIDR = "10.0.3.0/24" }, false},
		{"userns", func(r *Request) { r.UsernsPath = "/proc/1/ns/user" }, false},
		{"netns", func(r *Request) { r.NetnsPath = "/run/netns/y" }, false},
		{"tap", func(r *Request) { r.Config.TapName = "tap1" }, false},
		{"no configure", func(r *Request) { r.Config.Configure = false }, false},
		{"mtu", func(r *Request) { r.Config.MTU = 1500 }, false},
		{"ipv6", func(r *Request) { r.Config.EnableIPv6 = false }, false},
		{"mac", func(r *Request) { r.Config.MACAddress = "02:00:00:00:00:01" }, false},
		{"no offload", func(r *Request) { r.Config.DisableOffload = true }, false},
	} {
		req := base
		tc.edit(&req)
		if got := early.matches(req); got != tc.want {
			t.Errorf("%s: matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}
