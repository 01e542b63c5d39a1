// Package dns is the engine's built-in DNS server (10.0.2.3 and fd00::3 by
// default): a relay that forwards well-formed DNS queries from the guest to
// the nameservers of the host's resolv.conf and returns their answers.
//
// The relay only ever forwards messages it has parsed and re-encoded, never
// raw bytes: with --disable-host-loopback, DNS to a loopback resolver is the
// one path from the guest to the host's loopback that remains open, so it
// must carry DNS and nothing else.
package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Defaults for Options fields left zero.
const (
	DefaultResolvConf  = "/etc/resolv.conf"
	DefaultTimeout     = 2 * time.Second
	DefaultPort        = 53
	DefaultMaxInFlight = 256
)

// resolvRecheck is how often, at most, resolv.conf is stat'ed for changes.
const resolvRecheck = time.Second

// maxMessageSize is the largest DNS message (TCP length prefix limit).
const maxMessageSize = 65535

// ErrMalformed is returned (wrapped) by Exchange for input that is not a
// well-formed DNS query; such input is never forwarded.
var ErrMalformed = errors.New("not a well-formed DNS query")

// Options configures a Relay.
type Options struct {
	// ResolvConf is the path of the resolv.conf naming the upstream
	// nameservers; default DefaultResolvConf. It may be a symlink and may be
	// replaced at any time.
	ResolvConf string
	// Dial opens upstream connections ("udp" or "tcp"); it lets the engine
	// bind them to --outbound-addr. Default: a plain net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds one attempt at one upstream server; default
	// DefaultTimeout. After it the next server is tried.
	Timeout time.Duration
	// Port is the upstream port (resolv.conf has no ports); default 53.
	// Tests point it at a loopback server on an ephemeral port.
	Port int
	// MaxInFlight bounds concurrent upstream exchanges; default
	// DefaultMaxInFlight.
	MaxInFlight int
	// Bound, if set, is called once ServeStack has bound its sockets, so
	// that the engine attaches its link only when the service can answer.
	Bound func()
}

// Relay forwards DNS queries to the resolv.conf nameservers. It is safe for
// concurrent use.
type Relay struct {
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	timeout time.Duration
	sem     chan struct{}
	resolv  *resolvWatcher
	bound   func() // Options.Bound, or a no-op
}

