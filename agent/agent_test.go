package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/packaging"
	"github.com/cacheplane/cacheplane/redisctl"
)

// hostIP is the simulated host's address (any 127.0.0.0/8 address works).
const hostIP = "127.0.0.31"

// password is a 64-character URL-safe password, as the coordinator makes.
const password = "Zq9vX2bT7mK4pL8sR1nW6yE3uA0cD5fGhJkQwErTyUiOpAsDfGhJkLzXcVbNm_-1"

// fleetPassword is the addon's fleet credential (redisctl.FleetUser).
const fleetPassword = "Fl9vX2bT7mK4pL8sR1nW6yE3uA0cD5fGhJkQwErTyUiOpAsDfGhJkLzXcVbNm_-2"

// helperEnv names the config file of a helper agent process: the test
// binary re-executed as a plain agent, so a test can kill -9 it.
const helperEnv = "CACHEPLANE_AGENT_TEST_HELPER"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(runHelper(path))
	}
	os.Exit(m.Run())
}

// runHelper runs an agent from the config file at path until killed.
func runHelper(path string) int {
	cfg, err := agent.LoadConfigFile(path, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	a, err := agent.New(ctx, cfg, agent.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = a.Run(ctx) // until SIGKILL
	return 0
}

var (
	imagesOnce sync.Once
	imagesDir  string
	imagesErr  error
)

// images returns the image dir: $CACHEPLANE_IMAGES, else <repo>/.dev/images,
// built there (as `make images` does) when missing.
func images(t *testing.T) string {
	t.Helper()
	imagesOnce.Do(func() {
		if d := os.Getenv("CACHEPLANE_IMAGES"); d != "" {
			imagesDir = d
		} else {
			wd, err := os.Getwd()
			if err != nil {
				imagesErr = err
				return
			}
			imagesDir = filepath.Join(filepath.Dir(wd), ".dev", "images")
		}
		if _, err := packaging.ReadIndex(imagesDir); err == nil {
			return
		}
		_, imagesErr = packaging.WriteDir(imagesDir, packaging.DefaultImages(), packaging.OptionalImage, nil)
	})
	if imagesErr != nil {
		t.Fatalf("images in %s: %v (build them with `go run ./packaging/cmd/build-images -out .dev/images`)", imagesDir, imagesErr)
	}
	return imagesDir
}

var containerdOnce sync.Once

// requireContainerd starts containerd with scripts/ensure-containerd.sh if
// it does not answer, and fails (never skips) when it still does not.
func requireContainerd(t *testing.T) {
	t.Helper()
	containerdOnce.Do(func() {
		if c, err := net.DialTimeout("unix", runtime.DefaultSocket, 2*time.Second); err == nil {
			c.Close()
			return
		}
		out, err := exec.Command("../scripts/ensure-containerd.sh").CombinedOutput()
		t.Logf("ensure-containerd: %s (%v)", out, err)
	})
	c, err := net.DialTimeout("unix", runtime.DefaultSocket, 2*time.Second)
	if err != nil {
		t.Fatalf("containerd is not running at %s (%v): start it with scripts/ensure-containerd.sh (make containerd)", runtime.DefaultSocket, err)
	}
	c.Close()
}

// ---------------------------------------------------------------------------
// A fake coordinator: the three agent endpoints, in memory.

type fakeCoordinator struct {
	srv *httptest.Server

	mu          sync.Mutex
	index       uint64
	changed     chan struct{}
	hosts       map[string]api.Host
	assignments map[string][]api.Assignment
	last        map[string]api.HeartbeatRequest
	heartbeats  int
}

func newFakeCoordinator(t *testing.T) *fakeCoordinator {
	f := &fakeCoordinator{
		index:       1,
		changed:     make(chan struct{}),
		hosts:       map[string]api.Host{},
		assignments: map[string][]api.Assignment{},
		last:        map[string]api.HeartbeatRequest{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/agent/register", f.register)
	mux.HandleFunc("POST /v1/agent/heartbeat", f.heartbeat)
	mux.HandleFunc("GET /v1/agent/assignments", f.assignmentsQuery)
	f.srv = newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hasClientCert(r) {
			writeErr(w, http.StatusUnauthorized, "unauthorized", "no client certificate")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCoordinator) addr() string { return strings.TrimPrefix(f.srv.URL, "https://") }

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeCoordinator) register(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterRequest
	if err := api.Decode(r.Body, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if err := req.Validate(); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	f.mu.Lock()
	h := req.Host
	h.State = api.HostReady
	f.hosts[h.ID] = h
	f.mu.Unlock()
	writeJSON(w, h)
}

func (f *fakeCoordinator) heartbeat(w http.ResponseWriter, r *http.Request) {
	var req api.HeartbeatRequest
	if err := api.Decode(r.Body, &req); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.hosts[req.HostID]; !ok {
		writeErr(w, http.StatusNotFound, "not_found", "host not registered")
		return
	}
	f.last[req.HostID] = req
	f.heartbeats++
	writeJSON(w, api.HeartbeatResponse{State: api.HostReady, Index: f.index})
}

func (f *fakeCoordinator) assignmentsQuery(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	host := q.Get("host")
	index, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, err := time.ParseDuration(q.Get("wait"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, "invalid", "wait")
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		f.mu.Lock()
		_, known := f.hosts[host]
		out := api.Assignments{HostID: host, Index: f.index, Assignments: append([]api.Assignment{}, f.assignments[host]...)}
		ch := f.changed
		f.mu.Unlock()
		if !known {
			writeErr(w, http.StatusNotFound, "not_found", "host not registered")
			return
		}
		if out.Index > index {
			writeJSON(w, out)
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			writeJSON(w, out)
			return
		case <-r.Context().Done():
			return
		}
	}
}

// assign replaces a host's assignments.
func (f *fakeCoordinator) assign(host string, as ...api.Assignment) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.assignments[host] = as
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

// member returns the last reported status of a member.
func (f *fakeCoordinator) member(host, id string) (api.MemberStatus, api.HeartbeatRequest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	hb, ok := f.last[host]
	if !ok {
		return api.MemberStatus{}, hb, errors.New("no heartbeat yet")
	}
	for _, m := range hb.Members {
		if m.MemberID == id {
			return m, hb, nil
		}
	}
	return api.MemberStatus{}, hb, fmt.Errorf("member %s not in the last heartbeat (%d members)", id, len(hb.Members))
}

// waitMember waits until the member's reported status satisfies ok.
func (f *fakeCoordinator) waitMember(t *testing.T, host, id string, timeout time.Duration, ok func(api.MemberStatus) error) api.MemberStatus {
	t.Helper()
	var got api.MemberStatus
	testutil.WaitFor(t, timeout, func() error {
		m, _, err := f.member(host, id)
		if err != nil {
			return err
		}
		if err := ok(m); err != nil {
			return fmt.Errorf("%s is %s (%q): %w", id, m.State, m.Detail, err)
		}
		got = m
		return nil
	})
	return got
}

func isState(want string) func(api.MemberStatus) error {
	return func(m api.MemberStatus) error {
		if m.State != want {
			return fmt.Errorf("want %s", want)
		}
		return nil
	}
}

// ---------------------------------------------------------------------------
// The agent under test.

var nsCount int

type host struct {
	id     string
	cfg    agent.Config
	coord  *fakeCoordinator
	cancel context.CancelFunc
	done   chan struct{}
	agent  *agent.Agent
	proc   *exec.Cmd
}

// newHost prepares a host (data dir, namespace) talking to coord; start
// runs an agent on it. Everything is purged when the test ends.
func newHost(t *testing.T, coord *fakeCoordinator) *host {
	t.Helper()
	requireContainerd(t)
	nsCount++
	h := &host{id: "host-1", coord: coord}
	dead := testutil.Addr(t, "127.0.0.1") // nothing listens: the agent must move on
	h.cfg = agent.DefaultConfig()
	h.cfg.HostID = h.id
	h.cfg.Address = hostIP
	h.cfg.MemoryMB = 4096
	h.cfg.Labels = map[string]string{"zone": "z1"}
	h.cfg.Coordinators = []string{dead, coord.addr()}
	h.cfg.DataDir = t.TempDir()
	giveIdentity(t, h.cfg.DataDir, h.id)
	h.cfg.ImageDir = images(t)
	h.cfg.Namespace = fmt.Sprintf("cpagent-%d-%d", os.Getpid(), nsCount)
	h.cfg.HeartbeatInterval = agent.Duration(200 * time.Millisecond)
	h.cfg.AssignmentsWait = agent.Duration(5 * time.Second)
	h.cfg.RestartDelay = agent.Duration(time.Second)
	h.cfg.LogLevel = "debug"
	t.Cleanup(func() {
		h.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		d, err := runtime.NewContainerd(ctx, runtime.Config{Namespace: h.cfg.Namespace, LogDir: filepath.Join(h.cfg.DataDir, "logs")})
		if err != nil {
			t.Errorf("cleanup of namespace %s: %v", h.cfg.Namespace, err)
			return
		}
		defer d.Close()
		if err := d.Purge(ctx); err != nil {
			t.Errorf("cleanup of namespace %s: %v", h.cfg.Namespace, err)
		}
	})
	return h
}

func (h *host) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.New(ctx, h.cfg, agent.Options{Logger: testutil.Logger(t)})
	if err != nil {
		cancel()
		t.Fatalf("new agent: %v", err)
	}
	h.agent, h.cancel, h.done = a, cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent run: %v", err)
		}
	}()
}

// startProcess runs the agent as a separate process (this test binary in
// helper mode), so that kill can SIGKILL it.
func (h *host) startProcess(t *testing.T) {
	t.Helper()
	b, err := json.Marshal(h.cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	cmd.Stdout, cmd.Stderr = testutil.Writer(t), testutil.Writer(t)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper agent: %v", err)
	}
	h.proc = cmd
	t.Cleanup(func() { h.kill(t) })
}

// kill SIGKILLs the agent process.
func (h *host) kill(t *testing.T) {
	if h.proc == nil {
		return
	}
	if err := h.proc.Process.Kill(); err != nil {
		t.Errorf("kill -9 agent: %v", err)
	}
	_ = h.proc.Wait()
	h.proc = nil
}

// stop stops the agent (members keep running).
func (h *host) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	_ = h.agent.Close()
	h.cancel = nil
}

// starter is a starter redis assignment on this host.
func (h *host) starter(t *testing.T, id string) api.Assignment {
	return api.Assignment{
		MemberID: id, AddonID: "my-app-" + id, App: "my-app", Role: api.RoleRedis,
		Address: hostIP, Port: testutil.FreePort(t, hostIP),
		Engine: api.EngineRedis, Version: "7.0.15", Image: api.ImageRedis7,
		PlanMemoryMB: 64, Password: api.NewSecret(password), FleetPassword: api.NewSecret(fleetPassword), Settings: api.Settings{Persistence: api.PersistenceRDB},
	}
}

// redisClient logs in as the fleet's user when as has a fleet credential,
// else as the app (the default user).
func redisClient(t *testing.T, as api.Assignment) *redis.Client {
	user, pw := "", as.Password.Reveal()
	if !as.FleetPassword.IsZero() {
		user, pw = redisctl.FleetUser, as.FleetPassword.Reveal()
	}
	c := redis.NewClient(&redis.Options{
		Addr: net.JoinHostPort(as.Address, strconv.Itoa(as.Port)), Username: user, Password: pw,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, MaxRetries: -1, DisableIdentity: true,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// runID reads run_id and process_id from INFO server.
func runID(c *redis.Client) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", 0, err
	}
	var id string
	var pid int
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "run_id:"); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	return id, pid, nil
}

func configGet(t *testing.T, c *redis.Client, key string) string {
	t.Helper()
	v, err := c.ConfigGet(ctxT(t), key).Result()
	if err != nil {
		t.Fatalf("CONFIG GET %s: %v", key, err)
	}
	return v[key]
}

// ---------------------------------------------------------------------------
// Tests

// A starter redis is started, answers PING with the password on the host's
// address, is reported running with pid, role and figures; settings change
// live without a restart; removing it destroys container and data.
func TestStarterLifecycle(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.start(t)
	as := h.starter(t, "m1")
	coord.assign(h.id, as)

	c := redisClient(t, as)
	testutil.WaitFor(t, 30*time.Second, func() error { return c.Ping(ctxT(t)).Err() })
	// No password, no access.
	anon := redis.NewClient(&redis.Options{Addr: c.Options().Addr, MaxRetries: -1, DisableIdentity: true})
	defer anon.Close()
	if err := anon.Set(ctxT(t), "k", "v", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("SET without a password: %v, want NOAUTH", err)
	}

	m := coord.waitMember(t, h.id, "m1", 10*time.Second, isState(api.MemberRunning))
	_, pid, err := runID(c)
	if err != nil {
		t.Fatal(err)
	}
	if m.Pid == 0 || m.StartedAt.IsZero() || m.RedisRole != "master" || m.SpecHash == "" || m.AddonID != as.AddonID {
		t.Fatalf("running status incomplete: %+v", m)
	}
	if m.Stats == nil || m.Stats.Memory == nil || m.Stats.Disk == nil {
		t.Errorf("member figures missing memory or disk: %v", m.Stats)
	}
	_, hb, _ := coord.member(h.id, "m1")
	if hb.Stats == nil || hb.Stats.Memory == nil || len(hb.Unknown) != 0 {
		t.Errorf("heartbeat: host figures %v, unknown %v", hb.Stats, hb.Unknown)
	}
	coord.mu.Lock()
	reg := coord.hosts[h.id]
	coord.mu.Unlock()
	if reg.Address != hostIP || reg.MemoryMB != 4096 || reg.Zone() != "z1" {
		t.Errorf("registered host %+v", reg)
	}

	dir := filepath.Join(h.cfg.DataDir, "members", "m1")
	conf := filepath.Join(dir, "redis.conf")
	fi, err := os.Stat(conf)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("redis.conf: %v, mode %v, want 0600", err, fi.Mode())
	}

	// Settings change live: AOF and cache mode, no restart.
	if err := c.Set(ctxT(t), "keep", "me", 0).Err(); err != nil {
		t.Fatal(err)
	}
	as.Settings = api.Settings{Persistence: api.PersistenceAOF, CacheMode: true}
	coord.assign(h.id, as)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, p := configGet(t, c, "appendonly"), configGet(t, c, "maxmemory-policy"); v != "yes" || p != "allkeys-lru" {
			return fmt.Errorf("appendonly %s, maxmemory-policy %s", v, p)
		}
		b, err := os.ReadFile(conf)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "\nappendonly yes\n") || !strings.Contains(string(b), "allkeys-lru") {
			return errors.New("redis.conf not rewritten with the new settings")
		}
		return nil
	})
	if _, pid2, err := runID(c); err != nil || pid2 != pid {
		t.Fatalf("redis restarted for a live settings change: pid %d -> %d (%v)", pid, pid2, err)
	}
	if v, err := c.Get(ctxT(t), "keep").Result(); err != nil || v != "me" {
		t.Fatalf("key after settings change: %q, %v", v, err)
	}
	// Back to RDB, cache mode off.
	as.Settings = api.Settings{Persistence: api.PersistenceRDB}
	coord.assign(h.id, as)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v, p := configGet(t, c, "appendonly"), configGet(t, c, "maxmemory-policy"); v != "no" || p != "noeviction" {
			return fmt.Errorf("appendonly %s, maxmemory-policy %s", v, p)
		}
		return nil
	})

	// Removal: container and data dir gone, not reported any more.
	coord.assign(h.id)
	testutil.WaitFor(t, 30*time.Second, func() error {
		st, err := h.agent.Runtime().Inspect(ctxT(t), "m1")
		if err != nil {
			return err
		}
		if st.State != runtime.StateMissing {
			return fmt.Errorf("container is %s", st.State)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("member dir still there (%v)", err)
		}
		if _, err := os.Stat(filepath.Join(h.cfg.DataDir, "logs", "m1.log")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("member log still there (%v)", err)
		}
		if _, hb, err := coord.member(h.id, "m1"); err == nil {
			return fmt.Errorf("still reported: %+v", hb.Members)
		}
		return nil
	})

	// Stop + Close leave no goroutine of the agent, its runtime driver or
	// its redis probes behind.
	h.stop()
	testutil.WaitFor(t, 10*time.Second, func() error {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:goruntime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			for _, frame := range []string{"cacheplane/agent.", "cacheplane/agent/runtime.", "go-redis", "containerd/containerd", "google.golang.org/grpc"} {
				if strings.Contains(g, frame) && !strings.Contains(g, "agent_test.") {
					return fmt.Errorf("goroutine left after Close:\n%s", g)
				}
			}
		}
		return nil
	})
}

