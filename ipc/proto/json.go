package proto

import (
	"strconv"

	"github.com/slirp4netns-go/slirp4netns/ipc/internal/jsonw"
	"github.com/slirp4netns-go/slirp4netns/policy"
)

// AppendJSON appends s as encoding/json's Marshal writes it (same bytes),
// without reflection: the engine-start message is the one the supervisor
// sends on its way to --ready-fd, and a first json.Marshal costs ~0.15 ms
// there (TestEngineStartJSON keeps the two equal, field for field).
func (s EngineStart) AppendJSON(b []byte) []byte {
	o := jsonw.Begin(b)
	o.Value("config", func(b []byte) []byte { return appendConfig(b, s.Config) })
	o.String("link", string(s.Link))
	o.Value("tap", s.Tap.AppendJSON)
	return o.End()
}

// AppendJSON appends t as encoding/json's Marshal writes it.
func (t TapInfo) AppendJSON(b []byte) []byte {
	o := jsonw.Begin(b)
	o.String("name", t.Name)
	o.Bool("vnet_hdr", t.VnetHdr)
	o.Uint("offloads", uint64(t.Offloads))
	o.Bool("created", t.Created)
	return o.End()
}

// appendConfig appends c as encoding/json's Marshal writes it: the fields
// in declaration order, under their tags, omitempty honoured.
func appendConfig(b []byte, c policy.Config) []byte {
	o := jsonw.Begin(b)
	o.Bool("configure", c.Configure)
	o.Int("exit_fd", int64(c.ExitFD))
	o.Int("ready_fd", int64(c.ReadyFD))
	o.Int("mtu", int64(c.MTU))
	o.Bool("enable_ipv6", c.EnableIPv6)
	o.StringOmitEmpty("api_socket", c.APISocket)
	o.String("cidr", c.CIDR)
	o.Bool("disable_host_loopback", c.DisableHostLoopback)
	o.String("netns_type", string(c.NetnsType))
	o.StringOmitEmpty("userns_path", c.UsernsPath)
	o.Bool("enable_sandbox", c.EnableSandbox)
	o.Bool("enable_seccomp", c.EnableSeccomp)
	o.StringOmitEmpty("outbound_addr", c.OutboundAddr)
	o.StringOmitEmpty("outbound_addr6", c.OutboundAddr6)
	o.Bool("disable_dns", c.DisableDNS)
	o.StringOmitEmpty("mac_address", c.MACAddress)
	o.String("target_type", string(c.TargetType))
	o.String("target", c.Target)
	o.String("tap_name", c.TapName)
	return o.End()
}

// DecodeCanonicalJSON sets s from b when b is in the form AppendJSON
// writes, with no escape in any string, and reports whether it did;
// otherwise s is left as it was, for encoding/json to decode. For such
// input the result is json.Unmarshal's (FuzzEngineStartDecode), without
// its first use's reflection (~0.1 ms in the engine's start).
func (s *EngineStart) DecodeCanonicalJSON(b []byte) bool {
	v := *s
	r := jsonw.NewReader(b)
	r.Begin()
	r.Key("config")
	readConfig(r, &v.Config)
	r.Key("link")
	v.Link = LinkKind(r.String())
	r.Key("tap")
	v.Tap.read(r)
	r.End()
	if !r.Done() {
		return false
	}
	*s = v
	return true
}

// read reads t's object; like json.Unmarshal, it sets only the members
// present.
func (t *TapInfo) read(r *jsonw.Reader) {
	r.Begin()
	r.Key("name")
	t.Name = r.String()
	r.Key("vnet_hdr")
	t.VnetHdr = r.Bool()
	r.Key("offloads")
	t.Offloads = uint32(r.Uint(32))
	r.Key("created")
	t.Created = r.Bool()
	r.End()
}

// readConfig reads the object appendConfig writes into c; omitempty
// members may be absent (c keeps its value, as with json.Unmarshal).
func readConfig(r *jsonw.Reader, c *policy.Config) {
	optional := func(k string, dst *string) {
		if r.Has(k) {
			r.Key(k)
			*dst = r.String()
		}
	}
	r.Begin()
	r.Key("configure")
	c.Configure = r.Bool()
	r.Key("exit_fd")
	c.ExitFD = int(r.Int(strconv.IntSize))
	r.Key("ready_fd")
	c.ReadyFD = int(r.Int(strconv.IntSize))
	r.Key("mtu")
	c.MTU = int(r.Int(strconv.IntSize))
	r.Key("enable_ipv6")
	c.EnableIPv6 = r.Bool()
	optional("api_socket", &c.APISocket)
	r.Key("cidr")
	c.CIDR = r.String()
	r.Key("disable_host_loopback")
	c.DisableHostLoopback = r.Bool()
	r.Key("netns_type")
	c.NetnsType = policy.NetnsType(r.String())
	optional("userns_path", &c.UsernsPath)
	r.Key("enable_sandbox")
	c.EnableSandbox = r.Bool()
	r.Key("enable_seccomp")
	c.EnableSeccomp = r.Bool()
	optional("outbound_addr", &c.OutboundAddr)
	optional("outbound_addr6", &c.OutboundAddr6)
	r.Key("disable_dns")
	c.DisableDNS = r.Bool()
	optional("mac_address", &c.MACAddress)
	r.Key("target_type")
	c.TargetType = policy.TargetType(r.String())
	r.Key("target")
	c.Target = r.String()
	r.Key("tap_name")
	c.TapName = r.String()
	r.End()
}
