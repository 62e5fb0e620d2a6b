package e2e

// Business plans end to end: 1 coordinator, 4 agents, a redis-business
// addon reached through its VIP entrypoint, and a go-redis client writing
// sequence-numbered keys through the URL while members, hosts and the
// entrypoint holder are killed or drained.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Addresses of the business fleet: coordinator, four hosts and the VIP pool.
const (
	bizCoordIP = "127.0.0.80"
	bizVIPPool = "127.0.1.0/24"
)

var bizHostIPs = []string{"127.0.0.81", "127.0.0.82", "127.0.0.83", "127.0.0.84"}

// bizFleet is one coordinator, four agents and one business addon.
type bizFleet struct {
	t      testing.TB
	c      *Coordinator
	agents map[string]*Agent // by host id
	app    string
	id     string // addon id
	url    string
	opt    *redis.Options
}

// bizOpts tunes startBusiness.
type bizOpts struct {
	// AgentArgs are extra flags of every agent.
	AgentArgs []string
	// CoordArgs are extra coordinator flags.
	CoordArgs []string
	// CoordIP, HostIPs and VIPPool replace the default addresses (a
	// benchmark uses its own, so it never meets a test's leftovers).
	CoordIP string
	HostIPs []string
	VIPPool string
	// Plan is the addon's plan (default redis-business-256); a starter is
	// not waited healthy (healthy checks a business topology).
	Plan string
	// PublicIPs, when set, are the hosts' public addresses (one per host,
	// --public-address).
	PublicIPs []string
	// MemberTLS adds the addon with --member-tls; the test's own clients
	// of its members and sentinels (direct, sentinelMaster…) then speak
	// TLS with the CA from addons-ca (membertls_test.go).
	MemberTLS bool
}

// startBusiness starts the fleet and provisions a redis-business-256 addon
// for app, waiting until it runs, its replica is in sync and its sentinels
// agree on the primary.
func startBusiness(t testing.TB, app string, o bizOpts) *bizFleet {
	t.Helper()
	if o.CoordIP == "" {
		o.CoordIP, o.HostIPs, o.VIPPool = bizCoordIP, bizHostIPs, bizVIPPool
	}
	// CACHEPLANE_E2E_MEMBER_TLS=1 runs a business test's addon with member
	// TLS (the fleet's operations over TLS members: backups, restores,
	// plan changes, upgrades, healing).
	if os.Getenv("CACHEPLANE_E2E_MEMBER_TLS") == "1" {
		o.MemberTLS = true
	}
	// Default host detection (liveness signal, host_suspect_after 1 s,
	// host_down_after 5 s) and heartbeats: the figures users get. Only
	// heal-after is short, so replacements start quickly.
	args := append([]string{"--heal-after", healAfter.String(), "--entrypoint-cidr", o.VIPPool}, o.CoordArgs...)
	f := &bizFleet{t: t, app: app, agents: map[string]*Agent{}}
	f.c = StartCoordinator(t, "c1", o.CoordIP, CoordinatorOpts{Bootstrap: true, ExtraArgs: args})
	for i, ip := range o.HostIPs {
		id := fmt.Sprintf("h%d", i+1)
		agentArgs := o.AgentArgs
		if i < len(o.PublicIPs) {
			agentArgs = append(append([]string(nil), agentArgs...), "--public-address", o.PublicIPs[i])
		}
		f.agents[id] = StartAgent(t, f.c, id, ip, AgentOpts{Heartbeat: time.Second, ExtraArgs: agentArgs})
	}
	if o.Plan == "" {
		o.Plan = "redis-business-256"
	}
	add := []string{"addons-add", "--app", app, "redis", o.Plan}
	if o.MemberTLS {
		add = append(add, "--member-tls")
	}
	if res := f.c.CLI(add...); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	a := WaitForAddonStatus(t, f.c, app, api.AddonRunning, 90*time.Second)
	f.id = a.ID
	if o.MemberTLS {
		useMemberTLS(t, f, o.HostIPs)
	}
	f.url = RedisURL(t, f.c, app)
	opt, err := redis.ParseURL(f.url)
	if err != nil {
		t.Fatalf("parse REDIS_URL: %v", err)
	}
	f.opt = opt
	if !strings.Contains(o.Plan, "-starter-") {
		f.waitHealthy(60 * time.Second)
	}
	return f
}

