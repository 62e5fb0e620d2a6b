package agent

// Entrypoint VIPs. The coordinator names one haproxy member per business
// addon as the holder of the addon's virtual IP (Assignment.VIP). Both
// haproxy members bind VIP:port (with `transparent`: the bind does not need
// the address on the host); the holder's router (route.go) enables the
// clients' frontend, the other's disables it. The agent makes sure the
// address is configured on the holder's host, and removes the addresses it
// added once it no longer holds them. See docs/entrypoint.md for the
// network requirements.
//
//   - A loopback address (127.0.0.0/8, ::1) needs nothing: Linux accepts a
//     bind to any of them. This is the single-machine test setup.
//   - An address already configured on an interface is left alone (the
//     operator manages it, or a previous run added it).
//   - Otherwise the agent runs `ip addr add <vip>/32 dev <iface>` (/128 for
//     IPv6) on the interface that holds the host's own address, records it
//     in <data>/vips, and announces it with a gratuitous ARP (`arping -U`)
//     when arping is installed, so neighbours update their caches at once.
//     An address in <data>/vips that the host no longer holds is removed
//     with `ip addr del`.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// vipsFileName lists, one "<ip> <iface>" per line, the addresses the agent
// added; it is the only record of them across agent restarts.
const vipsFileName = "vips"

// vipCommandTimeout bounds one ip/arping run.
const vipCommandTimeout = 5 * time.Second

// vipOps are the host operations VIP handling needs; tests replace them.
type vipOps struct {
	// localAddrs lists the addresses configured on the host's interfaces,
	// by interface name.
	localAddrs func() (map[string][]netip.Addr, error)
	// run executes a command (ip, arping).
	run func(ctx context.Context, name string, args ...string) error
	// hasArping reports whether arping is installed.
	hasArping func() bool
}

var hostVIPOps = vipOps{
	localAddrs: func() (map[string][]netip.Addr, error) {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		out := map[string][]netip.Addr{}
		for _, ifc := range ifs {
			addrs, err := ifc.Addrs()
			if err != nil {
				return nil, err
			}
			for _, a := range addrs {
				if ipn, ok := a.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
						out[ifc.Name] = append(out[ifc.Name], ip.Unmap())
					}
				}
			}
		}
		return out, nil
	},
	run: func(ctx context.Context, name string, args ...string) error {
		ctx, cancel := context.WithTimeout(ctx, vipCommandTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	},
	hasArping: func() bool { _, err := exec.LookPath("arping"); return err == nil },
}

// syncVIPs configures the VIPs the host's haproxy members hold and removes
// the ones it added and no longer holds. Errors are logged: the holder's
// HAProxy then serves an address that does not reach the host.
func (a *Agent) syncVIPs(ctx context.Context, assigned map[string]api.Assignment) {
	want := map[string]bool{}
	for _, as := range assigned {
		if as.Role == api.RoleHAProxy && as.VIP != "" {
			want[as.VIP] = true
		}
	}
	path := filepath.Join(a.cfg.DataDir, vipsFileName)
	if err := syncVIPs(ctx, hostVIPOps, path, a.cfg.Address, want, a.log.Info); err != nil {
		a.log.Warn("entrypoint addresses", "err", err)
	}
}

