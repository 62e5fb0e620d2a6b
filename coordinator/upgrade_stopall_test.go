package coordinator

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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

// TestUpgradeEveryNodeStops: the path no default-catalog upgrade takes
// (every allowed one rolls), on a real coordinator with real redis-server
// and redis-sentinel processes run by a test agent the way the agent runs
// them (configs from agent/render; a version change restarts a member
// with SIGTERM on the same data dir; a stopped member is SIGTERMed and not
// restarted). The catalog gets a "redis-7.0.14" whose RDB format is
// unknown, so its upgrade to 7.0.15 (the binary installed here) cannot
// roll. While a client writes to the primary: the primary saves, the
// replica stops, the primary restarts on the new version with every key,
// the replica starts and resyncs, the sentinels restart one by one; the
// replica is never promoted, no acknowledged write is lost, the primary
// stays where it was.
func TestUpgradeEveryNodeStops(t *testing.T) {
	for _, bin := range []string{"redis-server", "redis-sentinel"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (make deps)", bin)
		}
	}
	c, cfg := startTestCoordinator(t, "127.0.0.51")
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	peer := api.NewClient(cfg.Socket)
	cat := api.DefaultEngines()
	old := cat[0]
	old.Version, old.RDB, old.Default = "7.0.14", 0, false
	if _, err := c.store.Apply(ctx, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: append(cat, old)}); err != nil {
		t.Fatal(err)
	}
	hosts := map[string]string{"h1": "127.0.0.52", "h2": "127.0.0.53", "h3": "127.0.0.54", "h4": "127.0.0.55"}
	for id, ip := range hosts {
		if _, err := peer.Register(ctx, api.Host{ID: id, Address: ip, MemoryMB: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	ag := newProcAgent(t, peer, hosts)
	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "stop-all", Type: "redis", Plan: "redis-business-256", Engine: api.EngineRedis, Version: "7.0.14"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Addon.ID
	a := waitAddon(t, admin, id, api.AddonRunning)
	var prim, repl api.Member
	for _, m := range a.Members {
		switch {
		case m.Role == api.RoleRedis && m.RedisRole == "primary":
			prim = m
		case m.Role == api.RoleRedis:
			repl = m
		}
	}
	pw := ag.password(id)
	primAddr := net.JoinHostPort(hosts[prim.HostID], strconv.Itoa(prim.Port))
	replAddr := net.JoinHostPort(hosts[repl.HostID], strconv.Itoa(repl.Port))
	testutil.WaitFor(t, 30*time.Second, func() error {
		_, err := redisctl.CheckNode(ctx, replAddr, pw, redisctl.Want{Engine: api.EngineRedis, Version: "7.0.15", ReplicaOf: primAddr, InSyncBytes: 0, MinKeys: -1})
		return err
	})

	// A writer on the primary (no entrypoint here: the subject is the
	// order of the nodes' stops and starts).
	rc := redis.NewClient(&redis.Options{Addr: primAddr, Username: redisctl.FleetUser, Password: pw})
	defer rc.Close()
	var (
		mu     sync.Mutex
		acked  []int
		failed int
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := 1; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := rc.Set(wctx, "w:"+strconv.Itoa(seq), seq, 0).Err()
			cancel()
			mu.Lock()
			if err == nil {
				acked = append(acked, seq)
			} else {
				failed++
			}
			mu.Unlock()
		}
	}()
	testutil.WaitFor(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 500 {
			return fmt.Errorf("%d writes", len(acked))
		}
		return nil
	})
	ag.watchRole(replAddr, pw)

	up, err := admin.AddonEngineUpgrade(ctx, id, api.EngineUpgradeRequest{App: "stop-all", To: "redis-7.0.15"})
	if err != nil {
		t.Fatal(err)
	}
	if up.Operation.Upgrade.Rolling || !strings.Contains(up.Message, "every redis node stops") {
		t.Fatalf("upgrade answer: %+v", up)
	}
	waitAddon(t, admin, id, api.AddonRunning)
	op := operationOf(t, admin, up.Operation.ID)
	close(stop)
	<-done
	if op.State != api.OpDone {
		t.Fatalf("operation %s: %s %s %+v", op.ID, op.State, op.Error, op.Steps)
	}
	want := []string{"save " + prim.ID, "stop " + repl.ID, "upgrade " + prim.ID, "wait " + prim.ID, "upgrade " + repl.ID, "wait " + repl.ID}
	for i, name := range want {
		if op.Steps[i].Name != name || op.Steps[i].State != api.OpDone {
			t.Fatalf("step %d: %+v; want %q done", i, op.Steps[i], name)
		}
	}
	for _, s := range op.Steps {
		t.Logf("%-40s %s", s.Name, s.Detail)
	}
	if strings.Contains(strings.Join(stepNamesOf(op), ","), "switch") {
		t.Fatalf("a stop-all switched over: %v", stepNamesOf(op))
	}
	if ag.promoted() {
		t.Fatalf("the replica answered as a master during the upgrade")
	}
	final, err := admin.Addon(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if final.Version != "7.0.15" {
		t.Fatalf("addon on %s", final.Version)
	}
	for _, m := range final.Members {
		if m.Role == api.RoleRedis && (m.RedisRole == "primary") != (m.ID == prim.ID) {
			t.Fatalf("the primary moved: %+v", final.Members)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	lost := 0
	for i := 0; i < len(acked); i += 500 {
		keys := []string{}
		for _, s := range acked[i:min(i+500, len(acked))] {
			keys = append(keys, "w:"+strconv.Itoa(s))
		}
		vals, err := rc.MGet(ctx, keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vals {
			if v == nil {
				lost++
			}
		}
	}
	t.Logf("stop-all upgrade: %d writes acknowledged, %d failed (the primary's restart), %d lost; %s", len(acked), failed, lost, stepDetailOf(op, "wait "+prim.ID))
	if lost != 0 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		_, err := redisctl.CheckNode(ctx, replAddr, pw, redisctl.Want{Engine: api.EngineRedis, Version: "7.0.15", ReplicaOf: primAddr, InSyncBytes: 1 << 20, MinKeys: -1})
		return err
	})
}

func stepDetailOf(op api.Operation, name string) string {
	for _, s := range op.Steps {
		if s.Name == name {
			return s.Detail
		}
	}
	return ""
}

func waitAddon(t *testing.T, admin *api.Client, id string, want api.AddonStatus) api.Addon {
	t.Helper()
	var a api.Addon
	testutil.WaitFor(t, 90*time.Second, func() error {
		var err error
		a, err = admin.Addon(context.Background(), id)
		if err != nil || a.Status != want {
			return fmt.Errorf("addon %s: %s, %v", id, a.Status, err)
		}
		return nil
	})
	return a
}

// procAgent runs every host's assignments as local processes, the way
// the agent does, and heartbeats them.
type procAgent struct {
	t     *testing.T
	peer  *api.Client
	hosts map[string]string
	dir   string

	mu      sync.Mutex
	members map[string]*procMember
	pws     map[string]string // fleet credential by addon
	master  bool              // the watched replica answered as a master
}

type procMember struct {
	as      api.Assignment
	cmd     *exec.Cmd
	done    chan struct{}
	started time.Time
}

func newProcAgent(t *testing.T, peer *api.Client, hosts map[string]string) *procAgent {
	a := &procAgent{t: t, peer: peer, hosts: hosts, dir: t.TempDir(), members: map[string]*procMember{}, pws: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			a.pass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-loopDone
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, m := range a.members {
			m.kill()
		}
	})
	return a
}

func (a *procAgent) password(addon string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pws[addon]
}

func (a *procAgent) promoted() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.master
}