// A redis killed with SIGKILL is reported failed with the reason and its
// last log lines, then started again by the agent (restart policy) with its
// data dir intact.
func TestKilledMemberReportedAndRestarted(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.start(t)
	as := h.starter(t, "m1")
	coord.assign(h.id, as)
	c := redisClient(t, as)
	m := coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))
	if err := c.Set(ctxT(t), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(m.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill redis pid %d: %v", m.Pid, err)
	}
	f := coord.waitMember(t, h.id, "m1", 10*time.Second, isState(api.MemberFailed))
	if !strings.Contains(f.Detail, "signal 9") || !strings.Contains(f.Detail, "last log lines") {
		t.Errorf("failed detail %q: want the signal and the last log lines", f.Detail)
	}
	if strings.Contains(f.Detail, password) {
		t.Fatal("detail holds the password")
	}
	r := coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))
	if r.Pid == m.Pid {
		t.Fatalf("same pid %d after restart", r.Pid)
	}
	if v, err := c.Get(ctxT(t), "k").Result(); err != nil || v != "v" {
		t.Fatalf("key after restart: %q, %v", v, err)
	}
}

// A member that cannot run is reported failed with the runtime's reason: a
// port already taken (redis exits at start: its log says why) and an image
// that does not exist.
func TestBadMembersReportedFailed(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	busy := h.starter(t, "busy")
	l, err := net.Listen("tcp", net.JoinHostPort(hostIP, strconv.Itoa(busy.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	noImage := h.starter(t, "noimage")
	noImage.Image = "cacheplane.local/no-such-image:1"
	badConf := h.starter(t, "badconf")
	badConf.ReplicaOf = "not-an-endpoint"
	h.start(t)
	coord.assign(h.id, busy, noImage, badConf)

	m := coord.waitMember(t, h.id, "busy", 30*time.Second, func(m api.MemberStatus) error {
		if m.State != api.MemberFailed || !strings.Contains(m.Detail, "last log lines") {
			return errors.New("want failed with log lines")
		}
		return nil
	})
	if !strings.Contains(m.Detail, "exited with code 1") || !strings.Contains(strings.ToLower(m.Detail), "address already in use") {
		t.Errorf("busy port detail %q: want the exit code and redis's own complaint", m.Detail)
	}
	m = coord.waitMember(t, h.id, "noimage", 30*time.Second, isState(api.MemberFailed))
	if !strings.Contains(m.Detail, "no-such-image") || !strings.Contains(m.Detail, "image not found") {
		t.Errorf("missing image detail %q", m.Detail)
	}
	m = coord.waitMember(t, h.id, "badconf", 30*time.Second, isState(api.MemberFailed))
	if !strings.Contains(m.Detail, "render config") || strings.Contains(m.Detail, password) {
		t.Errorf("bad config detail %q", m.Detail)
	}

	// Freed port: the next restart works.
	l.Close()
	coord.waitMember(t, h.id, "busy", 30*time.Second, isState(api.MemberRunning))
}

// After kill -9 of the agent's process, a new agent on the same data dir
// and namespace re-attaches: the same
// redis process keeps running (same run_id and pid), nothing is re-created,
// and an unassigned leftover is destroyed with its data.
func TestRestartReattaches(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.startProcess(t)
	as := h.starter(t, "m1")
	gone := h.starter(t, "m2")
	coord.assign(h.id, as, gone)
	c := redisClient(t, as)
	first := coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))
	coord.waitMember(t, h.id, "m2", 30*time.Second, isState(api.MemberRunning))
	id1, pid1, err := runID(c)
	if err != nil {
		t.Fatal(err)
	}
	h.kill(t)
	if err := c.Ping(ctxT(t)).Err(); err != nil {
		t.Fatalf("redis stopped with the agent: %v", err)
	}

	// While the agent is away, m2 is unassigned.
	coord.assign(h.id, as)
	coord.mu.Lock()
	delete(coord.last, h.id)
	coord.mu.Unlock()
	h.start(t)
	again := coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))
	id2, pid2, err := runID(c)
	if err != nil {
		t.Fatal(err)
	}
	if id1 != id2 || pid1 != pid2 || again.Pid != first.Pid || !again.StartedAt.Equal(first.StartedAt) {
		t.Fatalf("redis restarted: run_id %s -> %s, pid %d -> %d, started %s -> %s",
			id1, id2, pid1, pid2, first.StartedAt, again.StartedAt)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		st, err := h.agent.Runtime().Inspect(ctxT(t), "m2")
		if err != nil {
			return err
		}
		if st.State != runtime.StateMissing {
			return fmt.Errorf("m2 is %s", st.State)
		}
		if _, err := os.Stat(filepath.Join(h.cfg.DataDir, "members", "m2")); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("m2's dir still there (%v)", err)
		}
		return nil
	})
}

