package coordinator

import (
	"context"
	"log/slog"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// hostsController marks a ready host down when its heartbeats stop for
// downAfter. A heartbeat from a down host marks it ready again (in the
// heartbeat handler). A new leader counts every host as seen at the moment
// it took over, so a leader change never flaps the fleet.
type hostsController struct {
	store     *Store
	obs       *observed
	log       *slog.Logger
	now       func() time.Time
	downAfter time.Duration
}

func (c *hostsController) Name() string { return "hosts" }

func (c *hostsController) Run(ctx context.Context) {
	c.obs.reset()
	since := c.now()
	tick := time.NewTicker(max(c.downAfter/10, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var hosts []api.Host
		c.store.FSM().Read(func(s *State, _ uint64) { hosts = sortedHosts(s.Hosts) })
		now := c.now()
		for _, h := range hosts {
			if h.State == api.HostDown {
				continue
			}
			last := c.obs.lastSeen(h.ID)
			if last.Before(since) {
				last = since
			}
			if now.Sub(last) < c.downAfter {
				continue
			}
			h.State = api.HostDown
			h.DownSince = now.UTC()
			if _, err := c.store.Apply(ctx, CmdHostUpsert, HostUpsertCmd{Host: h}); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("cannot mark host down", "host", h.ID, "err", err)
				}
				continue
			}
			c.log.Warn("host is down: no heartbeat", "host", h.ID, "silent_for", now.Sub(last).Round(time.Millisecond).String())
		}
	}
}
