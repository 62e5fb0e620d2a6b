package coordinator

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// topologyController keeps the FSM's record of each HA addon's primary in
// line with what Sentinel decided. Sentinel is the authority on promotions;
// the coordinator only records them (for assignments: a restarting member
// becomes a replica of the recorded primary) and shows them. When agents'
// reports disagree with the record, it asks the addon's sentinels; a
// majority answer naming another member is committed.
//
// It also forces failovers: a heartbeat that reports the recorded primary's
// process dead (certain knowledge from the runtime) makes the leader send
// SENTINEL FAILOVER at once instead of waiting for Sentinel's own detection.
type topologyController struct {
	store *Store
	obs   *observed
	log   *slog.Logger
	now   func() time.Time
	// askMaster returns the master address a sentinel reports.
	askMaster func(ctx context.Context, sentinel, name string) (string, error)
	// failover asks a sentinel to fail over now.
	failover func(ctx context.Context, sentinel, name string) error

	mu     sync.Mutex
	forced map[string]time.Time // addon → last forced failover
}

func (c *topologyController) Name() string { return "topology" }

func (c *topologyController) Run(ctx context.Context) {
	runPasses(ctx, c.store.FSM(), c.obs, time.Second, func() {
		c.pass(ctx)
	})
}

type haView struct {
	addon     api.Addon
	primary   api.Member
	redis     []api.Member
	haproxy   []api.Member
	hasVIP    bool
	hostState map[string]api.HostState
	sentinels []string
	addrOf    map[string]string // member id → host:port
}

func (c *topologyController) pass(ctx context.Context) {
	var views []haView
	c.store.FSM().Read(func(s *State, _ uint64) {
		for _, a := range s.Addons {
			if a.Status == api.AddonRemoving || a.Status == api.AddonProvisioning || len(a.Members) < 3 {
				continue
			}
			v := haView{addon: a, addrOf: map[string]string{}, hostState: map[string]api.HostState{}}
			for _, m := range a.Members {
				v.addrOf[m.ID] = memberAddr(s, m)
				v.hostState[m.HostID] = s.Hosts[m.HostID].State
				switch m.Role {
				case api.RoleHAProxy:
					v.haproxy = append(v.haproxy, m)
				case api.RoleRedis:
					v.redis = append(v.redis, m)
				case api.RoleSentinel:
					v.sentinels = append(v.sentinels, memberAddr(s, m))
				}
			}
			if len(v.redis) < 2 || len(v.sentinels) == 0 {
				continue
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
			v.primary, _ = primaryOf(a)
			views = append(views, v)
		}
	})
	for _, v := range views {
		if ctx.Err() != nil {
			return
		}
		c.forceIfPrimaryDied(ctx, v)
		c.reconcile(ctx, v)
		c.moveEntrypoint(ctx, v)
	}
}

// moveEntrypoint gives the addon's VIP to a haproxy on a ready host when
// its holder's host is down or draining (or no member holds it). The
// coordinator is the arbiter: only the member it names binds the VIP.
func (c *topologyController) moveEntrypoint(ctx context.Context, v haView) {
	if len(v.haproxy) == 0 || !v.hasVIP {
		return
	}
	var holder, candidate *api.Member
	for i := range v.haproxy {
		m := &v.haproxy[i]
		if m.Active {
			holder = m
		} else if v.hostState[m.HostID] == api.HostReady && candidate == nil {
			candidate = m
		}
	}
	if holder != nil && v.hostState[holder.HostID] == api.HostReady {
		return
	}
	if candidate == nil {
		return
	}
	if _, err := c.store.Apply(ctx, CmdEntrypointHolder, EntrypointHolderCmd{AddonID: v.addon.ID, MemberID: candidate.ID, At: c.now().UTC()}); err != nil {
		c.log.Warn("cannot move entrypoint", "addon", v.addon.ID, "err", err)
		return
	}
	was := "nobody"
	if holder != nil {
		was = holder.ID
	}
	c.log.Warn("entrypoint moved", "addon", v.addon.ID, "entrypoint", v.addon.Entrypoint, "to", candidate.ID, "from", was)
}

// forceIfPrimaryDied sends SENTINEL FAILOVER when the recorded primary's
// agent reports its process dead. At most once per 10 s per addon.
func (c *topologyController) forceIfPrimaryDied(ctx context.Context, v haView) {
	ms, seen := c.obs.member(v.primary.HostID, v.primary.ID)
	if !seen || (ms.State != api.MemberFailed && ms.State != api.MemberStopped) {
		return
	}
	c.mu.Lock()
	if c.forced == nil {
		c.forced = map[string]time.Time{}
	}
	if last, ok := c.forced[v.addon.ID]; ok && c.now().Sub(last) < 10*time.Second {
		c.mu.Unlock()
		return
	}
	c.forced[v.addon.ID] = c.now()
	c.mu.Unlock()
	for _, s := range v.sentinels {
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.failover(fctx, s, v.addon.ID)
		cancel()
		if err == nil {
			c.log.Warn("primary process died: failover forced", "addon", v.addon.ID, "primary", v.primary.ID, "sentinel", s)
			return
		}
		c.log.Info("sentinel refused forced failover", "addon", v.addon.ID, "sentinel", s, "err", err)
	}
}

// reconcile records the primary Sentinel reports when the agents' reports
// disagree with the FSM.
func (c *topologyController) reconcile(ctx context.Context, v haView) {
	agree := true
	for _, m := range v.redis {
		ms, seen := c.obs.member(m.HostID, m.ID)
		if !seen || ms.State != api.MemberRunning {
			continue
		}
		isMaster := ms.RedisRole == "master"
		if isMaster != (m.ID == v.primary.ID) {
			agree = false
		}
	}
	if agree {
		return
	}
	votes := map[string]int{}
	for _, s := range v.sentinels {
		qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		addr, err := c.askMaster(qctx, s, v.addon.ID)
		cancel()
		if err == nil {
			votes[addr]++
		}
	}
	for addr, n := range votes {
		if n*2 <= len(v.sentinels) {
			continue
		}
		for _, m := range v.redis {
			if v.addrOf[m.ID] != addr || m.ID == v.primary.ID {
				continue
			}
			if _, err := c.store.Apply(ctx, CmdPrimaryObserved, PrimaryObservedCmd{AddonID: v.addon.ID, PrimaryID: m.ID, At: c.now().UTC()}); err != nil {
				c.log.Warn("cannot record new primary", "addon", v.addon.ID, "err", err)
				return
			}
			c.log.Warn("new primary recorded", "addon", v.addon.ID, "primary", m.ID, "was", v.primary.ID)
		}
	}
}
