package link_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// BenchmarkTapTCPKernelToGvisor measures kernel→gVisor TCP throughput over a
// real TAP (the guest uploading through slirp): our endpoint with and
// without the virtio-net header, and gVisor's fdbased as the baseline.
func BenchmarkTapTCPKernelToGvisor(b *testing.B) {
	for _, kind := range []linkKind{kindVnet, kindPlain, kindFdbased} {
		for _, mtu := range []int{1500, 65520} {
			b.Run(fmt.Sprintf("%v/mtu%d", kind, mtu), func(b *testing.B) {
				env := newTapEnv(b, kind, mtu)
				ln, err := gonet.ListenTCP(env.s, mustFull(gw4, 5001), 0x0800)
				if err != nil {
					b.Fatal(err)
				}
				defer ln.Close()
				kc, gc := connectPair(b, ln, func() (net.Conn, error) { return env.dialKernel("10.0.2.2:5001") })
				defer kc.Close()
				defer gc.Close()
				benchStream(b, kc, gc)
				env.logStats(b)
			})
		}
	}
}

// BenchmarkTapTCPGvisorToKernel measures gVisor→kernel TCP throughput (the
// guest downloading through slirp).
func BenchmarkTapTCPGvisorToKernel(b *testing.B) {
	for _, kind := range []linkKind{kindVnet, kindPlain, kindFdbased} {
		for _, mtu := range []int{1500, 65520} {
			b.Run(fmt.Sprintf("%v/mtu%d", kind, mtu), func(b *testing.B) {
				env := newTapEnv(b, kind, mtu)
				kl, err := env.listenKernel("10.0.2.100:5002")
				if err != nil {
					b.Fatal(err)
				}
				defer kl.Close()
				gc, err := gonet.DialTCP(env.s, mustFull(guest4, 5002), 0x0800)
				if err != nil {
					b.Fatal(err)
				}
				defer gc.Close()
				kc, err := kl.Accept()
				if err != nil {
					b.Fatal(err)
				}
				defer kc.Close()
				benchStream(b, gc, kc)
				env.logStats(b)
			})
		}
	}
}

func mustFull(p netip.Prefix, port uint16) tcpip.FullAddress {
	a, _ := gvisorAddr(p, port)
	return a
}

// connectPair dials ln with dial and returns both ends: the dialled conn
// first, then the accepted one. Any failure fails tb.
func connectPair(tb testing.TB, ln net.Listener, dial func() (net.Conn, error)) (net.Conn, net.Conn) {
	tb.Helper()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	kc, err := dial()
	if err != nil {
		tb.Fatal(err)
	}
	gc := <-acc
	if gc == nil {
		tb.Fatal("accept failed")
	}
	return kc, gc
}

// benchStream writes b.N chunks of 1 MiB from w and waits until r has read
// them all.
func benchStream(b *testing.B, w, r net.Conn) {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	deadline := time.Now().Add(5 * time.Minute)
	w.SetDeadline(deadline)
	r.SetDeadline(deadline)
	want := int64(b.N) * chunk
	done := make(chan error, 1)
	go func() {
		n, err := io.CopyBuffer(io.Discard, io.LimitReader(r, want), make([]byte, 256<<10))
		if err == nil && n != want {
			err = fmt.Errorf("read %d of %d bytes", n, want)
		}
		done <- err
	}()
	b.SetBytes(chunk)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	// CPU of the whole process (gVisor and the kernel side's syscalls,
	// both sides of the TAP) per GB moved: the cost a user would see.
	b.ReportMetric((cpuTime(b)-cpu0).Seconds()/(float64(want)/1e9), "cpu-s/GB")
}

func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (env *tapEnv) logStats(b *testing.B) {
	var tapDrops uint64
	_ = env.ns.Do(func() error {
		l, err := netlink.LinkByName("tap0")
		if err == nil && l.Attrs().Statistics != nil {
			tapDrops = l.Attrs().Statistics.TxDropped
		}
		return err
	})
	if env.ep == nil {
		b.Logf("N=%d kernel dropped %d frames on tap0 (we read too slowly)", b.N, tapDrops)
		return
	}
	st := env.ep.Stats()
	b.Logf("N=%d rx %d frames (%d GSO, %d dropped), tx %d frames (%d GSO, %d errors); kernel dropped %d on tap0",
		b.N, st.RxFrames, st.RxGSOFrames, st.RxDropped, st.TxFrames, st.TxGSOFrames, st.TxErrors, tapDrops)
}
