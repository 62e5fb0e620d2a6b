package e2e

// Engine upgrades end to end (issue 11 item 4): a go-redis client writes
// sequence-numbered keys through the URL the whole time while `cacheplane
// addons-upgrade-engine` moves the addon to another engine version.
// Starter: 0 lost writes, its data kept (RDB and AOF), the downtime
// measured. Business (rolling): 0 failed commands, 0 lost writes, the
// primary back on its host, every member on the target version (INFO of
// each redis and sentinel, the image of each container). Refusals change
// nothing. A leader killed in the middle of a business upgrade: the new
// leader finishes it, each step done once.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Addresses of this file's fleets (no other test uses them).
const (
	upgStarterCoordIP = "127.0.0.180"
	upgStarterHostIP  = "127.0.0.181"
	upgRefuseCoordIP  = "127.0.0.182"
	upgRefuseHostIP   = "127.0.0.183"
	upgBizCoordIP     = "127.0.0.185"
	upgBizVIPPool     = "127.0.20.0/24"
	upgKillVIPPool    = "127.0.21.0/24"
)

var (
	upgBizHostIPs   = []string{"127.0.0.186", "127.0.0.187", "127.0.0.188", "127.0.0.189"}
	upgKillCoordIPs = []string{"127.0.0.190", "127.0.0.191", "127.0.0.192"}
	upgKillHostIPs  = []string{"127.0.0.193", "127.0.0.194", "127.0.0.195", "127.0.0.196"}
)

// upgradeTimeout bounds one upgrade (request to operation done).
const upgradeTimeout = 3 * time.Minute

// upgradeRun is one upgrade as the writer saw it.
type upgradeRun struct {
	from, to string
	op       api.Operation
	took     time.Duration // addons-upgrade-engine sent → operation seen done
	opTook   time.Duration // the operation's own: created → last step done
	failed   int
	errs     map[string]int
	stall    time.Duration // longest time without an acknowledged write
	acked    int
}

func (r upgradeRun) String() string {
	return fmt.Sprintf("%s -> %s: operation done in %s (seen done %s after the request), %d writes acknowledged meanwhile, longest stall %s, %d failed commands %v",
		r.from, r.to, r.opTook.Round(time.Millisecond), r.took.Round(time.Millisecond), r.acked, r.stall.Round(time.Millisecond), r.failed, r.errs)
}

// upgradeEngine runs `cacheplane addons-upgrade-engine` and waits until
// its operation is done (a failed or cancelled one fails the test); w is
// the writer running through the URL meanwhile.
func upgradeEngine(t testing.TB, c *Coordinator, w *writer, app, id, from, to string) upgradeRun {
	t.Helper()
	failedBefore, errsBefore := w.failures(), w.errClasses()
	start := time.Now()
	res := c.CLI("--json", "addons-upgrade-engine", "--app", app, id, to)
	if res.Code != 0 {
		t.Fatalf("addons-upgrade-engine: %s", res)
	}
	var up api.EngineUpgradeResponse
	res.JSON(t, &up)
	if up.Operation.Kind != api.OpUpgrade || up.Operation.Upgrade.To != to || up.Operation.Upgrade.From != from {
		t.Fatalf("addons-upgrade-engine answered %+v", up)
	}
	t.Logf("%s", up.Message)
	op := waitOperationDone(t, c, app, up.Operation.ID, upgradeTimeout)
	end := time.Now()
	WaitForAddonStatus(t, c, app, api.AddonRunning, 10*time.Second)
	return measured(w, from, to, op, start, end, failedBefore, errsBefore)
}

// measured is what the writer saw between start and end.
func measured(w *writer, from, to string, op api.Operation, start, end time.Time, failedBefore int, errsBefore map[string]int) upgradeRun {
	tr := upgradeRun{from: from, to: to, op: op, took: end.Sub(start), failed: w.failures() - failedBefore, errs: map[string]int{}}
	if n := len(op.Steps); n > 0 {
		tr.opTook = op.Steps[n-1].FinishedAt.Sub(op.CreatedAt)
	}
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
	return tr
}

