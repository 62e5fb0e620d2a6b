package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

const (
	leaderKillRequests = 200
	leaderKillPlan     = "redis-starter-256"
	// leaderKillInFlight bounds the requests in flight so that the kill
	// lands in the middle of the run: with 20 in flight, the leader dies
	// with about 60 to 80 requests acknowledged and 120 still to go.
	leaderKillInFlight = 20
	// leaderKillAfter is the number of acknowledged requests that triggers
	// the kill.
	leaderKillAfter = 60
	// newLeaderWithin is the bound on the election after the kill.
	newLeaderWithin = 3 * time.Second
	// clientDeadline is how long one client insists on its request.
	clientDeadline = 90 * time.Second
)

// addResult is what one client saw of its addons-add.
type addResult struct {
	app, requestID string
	acked          bool
	addonID        string
	replay         bool // answered 200 (an earlier attempt had applied it)
	attempts       int
	ackedAfterKill bool
	finalErr       error // a non-retryable answer; never expected
	lastErr        error
}

// TestCoordinatorClusterSurvivesLeaderKill is issue 3's acceptance test:
// three real coordinators formed into a cluster through the CLI, 200
// concurrent addons-add over all three admin sockets, kill -9 of the leader
// in the middle; a new leader within 3 s, every acknowledged addon present
// exactly once on every member, the killed member catches up after a
// restart, and a full stop/start of all three keeps everything.
func TestCoordinatorClusterSurvivesLeaderKill(t *testing.T) {
	timings := map[string]time.Duration{}
	phase := func(name string, start time.Time) {
		timings[name] = time.Since(start)
		t.Logf("phase %-22s %s", name, timings[name].Round(time.Millisecond))
	}
	defer func() {
		names := make([]string, 0, len(timings))
		for n := range timings {
			names = append(names, n)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, " %s=%s", n, timings[n].Round(time.Millisecond))
		}
		t.Logf("timings:%s", b.String())
	}()

	// --- Form the cluster through the CLI.
	Build(t)
	start := time.Now()
	c1 := StartCoordinator(t, "c1", IP1, CoordinatorOpts{Bootstrap: true})
	WaitForLeader(t, startTimeout, c1)
	c2 := StartCoordinator(t, "c2", IP2, CoordinatorOpts{})
	c3 := StartCoordinator(t, "c3", IP3, CoordinatorOpts{})
	cs := []*Coordinator{c1, c2, c3}
	for _, c := range []*Coordinator{c2, c3} {
		res := c.Join(c1)
		if res.Code != 0 || !strings.Contains(res.Stdout, "joined") {
			t.Fatalf("join %s through the CLI: %s", c.ID, res)
		}
		t.Logf("%s joined through the CLI in %s", c.ID, res.Duration.Round(time.Millisecond))
	}
	testutil.WaitFor(t, startTimeout, func() error {
		for _, c := range cs {
			res := CLI(t, c.Socket, "members", "--json")
			if res.Code != 0 {
				return fmt.Errorf("members on %s: %s", c.ID, res)
			}
			var st api.ClusterStatus
			res.JSON(t, &st)
			if v := voters(st); v != 3 || st.LeaderID == "" {
				return fmt.Errorf("members on %s: %d voters, leader %q", c.ID, v, st.LeaderID)
			}
		}
		return nil
	})
	for _, c := range cs {
		checkSocketMode(t, c)
	}
	phase("form-cluster", start)

	// --- 200 concurrent addons-add; kill -9 the leader in the middle.
	runID := randomHex(4)
	clients := make([]*api.Client, len(cs))
	for i, c := range cs {
		clients[i] = c.Client()
	}
	var (
		results  = make([]addResult, leaderKillRequests)
		acked    atomic.Int64
		killed   atomic.Bool
		killNow  = make(chan struct{})
		sem      = make(chan struct{}, leaderKillInFlight)
		wg       sync.WaitGroup
		deadline = time.Now().Add(clientDeadline)
	)
	start = time.Now()
	for i := range leaderKillRequests {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = addUntilAcked(i, runID, cs, clients, deadline, &killed, func() {
				if acked.Add(1) == leaderKillAfter {
					close(killNow)
				}
			})
		}(i)
	}

	// The killer: find the leader as the members see it, kill -9 it.
	var (
		victim       *Coordinator
		killAt       time.Time
		ackedAtKill  int64
		newLeader    *Coordinator
		electionTook time.Duration
	)
	select {
	case <-killNow:
	case <-time.After(clientDeadline):
		t.Fatalf("only %d of %d requests acknowledged within %s; the kill never happened", acked.Load(), leaderKillRequests, clientDeadline)
	}
	victim = WaitForLeader(t, 10*time.Second, cs...)
	victim.Kill()
	killAt = time.Now()
	killed.Store(true)
	ackedAtKill = acked.Load()
	t.Logf("killed leader %s (pid gone) with %d requests acknowledged", victim.ID, ackedAtKill)
	survivors := without(cs, victim)

	// A new leader, polled on the survivors through the api.
	testutil.WaitFor(t, 20*time.Second, func() error {
		l, err := findLeader(survivors)
		if err != nil {
			return err
		}
		newLeader, electionTook = l, time.Since(killAt)
		return nil
	})
	t.Logf("new leader %s elected %s after the kill", newLeader.ID, electionTook.Round(time.Millisecond))
	if electionTook > newLeaderWithin {
		t.Errorf("new leader %s seen %s after killing %s; want within %s", newLeader.ID, electionTook.Round(time.Millisecond), victim.ID, newLeaderWithin)
	}

	wg.Wait()
	phase("200-writes-with-kill", start)

	// --- Every request was eventually acknowledged, none refused.
	ackedApps := map[string]addResult{}
	var replays, afterKill, retried int
	for _, r := range results {
		if r.finalErr != nil {
			t.Errorf("%s (request %s) was refused: %v", r.app, r.requestID, r.finalErr)
			continue
		}
		if !r.acked {
			t.Errorf("%s (request %s) never acknowledged within %s after %d attempts; last error: %v", r.app, r.requestID, clientDeadline, r.attempts, r.lastErr)
			continue
		}
		ackedApps[r.app] = r
		if r.replay {
			replays++
		}
		if r.ackedAfterKill {
			afterKill++
		}
		if r.attempts > 1 {
			retried++
		}
	}
	t.Logf("%d acknowledged (%d at the kill, %d after it, %d retried, %d answered as replays of an applied attempt)",
		len(ackedApps), ackedAtKill, afterKill, retried, replays)
	if ackedAtKill >= leaderKillRequests {
		t.Fatalf("every request was acknowledged before the kill: the kill did not land mid-run")
	}
	if t.Failed() {
		t.FailNow()
	}

	// --- After the dust settles: every acknowledged app exactly once on
	// every surviving member, stale (own state) and consistent.
	start = time.Now()
	target := LeaderAppliedIndex(t, survivors...)
	for _, c := range survivors {
		WaitForApplied(t, startTimeout, c, target)
		checkAddons(t, c, true, ackedApps)
		checkAddons(t, c, false, ackedApps)
	}
	checkOperations(t, newLeader, ackedApps)
	phase("verify-survivors", start)

	// --- The killed member restarts, rejoins and catches up.
	start = time.Now()
	victim.Restart()
	checkSocketMode(t, victim)
	WaitForVoters(t, startTimeout, 3, cs...)
	WaitForApplied(t, startTimeout, victim, target)
	checkAddons(t, victim, true, ackedApps)
	checkAddons(t, victim, false, ackedApps)
	phase("restart-killed", start)

	// --- Stop all three (SIGTERM), start all three: everything is kept.
	start = time.Now()
	for _, c := range cs {
		c.Stop()
	}
	for _, c := range cs {
		if _, err := os.Stat(c.Socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: admin socket %s still exists after a clean stop (err %v)", c.ID, c.Socket, err)
		}
	}
	phase("stop-all", start)
	start = time.Now()
	for _, c := range cs {
		c.Restart()
	}
	leader := WaitForLeader(t, startTimeout, cs...)
	phase("start-all-to-leader", start)
	start = time.Now()
	// A consistent read right after the election, before any write: the
	// operator's first `cacheplane addons` after a full restart.
	consistentReadAfterElection(t, leader)
	for _, c := range cs {
		checkSocketMode(t, c)
		WaitForApplied(t, startTimeout, c, target)
		checkAddons(t, c, true, ackedApps)
		checkAddons(t, c, false, ackedApps)
	}
	checkOperations(t, leader, ackedApps)

	// A new write works, sent through a follower so it is forwarded.
	follower := without(cs, leader)[0]
	res := CLI(t, follower.Socket, "addons-add", "--app", "app-after-restart", "redis", leaderKillPlan)
	if res.Code != 0 || !strings.Contains(res.Stdout, "app-after-restart") {
		t.Fatalf("addons-add after the full restart: %s", res)
	}
	for _, c := range cs {
		c := c
		testutil.WaitFor(t, startTimeout, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			as, err := c.Client().Addons(ctx, "app-after-restart", true)
			if err != nil {
				return err
			}
			if len(as) != 1 {
				return fmt.Errorf("%s has %d addons for app-after-restart, want 1", c.ID, len(as))
			}
			return nil
		})
	}
	phase("verify-after-restart", start)
}

