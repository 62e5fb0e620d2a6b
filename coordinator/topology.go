package coordinator

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/redisctl"
)

// topologyController keeps each HA addon's topology right; its decisions
// are operation.NeedsSentinels, Reconcile, FailoverReason and
// EntrypointHolder (pure), this is their I/O:
//
//   - Sentinel is the authority on promotions; the coordinator records
//     them (a restarting member becomes a replica of the recorded primary)
//     when what the agents report disagrees with the record and a majority
//     of the sentinels names another member.
//   - A member answering as a master beside the primary the sentinels name
//     is a stray (a primary that was busy or frozen through a failover and
//     came back as a master): it is demoted at once (REPLICAOF the agreed
//     primary), so it never takes writes beside the primary for long.
//   - A primary whose host is lost, or whose process its agent reports dead
//     or unresponsive, is failed over at once (SENTINEL FAILOVER): that is
//     certain knowledge, unlike Sentinel's late PING, which a busy primary
//     also gives (Sentinel's own down-after is only the safety net).
//   - The VIP moves off a holder whose host is down or draining.
type topologyController struct {
	store *Store
	obs   *observed
	log   *slog.Logger
	now   func() time.Time
	// askLatest returns what the sentinels name the primary, resolved by
	// configuration epoch.
	askLatest func(ctx context.Context, sentinels []string, password, name string) (redisctl.Latest, error)
	// remonitor points one sentinel at the primary afresh, with settings.
	remonitor func(ctx context.Context, sentinel, name, primary, password string, s redisctl.SentinelSettings) error
	settings  redisctl.SentinelSettings
	// failover asks the sentinels, in turn, to fail over now.
	failover func(ctx context.Context, sentinels []string, password, name string) (string, error)
	// demote makes the redis at addr a replica of primary.
	demote func(ctx context.Context, addr, password, primary string) error

	mu     sync.Mutex
	forced map[string]time.Time            // addon → last forced failover
	stray  map[string]map[string]time.Time // addon → member → stray since
	stale  map[string]map[string]time.Time // addon → sentinel → stale since
	asked  map[string]time.Time            // addon → sentinels last asked
}

// askEvery is how often the sentinels of an addon are asked when nothing
// disagrees (to find a sentinel left behind on an old primary).
const askEvery = 5 * time.Second

func (c *topologyController) Name() string { return "topology" }

func (c *topologyController) Run(ctx context.Context) {
	c.mu.Lock()
	c.forced, c.stray = map[string]time.Time{}, map[string]map[string]time.Time{}
	c.stale, c.asked = map[string]map[string]time.Time{}, map[string]time.Time{}
	c.mu.Unlock()
	runPasses(ctx, c.store.FSM(), c.obs, time.Second, func() {
		c.pass(ctx)
	})
}

type haView struct {
	t         operation.Topology
	addrOf    map[string]string // member id → host:port
	byAddr    map[string]string // host:port → redis member id
	sentinels []string
	hasVIP    bool
}

func (c *topologyController) pass(ctx context.Context) {
	var views []haView
	now := c.now().UTC()
	c.store.FSM().Read(func(s *State, _ uint64) {
		for id := range s.haAddons() { // not every addon: at 100,000 most are starters
			a := s.Addons[id]
			if a.Status == api.AddonRemoving || a.Status == api.AddonProvisioning || len(a.Members) < 3 {
				continue
			}
			a.Members = append([]api.Member(nil), a.Members...)
			v := haView{addrOf: map[string]string{}, byAddr: map[string]string{},
				t: operation.Topology{Addon: a, Hosts: map[string]api.Host{}, Observed: map[string]operation.Observed{}, Now: now}}
			redis := 0
			for _, m := range a.Members {
				v.addrOf[m.ID] = memberAddr(s, m)
				v.t.Hosts[m.HostID] = s.Hosts[m.HostID]
				switch m.Role {
				case api.RoleRedis:
					redis++
					v.byAddr[v.addrOf[m.ID]] = m.ID
				case api.RoleSentinel:
					v.sentinels = append(v.sentinels, v.addrOf[m.ID])
				}
			}
			if redis < 2 || len(v.sentinels) == 0 {
				continue
			}
			if op, ok := s.activeOperation(a.ID); ok && operation.SwitchingOver(a, op) {
				v.t.Switching = true
			}
			// The addon has a VIP when its entrypoint is no member's own address.
			if ep, _, err := net.SplitHostPort(a.Entrypoint); err == nil {
				v.hasVIP = true
				for _, m := range a.Members {
					if s.Hosts[m.HostID].Address == ep {
						v.hasVIP = false
					}
				}
			}
			views = append(views, v)
		}
	})
	for _, v := range views {
		for _, m := range v.t.Addon.Members {
			v.t.Observed[m.ID] = observe(c.obs, v.t.Hosts[m.HostID], m)
		}
	}
	// Forced failovers first, all addons at once: one addon's sentinels
	// (a sentinel on a lost host costs its timeout) never delay another's
	// failover. Then the rest, addons in parallel with a bound.
	c.each(ctx, views, func(v haView) { c.forceFailover(ctx, v) })
	c.each(ctx, views, func(v haView) {
		c.reconcile(ctx, v)
		c.moveEntrypoint(ctx, v)
	})
}

// topologyParallel bounds the addons a topology pass handles at once.
const topologyParallel = 16

