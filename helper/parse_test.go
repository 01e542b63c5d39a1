package helper

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/slirp4netns-go/slirp4netns/ipc"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name, typ, body string
		wantErr         string
	}{
		{"ok", ipc.TypeHelperConfig, `{"tap_name":"tap0","configure":true,"mtu":1500,"cidr":"10.0.2.0/24"}`, ""},
		{"wrong type", ipc.TypeTap, `{"tap_name":"tap0"}`, `unexpected message "tap"`},
		{"bad json", ipc.TypeHelperConfig, `{"tap_name":`, "decode helper-config message"},
		{"no name", ipc.TypeHelperConfig, `{"mtu":1500}`, "empty TAP name"},
		{"negative mtu", ipc.TypeHelperConfig, `{"tap_name":"tap0","configure":true,"mtu":-1}`, "invalid MTU -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseConfig(ipc.Message{Type: tc.typ, Body: json.RawMessage(tc.body)})
			if tc.wantErr == "" {
				if err != nil || cfg.TapName != "tap0" || !cfg.Configure || cfg.MTU != 1500 || cfg.CIDR != "10.0.2.0/24" {
					t.Errorf("parseConfig = %+v, %v", cfg, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseConfig error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzParseConfig feeds arbitrary message bodies to the helper's decoder:
// it must never panic and never accept a config without a TAP name.
func FuzzParseConfig(f *testing.F) {
	f.Add(`{"tap_name":"tap0","configure":true,"mtu":65520,"cidr":"10.0.2.0/24","enable_ipv6":true}`)
	f.Add(`{"tap_name":"","mac_address":"02:00:00:00:00:01"}`)
	f.Add(`{"tap_name":"x","mtu":-5,"configure":true}`)
	f.Add(`null`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		cfg, err := parseConfig(ipc.Message{Type: ipc.TypeHelperConfig, Body: json.RawMessage(body)})
		if err == nil && (cfg.TapName == "" || (cfg.Configure && cfg.MTU < 0)) {
			t.Errorf("accepted %q as %+v", body, cfg)
		}
	})
}

func TestHelperCommandLayout(t *testing.T) {
	files := make([]*os.File, 3)
	for i := range files {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	peer, userns, netns := files[0], files[1], files[2]
	t.Setenv("_SLIRP4NETNS_NETNS_FD", "99") // stale: must not leak through
	for _, tc := range []struct {
		name      string
		ns        namespaces
		wantFiles []*os.File
		wantEnv   []string
	}{
		{"userns and netns", namespaces{userns: userns, netns: netns}, []*os.File{peer, userns, netns},
			[]string{"_SLIRP4NETNS_MODE=helper", "_SLIRP4NETNS_USERNS_FD=4", "_SLIRP4NETNS_NETNS_FD=5"}},
		{"netns only", namespaces{netns: netns}, []*os.File{peer, netns},
			[]string{"_SLIRP4NETNS_MODE=helper", "_SLIRP4NETNS_NETNS_FD=4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := helperCommand(&tc.ns, peer, nil)
			if cmd.Path != "/proc/self/exe" || cmd.Stderr != os.Stderr {
				t.Errorf("path %q stderr %v", cmd.Path, cmd.Stderr)
			}
			if len(cmd.ExtraFiles) != len(tc.wantFiles) {
				t.Fatalf("ExtraFiles = %v, want %v", cmd.ExtraFiles, tc.wantFiles)
			}
			for i := range tc.wantFiles {
				if cmd.ExtraFiles[i] != tc.wantFiles[i] {
					t.Errorf("ExtraFiles[%d] = %v, want %v", i, cmd.ExtraFiles[i], tc.wantFiles[i])
				}
			}
			var private []string
			for _, kv := range cmd.Env {
				if strings.HasPrefix(kv, "_SLIRP4NETNS_") {
					private = append(private, kv)
				}
			}
			if strings.Join(private, " ") != strings.Join(tc.wantEnv, " ") {
				t.Errorf("private env = %q, want %q", private, tc.wantEnv)
			}
		})
	}
}
