package agent

import (
	"context"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fakeVIPHost is a host's interfaces as vipOps sees them; run applies
// ip addr add/del to them and records every command.
type fakeVIPHost struct {
	addrs map[string][]netip.Addr
	cmds  []string
}

func (h *fakeVIPHost) ops(arping bool) vipOps {
	return vipOps{
		localAddrs: func() (map[string][]netip.Addr, error) { return h.addrs, nil },
		run: func(_ context.Context, name string, args ...string) error {
			h.cmds = append(h.cmds, name+" "+strings.Join(args, " "))
			if name == "ip" && len(args) == 5 {
				ip := netip.MustParsePrefix(args[2]).Addr()
				dev := args[4]
				switch args[1] {
				case "add":
					h.addrs[dev] = append(h.addrs[dev], ip)
				case "del":
					var keep []netip.Addr
					for _, a := range h.addrs[dev] {
						if a != ip {
							keep = append(keep, a)
						}
					}
					h.addrs[dev] = keep
				}
			}
			return nil
		},
		hasArping: func() bool { return arping },
	}
}

func TestSyncVIPs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), vipsFileName)
	h := &fakeVIPHost{addrs: map[string][]netip.Addr{
		"lo":   {netip.MustParseAddr("127.0.0.1")},
		"eth0": {netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.9.7")},
	}}
	logf := func(string, ...any) {}
	step := func(want map[string]bool, arping bool, cmds ...string) {
		t.Helper()
		h.cmds = nil
		if err := syncVIPs(ctx, h.ops(arping), path, "10.0.0.11", want, logf); err != nil {
			t.Fatalf("syncVIPs: %v", err)
		}
		if !reflect.DeepEqual(h.cmds, cmds) {
			t.Fatalf("commands\n got %q\nwant %q", h.cmds, cmds)
		}
	}
	// Loopback VIPs and addresses someone else configured need nothing.
	step(map[string]bool{"127.0.1.1": true, "10.0.9.7": true}, true)
	// A new VIP goes on the host address's interface, announced by ARP.
	step(map[string]bool{"10.0.9.1": true}, true,
		"ip addr add 10.0.9.1/32 dev eth0", "arping -U -c 2 -I eth0 10.0.9.1")
	// Held still: nothing to do (also after an agent restart: the file).
	step(map[string]bool{"10.0.9.1": true}, true)
	// Moved away: the address the agent added is removed; the operator's
	// 10.0.9.7 is never touched.
	step(map[string]bool{}, false, "ip addr del 10.0.9.1/32 dev eth0")
	step(map[string]bool{}, false)
	// Without arping, no announcement.
	step(map[string]bool{"10.0.9.2": true}, false, "ip addr add 10.0.9.2/32 dev eth0")
	if got, _ := readVIPs(path); !reflect.DeepEqual(got, map[string]string{"10.0.9.2": "eth0"}) {
		t.Errorf("vips file: %v", got)
	}
	// The host address on no interface: an error, nothing run.
	h.cmds = nil
	if err := syncVIPs(ctx, h.ops(false), path, "10.0.0.99", map[string]bool{"10.0.9.3": true, "10.0.9.2": true}, logf); err == nil || !strings.Contains(err.Error(), "no interface holds the host address") {
		t.Errorf("err = %v", err)
	}
	if len(h.cmds) != 0 {
		t.Errorf("commands run: %q", h.cmds)
	}
}