// each runs fn for every view, at most topologyParallel at once, and
// returns when all are done.
func (c *topologyController) each(ctx context.Context, views []haView, fn func(haView)) {
	sem := make(chan struct{}, topologyParallel)
	var wg sync.WaitGroup
	for _, v := range views {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fn(v)
		}()
	}
	wg.Wait()
}

// forceFailover sends SENTINEL FAILOVER when operation.FailoverReason says
// so, at most once per 5 s per addon.
func (c *topologyController) forceFailover(ctx context.Context, v haView) {
	why := operation.FailoverReason(v.t)
	if why == "" {
		return
	}
	id := v.t.Addon.ID
	c.mu.Lock()
	if last, ok := c.forced[id]; ok && c.now().Sub(last) < 5*time.Second {
		c.mu.Unlock()
		return
	}
	c.forced[id] = c.now()
	c.mu.Unlock()
	// Sentinels on the lost host cannot answer: ask the others first.
	prim, _ := operation.Primary(v.t.Addon)
	var near, far []string
	for _, m := range v.t.Addon.Members {
		if m.Role != api.RoleSentinel {
			continue
		}
		if m.HostID == prim.HostID {
			far = append(far, v.addrOf[m.ID])
		} else {
			near = append(near, v.addrOf[m.ID])
		}
	}
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := c.failover(fctx, append(near, far...), v.t.Addon.FleetPassword.Reveal(), id)
	if err != nil {
		c.log.Info("sentinels refused a forced failover", "addon", id, "why", why, "err", err)
		return
	}
	c.log.Warn("failover forced", "addon", id, "why", why, "sentinel", s)
}

// reconcile records the primary the sentinels name, demotes strays and
// points sentinels left on an old primary at the current one.
func (c *topologyController) reconcile(ctx context.Context, v haView) {
	id := v.t.Addon.ID
	now := c.now()
	c.mu.Lock()
	v.t.StraySince, v.t.StaleSince = c.stray[id], c.stale[id]
	due := now.Sub(c.asked[id]) >= askEvery
	c.mu.Unlock()
	if !operation.NeedsSentinels(v.t) && !due {
		c.mu.Lock()
		delete(c.stray, id)
		c.mu.Unlock()
		return
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	l, err := c.askLatest(qctx, v.sentinels, v.t.Addon.FleetPassword.Reveal(), id)
	cancel()
	c.mu.Lock()
	c.asked[id] = now
	c.mu.Unlock()
	if err == nil {
		v.t.Named = map[string]operation.NamedPrimary{}
		for s, mv := range l.Views {
			v.t.Named[s] = operation.NamedPrimary{Addr: mv.Addr, Epoch: mv.Epoch}
		}
		if l.Votes >= operation.Quorum || l.Votes == l.Answered {
			v.t.Majority, v.t.Votes = v.byAddr[l.Addr], l.Votes
		}
	}
	r := operation.Reconcile(v.t)
	var stale []string
	var staleSince map[string]time.Time
	if v.t.Majority != "" {
		stale, staleSince = operation.StaleSentinels(v.t, l.Addr, l.Epoch)
	}
	c.mu.Lock()
	c.stray[id], c.stale[id] = r.Stray, staleSince
	c.mu.Unlock()
	if r.Record != "" {
		if _, err := c.store.Apply(ctx, CmdPrimaryObserved, PrimaryObservedCmd{AddonID: id, PrimaryID: r.Record, At: c.now().UTC()}); err != nil {
			c.log.Warn("cannot record new primary", "addon", id, "err", err)
			return
		}
		prim, _ := operation.Primary(v.t.Addon)
		c.log.Warn("new primary recorded", "addon", id, "primary", r.Record, "was", prim.ID, "epoch", l.Epoch)
	}
	for _, m := range r.Demote {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.demote(dctx, v.addrOf[m], v.t.Addon.FleetPassword.Reveal(), v.addrOf[r.Primary])
		cancel()
		if err != nil {
			c.log.Warn("cannot demote a stray master; will retry", "addon", id, "member", m, "primary", r.Primary, "err", err)
			continue
		}
		c.log.Warn("stray master demoted", "addon", id, "member", m, "primary", r.Primary, "stray_for", c.now().Sub(r.Stray[m]).Round(time.Millisecond).String())
	}
	for _, s := range stale {
		mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.remonitor(mctx, s, id, l.Addr, v.t.Addon.FleetPassword.Reveal(), c.settings)
		cancel()
		if err != nil {
			c.log.Warn("cannot point a sentinel left on an old primary at the current one; will retry", "addon", id, "sentinel", s, "err", err)
			continue
		}
		c.log.Warn("sentinel left on an old primary pointed at the current one", "addon", id, "sentinel", s, "was", v.t.Named[s].Addr, "primary", l.Addr)
	}
}

// moveEntrypoint gives the addon's VIP to a haproxy on a ready host when
// its holder's host is down or draining (or no member holds it). The
// coordinator is the arbiter: only the member it names binds the VIP.
func (c *topologyController) moveEntrypoint(ctx context.Context, v haView) {
	if !v.hasVIP {
		return
	}
	to := operation.EntrypointHolder(v.t)
	if to == "" {
		return
	}
	if _, err := c.store.Apply(ctx, CmdEntrypointHolder, EntrypointHolderCmd{AddonID: v.t.Addon.ID, MemberID: to, At: c.now().UTC()}); err != nil {
		c.log.Warn("cannot move entrypoint", "addon", v.t.Addon.ID, "err", err)
		return
	}
	c.log.Warn("entrypoint moved", "addon", v.t.Addon.ID, "entrypoint", v.t.Addon.Entrypoint, "to", to)
}
