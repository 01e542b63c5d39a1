package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slirp4netns-go/slirp4netns/engine/link"
)

// BenchmarkTAPIperf3 measures the engine on a real TAP with iperf3 (3 s per
// case) between a guest namespace and an iperf3 server on the host's
// loopback (through 10.0.2.2), in namespaces it creates like
// TestEndToEndTAP. It reports Gbit/s and the engine's CPU seconds per GB:
//
//	go test -run '^$' -bench TAPIperf3 -benchtime 1x ./engine/
func BenchmarkTAPIperf3(b *testing.B) {
	if os.Getenv(e2eEnv) != "1" {
		runNamespaced(b, 5*time.Minute, "-test.run=^$", "-test.bench=^BenchmarkTAPIperf3$", "-test.benchtime=1x")
		return
	}
	run(b, "ip", "link", "set", "lo", "up")
	const port = "5201"
	srv := exec.Command("iperf3", "-s", "-B", "127.0.0.1", "-p", port)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	time.Sleep(300 * time.Millisecond)
	for _, mtu := range []int{1500, 65520} {
		for _, vnet := range []bool{false, true} {
			b.Run(fmt.Sprintf("mtu=%d/vnet_hdr=%v/guest2host", mtu, vnet), func(b *testing.B) {
				iperfCase(b, mtu, vnet, false, congestionControl, port)
			})
			// The engine's congestion control matters only when it sends.
			for _, cc := range []string{"cubic", "reno"} {
				b.Run(fmt.Sprintf("mtu=%d/vnet_hdr=%v/host2guest/cc=%s", mtu, vnet, cc), func(b *testing.B) {
					iperfCase(b, mtu, vnet, true, cc, port)
				})
			}
		}
	}
}

func iperfCase(b *testing.B, mtu int, vnet, reverse bool, cc, port string) {
	offloads := uint32(link.TunFCsum | link.TunFTSO4 | link.TunFTSO6)
	ns, fd := newTapGuest(b, vnet, offloads, mtu)
	defer ns.Close()
	ep, err := link.New(fd, link.Options{MTU: uint32(mtu), Address: GatewayMAC, VnetHdr: vnet, Offloads: offloads})
	if err != nil {
		b.Fatal(err)
	}
	cfg := testConfig()
	cfg.MTU = mtu
	cfg.EnableIPv6 = false
	eng, err := New(cfg, ep, WithoutServices(), func(o *options) { o.congestion = cc })
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	args := []string{"-c", "10.0.2.2", "-p", port, "-t", "3", "-J", "--connect-timeout", "3000"}
	if reverse {
		args = append(args, "-R")
	}
	var out []byte
	cpu0 := processCPU(b)
	for range b.N {
		err = ns.Do(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var err error
			out, err = exec.CommandContext(ctx, "iperf3", args...).Output()
			return err
		})
		if err != nil {
			b.Fatalf("iperf3: %v\n%s", err, out)
		}
	}
	cpu := processCPU(b) - cpu0
	var res struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		b.Fatalf("iperf3 output: %v", err)
	}
	b.ReportMetric(res.End.SumReceived.BitsPerSecond/1e9, "Gbit/s")
	if gb := res.End.SumReceived.Bytes / 1e9; gb > 0 {
		// This process's CPU (the engine, plus little else) per GB moved.
		b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
	}
}

// processCPU is this process's user+system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may contain spaces).
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
