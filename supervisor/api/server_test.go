package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/internal/testutil"
)

const (
	respEmpty    = `{"return":{}}`
	errParse     = `{"error":{"desc":"bad request: cannot parse JSON"}}`
	errNotObject = `{"error":{"desc":"bad request: json_object() failed"}}`
	errNoExec    = `{"error":{"desc":"bad request: no execute found"}}`
	errUnknown   = `{"error":{"desc":"bad request: unknown execute"}}`
	errTooLarge  = `{"error":{"desc":"bad request: too large message"}}`
	errProto     = `{"error":{"desc":"bad request: add_hostfwd: bad arguments.proto"}}`
	errHostAddr  = `{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_addr"}}`
	errHostPort  = `{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}`
	errGuestAddr = `{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}`
	errGuestPort = `{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_port"}}`
	errAddFailed = `{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}`
	errRemoveID  = `{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}`
	errRemoveFwd = `{"error":{"desc":"bad request: remove_hostfwd: slirp_remove_hostfwd failed"}}`
)

func addReq(args string) string {
	return `{"execute": "add_hostfwd", "arguments": ` + args + `}`
}

func idResp(id int) string { return fmt.Sprintf(`{"return":{"id":%d}}`, id) }

func entry(id int, proto, hostAddr string, hostPort int, guestAddr string, guestPort int) string {
	return fmt.Sprintf(`{"id":%d,"proto":%q,"host_addr":%q,"host_port":%d,"guest_addr":%q,"guest_port":%d}`,
		id, proto, hostAddr, hostPort, guestAddr, guestPort)
}

func listResp(entries ...string) string {
	return `{"return":{"entries":[` + strings.Join(entries, ",") + `]}}`
}

const listReq = `{"execute": "list_hostfwd"}`

