// Package engine runs gVisor's netstack on the link fd and NATs the guest's
// flows to host sockets.
//
// The engine process (Main) receives its configuration and the link fd from
// the supervisor over ipc; the in-process API (New) is the same machinery
// without ipc, for tests and benchmarks that bring their own link endpoint.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/slirp4netns-go/slirp4netns/policy"
)

// GatewayMAC is the link address the guest sees for the gateway and the DNS
// address: fixed and locally administered (like the C slirp4netns's
// 52:55:0a:00:02:02) so that the guest's ARP cache survives an engine restart.
const GatewayMAC = tcpip.LinkAddress("\x52\x55\x0a\x00\x02\x02")

// nicID is the only NIC of the stack.
const nicID tcpip.NICID = 1

// Defaults of the tunables (see the With* options).
const (
	defaultDialTimeout    = 5 * time.Second
	defaultUDPIdle        = 60 * time.Second
	defaultDNSIdle        = 10 * time.Second
	defaultMaxUDPFlows    = 4096
	defaultSYNLimit       = 1024
	defaultSYNLimitPerSrc = 256
	defaultPingIdle       = 10 * time.Second
	defaultMaxPingFlows   = 256
)

// Option tunes an Engine made by New.
type Option func(*options)

type options struct {
	logger         *log.Logger
	dialTimeout    time.Duration
	udpIdle        time.Duration
	dnsIdle        time.Duration
	maxUDPFlows    int
	synLimit       int
	synLimitPerSrc int
	pingIdle       time.Duration
	maxPingFlows   int
	noServices     bool
	holdLink       bool
	noTCPFast      bool   // guest TCP connections all through gVisor (tcpfast.go)
	congestion     string // TCP congestion control; default congestionControl
	// openPing opens the host socket of a ping session (tests replace it
	// so that no echo request leaves the test).
	openPing func(dst, laddr netip.Addr) (net.Conn, error)
	// beforeHandshake, when set, runs just before the handshake of guest
	// connection id starts (tests hold it there across Engine.Close).
	beforeHandshake func(id stack.TransportEndpointID)
}

func defaultOptions() options {
	return options{
		logger:         log.New(io.Discard, "", 0),
		dialTimeout:    defaultDialTimeout,
		udpIdle:        defaultUDPIdle,
		dnsIdle:        defaultDNSIdle,
		maxUDPFlows:    defaultMaxUDPFlows,
		synLimit:       defaultSYNLimit,
		synLimitPerSrc: defaultSYNLimitPerSrc,
		pingIdle:       defaultPingIdle,
		maxPingFlows:   defaultMaxPingFlows,
		openPing:       openPingSocket,
		congestion:     congestionControl,
	}
}