// addon reads the addon (with members) from the coordinator.
func (f *bizFleet) addon() (api.Addon, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return f.c.Client().Addon(ctx, f.id)
}

func (f *bizFleet) mustAddon() api.Addon {
	f.t.Helper()
	a, err := f.addon()
	if err != nil {
		f.t.Fatalf("addon %s: %v", f.id, err)
	}
	return a
}

// hostIP is the address of host id.
func (f *bizFleet) hostIP(id string) string { return f.agents[id].IP }

// memberAddr is a member's host:port.
func (f *bizFleet) memberAddr(m api.Member) string {
	return net.JoinHostPort(f.hostIP(m.HostID), strconv.Itoa(m.Port))
}

// members returns the addon's members of role.
func membersOf(a api.Addon, role api.Role) []api.Member {
	var out []api.Member
	for _, m := range a.Members {
		if m.Role == role {
			out = append(out, m)
		}
	}
	return out
}

// primary is the member the FSM records as the primary.
func (f *bizFleet) primary() api.Member {
	f.t.Helper()
	a := f.mustAddon()
	for _, m := range membersOf(a, api.RoleRedis) {
		if m.RedisRole == "primary" {
			return m
		}
	}
	f.t.Fatalf("addon %s has no recorded primary: %+v", f.id, a.Members)
	return api.Member{}
}

// holder is the haproxy member holding the VIP.
func (f *bizFleet) holder() api.Member {
	f.t.Helper()
	for _, m := range membersOf(f.mustAddon(), api.RoleHAProxy) {
		if m.Active {
			return m
		}
	}
	f.t.Fatalf("addon %s: no haproxy holds the entrypoint", f.id)
	return api.Member{}
}

// fleet is the addon's fleet credential (fleetCredential).
func (f *bizFleet) fleet() string { return fleetCredential(f.t, f.id, agentList(f.agents)...) }

// direct is a client of one redis member (no retries), logged in as the
// fleet's user.
func (f *bizFleet) direct(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Username: redisctl.FleetUser, Password: f.fleet(), DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1, PoolSize: 1, DisableIdentity: true,
		TLSConfig: memberTLSConfig(addr)})
}

// sentinelMaster asks one sentinel (password: the fleet credential) for
// the primary's host:port.
func sentinelMaster(addr, password, name string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, DialTimeout: time.Second, ReadTimeout: time.Second,
		MaxRetries: -1, PoolSize: 1, DisableIdentity: true, TLSConfig: memberTLSConfig(addr)})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name).StringSlice()
	if err != nil {
		return "", err
	}
	if len(res) != 2 {
		return "", fmt.Errorf("answer %q", res)
	}
	return net.JoinHostPort(res[0], res[1]), nil
}

// sentinelKnowsReplica checks SENTINEL REPLICAS lists replica with flags
// "slave" only (connected, not down).
func sentinelKnowsReplica(addr, password, name, replica string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, DialTimeout: time.Second, ReadTimeout: time.Second,
		MaxRetries: -1, PoolSize: 1, DisableIdentity: true, Protocol: 2, TLSConfig: memberTLSConfig(addr)})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "SENTINEL", "REPLICAS", name).Slice()
	if err != nil {
		return err
	}
	var seen []string
	for _, r := range res {
		kv, _ := r.([]any)
		fields := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			k, _ := kv[i].(string)
			v, _ := kv[i+1].(string)
			fields[k] = v
		}
		if fields["name"] == replica && fields["flags"] == "slave" {
			return nil
		}
		seen = append(seen, fields["name"]+" ("+fields["flags"]+")")
	}
	return fmt.Errorf("replica %s not known as a healthy replica; replicas: %v", replica, seen)
}