// TestCommands runs one server through a sequence of requests, checking
// each exact reply, ids, list order and that failures change nothing.
func TestCommands(t *testing.T) {
	be := newFakeBackend()
	_, path := startServer(t, be, Options{EnableIPv6: true})
	e1 := entry(1, "tcp", "0.0.0.0", 8080, "10.0.2.100", 80)
	e2 := entry(2, "udp", "0.0.0.0", 8081, "10.0.2.100", 53)
	e3 := entry(3, "tcp", "127.0.0.1", 8082, "10.0.2.100", 22)
	e4 := entry(4, "tcp", "::", 8083, "10.0.2.100", 80)
	e5 := entry(5, "tcp", "::1", 8084, "fd00::100", 80)
	e6 := entry(6, "udp", "0.0.0.0", 8085, "10.0.2.50", 5353)
	steps := []struct{ req, want string }{
		{listReq, listResp()},
		{addReq(`{"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}`), idResp(1)},
		{addReq(`{"proto": "udp", "host_port": 8081, "guest_port": 53}`), idResp(2)},
		// podman sends an empty guest_addr
		{addReq(`{"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8082, "guest_addr": "", "guest_port": 22}`), idResp(3)},
		{listReq, listResp(e1, e2, e3)},

		{`xxx`, errParse},
		{``, errParse},
		{`   `, errParse},
		{`{"execute": "list_hostfwd"`, errParse},
		{`{"execute": "list_hostfwd", "execute": "foo"}`, errParse},
		{addReq(`{"proto": "tcp", "proto": "udp", "host_port": 9, "guest_port": 9}`), errParse},
		{`[1,2]`, errNotObject},
		{`42`, errNotObject},
		{`"str"`, errNotObject},
		{`null`, errNotObject},
		{`{}`, errNoExec},
		{`{"execute": 1}`, errNoExec},
		{`{"Execute": "list_hostfwd"}`, errNoExec},
		{`{"execute": "foo"}`, errUnknown},
		{`{"execute": "LIST_HOSTFWD"}`, errUnknown},
		{`{"execute": "add_hostfwd"}`, errProto},
		{addReq(`5`), errProto},
		{addReq(`{}`), errProto},
		{addReq(`{"proto": null, "host_port": 9, "guest_port": 9}`), errProto},
		{addReq(`{"proto": "sctp", "host_port": 9, "guest_port": 9}`), errProto},
		{addReq(`{"Proto": "tcp", "host_port": 9, "guest_port": 9}`), errProto},
		{addReq(`{"proto": "tcp", "host_addr": "bad", "host_port": 9, "guest_port": 9}`), errHostAddr},
		{addReq(`{"proto": "tcp", "host_addr": 5, "host_port": 9, "guest_port": 9}`), errHostAddr},
		{addReq(`{"proto": "tcp", "host_port": 0, "guest_port": 9}`), errHostPort},
		{addReq(`{"proto": "tcp", "guest_port": 9}`), errHostPort},
		{addReq(`{"proto": "tcp", "host_port": "9", "guest_port": 9}`), errHostPort},
		{addReq(`{"proto": "tcp", "host_port": 65536, "guest_port": 9}`), errHostPort},
		{addReq(`{"proto": "tcp", "host_port": 9, "guest_addr": "1.2.3.4", "guest_port": 9}`), errGuestAddr},
		{addReq(`{"proto": "tcp", "host_port": 9, "guest_addr": "fd00::2", "guest_port": 9}`), errGuestAddr},
		{addReq(`{"proto": "tcp", "host_port": 9}`), errGuestPort},
		{addReq(`{"proto": "tcp", "host_port": 9, "guest_port": 70000}`), errGuestPort},
		{addReq(`{"proto": "tcp", "host_port": 1, "guest_port": 9}`), errAddFailed}, // busyPort
		{listReq, listResp(e1, e2, e3)},

		// A failed add consumed no id.
		{addReq(`{"proto": "tcp", "host_addr": "::", "host_port": 8083, "guest_port": 80}`), idResp(4)},
		{addReq(`{"proto": "tcp", "host_addr": "::1", "host_port": 8084, "guest_addr": "fd00::100", "guest_port": 80}`), idResp(5)},

		{`{"execute": "remove_hostfwd", "arguments": {"id": 2}}`, respEmpty},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 2}}`, errRemoveID},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 99}}`, errRemoveID},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 0}}`, errRemoveID},
		{`{"execute": "remove_hostfwd", "arguments": {"id": -1}}`, errRemoveID},
		{`{"execute": "remove_hostfwd", "arguments": {"id": "3"}}`, errRemoveID},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 3.5}}`, errRemoveID},
		{`{"execute": "remove_hostfwd", "arguments": {}}`, errRemoveID},
		{`{"execute": "remove_hostfwd", "arguments": 3}`, errRemoveID},
		{`{"execute": "remove_hostfwd"}`, errRemoveID},
		{listReq, listResp(e1, e3, e4, e5)},

		// Ids are never reused; formatting variations clients send.
		{addReq(`{"proto": "udp", "host_port": 8085.0, "guest_addr": "10.0.2.50", "guest_port": 5353}`) + "\n", idResp(6)},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 1.0}}` + "\n", respEmpty},
		{"  \n" + listReq + " trailing garbage is ignored, as in C", listResp(e3, e4, e5, e6)},
		{`{"execute":"list_hostfwd","arguments":{"x":[{"y":1},{"y":2}]}}`, listResp(e3, e4, e5, e6)},
	}
	for i, st := range steps {
		if got := mustRequest(t, path, st.req); got != st.want {
			t.Fatalf("step %d: %s\n got  %s\n want %s", i, st.req, got, st.want)
		}
	}
	be.mu.Lock()
	defer be.mu.Unlock()
	if len(be.added) != 4 || be.added[5].GuestAddr != "fd00::100" || be.added[5].HostAddr != "::1" ||
		be.added[5].HostPort != 8084 || be.added[6].Proto != "udp" || be.added[6].GuestPort != 5353 {
		t.Fatalf("backend holds %+v", be.added)
	}
}

func TestIPv6GuestNeedsIPv6(t *testing.T) {
	_, path := startServer(t, newFakeBackend(), Options{})
	got := mustRequest(t, path, addReq(`{"proto": "tcp", "host_addr": "::", "host_port": 80, "guest_addr": "fd00::100", "guest_port": 80}`))
	if got != errGuestAddr {
		t.Fatalf("got %s", got)
	}
	got = mustRequest(t, path, addReq(`{"proto": "tcp", "host_addr": "::", "host_port": 80, "guest_port": 80}`))
	if got != idResp(1) {
		t.Fatalf("got %s", got)
	}
}

func TestBackendErrors(t *testing.T) {
	be := newFakeBackend()
	_, path := startServer(t, be, Options{})
	add := addReq(`{"proto": "tcp", "host_port": 8080, "guest_port": 80}`)
	be.setErrors(errors.New("engine says no"), nil)
	if got := mustRequest(t, path, add); got != errAddFailed {
		t.Fatalf("add with failing backend: %s", got)
	}
	be.setErrors(nil, nil)
	if got := mustRequest(t, path, add); got != idResp(1) {
		t.Fatalf("add after failure: %s (a failed add must not consume an id)", got)
	}
	be.setErrors(nil, errors.New("engine gone"))
	if got := mustRequest(t, path, `{"execute": "remove_hostfwd", "arguments": {"id": 1}}`); got != errRemoveFwd {
		t.Fatalf("remove with failing backend: %s", got)
	}
	if got := mustRequest(t, path, listReq); got != listResp(entry(1, "tcp", "0.0.0.0", 8080, "10.0.2.100", 80)) {
		t.Fatalf("a failed remove must keep the forward: %s", got)
	}
	be.setErrors(nil, nil)
	if got := mustRequest(t, path, `{"execute": "remove_hostfwd", "arguments": {"id": 1}}`); got != respEmpty {
		t.Fatalf("remove: %s", got)
	}
}

// TestClients talks to the server the way real clients do.
func TestClients(t *testing.T) {
	_, path := startServer(t, newFakeBackend(), Options{Timeout: 3 * time.Second})
	dial := func(t *testing.T) *net.UnixConn {
		t.Helper()
		c, err := net.DialTimeout("unix", path, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c.(*net.UnixConn)
	}
	t.Run("podman", func(t *testing.T) {
		// podman: one write with a trailing newline, CloseWrite, one Read.
		c := dial(t)
		req := `{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"","host_port":8080,"guest_addr":"","guest_port":80}}` + "\n"
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != idResp(1) {
			t.Fatalf("got %q, %v", buf[:n], err)
		}
	})
	t.Run("rootlesskit", func(t *testing.T) {
		// rootlesskit: json.Encoder (adds a newline), CloseWrite, ReadAll.
		c := dial(t)
		type args struct {
			Proto     string `json:"proto"`
			HostAddr  string `json:"host_addr"`
			HostPort  int    `json:"host_port"`
			GuestAddr string `json:"guest_addr"`
			GuestPort int    `json:"guest_port"`
		}
		req := struct {
			Execute   string `json:"execute"`
			Arguments args   `json:"arguments"`
		}{"add_hostfwd", args{"udp", "127.0.0.1", 8081, "10.0.2.100", 53}}
		if err := json.NewEncoder(c).Encode(req); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != idResp(2) {
			t.Fatalf("got %q, %v", b, err)
		}
	})
	t.Run("split over two writes without shutdown", func(t *testing.T) {
		c := dial(t)
		if _, err := io.WriteString(c, `{"execute": "li`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if _, err := io.WriteString(c, `st_hostfwd"}`); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(b), `{"return":{"entries":[{"id":1,`) {
			t.Fatalf("got %q, %v", b, err)
		}
	})
	t.Run("split over two writes then shutdown", func(t *testing.T) {
		c := dial(t)
		for _, part := range []string{`{"execute": "remove_hostfwd", "argu`, `ments": {"id": 1}}`} {
			if _, err := io.WriteString(c, part); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != respEmpty {
			t.Fatalf("got %q, %v", b, err)
		}
	})
	t.Run("invalid bytes answered without shutdown", func(t *testing.T) {
		c := dial(t)
		if _, err := io.WriteString(c, `{"execute" x`); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		if err != nil || string(b) != errParse {
			t.Fatalf("got %q, %v", b, err)
		}
	})
}

func TestTooLarge(t *testing.T) {
	_, path := startServer(t, newFakeBackend(), Options{})
	// pad builds a request of exactly n bytes.
	pad := func(n int) string {
		head := `{"execute": "foo", "x": "`
		return head + strings.Repeat("a", n-len(head)-2) + `"}`
	}
	tests := []struct {
		n    int
		want string
	}{
		{4095, errUnknown},
		{4096, errTooLarge},
		{4097, errTooLarge},
		{100000, errTooLarge},
	}
	for _, tt := range tests {
		req := pad(tt.n)
		if len(req) != tt.n {
			t.Fatalf("pad(%d) has %d bytes", tt.n, len(req))
		}
		if got := mustRequest(t, path, req); got != tt.want {
			t.Errorf("%d-byte request: got %s, want %s", tt.n, got, tt.want)
		}
	}
	if got := mustRequest(t, path, listReq); got != listResp() {
		t.Fatalf("server after oversized requests: %s", got)
	}
}

// TestStuckClient checks that a client that sends nothing, or half a
// request, is answered when its deadline passes and never delays others.
func TestStuckClient(t *testing.T) {
	const timeout = 300 * time.Millisecond
	_, path := startServer(t, newFakeBackend(), Options{Timeout: timeout, MaxConns: 4})
	type result struct {
		resp    string
		err     error
		elapsed time.Duration
	}
	stuck := func(send string) <-chan result {
		ch := make(chan result, 1)
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if send != "" {
				if _, err := io.WriteString(c, send); err != nil {
					ch <- result{err: err}
					return
				}
			}
			b, err := io.ReadAll(c)
			ch <- result{string(b), err, time.Since(start)}
		}()
		return ch
	}
	silent := stuck("")
	partial := stuck(`{"execute": "list_hostfwd"`)
	// Both stuck clients hold a slot; others are still served at once.
	for range 5 {
		start := time.Now()
		if got := mustRequest(t, path, listReq); got != listResp() {
			t.Fatalf("got %s", got)
		}
		if d := time.Since(start); d > timeout/2 {
			t.Fatalf("a request took %v while stuck clients were connected", d)
		}
	}
	for name, ch := range map[string]<-chan result{"silent": silent, "partial": partial} {
		r := <-ch
		if r.err != nil || r.resp != errParse {
			t.Errorf("%s client: got %q, %v", name, r.resp, r.err)
		}
		if r.elapsed < timeout*9/10 || r.elapsed > 5*time.Second {
			t.Errorf("%s client answered after %v, want about %v", name, r.elapsed, timeout)
		}
	}
}

// TestConcurrentClients runs 100 clients at once, each adding a forward,
// listing, then removing it: every reply is right and every id unique.
func TestConcurrentClients(t *testing.T) {
	be := newFakeBackend()
	_, path := startServer(t, be, Options{MaxConns: 8})
	const clients = 100
	var wg sync.WaitGroup
	ids := make(chan int, clients)
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- oneClient(path, 10000+i, ids)
		}()
	}
	wg.Wait()
	close(ids)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	seen := map[int]bool{}
	for id := range ids {
		if seen[id] || id < 1 || id > clients {
			t.Errorf("id %d duplicated or out of 1..%d", id, clients)
		}
		seen[id] = true
	}
	if len(seen) != clients {
		t.Errorf("%d distinct ids, want %d", len(seen), clients)
	}
	if got := mustRequest(t, path, listReq); got != listResp() {
		t.Errorf("table after all removes: %s", got)
	}
	if got := mustRequest(t, path, addReq(`{"proto": "tcp", "host_port": 80, "guest_port": 80}`)); got != idResp(clients+1) {
		t.Errorf("next add: %s", got)
	}
}

func oneClient(path string, port int, ids chan<- int) error {
	resp, err := request(path, addReq(fmt.Sprintf(`{"proto": "tcp", "host_port": %d, "guest_port": 80}`, port)))
	if err != nil {
		return err
	}
	var add struct {
		Return struct{ ID int } `json:"return"`
	}
	if err := json.Unmarshal([]byte(resp), &add); err != nil || add.Return.ID == 0 || resp != idResp(add.Return.ID) {
		return fmt.Errorf("add port %d: %s", port, resp)
	}
	ids <- add.Return.ID
	list, err := request(path, listReq)
	if err != nil {
		return err
	}
	if want := entry(add.Return.ID, "tcp", "0.0.0.0", port, "10.0.2.100", 80); !strings.Contains(list, want) {
		return fmt.Errorf("list lacks %s: %s", want, list)
	}
	resp, err = request(path, fmt.Sprintf(`{"execute": "remove_hostfwd", "arguments": {"id": %d}}`, add.Return.ID))
	if err != nil {
		return err
	}
	if resp != respEmpty {
		return fmt.Errorf("remove %d: %s", add.Return.ID, resp)
	}
	return nil
}

// TestClose checks that Close ends Serve, removes the socket file, aborts
// a connected client and makes later Serve calls return at once.
func TestClose(t *testing.T) {
	path := t.TempDir() + "/api.sock"
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(newFakeBackend(), Options{Plan: testPlan()})
	s.bind = fakeBind
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	if got := mustRequest(t, path, addReq(`{"proto": "tcp", "host_port": 80, "guest_port": 80}`)); got != idResp(1) {
		t.Fatalf("add: %s", got)
	}
	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(50 * time.Millisecond) // let the server accept it
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitDone(t, done, "Serve")
	if _, err := net.Dial("unix", path); err == nil {
		t.Fatal("socket still accepting after Close")
	}
	if fileExists(path) {
		t.Fatal("socket file left after Close")
	}
	_ = idle.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(idle); err != nil {
		t.Fatalf("idle client: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s.mu.Lock()
	n := len(s.fwds)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d forwards left after Close", n)
	}
	ln2, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := s.Serve(ln2); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
}

func TestReadRequestSplitBytes(t *testing.T) {
	// One byte per read: the request is found complete at its last byte.
	req := listReq + "\n" + "not read"
	got, tooLarge, err := readRequest(&oneByteReader{s: req})
	if err != nil || tooLarge || string(got) != listReq {
		t.Fatalf("readRequest = %q, %v, %v", got, tooLarge, err)
	}
}

type oneByteReader struct{ s string }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.s[0]
	r.s = r.s[1:]
	return 1, nil
}