// Config: defaults validate, derived fields are filled, mistakes are named.
func TestConfig(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := func() agent.Config {
		c := agent.DefaultConfig()
		c.HostID = "h1"
		return c
	}
	c := ok()
	c.JoinTokenFile = tokenFile
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.Namespace != "cacheplane-h1" || c.MemoryMB <= 0 || c.JoinToken != "s3cret" {
		t.Fatalf("derived fields: namespace %q memory %d token %q", c.Namespace, c.MemoryMB, c.JoinToken)
	}
	bad := map[string]func(*agent.Config){
		"no host id":        func(c *agent.Config) { c.HostID = "" },
		"address 0.0.0.0":   func(c *agent.Config) { c.Address = "0.0.0.0" },
		"address hostname":  func(c *agent.Config) { c.Address = "example" },
		"no coordinators":   func(c *agent.Config) { c.Coordinators = nil },
		"coordinator port":  func(c *agent.Config) { c.Coordinators = []string{"127.0.0.1"} },
		"relative data dir": func(c *agent.Config) { c.DataDir = "data" },
		"zero heartbeat":    func(c *agent.Config) { c.HeartbeatInterval = 0 },
		"log level":         func(c *agent.Config) { c.LogLevel = "loud" },
		"negative memory":   func(c *agent.Config) { c.MemoryMB = -1 },
		"token file":        func(c *agent.Config) { c.JoinTokenFile = "/nonexistent/token" },
		"restart delays":    func(c *agent.Config) { c.MaxRestartDelay = agent.Duration(time.Millisecond) },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := ok()
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Fatalf("Validate accepted %+v", c)
			}
		})
	}

	file := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(file, []byte(`{"host_id":"h2","address":"127.0.0.12","labels":{"zone":"b"},"heartbeat_interval":"250ms","coordinators":["127.0.0.1:7401","127.0.0.2:7401"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := agent.LoadConfigFile(file, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.HostID != "h2" || c.Labels["zone"] != "b" || time.Duration(c.HeartbeatInterval) != 250*time.Millisecond || len(c.Coordinators) != 2 || c.DataDir == "" {
		t.Fatalf("loaded %+v", c)
	}
	if _, err := agent.LoadConfigFile(filepath.Join(t.TempDir(), "missing.json"), false); err != nil {
		t.Fatalf("missing default file: %v", err)
	}
	if _, err := agent.LoadConfigFile(filepath.Join(t.TempDir(), "missing.json"), true); err == nil {
		t.Fatal("missing named file accepted")
	}
	if err := os.WriteFile(file, []byte(`{"host_idd":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfigFile(file, true); err == nil {
		t.Fatal("unknown field accepted")
	}
}

// A sentinel and an entrypoint HAProxy run next to their redis: both are
// reported running, the sentinel monitors the primary and a client reaches
// redis through the entrypoint with the password.
func TestSentinelAndHAProxy(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.start(t)
	r := h.starter(t, "r1")
	r.AddonID = "my-app-ha"
	primary := net.JoinHostPort(r.Address, strconv.Itoa(r.Port))
	s := api.Assignment{
		MemberID: "s1", AddonID: r.AddonID, App: r.App, Role: api.RoleSentinel,
		Address: hostIP, Port: testutil.FreePort(t, hostIP), Engine: api.EngineRedis, Version: r.Version,
		Image: api.ImageSentinel7, Password: api.NewSecret(password), FleetPassword: api.NewSecret(fleetPassword), MasterName: r.AddonID, Primary: primary,
	}
	hp := testutil.FreePort(t, hostIP)
	p := api.Assignment{
		MemberID: "p1", AddonID: r.AddonID, App: r.App, Role: api.RoleHAProxy,
		Address: hostIP, Port: hp, Engine: api.EngineRedis, Version: r.Version, Image: api.ImageHAProxy,
		Password: api.NewSecret(password), FleetPassword: api.NewSecret(fleetPassword), Entrypoint: net.JoinHostPort(hostIP, strconv.Itoa(hp)), Servers: []string{primary}, MaxConn: 100,
	}
	coord.assign(h.id, r, s, p)
	for _, id := range []string{"r1", "s1", "p1"} {
		coord.waitMember(t, h.id, id, 30*time.Second, isState(api.MemberRunning))
	}
	sc := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(hostIP, strconv.Itoa(s.Port)), Password: fleetPassword, MaxRetries: -1, DisableIdentity: true})
	defer sc.Close()
	testutil.WaitFor(t, 10*time.Second, func() error {
		addr, err := sc.Do(ctxT(t), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", r.AddonID).StringSlice()
		if err != nil {
			return err
		}
		if net.JoinHostPort(addr[0], addr[1]) != primary {
			return fmt.Errorf("sentinel monitors %v, want %s", addr, primary)
		}
		return nil
	})
	via := redisClient(t, api.Assignment{Address: hostIP, Port: hp, Password: api.NewSecret(password)})
	testutil.WaitFor(t, 10*time.Second, func() error { return via.Set(ctxT(t), "through", "haproxy", 0).Err() })

	// sentinel.conf is the sentinel's own from now on: a reconcile does
	// not overwrite what it rewrote.
	conf := filepath.Join(h.cfg.DataDir, "members", "s1", "sentinel.conf")
	testutil.WaitFor(t, 10*time.Second, func() error {
		b, err := os.ReadFile(conf)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "sentinel myid") {
			return errors.New("sentinel has not rewritten its config yet")
		}
		return nil
	})
	before, _ := os.ReadFile(conf)
	r.Settings.CacheMode = true // any change: a new index, a reconcile
	coord.assign(h.id, r, s, p)
	c := redisClient(t, r)
	testutil.WaitFor(t, 10*time.Second, func() error {
		if v := configGet(t, c, "maxmemory-policy"); v != "allkeys-lru" {
			return fmt.Errorf("maxmemory-policy %s", v)
		}
		return nil
	})
	if after, _ := os.ReadFile(conf); !strings.Contains(string(after), "sentinel myid") || len(after) < len(before)/2 {
		t.Fatalf("sentinel.conf was overwritten:\n%s", after)
	}
}