// replInfo returns INFO replication fields of the redis at addr.
func (f *bizFleet) replInfo(addr string) (map[string]string, error) {
	c := f.direct(addr)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

// healthy checks the addon is fully redundant: 2 redis / 3 sentinel /
// 2 haproxy members on distinct ready hosts, the recorded primary is a
// master with one connected replica in sync, every sentinel names it, and
// a write through the URL works.
func (f *bizFleet) healthy() error {
	a, err := f.addon()
	if err != nil {
		return err
	}
	rs, ss, hs := membersOf(a, api.RoleRedis), membersOf(a, api.RoleSentinel), membersOf(a, api.RoleHAProxy)
	if len(rs) != 2 || len(ss) != 3 || len(hs) != 2 {
		return fmt.Errorf("members: %d redis, %d sentinel, %d haproxy", len(rs), len(ss), len(hs))
	}
	var primary, replica api.Member
	for _, m := range rs {
		if m.RedisRole == "primary" {
			primary = m
		} else {
			replica = m
		}
	}
	if primary.ID == "" || replica.ID == "" {
		return fmt.Errorf("no recorded primary/replica pair: %+v", rs)
	}
	pi, err := f.replInfo(f.memberAddr(primary))
	if err != nil {
		return fmt.Errorf("primary %s: %w", primary.ID, err)
	}
	if pi["role"] != "master" || pi["connected_slaves"] != "1" {
		return fmt.Errorf("primary %s: role %s, %s connected replicas", primary.ID, pi["role"], pi["connected_slaves"])
	}
	ri, err := f.replInfo(f.memberAddr(replica))
	if err != nil {
		return fmt.Errorf("replica %s: %w", replica.ID, err)
	}
	if ri["role"] != "slave" || ri["master_link_status"] != "up" || ri["master_port"] != strconv.Itoa(primary.Port) || ri["master_host"] != f.hostIP(primary.HostID) {
		return fmt.Errorf("replica %s: role %s link %s master %s:%s", replica.ID, ri["role"], ri["master_link_status"], ri["master_host"], ri["master_port"])
	}
	// In sync: the primary's offset is read first, the replica's after, so
	// a replica that streams has at least the primary's earlier offset
	// even while clients write. (A tolerance is wrong: right after a full
	// sync the primary holds the stream back until the replica's first
	// REPLCONF ACK, up to a second — found when a kill in that second lost
	// the writes.)
	ro, _ := strconv.ParseInt(ri["master_repl_offset"], 10, 64)
	po, _ := strconv.ParseInt(pi["master_repl_offset"], 10, 64)
	if ro == 0 || ro < po {
		return fmt.Errorf("replica offset %d, primary %d before it", ro, po)
	}
	for _, s := range ss {
		got, err := sentinelMaster(f.memberAddr(s), f.fleet(), f.id)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", s.ID, err)
		}
		if got != f.memberAddr(primary) {
			return fmt.Errorf("sentinel %s names %s, recorded primary is %s", s.ID, got, f.memberAddr(primary))
		}
		// And knows the replica as a healthy one it could promote.
		if err := sentinelKnowsReplica(f.memberAddr(s), f.fleet(), f.id, f.memberAddr(replica)); err != nil {
			return fmt.Errorf("sentinel %s: %w", s.ID, err)
		}
	}
	c := redis.NewClient(f.opt)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Set(ctx, "cacheplane:e2e:healthy", time.Now().String(), 0).Err()
}

func (f *bizFleet) waitHealthy(timeout time.Duration) {
	f.t.Helper()
	testutil.WaitFor(f.t, timeout, f.healthy)
}

// pidOf is the running pid of member id on host (0 if not running).
func (f *bizFleet) pidOf(host, id string) int {
	for _, st := range f.agents[host].Members() {
		if st.ID == id && st.State == runtime.StateRunning {
			return st.Pid
		}
	}
	return 0
}

// ---------------------------------------------------------------------------
// The writer: sequence-numbered keys through the URL, every acknowledged
// write recorded with its time.

type ack struct {
	seq int
	at  time.Time
}

type writer struct {
	c      *redis.Client
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	acks   []ack
	failed int
	errs   map[string]int
	prefix string
}