// checkUpgradeSteps: every step done, in order, started and finished
// once; a switchover step switched over once.
func checkUpgradeSteps(t testing.TB, op api.Operation) {
	t.Helper()
	prev := op.CreatedAt
	for i, s := range op.Steps {
		if s.State != api.OpDone || s.StartedAt.Before(prev) || s.FinishedAt.Before(s.StartedAt) {
			t.Fatalf("operation %s step %d: %+v (previous step finished %s)", op.ID, i, s, prev.Format("15:04:05.000"))
		}
		if (strings.HasPrefix(s.Name, "switch over to ") || strings.HasPrefix(s.Name, "switch back to ")) && s.Attempts != 1 {
			t.Errorf("step %q switched over %d times: %s", s.Name, s.Attempts, s.Detail)
		}
		prev = s.FinishedAt
	}
}

// stepDetail returns the detail of op's step whose name starts with prefix.
func stepDetail(op api.Operation, prefix string) string {
	for _, s := range op.Steps {
		if strings.HasPrefix(s.Name, prefix) {
			return s.Name + ": " + s.Detail
		}
	}
	return ""
}

// catalogImages are the images of engine version key by role.
func catalogImages(t testing.TB, key string) map[api.Role]string {
	for _, e := range api.DefaultEngines() {
		if e.Key() == key {
			return e.Images
		}
	}
	t.Fatalf("no %s in the catalog", key)
	return nil
}

// onVersion checks every member of a runs engine version per what it
// says itself (INFO server of each redis and sentinel) and its container
// (the catalog's image; redis and sentinels started after since, the
// haproxys not: every catalog entry has the same haproxy image).
func onVersion(t testing.TB, agents map[string]*Agent, a api.Addon, e api.Engine, version string, since time.Time) {
	t.Helper()
	password := fleetCredential(t, a.ID, agentList(agents)...)
	if a.Engine != e || a.Version != version {
		t.Errorf("addon %s recorded on %s %s, want %s %s", a.ID, a.Engine, a.Version, e, version)
	}
	images := catalogImages(t, string(e)+"-"+version)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range a.Members {
		if m.Engine != "" || m.Stopped {
			t.Errorf("member %s keeps its own version %s %s (stopped %v)", m.ID, m.Engine, m.Version, m.Stopped)
		}
		ag := agents[m.HostID]
		addr := net.JoinHostPort(ag.IP, strconv.Itoa(m.Port))
		var s redisctl.Server
		var err error
		switch m.Role {
		case api.RoleRedis:
			var n redisctl.Node
			n, err = redisctl.ReadNode(ctx, addr, password)
			s = n.Server
		case api.RoleSentinel:
			s, err = redisctl.SentinelServer(ctx, addr, password)
		}
		if err != nil {
			t.Errorf("%s: %v", m.ID, err)
		} else if m.Role != api.RoleHAProxy && (s.Engine != e || s.Version != version) {
			t.Errorf("%s (%s) runs %s, want %s %s", m.ID, m.Role, s, e, version)
		}
		var st runtime.Status
		for _, x := range ag.Members() {
			if x.ID == m.ID {
				st = x
			}
		}
		// Redis and sentinels restart on the new image; an haproxy whose
		// image is the same in both catalog entries keeps running (its
		// clients' connections with it).
		restarted := st.StartedAt.After(since)
		if st.State != runtime.StateRunning || st.Image != images[m.Role] || restarted == (m.Role == api.RoleHAProxy) {
			t.Errorf("%s container: %s, image %s (want %s), started %s (upgrade began %s)", m.ID, st.State, st.Image, images[m.Role],
				st.StartedAt.Format("15:04:05.000"), since.Format("15:04:05.000"))
		}
	}
}

