package agent

// The entrypoint routes to the primary the fleet agreed on.
//
// HAProxy's role check alone cannot keep a stray master out: a primary that
// is busy (a long script, DEBUG SLEEP) when Sentinel fails it over keeps its
// check waiting (timeout check is Sentinel's down-after, on purpose, so a
// busy primary keeps its sessions), stays UP with its sessions, and when it
// wakes it is still a master for a moment: the clients connected through
// HAProxy write to it, and those writes are lost when it is demoted. A
// server whose host vanished mid-check stays UP the same way.
//
// So the agent of each haproxy member drives its HAProxy through the
// runtime API (haproxyapi.go): a router per member follows the addon's
// sentinels — a subscription to +switch-master on each of them (and to
// +failover-state-wait-promotion, which the leading sentinel publishes when
// it has sent SLAVEOF NO ONE, ~1 s before its +switch-master: it waits for
// its next INFO of the replica), plus a majority ask (redisctl.AskMajority)
// at start, on every (re)connection and every majorityEvery as a safety
// net — and keeps every server but the agreed primary in MAINT with its
// sessions shut; the agreed primary is `ready` (its role check still has to
// pass). On a switch the old primary's sessions are cut at once: its
// clients reconnect to the new one, and a stray never gets a write. With no majority known (sentinels
// unreachable), nothing changes: the router never takes every server out.
//
// The same router keeps the clients' frontend of an addon with a VIP
// enabled on the member that holds the VIP and disabled on the other (both
// render the same haproxy.cfg, binding the VIP with `transparent`, so a
// move restarts nothing). A member that loses the VIP while alive (a drain)
// keeps its frontend for vipReleaseGrace, so the new holder binds first.
//
// Decisions are pure (routeCommands, agreement, frontendCommand; table
// tests); the router is their I/O. It re-reads HAProxy's state every
// routeTick and applies what differs, so an HAProxy restart (all servers
// ready again, the frontend enabled) or an agent restart converges within a
// tick; the reconcile loop also pokes it after starting an HAProxy.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Router figures.
const (
	// routeTick: how often HAProxy's state is read and put right.
	routeTick = 500 * time.Millisecond
	// routeRetry: how soon a failed exchange with HAProxy (starting, not
	// listening on its socket yet) is tried again, for its first 5 s.
	routeRetry = 100 * time.Millisecond
	// majorityEvery: how often the sentinels are asked who the primary is
	// when no announcement came.
	majorityEvery = 2 * time.Second
	// switchSettle: after a +switch-master, a majority naming another
	// primary is not believed for this long (the other sentinels learn a
	// failover from the leader's hello messages, every 2 s).
	switchSettle = 5 * time.Second
	// watchBackoffMax bounds the wait between two subscription attempts
	// to one sentinel.
	watchBackoffMax = 2 * time.Second
	// routeWarnEvery rate-limits the warnings of a router that keeps
	// failing.
	routeWarnEvery = 30 * time.Second
	// hapSocketName is the admin stats socket in the member's dir.
	hapSocketName = "haproxy.sock"
)

// ---------------------------------------------------------------------------
// Pure decisions.

// routeCommands are the runtime-API commands that make backend be route to
// primary (host:port, matched against the servers' addresses as the
// running HAProxy reports them: its file may be older or newer than the
// agent's assignment) and nowhere else: every other server in MAINT with
// its sessions shut, primary ready (and, leaving MAINT, marked down until
// its role check passes). They come in that order, on one line, so no
// moment has two servers ready. primary "" (no agreement) or not among
// servers: nothing — never every server out.
func routeCommands(be string, servers []hapServer, primary string) []string {
	if primary == "" || !slices.ContainsFunc(servers, func(s hapServer) bool { return s.Addr == primary }) {
		return nil
	}
	var out []string
	for _, s := range servers {
		if s.Addr == primary {
			continue
		}
		if s.Admin != hapMaint {
			out = append(out, "set server "+be+"/"+s.Name+" state maint")
		}
		if s.Admin != hapMaint || s.Sessions > 0 {
			out = append(out, "shutdown sessions server "+be+"/"+s.Name)
		}
	}
	for _, s := range servers {
		if s.Addr != primary || s.Admin == hapReady {
			continue
		}
		out = append(out, "set server "+be+"/"+s.Name+" state ready")
		if s.Admin == hapMaint {
			// Leaving maintenance HAProxy counts a server up until its
			// first check; down instead, so the role check (run at once
			// on leaving maintenance) lets it in only as a master.
			out = append(out, "set server "+be+"/"+s.Name+" health down")
		}
	}
	return out
}

