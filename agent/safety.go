package agent

// Never let a restarted node wipe the data.
//
// A Redis replica copies whatever its primary holds. A primary whose process
// died and comes back on its own — the restart policy, an agent restart, a
// host reboot — holds an older dataset (the last RDB snapshot) or an empty
// one, and its replica would copy that, erasing every write since
// (shared/notes/feasibility.md reproduced it: ~70K acknowledged writes gone,
// no client error). So before the agent (re)starts a redis member of an HA
// addon (its assignment lists sentinels) that has run before, it asks the
// sentinels who the primary is and starts the member as a replica of that
// primary, whatever the assignment says; promotions are Sentinel's and the
// coordinator's business, never a restart's.
//
// When a majority of the sentinels name the member itself, Sentinel has not
// failed over yet: the member is held back (reported pending, with why) and
// the agent asks a sentinel for the failover — the process is certainly
// dead, the runtime said so, which is the one case where SENTINEL FAILOVER
// is safe. When no majority answers, the member is held too. The first start
// of a member (nothing in its dir, no container) keeps the assignment's
// view: that is how an addon is provisioned and a replacement placed.
//
// Sentinel refuses a failover with -NOGOODSLAVE when it sees no replica it
// can promote. Right after the sentinels start (a fresh addon) that is
// transient — they have not connected to the replica yet — and starting
// the member as the primary then is exactly the data wipe this file exists
// to prevent (seen in e2e: a kill 1 s after provisioning). So the member
// stays held while Sentinel says so, asking again every 2 s; only when
// Sentinel has said it for noGoodReplicaFor (the replica is really gone:
// down, or disconnected too long) is the member's own data the best there
// is, and it starts as the primary the sentinels name, so a cold start of a
// whole addon recovers.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Safety gate figures.
const (
	// holdRetry is how soon a held member is looked at again.
	holdRetry = 200 * time.Millisecond
	// failoverEvery bounds how often the agent asks for a failover of one
	// member that the sentinels still name.
	failoverEvery = 2 * time.Second
)

// noGoodReplicaFor is how long Sentinel must keep answering NOGOODSLAVE
// before a held member starts as the primary on its own data (a variable
// for tests).
var noGoodReplicaFor = 30 * time.Second

// gateState is the agent's safety-gate bookkeeping: why a member is held
// back, and when a failover was last asked for it.
type gateState struct {
	mu       sync.Mutex
	held     map[string]string // member → reason
	failover map[string]time.Time
	// nogood: since when Sentinel answers -NOGOODSLAVE for the member (no
	// replica to promote); after noGoodReplicaFor it may start as the
	// primary.
	nogood map[string]time.Time
}

// gates holds one gateState per agent. It lives beside the Agent struct
// rather than in it so this file stays the only one that knows it.
var gates sync.Map // *Agent → *gateState

func (a *Agent) gate() *gateState {
	if g, ok := gates.Load(a); ok {
		return g.(*gateState)
	}
	g, _ := gates.LoadOrStore(a, &gateState{held: map[string]string{}, failover: map[string]time.Time{}, nogood: map[string]time.Time{}})
	return g.(*gateState)
}

// heldReason is why member id is held back ("" when it is not).
func (a *Agent) heldReason(id string) string {
	g := a.gate()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held[id]
}

func (a *Agent) setHeld(id, reason string) {
	g := a.gate()
	g.mu.Lock()
	old := g.held[id]
	if reason == "" {
		delete(g.held, id)
	} else {
		g.held[id] = reason
	}
	g.mu.Unlock()
	if old != reason {
		if reason != "" {
			a.log.Warn("member held back", "member", id, "reason", reason)
			poke(a.heartbeatNow)
		} else if old != "" {
			a.log.Info("member released", "member", id)
		}
	}
}

// isBusinessRedis: a redis member watched by sentinels.
func isBusinessRedis(as api.Assignment) bool {
	return as.Role == api.RoleRedis && len(as.Sentinels) > 0 && as.MasterName != ""
}