// watchRole polls addr until the test ends and records whether it ever
// answered as a master.
func (a *procAgent) watchRole(addr, pw string) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if r, err := redisctl.GetReplication(context.Background(), addr, pw); err == nil && r.IsMaster() {
				a.mu.Lock()
				a.master = true
				a.mu.Unlock()
			}
		}
	}()
	a.t.Cleanup(func() { close(stop); <-done })
}

func (m *procMember) alive() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// term stops the process as the runtime does (SIGTERM, redis saves).
func (m *procMember) term() {
	if m.alive() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
			m.kill()
		}
	}
}

func (m *procMember) kill() {
	if m.alive() {
		_ = m.cmd.Process.Kill()
		<-m.done
	}
}

func (a *procAgent) pass(ctx context.Context) {
	for host := range a.hosts {
		out, err := a.peer.Assignments(ctx, host, 0, 0)
		if err != nil {
			continue
		}
		var report []api.MemberStatus
		for _, as := range out.Assignments {
			report = append(report, a.ensure(ctx, as))
		}
		_, _ = a.peer.Heartbeat(ctx, api.HeartbeatRequest{HostID: host, Members: report})
	}
}

// ensure converges one member and reports it.
func (a *procAgent) ensure(ctx context.Context, as api.Assignment) api.MemberStatus {
	a.mu.Lock()
	a.pws[as.AddonID] = as.FleetPassword.Reveal()
	m := a.members[as.MemberID]
	a.mu.Unlock()
	ms := api.MemberStatus{MemberID: as.MemberID, AddonID: as.AddonID, Role: as.Role}
	changed := m != nil && (m.as.Engine != as.Engine || m.as.Version != as.Version)
	switch {
	case as.Stopped:
		if m != nil {
			m.term()
		}
		ms.State = api.MemberStopped
		return ms
	case m == nil || changed || !m.alive():
		if m != nil {
			m.term()
		}
		m = a.start(as)
		a.mu.Lock()
		a.members[as.MemberID] = m
		a.mu.Unlock()
	}
	addr := net.JoinHostPort(as.Address, strconv.Itoa(as.Port))
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	ms.State, ms.StartedAt = api.MemberStarting, m.started
	switch as.Role {
	case api.RoleSentinel:
		if _, err := redisctl.MasterAddr(pctx, addr, as.FleetPassword.Reveal(), as.MasterName); err == nil {
			ms.State = api.MemberRunning
		}
	default:
		if err := redisctl.Ping(pctx, addr, as.FleetPassword.Reveal()); err == nil {
			ms.State = api.MemberRunning
		}
		if as.Role == api.RoleRedis && ms.State == api.MemberRunning {
			if r, err := redisctl.GetReplication(pctx, addr, as.FleetPassword.Reveal()); err == nil {
				ms.RedisRole, ms.ReplOffset = r.Role, r.Offset
			}
		}
	}
	return ms
}