// startWriter writes prefix:<n> = n through opt (go-redis defaults unless
// the caller changed opt) back to back until stop.
func startWriter(opt *redis.Options, prefix string) *writer {
	w := &writer{c: redis.NewClient(opt), stop: make(chan struct{}), done: make(chan struct{}), errs: map[string]int{}, prefix: prefix}
	go func() {
		defer close(w.done)
		for seq := 1; ; seq++ {
			select {
			case <-w.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := w.c.Set(ctx, w.prefix+strconv.Itoa(seq), seq, 0).Err()
			cancel()
			now := time.Now()
			w.mu.Lock()
			if err == nil {
				w.acks = append(w.acks, ack{seq, now})
			} else {
				w.failed++
				w.errs[errClass(err)]++
			}
			w.mu.Unlock()
			if err != nil {
				// A failed command is retried as a new sequence number;
				// don't spin on a refused connection.
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	return w
}

func errClass(err error) string {
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// ackedSince counts acknowledged writes after t.
func (w *writer) ackedSince(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for i := len(w.acks) - 1; i >= 0 && w.acks[i].at.After(t); i-- {
		n++
	}
	return n
}

// waitAcksAfter waits until n writes were acknowledged after t.
func (w *writer) waitAcksAfter(t testing.TB, at time.Time, n int, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, func() error {
		if got := w.ackedSince(at); got < n {
			return fmt.Errorf("%d writes acknowledged since %s, want %d", got, at.Format("15:04:05.000"), n)
		}
		return nil
	})
}

// finish stops the writer and returns its record.
func (w *writer) finish() (acks []ack, failed int, errs map[string]int) {
	close(w.stop)
	<-w.done
	_ = w.c.Close()
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...), w.failed, w.errs
}

// longestGap is the longest time between consecutive acknowledged writes
// in [from, ∞).
func longestGap(acks []ack, from time.Time) (time.Duration, time.Time) {
	var gap time.Duration
	var at time.Time
	prev := from
	for _, a := range acks {
		if a.at.Before(from) {
			prev = a.at
			continue
		}
		if d := a.at.Sub(prev); d > gap {
			gap, at = d, prev
		}
		prev = a.at
	}
	return gap, at
}

// missing reads every acknowledged key through c and returns the sequence
// numbers whose value is absent or wrong.
func missing(t testing.TB, c *redis.Client, prefix string, acks []ack) []int {
	t.Helper()
	var lost []int
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const batch = 1000
	for i := 0; i < len(acks); i += batch {
		j := min(i+batch, len(acks))
		keys := make([]string, 0, j-i)
		for _, a := range acks[i:j] {
			keys = append(keys, prefix+strconv.Itoa(a.seq))
		}
		vals, err := c.MGet(ctx, keys...).Result()
		if err != nil {
			t.Fatalf("MGET through the URL: %v", err)
		}
		for k, v := range vals {
			if s, _ := v.(string); s != strconv.Itoa(acks[i+k].seq) {
				lost = append(lost, acks[i+k].seq)
			}
		}
	}
	return lost
}

// ---------------------------------------------------------------------------

// TestBusinessUp: a business addon comes up end to end: the URL names the
// VIP held by one haproxy, writes through it work, the replica syncs and
// the sentinels agree on the primary.
func TestBusinessUp(t *testing.T) {
	f := startBusiness(t, "biz-up", bizOpts{})
	u, err := url.Parse(f.url)
	if err != nil {
		t.Fatal(err)
	}
	a := f.mustAddon()
	if u.Host != a.Entrypoint {
		t.Errorf("URL host %s, entrypoint %s", u.Host, a.Entrypoint)
	}
	vip, _, _ := net.SplitHostPort(a.Entrypoint)
	if _, pool, _ := net.ParseCIDR(bizVIPPool); !pool.Contains(net.ParseIP(vip)) {
		t.Errorf("entrypoint %s is not from the VIP pool %s", a.Entrypoint, bizVIPPool)
	}
	h := f.holder()
	t.Logf("addon %s: entrypoint %s held by %s on %s; primary %s", f.id, a.Entrypoint, h.ID, h.HostID, f.primary().ID)
	hosts := map[api.Role]map[string]bool{}
	for _, m := range a.Members {
		if hosts[m.Role] == nil {
			hosts[m.Role] = map[string]bool{}
		}
		if hosts[m.Role][m.HostID] {
			t.Errorf("two %s members on host %s", m.Role, m.HostID)
		}
		hosts[m.Role][m.HostID] = true
	}
	w := startWriter(f.opt, "up:")
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
	acks, failed, _ := w.finish()
	if failed != 0 {
		t.Errorf("%d failed writes on a healthy addon", failed)
	}
	f.waitHealthy(20 * time.Second)
	// The replica has every write too.
	var replica api.Member
	for _, m := range membersOf(f.mustAddon(), api.RoleRedis) {
		if m.RedisRole != "primary" {
			replica = m
		}
	}
	rc := f.direct(f.memberAddr(replica))
	defer rc.Close()
	if lost := missing(t, rc, "up:", acks); len(lost) > 0 {
		t.Errorf("replica lacks %d of %d writes", len(lost), len(acks))
	}
}

// ---------------------------------------------------------------------------
// Failover scenarios.

// roleWatch polls a redis address and records whether it ever answered
// role:master (a restarted old primary must come back as a replica).
type roleWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	// master is when it first answered role:master (zero: never).
	master  time.Time
	answers int
}

// watchRole starts polling addr once it refuses connections (the killed
// process is gone), so every answer comes from a restarted process.
func (f *bizFleet) watchRole(addr string) *roleWatch {
	w := &roleWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		gone := false
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if !gone {
				c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
				if err != nil {
					gone = true
				} else {
					c.Close()
					time.Sleep(2 * time.Millisecond) // polling interval
				}
				continue
			}
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err != nil {
				time.Sleep(5 * time.Millisecond) // polling interval
				continue
			}
			c.Close()
			info, err := f.replInfo(addr)
			if err == nil {
				w.mu.Lock()
				w.answers++
				if info["role"] == "master" && w.master.IsZero() {
					w.master = time.Now()
				}
				w.mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}()
	return w
}

func (w *roleWatch) finish() (master time.Time, answers int) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.master, w.answers
}

// outcome is what one fault did to the writer.
type outcome struct {
	firstWrite time.Duration // fault → first acknowledged write after it
	window     time.Duration // longest time without an acknowledged write
	acked      int
	failed     int
	errs       map[string]int
	lost       int
}

func (o outcome) String() string {
	return fmt.Sprintf("first write after the fault %s, longest stall %s, %d acknowledged, %d failed commands %v, %d lost",
		o.firstWrite.Round(time.Millisecond), o.window.Round(time.Millisecond), o.acked, o.failed, o.errs, o.lost)
}

// fault runs the writer through the URL, applies fault, waits until writes
// resume and recover() holds, then reads every acknowledged write back.
func (f *bizFleet) fault(t *testing.T, prefix string, opt *redis.Options, fault func() time.Time, recovered func()) outcome {
	t.Helper()
	w := startWriter(opt, prefix)
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	at := fault()
	w.waitAcksAfter(t, at, 100, 30*time.Second)
	recovered()
	w.waitAcksAfter(t, time.Now(), 100, 30*time.Second)
	acks, failed, errs := w.finish()
	o := outcome{acked: len(acks), failed: failed, errs: errs}
	// The first write after the outage ends the longest stall (a write in
	// flight at the fault may still be acknowledged a moment after it).
	gap, from := longestGap(acks, at)
	o.window, o.firstWrite = gap, from.Add(gap).Sub(at)
	c := redis.NewClient(f.opt)
	defer c.Close()
	testutil.WaitFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	})
	lost := missing(t, c, prefix, acks)
	o.lost = len(lost)
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged writes lost (first: %v)", len(lost), len(acks), lost[:min(10, len(lost))])
	}
	return o
}

