package agent

import (
	"net/netip"
	"testing"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
)

func TestKernelEntryOf(t *testing.T) {
	kernel := api.Settings{Entrypoint: api.EntrypointKernel}
	cases := []struct {
		name string
		as   api.Assignment
		want kernelEntry
	}{
		{"haproxy mode", api.Assignment{VIP: "127.0.1.5", Entrypoint: "127.0.1.5:7000", MaxConn: 2000}, kernelEntry{}},
		{"kernel mode, not the holder", api.Assignment{Settings: kernel, Entrypoint: "127.0.1.5:7000", MaxConn: 2000}, kernelEntry{}},
		{"kernel mode, holder", api.Assignment{Settings: kernel, VIP: "127.0.1.5", Entrypoint: "127.0.1.5:7000", MaxConn: 2000},
			kernelEntry{on: true, entry: netip.MustParseAddrPort("127.0.1.5:7000"), maxConn: 2000}},
		{"kernel mode, entrypoint malformed", api.Assignment{Settings: kernel, VIP: "127.0.1.5", Entrypoint: "vip:7000"}, kernelEntry{}},
	}
	for _, c := range cases {
		if got := kernelEntryOf(c.as); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestKernelPrimary(t *testing.T) {
	servers := []render.HAProxyServer{{Name: "r1", Addr: "127.0.0.81", Port: 7001}, {Name: "r2", Addr: "127.0.0.82", Port: 7002}}
	cases := []struct {
		primary string
		servers []render.HAProxyServer
		follows bool
		want    netip.AddrPort
	}{
		{"", servers, true, netip.AddrPort{}},
		{"127.0.0.82:7002", servers, true, netip.MustParseAddrPort("127.0.0.82:7002")},
		{"127.0.0.83:7003", servers, true, netip.AddrPort{}},                 // not a server of the addon: kept as it is
		{"", servers[:1], false, netip.MustParseAddrPort("127.0.0.81:7001")}, // a starter: its one server
		{"", servers, false, netip.AddrPort{}},                               // no sentinels, two servers (a plan change under way): kept
	}
	for _, c := range cases {
		if got := kernelPrimary(c.primary, c.servers, c.follows); got != c.want {
			t.Errorf("kernelPrimary(%q, %d servers, follows %v) = %v, want %v", c.primary, len(c.servers), c.follows, got, c.want)
		}
	}
}