// syncVIPs is the decision, with the host operations passed in. hostAddr
// is the host's own address: VIPs go on its interface.
func syncVIPs(ctx context.Context, ops vipOps, path, hostAddr string, want map[string]bool, logf func(string, ...any)) error {
	added, err := readVIPs(path)
	if err != nil {
		return err
	}
	var local map[string][]netip.Addr
	isLocal := func(ip netip.Addr) (bool, error) {
		if local == nil {
			if local, err = ops.localAddrs(); err != nil {
				return false, fmt.Errorf("list host addresses: %w", err)
			}
		}
		for _, as := range local {
			for _, a := range as {
				if a == ip {
					return true, nil
				}
			}
		}
		return false, nil
	}
	var errs []error
	changed := false
	vips := make([]string, 0, len(want))
	for v := range want {
		vips = append(vips, v)
	}
	sort.Strings(vips)
	for _, v := range vips {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("entrypoint address %q: %w", v, err))
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() {
			continue // binds without set-up
		}
		if _, ours := added[ip.String()]; ours {
			// Re-add it if someone removed it behind our back.
			if ok, err := isLocal(ip); err != nil || ok {
				if err != nil {
					errs = append(errs, err)
				}
				continue
			}
		} else if ok, err := isLocal(ip); err != nil {
			errs = append(errs, err)
			continue
		} else if ok {
			continue // configured by someone else: not ours to manage
		}
		hostIP, err := netip.ParseAddr(hostAddr)
		if err != nil {
			errs = append(errs, fmt.Errorf("host address %q: %w", hostAddr, err))
			continue
		}
		iface := "" // local is loaded: isLocal ran above
		for name, as := range local {
			for _, a := range as {
				if a == hostIP.Unmap() {
					iface = name
				}
			}
		}
		if iface == "" {
			errs = append(errs, fmt.Errorf("entrypoint address %s: no interface holds the host address %s", ip, hostAddr))
			continue
		}
		bits := 32
		if ip.Is6() {
			bits = 128
		}
		if err := ops.run(ctx, "ip", "addr", "add", fmt.Sprintf("%s/%d", ip, bits), "dev", iface); err != nil {
			errs = append(errs, err)
			continue
		}
		added[ip.String()] = iface
		changed = true
		logf("entrypoint address added", "vip", ip.String(), "iface", iface)
		if ip.Is4() && ops.hasArping() {
			// Gratuitous ARP: neighbours learn the new holder at once.
			if err := ops.run(ctx, "arping", "-U", "-c", "2", "-I", iface, ip.String()); err != nil {
				logf("gratuitous ARP failed", "vip", ip.String(), "err", err.Error())
			}
		}
	}
	for v, iface := range added {
		if want[v] {
			continue
		}
		ip, err := netip.ParseAddr(v)
		if err != nil {
			delete(added, v)
			changed = true
			continue
		}
		bits := 32
		if ip.Is6() {
			bits = 128
		}
		if err := ops.run(ctx, "ip", "addr", "del", fmt.Sprintf("%s/%d", ip, bits), "dev", iface); err != nil {
			if ok, lerr := isLocal(ip); lerr != nil || ok {
				errs = append(errs, err)
				continue
			}
		}
		delete(added, v)
		changed = true
		logf("entrypoint address removed", "vip", v, "iface", iface)
	}
	if changed {
		if err := writeVIPs(path, added); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readVIPs reads the addresses the agent added (ip → iface).
func readVIPs(path string) (map[string]string, error) {
	out := map[string]string{}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) == 2 {
			out[fs[0]] = fs[1]
		}
	}
	return out, sc.Err()
}

func writeVIPs(path string, added map[string]string) error {
	lines := make([]string, 0, len(added))
	for ip, iface := range added {
		lines = append(lines, ip+" "+iface+"\n")
	}
	sort.Strings(lines)
	return writeFileAtomic(path, []byte(strings.Join(lines, "")))
}

// proxyReplaceGrace is the SIGTERM grace of a haproxy replaced for a new
// config (its redis servers changed): HAProxy holds no data, and as PID 1
// of its container it ignores SIGTERM, which would cost the runtime's whole
// replace grace (10 s). A VIP move no longer changes the config (both
// members bind the VIP; route.go enables the clients' frontend on the
// holder), so it restarts nothing.
const proxyReplaceGrace = 200 * time.Millisecond

// stopProxyForReplace stops a running haproxy at once before Start
// replaces it.
func (a *Agent) stopProxyForReplace(ctx context.Context, id string) {
	if err := a.rt.Stop(ctx, id, proxyReplaceGrace); err != nil && ctx.Err() == nil {
		a.log.Warn("stop haproxy for its new config", "member", id, "err", err)
	}
}

// vipReleaseGrace is how long a haproxy that held the addon's VIP keeps its
// clients' frontend enabled after the coordinator named another holder (a
// drain moves the VIP while the old holder is alive): the new holder's
// frontend is enabled meanwhile, so the entrypoint is never unbound. Both
// serve it for that moment (SO_REUSEPORT on one machine; on a network the
// new holder's gratuitous ARP wins), and both route to the same primary.
// route.go applies it.
const vipReleaseGrace = 3 * time.Second
