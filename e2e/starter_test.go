package e2e

// Starter addons end to end (issue 4, "How it is checked"): real
// coordinator and agent processes, real containerd and redis, real clients
// (redis-cli, go-redis, node-redis, ioredis). Every wait polls with a
// deadline; the URL (it holds the password) is never logged.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/packaging"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Addresses of this file's simulated hosts (no other test uses them).
const (
	starterCoordIP = "127.0.0.71"
	starterHost1IP = "127.0.0.72"
	starterHost2IP = "127.0.0.73"
	faultsCoordIP  = "127.0.0.74"
	faultsHostIP   = "127.0.0.75"
)

// starterKeys is how many keys the end-to-end test writes before the
// agent's kill -9.
const starterKeys = 10000

func starterKey(i int) string   { return fmt.Sprintf("key:%05d", i) }
func starterValue(i int) string { return fmt.Sprintf("value-%05d", i) }

// TestStarterEndToEnd: add a starter through the CLI; its URL works
// unchanged with redis-cli, go-redis, node-redis and ioredis; kill -9 of
// the hosting agent leaves redis running (same run_id, uptime counting,
// every key there) while the coordinator sees the host down then ready;
// filled outside cache mode it answers OOM and is not killed; cache mode
// and AOF are switched live; addons-remove leaves no container and no data.
func TestStarterEndToEnd(t *testing.T) {
	c := StartCoordinator(t, "c1", starterCoordIP, CoordinatorOpts{Bootstrap: true, ExtraArgs: []string{"--host-down-after", "1s"}})
	agents := map[string]*Agent{
		"h1": StartAgent(t, c, "h1", starterHost1IP, AgentOpts{}),
		"h2": StartAgent(t, c, "h2", starterHost2IP, AgentOpts{}),
	}
	const app = "starter-e2e"

	// --- add, wait running, find where it runs
	add := c.CLI("--json", "addons-add", "--app", app, "redis", "redis-starter-256")
	if add.Code != 0 {
		t.Fatalf("addons-add: %s", add)
	}
	var created api.AddonCreateResponse
	add.JSON(t, &created)
	addon := WaitForAddonStatus(t, c, app, api.AddonRunning, 90*time.Second)
	if len(addon.Members) != 2 || addon.Members[0].Role != api.RoleRedis || addon.Members[1].Role != api.RoleHAProxy ||
		addon.Members[0].HostID != addon.Members[1].HostID {
		t.Fatalf("a starter has one redis member and its haproxy on the same host, got %+v", addon.Members)
	}
	member, hap := addon.Members[0], addon.Members[1]
	host := agents[member.HostID]
	if host == nil {
		t.Fatalf("member %s placed on unknown host %q", member.ID, member.HostID)
	}
	if want := net.JoinHostPort(host.IP, strconv.Itoa(hap.Port)); addon.Entrypoint != want {
		t.Fatalf("entrypoint %s, want its haproxy's address %s (no VIP pool)", addon.Entrypoint, want)
	}
	t.Logf("addon %s: member %s on %s, entrypoint %s", addon.ID, member.ID, host.ID, addon.Entrypoint)

	// operations shows the provision done, every step done.
	prov := operationByID(t, c, app, created.OperationID)
	if prov.Kind != api.OpProvision || prov.State != api.OpDone {
		t.Fatalf("provision operation %s is %s %s, want provision done", prov.ID, prov.Kind, prov.State)
	}
	for _, s := range prov.Steps {
		if s.State != api.OpDone {
			t.Fatalf("provision step %q is %s (%s), want done", s.Name, s.State, s.Detail)
		}
	}
	if res := c.CLI("operations", "--app", app); res.Code != 0 || !strings.Contains(res.Stdout, prov.ID) ||
		!strings.Contains(res.Stdout, "provision") || !strings.Contains(res.Stdout, "done") {
		t.Fatalf("operations does not show provision %s done: %s", prov.ID, res)
	}

	// --- the URL from `env` works unchanged with four clients
	url, password := starterEnvURL(t, c, app)
	if !strings.Contains(url, addon.Entrypoint) {
		t.Fatalf("REDIS_URL does not point at the entrypoint %s", addon.Entrypoint)
	}
	checkRedisCLI(t, url, password)
	checkNodeClients(t, url, password)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("go-redis ParseURL(REDIS_URL): %s", scrub(err.Error(), password))
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	// The fleet's view of the member (CONFIG GET), through the same
	// entrypoint: the app's user may not run CONFIG.
	fopt := *opt
	fopt.Username, fopt.Password = redisctl.FleetUser, fleetCredential(t, addon.ID, agentList(agents)...)
	fleet := redis.NewClient(&fopt)
	defer fleet.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if pong, err := rc.Ping(ctx).Result(); err != nil || pong != "PONG" {
		t.Fatalf("go-redis PING through REDIS_URL = %q, %v", pong, err)
	}

	// --- 10,000 keys, pipelined
	for start := 0; start < starterKeys; start += 1000 {
		pipe := rc.Pipeline()
		for i := start; i < start+1000; i++ {
			pipe.Set(ctx, starterKey(i), starterValue(i), 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("write keys %d..%d: %v", start, start+999, err)
		}
	}
	checkStarterKeys(ctx, t, rc, "after writing them")
	before := serverInfo(ctx, t, rc)
	pidBefore := memberPid(t, host, member.ID)

	// --- kill -9 the hosting agent: redis keeps serving, the host goes down
	killedAt := time.Now()
	host.Kill()
	WaitForHostState(t, c, host.ID, api.HostDown, 30*time.Second)
	t.Logf("host %s seen down %s after the agent's kill -9", host.ID, time.Since(killedAt).Round(time.Millisecond))
	if err := rc.Set(ctx, "written-while-agent-down", "yes", 0).Err(); err != nil {
		t.Fatalf("redis must keep serving while its agent is dead: %v", err)
	}
	host.Restart()
	WaitForHostState(t, c, host.ID, api.HostReady, 30*time.Second)
	t.Logf("host %s ready again %s after the kill", host.ID, time.Since(killedAt).Round(time.Millisecond))
	waitMemberState(t, c, app, member.ID, api.MemberRunning, 30*time.Second)

	after := serverInfo(ctx, t, rc)
	if after["run_id"] != before["run_id"] {
		t.Fatalf("redis restarted with its agent: run_id %s -> %s", before["run_id"], after["run_id"])
	}
	if after["process_id"] != before["process_id"] {
		t.Fatalf("redis process changed with its agent: pid %s -> %s", before["process_id"], after["process_id"])
	}
	upBefore, upAfter := infoInt(t, before, "uptime_in_seconds"), infoInt(t, after, "uptime_in_seconds")
	if elapsed := int64(time.Since(killedAt) / time.Second); upAfter < upBefore+elapsed-1 {
		t.Fatalf("uptime_in_seconds %d -> %d over %d s: it did not keep counting", upBefore, upAfter, elapsed)
	}
	if p := memberPid(t, host, member.ID); p != pidBefore {
		t.Fatalf("container task pid %d -> %d: the restarted agent re-created the member", pidBefore, p)
	}
	checkStarterKeys(ctx, t, rc, "after the agent's kill -9 and restart")
	if v, err := rc.Get(ctx, "written-while-agent-down").Result(); err != nil || v != "yes" {
		t.Fatalf("key written while the agent was down: %q, %v", v, err)
	}

	// --- fill past the plan's memory outside cache mode: OOM, not killed
	if cm, err := fleet.ConfigGet(ctx, "maxmemory-policy").Result(); err != nil || cm["maxmemory-policy"] != "noeviction" {
		t.Fatalf("outside cache mode maxmemory-policy = %v, %v; want noeviction", cm, err)
	}
	big := strings.Repeat("x", 1<<20)
	oomAt := -1
	for i := 0; i < 1024; i++ { // 1 GiB of writes is far past 256 MB
		err := rc.Set(ctx, fmt.Sprintf("fill:%04d", i), big, 0).Err()
		if err == nil {
			continue
		}
		if !strings.Contains(err.Error(), "OOM command not allowed") {
			t.Fatalf("write %d past the plan's memory: %v; want Redis's OOM error", i, err)
		}
		oomAt = i
		break
	}
	if oomAt < 0 {
		t.Fatal("1 GiB written into a 256 MB starter without an OOM error")
	}
	mem := memoryInfo(ctx, t, rc)
	t.Logf("OOM after %d MB of values: used_memory %s, maxmemory %s", oomAt, mem["used_memory_human"], mem["maxmemory_human"])
	if max := infoInt(t, mem, "maxmemory"); max != 256<<20 {
		t.Fatalf("maxmemory = %d, want the plan's 256 MB", max)
	}
	if used := infoInt(t, mem, "used_memory"); used < 256<<20*9/10 {
		t.Fatalf("OOM with used_memory %d, below 90%% of the plan's 256 MB", used)
	}
	// Still refused a moment later, and small writes too: the limit holds.
	if err := rc.Set(ctx, "one-more", big, 0).Err(); err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Fatalf("write to a full starter: %v, want OOM", err)
	}
	// Not killed: same process, agent says running, keys all there.
	if info := serverInfo(ctx, t, rc); info["run_id"] != before["run_id"] {
		t.Fatalf("redis restarted when full: run_id %s -> %s", before["run_id"], info["run_id"])
	}
	if p := memberPid(t, host, member.ID); p != pidBefore {
		t.Fatalf("container task pid %d -> %d after filling it: OOM-killed?", pidBefore, p)
	}
	waitMemberState(t, c, app, member.ID, api.MemberRunning, 10*time.Second)
	checkStarterKeys(ctx, t, rc, "after filling the addon past its memory")
	dbsizeFull, err := rc.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}

	// --- cache mode on (CLI): writes succeed, old keys are evicted
	settingsChange(t, c, app, "--cache-mode", "on")
	if cm, err := fleet.ConfigGet(ctx, "maxmemory-policy").Result(); err != nil || cm["maxmemory-policy"] != "allkeys-lru" {
		t.Fatalf("cache mode on: maxmemory-policy = %v, %v; want allkeys-lru", cm, err)
	}
	for i := 0; i < 64; i++ {
		if err := rc.Set(ctx, fmt.Sprintf("cache:%04d", i), big, 0).Err(); err != nil {
			t.Fatalf("write %d in cache mode: %v", i, err)
		}
	}
	stats := infoSection(ctx, t, rc, "stats")
	if ev := infoInt(t, stats, "evicted_keys"); ev == 0 {
		t.Fatal("cache mode: 64 MB written into a full addon and no key evicted")
	}
	dbsize, err := rc.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if dbsize >= dbsizeFull+64 {
		t.Fatalf("cache mode: DBSIZE %d -> %d after 64 writes: nothing evicted", dbsizeFull, dbsize)
	}
	t.Logf("cache mode: evicted_keys %s, DBSIZE %d -> %d", stats["evicted_keys"], dbsizeFull, dbsize)

	// --- persistence aof, live
	settingsChange(t, c, app, "--persistence", "aof")
	if ao, err := fleet.ConfigGet(ctx, "appendonly").Result(); err != nil || ao["appendonly"] != "yes" {
		t.Fatalf("persistence aof: appendonly = %v, %v; want yes", ao, err)
	}
	if info := serverInfo(ctx, t, rc); info["run_id"] != before["run_id"] {
		t.Fatalf("settings changes restarted redis: run_id %s -> %s", before["run_id"], info["run_id"])
	}
	if p := memberPid(t, host, member.ID); p != pidBefore {
		t.Fatalf("container task pid %d -> %d after settings changes", pidBefore, p)
	}
	// The entrypoint (the URL's address) stayed the same throughout.
	if a := WaitForAddonStatus(t, c, app, api.AddonRunning, 10*time.Second); a.Entrypoint != addon.Entrypoint {
		t.Fatalf("entrypoint moved from %s to %s", addon.Entrypoint, a.Entrypoint)
	}
	if u, _ := starterEnvURL(t, c, app); u != url {
		t.Fatal("REDIS_URL changed during the addon's life")
	}
	rc.Close()

	// --- remove: no addon, no container, no data dir, no log
	rm := c.CLI("--json", "addons-remove", "--app", app, addon.ID)
	if rm.Code != 0 {
		t.Fatalf("addons-remove: %s", rm)
	}
	var removed api.AddonRemoveResponse
	rm.JSON(t, &removed)
	testutil.WaitFor(t, 60*time.Second, func() error {
		res := c.CLI("--json", "addons", "--app", app)
		if res.Code != 0 {
			return fmt.Errorf("addons: %s", res)
		}
		var as []api.Addon
		res.JSON(t, &as)
		if len(as) != 0 {
			return fmt.Errorf("app %s still has addon %s (%s)", app, as[0].ID, as[0].Status)
		}
		return nil
	})
	if op := operationByID(t, c, "", removed.Operation.ID); op.State != api.OpDone {
		t.Fatalf("remove operation %s is %s once the addon is gone: %+v", op.ID, op.State, op.Steps)
	}
	// The addon is forgotten only once its members and data are gone.
	for _, st := range host.Members() {
		if st.ID == member.ID {
			t.Fatalf("container %s still in namespace %s (%s) after the addon was removed", st.ID, host.Namespace, st.State)
		}
	}
	for _, p := range []string{
		filepath.Join(host.DataDir, "members", member.ID),
		filepath.Join(host.DataDir, "logs", member.ID+".log"),
	} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left after the addon was removed (stat: %v)", p, err)
		}
	}
	for _, a := range agents {
		if sts := a.Members(); len(sts) != 0 {
			t.Fatalf("agent %s still has containers after the only addon was removed: %+v", a.ID, sts)
		}
	}
}