// start runs the member's process on its data dir (kept across restarts).
func (a *procAgent) start(as api.Assignment) *procMember {
	dir := filepath.Join(a.dir, as.MemberID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		a.t.Fatal(err)
	}
	endpoint := func(s string) render.Endpoint {
		h, p, _ := net.SplitHostPort(s)
		n, _ := strconv.Atoi(p)
		return render.Endpoint{Addr: h, Port: n}
	}
	var conf, bin string
	var err error
	switch as.Role {
	case api.RoleRedis:
		in := render.RedisInput{Engine: as.Engine, BindAddr: as.Address, Port: as.Port, DataDir: dir, Password: as.Password, FleetPassword: as.FleetPassword,
			PlanMemoryMB: as.PlanMemoryMB, Settings: as.Settings}
		if as.ReplicaOf != "" {
			in.ReplicaOf = endpoint(as.ReplicaOf)
		}
		conf, err = render.Redis(in)
		bin = "redis-server"
	case api.RoleSentinel:
		conf, err = render.Sentinel(render.SentinelInput{BindAddr: as.Address, Port: as.Port, DataDir: dir, MasterName: as.MasterName,
			Primary: endpoint(as.Primary), Password: as.FleetPassword})
		bin = "redis-sentinel"
	default: // a stand-in for the haproxy: answers PING with the password
		conf = fmt.Sprintf("bind %s\nport %d\ndir %s\nsave \"\"\n%s", as.Address, as.Port, dir, testUsers(as))
		bin = "redis-server"
	}
	if err != nil {
		a.t.Errorf("render %s: %v", as.MemberID, err)
	}
	path := filepath.Join(dir, string(as.Role)+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		a.t.Fatal(err)
	}
	cmd := exec.Command(bin, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("start %s: %v", bin, err)
	}
	m := &procMember{as: as, cmd: cmd, done: make(chan struct{}), started: time.Now().UTC()}
	go func() { _ = cmd.Wait(); close(m.done) }()
	return m
}
