package api

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// goldenRow is one request with the C slirp4netns 1.2.0's reply and ours.
// The rows run in order on one instance of each (ids depend on order), so
// the rows where we deliberately differ in a way that changes the table
// come last.
type goldenRow struct {
	req  string
	c    string // the C's reply
	ours string // our reply when it differs from the C's; "" means equal
	// cCrashes marks requests that crash the C 1.2.0 (not sent to it).
	cCrashes bool
	note     string // why we differ
}

func cEntries(entries ...string) string { return `{"entries":[` + strings.Join(entries, ",") + `]}` }

const (
	noteList      = "man page form: the C 1.2.0 omits the \"return\" wrapper of list_hostfwd"
	notePortRange = "the C wraps or truncates ports; we reject what is not an integer 1-65535"
	noteGuest     = "the C forwards to any address; we require a guest address of the guest network"
	noteNonString = "the C treats a non-string host_addr as absent; we reject it"
	noteIDFrac    = "the C truncates a fractional id; we reject it"
	noteIPv6      = "beyond C: IPv6 host_addr"
	noteCrash     = "the C 1.2.0 crashes (SIGSEGV) on this request"
)

// paddedReq builds an unknown-execute request of exactly n bytes.
func paddedReq(n int) string {
	head := `{"execute": "foo", "x": "`
	return head + strings.Repeat("a", n-len(head)-2) + `"}`
}