// serverCommands are the runtime-API commands that make backend be hold
// exactly the servers want (matched by address; HAProxy may run an older
// or newer file than the assignment): a missing one is added
// (render.HAProxyAddServer: in MAINT, its check enabled; routeCommands
// readies it if it is the primary); one no longer wanted is put in MAINT,
// its sessions shut, then deleted (dels: sent apart, HAProxy refuses to
// delete a server while a session is still closing; the next pass tries
// again). Never the last server: a backend without any would refuse every
// client, and a plan change always keeps the primary. With no sentinels to
// follow (a starter), a wanted server left in MAINT is readied: the role
// check alone decides.
func serverCommands(be string, have []hapServer, want []render.HAProxyServer, follows bool) (cmds, dels []string) {
	wantAddr := map[string]bool{}
	for _, w := range want {
		wantAddr[render.Endpoint{Addr: w.Addr, Port: w.Port}.String()] = true
	}
	haveAddr := map[string]bool{}
	kept := 0
	for _, h := range have {
		haveAddr[h.Addr] = true
		if wantAddr[h.Addr] {
			kept++
		}
	}
	for _, w := range want {
		if !haveAddr[render.Endpoint{Addr: w.Addr, Port: w.Port}.String()] {
			cmds = append(cmds, render.HAProxyAddServer(be, w)...)
			kept++
		}
	}
	if len(want) == 0 || kept == 0 {
		return cmds, nil
	}
	for _, h := range have {
		switch {
		case !wantAddr[h.Addr]:
			if h.Admin != hapMaint {
				cmds = append(cmds, "set server "+be+"/"+h.Name+" state maint")
			}
			if h.Admin != hapMaint || h.Sessions > 0 {
				cmds = append(cmds, "shutdown sessions server "+be+"/"+h.Name)
			}
			dels = append(dels, "del server "+be+"/"+h.Name)
		case !follows && h.Admin == hapMaint:
			cmds = append(cmds, "set server "+be+"/"+h.Name+" state ready", "set server "+be+"/"+h.Name+" health down")
		}
	}
	return cmds, dels
}

// agreement is the primary (host:port) the router routes to: the last one
// a sentinel announced (+switch-master, or the promotion that starts it:
// the leader has sent SLAVEOF NO ONE, the old primary is abandoned), or
// what a majority of them names.
type agreement struct {
	primary string // "" until known
	// switched: when the last announcement came (zero: none).
	switched time.Time
}

// onSwitch records an announcement: the failover it reports is over.
func (g agreement) onSwitch(to string, now time.Time) agreement {
	return agreement{primary: to, switched: now}
}

// onMajority records a majority's answer. Within switchSettle of an
// announcement the majority may not have heard of it yet: it is not
// believed then when it names another primary.
func (g agreement) onMajority(addr string, now time.Time) agreement {
	if addr == "" || addr == g.primary {
		return g
	}
	if !g.switched.IsZero() && now.Sub(g.switched) < switchSettle {
		return g
	}
	return agreement{primary: addr}
}

// frontendCommand is the runtime-API command (or "") that puts the clients'
// frontend fe of an addon with a VIP right: enabled on the VIP holder,
// disabled on the other member once now passes releaseAt (the end of the
// grace of a member that just lost the VIP; zero: none). known is false
// when HAProxy has no such frontend (nothing to do).
func frontendCommand(fe string, known, enabled, holder bool, releaseAt, now time.Time) string {
	switch {
	case !known:
		return ""
	case holder && !enabled:
		return "enable frontend " + fe
	case !holder && enabled && !now.Before(releaseAt):
		return "disable frontend " + fe
	}
	return ""
}

// ---------------------------------------------------------------------------
// The routers: one per haproxy member.

