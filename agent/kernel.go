package agent

// The kernel entrypoint (an addon's entrypoint mode "kernel"). The agent
// of the haproxy member holding the addon's VIP forwards VIP:port to the
// primary the sentinels agreed on in the host's kernel (agent/kernelpath:
// nftables DNAT, a connection cap, masquerade; one table per agent, named
// after the host). The HAProxy pair keeps running and keeps its
// frontend: a connection the kernel does not forward (no rule yet, the
// rule just removed) reaches the holder's HAProxy as in haproxy mode, so
// switching modes, an agent restart or a VIP move never refuses a client.
//
// Who is forwarded is decided here (syncRoutes, each reconcile pass): the
// addons whose VIP this host holds in kernel mode. Where to is the
// router's (route.go): it sets the primary it follows, and the rule moves
// in one transaction on the sentinels' announcement, the demoted node's
// forwarded connections cut (conntrack). Until a router knows the primary
// (an agent just started) the kernel's rule is kept as it is. An addon
// removed, moved to haproxy mode or whose VIP moved away loses its rules
// at once; its established forwarded connections keep their conntrack
// entries and run on. The agent's stop leaves the rules in place: the
// next start finds them and changes nothing that is still right.

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/agent/kernelpath"
	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// kernelApplyTimeout bounds one transaction with its conntrack cuts.
const kernelApplyTimeout = 5 * time.Second

// kernelEntry is what a haproxy member's spec says of the kernel path.
type kernelEntry struct {
	on      bool // kernel mode, and this member holds the VIP
	entry   netip.AddrPort
	maxConn int
	// fleet is the addon's fleet credential: a demoted primary's app
	// clients are closed with it.
	fleet api.Secret
}

// kernelEntryOf reads it from a haproxy member's assignment.
func kernelEntryOf(as api.Assignment) kernelEntry {
	if as.Settings.EntrypointMode() != api.EntrypointKernel || as.VIP == "" {
		return kernelEntry{}
	}
	ap, err := netip.ParseAddrPort(as.Entrypoint)
	if err != nil {
		return kernelEntry{}
	}
	return kernelEntry{on: true, entry: ap, maxConn: as.MaxConn, fleet: as.FleetPassword}
}

// kernelPrimary is the primary a router hands the kernel path: the
// agreed primary when it is one of the addon's redis servers, else
// invalid (the rule kept as it is). With no sentinels to follow (a
// starter: follows false) its one server.
func kernelPrimary(primary string, servers []render.HAProxyServer, follows bool) netip.AddrPort {
	if !follows && len(servers) == 1 {
		primary = net.JoinHostPort(servers[0].Addr, strconv.Itoa(servers[0].Port))
	}
	if primary == "" || !slices.ContainsFunc(servers, func(s render.HAProxyServer) bool {
		return net.JoinHostPort(s.Addr, strconv.Itoa(s.Port)) == primary
	}) {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(primary)
	if err != nil {
		return netip.AddrPort{}
	}
	return ap
}

// kernelPath is the agent's forwarded addons and the kernel they are
// applied to.
type kernelPath struct {
	k   *kernelpath.Kernel
	log *slog.Logger

	mu    sync.Mutex
	want  map[string]kernelpath.Forward
	fleet map[string]api.Secret // addon → fleet credential
	// dirty: want differs from what was last applied (or the apply
	// failed): the next call applies.
	dirty     bool
	started   bool // applied once since the agent started
	lastWarn  time.Time
	lastError string
}

func newKernelPath(host string, log *slog.Logger) *kernelPath {
	return &kernelPath{k: kernelpath.New(kernelpath.TableName(host)), log: log, want: map[string]kernelpath.Forward{},
		fleet: map[string]api.Secret{}}
}

// sync sets which addons are forwarded (addon → entry); a router's primary
// of an addon kept is kept. The first call after the agent started
// applies even when nothing is wanted: a table left by a previous run for
// addons since gone is removed.
func (kp *kernelPath) sync(ctx context.Context, entries map[string]kernelEntry) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	for addon := range kp.want {
		if e, ok := entries[addon]; !ok || !e.on {
			delete(kp.want, addon)
			delete(kp.fleet, addon)
			kp.dirty = true
		}
	}
	for addon, e := range entries {
		if !e.on {
			continue
		}
		kp.fleet[addon] = e.fleet
		f := kp.want[addon]
		nf := kernelpath.Forward{Addon: addon, Entry: e.entry, Primary: f.Primary, MaxConn: e.maxConn}
		if f != nf {
			kp.want[addon] = nf
			kp.dirty = true
		}
	}
	if !kp.started || kp.dirty {
		kp.applyLocked(ctx)
	}
}