// addUntilAcked is one client: a fixed request id, retried with the same id
// until acknowledged or deadline, moving to the next member after every
// failure (a dead member's socket refuses at once).
func addUntilAcked(i int, runID string, cs []*Coordinator, clients []*api.Client, deadline time.Time, killed *atomic.Bool, onAck func()) addResult {
	r := addResult{app: fmt.Sprintf("app-%03d", i), requestID: fmt.Sprintf("e2e-%s-%03d", runID, i)}
	req := api.AddonCreateRequest{App: r.app, Type: api.AddonType, Plan: leaderKillPlan, RequestID: r.requestID}
	m := i % len(cs)
	for time.Now().Before(deadline) {
		r.attempts++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := clients[m].AddonCreate(ctx, req)
		cancel()
		if err == nil {
			r.acked, r.addonID, r.replay = true, res.Addon.ID, res.OperationID == ""
			r.ackedAfterKill = killed.Load()
			onAck()
			return r
		}
		r.lastErr = fmt.Errorf("via %s: %w", cs[m].ID, err)
		if errors.Is(err, api.ErrInvalid) || errors.Is(err, api.ErrConflict) {
			r.finalErr = r.lastErr
			return r
		}
		m = (m + 1) % len(cs)
		backoff := time.NewTimer(20 * time.Millisecond) // retry pacing, not synchronisation
		<-backoff.C
	}
	return r
}

