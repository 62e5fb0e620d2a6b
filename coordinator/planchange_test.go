package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// TestAddonPlanChange: the command records the new plan (the agents'
// assignments carry its memory at once) with its operation, only for a
// running addon without another operation and a plan of the catalog; a
// refused entry changes nothing; snapshot round trip.
func TestAddonPlanChange(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()}))
	f.Apply(entry(t, 2, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h1", Address: "127.0.0.11", MemoryMB: 4096, State: api.HostReady}}))
	create := testAddon("p-app", "p-app-1", "")
	f.Apply(entry(t, 3, CmdAddonCreate, create))
	prov := create.Operation
	prov.State = api.OpRunning
	f.Apply(entry(t, 4, CmdAddonPlaced, AddonPlacedCmd{AddonID: "p-app-1", Entrypoint: "127.0.0.11:20000", Operation: prov,
		Members: []api.Member{{ID: "p-app-1-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 20000, RedisRole: "primary"}}}))

	op := api.Operation{ID: "op-plan", AddonID: "p-app-1", App: "p-app", Kind: api.OpPlanChange, State: api.OpRunning,
		Steps: operation.PlanChangeSteps(api.PlanStarter, api.PlanStarter), Change: operation.PlanChange("redis-starter-256", "redis-starter-1024"), CreatedAt: t0, UpdatedAt: t0}
	cmd := AddonPlanChangeCmd{AddonID: "p-app-1", App: "p-app", Plan: "redis-starter-1024", Operation: op, At: t0}
	idx := uint64(5)
	refused := func(c AddonPlanChangeCmd, want error, msg string) {
		t.Helper()
		before := stateJSON(t, f)
		err, _ := f.Apply(entry(t, idx, CmdAddonPlanChange, c)).(error)
		idx++
		if !errors.Is(err, want) || !strings.Contains(api.Message(err), msg) {
			t.Fatalf("plan change = %v; want %v saying %q", err, want, msg)
		}
		if after := stateJSON(t, f); !bytes.Equal(before, after) {
			t.Fatalf("a refused plan change changed the state")
		}
	}
	refused(cmd, api.ErrConflict, "addon p-app-1 has operation op-p-app-1 (provision) in progress")

	prov.State = api.OpDone
	f.Apply(entry(t, idx, CmdOperationUpdate, OperationUpdateCmd{Operation: prov, AddonStatus: api.AddonRunning}))
	idx++
	wrongApp := cmd
	wrongApp.App = "other-app"
	refused(wrongApp, api.ErrNotFound, "app other-app has no addon p-app-1")
	unknown := cmd
	unknown.Plan = "redis-starter-300"
	refused(unknown, api.ErrInvalid, `unknown plan "redis-starter-300"`)

	res := f.Apply(entry(t, idx, CmdAddonPlanChange, cmd))
	idx++
	if a, ok := res.(api.Addon); !ok || a.Plan != "redis-starter-1024" || a.Status != api.AddonUpdating {
		t.Fatalf("plan change = %#v", res)
	}
	f.Read(func(s *State, _ uint64) {
		if o, ok := s.activeOperation("p-app-1"); !ok || o.ID != "op-plan" || o.Change != "plan redis-starter-256 -> redis-starter-1024" {
			t.Fatalf("active operation = %+v, %v", o, ok)
		}
		as := assignmentsFor(s, "h1")
		if len(as) != 1 || as[0].PlanMemoryMB != 1024 {
			t.Fatalf("assignments after the plan change = %+v; want plan memory 1024", as)
		}
	})
	again := cmd
	again.Operation.ID = "op-plan-2"
	refused(again, api.ErrConflict, "addon p-app-1 has operation op-plan (plan-change) in progress")
	assertRoundTrip(t, f)

	// Once done, the addon runs on its new plan; a second change may start.
	op.State = api.OpDone
	f.Apply(entry(t, idx, CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonRunning}))
	idx++
	again.Plan = "redis-starter-512"
	if a, ok := f.Apply(entry(t, idx, CmdAddonPlanChange, again)).(api.Addon); !ok || a.Plan != "redis-starter-512" {
		t.Fatalf("second plan change refused")
	}
	assertRoundTrip(t, f)
}

// hookScript writes a script that records its environment's hook
// variables into out (and appends a line to out.runs per run), exiting
// with code.
func hookScript(t *testing.T, dir string) []string {
	t.Helper()
	script := filepath.Join(dir, "notify-app.sh")
	body := "#!/bin/sh\nout=\"$1\"\n" +
		"env | grep -E '^(CACHEPLANE_(ADDON_ID|APP|CHANGE|OPERATION_ID)|REDIS_URL)=' | sort > \"$out.tmp\" && mv \"$out.tmp\" \"$out\"\n" +
		"echo run >> \"$out.runs\"\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return []string{script, filepath.Join(dir, "hook-env")}
}

// hookServer is a local webhook receiver: it records each body and
// answers 500 while failing is set.
type hookServer struct {
	*httptest.Server
	failing atomic.Bool
	mu      sync.Mutex
	bodies  []api.AppHookEvent
	auth    []string
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev api.AppHookEvent
		err := json.NewDecoder(r.Body).Decode(&ev)
		if r.Method != http.MethodPost || r.URL.Path != "/hooks/secret-token" || r.Header.Get("Content-Type") != "application/json" || err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, ev)
		u, p, _ := r.BasicAuth()
		h.auth = append(h.auth, u+":"+p)
		h.mu.Unlock()
		if h.failing.Load() {
			http.Error(w, "down for maintenance", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hookServer) received() []api.AppHookEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]api.AppHookEvent(nil), h.bodies...)
}

// TestAppHookRuns: the hook command gets the change in its environment,
// the webhook gets it as JSON; failures and timeouts are reported without
// a secret (the addon's password, the webhook's credentials and path).
func TestAppHookRuns(t *testing.T) {
	dir := t.TempDir()
	srv := newHookServer(t)
	hookURL := strings.Replace(srv.URL, "http://", "http://hookuser:hooksecret@", 1) + "/hooks/secret-token"
	cfg := DefaultConfig()
	cfg.AppHookCommand, cfg.AppHookURL = hookScript(t, dir), hookURL
	if err := cfg.validateAppHook(); err != nil {
		t.Fatal(err)
	}
	h := newAppHook(cfg)
	if d := h.describe(); d != "command "+cfg.AppHookCommand[0]+"; webhook "+srv.URL {
		t.Fatalf("describe = %q", d)
	}
	const pw = "redis-password-0123456789"
	ev := api.AppHookEvent{AddonID: "a-1", App: "a", Change: "plan redis-starter-256 -> redis-starter-1024",
		RedisURL: "redis://default:" + pw + "@127.0.0.1:20000", OperationID: "op-1", Kind: api.OpPlanChange}
	if err := h.run(context.Background(), ev); err != nil {
		t.Fatalf("run: %v", err)
	}
	env, err := os.ReadFile(cfg.AppHookCommand[1])
	if err != nil {
		t.Fatal(err)
	}
	want := "CACHEPLANE_ADDON_ID=a-1\nCACHEPLANE_APP=a\nCACHEPLANE_CHANGE=plan redis-starter-256 -> redis-starter-1024\nCACHEPLANE_OPERATION_ID=op-1\nREDIS_URL=" + ev.RedisURL + "\n"
	if string(env) != want {
		t.Fatalf("the command's environment:\n%s\nwant:\n%s", env, want)
	}
	if got := srv.received(); len(got) != 1 || got[0] != ev || srv.auth[0] != "hookuser:hooksecret" {
		t.Fatalf("webhook received %+v (auth %v)", got, srv.auth)
	}

	noSecret := func(s string) {
		t.Helper()
		for _, secret := range []string{pw, "hooksecret", "secret-token", ev.RedisURL} {
			if strings.Contains(s, secret) {
				t.Fatalf("%q holds a secret (%s)", s, secret)
			}
		}
	}
	// A failing webhook and a failing command: both named, nothing secret.
	srv.failing.Store(true)
	bad := h
	bad.command = []string{"/bin/sh", "-c", "echo the url is $REDIS_URL; exit 3"}
	err = bad.run(context.Background(), ev)
	if err == nil || !strings.Contains(err.Error(), "command /bin/sh: exit status 3: the url is [redacted]") ||
		!strings.Contains(err.Error(), "webhook "+srv.URL+" answered 500 Internal Server Error") {
		t.Fatalf("failing hook: %v", err)
	}
	noSecret(err.Error())
	// Nobody listening: the cause, not the URL.
	dead := h
	dead.command = nil
	dead.url = "https://user:hooksecret@" + net.JoinHostPort("127.0.0.1", strconv.Itoa(testutil.FreePort(t, "127.0.0.1"))) + "/hooks/secret-token"
	err = dead.run(context.Background(), ev)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("webhook nobody listens on: %v", err)
	}
	noSecret(err.Error())
	// A command that hangs is killed at the timeout, with its children.
	slow := h
	slow.url, slow.timeout = "", 300*time.Millisecond
	slow.command = []string{"/bin/sh", "-c", "sleep 30 & sleep 30"}
	start := time.Now()
	err = slow.run(context.Background(), ev)
	if err == nil || !strings.Contains(err.Error(), "no answer within 300ms (killed)") || time.Since(start) > 5*time.Second {
		t.Fatalf("hanging command: %v after %s", err, time.Since(start))
	}

	// Config validation: a message never repeats the URL.
	for _, tc := range []struct {
		edit func(c *Config)
		want string
	}{
		{func(c *Config) { c.AppHookURL = "ftp://user:hooksecret@host/secret-token" }, "app_hook_url: want an http:// or https:// URL with a host"},
		{func(c *Config) { c.AppHookURL = "https:///secret-token" }, "app_hook_url: want"},
		{func(c *Config) { c.AppHookCommand = []string{filepath.Join(dir, "missing")} }, "is not an executable file"},
		{func(c *Config) { c.AppHookCommand = []string{""} }, "the program (first element) is empty"},
		{func(c *Config) { c.AppHookTimeout = 0 }, "app_hook_timeout must be positive"},
		{func(c *Config) { c.AppHookAttempts = 0 }, "app_hook_attempts must be at least 1"},
	} {
		c := DefaultConfig()
		tc.edit(&c)
		err := c.validateAppHook()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate: %v; want %q", err, tc.want)
			continue
		}
		noSecret(err.Error())
	}
}

// TestPlanChangeTellsTheApp runs a plan change through a real coordinator
// with a real redis-server (this test plays the agent: it heartbeats and
// resizes the server as its assignment says): refusals first, then the
// change with the app told through a real command and a real webhook,
// then a change whose webhook keeps failing, which still finishes, with
// the failure in its step. Nothing secret reaches the log.
func TestPlanChangeTellsTheApp(t *testing.T) {
	dir := t.TempDir()
	srv := newHookServer(t)
	hookURL := strings.Replace(srv.URL, "http://", "http://hookuser:hooksecret@", 1) + "/hooks/secret-token"
	var logs syncBuf
	cfg := DefaultConfig()
	cfg.ID = "c1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Socket = filepath.Join(dir, "admin.sock")
	cfg.RaftAddr = testutil.Addr(t, "127.0.0.48")
	cfg.HTTPAddr = testutil.Addr(t, "127.0.0.48")
	cfg.Bootstrap = true
	cfg.AppHookCommand, cfg.AppHookURL = hookScript(t, dir), hookURL
	cfg.AppHookAttempts, cfg.AppHookRetryAfter = 2, Duration(200*time.Millisecond)
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(&logs, testutil.Writer(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Start(cfg, log, testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	peer := api.NewClient(cfg.Socket)
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Plans(ctx); return err })
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.49", MemoryMB: 2048}); err != nil {
		t.Fatal(err)
	}
	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "hook-app", Type: "redis", Plan: "redis-starter-256"})
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
	startRedis(t, as)
	startEntrypoint(t, hp)
	rc := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(as.Address, strconv.Itoa(as.Port)), Username: redisctl.FleetUser, Password: as.FleetPassword.Reveal(), MaxRetries: -1})
	defer rc.Close()

	// The agent: heartbeats, and the live resize from the assignment.
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			if a, err := peer.Assignments(agentCtx, "h1", 0, 0); err == nil && len(a.Assignments) == 2 {
				_ = rc.ConfigSet(agentCtx, "maxmemory", strconv.Itoa(a.Assignments[0].PlanMemoryMB)+"mb").Err()
			}
			_, _ = peer.Heartbeat(agentCtx, api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{
				{MemberID: as.MemberID, AddonID: as.AddonID, Role: as.Role, State: api.MemberRunning, RedisRole: "master"},
				{MemberID: hp.MemberID, AddonID: hp.AddonID, Role: hp.Role, State: api.MemberRunning}}})
			select {
			case <-agentCtx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stopAgent(); <-agentDone }()
	waitStatus := func(want api.AddonStatus) {
		t.Helper()
		testutil.WaitFor(t, 20*time.Second, func() error {
			a, err := admin.Addon(ctx, id)
			if err != nil || a.Status != want {
				return fmt.Errorf("addon %s: %s, %v", id, a.Status, err)
			}
			return nil
		})
	}
	waitStatus(api.AddonRunning)

	// Refusals, before anything changes.
	for _, tc := range []struct {
		app, id, plan string
		status        int
		want          string
	}{
		{"hook-app", id, "redis-starter-256", 400, "is already on plan redis-starter-256"},
		{"hook-app", id, "redis-business-512", 422, "redis-business-512 needs 3 ready hosts (one per sentinel), found 1 (h1)"},
		{"hook-app", id, "redis-starter-999", 400, `unknown plan "redis-starter-999"`},
		{"hook-app", id, "redis-starter-2048", 422, "host h1 has 1735 MB free"},
		{"other-app", id, "redis-starter-512", 404, "app other-app has no addon " + id},
		{"hook-app", "Bad id!", "redis-starter-512", 400, "addon id"},
		{"", id, "redis-starter-512", 400, "app name"},
	} {
		_, err := admin.AddonPlanChange(ctx, tc.id, api.PlanChangeRequest{App: tc.app, Plan: tc.plan})
		if api.HTTPStatus(err) != tc.status || !strings.Contains(api.Message(err), tc.want) {
			t.Errorf("plan change %s %s: %v (%d); want %d saying %q", tc.id, tc.plan, err, api.HTTPStatus(err), tc.status, tc.want)
		}
	}

	// The change: recorded at once, resized live, the app told.
	pc, err := admin.AddonPlanChange(ctx, id, api.PlanChangeRequest{App: "hook-app", Plan: "redis-starter-512"})
	if err != nil {
		t.Fatal(err)
	}
	if pc.Addon.Plan != "redis-starter-512" || pc.Operation.Kind != api.OpPlanChange || pc.Operation.Steps[0].State != api.OpDone {
		t.Fatalf("plan change answer %+v", pc)
	}
	waitStatus(api.AddonRunning)
	op := operationOf(t, admin, pc.Operation.ID)
	wantSteps(t, op, map[string]string{
		operation.StepRecordPlan:    "redis-starter-256 -> redis-starter-512 recorded",
		operation.StepResizeMembers: "maxmemory 512mb on " + as.MemberID,
		operation.StepNotifyApp:     "app told (command " + cfg.AppHookCommand[0] + "; webhook " + srv.URL + "): ok",
	})
	env, err := os.ReadFile(cfg.AppHookCommand[1])
	if err != nil {
		t.Fatal(err)
	}
	url := RedisURL(api.Addon{Password: as.Password, Entrypoint: hp.Entrypoint})
	want := "CACHEPLANE_ADDON_ID=" + id + "\nCACHEPLANE_APP=hook-app\nCACHEPLANE_CHANGE=plan redis-starter-256 -> redis-starter-512\nCACHEPLANE_OPERATION_ID=" + op.ID + "\nREDIS_URL=" + url + "\n"
	if string(env) != want {
		t.Fatalf("the command's environment:\n%s\nwant:\n%s", scrubPW(string(env), as.Password.Reveal()), scrubPW(want, as.Password.Reveal()))
	}
	if got := srv.received(); len(got) != 1 || got[0] != (api.AppHookEvent{AddonID: id, App: "hook-app", Change: "plan redis-starter-256 -> redis-starter-512",
		RedisURL: url, OperationID: op.ID, Kind: api.OpPlanChange}) {
		t.Fatalf("webhook received %d events", len(got))
	}

	// A webhook that keeps failing: tried twice, then the change finishes
	// with the failure recorded; the addon runs on its new plan.
	srv.failing.Store(true)
	pc, err = admin.AddonPlanChange(ctx, id, api.PlanChangeRequest{App: "hook-app", Plan: "redis-starter-1024"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddonPlanChange(ctx, id, api.PlanChangeRequest{App: "hook-app", Plan: "redis-starter-256"}); api.HTTPStatus(err) != 409 ||
		!strings.Contains(api.Message(err), "has operation "+pc.Operation.ID+" (plan-change) in progress") {
		t.Errorf("a second change during the first: %v", err)
	}
	waitStatus(api.AddonRunning)
	op = operationOf(t, admin, pc.Operation.ID)
	wantSteps(t, op, map[string]string{
		operation.StepNotifyApp: "the app was NOT told (2 attempts failed; the change itself is done): app hook attempt 2 failed: webhook " + srv.URL + " answered 500 Internal Server Error",
	})
	if n := len(srv.received()); n != 3 {
		t.Errorf("webhook called %d times; want 1 + 2 attempts", n)
	}
	if a, _ := admin.Addon(ctx, id); a.Plan != "redis-starter-1024" {
		t.Errorf("plan after the change: %s", a.Plan)
	}
	if err := rc.Set(ctx, "still", "here", 0).Err(); err != nil {
		t.Errorf("write after the changes: %v", err)
	}
	opsJSON, _ := json.Marshal(op)
	for _, s := range []string{as.Password.Reveal(), as.FleetPassword.Reveal(), "hooksecret", "secret-token"} {
		if strings.Contains(logs.String(), s) || strings.Contains(string(opsJSON), s) {
			t.Errorf("a secret reached the log or the operations")
		}
	}
	if !strings.Contains(logs.String(), `"msg":"app hook failed"`) {
		t.Errorf("the hook's failure is not logged")
	}
}

func operationOf(t *testing.T, admin *api.Client, id string) api.Operation {
	t.Helper()
	ops, err := admin.Operations(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		if o.ID == id {
			return o
		}
	}
	t.Fatalf("no operation %s", id)
	return api.Operation{}
}

// wantSteps checks op is done, every step done once, and each named step's
// detail says what is given.
func wantSteps(t *testing.T, op api.Operation, details map[string]string) {
	t.Helper()
	if op.State != api.OpDone {
		t.Fatalf("operation %s is %s: %+v", op.ID, op.State, op.Steps)
	}
	for _, s := range op.Steps {
		if s.State != api.OpDone {
			t.Fatalf("step %q is %s", s.Name, s.State)
		}
		if want, ok := details[s.Name]; ok && !strings.Contains(s.Detail, want) {
			t.Errorf("step %q: %q; want %q", s.Name, s.Detail, want)
		}
	}
}

func scrubPW(s, pw string) string { return strings.ReplaceAll(s, pw, "PW") }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