// routeSpec is what a member's router needs from its assignment.
type routeSpec struct {
	socket  string // admin stats socket
	backend string
	// frontend is the clients' frontend when the entrypoint is a VIP
	// ("": one frontend on the member's own address, always enabled).
	frontend string
	holder   bool // the member holds the VIP
	// sentinels and masterName: whom to follow ("" / none: no
	// routing, the role check alone decides).
	sentinels  []string
	masterName string
	// sentinelPass is the addon's fleet credential, the sentinels'
	// password.
	sentinelPass api.Secret
	addon        string
	// servers are the addon's redis members the backend must hold (the
	// assignment's): the router adds and deletes servers at run time to
	// match (serverCommands), so a member added or removed restarts no
	// HAProxy.
	servers []render.HAProxyServer
	// kernel: the addon is in kernel mode and this member holds its VIP:
	// the router also hands the primary to the kernel path (kernel.go).
	kernel bool
}

// routeSpecOf derives the router's spec from a haproxy member's
// assignment and the input its haproxy.cfg is rendered from.
func routeSpecOf(as api.Assignment, in render.HAProxyInput) routeSpec {
	s := routeSpec{
		socket: in.StatsSocket, backend: render.HAProxyBackend(in.AddonID),
		holder:    as.VIP != "",
		sentinels: append([]string(nil), as.Sentinels...), masterName: as.MasterName, addon: as.AddonID,
		sentinelPass: as.FleetPassword,
		servers:      append([]render.HAProxyServer(nil), in.Servers...),
		kernel:       kernelEntryOf(as).on,
	}
	if in.Local != (render.Endpoint{}) && in.Local != in.Entrypoint {
		s.frontend = render.HAProxyFrontend(in.AddonID)
	}
	sort.Strings(s.sentinels)
	return s
}

// hapSocketPath is the admin stats socket of a haproxy member.
func (a *Agent) hapSocketPath(id string) string { return filepath.Join(a.memberDir(id), hapSocketName) }

// routes holds the agent's routers.
type routes struct {
	mu sync.Mutex
	r  map[string]*router
	wg sync.WaitGroup
	// kernel is the kernel entrypoint path (kernel.go), made at the first
	// sync.
	kernel *kernelPath
}

func newRoutes() *routes { return &routes{r: map[string]*router{}} }

// router follows one haproxy member's sentinels and drives its HAProxy.
type router struct {
	id     string
	kernel *kernelPath
	log    *slog.Logger
	spec   chan routeSpec // the latest assignment (capacity 1: latest wins)
	poke   chan struct{}
	cancel context.CancelFunc
}

// sync starts a router for every haproxy member in plans (member id →
// spec), hands running ones their new spec, and stops the others. ctx is
// the agent's: routers end with it.
func (rs *routes) sync(ctx context.Context, log *slog.Logger, specs map[string]routeSpec) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for id, r := range rs.r {
		if _, ok := specs[id]; !ok {
			r.cancel()
			delete(rs.r, id)
		}
	}
	for id, spec := range specs {
		r, ok := rs.r[id]
		if !ok {
			rctx, cancel := context.WithCancel(ctx)
			r = &router{id: id, kernel: rs.kernel, log: log.With("member", id, "addon", spec.addon), spec: make(chan routeSpec, 1),
				poke: make(chan struct{}, 1), cancel: cancel}
			rs.r[id] = r
			rs.wg.Add(1)
			go func() {
				defer rs.wg.Done()
				r.run(rctx, spec)
			}()
			continue
		}
		select { // replace a spec not taken yet
		case <-r.spec:
		default:
		}
		r.spec <- spec
	}
}

// pokeMember makes member id's router look at its HAProxy now (it was
// just started).
func (rs *routes) pokeMember(id string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r, ok := rs.r[id]; ok {
		poke(r.poke)
	}
}

// stop ends every router and waits for them (and their subscriptions).
func (rs *routes) stop() {
	rs.mu.Lock()
	for id, r := range rs.r {
		r.cancel()
		delete(rs.r, id)
	}
	rs.mu.Unlock()
	rs.wg.Wait()
}

