package agent

import (
	"context"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
)

// A member the coordinator wants stopped (api.Assignment.Stopped: an
// engine upgrade that stops every redis node keeps a replica down while
// its primary restarts, so Sentinel cannot promote it with older data).
// Its process gets SIGTERM with the replace grace (redis saves its data
// on the way out), then its container goes; its dir (config and data)
// stays. It is reported stopped, never restarted, and no failure is
// recorded. When an assignment without Stopped arrives it starts like a
// member that ran before: through the safety gate, as a replica of the
// primary the sentinels name (safety.go).

// keepStopped converges a member assigned stopped; it returns how soon to
// look again.
func (a *Agent) keepStopped(ctx context.Context, as api.Assignment, st *runtime.Status) time.Duration {
	a.setHeld(as.MemberID, "")
	a.mu.Lock()
	delete(a.failures, as.MemberID)
	a.mu.Unlock()
	if st == nil || st.State == runtime.StateMissing {
		return 0
	}
	log := a.log.With("member", as.MemberID, "addon", as.AddonID, "role", as.Role)
	if st.State == runtime.StateRunning {
		if err := a.rt.Stop(ctx, as.MemberID, runtime.DefaultReplaceGrace); err != nil {
			log.Warn("stop member on the coordinator's request", "err", err)
			return reconcileRetry
		}
	}
	if err := a.rt.Destroy(ctx, as.MemberID); err != nil {
		log.Warn("remove the stopped member's container", "err", err)
		return reconcileRetry
	}
	a.probes.close(as.MemberID)
	log.Info("member stopped on the coordinator's request; its data is kept")
	poke(a.heartbeatNow)
	return 0
}

// stoppedStatus is the report of a member assigned stopped whose process
// is gone (ok false while it still runs: it is reported as usual).
func stoppedStatus(as api.Assignment, st *runtime.Status) (state, detail string, ok bool) {
	if !as.Stopped || st == nil || st.State == runtime.StateRunning {
		return "", "", false
	}
	return api.MemberStopped, "stopped on the coordinator's request (engine upgrade); its data is kept", true
}