// TestStarterFaults: a member that exits at start (its port is taken on
// the host) and an image that cannot be imported both stop the provision
// at "start members" with the runtime's reason in `operations`, and the
// addon is not running.
func TestStarterFaults(t *testing.T) {
	c := StartCoordinator(t, "c1", faultsCoordIP, CoordinatorOpts{Bootstrap: true, ExtraArgs: []string{"--host-down-after", "1s"}})
	// Occupy the port the scheduler gives the first member (the lowest
	// free from 20000) before the agent can start redis on it.
	l, err := net.Listen("tcp", net.JoinHostPort(faultsHostIP, "20000"))
	if err != nil {
		t.Fatalf("occupy %s:20000: %v", faultsHostIP, err)
	}
	defer l.Close()
	// The agent's image directory has every image, Valkey 8.0.1's file
	// corrupt on purpose: assigning it fails the import.
	a := StartAgent(t, c, "h1", faultsHostIP, AgentOpts{ExtraArgs: []string{"--image-dir", corruptImage(t, Images(t), api.ImageValkey8)}})

	t.Run("member exits at start", func(t *testing.T) {
		const app = "port-taken"
		op := addAndWaitFailed(t, c, app, "redis", "redis-starter-256")
		addon := WaitForAddonStatus(t, c, app, api.AddonError, 20*time.Second)
		if len(addon.Members) != 2 || addon.Members[0].Port != 20000 {
			t.Fatalf("expected the redis member on port 20000 (the taken one) and its haproxy, got %+v", addon.Members)
		}
		step := failedStep(t, op, "start members")
		// Redis's own last lines: it could not bind the taken address.
		for _, want := range []string{addon.Members[0].ID, "Address already in use", faultsHostIP + ":20000"} {
			if !strings.Contains(step.Detail, want) {
				t.Errorf("failed step's detail lacks %q:\n%s", want, step.Detail)
			}
		}
		res := c.CLI("operations", "--app", app)
		if res.Code != 0 || !strings.Contains(res.Stdout, "start members") || !strings.Contains(res.Stdout, "Address already in use") ||
			!strings.Contains(res.Stdout, "failed") {
			t.Fatalf("operations does not show the failed start with redis's reason: %s", res)
		}
		t.Logf("reason: %s", step.Detail)
		removeAndWait(t, c, a, app, addon.ID)
	})

	t.Run("image fails to import", func(t *testing.T) {
		const app = "bad-image"
		op := addAndWaitFailed(t, c, app, "--engine", "valkey-8.0.1", "redis", "redis-starter-256")
		WaitForAddonStatus(t, c, app, api.AddonError, 20*time.Second)
		step := failedStep(t, op, "start members")
		for _, want := range []string{"image", api.ImageValkey8, "import", "valkey-8.0.1.tar"} {
			if !strings.Contains(step.Detail, want) {
				t.Errorf("failed step's detail lacks %q:\n%s", want, step.Detail)
			}
		}
		t.Logf("reason: %s", step.Detail)
	})
}

