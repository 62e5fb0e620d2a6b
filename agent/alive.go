package agent

import (
	"context"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// aliveLoop sends the liveness signal every alive_interval (250 ms by
// default), apart from the full heartbeat: it carries nothing but the host
// id, so the coordinator can suspect a lost host within about a second and
// confirm it by probing the host's members, instead of waiting several
// heartbeats. A failed signal is not retried: the next one follows soon.
func (a *Agent) aliveLoop(ctx context.Context) {
	interval := time.Duration(a.cfg.AliveInterval)
	if interval <= 0 {
		return
	}
	// On the same instants as the routers' ticks (untilTick, route.go):
	// one wake-up of the process for both.
	t := time.NewTimer(untilTick(time.Now(), interval, tickPhase))
	defer t.Stop()
	wd := a.wd.Register("alive", 0)
	defer wd.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			t.Reset(untilTick(time.Now(), interval, tickPhase))
		}
		wd.Ping()
		actx, cancel := context.WithTimeout(ctx, interval)
		_ = a.coord.call(actx, func(cl *api.Client) error { return cl.Alive(actx, a.cfg.HostID) })
		cancel()
	}
}
