package e2e

// Plan changes end to end (issue 11 item 3, same kind; item 5, the app is
// told): a go-redis client writes sequence-numbered keys through the URL
// the whole time while `cacheplane addons-upgrade` resizes the addon live
// (agents: cgroup limit and CONFIG SET maxmemory, no restart). Every
// change: 0 failed commands, 0 lost acknowledged writes, each redis
// member's maxmemory and its container's cgroup limit on the new plan, no
// member restarted. Refusals change nothing. A leader killed in the middle
// of a business change: the new leader finishes it, each step done once.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Addresses of this file's fleets (no other test uses them).
const (
	planKindCoordIP    = "127.0.0.210"
	planKindVIPPool    = "127.0.23.0/24"
	planStarterCoordIP = "127.0.0.141"
	planStarterHostIP  = "127.0.0.142"
	planBizCoordIP     = "127.0.0.150"
	planBizVIPPool     = "127.0.16.0/24"
	planKillVIPPool    = "127.0.17.0/24"
)

var (
	planKindHostIPs  = []string{"127.0.0.211", "127.0.0.212", "127.0.0.213", "127.0.0.214"}
	planBizHostIPs   = []string{"127.0.0.151", "127.0.0.152", "127.0.0.153", "127.0.0.154"}
	planKillCoordIPs = []string{"127.0.0.160", "127.0.0.161", "127.0.0.162"}
	planKillHostIPs  = []string{"127.0.0.163", "127.0.0.164", "127.0.0.165", "127.0.0.166"}
)

// planTimeout bounds one plan change (request to operation done).
const planTimeout = 60 * time.Second

// failures is how many writes failed so far.
func (w *writer) failures() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

// errClasses copies the failures by kind so far.
func (w *writer) errClasses() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.errs {
		out[k] = v
	}
	return out
}

// ackLog copies the acknowledged writes so far.
func (w *writer) ackLog() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...)
}

// gapWithin is the longest time without an acknowledged write in
// [from, to] (the edges count as writes).
func gapWithin(acks []ack, from, to time.Time) time.Duration {
	var gap time.Duration
	prev := from
	for _, a := range acks {
		if a.at.Before(from) {
			continue
		}
		if a.at.After(to) {
			break
		}
		gap = max(gap, a.at.Sub(prev))
		prev = a.at
	}
	return max(gap, to.Sub(prev))
}

// transition is one plan change as the writer saw it.
type transition struct {
	from, to string
	op       api.Operation
	took     time.Duration // addons-upgrade sent → operation seen done
	opTook   time.Duration // the operation's own: created → last step done
	cli      time.Duration // the addons-upgrade command's run
	failed   int
	errs     map[string]int
	stall    time.Duration
	acked    int
}

func (tr transition) String() string {
	return fmt.Sprintf("%s -> %s: operation done in %s (addons-upgrade ran %s; seen done %s after it was started), %d writes acknowledged meanwhile, longest stall %s, %d failed commands %v",
		tr.from, tr.to, tr.opTook.Round(time.Millisecond), tr.cli.Round(time.Millisecond), tr.took.Round(time.Millisecond), tr.acked, tr.stall.Round(time.Millisecond), tr.failed, tr.errs)
}

