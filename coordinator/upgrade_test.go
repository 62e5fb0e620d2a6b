package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestAddonUpgradeCommands: command 18 starts an upgrade only for a
// running addon without another operation and a target in the catalog;
// command 19 sets one member's version (its assignment carries the new
// engine, version and image; the other members' do not change), stops and
// starts a member, moves the VIP, and records the addon's version (member
// versions dropped); each refusal changes nothing; snapshot round trips.
func TestAddonUpgradeCommands(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()}))
	for i, h := range []string{"h1", "h2"} {
		f.Apply(entry(t, uint64(2+i), CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: h, Address: "127.0.0.1" + strconv.Itoa(i+1), MemoryMB: 4096, State: api.HostReady}}))
	}
	create := testAddon("u-app", "u-app-1", "")
	create.Addon.Plan = "redis-business-256"
	f.Apply(entry(t, 4, CmdAddonCreate, create))
	prov := create.Operation
	prov.State = api.OpRunning
	members := []api.Member{
		{ID: "u-app-1-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 20000, RedisRole: "primary"},
		{ID: "u-app-1-redis-1", Role: api.RoleRedis, HostID: "h2", Port: 20000, RedisRole: "replica"},
		{ID: "u-app-1-haproxy-0", Role: api.RoleHAProxy, HostID: "h1", Port: 20001, Active: true},
		{ID: "u-app-1-haproxy-1", Role: api.RoleHAProxy, HostID: "h2", Port: 20001},
	}
	f.Apply(entry(t, 5, CmdAddonPlaced, AddonPlacedCmd{AddonID: "u-app-1", Entrypoint: "127.0.1.1:20001", Operation: prov, Members: members}))

	up := api.Upgrade{From: "redis-7.0.15", To: "valkey-8.0.1", Engine: api.EngineValkey, Version: "8.0.1", Rolling: true, Primary: "u-app-1-redis-0", Keys: 10}
	op := api.Operation{ID: "op-up", AddonID: "u-app-1", App: "u-app", Kind: api.OpUpgrade, State: api.OpRunning,
		Steps: operation.UpgradeSteps(api.Addon{Members: members}, true), Change: operation.UpgradeChange(up.From, up.To), Upgrade: up, CreatedAt: t0, UpdatedAt: t0}
	cmd := AddonUpgradeCmd{AddonID: "u-app-1", App: "u-app", Operation: op, At: t0}
	idx := uint64(6)
	refused := func(ct CommandType, c any, want error, msg string) {
		t.Helper()
		before := stateJSON(t, f)
		err, _ := f.Apply(entry(t, idx, ct, c)).(error)
		idx++
		if !errors.Is(err, want) || !strings.Contains(api.Message(err), msg) {
			t.Fatalf("%s = %v; want %v saying %q", ct, err, want, msg)
		}
		if after := stateJSON(t, f); !bytes.Equal(before, after) {
			t.Fatalf("a refused %s changed the state", ct)
		}
	}
	refused(CmdAddonUpgrade, cmd, api.ErrConflict, "addon u-app-1 has operation op-u-app-1 (provision) in progress")
	prov.State = api.OpDone
	f.Apply(entry(t, idx, CmdOperationUpdate, OperationUpdateCmd{Operation: prov, AddonStatus: api.AddonRunning}))
	idx++
	wrongApp := cmd
	wrongApp.App = "other"
	refused(CmdAddonUpgrade, wrongApp, api.ErrNotFound, "app other has no addon u-app-1")
	unknown := cmd
	unknown.Operation.Upgrade.Version = "9.9.9"
	refused(CmdAddonUpgrade, unknown, api.ErrInvalid, "unknown engine version valkey-9.9.9")
	refused(CmdMemberVersion, MemberVersionCmd{AddonID: "u-app-1", Set: []MemberVersionTo{{MemberID: "u-app-1-redis-1", Engine: api.EngineValkey, Version: "8.0.1"}}, Operation: op},
		api.ErrConflict, "operation op-up is not active")

	res := f.Apply(entry(t, idx, CmdAddonUpgrade, cmd))
	idx++
	if a, ok := res.(api.Addon); !ok || a.Status != api.AddonUpdating || a.Engine != api.EngineRedis {
		t.Fatalf("upgrade = %#v", res)
	}
	again := cmd
	again.Operation.ID = "op-up-2"
	refused(CmdAddonUpgrade, again, api.ErrConflict, "addon u-app-1 has operation op-up (upgrade) in progress")
	assertRoundTrip(t, f)

	images := func(host string) map[string]string {
		out := map[string]string{}
		f.Read(func(s *State, _ uint64) {
			for _, as := range assignmentsFor(s, host) {
				out[as.MemberID] = fmt.Sprintf("%s %s %s stopped=%v", as.Engine, as.Version, as.Image, as.Stopped)
			}
		})
		return out
	}
	step := func(c MemberVersionCmd) {
		t.Helper()
		c.AddonID, c.Operation = "u-app-1", op
		if err, _ := f.Apply(entry(t, idx, CmdMemberVersion, c)).(error); err != nil {
			t.Fatalf("member version %+v: %v", c, err)
		}
		idx++
	}
	// The replica moves; the primary and the haproxys do not.
	refused(CmdMemberVersion, MemberVersionCmd{AddonID: "u-app-1", Set: []MemberVersionTo{{MemberID: "u-app-1-redis-9", Engine: api.EngineValkey, Version: "8.0.1"}}, Operation: op},
		api.ErrNotFound, "addon u-app-1 has no member u-app-1-redis-9")
	refused(CmdMemberVersion, MemberVersionCmd{AddonID: "u-app-1", Set: []MemberVersionTo{{MemberID: "u-app-1-redis-1", Engine: api.EngineValkey, Version: "7.0.0"}}, Operation: op},
		api.ErrInvalid, "unknown engine version valkey-7.0.0")
	step(MemberVersionCmd{Set: []MemberVersionTo{{MemberID: "u-app-1-redis-1", Engine: api.EngineValkey, Version: "8.0.1"}}})
	if got := images("h2"); got["u-app-1-redis-1"] != "valkey 8.0.1 "+api.ImageValkey8+" stopped=false" || got["u-app-1-haproxy-1"] != "redis 7.0.15 "+api.ImageHAProxy+" stopped=false" {
		t.Fatalf("h2 after the replica's step: %v", got)
	}
	if got := images("h1"); got["u-app-1-redis-0"] != "redis 7.0.15 "+api.ImageRedis7+" stopped=false" {
		t.Fatalf("h1 after the replica's step: %v", got)
	}
	// Stop, then start on a version; move the VIP.
	step(MemberVersionCmd{Stop: []string{"u-app-1-redis-0"}})
	if got := images("h1"); got["u-app-1-redis-0"] != "redis 7.0.15 "+api.ImageRedis7+" stopped=true" {
		t.Fatalf("stopped: %v", got)
	}
	step(MemberVersionCmd{Set: []MemberVersionTo{{MemberID: "u-app-1-redis-0", Engine: api.EngineValkey, Version: "8.0.1"}}, Holder: "u-app-1-haproxy-1"})
	if got := images("h1"); got["u-app-1-redis-0"] != "valkey 8.0.1 "+api.ImageValkey8+" stopped=false" {
		t.Fatalf("started on the new version: %v", got)
	}
	f.Read(func(s *State, _ uint64) {
		for _, m := range s.Addons["u-app-1"].Members {
			if m.Role == api.RoleHAProxy && m.Active != (m.ID == "u-app-1-haproxy-1") {
				t.Fatalf("VIP holder: %+v", s.Addons["u-app-1"].Members)
			}
		}
	})
	assertRoundTrip(t, f)
	// The addon's version: every member on it, none with its own.
	step(MemberVersionCmd{Engine: api.EngineValkey, Version: "8.0.1"})
	f.Read(func(s *State, _ uint64) {
		a := s.Addons["u-app-1"]
		if a.Engine != api.EngineValkey || a.Version != "8.0.1" {
			t.Fatalf("addon on %s %s", a.Engine, a.Version)
		}
		for _, m := range a.Members {
			if m.Engine != "" || m.Version != "" || m.Stopped {
				t.Fatalf("member %+v keeps its own version", m)
			}
		}
	})
	if got := images("h2"); got["u-app-1-redis-1"] != "valkey 8.0.1 "+api.ImageValkey8+" stopped=false" {
		t.Fatalf("h2 after the record: %v", got)
	}
	assertRoundTrip(t, f)
}

