package e2e

// The seeded fault suite (issue 15 part 1): a real fleet — 3 coordinators,
// 5 agents on loopback, containerd — with a business and a starter addon,
// one client per URL writing sequence-numbered keys (every acknowledged
// write recorded), a nemesis drawing faults from a seeded random schedule
// (the same seed gives the same faults, targets and pauses, in the same
// order), and a checker reporting per fault kind: acknowledged writes lost,
// windows with two primaries accepting writes, the longest unavailability
// of each URL, and at the end the operations left unfinished and the
// members left unhealthy.
//
// TestChaosSmoke (here, in `make test`) runs a fixed seed with each of the
// kill and freeze faults, a plan change and a drain once. `make chaos`
// runs TestChaos (chaos_full_test.go, build tag chaos) for minutes, with
// partitions and engine upgrades too, and writes its report under
// docs/chaos/.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Addresses of the chaos fleet: a /24 of its own (the packages' unit
// tests start real redis on 127.0.0.x addresses, outside the e2e lock).
var (
	chaosCoordIPs = []string{"127.0.40.1", "127.0.40.2", "127.0.40.3"}
	chaosHostIPs  = []string{"127.0.40.4", "127.0.40.5", "127.0.40.6", "127.0.40.7", "127.0.40.8"}
)

const (
	chaosVIPPool = "127.0.41.0/24"
	chaosBizApp  = "chaos-biz"
	chaosStarter = "chaos-starter"
	// chaosRecover bounds the wait for the fleet to be whole again after
	// one fault.
	chaosRecover = 90 * time.Second
)

// Fault kinds.
const (
	fkKillPrimary   = "kill -9 primary redis"
	fkKillReplica   = "kill -9 replica redis"
	fkKillSentinel  = "kill -9 sentinel"
	fkKillHAProxy   = "kill -9 entrypoint haproxy"
	fkKillStarter   = "kill -9 starter redis"
	fkKillAgent     = "kill -9 agent"
	fkKillLeader    = "kill -9 coordinator leader"
	fkStopPrimary   = "SIGSTOP primary redis 3 s"
	fkStopSentinel  = "SIGSTOP sentinel 3 s"
	fkStopHAProxy   = "SIGSTOP entrypoint haproxy 3 s"
	fkPlanChange    = "plan change (business)"
	fkDrain         = "drain + undrain a host"
	fkUpgrade       = "engine upgrade (business)"
	fkPartitionPrim = "partition primary's host 35 s"
	fkPartitionRepl = "partition replica's host 8 s"
)

// chaosKills are the faults under which no acknowledged write may be lost.
var chaosKills = []string{fkKillPrimary, fkKillReplica, fkKillSentinel, fkKillHAProxy, fkKillStarter, fkKillAgent, fkKillLeader}

// chaosOpts is one run.
type chaosOpts struct {
	Seed int64
	// Kinds are drawn from (each at least once when Faults ≥ len(Kinds):
	// the schedule is rounds of a seeded shuffle).
	Kinds    []string
	Duration time.Duration // stop drawing faults after it (0: one round)
	// ReportDir gets chaos-<seed>.json and .md when not empty.
	ReportDir string
}

// chaosFleet is the fleet under test.
type chaosFleet struct {
	t       *testing.T
	cs      []*Coordinator
	agents  map[string]*Agent
	hostIDs []string
	biz     *bizFleet // its c is re-pointed at a live coordinator
	starter struct {
		id  string
		opt *redis.Options
	}
	rng *rand.Rand
	net *partitioner
}

// live is a running coordinator (the leader when one is known).
func (f *chaosFleet) live() *Coordinator {
	if l, err := findLeader(f.cs); err == nil {
		return l
	}
	for _, c := range f.cs {
		if c.Running() {
			return c
		}
	}
	f.t.Fatalf("no coordinator running")
	return nil
}