// changePlan runs `cacheplane addons-upgrade` and waits until its
// operation is done (a failed or cancelled one fails the test); w is the
// writer running through the URL meanwhile.
func changePlan(t testing.TB, c *Coordinator, w *writer, app, id, from, to string) transition {
	t.Helper()
	failedBefore, errsBefore := w.failures(), w.errClasses()
	start := time.Now()
	res := c.CLI("--json", "addons-upgrade", "--app", app, id, to)
	if res.Code != 0 {
		t.Fatalf("addons-upgrade: %s", res)
	}
	var pc api.PlanChangeResponse
	res.JSON(t, &pc)
	if pc.Addon.Plan != to || pc.Operation.Kind != api.OpPlanChange {
		t.Fatalf("addons-upgrade answered %+v", pc)
	}
	op := waitOperationDone(t, c, app, pc.Operation.ID, planTimeout)
	end := time.Now()
	WaitForAddonStatus(t, c, app, api.AddonRunning, 10*time.Second)
	tr := transition{from: from, to: to, op: op, took: end.Sub(start), failed: w.failures() - failedBefore, errs: map[string]int{}}
	if n := len(op.Steps); n > 0 {
		tr.opTook = op.Steps[n-1].FinishedAt.Sub(op.CreatedAt)
	}
	tr.cli = res.Duration
	for k, v := range w.errClasses() {
		if d := v - errsBefore[k]; d > 0 {
			tr.errs[k] = d
		}
	}
	acks := w.ackLog()
	tr.stall = gapWithin(acks, start, end)
	for _, a := range acks {
		if !a.at.Before(start) && !a.at.After(end) {
			tr.acked++
		}
	}
	checkStepsOnce(t, op)
	return tr
}

// waitOperationDone polls the operation until it is done.
func waitOperationDone(t testing.TB, c *Coordinator, app, id string, timeout time.Duration) api.Operation {
	t.Helper()
	var op api.Operation
	testutil.WaitFor(t, timeout, func() error {
		op = operationByID(t, c, app, id)
		switch op.State {
		case api.OpDone:
			return nil
		case api.OpFailed, api.OpCancelled:
			t.Fatalf("operation %s (%s) is %s: %s %+v", op.ID, op.Kind, op.State, op.Error, op.Steps)
		}
		detail := ""
		if i := op.CurrentStep(); i < len(op.Steps) {
			detail = op.Steps[i].Name + ": " + op.Steps[i].Detail
		}
		return fmt.Errorf("operation %s is %s at %s", op.ID, op.State, detail)
	})
	return op
}

// checkStepsOnce: the plan change's steps (four for a change of size; a
// change of kind adds or removes members first), in order, each done, each
// started and finished once (the times are in order).
func checkStepsOnce(t testing.TB, op api.Operation) {
	t.Helper()
	want := []string{"record plan", "resize members", "notify app", "mark running"}
	switch {
	case strings.Contains(op.Change, "-starter-") && strings.Contains(op.Change, "-> redis-business-"):
		want = []string{"record plan", "add members", "wait new members", "resize members", "notify app", "mark running"}
	case strings.Contains(op.Change, "-business-") && strings.Contains(op.Change, "-> redis-starter-"):
		want = []string{"record plan", "remove surplus members", "resize members", "notify app", "mark running"}
	}
	if len(op.Steps) != len(want) {
		t.Fatalf("operation %s has steps %+v", op.ID, op.Steps)
	}
	prev := op.CreatedAt
	for i, s := range op.Steps {
		if s.Name != want[i] || s.State != api.OpDone || s.StartedAt.Before(prev) || s.FinishedAt.Before(s.StartedAt) {
			t.Fatalf("operation %s step %d: %+v (previous step finished %s)", op.ID, i, s, prev)
		}
		prev = s.FinishedAt
	}
	if !strings.Contains(op.Steps[len(want)-3].Detail, "resized live") {
		t.Errorf("resize step: %q", op.Steps[len(want)-3].Detail)
	}
}

// redisClient is a direct client of one redis member (no retries), logged
// in as the fleet's user (password: the fleet credential).
func redisClient(addr, password string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Username: redisctl.FleetUser, Password: password, DialTimeout: 2 * time.Second,
		ReadTimeout: 2 * time.Second, MaxRetries: -1, PoolSize: 1, DisableIdentity: true, TLSConfig: memberTLSConfig(addr)})
}