// killPrimaryProcess kill -9s the primary's redis, checks it comes back as
// a replica (never answering role:master) of the promoted one, and that
// no acknowledged write is lost.
func killPrimaryProcess(t *testing.T, f *bizFleet, prefix string) outcome {
	old := f.primary()
	addr := f.memberAddr(old)
	pid := f.pidOf(old.HostID, old.ID)
	if pid == 0 {
		t.Fatalf("primary %s has no running process", old.ID)
	}
	var rw *roleWatch
	o := f.fault(t, prefix, f.opt, func() time.Time {
		at := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
		rw = f.watchRole(addr)
		return at
	}, func() {
		f.waitHealthy(60 * time.Second)
	})
	master, answers := rw.finish()
	if !master.IsZero() {
		t.Errorf("the restarted old primary %s answered role:master at %s", old.ID, master.Format("15:04:05.000"))
	}
	if answers == 0 {
		t.Errorf("the old primary %s was never seen answering after its restart", old.ID)
	}
	if now := f.primary(); now.ID == old.ID {
		t.Errorf("primary is still %s after its process was killed", old.ID)
	}
	if f.pidOf(old.HostID, old.ID) == pid {
		t.Errorf("old primary still has pid %d", pid)
	}
	t.Logf("kill -9 of primary %s (pid %d): %s", old.ID, pid, o)
	return o
}