// ranBefore reports whether the member has run on this host before: a
// container exists, or its dir holds an RDB file or an AOF dir.
func ranBefore(dir string, st *runtime.Status) bool {
	if st != nil && st.State != runtime.StateMissing {
		return true
	}
	for _, name := range []string{render.RDBFileName, render.AOFDirName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// gateStart decides whether the member of p may be (re)started now, and
// makes a business redis that ran before start as a replica of the primary
// the sentinels name (p's config is re-rendered). It returns ok=false with
// a retry delay when the member must be held back. It is also where the
// agent asks for a failover the moment it finds the primary's process dead
// (called on every reconcile pass while the member is down, restart backoff
// or not).
func (a *Agent) gateStart(ctx context.Context, p *memberPlan, st *runtime.Status, backoff time.Duration) (time.Duration, bool) {
	as := p.as
	running := st != nil && st.State == runtime.StateRunning
	if !isBusinessRedis(as) || running || !ranBefore(p.dir, st) {
		a.setHeld(as.MemberID, "")
		return 0, true
	}
	self := p.probe
	master, votes, err := redisctl.AskMajority(ctx, as.Sentinels, as.FleetPassword.Reveal(), as.MasterName)
	switch {
	case err != nil:
		if backoff > 0 {
			a.setHeld(as.MemberID, "")
			return min(backoff, holdRetry), false
		}
		a.setHeld(as.MemberID, "held back before restart: "+err.Error()+"; it starts only as a replica of the primary a majority of the sentinels name")
		return holdRetry, false
	case master == self && !a.noGoodReplica(as.MemberID):
		reason := fmt.Sprintf("held back before restart: %d of %d sentinels still name this member the primary (failover not done yet); it starts as a replica once Sentinel has promoted the other", votes, len(as.Sentinels))
		if err := a.askFailover(ctx, as); err != nil {
			if errors.Is(err, errNoGoodReplica) {
				a.log.Warn("no replica can take over: the member starts as the primary on its own data", "member", as.MemberID)
				break
			}
			reason += "; failover request: " + err.Error()
		} else {
			reason += "; failover requested"
		}
		if backoff > 0 {
			// Still in its restart delay: the failure stays what is
			// reported; the hold shows once the delay is over.
			a.setHeld(as.MemberID, "")
			return min(backoff, holdRetry), false
		}
		a.setHeld(as.MemberID, reason)
		return holdRetry, false
	}
	if backoff > 0 {
		a.setHeld(as.MemberID, "")
		return backoff, false
	}
	if master != self {
		as.ReplicaOf = master
		np, err := a.planMember(as)
		if err != nil {
			a.setHeld(as.MemberID, "held back before restart: render as a replica of "+master+": "+err.Error())
			return holdRetry, false
		}
		p.conf = np.conf
		a.log.Info("member restarts as a replica of the primary the sentinels name", "member", as.MemberID, "primary", master, "sentinels_agreeing", votes)
	}
	a.clearNoGood(as.MemberID)
	a.setHeld(as.MemberID, "")
	return 0, true
}

// noGoodReplica: Sentinel has said for noGoodReplicaFor that no replica
// can be promoted.
func (a *Agent) noGoodReplica(id string) bool {
	g := a.gate()
	g.mu.Lock()
	defer g.mu.Unlock()
	since, ok := g.nogood[id]
	return ok && time.Since(since) >= noGoodReplicaFor
}

func (a *Agent) clearNoGood(id string) {
	g := a.gate()
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.nogood, id)
}

// errNoGoodReplica: Sentinel has no replica to promote.
var errNoGoodReplica = errors.New("no replica can be promoted")

// askFailover sends SENTINEL FAILOVER to the member's sentinels (the first
// that accepts), at most every failoverEvery. Only called while the
// member's process is not running.
func (a *Agent) askFailover(ctx context.Context, as api.Assignment) error {
	g := a.gate()
	g.mu.Lock()
	if last, ok := g.failover[as.MemberID]; ok && time.Since(last) < failoverEvery {
		g.mu.Unlock()
		return nil
	}
	g.failover[as.MemberID] = time.Now()
	g.mu.Unlock()
	by, err := redisctl.Failover(ctx, as.Sentinels, as.FleetPassword.Reveal(), as.MasterName)
	if err == nil {
		a.log.Warn("primary process dead: failover requested", "member", as.MemberID, "addon", as.AddonID, "sentinel", by)
		a.clearNoGood(as.MemberID)
		return nil
	}
	if errors.Is(err, redisctl.ErrFailoverInProgress) {
		return nil // already under way
	}
	var fe *redisctl.FailoverError
	if errors.As(err, &fe) && fe.Count(redisctl.ErrNoGoodReplica)*2 > len(as.Sentinels) {
		g.mu.Lock()
		since, ok := g.nogood[as.MemberID]
		if !ok {
			since = time.Now()
			g.nogood[as.MemberID] = since
		}
		g.mu.Unlock()
		if time.Since(since) >= noGoodReplicaFor {
			return errNoGoodReplica
		}
		return fmt.Errorf("the sentinels see no replica to promote yet (NOGOODSLAVE for %s); asking again", time.Since(since).Round(time.Second))
	}
	a.clearNoGood(as.MemberID)
	return err
}