func goldenRows() []goldenRow {
	g := "10.0.2.100"
	e1 := entry(1, "tcp", "0.0.0.0", 8080, g, 80)
	e3 := entry(3, "tcp", "0.0.0.0", 8082, g, 22)
	e4 := entry(4, "tcp", "127.0.0.1", 8083, g, 80)
	e5 := entry(5, "udp", "0.0.0.0", 8080, g, 53)
	e6 := entry(6, "tcp", "0.0.0.0", 8084, g, 80)
	e7 := entry(7, "tcp", "0.0.0.0", 8085, g, 10)
	rm := func(id string) string { return `{"execute": "remove_hostfwd", "arguments": {"id": ` + id + `}}` }
	return []goldenRow{
		{req: listReq, c: cEntries(), ours: listResp(), note: noteList},
		{req: addReq(`{"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}`), c: idResp(1)},
		{req: addReq(`{"proto": "udp", "host_port": 8081, "guest_port": 53}`), c: idResp(2)},
		{req: addReq(`{"proto": "tcp", "host_addr": "", "host_port": 8082, "guest_addr": "", "guest_port": 22}`), c: idResp(3)},
		{req: addReq(`{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8083, "guest_addr": null, "guest_port": 80}`), c: idResp(4)},
		{req: addReq(`{"proto": "tcp", "host_port": 8080, "guest_port": 80}`), c: errAddFailed},
		{req: addReq(`{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8080, "guest_port": 80}`), c: errAddFailed},
		{req: addReq(`{"proto": "tcp", "host_addr": "1.2.3.4", "host_port": 8086, "guest_port": 80}`), c: errAddFailed},
		{req: addReq(`{"proto": "udp", "host_port": 8080, "guest_port": 53}`), c: idResp(5)},
		{req: rm("2"), c: respEmpty},
		{req: rm("2"), c: errRemoveID},
		{req: rm("99"), c: errRemoveID},
		{req: rm("0"), c: errRemoveID},
		{req: rm("-1"), c: errRemoveID},
		{req: rm(`"3"`), c: errRemoveID},
		{req: rm("true"), c: errRemoveID},
		{req: `{"execute": "remove_hostfwd", "arguments": {}}`, c: errRemoveID},
		{req: `{"execute": "remove_hostfwd", "arguments": 5}`, c: errRemoveID},
		{req: `{"execute": "remove_hostfwd"}`, c: errRemoveID},
		{req: `xxx`, c: errParse},
		{req: ``, c: errParse},
		{req: `{"execute": "list_hostfwd"`, c: errParse},
		{req: `{"execute": "list_hostfwd", "execute": "foo"}`, c: errParse},
		{req: rm("3, \"id\": 4"), c: errParse},
		{req: `[1,2]`, c: errNotObject},
		{req: `42`, c: errNotObject},
		{req: `"str"`, c: errNotObject},
		{req: `null`, c: errNotObject},
		{req: `{}`, c: errNoExec},
		{req: `{"execute": 1}`, c: errNoExec},
		{req: `{"execute": "foo"}`, c: errUnknown},
		{req: addReq(`{"proto": "sctp", "host_port": 8090, "guest_port": 80}`), c: errProto},
		{req: addReq(`{"proto": "TCP", "host_port": 8090, "guest_port": 80}`), c: errProto},
		{req: addReq(`{"proto": "tcp", "host_addr": "bad", "host_port": 8090, "guest_port": 80}`), c: errHostAddr},
		{req: addReq(`{"proto": "tcp", "host_addr": "127.1", "host_port": 8090, "guest_port": 80}`), c: errHostAddr},
		{req: addReq(`{"proto": "tcp", "host_addr": "0.0.0.0 ", "host_port": 8090, "guest_port": 80}`), c: errHostAddr},
		{req: addReq(`{"proto": "tcp", "host_port": 0, "guest_port": 80}`), c: errHostPort},
		{req: addReq(`{"proto": "tcp", "guest_port": 80}`), c: errHostPort},
		{req: addReq(`{"proto": "tcp", "host_port": "8090", "guest_port": 80}`), c: errHostPort},
		{req: addReq(`{"proto": "tcp", "host_port": 8090, "guest_addr": "bad", "guest_port": 80}`), c: errGuestAddr},
		{req: addReq(`{"proto": "tcp", "host_port": 8090, "guest_addr": "::1", "guest_port": 80}`), c: errGuestAddr},
		{req: addReq(`{"proto": "tcp", "host_port": 8090}`), c: errGuestPort},
		{req: addReq(`{"proto": "tcp", "host_port": 8090, "guest_port": 0}`), c: errGuestPort},
		{req: addReq(`{"proto": "tcp", "host_port": 8090, "guest_port": "80"}`), c: errGuestPort},
		{req: addReq(`{"proto": "tcp", "host_port": 8090, "guest_port": true}`), c: errGuestPort},
		{req: addReq(`{"proto": "tcp", "host_port": 8084, "guest_port": 80, "x": 1}, "y": 2} trailing`), c: idResp(6)},
		{req: listReq + "\n", c: cEntries(e1, e3, e4, e5, e6), ours: listResp(e1, e3, e4, e5, e6), note: noteList},
		{req: paddedReq(4095), c: errUnknown},
		{req: paddedReq(4096), c: errTooLarge},
		{req: paddedReq(8000), c: errTooLarge},
		{req: addReq(`{"proto": "tcp", "host_port": 8085.0, "guest_port": 1e1}`), c: idResp(7)},
		{req: rm("1.0"), c: respEmpty},
		{req: listReq, c: cEntries(e3, e4, e5, e6, e7), ours: listResp(e3, e4, e5, e6, e7), note: noteList},

		// Deliberate differences that change the table: last.
		{req: addReq(`{"proto": "tcp", "host_port": 65536, "guest_port": 80}`), c: idResp(8), ours: errHostPort, note: notePortRange},
		{req: addReq(`{"proto": "tcp", "host_port": -1, "guest_port": 80}`), c: idResp(9), ours: errHostPort, note: notePortRange},
		{req: addReq(`{"proto": "tcp", "host_port": 9100.5, "guest_port": 80}`), c: idResp(10), ours: errHostPort, note: notePortRange},
		{req: addReq(`{"proto": "tcp", "host_port": 9101, "guest_port": 70000}`), c: idResp(11), ours: errGuestPort, note: notePortRange},
		{req: addReq(`{"proto": "tcp", "host_port": 9102, "guest_addr": "1.2.3.4", "guest_port": 80}`), c: idResp(12), ours: errGuestAddr, note: noteGuest},
		{req: addReq(`{"proto": "tcp", "host_port": 9103, "guest_addr": "10.0.2.2", "guest_port": 80}`), c: idResp(13), ours: errGuestAddr, note: noteGuest},
		{req: addReq(`{"proto": "tcp", "host_addr": 5, "host_port": 9104, "guest_port": 80}`), c: idResp(14), ours: errHostAddr, note: noteNonString},
		{req: rm("3.5"), c: respEmpty, ours: errRemoveID, note: noteIDFrac},
		{req: addReq(`{"proto": "tcp", "host_addr": "::", "host_port": 9105, "guest_port": 80}`), c: errHostAddr, ours: idResp(8), note: noteIPv6},
		{req: addReq(`{"proto": "udp", "host_addr": "::1", "host_port": 9106, "guest_port": 80}`), c: errHostAddr, ours: idResp(9), note: noteIPv6},
		{req: addReq(`{"host_port": 9107, "guest_port": 80}`), cCrashes: true, ours: errProto, note: noteCrash},
		{req: addReq(`{"proto": null, "host_port": 9107, "guest_port": 80}`), cCrashes: true, ours: errProto, note: noteCrash},
		{req: addReq(`{"proto": 1, "host_port": 9107, "guest_port": 80}`), cCrashes: true, ours: errProto, note: noteCrash},
		{req: addReq(`{}`), cCrashes: true, ours: errProto, note: noteCrash},
		{req: `{"execute": "add_hostfwd"}`, cCrashes: true, ours: errProto, note: noteCrash},
		{
			req: listReq,
			c: cEntries(e4, e5, e6, e7,
				entry(8, "tcp", "0.0.0.0", 65536, g, 80),
				entry(9, "tcp", "0.0.0.0", -1, g, 80),
				entry(10, "tcp", "0.0.0.0", 9100, g, 80),
				entry(11, "tcp", "0.0.0.0", 9101, g, 70000),
				entry(12, "tcp", "0.0.0.0", 9102, "1.2.3.4", 80),
				entry(13, "tcp", "0.0.0.0", 9103, "10.0.2.2", 80),
				entry(14, "tcp", "0.0.0.0", 9104, g, 80)),
			ours: listResp(e3, e4, e5, e6, e7,
				entry(8, "tcp", "::", 9105, g, 80),
				entry(9, "udp", "::1", 9106, g, 80)),
			note: noteList,
		},
	}
}