// checkResized: the redis member runs with maxmemory mb, and its
// container's cgroup limit (in force, and stored) is the plan's limit.
func checkResized(t testing.TB, ag *Agent, m api.Member, mb int) {
	t.Helper()
	addr := net.JoinHostPort(ag.IP, strconv.Itoa(m.Port))
	c := redisClient(addr, fleetCredential(t, m.ID[:max(0, strings.LastIndex(m.ID, "-redis-"))], ag))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := c.ConfigGet(ctx, "maxmemory").Result()
	if err != nil {
		t.Fatalf("CONFIG GET maxmemory on %s: %v", m.ID, err)
	}
	if got["maxmemory"] != strconv.Itoa(mb<<20) {
		t.Errorf("%s: maxmemory %s, want %d MB", m.ID, got["maxmemory"], mb)
	}
	want := render.ContainerMemoryLimitBytes(mb)
	// The limit shrinks just after maxmemory: give the agent a moment.
	testutil.WaitFor(t, 10*time.Second, func() error {
		live, stored := cgroupLimit(t, ag, m.ID)
		if live != uint64(want) || stored != want {
			return fmt.Errorf("%s: cgroup limit %d (stored %d), want %d (%d MB plan)", m.ID, live, stored, want, mb)
		}
		return nil
	})
}

// cgroupLimit is a member's memory limit in force (cgroup) and as stored
// in its container.
func cgroupLimit(t testing.TB, ag *Agent, id string) (live uint64, stored int64) {
	t.Helper()
	rt := ag.runtime()
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rt.Stats(ctx, id)
	if err != nil {
		t.Fatalf("stats of %s: %v", id, err)
	}
	in, err := rt.Inspect(ctx, id)
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return st.MemoryLimitBytes, in.MemoryLimitBytes
}

// pids maps each member of the addon to its running pid.
func pids(t testing.TB, agents map[string]*Agent, a api.Addon) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range a.Members {
		for _, st := range agents[m.HostID].Members() {
			if st.ID == m.ID && st.State == runtime.StateRunning {
				out[m.ID] = st.Pid
			}
		}
		if out[m.ID] == 0 {
			t.Fatalf("member %s has no running process", m.ID)
		}
	}
	return out
}

// samePids: nothing restarted.
func samePids(t testing.TB, before, after map[string]int) {
	t.Helper()
	for id, p := range before {
		if after[id] != p {
			t.Errorf("member %s restarted: pid %d -> %d", id, p, after[id])
		}
	}
}

// freeze stops the agent process (SIGSTOP): its members keep serving, it
// neither applies assignments nor reports. thaw resumes it.
func freeze(t testing.TB, ag *Agent) func() {
	t.Helper()
	pid := ag.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP agent %s: %v", ag.ID, err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	return thaw
}

