package helper

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
)

// probePIDEnv makes the test binary act as an unprivileged supervisor: it
// runs OpenTap (with --configure) on the namespaces of the PID it names and
// prints what it got, then what the TAP looks like from inside.
const probePIDEnv = "HELPER_TEST_PROBE_PID"

func probe(pid string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := proto.HelperConfig{TapName: "tap0", Configure: true, MTU: 65520, CIDR: "10.0.2.0/24", EnableIPv6: true}
	req := Request{UsernsPath: "/proc/" + pid + "/ns/user", NetnsPath: "/proc/" + pid + "/ns/net", Config: cfg}
	tap, info, err := OpenTap(ctx, req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer tap.Close()
	b, _ := json.Marshal(info)
	fmt.Printf("info %s\n", b)
	out, err := exec.Command("nsenter", "-t", pid, "-U", "-n", "--preserve-credentials",
		"ip", "-o", "addr", "show", "dev", "tap0").CombinedOutput()
	fmt.Printf("%s", out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// TestOpenTapUnprivileged is the rootless case: an unprivileged user (65534)
// owns the target's user and network namespaces and runs OpenTap, which must
// join the user namespace (in nsenter.c) to be allowed to create the TAP.
// /dev/net/tun is mode 600 on these machines, so a private mount namespace
// gets a 666 copy of the device node bind-mounted over it; the host's node
// is untouched.
func TestOpenTapUnprivileged(t *testing.T) {
	dir := testutil.SharedTempDir(t, "helper-unpriv")
	bin := testutil.CopyTestBinary(t, dir, "helper.test")
	script := fmt.Sprintf(`set -e
mkdir %[1]s/dev
mount -t tmpfs tmpfs %[1]s/dev
mknod -m 666 %[1]s/dev/tun c 10 200
mount --bind %[1]s/dev/tun /dev/net/tun
exec setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '
unshare --user --map-root-user --net sleep 20 & P=$!
for i in $(seq 200); do [ "$(cat /proc/$P/comm)" = sleep ] && break; sleep 0.02; done
%[2]s=$P %[3]s; rc=$?
kill $P
exit $rc'`, dir, probePIDEnv, bin)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = childEnv(os.Environ())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged OpenTap: %v\n%s", err, out)
	}
	text := string(out)
	wantInfo := `info {"name":"tap0","vnet_hdr":true,"offloads":7,"created":true}`
	if !strings.Contains(text, wantInfo) || !strings.Contains(text, "inet 10.0.2.100/24") {
		t.Errorf("output %q, want %q and the configured address", text, wantInfo)
	}
}