// TestGoldenAgainstC replays the golden table against the C slirp4netns
// 1.2.0 (/usr/bin/slirp4netns) and against our server with real host
// sockets, both inside a private network namespace.
func TestGoldenAgainstC(t *testing.T) {
	if _, err := exec.LookPath("slirp4netns"); err != nil {
		t.Fatalf("the C slirp4netns is needed for this test (Debian package slirp4netns): %v", err)
	}
	t.Log(runInNamespace(t, "golden"))
}

// goldenInNamespace runs in the namespace made by runInNamespace.
func goldenInNamespace(dir string) error {
	rows := goldenRows()
	cGot, err := replayOnC(dir, rows)
	if err != nil {
		return fmt.Errorf("C slirp4netns: %w", err)
	}
	ourGot, err := replayOnOurs(dir, rows)
	if err != nil {
		return fmt.Errorf("our server: %w", err)
	}
	var failures []string
	for i, row := range rows {
		want := row.ours
		if want == "" {
			want = row.c
		}
		if ourGot[i] != want {
			failures = append(failures, fmt.Sprintf("row %d %.200s:\n  ours %s\n  want %s", i, row.req, ourGot[i], want))
		}
		if !row.cCrashes && cGot[i] != row.c {
			failures = append(failures, fmt.Sprintf("row %d %.200s:\n  C    %s\n  want %s (C reference changed?)", i, row.req, cGot[i], row.c))
		}
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "\n"))
	}
	fmt.Printf("golden: %d rows match (C and ours)\n", len(rows))
	return nil
}

// replayOnC starts the C slirp4netns for a fresh network namespace and
// sends it every row that does not crash it.
func replayOnC(dir string, rows []goldenRow) ([]string, error) {
	target := exec.Command("unshare", "--net", "sleep", "60")
	if err := target.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = target.Process.Kill(); _ = target.Wait() }()
	if err := waitNetns(target.Process.Pid); err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "c.sock")
	var logs bytes.Buffer
	c := exec.Command("slirp4netns", "-c", "-a", sock, strconv.Itoa(target.Process.Pid), "tap0")
	c.Stdout, c.Stderr = &logs, &logs
	if err := c.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	defer func() {
		_ = c.Process.Kill()
		<-exited
	}()
	if err := waitSocket(sock, exited); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, logs.String())
	}
	got := make([]string, len(rows))
	for i, row := range rows {
		if row.cCrashes {
			continue
		}
		resp, err := request(sock, row.req)
		// The C closes without reading the rest of an oversized request,
		// so the kernel resets the connection after its reply.
		if err != nil && !(errors.Is(err, syscall.ECONNRESET) && resp != "") {
			return nil, fmt.Errorf("row %d %.100s: %w", i, row.req, err)
		}
		got[i] = resp
		select {
		case err := <-exited:
			return nil, fmt.Errorf("exited after row %d %.100s: %v\n%s", i, row.req, err, logs.String())
		default:
		}
	}
	return got, nil
}

func replayOnOurs(dir string, rows []goldenRow) ([]string, error) {
	path := filepath.Join(dir, "go.sock")
	ln, err := Listen(path)
	if err != nil {
		return nil, err
	}
	s := NewServer(newFakeBackend(), Options{Plan: testPlan()}) // real binds: private netns
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	got := make([]string, len(rows))
	for i, row := range rows {
		resp, err := request(path, row.req)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("row %d %.100s: %w", i, row.req, err)
		}
		got[i] = resp
	}
	if err := s.Close(); err != nil {
		return nil, err
	}
	return got, <-done
}

// waitNetns waits until pid has left our network namespace.
func waitNetns(pid int) error {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	for range 100 {
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && ns != self {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("process %d did not enter a new network namespace", pid)
}

// waitSocket waits until the socket file at path exists.
func waitSocket(path string, exited <-chan error) error {
	for range 250 {
		select {
		case err := <-exited:
			return fmt.Errorf("exited before serving %s: %v", path, err)
		default:
		}
		// Only look: the C serves its socket with a tiny backlog and one
		// request at a time, so a probing connection would get in the way.
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
			time.Sleep(100 * time.Millisecond) // bound, now listen(2)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not served after 5s", path)
}