// TestUpgradeStarter: a starter on redis 7.0.15 holding 20,000 keys moves
// to valkey 8.0.1 while a client writes through its URL, with RDB and
// with AOF persistence: every acknowledged write and every key is there
// afterwards, the node runs valkey 8.0.1 (INFO server) from the same data
// dir, the downtime (the writer's longest stall, and the engine's own
// figure in the wait step) is measured.
func TestUpgradeStarter(t *testing.T) {
	c := StartCoordinator(t, "c1", upgStarterCoordIP, CoordinatorOpts{Bootstrap: true})
	ag := StartAgent(t, c, "h1", upgStarterHostIP, AgentOpts{})
	agents := map[string]*Agent{"h1": ag}
	for _, persistence := range []string{api.PersistenceRDB, api.PersistenceAOF} {
		t.Run(persistence, func(t *testing.T) {
			app := "upg-starter-" + persistence
			if res := c.CLI("addons-add", "--app", app, "redis", "redis-starter-256"); res.Code != 0 {
				t.Fatalf("addons-add: %s", res)
			}
			a := WaitForAddonStatus(t, c, app, api.AddonRunning, 90*time.Second)
			if persistence == api.PersistenceAOF {
				settingsChange(t, c, app, "--persistence", "aof")
			}
			opt, err := redis.ParseURL(RedisURL(t, c, app))
			if err != nil {
				t.Fatal(err)
			}
			rc := redis.NewClient(opt)
			defer rc.Close()
			const fill = 20000
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for i := 0; i < fill; i += 1000 {
				pipe := rc.Pipeline()
				for j := i; j < i+1000; j++ {
					pipe.Set(ctx, fmt.Sprintf("fill:%05d", j), j, 0)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					t.Fatalf("fill: %v", err)
				}
			}
			w := startWriter(opt, "ups:")
			w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
			since := time.Now()
			tr := upgradeEngine(t, c, w, app, a.ID, "redis-7.0.15", "valkey-8.0.1")
			w.waitAcksAfter(t, time.Now(), 100, 30*time.Second)
			acks, failed, errs := w.finish()
			lost := missing(t, rc, "ups:", acks)
			n, err := redisctl.ReadNode(ctx, a.Entrypoint, fleetCredential(t, a.ID, agentList(agents)...))
			if err != nil {
				t.Fatal(err)
			}
			full, err := c.Client().Addon(ctx, a.ID)
			if err != nil {
				t.Fatal(err)
			}
			onVersion(t, agents, full, api.EngineValkey, "8.0.1", since)
			checkUpgradeSteps(t, tr.op)
			t.Logf("starter (%s) %s", persistence, tr)
			t.Logf("engine's figure: %s", stepDetail(tr.op, "wait "))
			t.Logf("overall: %d acknowledged, %d failed %v, %d lost; %d keys after (%d filled + writes)", len(acks), failed, errs, len(lost), n.Keys, fill)
			if len(lost) != 0 {
				t.Errorf("%d acknowledged writes lost; want 0", len(lost))
			}
			if n.Keys < int64(fill+len(acks)) {
				t.Errorf("%d keys after the upgrade; want at least %d", n.Keys, fill+len(acks))
			}
			if persistence == api.PersistenceAOF {
				fopt := *opt
				fopt.Username, fopt.Password = redisctl.FleetUser, fleetCredential(t, a.ID, agentList(agents)...)
				fc := redis.NewClient(&fopt)
				got, _ := fc.ConfigGet(ctx, "appendonly").Result()
				fc.Close()
				if got["appendonly"] != "yes" {
					t.Errorf("appendonly %v after the upgrade", got)
				}
			}
			removeAndWait(t, c, ag, app, a.ID)
		})
	}
}