// setPrimary is a router's: addon's connections go to primary (invalid:
// not known, nothing changes). Nothing when the addon is not forwarded.
func (kp *kernelPath) setPrimary(ctx context.Context, addon string, primary netip.AddrPort) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	f, ok := kp.want[addon]
	if !ok {
		return
	}
	if primary.IsValid() && f.Primary != primary {
		f.Primary = primary
		kp.want[addon] = f
		kp.dirty = true
	}
	if kp.dirty {
		kp.applyLocked(ctx)
	}
}

func (kp *kernelPath) applyLocked(ctx context.Context) {
	want := make([]kernelpath.Forward, 0, len(kp.want))
	for _, f := range kp.want {
		want = append(want, f)
	}
	ctx, cancel := context.WithTimeout(ctx, kernelApplyTimeout)
	defer cancel()
	begin := time.Now()
	res, err := kp.k.Apply(ctx, want)
	if err != nil {
		kp.dirty = true
		// Without forwarded addons, a failure (no CAP_NET_ADMIN, no
		// nf_tables) matters to no one.
		if len(want) == 0 {
			kp.log.Debug("kernel entrypoint table not checked", "table", kp.k.Table(), "err", err)
			kp.started = true
			kp.dirty = false
			return
		}
		if now := time.Now(); err.Error() != kp.lastError || now.Sub(kp.lastWarn) > routeWarnEvery {
			kp.lastWarn, kp.lastError = now, err.Error()
			kp.log.Warn("kernel entrypoint rules not applied; the HAProxy entrypoint serves meanwhile", "table", kp.k.Table(), "err", err)
		}
		return
	}
	kp.started, kp.dirty, kp.lastError = true, false, ""
	took := time.Since(begin)
	cut := map[string]string{}
	for _, c := range res.Cuts {
		cut[c.Addon] = kp.cut(ctx, c)
	}
	if res.Added+res.Deleted > 0 || res.Dropped {
		fwd := make([]string, 0, len(want))
		for _, f := range want {
			fwd = append(fwd, f.Addon+" "+f.Entry.String()+">"+f.Primary.String())
		}
		slices.Sort(fwd)
		kp.log.Info("kernel entrypoint rules applied", "table", kp.k.Table(), "forwards", fwd, "added", res.Added,
			"deleted", res.Deleted, "table_dropped", res.Dropped, "demoted", cut, "took", took.Round(time.Microsecond))
	}
}

// kernelKillTimeout bounds closing a demoted primary's app clients (it may
// be gone, or busy: the conntrack cut follows regardless).
const kernelKillTimeout = 500 * time.Millisecond

// cut closes the connections forwarded to a demoted primary, as HAProxy's
// `shutdown sessions` does: first on the node itself (CLIENT KILL USER
// default: each client sees its connection end at once, through the
// conntrack entry, and reconnects through the new rule), then every
// forwarded conntrack entry whose reply is not the new primary's (a node
// that is gone or did not answer: the client's next packet is reset). It
// returns an account for the log.
func (kp *kernelPath) cut(ctx context.Context, c kernelpath.Cut) string {
	out := ""
	if c.From.IsValid() {
		kctx, cancel := context.WithTimeout(ctx, kernelKillTimeout)
		n, err := redisctl.KillAppClients(kctx, c.From.String(), kp.fleet[c.Addon].Reveal())
		cancel()
		if err != nil {
			out = "clients not closed on " + c.From.String() + " (" + err.Error() + "); "
		} else {
			out = strconv.FormatInt(n, 10) + " clients closed on " + c.From.String() + "; "
		}
	}
	n, err := kernelpath.CutStale(c)
	if err != nil {
		kp.log.Warn("kernel entrypoint: conntrack entries of the demoted primary not all deleted", "addon", c.Addon, "err", err)
	}
	return out + strconv.Itoa(n) + " conntrack entries deleted"
}