// consistentReadAfterElection asserts that a consistent read answers on a
// leader that has applied no command since it was elected.
func consistentReadAfterElection(t testing.TB, leader *Coordinator) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := leader.Client().Addons(ctx, "", false); err != nil {
		t.Fatalf("BUG coordinator/store.go ConsistentRead: a consistent read on %s, leader since the full restart with no write since, "+
			"did not answer within 10s (%v): it waits for fsm.Index() to reach raft.CommitIndex(), but the leader's no-op "+
			"and barrier entries are never passed to the FSM, so it waits for the next write", leader.ID, err)
	}
	t.Logf("consistent read on the new leader %s answered in %s", leader.ID, time.Since(start).Round(time.Millisecond))
}

func without(cs []*Coordinator, drop *Coordinator) []*Coordinator {
	var out []*Coordinator
	for _, c := range cs {
		if c != drop {
			out = append(out, c)
		}
	}
	return out
}

// checkSocketMode asserts the admin socket is a socket with mode 0600.
func checkSocketMode(t testing.TB, c *Coordinator) {
	t.Helper()
	fi, err := os.Stat(c.Socket)
	if err != nil {
		t.Fatalf("%s: admin socket: %v", c.ID, err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: admin socket %s has mode %s, want a socket with 0600", c.ID, c.Socket, fi.Mode())
	}
}

// checkAddons reads every addon from c (its own state when stale, else a
// consistent read through it) and asserts: each acknowledged app has
// exactly one addon, the one its acknowledgement named, with the plan
// asked for; nothing else is there.
func checkAddons(t testing.TB, c *Coordinator, stale bool, acked map[string]addResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl := c.Client()
	cl.RetryFor = 10 * time.Second
	addons, err := cl.Addons(ctx, "", stale)
	if err != nil {
		t.Fatalf("%s: list addons (stale=%v): %v", c.ID, stale, err)
	}
	byApp := map[string][]api.Addon{}
	for _, a := range addons {
		byApp[a.App] = append(byApp[a.App], a)
	}
	kind := "consistent"
	if stale {
		kind = "stale"
	}
	for app, r := range acked {
		got := byApp[app]
		switch {
		case len(got) == 0:
			t.Errorf("%s (%s read): acknowledged app %s (addon %s) is missing", c.ID, kind, app, r.addonID)
		case len(got) > 1:
			t.Errorf("%s (%s read): app %s has %d addons, want exactly 1: %v", c.ID, kind, app, len(got), addonIDs(got))
		case got[0].ID != r.addonID:
			t.Errorf("%s (%s read): app %s has addon %s, but its acknowledgement named %s", c.ID, kind, app, got[0].ID, r.addonID)
		case got[0].Plan != leaderKillPlan || got[0].RequestID != r.requestID:
			t.Errorf("%s (%s read): app %s addon %s has plan %s request %s, want %s %s", c.ID, kind, app, got[0].ID, got[0].Plan, got[0].RequestID, leaderKillPlan, r.requestID)
		}
	}
	if len(addons) != len(acked) {
		var extra []string
		for app, as := range byApp {
			if _, ok := acked[app]; !ok {
				extra = append(extra, fmt.Sprintf("%s:%v", app, addonIDs(as)))
			}
		}
		t.Errorf("%s (%s read): %d addons, want %d (one per acknowledged app); unexpected: %v", c.ID, kind, len(addons), len(acked), extra)
	}
}

// checkOperations asserts one provision operation per addon and no other.
func checkOperations(t testing.TB, c *Coordinator, acked map[string]addResult) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl := c.Client()
	cl.RetryFor = 10 * time.Second
	ops, err := cl.Operations(ctx, "", "")
	if err != nil {
		t.Fatalf("%s: operations: %v", c.ID, err)
	}
	perAddon := map[string]int{}
	for _, o := range ops {
		if o.Kind != api.OpProvision {
			t.Errorf("%s: unexpected %s operation %s for %s", c.ID, o.Kind, o.ID, o.AddonID)
		}
		perAddon[o.AddonID]++
	}
	for app, r := range acked {
		if n := perAddon[r.addonID]; n != 1 {
			t.Errorf("%s: app %s addon %s has %d provision operations, want 1", c.ID, app, r.addonID, n)
		}
	}
	if len(ops) != len(acked) {
		t.Errorf("%s: %d operations, want %d (one provision per addon)", c.ID, len(ops), len(acked))
	}
}

func addonIDs(as []api.Addon) []string {
	ids := make([]string, len(as))
	for i, a := range as {
		ids[i] = a.ID
	}
	return ids
}