// TestBusinessKillPrimaryProcess (a): the primary's redis is killed and
// restarted by the agent after its restart delay (1 s).
func TestBusinessKillPrimaryProcess(t *testing.T) {
	f := startBusiness(t, "biz-kill", bizOpts{})
	for i := 0; i < 2; i++ { // the second kill fails back to the first member
		killPrimaryProcess(t, f, fmt.Sprintf("kill%d:", i))
	}
}

// TestBusinessKillPrimaryFastRestart (b): the killed redis is restarted
// within a second (restart delay 200 ms): before Sentinel's own detection,
// so only the agent's gate keeps it from coming back as an empty primary.
func TestBusinessKillPrimaryFastRestart(t *testing.T) {
	f := startBusiness(t, "biz-fast", bizOpts{AgentArgs: []string{"--restart-delay", "200ms"}})
	for i := 0; i < 2; i++ {
		killPrimaryProcess(t, f, fmt.Sprintf("fast%d:", i))
	}
}

// waitRedundant waits until the addon is back to 2 redis / 3 sentinel /
// 2 haproxy members, none on host gone, every replace-member operation is
// done, and the addon is healthy.
func (f *bizFleet) waitRedundant(gone string, timeout time.Duration) {
	f.t.Helper()
	testutil.WaitFor(f.t, timeout, func() error {
		a, err := f.addon()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		ops, err := f.c.Client().Operations(ctx, f.app, "")
		if err != nil {
			return err
		}
		for _, o := range ops {
			if o.Kind == api.OpReplaceMember && o.State != api.OpDone {
				detail := ""
				if i := o.CurrentStep(); i < len(o.Steps) {
					detail = o.Steps[i].Name + ": " + o.Steps[i].Detail
				}
				return fmt.Errorf("operation %s (replace %s) is %s at %s", o.ID, o.Target, o.State, detail)
			}
		}
		for _, m := range a.Members {
			if m.HostID == gone {
				return fmt.Errorf("member %s still on host %s (addon %s)", m.ID, gone, a.Status)
			}
		}
		return f.healthy()
	})
}

// replaceOps counts the addon's replace-member operations.
func (f *bizFleet) replaceOps() int {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ops, err := f.c.Client().Operations(ctx, f.app, "")
	if err != nil {
		f.t.Fatalf("operations: %v", err)
	}
	n := 0
	for _, o := range ops {
		if o.Kind == api.OpReplaceMember {
			n++
		}
	}
	return n
}

// TestBusinessKillPrimaryHost (c): the primary's whole host is lost
// (agent and every member process); writes resume through the same URL,
// then self-healing rebuilds full redundancy on the remaining hosts.
func TestBusinessKillPrimaryHost(t *testing.T) {
	killPrimaryHost(t, startBusiness(t, "biz-host", bizOpts{}), "host:", nil)
}

// killPrimaryHost loses the primary's host under a writer and waits for
// full redundancy on the others; lost (if not nil) runs right after, with
// the host's id. It returns the host's id.
func killPrimaryHost(t *testing.T, f *bizFleet, prefix string, lost func(host string)) string {
	old := f.primary()
	members := 0
	for _, m := range f.mustAddon().Members {
		if m.HostID == old.HostID {
			members++
		}
	}
	ops := f.replaceOps()
	o := f.fault(t, prefix, f.opt, func() time.Time {
		at := time.Now()
		f.agents[old.HostID].KillHost()
		if lost != nil {
			lost(old.HostID)
		}
		return at
	}, func() {
		f.waitRedundant(old.HostID, 120*time.Second)
	})
	if n := f.replaceOps() - ops; n != members {
		t.Errorf("%d replace-member operations for the %d members of host %s", n, members, old.HostID)
	}
	t.Logf("host %s of primary %s killed (%d members on it): %s", old.HostID, old.ID, members, o)
	return old.HostID
}

// TestBusinessKillEntrypointHost (d): the host of the haproxy holding the
// VIP is lost; the coordinator moves the VIP to the other haproxy, whose
// agent enables its clients' frontend (it bound the VIP all along): the URL
// works again within 2 s and the surviving HAProxy is not restarted.
func TestBusinessKillEntrypointHost(t *testing.T) {
	killEntrypointHost(t, startBusiness(t, "biz-vip", bizOpts{}), "vip:", nil)
}