// routeEvent is what a sentinel watch reports: a (re)connection, or an
// announcement.
type routeEvent struct {
	sentinel  string
	connected bool
	sw        redisctl.SwitchMaster
}

type majorityAnswer struct {
	addr  string
	votes int
	err   error
}

// run is the router's loop (see the file comment).
func (r *router) run(ctx context.Context, spec routeSpec) {
	var wg sync.WaitGroup
	defer wg.Wait()
	events := make(chan routeEvent, 16)
	var stopWatch context.CancelFunc = func() {}
	watch := func(sentinels []string, name string, pass api.Secret) {
		stopWatch()
		var wctx context.Context
		wctx, stopWatch = context.WithCancel(ctx)
		for _, s := range sentinels {
			wg.Add(1)
			go func() {
				defer wg.Done()
				watchSentinel(wctx, r.log, s, pass.Reveal(), name, events)
			}()
		}
	}
	watch(spec.sentinels, spec.masterName, spec.sentinelPass)
	defer func() { stopWatch() }()

	api := hapAPI{socket: spec.socket}
	var (
		g         agreement
		releaseAt time.Time
		asking    bool
		nextAsk   time.Time // zero: at once
		majority  = make(chan majorityAnswer, 1)
		failing   time.Time
		lastWarn  time.Time
		lastNoSrv string
		last      routePass // the last read of HAProxy's state
		byTick    bool      // this turn of the loop is a tick's
	)
	tick := time.NewTimer(untilTick(time.Now(), routeTick, tickPhase))
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		now := time.Now()
		if len(spec.sentinels) > 0 && !asking && !now.Before(nextAsk) {
			asking, nextAsk = true, now.Add(majorityEvery)
			sentinels, name, pass := spec.sentinels, spec.masterName, spec.sentinelPass
			wg.Add(1)
			go func() {
				defer wg.Done()
				actx, cancel := context.WithTimeout(ctx, 2*redisctl.SentinelTimeout)
				defer cancel()
				addr, votes, err := redisctl.AskMajority(actx, sentinels, pass.Reveal(), name)
				majority <- majorityAnswer{addr: addr, votes: votes, err: err}
			}()
		}
		if spec.kernel { // kernel.go: the VIP holder's kernel forwards to the agreed primary
			r.kernel.setPrimary(ctx, spec.addon, kernelPrimary(g.primary, spec.servers, len(spec.sentinels) > 0))
		}
		// A tick reads HAProxy's state only when it may have changed
		// behind the router's back (routeQuiet): with nothing to do, a
		// tick costs a stat of the socket, not an exchange with HAProxy.
		if sock := socketID(spec.socket); !byTick || !routeQuiet(last, sock, releaseAt, now) {
			cmds, known, err := r.apply(ctx, api, spec, g.primary, releaseAt, now)
			last = routePass{at: now, clean: err == nil && len(cmds) == 0, sock: sock}
			if err == nil && g.primary != "" && !known && lastNoSrv != g.primary {
				lastNoSrv = g.primary
				r.log.Warn("the sentinels' primary is not a server of this entrypoint's HAProxy; routing left as it is", "primary", g.primary)
			}
			switch {
			case err != nil && ctx.Err() == nil:
				if failing.IsZero() {
					failing = now
				}
				if now.Sub(failing) > 5*time.Second && now.Sub(lastWarn) > routeWarnEvery {
					lastWarn = now
					r.log.Warn("cannot drive the entrypoint's HAProxy", "err", err, "failing_for", now.Sub(failing).Round(time.Millisecond))
				} else {
					r.log.Debug("haproxy runtime API", "err", err)
				}
				if now.Sub(failing) < 5*time.Second { // starting; after that, a tick will do (down, or in its restart backoff)
					retry.Reset(routeRetry)
				}
			case err == nil:
				if !failing.IsZero() {
					r.log.Debug("haproxy runtime API answers again", "after", now.Sub(failing).Round(time.Millisecond))
				}
				failing = time.Time{}
				if len(cmds) > 0 {
					r.log.Info("entrypoint routing applied", "primary", g.primary, "holder", spec.holder, "commands", cmds)
				}
			}
		}
		byTick = false
		select {
		case <-ctx.Done():
			return
		case ns := <-r.spec:
			if spec.holder && !ns.holder {
				releaseAt = time.Now().Add(vipReleaseGrace)
				r.log.Info("VIP moved to the other member: the clients' frontend closes after the grace", "grace", vipReleaseGrace)
			} else if ns.holder {
				releaseAt = time.Time{}
			}
			resubscribe := !slices.Equal(ns.sentinels, spec.sentinels) || ns.masterName != spec.masterName ||
				!ns.sentinelPass.Equal(spec.sentinelPass)
			spec, api = ns, hapAPI{socket: ns.socket}
			if resubscribe {
				watch(spec.sentinels, spec.masterName, spec.sentinelPass)
				nextAsk = time.Time{}
			}
		case <-r.poke:
		case e := <-events:
			if e.connected {
				nextAsk = time.Time{} // announcements may have been missed
				continue
			}
			if e.sw.To != g.primary {
				what := "sentinel announced a new primary"
				if e.sw.Promoting {
					what = "sentinel is promoting a new primary"
				}
				r.log.Warn(what, "sentinel", e.sentinel, "from", e.sw.From, "to", e.sw.To)
			}
			g = g.onSwitch(e.sw.To, time.Now())
		case m := <-majority:
			asking = false
			if m.err != nil {
				r.log.Debug("sentinels: no majority; routing left as it is", "err", m.err)
				continue
			}
			if ng := g.onMajority(m.addr, time.Now()); ng.primary != g.primary {
				r.log.Info("primary named by a majority of the sentinels", "primary", m.addr, "votes", m.votes, "was", g.primary)
				g = ng
			}
		case <-tick.C:
			byTick = true
			tick.Reset(untilTick(time.Now(), routeTick, tickPhase))
		case <-retry.C:
		}
	}
}