// TestEngineUpgradeThroughTheAPI: a real coordinator and a real
// redis-server as a starter's node (a test agent heartbeats it). The
// refusals answer 4xx with one line and change nothing; an upgrade
// starts (202), the engine saves the node (BGSAVE on the real server),
// sets its version (the assignment names the new image), then waits for
// it on the new version (the test agent cannot run it: the step says what
// it found); cancelled, the addon runs again with the member's version
// kept and the account in the operation. A node that does not answer is
// refused unless --may-discard-data.
func TestEngineUpgradeThroughTheAPI(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not installed (make deps)")
	}
	_, cfg := startTestCoordinator(t, "127.0.0.56")
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	peer := api.NewClient(cfg.Socket)
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.57", MemoryMB: 2048}); err != nil {
		t.Fatal(err)
	}
	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "upg-app", Type: "redis", Plan: "redis-starter-256"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Addon.ID
	var as, hp api.Assignment
	testutil.WaitFor(t, 10*time.Second, func() error {
		a, err := peer.Assignments(ctx, "h1", 0, 0)
		if err != nil || len(a.Assignments) != 2 {
			return fmt.Errorf("assignments %+v, %v", a, err)
		}
		as, hp = a.Assignments[0], a.Assignments[1]
		return nil
	})
	addr := net.JoinHostPort(as.Address, strconv.Itoa(as.Port))
	stopRedis := startRedisProc(t, as)
	startEntrypoint(t, hp)
	rc := redis.NewClient(&redis.Options{Addr: addr, Password: as.Password.Reveal(), MaxRetries: -1})
	defer rc.Close()
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			_, _ = peer.Heartbeat(agentCtx, api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{
				{MemberID: as.MemberID, AddonID: as.AddonID, Role: as.Role, State: api.MemberRunning, RedisRole: "master", StartedAt: t0},
				{MemberID: hp.MemberID, AddonID: hp.AddonID, Role: hp.Role, State: api.MemberRunning, StartedAt: t0}}})
			select {
			case <-agentCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stopAgent(); <-agentDone }()
	waitStatus := func(want api.AddonStatus) api.Addon {
		t.Helper()
		var a api.Addon
		testutil.WaitFor(t, 20*time.Second, func() error {
			a, err = admin.Addon(ctx, id)
			if err != nil || a.Status != want {
				return fmt.Errorf("addon %s: %s, %v", id, a.Status, err)
			}
			return nil
		})
		return a
	}
	waitStatus(api.AddonRunning)
	opsBefore, err := admin.Operations(ctx, "upg-app", "")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		app, id, to string
		status      int
		want        string
	}{
		{"upg-app", id, "redis-7.0.15", 400, "is already on redis-7.0.15; nothing to upgrade"},
		{"upg-app", id, "valkey-8.1.1", 400, "upgrade to valkey-8.0.1 first"},
		{"upg-app", id, "valkey-9.0.0", 400, `unknown engine version "valkey-9.0.0"`},
		{"upg-app", id, "", 400, "engine version is missing"},
		{"other-app", id, "valkey-8.0.1", 404, "app other-app has no addon " + id},
		{"upg-app", "Bad id!", "valkey-8.0.1", 400, "addon id"},
	} {
		_, err := admin.AddonEngineUpgrade(ctx, tc.id, api.EngineUpgradeRequest{App: tc.app, To: tc.to})
		if api.HTTPStatus(err) != tc.status || !strings.Contains(api.Message(err), tc.want) || strings.Contains(api.Message(err), "\n") {
			t.Errorf("upgrade %s to %q: %v (%d); want %d saying %q", tc.id, tc.to, err, api.HTTPStatus(err), tc.status, tc.want)
		}
	}
	if ops, _ := admin.Operations(ctx, "upg-app", ""); len(ops) != len(opsBefore) {
		t.Fatalf("a refusal started an operation: %d -> %d", len(opsBefore), len(ops))
	}

	// The node does not answer: SAVE cannot capture its writes.
	stopRedis()
	_, err = admin.AddonEngineUpgrade(ctx, id, api.EngineUpgradeRequest{App: "upg-app", To: "valkey-8.0.1"})
	if api.HTTPStatus(err) != http.StatusConflict || !strings.Contains(api.Message(err), "does not answer") || !strings.Contains(api.Message(err), "--may-discard-data") {
		t.Fatalf("upgrade of a node that does not answer: %v", err)
	}
	if a, _ := admin.Addon(ctx, id); a.Status != api.AddonRunning || a.Engine != api.EngineRedis {
		t.Fatalf("refused upgrade changed the addon: %+v", a)
	}
	startRedisProc(t, as) // empty: 50 keys
	testutil.WaitFor(t, 5*time.Second, func() error { return rc.Ping(ctx).Err() })
	for i := 0; i < 50; i++ {
		if err := rc.Set(ctx, "k"+strconv.Itoa(i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	up, err := admin.AddonEngineUpgrade(ctx, id, api.EngineUpgradeRequest{App: "upg-app", To: "valkey-8.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// The same HAProxy image on both versions: the haproxy is not upgraded.
	wantSteps := []string{"save " + as.MemberID, "upgrade " + as.MemberID, "wait " + as.MemberID, "record version", "notify app", "mark running"}
	if up.Addon.Status != api.AddonUpdating || up.Operation.Kind != api.OpUpgrade || !slices.Equal(stepNamesOf(up.Operation), wantSteps) ||
		up.Operation.Upgrade.Keys != 50 || up.Operation.Upgrade.Primary != as.MemberID || !up.Operation.Upgrade.Rolling {
		t.Fatalf("upgrade answer %+v", up)
	}
	if !strings.Contains(up.Message, "from redis-7.0.15 to valkey-8.0.1 (switch upgrade, rolling): its node restarts once") {
		t.Errorf("message %q", up.Message)
	}
	if _, err := admin.AddonEngineUpgrade(ctx, id, api.EngineUpgradeRequest{App: "upg-app", To: "valkey-8.0.1"}); api.HTTPStatus(err) != http.StatusConflict ||
		!strings.Contains(api.Message(err), "has operation "+up.Operation.ID+" (upgrade) in progress") {
		t.Errorf("a second upgrade during the first: %v", err)
	}
	// Saved (a real BGSAVE), set (the assignment names valkey), waiting.
	var op api.Operation
	testutil.WaitFor(t, 20*time.Second, func() error {
		op = operationOf(t, admin, up.Operation.ID)
		if i := op.CurrentStep(); i != 2 || !strings.Contains(op.Steps[2].Detail, "runs redis 7.0.15, want valkey 8.0.1") {
			return fmt.Errorf("at step %d: %+v", i, op.Steps)
		}
		return nil
	})
	if s := op.Steps[0]; s.State != api.OpDone || !strings.Contains(s.Detail, "saved its data") || s.Attempts != 1 {
		t.Errorf("save step %+v", s)
	}
	if info, err := rc.Info(ctx, "persistence").Result(); err != nil || !strings.Contains(info, "rdb_saves:1") {
		t.Errorf("the node did not save: %v", err)
	}
	if set, ok := op.Upgrade.SetOf(as.MemberID); !ok || !set.RunningSince.Equal(t0) {
		t.Errorf("member set record %+v", op.Upgrade.Set)
	}
	a, err := peer.Assignments(ctx, "h1", 0, 0)
	if err != nil || len(a.Assignments) != 2 || a.Assignments[0].Image != api.ImageValkey8 || a.Assignments[0].Engine != api.EngineValkey {
		t.Fatalf("assignment after the step: %+v, %v", a, err)
	}
	if _, err := admin.OperationCancel(ctx, up.Operation.ID); err != nil {
		t.Fatal(err)
	}
	got := waitStatus(api.AddonRunning)
	op = operationOf(t, admin, up.Operation.ID)
	if op.State != api.OpCancelled || !strings.Contains(op.Error, "; "+as.MemberID+" run valkey-8.0.1, the others redis-7.0.15: upgrade again to finish") {
		t.Fatalf("cancelled operation %s: %s", op.State, op.Error)
	}
	if got.Engine != api.EngineRedis || len(got.Members) != 2 || got.Members[0].Engine != api.EngineValkey {
		t.Fatalf("after the cancel: %+v", got)
	}

	// With --may-discard-data a node that does not answer is upgraded:
	// no BGSAVE (nothing answers it), the step says so.
	stopRedis2 := func() { _ = rc.Do(ctx, "SHUTDOWN", "NOSAVE").Err() }
	stopRedis2()
	up, err = admin.AddonEngineUpgrade(ctx, id, api.EngineUpgradeRequest{App: "upg-app", To: "valkey-8.0.1", MayDiscardData: true})
	if err != nil {
		t.Fatalf("upgrade with --may-discard-data: %v", err)
	}
	if !up.Operation.Upgrade.MayDiscardData || up.Operation.Upgrade.Keys != -1 {
		t.Fatalf("upgrade record %+v", up.Operation.Upgrade)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		op = operationOf(t, admin, up.Operation.ID)
		if i := op.CurrentStep(); i < 2 {
			return fmt.Errorf("at step %d: %+v", i, op.Steps)
		}
		return nil
	})
	if s := op.Steps[0]; !strings.Contains(s.Detail, "not saved") || !strings.Contains(s.Detail, "--may-discard-data allows") {
		t.Errorf("save step %+v", s)
	}
	if s := op.Steps[1]; !strings.Contains(s.Detail, "already set to valkey-8.0.1") {
		t.Errorf("set step, the member already on the version: %+v", s)
	}
}

func stepNamesOf(op api.Operation) []string {
	out := make([]string, len(op.Steps))
	for i, s := range op.Steps {
		out[i] = s.Name
	}
	return out
}

// startRedisProc runs a real redis-server for as (save rules off: the
// snapshots are the test's) and returns a func that kills it.
func startRedisProc(t *testing.T, as api.Assignment) func() {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf("bind %s\nport %d\ndir %s\n%ssave \"\"\n", as.Address, as.Port, dir, testUsers(as))
	path := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", path)
	cmd.Stdout, cmd.Stderr = testutil.Writer(t), testutil.Writer(t)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-done
	}
	t.Cleanup(stop)
	testutil.WaitFor(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(as.Address, strconv.Itoa(as.Port)), 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return stop
}

// TestLeaderMergesTheEngineCatalog: a cluster whose stored catalog is an
// older release's (one version, no rule data) learns this release's
// versions when a coordinator becomes leader; what it stored is kept.
func TestLeaderMergesTheEngineCatalog(t *testing.T) {
	c, cfg := startTestCoordinator(t, "127.0.0.58")
	ctx := context.Background()
	old := []api.EngineVersion{{Engine: api.EngineRedis, Version: "7.0.15", Default: true, Images: map[api.Role]string{
		api.RoleRedis: "old.local/redis:7", api.RoleSentinel: "old.local/sentinel:7", api.RoleHAProxy: "old.local/haproxy"}}}
	if _, err := c.store.Apply(ctx, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: old}); err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	c2, err := Start(cfg, testutil.Logger(t), testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	admin := api.NewClient(cfg.Socket)
	var got []api.EngineVersion
	testutil.WaitFor(t, 10*time.Second, func() error {
		got, err = admin.Engines(ctx)
		if err != nil || len(got) != len(api.DefaultEngines()) {
			return fmt.Errorf("engines %d, %v", len(got), err)
		}
		return nil
	})
	if got[0].Images[api.RoleRedis] != "old.local/redis:7" || !got[0].Default || got[0].RDB != 10 {
		t.Fatalf("stored version %+v: want its images and default kept, its rule data refreshed", got[0])
	}
	for _, e := range got[1:] {
		if e.Default {
			t.Fatalf("a second default: %+v", e)
		}
	}
}