// killEntrypointHost loses the VIP holder's host; lost (if not nil) runs
// right after, with the host's id (kernel mode: the host's kernel rules go
// with it).
func killEntrypointHost(t *testing.T, f *bizFleet, prefix string, lost func(host string)) {
	h := f.holder()
	if h.HostID == f.primary().HostID {
		t.Logf("the entrypoint holder %s shares host %s with the primary", h.ID, h.HostID)
	}
	var other api.Member
	for _, m := range membersOf(f.mustAddon(), api.RoleHAProxy) {
		if m.ID != h.ID {
			other = m
		}
	}
	pid := f.pidOf(other.HostID, other.ID)
	if pid == 0 {
		t.Fatalf("haproxy %s has no running process", other.ID)
	}
	pidAfterMove := 0
	o := f.fault(t, prefix, f.opt, func() time.Time {
		at := time.Now()
		f.agents[h.HostID].KillHost()
		if lost != nil {
			lost(h.HostID)
		}
		return at
	}, func() {
		// Writes resumed through the other haproxy: before any
		// replacement (heal-after) could change its servers.
		pidAfterMove = f.pidOf(other.HostID, other.ID)
		f.waitRedundant(h.HostID, 120*time.Second)
	})
	if nh := f.holder(); nh.HostID == h.HostID {
		t.Errorf("the entrypoint is still held on the lost host %s", h.HostID)
	}
	if pidAfterMove != pid {
		t.Errorf("the surviving haproxy %s was restarted by the VIP move: pid %d, then %d", other.ID, pid, pidAfterMove)
	}
	if o.window > 2*time.Second {
		t.Errorf("the URL stalled %s after the holder's host was lost, want <= 2s", o.window)
	}
	t.Logf("host %s of entrypoint holder %s killed; %s took the VIP with the same pid %d (now %d after healing): %s",
		h.HostID, h.ID, other.ID, pid, f.pidOf(other.HostID, other.ID), o)
}

// TestBusinessDrainPrimaryHost (e): hosts-drain of the primary's host
// moves every member off it: the primary is demoted by a coordinated
// failover first. A go-redis client with default retries sees no failed
// command and no acknowledged write is lost.
func TestBusinessDrainPrimaryHost(t *testing.T) {
	drainPrimaryHost(t, startBusiness(t, "biz-drain", bizOpts{}), "drain:")
}

// drainPrimaryHost drains the primary's host under a writer (0 failed
// commands, 0 lost), then undrains it.
func drainPrimaryHost(t *testing.T, f *bizFleet, prefix string) {
	old := f.primary()
	o := f.fault(t, prefix, f.opt, func() time.Time {
		at := time.Now()
		if res := f.c.CLI("hosts-drain", old.HostID); res.Code != 0 {
			t.Fatalf("hosts-drain: %s", res)
		}
		return at
	}, func() {
		f.waitRedundant(old.HostID, 120*time.Second)
	})
	t.Logf("drain of host %s holding primary %s: %s", old.HostID, old.ID, o)
	if o.failed > 0 {
		t.Errorf("%d failed commands during the drain: %v", o.failed, o.errs)
	}
	if res := f.c.CLI("hosts-undrain", old.HostID); res.Code != 0 {
		t.Errorf("hosts-undrain: %s", res)
	}
	WaitForHostState(t, f.c, old.HostID, api.HostReady, 10*time.Second)
}