func startChaosFleet(t *testing.T, seed int64) *chaosFleet {
	t.Helper()
	f := &chaosFleet{t: t, agents: map[string]*Agent{}, rng: rand.New(rand.NewSource(seed)), net: newPartitioner(t)}
	args := []string{"--heal-after", healAfter.String(), "--entrypoint-cidr", chaosVIPPool}
	f.cs = make([]*Coordinator, 3)
	f.cs[0] = StartCoordinator(t, "c1", chaosCoordIPs[0], CoordinatorOpts{Bootstrap: true, ExtraArgs: args})
	WaitForLeader(t, startTimeout, f.cs[0])
	for i := 1; i < 3; i++ {
		f.cs[i] = StartCoordinator(t, fmt.Sprintf("c%d", i+1), chaosCoordIPs[i], CoordinatorOpts{ExtraArgs: args})
		if res := f.cs[i].Join(f.cs[0]); res.Code != 0 {
			t.Fatalf("join c%d: %s", i+1, res)
		}
	}
	WaitForVoters(t, startTimeout, 3, f.cs...)
	httpAddrs := make([]string, len(f.cs))
	for i, c := range f.cs {
		httpAddrs[i] = c.HTTPAddr
	}
	for i, ip := range chaosHostIPs {
		id := fmt.Sprintf("h%d", i+1)
		f.hostIDs = append(f.hostIDs, id)
		f.agents[id] = StartAgent(t, f.cs[0], id, ip, AgentOpts{Heartbeat: time.Second}, httpAddrs...)
	}
	c := f.live()
	for _, add := range [][]string{{"addons-add", "--app", chaosBizApp, "redis", "redis-business-256"}, {"addons-add", "--app", chaosStarter, "redis", "redis-starter-256"}} {
		if res := c.CLI(add...); res.Code != 0 {
			t.Fatalf("%s: %s", strings.Join(add, " "), res)
		}
	}
	WaitForAddonStatus(t, c, chaosBizApp, api.AddonRunning, 90*time.Second)
	WaitForAddonStatus(t, c, chaosStarter, api.AddonRunning, 90*time.Second)
	// AOF (every write synced): a starter whose redis is killed restarts
	// on its AOF; in RDB mode it would come back at its last snapshot and
	// a kill would lose writes by design, not by fault.
	for _, app := range []string{chaosBizApp, chaosStarter} {
		if res := c.CLI("addons-settings", "--app", app, "--persistence", "aof"); res.Code != 0 {
			t.Fatalf("addons-settings --app %s --persistence aof: %s", app, res)
		}
	}
	testutil.WaitFor(t, 60*time.Second, f.opsFinished)
	biz := WaitForAddonStatus(t, c, chaosBizApp, api.AddonRunning, 30*time.Second)
	st := WaitForAddonStatus(t, c, chaosStarter, api.AddonRunning, 30*time.Second)
	f.biz = &bizFleet{t: t, c: c, agents: f.agents, app: chaosBizApp, id: biz.ID, url: RedisURL(t, c, chaosBizApp)}
	opt, err := redis.ParseURL(f.biz.url)
	if err != nil {
		t.Fatal(err)
	}
	f.biz.opt = opt
	f.starter.id = st.ID
	if f.starter.opt, err = redis.ParseURL(RedisURL(t, c, chaosStarter)); err != nil {
		t.Fatal(err)
	}
	f.biz.waitHealthy(60 * time.Second)
	return f
}