// corruptImage makes an image directory holding every image of dir (the
// files linked, the index copied) but ref, whose file is garbage and
// whose digest in the index is not the one containerd may hold under
// that name, so an agent of this directory must import it, and fails.
func corruptImage(t testing.TB, dir, ref string) string {
	t.Helper()
	ix, err := packaging.ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	found := false
	for i, e := range ix.Images {
		dst := filepath.Join(out, e.File)
		if e.Ref != ref {
			if err := os.Symlink(filepath.Join(dir, e.File), dst); err != nil {
				t.Fatal(err)
			}
			continue
		}
		found = true
		ix.Images[i].ManifestDigest = "sha256:" + strings.Repeat("0", 64)
		if err := os.WriteFile(dst, []byte("not an image archive: corrupt on purpose\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatalf("%s lists no %s", dir, ref)
	}
	b, err := json.Marshal(ix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, packaging.IndexFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// addAndWaitFailed runs addons-add --app app args... and waits for its
// provision operation to fail.
func addAndWaitFailed(t *testing.T, c *Coordinator, app string, args ...string) api.Operation {
	t.Helper()
	res := c.CLI(append([]string{"--json", "addons-add", "--app", app}, args...)...)
	if res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	var created api.AddonCreateResponse
	res.JSON(t, &created)
	var op api.Operation
	testutil.WaitFor(t, 90*time.Second, func() error {
		op = operationByID(t, c, app, created.OperationID)
		switch op.State {
		case api.OpFailed:
			return nil
		case api.OpDone:
			t.Fatalf("provision %s succeeded, want it to fail: %+v", op.ID, op.Steps)
		}
		return fmt.Errorf("provision %s is %s: %+v", op.ID, op.State, op.Steps)
	})
	return op
}

// failedStep returns op's step name, checking it is the one that failed
// and that no later step ran.
func failedStep(t *testing.T, op api.Operation, name string) api.Step {
	t.Helper()
	i := op.CurrentStep()
	if i >= len(op.Steps) || op.Steps[i].Name != name || op.Steps[i].State != api.OpFailed {
		t.Fatalf("operation %s should stop at %q, steps: %+v", op.ID, name, op.Steps)
	}
	for _, s := range op.Steps[i+1:] {
		if s.State != api.OpPending {
			t.Fatalf("step %q after the failed one is %s", s.Name, s.State)
		}
	}
	if op.Error == "" {
		t.Fatalf("failed operation %s has no error", op.ID)
	}
	return op.Steps[i]
}

// removeAndWait removes the addon and waits until the app has none and the
// agent no container of it.
func removeAndWait(t *testing.T, c *Coordinator, a *Agent, app, id string) {
	t.Helper()
	if res := c.CLI("addons-remove", "--app", app, id); res.Code != 0 {
		t.Fatalf("addons-remove: %s", res)
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		as, err := c.Client().Addons(ctx, app, false)
		if err != nil {
			return err
		}
		if len(as) != 0 {
			return fmt.Errorf("addon %s still %s", as[0].ID, as[0].Status)
		}
		for _, st := range a.Members() {
			if st.Addon == id {
				return fmt.Errorf("container %s of %s still there (%s)", st.ID, id, st.State)
			}
		}
		return nil
	})
}

// ---------------------------------------------------------------------------
// Helpers of this file

// starterEnvURL runs `env --app app` and returns REDIS_URL and its
// password. Failures never print the output (it holds the password).
func starterEnvURL(t testing.TB, c *Coordinator, app string) (url, password string) {
	t.Helper()
	res := c.CLI("env", "--app", app)
	if res.Code != 0 {
		t.Fatalf("env --app %s: exit %d: %s", app, res.Code, res.Stderr)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(res.Stdout))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	url = vars["REDIS_URL"]
	if url == "" {
		t.Fatalf("env --app %s prints no REDIS_URL (names: %v)", app, keys(vars))
	}
	if vars["CACHEPLANE_REDIS_URL"] != url {
		t.Fatalf("env --app %s: CACHEPLANE_REDIS_URL differs from REDIS_URL", app)
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("REDIS_URL does not parse: %v", scrub(err.Error(), url))
	}
	if len(opt.Password) != 64 {
		t.Fatalf("the password has %d characters, want 64", len(opt.Password))
	}
	return url, opt.Password
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// scrub hides secret in s.
func scrub(s, secret string) string {
	if secret == "" {
		return s
	}
	return strings.ReplaceAll(s, secret, "<password>")
}

// checkRedisCLI runs the real redis-cli with -u URL, unchanged. redis-cli
// exits 0 even when AUTH fails, so the output must be PONG.
func checkRedisCLI(t testing.TB, url, password string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", "-u", url, "--no-auth-warning", "PING")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil || strings.TrimSpace(stdout.String()) != "PONG" {
		t.Fatalf("redis-cli -u REDIS_URL PING: %v; stdout %q; stderr %q", err,
			scrub(stdout.String(), password), scrub(stderr.String(), password))
	}
}

// checkNodeClients runs e2e/node/clients.js (node-redis and ioredis) with
// REDIS_URL in its environment.
func checkNodeClients(t testing.TB, url, password string) {
	t.Helper()
	checkNodeClientsEnv(t, url, password, nil)
}

// checkNodeClientsEnv is checkNodeClients with more environment (a CA for
// rediss://: NODE_EXTRA_CA_CERTS).
func checkNodeClientsEnv(t testing.TB, url, password string, extra map[string]string) {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "e2e", "node")
	for _, m := range []string{"redis", "ioredis"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", m)); err != nil {
			t.Fatalf("node module %s is missing: run `make deps-node` (%v)", m, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "clients.js")
	cmd.Dir = dir
	env := map[string]string{"REDIS_URL": url}
	for k, v := range extra {
		env[k] = v
	}
	cmd.Env = hermeticEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	out := scrub(stdout.String(), password)
	if runErr != nil {
		t.Fatalf("node clients.js: %v\nstdout: %s\nstderr: %s", runErr, out, scrub(stderr.String(), password))
	}
	ok := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	for sc.Scan() {
		var r struct {
			Client string `json:"client"`
			OK     bool   `json:"ok"`
		}
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			ok[r.Client] = r.OK
		}
	}
	if !ok["node-redis"] || !ok["ioredis"] {
		t.Fatalf("node clients.js: want node-redis and ioredis ok, got: %s", out)
	}
}

// checkStarterKeys reads every key the test wrote and checks its value.
func checkStarterKeys(ctx context.Context, t testing.TB, rc *redis.Client, when string) {
	t.Helper()
	const batch = 1000
	missing := 0
	for start := 0; start < starterKeys; start += batch {
		ks := make([]string, batch)
		for i := range ks {
			ks[i] = starterKey(start + i)
		}
		vs, err := rc.MGet(ctx, ks...).Result()
		if err != nil {
			t.Fatalf("%s: MGET %s..: %v", when, ks[0], err)
		}
		for i, v := range vs {
			if s, _ := v.(string); s != starterValue(start+i) {
				if missing == 0 {
					t.Errorf("%s: %s = %v, want %s", when, ks[i], v, starterValue(start+i))
				}
				missing++
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%s: %d of %d keys missing or wrong", when, missing, starterKeys)
	}
}

func infoSection(ctx context.Context, t testing.TB, rc *redis.Client, section string) map[string]string {
	t.Helper()
	s, err := rc.Info(ctx, section).Result()
	if err != nil {
		t.Fatalf("INFO %s: %v", section, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}

func serverInfo(ctx context.Context, t testing.TB, rc *redis.Client) map[string]string {
	return infoSection(ctx, t, rc, "server")
}

func memoryInfo(ctx context.Context, t testing.TB, rc *redis.Client) map[string]string {
	return infoSection(ctx, t, rc, "memory")
}

func infoInt(t testing.TB, m map[string]string, k string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(m[k], 10, 64)
	if err != nil {
		t.Fatalf("INFO %s = %q: %v", k, m[k], err)
	}
	return n
}

// memberPid is the pid of the member's running task as containerd sees it.
func memberPid(t testing.TB, a *Agent, id string) int {
	t.Helper()
	for _, st := range a.Members() {
		if st.ID == id {
			if st.State != runtime.StateRunning {
				t.Fatalf("member %s is %s in containerd, want running", id, st.State)
			}
			return st.Pid
		}
	}
	t.Fatalf("member %s has no container in %s", id, a.Namespace)
	return 0
}

// waitMemberState polls addons-stats until the agent reports the member in
// state.
func waitMemberState(t testing.TB, c *Coordinator, app, member, state string, timeout time.Duration) {
	t.Helper()
	cl := c.Client()
	testutil.WaitFor(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := cl.AddonStats(ctx, app)
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.MemberID == member {
				if m.State != state {
					return fmt.Errorf("member %s is %q, want %s", member, m.State, state)
				}
				return nil
			}
		}
		return fmt.Errorf("member %s not in addons-stats", member)
	})
}

// operationByID returns operation id from the operations list.
func operationByID(t testing.TB, c *Coordinator, app, id string) api.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ops, err := c.Client().Operations(ctx, app, "")
	if err != nil {
		t.Fatalf("operations: %v", err)
	}
	for _, o := range ops {
		if o.ID == id {
			return o
		}
	}
	t.Fatalf("operation %s not listed (app %q, %d operations)", id, app, len(ops))
	return api.Operation{}
}

// settingsChange runs addons-settings --app app flags... through the CLI
// and waits for its settings-change operation to be done.
func settingsChange(t testing.TB, c *Coordinator, app string, flags ...string) {
	t.Helper()
	res := c.CLI(append([]string{"--json", "addons-settings", "--app", app}, flags...)...)
	if res.Code != 0 {
		t.Fatalf("addons-settings: %s", res)
	}
	var r api.AddonSettingsResponse
	res.JSON(t, &r)
	if r.Operation.ID == "" {
		t.Fatalf("addons-settings %v started no operation: %s", flags, res)
	}
	start := time.Now()
	testutil.WaitFor(t, 60*time.Second, func() error {
		op := operationByID(t, c, app, r.Operation.ID)
		switch op.State {
		case api.OpDone:
			return nil
		case api.OpFailed:
			t.Fatalf("settings-change %v failed: %s %+v", flags, op.Error, op.Steps)
		}
		return fmt.Errorf("settings-change %s is %s: %+v", op.ID, op.State, op.Steps)
	})
	WaitForAddonStatus(t, c, app, api.AddonRunning, 10*time.Second)
	t.Logf("addons-settings %s: done in %s", strings.Join(flags, " "), time.Since(start).Round(time.Millisecond))
}