// untilTick is how long from now to the next instant of the process's
// tick grid for interval every: the multiples of every (since the zero
// time) shifted by phase (tickPhase). Every router, the alive loop and the
// heartbeat tick on the same instants: the process wakes once per tick
// for all of them, not once per router.
func untilTick(now time.Time, every, phase time.Duration) time.Duration {
	ph := phase % every
	return now.Add(-ph).Truncate(every).Add(every + ph).Sub(now)
}

// tickPhase shifts the tick grid of this process by a random part of a
// second, drawn once: the loops of one agent tick together, the agents of
// a fleet do not (the coordinator gets no bursts of every host's alive
// signal and heartbeat at the same instant).
var tickPhase = time.Duration(rand.Int64N(int64(time.Second)))

// routeFullEvery bounds how long a router goes without reading HAProxy's
// state on its ticks when nothing happened (routeQuiet).
const routeFullEvery = 5 * time.Second

// routePass is what the router's last read of HAProxy's state found.
type routePass struct {
	at time.Time
	// clean: read without error and nothing had to be sent.
	clean bool
	// sock is the stats socket's file as it was before the read.
	sock sockID
}

// sockID identifies the file at a socket's path: HAProxy binds a new one
// each time it starts.
type sockID struct {
	ino   uint64
	ctime int64
}

// socketID is the file at path (zero when there is none).
func socketID(path string) sockID {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return sockID{}
	}
	return sockID{ino: st.Ino, ctime: st.Ctim.Nano()}
}

// routeQuiet is the rule (pure) for a router's tick: it may skip reading
// HAProxy's state when the last read was clean and younger than
// routeFullEvery, the stats socket is the same file (HAProxy did not
// restart: a restarted HAProxy has every server ready again and is put
// right at the next tick, as before) and no VIP release came due since the
// last read. Everything else that changes what HAProxy must say (a
// sentinel's announcement, a majority's answer, a new spec, a poke after
// the agent started the HAProxy) wakes the router outside its ticks and
// reads it at once.
func routeQuiet(last routePass, sock sockID, releaseAt, now time.Time) bool {
	switch {
	case !last.clean || sock == (sockID{}) || sock != last.sock:
		return false
	case now.Sub(last.at) >= routeFullEvery:
		return false
	case !releaseAt.IsZero() && !now.Before(releaseAt) && last.at.Before(releaseAt):
		return false
	}
	return true
}

