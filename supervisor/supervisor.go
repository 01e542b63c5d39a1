package supervisor

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/slirp4netns-go/slirp4netns/helper"
	"github.com/slirp4netns-go/slirp4netns/ipc/proto"
	"github.com/slirp4netns-go/slirp4netns/policy"
	"github.com/slirp4netns-go/slirp4netns/sandbox"
	"github.com/slirp4netns-go/slirp4netns/supervisor/api"
)

// helperTimeout bounds the opening of the TAP in the target's namespaces.
const helperTimeout = 15 * time.Second

// offloadEnv disables the TAP's virtio-net header offloads (for benchmarks
// and for comparing against the plain TAP path).
const offloadEnv = "SLIRP4NETNS_DISABLE_OFFLOAD"

// Main runs the supervisor with the given arguments (without argv[0]) and
// returns the process exit status.
func Main(args []string) int {
	opts, err := ParseArgs(args)
	printWarnings(os.Stdout, opts.Warnings)
	if err != nil {
		return reportParseError(err)
	}
	switch {
	case opts.Help:
		PrintUsage(os.Stdout)
		return 0
	case opts.Version:
		PrintVersion(os.Stdout, versionInfo())
		return 0
	}
	s := &run{cfg: opts.Config, stdout: os.Stdout, stderr: os.Stderr}
	if err := s.main(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// run is one supervisor lifetime: what it started, so that cleanup can undo it.
type run struct {
	cfg    policy.Config
	plan   policy.Plan
	stdout io.Writer
	stderr io.Writer

	engine *engineProc
	api    *api.Server
	apiLn  *net.UnixListener
	bess   *bessSocket // --target-type=bess: the socket file to remove

	// afterReady, if set, runs once --ready-fd has been written (tests
	// look at the ready pipe there). Dropping to one P there saved ~0.5 ms
	// of CPU per lifetime but added ~0.4 MiB to the supervisor's peak RSS
	// (the runtime's stop-the-world resize), which counts against the
	// 24 MiB bar of all our processes: not kept. One P from the start of
	// main saved 1.3-2.9 ms of CPU per container but made --ready-fd
	// 0.9-1.7 ms later on a loaded machine (the engine's fork, a vfork,
	// holds the only P while the TAP is being opened): not kept either.
	afterReady func()
}

func (s *run) main() error {
	if err := policy.Validate(&s.cfg); err != nil {
		return err
	}
	if err := CheckFDs(s.cfg); err != nil {
		return err
	}
	if err := closeInheritedOnExec(); err != nil {
		return err
	}
	if err := CheckOutbound(s.cfg); err != nil {
		return err
	}
	plan, err := policy.PlanFor(s.cfg.CIDR)
	if err != nil {
		return err
	}
	s.plan = plan
	// Catch termination early so a signal during start-up still cleans up.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, terminationSignals(signal.Ignored)...)
	defer signal.Stop(sigs)

	// Every child is forked from this goroutine (the engine, the helper
	// process), and its Pdeathsig fires when the forking thread ends: keep
	// the thread ours until cleanup has reaped them (spawnEngine), so that
	// the TAP may be opened on a thread that is then discarded.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer s.cleanup()
	if err := s.start(); err != nil {
		return err
	}
	return s.wait(sigs)
}

// terminationSignals are the signals that end us cleanly (API socket
// removed, exit status 0). SIGTERM always; SIGQUIT too, which would
// otherwise make the Go runtime dump its goroutines and exit 2 (C 1.2.0
// dies quietly). SIGINT and SIGHUP only when they were not ignored when we
// started: a shell starts background jobs with SIGINT ignored and nohup
// ignores SIGHUP, and C 1.2.0 then survives them; Notify would undo that.
// ignored is signal.Ignored (a parameter for the tests).
func terminationSignals(ignored func(os.Signal) bool) []os.Signal {
	sigs := []os.Signal{unix.SIGTERM, unix.SIGQUIT}
	for _, sig := range []os.Signal{unix.SIGINT, unix.SIGHUP} {
		if !ignored(sig) {
			sigs = append(sigs, sig)
		}
	}
	return sigs
}

// start brings everything up in the order the C slirp4netns does, and
// writes the ready fd last.
func (s *run) start() error {
	if link, tap, ok := s.takeEarlyTap(); ok {
		return s.startEarly(link, tap)
	}
	engine, link, tap, err := s.spawnAndOpen(context.Background())
	if err != nil {
		return err
	}
	defer link.Close()
	s.printBanner()
	if err := s.startEngine(engine, link, tap); err != nil {
		return err
	}
	// The guest's link is configured and the API socket listens: that is
	// what --ready-fd promises ("when the network is configured"), so it
	// is written now rather than after the engine's own start-up (its
	// runtime, sandbox and seccomp filter: ~5 ms, most of our start-up
	// time). Frames the guest sends meanwhile wait in the TAP's queue and
	// API requests in the ipc socket until the engine serves them; if the
	// engine fails to start, wait reports it and we exit non-zero.
	s.serveAPI()
	if err := s.signalReady(); err != nil {
		return err
	}
	s.readyHook()
	return nil
}

// startEarly is start when the TAP was opened and configured before the
// Go runtime started (helper/earlytap.c, podman's command line): the
// network is configured already, so --ready-fd is written as soon as the
// API socket listens, and the engine is forked after it (its fork and exec,
// ~0.5 ms, were the longest step left before ready). The API's requests
// wait in the socket's backlog until the engine is there to serve them.
func (s *run) startEarly(link *os.File, tap proto.TapInfo) error {
	defer link.Close()
	if s.cfg.APISocket != "" {
		ln, err := api.Listen(s.cfg.APISocket)
		if err != nil {
			return err
		}
		s.apiLn = ln
	}
	s.printBanner()
	if err := s.signalReady(); err != nil {
		return err
	}
	engine, err := spawnEngine(s.cfg.EnableSandbox, s.stderr)
	if err != nil {
		return err
	}
	if err := s.startEngine(engine, link, tap); err != nil {
		return err
	}
	s.serveAPI()
	s.readyHook()
	return nil
}

// printBanner prints the start-up lines the C version prints.
func (s *run) printBanner() {
	// The man page's example shows this line; the C 1.2.0 banner on stdout
	// does not have it, so it goes to stderr to keep stdout identical.
	fmt.Fprintf(s.stderr, "starting slirp, MTU=%d\n", s.cfg.MTU)
	PrintBanner(s.stdout, s.cfg, s.plan)
}

// startEngine hands the engine its link and configuration and, with
// --enable-seccomp, confines the supervisor; s.engine is set on success.
func (s *run) startEngine(engine *engineProc, link *os.File, tap proto.TapInfo) error {
	start := proto.EngineStart{Config: s.cfg, Link: proto.LinkTap, Tap: tap}
	if s.cfg.TargetType == policy.TargetBESS {
		start.Link = proto.LinkBESS
	}
	if err := engine.begin(start, link); err != nil {
		return err
	}
	if s.cfg.EnableSeccomp {
		// The supervisor never needs ptrace, mount, kexec, bpf or module
		// loading. The engine has been exec'd (spawnEngine returns after
		// its execve) and the TAP is open, so nothing we still start needs
		// them and the deny-list (inherited across exec) can go on now,
		// while the engine sets up, instead of after it is ready.
		if err := sandbox.ApplyLightSeccomp(); err != nil {
			engine.kill()
			return fmt.Errorf("supervisor seccomp: %w", err)
		}
	}
	s.engine = engine
	return nil
}

// readyHook runs the test hook, if any, once start-up is done.
func (s *run) readyHook() {
	if s.afterReady != nil {
		s.afterReady()
	}
}

// takeEarlyTap takes the TAP the early thread opened before the Go runtime
// started, when it did that for this very configuration.
func (s *run) takeEarlyTap() (*os.File, proto.TapInfo, bool) {
	if s.cfg.TargetType == policy.TargetBESS || s.cfg.NetnsType == policy.NetnsTapFD {
		return nil, proto.TapInfo{}, false
	}
	return helper.TakeEarlyTap(s.helperRequest())
}

// spawnAndOpen starts the engine process, opens the link and, with
// --api-socket, listens on the API socket (s.apiLn), all at the same time:
// the engine's fork and exec, then the listen (on this goroutine, whose
// thread is locked: see run.main), overlap the TAP's opening and
// configuration (on another goroutine, whose thread may be discarded),
// which takes the longest of the three, all on the way to --ready-fd. The
// TAP's and the engine's errors win over the API socket's, as when the
// socket was created after them. On failure nothing is left running or
// open, and the socket file is removed.
func (s *run) spawnAndOpen(ctx context.Context) (*engineProc, *os.File, proto.TapInfo, error) {
	type opened struct {
		f   *os.File
		tap proto.TapInfo
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		f, tap, err := s.openLink(ctx)
		ch <- opened{f, tap, err}
	}()
	engine, err := spawnEngine(s.cfg.EnableSandbox, s.stderr)
	var ln *net.UnixListener
	var lnErr error
	if err == nil && s.cfg.APISocket != "" {
		// Requests that need the engine wait in the ipc socket until it
		// serves them.
		ln, lnErr = api.Listen(s.cfg.APISocket)
	}
	o := <-ch
	if err := firstError(err, o.err, lnErr); err != nil {
		// Each step returns nothing open when it fails.
		if engine != nil {
			engine.kill()
		}
		if ln != nil {
			ln.Close()
		}
		if o.f != nil {
			o.f.Close()
		}
		return nil, nil, proto.TapInfo{}, err
	}
	s.apiLn = ln
	return engine, o.f, o.tap, nil
}

// firstError returns the first of errs that is not nil.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// openLink produces the link fd for the engine: a TAP opened by the helper
// in the target's namespaces, an inherited TAP fd, or a BESS socket.
func (s *run) openLink(ctx context.Context) (*os.File, proto.TapInfo, error) {
	switch {
	case s.cfg.TargetType == policy.TargetBESS:
		f, sock, err := listenBESS(s.cfg.Target)
		if err != nil {
			return nil, proto.TapInfo{}, err
		}
		s.bess = sock
		return f, proto.TapInfo{}, nil
	case s.cfg.NetnsType == policy.NetnsTapFD:
		return s.adoptTapFD()
	}
	ctx, cancel := context.WithTimeout(ctx, helperTimeout)
	defer cancel()
	req := s.helperRequest()
	f, info, err := helper.OpenTap(ctx, req)
	if err != nil {
		return nil, proto.TapInfo{}, err
	}
	return f, info, nil
}

// helperRequest is what helper.OpenTap is asked to open.
func (s *run) helperRequest() helper.Request {
	usernsPath, netnsPath := namespacePaths(s.cfg)
	return helper.Request{
		UsernsPath: usernsPath,
		NetnsPath:  netnsPath,
		Stderr:     s.stderr,
		// Both children that use Pdeathsig, the engine and the helper,
		// are forked from a thread locked while they live (run.main), so
		// a thread of ours may be discarded.
		ThreadMayExit: true,
		Config: proto.HelperConfig{
			TapName:        s.cfg.TapName,
			Configure:      s.cfg.Configure,
			MTU:            s.cfg.MTU,
			CIDR:           s.cfg.CIDR,
			EnableIPv6:     s.cfg.EnableIPv6,
			MACAddress:     s.cfg.MACAddress,
			DisableOffload: os.Getenv(offloadEnv) == "1",
			EnableSeccomp:  s.cfg.EnableSeccomp,
		},
	}
}

// adoptTapFD takes over the already open TAP fd named by the positional
// argument (--netns-type=tapfd).
func (s *run) adoptTapFD() (*os.File, proto.TapInfo, error) {
	fd, err := strconv.Atoi(s.cfg.Target)
	if err != nil || fd < 0 {
		return nil, proto.TapInfo{}, fmt.Errorf("tap fd must be a non-negative integer: %q", s.cfg.Target)
	}
	info, err := helper.InspectTapFD(fd)
	if err != nil {
		return nil, proto.TapInfo{}, fmt.Errorf("inspect tap fd %d: %w", fd, err)
	}
	return os.NewFile(uintptr(fd), "tap"), info, nil
}

// namespacePaths applies the C version's rules: with a PID, the PID's
// network and user namespaces (unless --userns-path); with a path, that
// network namespace and only the user namespace named by --userns-path.
func namespacePaths(cfg policy.Config) (userns, netns string) {
	if cfg.NetnsType == policy.NetnsPath {
		return cfg.UsernsPath, cfg.Target
	}
	userns = cfg.UsernsPath
	if userns == "" {
		userns = "/proc/" + cfg.Target + "/ns/user"
	}
	return userns, "/proc/" + cfg.Target + "/ns/net"
}

// serveAPI serves the API socket s.apiLn, if any, with s.engine (which may still be
// starting: its requests then wait for it).
func (s *run) serveAPI() {
	if s.apiLn == nil {
		return
	}
	s.api = api.NewServer(s.engine, api.Options{Plan: s.plan, EnableIPv6: s.cfg.EnableIPv6})
	go func() {
		if err := s.api.Serve(s.apiLn); err != nil {
			fmt.Fprintf(s.stderr, "api: %v\n", err)
		}
	}()
}

// signalReady writes "1" to --ready-fd and closes it, as the C version does.
func (s *run) signalReady() error {
	if s.cfg.ReadyFD < 0 {
		return nil
	}
	f := os.NewFile(uintptr(s.cfg.ReadyFD), "ready-fd")
	defer f.Close()
	if _, err := f.Write([]byte("1")); err != nil {
		return fmt.Errorf("write to ready-fd %d: %w", s.cfg.ReadyFD, err)
	}
	return nil
}

// wait blocks until a reason to stop: a signal, an event on --exit-fd, or
// the engine's end (which is an error).
func (s *run) wait(sigs <-chan os.Signal) error {
	exitFD := make(chan struct{})
	if s.cfg.ExitFD >= 0 {
		go pollExitFD(s.cfg.ExitFD, exitFD)
	}
	targetGone, stopWatch := s.watchTarget()
	defer stopWatch()
	ready, readyTimeout := s.engine.ready, time.NewTimer(engineReadyTimeout)
	defer readyTimeout.Stop()
	for {
		select {
		case <-sigs:
			return nil
		case <-exitFD:
			return nil
		case <-targetGone:
			// Our TAP fd keeps the namespace alive, so nothing else would
			// ever end us: C 1.2.0 runs on until its exit-fd or a signal.
			// Nobody can use the namespace through that PID any more, so
			// end cleanly.
			fmt.Fprintf(s.stderr, "target process %s exited, shutting down\n", s.cfg.Target)
			return nil
		case err := <-ready:
			if err != nil {
				return fmt.Errorf("engine failed to start: %w", err)
			}
			ready = nil
			readyTimeout.Stop()
		case <-readyTimeout.C:
			return fmt.Errorf("engine not ready after %v", engineReadyTimeout)
		case <-s.engine.Done():
			if ready != nil {
				// The engine's report, if it sent one, is queued on ready
				// before Done closes: prefer it to the bare exit.
				select {
				case err := <-ready:
					if err != nil {
						return fmt.Errorf("engine failed to start: %w", err)
					}
				default:
				}
				return fmt.Errorf("engine exited before it was ready: %w", s.engine.exitReason())
			}
			return fmt.Errorf("engine exited: %w", s.engine.exitReason())
		}
	}
}

// watchTarget returns a channel closed when the process named by the PID
// argument exits (--netns-type=pid only; otherwise it never closes), and a
// function that stops watching. A pidfd is immune to PID reuse.
func (s *run) watchTarget() (<-chan struct{}, func()) {
	gone := make(chan struct{})
	if s.cfg.TargetType == policy.TargetBESS || (s.cfg.NetnsType != "" && s.cfg.NetnsType != policy.NetnsPID) {
		return gone, func() {}
	}
	pid, err := strconv.Atoi(s.cfg.Target)
	if err != nil || pid <= 0 {
		return gone, func() {}
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		close(gone)
		return gone, func() {}
	}
	if err != nil {
		fmt.Fprintf(s.stderr, "WARNING: cannot watch target process %d: %v\n", pid, err)
		return gone, func() {}
	}
	// A pipe wakes the poller when the wait ends for another reason, so
	// that neither the goroutine nor the pidfd outlives wait.
	stopR, stopW, err := os.Pipe()
	if err != nil {
		unix.Close(pidfd)
		fmt.Fprintf(s.stderr, "WARNING: cannot watch target process %d: %v\n", pid, err)
		return gone, func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(pidfd)
		defer stopR.Close()
		if pollTargetExit(pidfd, int(stopR.Fd())) {
			close(gone)
		}
	}()
	return gone, func() {
		stopW.Close()
		<-done
	}
}

// pollTargetExit waits until pidfd becomes readable (the process exited:
// true) or stopFD has an event (false).
func pollTargetExit(pidfd, stopFD int) bool {
	pfd := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}, {Fd: int32(stopFD), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(pfd, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pfd[1].Revents != 0 {
			return false
		}
		if pfd[0].Revents != 0 {
			return true
		}
	}
}

// pollExitFD closes done on a poll(2) event on fd, as the man page says:
// hang-up, error or an invalid fd. Like the C version (which polls for
// G_IO_HUP), it asks for no other event, so that data written to the
// exit-fd, or an fd that is always readable, does not end slirp4netns.
func pollExitFD(fd int, done chan<- struct{}) {
	defer close(done)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLHUP}}
	for {
		n, err := unix.Poll(pfd, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n > 0 {
			return
		}
	}
}

// cleanup stops what start started, in reverse order.
func (s *run) cleanup() {
	if s.api != nil {
		s.api.Close()
	}
	if s.apiLn != nil {
		// Serve may not have taken the listener over yet (or never ran,
		// when the engine failed); closing it again is harmless and
		// removes the socket file either way.
		s.apiLn.Close()
	}
	if s.engine != nil {
		s.engine.kill()
	}
	if s.bess != nil {
		s.bess.remove()
	}
}
