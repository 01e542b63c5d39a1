package engine

import (
	"context"
	"sync"
	"time"

	"github.com/slirp4netns-go/slirp4netns/engine/internal/stackgrow"
)

// Worker pool limits. The pool runs the engine's long-lived and per-flow
// goroutines (UDP flows, ping sessions, services, forward accept loops)
// whose call chains are deep: fresh goroutines grow their stacks by
// copying, which was ~15 % of the engine's CPU in netbench's connection
// test when TCP relays ran here. Parked workers keep their grown stacks.
// (TCP connections are relayed by the relay scheduler, poller.go.)
const (
	maxIdleWorkers = 16
	workerIdle     = 10 * time.Second
)

// workerPool runs functions on goroutines that survive them, parked for a
// while in case more work comes. Every worker counts in wg; workers exit
// when ctx ends (after their current function).
type workerPool struct {
	ctx  context.Context
	wg   *sync.WaitGroup
	work chan func() // unbuffered: a send succeeds only to a parked worker

	mu   sync.Mutex
	idle int
}

func newWorkerPool(ctx context.Context, wg *sync.WaitGroup) *workerPool {
	return &workerPool{ctx: ctx, wg: wg, work: make(chan func())}
}

// run runs f on a parked worker, or on a new one if none is parked.
func (p *workerPool) run(f func()) {
	select {
	case p.work <- f:
		return
	default:
	}
	p.wg.Add(1)
	go p.worker(f)
}

func (p *workerPool) worker(f func()) {
	// Every worker's first function (a service, a flow) grows its stack
	// to 8 KiB; once, shallow, is cheaper than copying it twice deep.
	stackgrow.To8K()
	defer p.wg.Done()
	timer := time.NewTimer(workerIdle)
	defer timer.Stop()
	for {
		f()
		f = nil // do not pin f's captures while parked
		if !p.park() {
			return
		}
		timer.Reset(workerIdle)
		select {
		case f = <-p.work:
			p.unpark()
		case <-timer.C:
			p.unpark()
			return
		case <-p.ctx.Done():
			p.unpark()
			return
		}
	}
}

// park counts the worker as idle, unless enough are.
func (p *workerPool) park() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle >= maxIdleWorkers || p.ctx.Err() != nil {
		return false
	}
	p.idle++
	return true
}

func (p *workerPool) unpark() {
	p.mu.Lock()
	p.idle--
	p.mu.Unlock()
}