// whole returns nil once both addons are whole: every coordinator runs
// with a leader, every agent runs and its host is ready, the business
// addon is fully redundant (bizFleet.healthy) and the starter answers.
func (f *chaosFleet) whole() error {
	for _, c := range f.cs {
		if !c.Running() {
			return fmt.Errorf("coordinator %s not running", c.ID)
		}
	}
	l, err := findLeader(f.cs)
	if err != nil {
		return err
	}
	f.biz.c = l
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hosts, err := l.Client().Hosts(ctx)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if h.State != api.HostReady {
			return fmt.Errorf("host %s is %s", h.ID, h.State)
		}
	}
	if err := f.biz.healthy(); err != nil {
		return fmt.Errorf("business: %w", err)
	}
	sc := redis.NewClient(f.starter.opt)
	defer sc.Close()
	if err := sc.Set(ctx, "chaos:whole", "1", 0).Err(); err != nil {
		return fmt.Errorf("starter: %w", err)
	}
	a, err := l.Client().Addon(ctx, f.starter.id)
	if err != nil {
		return err
	}
	for _, m := range a.Members {
		if m.State != "running" {
			return fmt.Errorf("starter member %s is %q", m.ID, m.State)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// The two-primary watch: every 100 ms each redis member of the business
// addon that answers role:master gets a probe SET (as the fleet, 200 ms);
// two of them accepting it at once is a two-primary sample.

type twoPrimaryWatch struct {
	f    *chaosFleet
	pw   string
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	addr []string
	// samples: times at which two members accepted writes.
	samples []time.Time
}

func (f *chaosFleet) watchTwoPrimaries() *twoPrimaryWatch {
	w := &twoPrimaryWatch{f: f, pw: f.biz.fleet(), stop: make(chan struct{}), done: make(chan struct{})}
	w.refresh()
	go w.run()
	return w
}

// refresh re-reads the business addon's redis members (main goroutine).
func (w *twoPrimaryWatch) refresh() {
	a, err := w.f.biz.addon()
	if err != nil {
		return
	}
	var addrs []string
	for _, m := range membersOf(a, api.RoleRedis) {
		addrs = append(addrs, w.f.biz.memberAddr(m))
	}
	w.mu.Lock()
	w.addr = addrs
	w.mu.Unlock()
}

func (w *twoPrimaryWatch) run() {
	defer close(w.done)
	clients := map[string]*redis.Client{}
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-tk.C:
		}
		w.mu.Lock()
		addrs := append([]string(nil), w.addr...)
		w.mu.Unlock()
		accepting := 0
		for _, addr := range addrs {
			c := clients[addr]
			if c == nil {
				c = redis.NewClient(&redis.Options{Addr: addr, Username: redisctl.FleetUser, Password: w.pw, DialTimeout: 200 * time.Millisecond,
					ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond, MaxRetries: -1, PoolSize: 1, DisableIdentity: true})
				clients[addr] = c
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			r, err := redisctl.ClientReplication(ctx, c)
			if err == nil && r.IsMaster() && c.Set(ctx, "chaos:two-primary-probe", time.Now().UnixNano(), 0).Err() == nil {
				accepting++
			}
			cancel()
		}
		if accepting >= 2 {
			w.mu.Lock()
			w.samples = append(w.samples, time.Now())
			w.mu.Unlock()
		}
	}
}

func (w *twoPrimaryWatch) finish() []time.Time {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.samples...)
}

// ---------------------------------------------------------------------------
// Faults.

// faultRun is one fault as the nemesis ran it.
type faultRun struct {
	Kind      string    `json:"kind"`
	Target    string    `json:"target"`
	Start     time.Time `json:"start"`
	Recovered time.Time `json:"recovered"` // the fleet whole again (zero: never)
	Err       string    `json:"error,omitempty"`
}

// memberOf picks the business member of role (primary/replica for redis).
func (f *chaosFleet) bizMember(role api.Role, redisRole string, active bool) api.Member {
	a := f.biz.mustAddon()
	for _, m := range membersOf(a, role) {
		if (redisRole == "" || m.RedisRole == redisRole) && (!active || m.Active) {
			return m
		}
	}
	f.t.Fatalf("business addon: no %s member (redis role %q, active %v): %+v", role, redisRole, active, a.Members)
	return api.Member{}
}

func (f *chaosFleet) signal(m api.Member, sig syscall.Signal) error {
	pid := f.biz.pidOf(m.HostID, m.ID)
	if pid == 0 {
		return fmt.Errorf("member %s not running", m.ID)
	}
	return syscall.Kill(pid, sig)
}