// refused runs addons-upgrade expecting a refusal saying want, and checks
// nothing changed: the same plan, status and operations.
func refused(t testing.TB, c *Coordinator, app, id, plan, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := c.Client()
	before, err := cl.Addon(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	opsBefore, err := cl.Operations(ctx, app, "")
	if err != nil {
		t.Fatal(err)
	}
	res := c.CLI("addons-upgrade", "--app", app, id, plan)
	if res.Code != 2 || !strings.Contains(res.Stderr, want) || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
		t.Fatalf("addons-upgrade to %s: %s\nwant exit 2 and one line saying %q", plan, res, want)
	}
	after, err := cl.Addon(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	opsAfter, err := cl.Operations(ctx, app, "")
	if err != nil {
		t.Fatal(err)
	}
	if after.Plan != before.Plan || after.Status != before.Status || len(opsAfter) != len(opsBefore) {
		t.Fatalf("a refused change changed something: plan %s -> %s, status %s -> %s, %d -> %d operations",
			before.Plan, after.Plan, before.Status, after.Status, len(opsBefore), len(opsAfter))
	}
	t.Logf("refused (%s): %s", plan, strings.TrimSpace(res.Stderr))
}

// TestPlanChangeStarter: a starter grows 256 → 1024 and shrinks back
// while a client writes through its URL: 0 failed, 0 lost, resized in
// place. Then the refusals: the same plan, a business plan on a one-host
// fleet, a busy addon
// (its agent frozen, so the first change waits), a plan too small for the
// data stored (filled first); each changes nothing.
func TestPlanChangeStarter(t *testing.T) {
	c := StartCoordinator(t, "c1", planStarterCoordIP, CoordinatorOpts{Bootstrap: true})
	ag := StartAgent(t, c, "h1", planStarterHostIP, AgentOpts{})
	const app = "plan-starter"
	if res := c.CLI("addons-add", "--app", app, "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	a := WaitForAddonStatus(t, c, app, api.AddonRunning, 90*time.Second)
	full, err := c.Client().Addon(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	m := full.Members[0]
	opt, err := redis.ParseURL(RedisURL(t, c, app))
	if err != nil {
		t.Fatal(err)
	}
	agents := map[string]*Agent{"h1": ag}
	before := pids(t, agents, full)
	checkResized(t, ag, m, 256)

	w := startWriter(opt, "plan:")
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	start := time.Now()
	for _, step := range []struct {
		from, to string
		mb       int
	}{{"redis-starter-256", "redis-starter-1024", 1024}, {"redis-starter-1024", "redis-starter-256", 256}} {
		tr := changePlan(t, c, w, app, a.ID, step.from, step.to)
		checkResized(t, ag, m, step.mb)
		w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
		t.Logf("starter %s", tr)
		if tr.failed != 0 {
			t.Errorf("%s -> %s: %d failed commands %v", step.from, step.to, tr.failed, tr.errs)
		}
	}
	acks, failed, errs := w.finish()
	gap, at := longestGap(acks, start)
	rc := redis.NewClient(opt)
	defer rc.Close()
	lost := missing(t, rc, "plan:", acks)
	t.Logf("starter 256 -> 1024 -> 256: %d writes acknowledged, %d failed %v, longest stall %s (at %s), %d lost",
		len(acks), failed, errs, gap.Round(time.Millisecond), at.Format("15:04:05.000"), len(lost))
	if failed != 0 || len(lost) != 0 {
		t.Errorf("%d failed commands, %d acknowledged writes lost; want 0 and 0", failed, len(lost))
	}
	samePids(t, before, pids(t, agents, full))

	// Refusals.
	refused(t, c, app, a.ID, "redis-starter-256", "is already on plan redis-starter-256")
	refused(t, c, app, a.ID, "redis-business-1024", "needs 3 ready hosts (one per sentinel), found 1 (h1)")
	refused(t, c, app, a.ID, "redis-starter-3000", `unknown plan "redis-starter-3000"`)
	refused(t, c, app, a.ID, "redis-starter-8192", "host h1 has")

	// Busy: with its agent frozen the first change cannot finish; a
	// second one is refused naming it. Thawed, the first one finishes.
	thaw := freeze(t, ag)
	res := c.CLI("--json", "addons-upgrade", "--app", app, a.ID, "redis-starter-512")
	if res.Code != 0 {
		t.Fatalf("addons-upgrade with the agent frozen: %s", res)
	}
	var pc api.PlanChangeResponse
	res.JSON(t, &pc)
	testutil.WaitFor(t, 20*time.Second, func() error {
		op := operationByID(t, c, app, pc.Operation.ID)
		if i := op.CurrentStep(); i != 1 || op.Steps[1].Detail == "" {
			return fmt.Errorf("operation at step %d: %+v", i, op.Steps)
		}
		return nil
	})
	waiting := operationByID(t, c, app, pc.Operation.ID)
	t.Logf("with the agent frozen the change waits: %q", waiting.Steps[1].Detail)
	res = c.CLI("addons-upgrade", "--app", app, a.ID, "redis-starter-1024")
	if res.Code != 2 || !strings.Contains(res.Stderr, "has operation "+pc.Operation.ID+" (plan-change) in progress") {
		t.Fatalf("a change while another runs: %s", res)
	}
	thaw()
	waitOperationDone(t, c, app, pc.Operation.ID, planTimeout)
	checkResized(t, ag, m, 512)

	// Too small for the data: ~300 MB stored on the 512 MB plan.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	big := strings.Repeat("x", 1<<20)
	for i := 0; i < 300; i += 50 {
		pipe := rc.Pipeline()
		for j := i; j < i+50; j++ {
			pipe.Set(ctx, fmt.Sprintf("fill:%03d", j), big, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("fill: %v", err)
		}
	}
	refused(t, c, app, a.ID, "redis-starter-256", "plan redis-starter-256 (256 MB) is too small for addon "+a.ID+": it stores ")
	res = c.CLI("addons-upgrade", "--app", app, a.ID, "redis-starter-256")
	if !regexp.MustCompile(`it stores \d+\.\d MB now \(used_memory of its primary\), \d+\.\d MB with 10 % headroom; delete data first, or choose a plan of at least redis-starter-512`).MatchString(res.Stderr) {
		t.Errorf("too-small refusal without its figures: %s", res.Stderr)
	}
	checkResized(t, ag, m, 512)
	samePids(t, before, pids(t, agents, full))
}

// TestPlanChangeBusiness: a business addon grows 256 → 1024 while a client
// writes through its VIP: 0 failed, 0 lost; both redis members resized in
// place; no member restarted; still healthy.
func TestPlanChangeBusiness(t *testing.T) {
	f := startBusiness(t, "plan-biz", bizOpts{CoordIP: planBizCoordIP, HostIPs: planBizHostIPs, VIPPool: planBizVIPPool})
	a := f.mustAddon()
	before := pids(t, f.agents, a)
	w := startWriter(f.opt, "bplan:")
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	tr := changePlan(t, f.c, w, f.app, f.id, "redis-business-256", "redis-business-1024")
	for _, m := range membersOf(a, api.RoleRedis) {
		checkResized(t, f.agents[m.HostID], m, 1024)
	}
	w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
	acks, failed, errs := w.finish()
	rc := redis.NewClient(f.opt)
	defer rc.Close()
	lost := missing(t, rc, "bplan:", acks)
	t.Logf("business %s; overall %d acknowledged, %d failed %v, %d lost", tr, len(acks), failed, errs, len(lost))
	if failed != 0 || len(lost) != 0 {
		t.Errorf("%d failed commands, %d acknowledged writes lost; want 0 and 0", failed, len(lost))
	}
	samePids(t, before, pids(t, f.agents, a))
	f.waitHealthy(30 * time.Second)
}

// TestPlanChangeLeaderKill: three coordinators; a business change is held
// in its resize step (the agent of the replica's host is frozen, so one
// member is not resized yet) when the leader is killed with -9. The new
// leader resumes it from the FSM: the member is resized once its agent
// runs again, the app step and the mark running follow, each step done
// once (the operation's steps, and one "operation step done" per step in
// all the coordinators' logs together); 0 failed, 0 lost.
func TestPlanChangeLeaderKill(t *testing.T) {
	// host_down_after is long so the frozen agent's host is not marked
	// down (which would leave its member out of the resize) before the
	// new leader takes over.
	args := []string{"--entrypoint-cidr", planKillVIPPool, "--host-down-after", "30s"}
	cs := make([]*Coordinator, len(planKillCoordIPs))
	for i, ip := range planKillCoordIPs {
		cs[i] = StartCoordinator(t, fmt.Sprintf("c%d", i+1), ip, CoordinatorOpts{Bootstrap: i == 0, ExtraArgs: args})
		if i == 0 {
			WaitForLeader(t, startTimeout, cs[0])
			continue
		}
		if res := cs[i].Join(cs[0]); res.Code != 0 {
			t.Fatalf("join %s: %s", cs[i].ID, res)
		}
	}
	WaitForVoters(t, startTimeout, len(cs), cs...)
	leader := WaitForLeader(t, startTimeout, cs...)
	var peers []string
	for _, c := range cs {
		peers = append(peers, c.HTTPAddr)
	}
	f := &bizFleet{t: t, c: leader, app: "plan-kill", agents: map[string]*Agent{}}
	for i, ip := range planKillHostIPs {
		id := fmt.Sprintf("h%d", i+1)
		f.agents[id] = StartAgent(t, leader, id, ip, AgentOpts{Heartbeat: time.Second}, peers...)
	}
	if res := leader.CLI("addons-add", "--app", f.app, "redis", "redis-business-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	f.id = WaitForAddonStatus(t, leader, f.app, api.AddonRunning, 90*time.Second).ID
	f.url = RedisURL(t, leader, f.app)
	var err error
	if f.opt, err = redis.ParseURL(f.url); err != nil {
		t.Fatal(err)
	}
	f.waitHealthy(60 * time.Second)
	a := f.mustAddon()
	before := pids(t, f.agents, a)
	var replica api.Member
	for _, m := range membersOf(a, api.RoleRedis) {
		if m.RedisRole != "primary" {
			replica = m
		}
	}

	w := startWriter(f.opt, "kplan:")
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	changeAt := time.Now()
	thaw := freeze(t, f.agents[replica.HostID])
	res := leader.CLI("--json", "addons-upgrade", "--app", f.app, f.id, "redis-business-1024")
	if res.Code != 0 {
		t.Fatalf("addons-upgrade: %s", res)
	}
	var pc api.PlanChangeResponse
	res.JSON(t, &pc)
	// Held in "resize members": the primary resized, the replica not.
	var follower *Coordinator
	for _, c := range cs {
		if c != leader {
			follower = c
		}
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ops, err := follower.Client().Operations(ctx, f.app, "") // the leader's view
		if err != nil {
			return err
		}
		for _, o := range ops {
			if o.ID == pc.Operation.ID {
				if i := o.CurrentStep(); i != 1 || !strings.Contains(o.Steps[1].Detail, "want 1024mb") {
					return fmt.Errorf("operation at step %d: %+v", i, o.Steps)
				}
				t.Logf("held: %q", o.Steps[1].Detail)
				return nil
			}
		}
		return fmt.Errorf("operation %s not listed", pc.Operation.ID)
	})
	leader.Kill()
	killedAt := time.Now()
	next := WaitForLeader(t, 20*time.Second, without(cs, leader)...)
	t.Logf("leader %s killed; %s leads after %s", leader.ID, next.ID, time.Since(killedAt).Round(time.Millisecond))
	f.c = next
	thaw()
	op := waitOperationDone(t, next, f.app, pc.Operation.ID, planTimeout)
	checkStepsOnce(t, op)
	if s := op.Steps[1]; !s.StartedAt.Before(killedAt) || !s.FinishedAt.After(killedAt) {
		t.Errorf("resize step started %s, finished %s: want it begun by the old leader and finished by the new one (kill at %s)",
			s.StartedAt.Format("15:04:05.000"), s.FinishedAt.Format("15:04:05.000"), killedAt.Format("15:04:05.000"))
	}
	for _, m := range membersOf(a, api.RoleRedis) {
		checkResized(t, f.agents[m.HostID], m, 1024)
	}
	// Each step done once, whichever leader did it.
	done := map[string]int{}
	stepLine := regexp.MustCompile(`"msg":"operation step done".*"op":"` + pc.Operation.ID + `".*"step":"([a-z ]+)"`)
	for _, c := range cs {
		b, err := os.ReadFile(filepath.Clean(c.LogPath))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if mm := stepLine.FindStringSubmatch(l); mm != nil {
				done[mm[1]+" by "+c.ID]++
				done[mm[1]]++
			}
		}
	}
	t.Logf("steps done, from the coordinators' logs: %v", done)
	for _, s := range []string{"resize members", "notify app", "mark running"} {
		if done[s] != 1 {
			t.Errorf("step %q logged done %d times; want once", s, done[s])
		}
	}
	w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
	acks, failed, errs := w.finish()
	rc := redis.NewClient(f.opt)
	defer rc.Close()
	lost := missing(t, rc, "kplan:", acks)
	gap, _ := longestGap(acks, changeAt)
	t.Logf("business change across a leader kill: %d acknowledged, %d failed %v, longest stall %s, %d lost", len(acks), failed, errs, gap.Round(time.Millisecond), len(lost))
	if failed != 0 || len(lost) != 0 {
		t.Errorf("%d failed commands, %d acknowledged writes lost; want 0 and 0", failed, len(lost))
	}
	samePids(t, before, pids(t, f.agents, a))
	f.waitHealthy(60 * time.Second)
}

// TestPlanChangeKind: a starter becomes a business addon and back while a
// client writes through its URL the whole time: the URL (a VIP) never
// changes, 0 failed commands, 0 lost acknowledged writes; going business
// the kept redis node and haproxy are not restarted (the haproxy learns
// the replica at run time) and the addon ends healthy (one master, the
// replica in sync, three sentinels that agree); going back the primary and
// the entrypoint's haproxy stay, not restarted, every other member is gone.
func TestPlanChangeKind(t *testing.T) {
	f := startBusiness(t, "plan-kind", bizOpts{CoordIP: planKindCoordIP, HostIPs: planKindHostIPs, VIPPool: planKindVIPPool, Plan: "redis-starter-256"})
	a := f.mustAddon()
	if len(a.Members) != 2 {
		t.Fatalf("starter members %+v", a.Members)
	}
	entry := a.Entrypoint
	if ip, _, _ := net.SplitHostPort(entry); !strings.HasPrefix(ip, "127.0.23.") {
		t.Fatalf("starter entrypoint %s is not a VIP of %s", entry, planKindVIPPool)
	}
	starterPids := pids(t, f.agents, a)
	w := startWriter(f.opt, "kplan:")
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	start := time.Now()

	up := changePlan(t, f.c, w, f.app, f.id, "redis-starter-256", "redis-business-256")
	t.Logf("starter -> business: %s", up)
	b := f.mustAddon()
	if len(b.Members) != 7 || b.Entrypoint != entry {
		t.Fatalf("after the change to business: %d members, entrypoint %s (was %s)", len(b.Members), b.Entrypoint, entry)
	}
	samePids(t, starterPids, pids(t, f.agents, a)) // the kept redis node and haproxy: not restarted
	f.waitHealthy(60 * time.Second)
	w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)

	bizPids := pids(t, f.agents, b)
	down := changePlan(t, f.c, w, f.app, f.id, "redis-business-256", "redis-starter-256")
	t.Logf("business -> starter: %s", down)
	s := f.mustAddon()
	if len(s.Members) != 2 || s.Entrypoint != entry || len(membersOf(s, api.RoleRedis)) != 1 || len(membersOf(s, api.RoleHAProxy)) != 1 {
		t.Fatalf("after the change back: members %+v, entrypoint %s", s.Members, s.Entrypoint)
	}
	kept := pids(t, f.agents, s)
	for id, pid := range kept {
		if bizPids[id] != pid {
			t.Errorf("%s restarted (pid %d -> %d)", id, bizPids[id], pid)
		}
	}
	// The members that went are gone from their hosts.
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, m := range b.Members {
			if _, ok := kept[m.ID]; ok {
				continue
			}
			for _, st := range f.agents[m.HostID].Members() {
				if st.ID == m.ID {
					return fmt.Errorf("%s still on %s (%s)", m.ID, m.HostID, st.State)
				}
			}
		}
		return nil
	})
	w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
	acks, failed, errs := w.finish()
	gap, at := longestGap(acks, start)
	rc := redis.NewClient(f.opt)
	defer rc.Close()
	lost := missing(t, rc, "kplan:", acks)
	t.Logf("starter -> business -> starter: %d writes acknowledged, %d failed %v, longest stall %s (at %s), %d lost",
		len(acks), failed, errs, gap.Round(time.Millisecond), at.Format("15:04:05.000"), len(lost))
	if up.failed != 0 || down.failed != 0 || failed != 0 || len(lost) != 0 {
		t.Errorf("%d failed commands (%d, %d in the changes), %d acknowledged writes lost; want 0 and 0", failed, up.failed, down.failed, len(lost))
	}
}