// WithLogger makes the engine log unusual events (never per-packet) to l.
func WithLogger(l *log.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithDialTimeout bounds how long a guest's TCP SYN waits for the host
// connection before the guest gets a reset.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithUDPIdleTimeout sets after how long without traffic a UDP flow (and its
// host socket) ends; dns applies to flows to or from port 53.
func WithUDPIdleTimeout(idle, dns time.Duration) Option {
	return func(o *options) { o.udpIdle, o.dnsIdle = idle, dns }
}

// WithMaxUDPFlows bounds the outbound UDP flow table; new flows beyond it are
// dropped.
func WithMaxUDPFlows(n int) Option { return func(o *options) { o.maxUDPFlows = n } }

// WithSYNLimits bounds the TCP connection attempts in flight (waiting for the
// host connection), in total and per guest source address.
func WithSYNLimits(total, perSource int) Option {
	return func(o *options) { o.synLimit, o.synLimitPerSrc = total, perSource }
}

// WithPingIdleTimeout sets after how long an ICMP echo relay socket with no
// traffic is closed.
func WithPingIdleTimeout(d time.Duration) Option { return func(o *options) { o.pingIdle = d } }

// WithoutServices leaves out DNS, DHCP and router advertisements (tests that
// exercise only the NAT).
func WithoutServices() Option { return func(o *options) { o.noServices = true } }

// WithoutTCPFastPath serves every guest TCP connection through gVisor,
// as before the fast path (tcpfast.go) existed: for comparisons.
func WithoutTCPFastPath() Option { return func(o *options) { o.noTCPFast = true } }

// WithLinkHeld makes New leave the link detached (its frames wait in the
// TAP's queue) until ReleaseLink: the engine process confines itself in
// between, so that no guest frame is handled by an engine that is not yet
// sandboxed.
func WithLinkHeld() Option { return func(o *options) { o.holdLink = true } }

// Stats are counters of events the engine does not otherwise report.
type Stats struct {
	// SpoofedDropped counts guest packets whose source address lies outside
	// the guest network.
	SpoofedDropped atomic.Uint64
	// NeighborDropped counts ARP requests and neighbor solicitations for
	// addresses the engine does not own (answering them would break the
	// guest's duplicate address detection).
	NeighborDropped atomic.Uint64
	// SYNDropped counts TCP SYNs dropped because too many were in flight.
	SYNDropped atomic.Uint64
	// TCPRefused counts guest TCP connections answered with a reset.
	TCPRefused atomic.Uint64
	// UDPFlowsDropped counts UDP flows not created because the table was full.
	UDPFlowsDropped atomic.Uint64
	// PingsRelayed counts echo requests sent to the host's ICMP sockets.
	PingsRelayed atomic.Uint64
	// PingsDropped counts echo requests that could not be relayed.
	PingsDropped atomic.Uint64
}

// Engine is a running gVisor stack attached to the guest's link, with the
// NAT, the services and the host port forwards.
type Engine struct {
	held  *heldLink
	cfg   policy.Config
	plan  policy.Plan
	opts  options
	stack *stack.Stack
	stats Stats

	outbound4, outbound6 netip.Addr

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the engine starts
	pool   *workerPool    // runs them (goFunc), reusing grown stacks
	conns  connSet        // open host/guest connections, closed by Close

	tcp  *tcpNAT
	fast *tcpFast // nil without a link.Endpoint or WithoutTCPFastPath
	udp  *udpNAT
	ping *pinger

	fmu      sync.Mutex
	forwards map[int]*forward

	servicesErr chan error // services that stopped with an error
	closeOnce   sync.Once
}

// New builds the stack on ep and starts the NAT and, unless
// WithoutServices, the DNS, DHCP and router advertisement services. cfg must
// be validated (its CIDR parses). The Engine owns ep from then on: Close
// detaches and closes it. On error ep may or may not have been closed, so
// the caller closes it (a second Close of an engine/link endpoint is a
// no-op).
func New(cfg policy.Config, ep stack.LinkEndpoint, opts ...Option) (*Engine, error) {
	plan, err := policy.PlanFor(cfg.CIDR)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	out4, err := policy.ChooseOutboundAddr(cfg.OutboundAddr, false, interfaceAddrs)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	out6, err := policy.ChooseOutboundAddr(cfg.OutboundAddr6, true, interfaceAddrs)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Engine{
		cfg:         cfg,
		plan:        plan,
		opts:        o,
		outbound4:   out4,
		outbound6:   out6,
		ctx:         ctx,
		cancel:      cancel,
		forwards:    make(map[int]*forward),
		servicesErr: make(chan error, 4),
	}
	e.pool = newWorkerPool(ctx, &e.wg)
	e.stack = newStack()
	e.ping = newPinger(e)
	e.held = newHeldLink(ep)
	if err := configureNIC(e.stack, cfg, plan, o.congestion, newGuard(e.held, e)); err != nil {
		cancel()
		e.stack.Close()
		return nil, fmt.Errorf("engine: %w", err)
	}
	e.tcp = newTCPNAT(e)
	e.fast = newTCPFast(e, ep)
	e.udp = newUDPNAT(e)
	if !o.noServices {
		if err := e.startServices(); err != nil {
			e.Close()
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	if !o.holdLink {
		e.held.release() // everything that serves the guest is in place
	}
	return e, nil
}

// ReleaseLink attaches the link New held back (WithLinkHeld); the guest's
// frames are served from then on. Calling it again does nothing.
func (e *Engine) ReleaseLink() { e.held.release() }

// Stack is the gVisor stack (for tests and services).
func (e *Engine) Stack() *stack.Stack { return e.stack }

// NIC is the stack's NIC id of the guest link.
func (e *Engine) NIC() tcpip.NICID { return nicID }

// Plan is the address plan in use.
func (e *Engine) Plan() policy.Plan { return e.plan }

// Stats returns the engine's counters (live; read them with Load).
func (e *Engine) Stats() *Stats { return &e.stats }

// ServiceErrors delivers errors of services (DNS, DHCP, RA) that stopped.
func (e *Engine) ServiceErrors() <-chan error { return e.servicesErr }

// Close stops everything: services, forwards, flows and the stack, and waits
// for every goroutine the engine started. It is safe to call more than once.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.cancel()
		// No guest handshake starts from now on: one that did would not be
		// aborted by stack.Close below (handshake.go).
		e.tcp.stopHandshakes()
		e.fmu.Lock()
		fwds := make([]*forward, 0, len(e.forwards))
		for id, f := range e.forwards {
			fwds = append(fwds, f)
			delete(e.forwards, id)
		}
		e.fmu.Unlock()
		for _, f := range fwds {
			f.close()
		}
		e.conns.closeAll()
		e.udp.closeAll()
		e.ping.closeAll()
		// Closing the stack resets the remaining guest endpoints and detaches
		// the link endpoint, which stops its reader goroutines.
		e.stack.Close()
		// Handshakes that began before but registered their endpoint after
		// stack.Close listed the endpoints it aborts.
		e.tcp.drainHandshakes()
		e.stack.Wait()
		e.wg.Wait()
	})
	return nil
}

// goFunc runs f on a goroutine the engine waits for in Close.
func (e *Engine) goFunc(f func()) { e.pool.run(f) }

func (e *Engine) logf(format string, args ...any) { e.opts.logger.Printf(format, args...) }

// interfaceAddrs lists the addresses of a host interface, for
// --outbound-addr given as an interface name.
func interfaceAddrs(name string) ([]netip.Addr, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// connSet tracks open connections so that Close can end them (and with
// them the goroutines copying between them).
type connSet struct {
	mu     sync.Mutex
	closed bool
	m      map[io.Closer]struct{}
}

// add registers c; it returns false (and closes c) if the set is closed.
func (s *connSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.m == nil {
		s.m = make(map[io.Closer]struct{})
	}
	s.m[c] = struct{}{}
	return true
}

func (s *connSet) remove(c io.Closer) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	m := s.m
	s.m = nil
	s.mu.Unlock()
	for c := range m {
		c.Close()
	}
}

// errClosed is returned by operations on a closed engine.
var errClosed = errors.New("engine closed")