// inject runs one fault of kind and returns its target. It returns once
// the fault is in place (and, for freezes, partitions, plan changes and
// drains, once the fault is over: the wait for recovery follows).
func (f *chaosFleet) inject(kind string) (string, error) {
	f.biz.c = f.live()
	pick := func(role api.Role) api.Member {
		ms := membersOf(f.biz.mustAddon(), role)
		return ms[f.rng.Intn(len(ms))]
	}
	freeze := func(m api.Member) (string, error) {
		pid := f.biz.pidOf(m.HostID, m.ID)
		if pid == 0 {
			return m.ID, fmt.Errorf("member %s not running", m.ID)
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return m.ID, err
		}
		time.Sleep(3 * time.Second) // the fault's length, not a synchronisation
		// The agent may have killed the frozen process meanwhile (its
		// liveness check): then there is nothing to resume.
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			return m.ID, err
		}
		return m.ID, nil
	}
	switch kind {
	case fkKillPrimary:
		m := f.bizMember(api.RoleRedis, "primary", false)
		return m.ID, f.signal(m, syscall.SIGKILL)
	case fkKillReplica:
		m := f.bizMember(api.RoleRedis, "replica", false)
		return m.ID, f.signal(m, syscall.SIGKILL)
	case fkKillSentinel:
		m := pick(api.RoleSentinel)
		return m.ID, f.signal(m, syscall.SIGKILL)
	case fkKillHAProxy:
		m := f.bizMember(api.RoleHAProxy, "", true)
		return m.ID, f.signal(m, syscall.SIGKILL)
	case fkStopPrimary:
		return freeze(f.bizMember(api.RoleRedis, "primary", false))
	case fkStopSentinel:
		return freeze(pick(api.RoleSentinel))
	case fkStopHAProxy:
		return freeze(f.bizMember(api.RoleHAProxy, "", true))
	case fkKillStarter:
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := f.biz.c.Client().Addon(ctx, f.starter.id)
		if err != nil {
			return "", err
		}
		for _, m := range a.Members {
			if m.Role == api.RoleRedis {
				pid := f.biz.pidOf(m.HostID, m.ID)
				if pid == 0 {
					return m.ID, fmt.Errorf("starter %s not running", m.ID)
				}
				return m.ID, syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		return "", fmt.Errorf("starter has no redis member")
	case fkKillAgent:
		id := f.hostIDs[f.rng.Intn(len(f.hostIDs))]
		f.agents[id].Kill()
		time.Sleep(2 * time.Second) // the agent stays dead 2 s
		f.agents[id].Restart()
		return id, nil
	case fkKillLeader:
		l := f.live()
		l.Kill()
		time.Sleep(3 * time.Second) // dead 3 s: a new leader is elected meanwhile
		l.Restart()
		return l.ID, nil
	case fkPlanChange:
		a := f.biz.mustAddon()
		to := "redis-business-1024"
		if a.Plan == to {
			to = "redis-business-256"
		}
		return a.Plan + " -> " + to, f.runOp(f.biz.c.CLI("--json", "addons-upgrade", "--app", chaosBizApp, f.biz.id, to))
	case fkUpgrade:
		a := f.biz.mustAddon()
		to := map[string]string{"redis-7.0.15": "valkey-8.0.1", "valkey-8.0.1": "valkey-8.1.1"}[string(a.Engine)+"-"+a.Version]
		if to == "" {
			return string(a.Engine) + "-" + a.Version + " (no newer engine)", nil
		}
		return string(a.Engine) + "-" + a.Version + " -> " + to, f.runOp(f.biz.c.CLI("--json", "addons-upgrade-engine", "--app", chaosBizApp, f.biz.id, to))
	case fkDrain:
		h := f.hostIDs[f.rng.Intn(len(f.hostIDs))]
		if res := f.biz.c.CLI("hosts-drain", h); res.Code != 0 {
			return h, fmt.Errorf("hosts-drain: %s", res)
		}
		var err error
		testutil.WaitFor(f.t, chaosRecover, func() error {
			err = f.opsFinished()
			return err
		})
		if res := f.live().CLI("hosts-undrain", h); res.Code != 0 {
			return h, fmt.Errorf("hosts-undrain: %s", res)
		}
		return h, nil
	case fkPartitionPrim, fkPartitionRepl:
		role := "primary"
		if kind == fkPartitionRepl {
			role = "replica"
		}
		m := f.bizMember(api.RoleRedis, role, false)
		ip := f.biz.hostIP(m.HostID)
		if err := f.partition(ip); err != nil {
			return m.HostID, err
		}
		// The partition's length: past Sentinel's down-after (30 s) for
		// the primary's host, so the other side fails it over while it
		// is fenced; 8 s for the replica's (the lag bound).
		d := 8 * time.Second
		if kind == fkPartitionPrim {
			d = render.SentinelDownAfter + 5*time.Second
		}
		time.Sleep(d)
		f.net.heal()
		return m.HostID + " (" + ip + ", " + m.ID + ")", nil
	}
	return "", fmt.Errorf("unknown fault kind %q", kind)
}

// runOp checks an operation was accepted and waits until it is finished.
func (f *chaosFleet) runOp(res CLIResult) error {
	if res.Code != 0 {
		return fmt.Errorf("%s", res)
	}
	var err error
	deadline := time.Now().Add(chaosRecover)
	for time.Now().Before(deadline) {
		if err = f.opsFinished(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond) // polling
	}
	return err
}

// opsFinished returns nil when every operation of both addons is finished.
func (f *chaosFleet) opsFinished() error {
	c, err := findLeader(f.cs)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, app := range []string{chaosBizApp, chaosStarter} {
		ops, err := c.Client().Operations(ctx, app, "")
		if err != nil {
			return err
		}
		for _, op := range ops {
			if !op.State.Finished() {
				return fmt.Errorf("operation %s (%s) of %s is %s", op.ID, op.Kind, app, op.State)
			}
		}
	}
	return nil
}

// unfinished counts the operations not finished, and the failed ones.
func (f *chaosFleet) unfinished() (open, failed int, detail []string) {
	c := f.live()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, app := range []string{chaosBizApp, chaosStarter} {
		ops, err := c.Client().Operations(ctx, app, "")
		if err != nil {
			return -1, -1, []string{err.Error()}
		}
		for _, op := range ops {
			switch {
			case !op.State.Finished():
				open++
				detail = append(detail, fmt.Sprintf("%s %s %s", op.ID, op.Kind, op.State))
			case op.State == api.OpFailed:
				failed++
				detail = append(detail, fmt.Sprintf("%s %s failed: %s", op.ID, op.Kind, op.Error))
			}
		}
	}
	return open, failed, detail
}

// unhealthy counts the members of both addons not reported running.
func (f *chaosFleet) unhealthy() (n int, detail []string) {
	c := f.live()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, id := range []string{f.biz.id, f.starter.id} {
		a, err := c.Client().Addon(ctx, id)
		if err != nil {
			return -1, []string{err.Error()}
		}
		for _, m := range a.Members {
			if m.State != "running" {
				n++
				detail = append(detail, fmt.Sprintf("%s is %q", m.ID, m.State))
			}
		}
	}
	return n, detail
}

// ---------------------------------------------------------------------------
// Partitions: iptables DROP rules on lo between loopback addresses, both
// ways, each tagged with a comment unique to the test; every tagged rule
// is removed by heal, and at the end of the test (also on failure).

type partitioner struct {
	t   testing.TB
	tag string
}

func newPartitioner(t testing.TB) *partitioner {
	p := &partitioner{t: t, tag: "cacheplane-chaos-" + randomHex(4)}
	t.Cleanup(p.heal)
	return p
}

// cut drops every packet between a and each of others (addresses or
// loopback CIDRs), both ways.
func (p *partitioner) cut(a string, others ...string) error {
	for _, o := range append([]string{a}, others...) {
		if !strings.HasPrefix(o, "127.") {
			return fmt.Errorf("partition: %s is not a loopback address", o)
		}
	}
	for _, o := range others {
		for _, dir := range [][2]string{{a, o}, {o, a}} {
			if err := iptables("-I", "INPUT", "-i", "lo", "-s", dir[0], "-d", dir[1], "-j", "DROP", "-m", "comment", "--comment", p.tag); err != nil {
				return err
			}
		}
	}
	return nil
}

// heal deletes every rule tagged with p.tag.
func (p *partitioner) heal() {
	out, err := exec.Command("iptables", "-S", "INPUT").Output()
	if err != nil {
		p.t.Logf("iptables -S: %v", err)
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.Contains(l, p.tag) || !strings.HasPrefix(l, "-A INPUT ") {
			continue
		}
		args := append([]string{"-D", "INPUT"}, splitRule(strings.TrimPrefix(l, "-A INPUT "))...)
		if err := iptables(args...); err != nil {
			p.t.Logf("remove partition rule %q: %v", l, err)
		}
	}
}

// partition cuts host address ip from every other chaos address
// (coordinators, hosts, the VIP pool).
func (f *chaosFleet) partition(ip string) error {
	var others []string
	for _, o := range append(append([]string(nil), chaosHostIPs...), chaosCoordIPs...) {
		if o != ip {
			others = append(others, o)
		}
	}
	return f.net.cut(ip, append(others, chaosVIPPool)...)
}

// splitRule splits an iptables -S line into arguments (the comment is
// the only quoted word and holds no spaces).
func splitRule(s string) []string {
	fs := strings.Fields(s)
	for i, w := range fs {
		fs[i] = strings.Trim(w, `"`)
	}
	return fs
}

func iptables(args ...string) error {
	out, err := exec.Command("iptables", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ---------------------------------------------------------------------------
// The run and the checker.

// kindReport is the checker's figure for one fault kind.
type kindReport struct {
	Kind       string `json:"kind"`
	Runs       int    `json:"runs"`
	Lost       int    `json:"acknowledged_writes_lost"`
	TwoPrimary int    `json:"two_primary_windows"`
	// Longest time without an acknowledged write through each URL, from
	// the fault to the fleet whole again, ms.
	BizUnavailMS     int64 `json:"business_longest_unavailable_ms"`
	StarterUnavailMS int64 `json:"starter_longest_unavailable_ms"`
	// LongestRecoveryMS: fault to the fleet whole again.
	LongestRecoveryMS int64 `json:"longest_recovery_ms"`
	NotRecovered      int   `json:"not_recovered"`
	Errors            int   `json:"errors"`
}

// chaosReport is a whole run.
type chaosReport struct {
	Seed          int64        `json:"seed"`
	Started       time.Time    `json:"started"`
	Took          string       `json:"took"`
	Commit        string       `json:"commit,omitempty"`
	Faults        []faultRun   `json:"faults"`
	Kinds         []kindReport `json:"kinds"`
	BizAcked      int          `json:"business_writes_acknowledged"`
	BizFailed     int          `json:"business_writes_failed"`
	StarterAcked  int          `json:"starter_writes_acknowledged"`
	StarterFailed int          `json:"starter_writes_failed"`
	LostOutside   int          `json:"acknowledged_writes_lost_outside_faults"`
	Unfinished    int          `json:"operations_left_unfinished"`
	FailedOps     int          `json:"operations_failed"`
	OpsDetail     []string     `json:"operations_detail,omitempty"`
	Unhealthy     int          `json:"members_left_unhealthy"`
	UnhealthyList []string     `json:"members_unhealthy_detail,omitempty"`
}

func (r *chaosReport) kind(k string) *kindReport {
	for i := range r.Kinds {
		if r.Kinds[i].Kind == k {
			return &r.Kinds[i]
		}
	}
	r.Kinds = append(r.Kinds, kindReport{Kind: k})
	return &r.Kinds[len(r.Kinds)-1]
}

// runChaos runs the nemesis on a fresh fleet and returns the report.
func runChaos(t *testing.T, o chaosOpts) chaosReport {
	t.Logf("chaos seed %d (rerun with CHAOS_SEED=%d)", o.Seed, o.Seed)
	f := startChaosFleet(t, o.Seed)
	rep := chaosReport{Seed: o.Seed, Started: time.Now().UTC()}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		rep.Commit = strings.TrimSpace(string(out))
	}
	bw := startWriter(f.biz.opt, "chaos:biz:")
	sw := startWriter(f.starter.opt, "chaos:starter:")
	tp := f.watchTwoPrimaries()
	bw.waitAcksAfter(t, time.Now(), 200, 30*time.Second)
	sw.waitAcksAfter(t, time.Now(), 200, 30*time.Second)

	// The schedule: rounds of a seeded shuffle of the kinds, a seeded
	// pause of 0.5-2.5 s before each fault.
	begin := time.Now()
	for round := 0; round == 0 || (o.Duration > 0 && time.Since(begin) < o.Duration); round++ {
		order := append([]string(nil), o.Kinds...)
		f.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, kind := range order {
			if o.Duration > 0 && round > 0 && time.Since(begin) >= o.Duration {
				break
			}
			time.Sleep(time.Duration(500+f.rng.Intn(2000)) * time.Millisecond) // the schedule's pause
			fr := faultRun{Kind: kind, Start: time.Now()}
			target, err := f.inject(kind)
			fr.Target = target
			if err != nil {
				fr.Err = err.Error()
			}
			tp.refresh()
			deadline := time.Now().Add(chaosRecover)
			var werr error
			for time.Now().Before(deadline) {
				if werr = f.whole(); werr == nil {
					fr.Recovered = time.Now()
					break
				}
				time.Sleep(200 * time.Millisecond) // polling
			}
			tp.refresh()
			t.Logf("fault %-32s target %-28s recovered after %s %s%s", kind, target, since(fr), errText(fr.Err), errText(errString(werr, fr)))
			rep.Faults = append(rep.Faults, fr)
		}
	}
	time.Sleep(time.Second) // a last second of writes after the last recovery
	backs, bfailed, _ := bw.finish()
	sacks, sfailed, _ := sw.finish()
	samples := tp.finish()
	rep.Took = time.Since(begin).Round(time.Second).String()
	rep.BizAcked, rep.BizFailed, rep.StarterAcked, rep.StarterFailed = len(backs), bfailed, len(sacks), sfailed

	// The end state: wait for the operations to finish and the members
	// to be healthy (bounded), then count what is left.
	deadline := time.Now().Add(chaosRecover)
	for time.Now().Before(deadline) {
		if f.opsFinished() == nil && f.whole() == nil {
			break
		}
		time.Sleep(500 * time.Millisecond) // polling
	}
	rep.Unfinished, rep.FailedOps, rep.OpsDetail = f.unfinished()
	rep.Unhealthy, rep.UnhealthyList = f.unhealthy()

	// Lost writes, attributed to the fault whose window holds their ack.
	f.biz.c = f.live()
	bc := redis.NewClient(f.biz.opt)
	defer bc.Close()
	sc := redis.NewClient(f.starter.opt)
	defer sc.Close()
	blost := missing(t, bc, "chaos:biz:", backs)
	slost := missing(t, sc, "chaos:starter:", sacks)
	ackAt := func(acks []ack) map[int]time.Time {
		m := make(map[int]time.Time, len(acks))
		for _, a := range acks {
			m[a.seq] = a.at
		}
		return m
	}
	battrib, sattrib := ackAt(backs), ackAt(sacks)
	faultAt := func(at time.Time) int {
		for i := len(rep.Faults) - 1; i >= 0; i-- {
			fr := rep.Faults[i]
			end := fr.Recovered
			if end.IsZero() {
				end = fr.Start.Add(chaosRecover)
			}
			// A write acknowledged just before the fault may be lost by it.
			if at.After(fr.Start.Add(-2*time.Second)) && at.Before(end) {
				return i
			}
		}
		return -1
	}
	for _, seqs := range []struct {
		lost []int
		at   map[int]time.Time
	}{{blost, battrib}, {slost, sattrib}} {
		for _, s := range seqs.lost {
			if i := faultAt(seqs.at[s]); i >= 0 {
				rep.kind(rep.Faults[i].Kind).Lost++
			} else {
				rep.LostOutside++
			}
		}
	}
	// Two-primary windows: runs of samples less than 300 ms apart.
	for i, s := range samples {
		if i > 0 && s.Sub(samples[i-1]) < 300*time.Millisecond {
			continue
		}
		if j := faultAt(s); j >= 0 {
			rep.kind(rep.Faults[j].Kind).TwoPrimary++
		} else {
			rep.kind("(no fault)").TwoPrimary++
		}
	}
	for _, fr := range rep.Faults {
		k := rep.kind(fr.Kind)
		k.Runs++
		end := fr.Recovered
		if end.IsZero() {
			k.NotRecovered++
			end = fr.Start.Add(chaosRecover)
		} else {
			k.LongestRecoveryMS = max(k.LongestRecoveryMS, end.Sub(fr.Start).Milliseconds())
		}
		if fr.Err != "" {
			k.Errors++
		}
		k.BizUnavailMS = max(k.BizUnavailMS, gapWithin(backs, fr.Start, end).Milliseconds())
		k.StarterUnavailMS = max(k.StarterUnavailMS, gapWithin(sacks, fr.Start, end).Milliseconds())
	}
	sort.Slice(rep.Kinds, func(i, j int) bool { return rep.Kinds[i].Kind < rep.Kinds[j].Kind })
	t.Logf("chaos report:\n%s", rep.markdown())
	if o.ReportDir != "" {
		rep.write(t, o.ReportDir)
	}
	return rep
}

func since(fr faultRun) string {
	if fr.Recovered.IsZero() {
		return "never"
	}
	return fr.Recovered.Sub(fr.Start).Round(time.Millisecond).String()
}

func errText(s string) string {
	if s == "" {
		return ""
	}
	return " [" + s + "]"
}

func errString(err error, fr faultRun) string {
	if err == nil || !fr.Recovered.IsZero() {
		return ""
	}
	return "not whole: " + err.Error()
}

// markdown is the report as a Markdown table.
func (r chaosReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Seed %d, %d faults in %s (commit %s, started %s). Business URL: %d writes acknowledged, %d failed; starter URL: %d acknowledged, %d failed.\n\n",
		r.Seed, len(r.Faults), r.Took, r.Commit, r.Started.Format(time.RFC3339), r.BizAcked, r.BizFailed, r.StarterAcked, r.StarterFailed)
	b.WriteString("| fault | runs | acknowledged writes lost | two-primary windows | longest unavailability, business URL | longest unavailability, starter URL | longest recovery | not recovered | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, k := range r.Kinds {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %d | %d |\n", k.Kind, k.Runs, k.Lost, k.TwoPrimary,
			chaosSeconds(k.BizUnavailMS), chaosSeconds(k.StarterUnavailMS), chaosSeconds(k.LongestRecoveryMS), k.NotRecovered, k.Errors)
	}
	fmt.Fprintf(&b, "\nAt the end: %d operations left unfinished, %d failed; %d members left unhealthy; %d acknowledged writes lost outside any fault's window.\n",
		r.Unfinished, r.FailedOps, r.Unhealthy, r.LostOutside)
	for _, d := range append(append([]string(nil), r.OpsDetail...), r.UnhealthyList...) {
		fmt.Fprintf(&b, "- %s\n", d)
	}
	return b.String()
}