// NewRelay returns a Relay configured by opts (zero fields get defaults).
func NewRelay(opts Options) *Relay {
	if opts.ResolvConf == "" {
		opts.ResolvConf = DefaultResolvConf
	}
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Port <= 0 || opts.Port > 65535 {
		opts.Port = DefaultPort
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Bound == nil {
		opts.Bound = func() {}
	}
	return &Relay{
		dial:    opts.Dial,
		timeout: opts.Timeout,
		sem:     make(chan struct{}, opts.MaxInFlight),
		resolv:  &resolvWatcher{path: opts.ResolvConf, port: opts.Port, recheck: resolvRecheck},
		bound:   opts.Bound,
	}
}

// Exchange forwards one query (a DNS message in wire format, as received over
// UDP) upstream over UDP and returns the answer. A truncated (TC) answer is
// returned as is, so that the client retries over TCP. When no nameserver is
// configured or none answers, the answer is a SERVFAIL. An error is returned
// only for input that is not a well-formed query (ErrMalformed, nothing is
// sent) or when ctx ends.
func (r *Relay) Exchange(ctx context.Context, query []byte) ([]byte, error) {
	if err := r.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.release()
	return r.exchange(ctx, query, "udp")
}

func (r *Relay) acquire(ctx context.Context) error {
	select {
	case r.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Relay) release() { <-r.sem }

// parseQuery accepts only a standard query: not a response, opcode QUERY,
// exactly one question, no answer or authority records. Every section is
// parsed (names, compression pointers, record lengths), so what is re-encoded
// from the result is a DNS message and nothing else.
//
// golang.org/x/net/dns/dnsmessage rather than a full DNS library: the relay
// needs no more than this, and a larger library (with its TLS, DNSSEC and
// crypto dependencies) added about 1.2 MB of code to a binary whose code
// pages are resident in every one of our processes (docs/benchmarks.md).
func parseQuery(b []byte) (*dnsmessage.Message, error) {
	m := new(dnsmessage.Message)
	if err := m.Unpack(b); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch {
	case m.Header.Response:
		return nil, fmt.Errorf("%w: response bit set", ErrMalformed)
	case m.Header.OpCode != opcodeQuery:
		return nil, fmt.Errorf("%w: opcode %d", ErrMalformed, m.Header.OpCode)
	case len(m.Questions) != 1:
		return nil, fmt.Errorf("%w: %d questions", ErrMalformed, len(m.Questions))
	case len(m.Answers) != 0 || len(m.Authorities) != 0:
		return nil, fmt.Errorf("%w: records in answer/authority section", ErrMalformed)
	}
	return m, nil
}

// opcodeQuery is the standard query opcode (RFC 1035 4.1.1).
const opcodeQuery dnsmessage.OpCode = 0

// exchange forwards query over network ("udp" or "tcp") to each nameserver
// in turn. The caller holds a concurrency slot.
func (r *Relay) exchange(ctx context.Context, query []byte, network string) ([]byte, error) {
	q, err := parseQuery(query)
	if err != nil {
		return nil, err
	}
	wire, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("%w: re-encode: %v", ErrMalformed, err)
	}
	var fallback []byte
	for _, server := range r.resolv.nameservers(time.Now()) {
		resp, rcode, err := r.ask(ctx, network, server, wire, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		// Like glibc, try the next server when one fails or refuses.
		if rcode == dnsmessage.RCodeServerFailure || rcode == dnsmessage.RCodeRefused {
			if fallback == nil {
				fallback = resp
			}
			continue
		}
		return resp, nil
	}
	if fallback != nil {
		return fallback, nil
	}
	return servfail(q)
}

// servfail builds a SERVFAIL answer to q: its id, opcode, RD and CD bits and
// question, with recursion available.
func servfail(q *dnsmessage.Message) ([]byte, error) {
	m := dnsmessage.Message{
		Header: dnsmessage.Header{
			ID:                 q.Header.ID,
			Response:           true,
			OpCode:             q.Header.OpCode,
			RecursionDesired:   q.Header.RecursionDesired,
			CheckingDisabled:   q.Header.CheckingDisabled,
			RecursionAvailable: true,
			RCode:              dnsmessage.RCodeServerFailure,
		},
		Questions: q.Questions,
	}
	b, err := m.Pack()
	if err != nil {
		return nil, fmt.Errorf("encode SERVFAIL: %w", err)
	}
	return b, nil
}

// ask performs one exchange with one upstream server within r.timeout and
// returns the validated answer and its rcode.
func (r *Relay) ask(ctx context.Context, network, server string, wire []byte, q *dnsmessage.Message) ([]byte, dnsmessage.RCode, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	conn, err := r.dial(ctx, network, server)
	if err != nil {
		return nil, 0, fmt.Errorf("dial %s %s: %w", network, server, err)
	}
	defer conn.Close()
	// Unblock reads and writes once ctx ends (timeout or shutdown); by then
	// ctx.Err() is set, which tells the caller why the read failed.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if network == "tcp" {
		return askTCP(conn, wire, q)
	}
	return askUDP(conn, wire, q)
}

func askUDP(conn net.Conn, wire []byte, q *dnsmessage.Message) ([]byte, dnsmessage.RCode, error) {
	if _, err := conn.Write(wire); err != nil {
		return nil, 0, fmt.Errorf("send query: %w", err)
	}
	buf := make([]byte, maxMessageSize)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, 0, fmt.Errorf("read answer: %w", err)
		}
		// Stray or spoofed datagrams are skipped, not fatal.
		if rcode, ok := validAnswer(buf[:n], q); ok {
			return append([]byte(nil), buf[:n]...), rcode, nil
		}
	}
}

func askTCP(conn net.Conn, wire []byte, q *dnsmessage.Message) ([]byte, dnsmessage.RCode, error) {
	if err := writeTCPMsg(conn, wire); err != nil {
		return nil, 0, fmt.Errorf("send query: %w", err)
	}
	resp, err := readTCPMsg(conn)
	if err != nil {
		return nil, 0, fmt.Errorf("read answer: %w", err)
	}
	rcode, ok := validAnswer(resp, q)
	if !ok {
		return nil, 0, errors.New("upstream answer does not match the query")
	}
	return resp, rcode, nil
}

// validAnswer reports whether b is a response to q (same id and question)
// and returns its rcode. Only the header and the question are parsed: the
// answer is relayed as it came, and records this parser does not know must
// not make a good answer look bad.
func validAnswer(b []byte, q *dnsmessage.Message) (dnsmessage.RCode, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil || !h.Response || h.ID != q.Header.ID {
		return 0, false
	}
	a, err := p.Question()
	if errors.Is(err, dnsmessage.ErrSectionDone) {
		// Servers may omit the question in error answers (e.g. FORMERR).
		return h.RCode, h.RCode != dnsmessage.RCodeSuccess
	}
	if err != nil {
		return 0, false
	}
	want := q.Questions[0]
	if a.Type != want.Type || a.Class != want.Class || !strings.EqualFold(a.Name.String(), want.Name.String()) {
		return 0, false
	}
	if _, err := p.Question(); !errors.Is(err, dnsmessage.ErrSectionDone) {
		return 0, false // a second question, or a malformed one
	}
	return h.RCode, true
}

// writeTCPMsg writes msg with its RFC 1035 two-byte length prefix.
func writeTCPMsg(w io.Writer, msg []byte) error {
	if len(msg) > maxMessageSize {
		return fmt.Errorf("message of %d bytes too long for TCP", len(msg))
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}

// readTCPMsg reads one length-prefixed message.
func readTCPMsg(rd io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(rd, l[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(rd, b); err != nil {
		return nil, err
	}
	return b, nil
}