// raiseNoFile lifts this process's open-file limit to at least n.
func raiseNoFile(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	old := lim
	lim.Cur = max(lim.Cur, min(n, lim.Max))
	if lim.Max < n {
		lim.Max, lim.Cur = n, n // root may raise the hard limit
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("setrlimit %d: %v", n, err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// authPing authenticates and pings over a raw connection, returning the
// replies ("+OK", "+PONG") or the error.
func authPing(c net.Conn, password string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	cmd := fmt.Sprintf("*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$%d\r\n%s\r\n*1\r\n$4\r\nPING\r\n", len(password), password)
	if _, err := c.Write([]byte(cmd)); err != nil {
		return err
	}
	want := "+OK\r\n+PONG\r\n"
	got := make([]byte, 0, len(want))
	buf := make([]byte, 64)
	for len(got) < len(want) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return fmt.Errorf("after %q: %w", got, err)
		}
	}
	if string(got) != want {
		return fmt.Errorf("replies %q", got)
	}
	return nil
}

// TestBusinessMaxConn (f): the entrypoint takes 2,000 concurrent clients;
// the 2,001st is closed at once, and the first 2,000 keep working.
func TestBusinessMaxConn(t *testing.T) {
	raiseNoFile(t, 3*2000+1024)
	checkMaxConn(t, startBusiness(t, "biz-conn", bizOpts{}))
}

// checkMaxConn opens 2,000 clients on the entrypoint, checks the 2,001st
// is refused at once and the 2,000 still work, and that a closed one's
// place is taken again.
func checkMaxConn(t *testing.T, f *bizFleet) {
	const limit = 2000
	ep := f.mustAddon().Entrypoint
	conns := make([]net.Conn, 0, limit)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Who else holds a session on the entrypoint (a slot of the 2,000):
	// logged before the clients connect and again if one is refused early.
	t.Logf("entrypoint sessions before the clients connect:\n%s", f.haproxySessions())
	for i := 0; i < limit; i++ {
		c, err := net.DialTimeout("tcp", ep, 5*time.Second)
		if err == nil {
			conns = append(conns, c)
			err = authPing(c, f.opt.Password)
		}
		if err != nil {
			t.Fatalf("connection %d: %v\nentrypoint sessions now:\n%s", i+1, err, f.haproxySessions())
		}
	}
	// The next one is accepted by the kernel and closed by HAProxy at once
	// (kernel mode: refused with a reset): the client sees EOF or a
	// reset, never a hang.
	extra, err := net.DialTimeout("tcp", ep, 5*time.Second)
	if err == nil {
		start := time.Now()
		err = authPing(extra, f.opt.Password)
		extra.Close()
		if err == nil {
			t.Fatalf("connection %d was served", limit+1)
		}
		if strings.Contains(err.Error(), "timeout") {
			t.Fatalf("connection %d hung instead of being refused: %v", limit+1, err)
		}
		t.Logf("connection %d refused after %s: %v", limit+1, time.Since(start).Round(time.Millisecond), err)
	} else {
		t.Logf("connection %d refused at connect: %v", limit+1, err)
	}
	// The first 2,000 still work.
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
			t.Fatalf("connection %d after the refusal: %v", i+1, err)
		}
		buf := make([]byte, 7)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "+PONG\r\n" {
			t.Fatalf("connection %d after the refusal: %q %v", i+1, buf, err)
		}
	}
	// Once one closes, a new client gets in again.
	conns[0].Close()
	testutil.WaitFor(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", ep, 5*time.Second)
		if err != nil {
			return err
		}
		err = authPing(c, f.opt.Password)
		if err != nil {
			c.Close()
			return err
		}
		conns[0] = c
		return nil
	})
}

// haproxySessions is what each haproxy member's runtime API says about its
// sessions (`show sess`, one line per session with its source address),
// grouped by the source address's host: for a test's failure message.
func (f *bizFleet) haproxySessions() string {
	var b strings.Builder
	for _, m := range membersOf(f.mustAddon(), api.RoleHAProxy) {
		ag := f.agents[m.HostID]
		if ag == nil {
			continue
		}
		sock := filepath.Join(ag.DataDir, "members", m.ID, "haproxy.sock")
		out, err := haproxyCommand(sock, "show sess")
		if err != nil {
			fmt.Fprintf(&b, "%s on %s: %v\n", m.ID, m.HostID, err)
			continue
		}
		bySource := map[string]int{}
		for _, line := range strings.Split(out, "\n") {
			// 0x55d5c…: proto=tcpv4 src=127.0.0.1:50000 fe=fe_x be=be_x srv=… ts=… age=…
			var src, fe string
			for _, field := range strings.Fields(line) {
				if v, ok := strings.CutPrefix(field, "src="); ok {
					src = v
				}
				if v, ok := strings.CutPrefix(field, "fe="); ok {
					fe = v
				}
			}
			if src == "" {
				continue
			}
			if host, _, err := net.SplitHostPort(src); err == nil {
				src = host
			}
			bySource[fe+" from "+src]++
		}
		fmt.Fprintf(&b, "%s on %s: %v\n", m.ID, m.HostID, bySource)
	}
	return b.String()
}

// haproxyCommand sends one command line to an HAProxy runtime API socket
// and returns its whole answer.
func haproxyCommand(sock, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return "", err
	}
	out, err := io.ReadAll(io.LimitReader(c, 4<<20))
	return string(out), err
}