// TestUpgradeRefusals: a downgrade, a skipped minor, valkey -> redis, the
// same version and an unknown one are refused with one line (exit 2),
// naming what is allowed next; nothing changes (engine, status,
// operations, the node's process).
func TestUpgradeRefusals(t *testing.T) {
	c := StartCoordinator(t, "c1", upgRefuseCoordIP, CoordinatorOpts{Bootstrap: true})
	ag := StartAgent(t, c, "h1", upgRefuseHostIP, AgentOpts{})
	agents := map[string]*Agent{"h1": ag}
	if res := c.CLI("addons-add", "--app", "upg-redis", "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	if res := c.CLI("addons-add", "--app", "upg-valkey", "--engine", "valkey", "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	r := WaitForAddonStatus(t, c, "upg-redis", api.AddonRunning, 90*time.Second)
	v := WaitForAddonStatus(t, c, "upg-valkey", api.AddonRunning, 90*time.Second)
	if v.Engine != api.EngineValkey || v.Version != "8.1.1" {
		t.Fatalf("--engine valkey gave %s %s, want the newest valkey", v.Engine, v.Version)
	}
	refuse := func(app string, a api.Addon, to, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		full, err := c.Client().Addon(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		before := pids(t, agents, full)
		opsBefore, err := c.Client().Operations(ctx, app, "")
		if err != nil {
			t.Fatal(err)
		}
		res := c.CLI("addons-upgrade-engine", "--app", app, a.ID, to)
		if res.Code != 2 || !strings.Contains(res.Stderr, want) || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
			t.Fatalf("addons-upgrade-engine %s to %s: %s\nwant exit 2 and one line saying %q", app, to, res, want)
		}
		after, err := c.Client().Addon(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		opsAfter, err := c.Client().Operations(ctx, app, "")
		if err != nil {
			t.Fatal(err)
		}
		if after.Engine != a.Engine || after.Version != a.Version || after.Status != api.AddonRunning || len(opsAfter) != len(opsBefore) || after.Members[0].Engine != "" {
			t.Fatalf("a refused upgrade changed something: %s %s %s, %d -> %d operations", after.Engine, after.Version, after.Status, len(opsBefore), len(opsAfter))
		}
		samePids(t, before, pids(t, agents, after))
		t.Logf("refused (%s-%s -> %s): %s", a.Engine, a.Version, to, strings.TrimSpace(res.Stderr))
	}
	refuse("upg-valkey", v, "valkey-8.0.1", "valkey-8.1.1 → valkey-8.0.1 is a downgrade; downgrades are never allowed")
	refuse("upg-valkey", v, "redis-8.0.2", "cannot upgrade addon "+v.ID+" from valkey-8.1.1 to redis-8.0.2")
	refuse("upg-valkey", v, "redis-7.0.15", "cannot upgrade addon "+v.ID+" from valkey-8.1.1 to redis-7.0.15")
	refuse("upg-redis", r, "valkey-8.1.1", "upgrade to valkey-8.0.1 first")
	refuse("upg-redis", r, "redis-7.0.15", "is already on redis-7.0.15; nothing to upgrade")
	refuse("upg-redis", r, "redis-9.0.0", `unknown engine version "redis-9.0.0"`)
}

// TestUpgradeBusiness: a business addon moves redis 7.0.15 -> valkey
// 8.0.1 -> valkey 8.1.1 while a client writes through its VIP: each
// upgrade 0 failed commands and 0 lost writes, the primary back on its
// host, every member on the target version; the addon healthy after each.
func TestUpgradeBusiness(t *testing.T) {
	f := startBusiness(t, "upg-biz", bizOpts{CoordIP: upgBizCoordIP, HostIPs: upgBizHostIPs, VIPPool: upgBizVIPPool})
	home := f.primary()
	w := startWriter(f.opt, "upb:")
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	from := "redis-7.0.15"
	for _, to := range []string{"valkey-8.0.1", "valkey-8.1.1"} {
		since := time.Now()
		tr := upgradeEngine(t, f.c, w, f.app, f.id, from, to)
		checkUpgradeSteps(t, tr.op)
		t.Logf("business %s", tr)
		for _, p := range []string{"wait ", "switch over to ", "switch back to "} {
			t.Logf("  %s", stepDetail(tr.op, p))
		}
		if tr.failed != 0 {
			t.Errorf("%s -> %s: %d failed commands %v; want 0", from, to, tr.failed, tr.errs)
		}
		e, ver, _ := strings.Cut(to, "-")
		onVersion(t, f.agents, f.mustAddon(), api.Engine(e), ver, since)
		if p := f.primary(); p.ID != home.ID || p.HostID != home.HostID {
			t.Errorf("after %s the primary is %s on %s; want %s on %s (its host before)", to, p.ID, p.HostID, home.ID, home.HostID)
		}
		f.waitHealthy(60 * time.Second)
		w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
		from = to
	}
	acks, failed, errs := w.finish()
	rc := redis.NewClient(f.opt)
	defer rc.Close()
	lost := missing(t, rc, "upb:", acks)
	t.Logf("business redis-7.0.15 -> valkey-8.0.1 -> valkey-8.1.1: %d acknowledged, %d failed %v, %d lost", len(acks), failed, errs, len(lost))
	if failed != 0 || len(lost) != 0 {
		t.Errorf("%d failed commands, %d acknowledged writes lost; want 0 and 0", failed, len(lost))
	}
}

// TestUpgradeLeaderKill: three coordinators; the leader is killed with -9
// while a business upgrade restarts the old primary (its version set, the
// member on its way back). The new leader resumes from the FSM and
// finishes: each step done once (the operation's steps, and one
// "operation step done" per step across the coordinators' logs), the
// switchovers once each, 0 failed commands, 0 lost writes, every member
// on the target, the primary back on its host.
func TestUpgradeLeaderKill(t *testing.T) {
	args := []string{"--entrypoint-cidr", upgKillVIPPool}
	cs := make([]*Coordinator, len(upgKillCoordIPs))
	for i, ip := range upgKillCoordIPs {
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
	f := &bizFleet{t: t, c: leader, app: "upg-kill", agents: map[string]*Agent{}}
	for i, ip := range upgKillHostIPs {
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
	home := f.primary()

	w := startWriter(f.opt, "upk:")
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	failedBefore, errsBefore := w.failures(), w.errClasses()
	since := time.Now()
	res := leader.CLI("--json", "addons-upgrade-engine", "--app", f.app, f.id, "valkey-8.0.1")
	if res.Code != 0 {
		t.Fatalf("addons-upgrade-engine: %s", res)
	}
	var up api.EngineUpgradeResponse
	res.JSON(t, &up)
	follower := without(cs, leader)[0]
	// Kill the leader while the old primary restarts on the new version:
	// its version set (the step before is done), its wait step current.
	waitStep := "wait " + home.ID
	testutil.WaitFor(t, upgradeTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ops, err := follower.Client().Operations(ctx, f.app, "")
		if err != nil {
			return err
		}
		for _, o := range ops {
			if o.ID != up.Operation.ID {
				continue
			}
			if o.State.Finished() {
				t.Fatalf("operation %s %s before the kill: %+v", o.ID, o.State, o.Steps)
			}
			if i := o.CurrentStep(); i < len(o.Steps) && o.Steps[i].Name == waitStep {
				t.Logf("at %q: %q", waitStep, o.Steps[i].Detail)
				return nil
			}
			return fmt.Errorf("operation at step %d (%s)", o.CurrentStep(), o.Steps[min(o.CurrentStep(), len(o.Steps)-1)].Name)
		}
		return fmt.Errorf("operation %s not listed", up.Operation.ID)
	})
	leader.Kill()
	killedAt := time.Now()
	next := WaitForLeader(t, 20*time.Second, without(cs, leader)...)
	t.Logf("leader %s killed; %s leads after %s", leader.ID, next.ID, time.Since(killedAt).Round(time.Millisecond))
	f.c = next
	op := waitOperationDone(t, next, f.app, up.Operation.ID, upgradeTimeout)
	end := time.Now()
	WaitForAddonStatus(t, next, f.app, api.AddonRunning, 10*time.Second)
	tr := measured(w, "redis-7.0.15", "valkey-8.0.1", op, since, end, failedBefore, errsBefore)
	checkUpgradeSteps(t, op)
	if s := op.Steps[stepIndexOf(op, waitStep)]; s.FinishedAt.Before(killedAt) {
		t.Errorf("%q finished %s, before the kill at %s", waitStep, s.FinishedAt.Format("15:04:05.000"), killedAt.Format("15:04:05.000"))
	}
	// Each step done once, whichever leader did it.
	done := map[string]int{}
	stepLine := regexp.MustCompile(`"msg":"operation step done".*"op":"` + up.Operation.ID + `".*"step":"([a-z0-9 -]+)"`)
	for _, c := range cs {
		b, err := os.ReadFile(filepath.Clean(c.LogPath))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if mm := stepLine.FindStringSubmatch(l); mm != nil {
				done[mm[1]]++
				done[mm[1]+" by "+c.ID]++
			}
		}
	}
	t.Logf("steps done, from the coordinators' logs: %v", done)
	for _, s := range op.Steps {
		if done[s.Name] != 1 {
			t.Errorf("step %q logged done %d times; want once", s.Name, done[s.Name])
		}
	}
	onVersion(t, f.agents, f.mustAddon(), api.EngineValkey, "8.0.1", since)
	if p := f.primary(); p.ID != home.ID {
		t.Errorf("the primary is %s on %s; want %s on %s", p.ID, p.HostID, home.ID, home.HostID)
	}
	w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
	acks, failed, errs := w.finish()
	rc := redis.NewClient(f.opt)
	defer rc.Close()
	lost := missing(t, rc, "upk:", acks)
	t.Logf("business upgrade across a leader kill: %s; overall %d acknowledged, %d failed %v, %d lost", tr, len(acks), failed, errs, len(lost))
	if failed != 0 || len(lost) != 0 {
		t.Errorf("%d failed commands, %d acknowledged writes lost; want 0 and 0", failed, len(lost))
	}
	f.waitHealthy(60 * time.Second)
}

func stepIndexOf(op api.Operation, name string) int {
	for i, s := range op.Steps {
		if s.Name == name {
			return i
		}
	}
	return 0
}
