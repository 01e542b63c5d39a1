package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/slirp4netns-go/slirp4netns/test/testnet"
)

// toolTimeout bounds every tool run.
const toolTimeout = 60 * time.Second

// tools are the small programs the tests run inside a guest (with nsenter)
// in place of external tools that may not be installed. Each takes its
// arguments as strings, prints its result on stdout and returns an error
// that makes it exit 1.
var tools = map[string]func(ctx context.Context, args []string) error{
	"dns":      toolDNS,
	"echo":     toolEcho,
	"parallel": toolParallel,
	"upload":   toolUpload,
	"serve":    toolServe,
	"dial":     toolDial,
	"udp":      toolUDP,
	"http":     toolHTTP,
}

// runTool is the "tool" stage: argv is TOOL ARGS...
func runTool(argv []string) int {
	if len(argv) == 0 || tools[argv[0]] == nil {
		fmt.Fprintf(os.Stderr, "tool: unknown tool %q\n", argv)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	if err := tools[argv[0]](ctx, argv[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "tool %s: %v\n", argv[0], err)
		return 1
	}
	return 0
}

func wantArgs(args []string, n int, usage string) error {
	if len(args) != n {
		return fmt.Errorf("usage: %s (got %q)", usage, args)
	}
	return nil
}

// toolDNS: dns SERVER NETWORK NAME — print the A records, one a line.
func toolDNS(ctx context.Context, args []string) error {
	if err := wantArgs(args, 3, "dns SERVER udp|tcp NAME"); err != nil {
		return err
	}
	addrs, err := testnet.LookupA(ctx, args[0], args[1], args[2])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}

// toolEcho: echo tcp|udp ADDR SIZE — send SIZE random bytes to an echo
// server and check that the same bytes come back.
func toolEcho(ctx context.Context, args []string) error {
	if err := wantArgs(args, 3, "echo tcp|udp ADDR SIZE"); err != nil {
		return err
	}
	size, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	if args[0] == "udp" {
		return echoUDP(ctx, args[1], size)
	}
	if err := echoTCP(ctx, args[1], size); err != nil {
		return err
	}
	fmt.Println("ok")
	return nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// echoTCP connects to the echo server at addr and checks one echo of size
// random bytes (echoConn).
func echoTCP(ctx context.Context, addr string, size int) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoConn(ctx, c, size)
}

// echoConn sends size random bytes on c and checks the echo, writing and
// reading at the same time (a large echo would otherwise fill both socket
// buffers and stall); ctx's deadline, if any, bounds both.
func echoConn(ctx context.Context, c net.Conn, size int) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	addr := c.RemoteAddr()
	msg := randomBytes(size)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		werr <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo from %s: %w", addr, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write to %s: %w", addr, err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo from %s differs", addr)
	}
	return nil
}

// echoUDP sends one datagram, retrying a few times (UDP may drop the first
// one while ARP resolves), and checks the reply.
func echoUDP(ctx context.Context, addr string, size int) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := randomBytes(size)
	buf := make([]byte, 65536)
	for try := 0; try < 5 && ctx.Err() == nil; try++ {
		if _, err := c.Write(msg); err != nil {
			return fmt.Errorf("send to %s: %w", addr, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if !bytes.Equal(buf[:n], msg) {
			return fmt.Errorf("udp echo from %s differs (%d bytes, sent %d)", addr, n, size)
		}
		fmt.Println("ok")
		return nil
	}
	return fmt.Errorf("no udp echo from %s", addr)
}

// toolParallel: parallel ADDR N SIZE — N concurrent TCP echo exchanges.
func toolParallel(ctx context.Context, args []string) error {
	if err := wantArgs(args, 3, "parallel ADDR N SIZE"); err != nil {
		return err
	}
	n, err1 := strconv.Atoi(args[1])
	size, err2 := strconv.Atoi(args[2])
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = echoTCP(ctx, args[0], size)
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Println("ok")
	return nil
}

// toolUpload: upload URL SIZE — POST testnet.Blob(SIZE) and print the
// response (the server's SHA-256 of what it received).
func toolUpload(ctx context.Context, args []string) error {
	if err := wantArgs(args, 2, "upload URL SIZE"); err != nil {
		return err
	}
	size, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, args[0], testnet.Blob(size))
	if err != nil {
		return err
	}
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s: %s", args[0], resp.Status, body)
	}
	fmt.Print(string(body))
	return nil
}

// toolServe: serve tcp|udp ADDR — answer "peer=IP" (testnet.PeerTCP/UDP);
// prints "ready" once listening and runs until killed or toolTimeout.
func toolServe(ctx context.Context, args []string) error {
	if err := wantArgs(args, 2, "serve tcp|udp ADDR"); err != nil {
		return err
	}
	var s testnet.Services
	defer s.Close()
	var err error
	if args[0] == "udp" {
		_, err = s.ServeUDP("udp", args[1], testnet.PeerUDP)
	} else {
		_, err = s.ServeTCP("tcp", args[1], testnet.PeerTCP)
	}
	if err != nil {
		return err
	}
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return nil
}

// toolDial: dial ADDR TIMEOUT — connect over TCP and print "connected" and
// what the server sends until EOF, or "refused" / "error: ..."; the output
// ends with "elapsed=<duration>". Exit status 0 either way, so tests can
// assert on failures.
func toolDial(ctx context.Context, args []string) error {
	if err := wantArgs(args, 2, "dial ADDR TIMEOUT"); err != nil {
		return err
	}
	timeout, err := time.ParseDuration(args[1])
	if err != nil {
		return err
	}
	start := time.Now()
	defer func() { fmt.Printf("elapsed=%v\n", time.Since(start)) }()
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", args[0])
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		fmt.Println("refused")
		return nil
	case err != nil:
		fmt.Printf("error: %v\n", err)
		return nil
	}
	defer c.Close()
	fmt.Println("connected")
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	b, _ := io.ReadAll(c)
	fmt.Print(string(b))
	return nil
}

// toolUDP: udp ADDR MESSAGE — send one datagram (a few times, until a
// reply) and print the reply, or "no reply".
func toolUDP(ctx context.Context, args []string) error {
	if err := wantArgs(args, 2, "udp ADDR MESSAGE"); err != nil {
		return err
	}
	reply, err := udpRequest(ctx, args[0], "", []byte(args[1]))
	if err != nil {
		fmt.Printf("no reply: %v\n", err)
		return nil
	}
	fmt.Print(strings.TrimRight(string(reply), "\n") + "\n")
	return nil
}

// udpRequest sends msg from src (empty: any) to addr until a reply comes,
// up to 5 times one second apart.
func udpRequest(ctx context.Context, addr, src string, msg []byte) ([]byte, error) {
	d := net.Dialer{}
	if src != "" {
		d.LocalAddr = &net.UDPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, 65536)
	var lastErr error
	for try := 0; try < 5 && ctx.Err() == nil; try++ {
		if _, err := c.Write(msg); err != nil {
			lastErr = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return buf[:n], nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("udp %s: %w", addr, lastErr)
}