// apply reads HAProxy's state and sends what routeCommands and
// frontendCommand say (one line); it returns the commands sent and whether
// primary is one of HAProxy's servers.
func (r *router) apply(ctx context.Context, api hapAPI, spec routeSpec, primary string, releaseAt, now time.Time) ([]string, bool, error) {
	st, err := api.state(ctx)
	if err != nil {
		return nil, false, err
	}
	servers := st.Servers[spec.backend]
	if cmds, dels := serverCommands(spec.backend, servers, spec.servers, len(spec.sentinels) > 0); len(cmds)+len(dels) > 0 {
		// The server list first; routing on the next pass, from the
		// state this leaves (an added server is in MAINT meanwhile).
		if err := api.exec(ctx, cmds); err != nil {
			return nil, false, err
		}
		for _, d := range dels {
			if err := api.exec(ctx, []string{d}); err != nil {
				r.log.Debug("haproxy: server not deleted yet", "command", d, "err", err)
				continue
			}
			cmds = append(cmds, d)
		}
		poke(r.poke) // route at once from the new list
		return cmds, false, nil
	}
	known := slices.ContainsFunc(servers, func(s hapServer) bool { return s.Addr == primary })
	cmds := routeCommands(spec.backend, servers, primary)
	if spec.frontend != "" {
		enabled, known := st.Frontends[spec.frontend]
		if c := frontendCommand(spec.frontend, known, enabled, spec.holder, releaseAt, now); c != "" {
			cmds = append(cmds, c)
		}
	}
	if err := api.exec(ctx, cmds); err != nil {
		return nil, known, err
	}
	return cmds, known, nil
}

// watchSentinel subscribes to one sentinel's announcements (+switch-master,
// +failover-state-wait-promotion) for master name and reports them (and every successful subscription) on
// events, reconnecting with backoff, until ctx ends.
func watchSentinel(ctx context.Context, log *slog.Logger, addr, password, name string, events chan<- routeEvent) {
	send := func(e routeEvent) bool {
		select {
		case events <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	backoff := routeRetry
	for ctx.Err() == nil {
		w, err := redisctl.WatchSwitchMaster(ctx, addr, password)
		if err != nil {
			log.Debug("sentinel subscription", "sentinel", addr, "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, watchBackoffMax)
			continue
		}
		backoff = routeRetry
		if !send(routeEvent{sentinel: addr, connected: true}) {
			w.Close()
			return
		}
		for {
			ev, err := w.Next(ctx)
			if err != nil {
				w.Close()
				if ctx.Err() == nil {
					log.Debug("sentinel subscription lost", "sentinel", addr, "err", err)
				}
				break
			}
			if ev.Name != name {
				continue
			}
			if !send(routeEvent{sentinel: addr, sw: ev}) {
				w.Close()
				return
			}
		}
	}
}

// syncRoutes gives every assigned haproxy member its router (reconcile
// loop, before the members are ensured: a VIP move reaches the frontends
// at once) and stops the routers of members no longer assigned.
func (a *Agent) syncRoutes(ctx context.Context, assigned map[string]api.Assignment) {
	specs := map[string]routeSpec{}
	kernel := map[string]kernelEntry{}
	for id, as := range assigned {
		if as.Role != api.RoleHAProxy {
			continue
		}
		if e := kernelEntryOf(as); e.on {
			kernel[as.AddonID] = e
		}
		in, err := a.haproxyInput(as)
		if err != nil {
			continue // ensure reports it
		}
		specs[id] = routeSpecOf(as, in)
	}
	if a.routes.kernel == nil {
		a.routes.kernel = newKernelPath(a.cfg.HostID, a.log.With("component", "kernel-entrypoint"))
	}
	a.routes.kernel.sync(ctx, kernel) // kernel.go: which addons this host forwards in the kernel
	a.routes.sync(ctx, a.log.With("component", "route"), specs)
}

// describeRoute is a one-line account of a spec, for tests and logs.
func (s routeSpec) String() string {
	return fmt.Sprintf("backend %s frontend %q holder %v sentinels %v master %s servers %v", s.backend, s.frontend, s.holder, s.sentinels, s.masterName, s.servers)
}