func chaosSeconds(v int64) string { return strconv.FormatFloat(float64(v)/1000, 'f', 2, 64) + " s" }

// write stores chaos-<seed>.json and chaos-<seed>.md in dir.
func (r chaosReport) write(t *testing.T, dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("report dir: %v", err)
		return
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	base := filepath.Join(dir, "chaos-"+strconv.FormatInt(r.Seed, 10))
	md := "# Chaos run, seed " + strconv.FormatInt(r.Seed, 10) + "\n\n" +
		"`CHAOS_SEED=" + strconv.FormatInt(r.Seed, 10) + " make chaos` reruns the same schedule (e2e/chaos_test.go).\n\n" + r.markdown()
	for p, data := range map[string][]byte{base + ".json": append(js, '\n'), base + ".md": []byte(md)} {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Errorf("report: %v", err)
		}
	}
	t.Logf("chaos report written to %s.{json,md}", base)
}

// chaosSmokeSeed is the smoke run's fixed seed.
const chaosSmokeSeed = 15

// TestChaosSmoke is the short, fixed-seed run inside `make test`: each
// kill fault once, a sentinel freeze, a plan change, in the seed's order.
// 0 acknowledged writes lost under the kills, 0 operations left
// unfinished, 0 two-primary windows.
func TestChaosSmoke(t *testing.T) {
	kinds := append(append([]string(nil), chaosKills...), fkStopSentinel, fkPlanChange)
	rep := runChaos(t, chaosOpts{Seed: chaosSmokeSeed, Kinds: kinds})
	checkChaos(t, rep)
}

// checkChaos asserts the figures on a report.
func checkChaos(t *testing.T, rep chaosReport) {
	t.Helper()
	for _, k := range rep.Kinds {
		if k.Lost > 0 && contains(chaosKills, k.Kind) {
			t.Errorf("%s: %d acknowledged writes lost, want 0", k.Kind, k.Lost)
		}
		if k.TwoPrimary > 0 {
			t.Errorf("%s: %d windows with two primaries accepting writes, want 0", k.Kind, k.TwoPrimary)
		}
		if k.NotRecovered > 0 || k.Errors > 0 {
			t.Errorf("%s: %d runs not recovered within %s, %d errors", k.Kind, k.NotRecovered, chaosRecover, k.Errors)
		}
	}
	if rep.LostOutside > 0 {
		t.Errorf("%d acknowledged writes lost outside any fault", rep.LostOutside)
	}
	if rep.Unfinished != 0 {
		t.Errorf("%d operations left unfinished: %v", rep.Unfinished, rep.OpsDetail)
	}
	if rep.Unhealthy != 0 {
		t.Errorf("%d members left unhealthy: %v", rep.Unhealthy, rep.UnhealthyList)
	}
}
