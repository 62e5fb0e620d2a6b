package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

func startTestCoordinator(t *testing.T, ip string) (*Coordinator, Config) {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.ID = "c1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Socket = filepath.Join(dir, "admin.sock")
	cfg.RaftAddr = testutil.Addr(t, ip)
	cfg.HTTPAddr = testutil.Addr(t, ip)
	cfg.Bootstrap = true
	cfg.HostDownAfter = Duration(600 * time.Millisecond)
	c, err := Start(cfg, testutil.Logger(t), testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	admin := api.NewClient(cfg.Socket)
	testutil.WaitFor(t, 10*time.Second, func() error {
		_, err := admin.Plans(context.Background())
		return err
	})
	return c, cfg
}

// testUsers are the ACL lines of a member of as: the app's user and the
// fleet's, with which the coordinator logs in.
func testUsers(as api.Assignment) string {
	return fmt.Sprintf("user default on >%s ~* &* +@all\nuser %s on >%s ~* &* +@all\n", as.Password.Reveal(), redisctl.FleetUser, as.FleetPassword.Reveal())
}

// startRedis runs a real redis-server the way an agent would for an
// assignment (the agent is not the subject here).
func startRedis(t *testing.T, as api.Assignment) {
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
		t.Fatalf("start redis-server (make deps installs it): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// startEntrypoint stands in for a starter's haproxy (not the subject of
// these tests): a TCP relay on the haproxy's address to its one server,
// closed when the test ends.
func startEntrypoint(t *testing.T, as api.Assignment) {
	t.Helper()
	if as.Role != api.RoleHAProxy || len(as.Servers) != 1 {
		t.Fatalf("not a starter's haproxy assignment: %+v", as)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(as.Address, strconv.Itoa(as.Port)))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s, err := net.DialTimeout("tcp", as.Servers[0], time.Second)
				if err != nil {
					return
				}
				defer s.Close()
				go func() {
					<-done
					c.Close()
					s.Close()
				}()
				go func() { _, _ = io.Copy(s, c); s.Close() }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
}

func TestProvisionRemoveAndHostLiveness(t *testing.T) {
	c, cfg := startTestCoordinator(t, "127.0.0.41")
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	peer := api.NewClient(cfg.Socket)

	// The peer API refuses a caller without a certificate.
	resp, err := insecureGet("https://" + cfg.HTTPAddr + "/v1/agent/assignments?host=h1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no client certificate: %s; want 401", resp.Status)
	}
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.42", MemoryMB: 1024, Labels: map[string]string{"zone": "a"}}); err != nil {
		t.Fatal(err)
	}
	first, err := peer.Assignments(ctx, "h1", 0, time.Second)
	if err != nil || len(first.Assignments) != 0 {
		t.Fatalf("assignments before any addon = %+v, %v", first, err)
	}

	// A plan that cannot fit is refused at once, with the largest free memory.
	_, err = admin.AddonCreate(ctx, api.AddonCreateRequest{App: "big-app", Type: "redis", Plan: "redis-starter-8192"})
	if api.HTTPStatus(err) != http.StatusUnprocessableEntity || !strings.Contains(api.Message(err), "largest free: 1024 MB on h1") {
		t.Fatalf("oversized addon: %v", err)
	}

	// The blocking query wakes up on the placement, well before its wait.
	type result struct {
		a   api.Assignments
		err error
	}
	woke := make(chan result, 1)
	go func() {
		a, err := peer.Assignments(ctx, "h1", first.Index, 20*time.Second)
		woke <- result{a, err}
	}()
	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "my-app", Type: "redis", Plan: "redis-starter-256"})
	if err != nil {
		t.Fatal(err)
	}
	var as, hp api.Assignment
	testutil.WaitFor(t, 10*time.Second, func() error {
		var r result
		select {
		case r = <-woke:
		default:
			return fmt.Errorf("blocking query has not answered")
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.a.Assignments) == 0 { // woke on the create, before placement
			a, err := peer.Assignments(ctx, "h1", r.a.Index, 20*time.Second)
			woke <- result{a, err}
			return fmt.Errorf("no assignment yet")
		}
		as, hp = r.a.Assignments[0], r.a.Assignments[1]
		return nil
	})
	if as.AddonID != res.Addon.ID || as.Role != api.RoleRedis || as.Address != "127.0.0.42" || len(as.Password.Reveal()) != 64 || len(as.FleetPassword.Reveal()) != 64 || as.Password.Equal(as.FleetPassword) || as.Image != api.ImageRedis7 {
		t.Fatalf("assignment = %+v", as)
	}
	if hp.Role != api.RoleHAProxy || hp.Address != "127.0.0.42" || len(hp.Servers) != 1 || hp.Entrypoint != net.JoinHostPort(hp.Address, strconv.Itoa(hp.Port)) {
		t.Fatalf("haproxy assignment = %+v", hp)
	}

	// The agent starts redis and its entrypoint and reports them running;
	// the addon becomes running.
	startRedis(t, as)
	startEntrypoint(t, hp)
	beat := func(members ...api.MemberStatus) {
		t.Helper()
		if _, err := peer.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h1", Members: members}); err != nil {
			t.Fatal(err)
		}
	}
	running := api.MemberStatus{MemberID: as.MemberID, AddonID: as.AddonID, Role: as.Role, State: api.MemberRunning,
		Stats: &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: 1 << 20, HighestBytes: 2 << 20}}}
	hpRunning := api.MemberStatus{MemberID: hp.MemberID, AddonID: hp.AddonID, Role: hp.Role, State: api.MemberRunning}
	testutil.WaitFor(t, 15*time.Second, func() error {
		beat(running, hpRunning)
		a, err := admin.Addon(ctx, res.Addon.ID)
		if err != nil {
			return err
		}
		if a.Status != api.AddonRunning {
			return fmt.Errorf("status %s", a.Status)
		}
		return nil
	})
	env, err := admin.Env(ctx, "my-app")
	if err != nil {
		t.Fatal(err)
	}
	if len(env.Vars) != 2 || env.Vars[0].Name != "REDIS_URL" || env.Vars[1].Name != "CACHEPLANE_REDIS_URL" || env.Vars[0].Value != env.Vars[1].Value {
		t.Fatalf("env = %+v", env)
	}
	if !strings.HasPrefix(env.Vars[0].Value, "redis://default:"+as.Password.Reveal()+"@127.0.0.42:") {
		t.Fatalf("REDIS_URL has an unexpected form (password elided): %s", strings.ReplaceAll(env.Vars[0].Value, as.Password.Reveal(), "PW"))
	}
	opt, err := redis.ParseURL(env.Vars[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	if err := rc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("write through REDIS_URL: %v", err)
	}
	ops, _ := admin.Operations(ctx, "my-app", "")
	if len(ops) != 1 || ops[0].State != api.OpDone || ops[0].CurrentStep() != len(ops[0].Steps) {
		t.Fatalf("operations = %+v", ops)
	}
	st, err := admin.AddonStats(ctx, "my-app")
	if err != nil || len(st.Members) != 2 || st.Members[0].Latest == nil || st.Members[0].Latest.MemoryHighestBytes != 2<<20 {
		t.Fatalf("stats = %+v, %v", st, err)
	}

	// Silence marks the host down; a heartbeat brings it back.
	hostState := func() api.HostState {
		hs, err := admin.Hosts(ctx)
		if err != nil || len(hs) != 1 {
			t.Fatalf("hosts = %+v, %v", hs, err)
		}
		return hs[0].State
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if s := hostState(); s != api.HostDown {
			return fmt.Errorf("host is %s", s)
		}
		return nil
	})
	beat(running, hpRunning)
	if s := hostState(); s != api.HostReady {
		t.Fatalf("host after heartbeat is %s", s)
	}

	// Metrics parse and tell the truth.
	resp, err = insecureGet("https://" + cfg.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	if v := families["cacheplane_raft_is_leader"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Fatalf("raft_is_leader = %v", v)
	}
	if families["cacheplane_raft_apply_duration_seconds"] == nil || families["cacheplane_addons"] == nil {
		t.Fatal("apply latency or addons missing from /metrics")
	}
	for _, m := range families["cacheplane_operations_stuck"].GetMetric() {
		if v := m.GetGauge().GetValue(); v != 0 {
			t.Fatalf("operations_stuck %v = %v; nothing is stuck", m.GetLabel(), v)
		}
	}
	if len(families["cacheplane_operations_stuck"].GetMetric()) != 8 {
		t.Fatalf("operations_stuck: %v", families["cacheplane_operations_stuck"])
	}

	// Removal: the member leaves the assignments; once the host reports it
	// gone, the addon is forgotten.
	if _, err := admin.AddonRemove(ctx, "my-app", res.Addon.ID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		a, err := peer.Assignments(ctx, "h1", 0, 0)
		if err != nil {
			return err
		}
		if len(a.Assignments) != 0 {
			return fmt.Errorf("still assigned: %+v", a.Assignments)
		}
		return nil
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		beat()
		addons, err := admin.Addons(ctx, "", false)
		if err != nil {
			return err
		}
		if len(addons) != 0 {
			return fmt.Errorf("addons left: %+v", addons)
		}
		return nil
	})
	_ = c
}

func TestHeartbeatIgnoresMembersNotAssignedToTheHost(t *testing.T) {
	c, cfg := startTestCoordinator(t, "127.0.0.43")
	ctx := context.Background()
	peer := api.NewClient(cfg.Socket)
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.44", MemoryMB: 1024}); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{{MemberID: "ghost-1234-redis-0", State: api.MemberFailed}}}); err != nil {
		t.Fatal(err)
	}
	if _, seen := c.server.obs.member("h1", "ghost-1234-redis-0"); seen {
		t.Fatal("a member the host was never given is in the observed state")
	}
	// A host with hundreds of members fits in one heartbeat (each status
	// with its figures is ~1 KB; a 64 KiB bound once refused a host of ~60).
	big := api.HeartbeatRequest{HostID: "h1", Stats: &api.HostReport{Memory: &api.HostMemory{TotalBytes: 1 << 34}}}
	for i := range 300 {
		big.Members = append(big.Members, api.MemberStatus{MemberID: fmt.Sprintf("ghost-%04d-redis-0", i), State: api.MemberRunning,
			Detail: strings.Repeat("d", 400), Stats: &api.MemberReport{CgroupPath: "/cacheplane-h1/ghost", CPU: &api.MemberCPU{Percent: 1},
				Memory: &api.MemberMemory{CurrentBytes: 1 << 20, LimitBytes: 1 << 28}, Swap: &api.MemberSwap{Accounted: true},
				Disk: &api.DataSize{Dir: "/var/lib/cacheplane/agent/members/ghost/data"}}})
	}
	if b, _ := json.Marshal(big); len(b) < 4*api.MaxRequestBytes {
		t.Fatalf("test heartbeat is only %d bytes", len(b))
	}
	if _, err := peer.Heartbeat(ctx, big); err != nil {
		t.Fatalf("heartbeat of 300 members: %v", err)
	}
	big.Members[0].Detail = strings.Repeat("d", api.MaxHeartbeatBytes)
	if _, err := peer.Heartbeat(ctx, big); api.HTTPStatus(err) != http.StatusBadRequest || !strings.Contains(api.Message(err), "larger than") {
		t.Fatalf("heartbeat over %d bytes = %v; want 400", api.MaxHeartbeatBytes, err)
	}
	if _, err := peer.Heartbeat(ctx, api.HeartbeatRequest{HostID: "nope"}); api.HTTPStatus(err) != http.StatusNotFound {
		t.Fatalf("heartbeat of an unregistered host = %v; want 404", err)
	}
	if _, err := peer.Register(ctx, api.Host{ID: "bad id!", Address: "127.0.0.44", MemoryMB: 1}); api.HTTPStatus(err) != http.StatusBadRequest {
		t.Fatalf("register with a malformed id = %v; want 400", err)
	}
}

// TestFiguresReachEveryMember: the history of figures is kept on every
// coordinator member, not only the leader, so a leader change keeps it.
func TestFiguresReachEveryMember(t *testing.T) {
	c1, cfg1 := startTestCoordinator(t, "127.0.0.45")
	dir := t.TempDir()
	cfg2 := cfg1
	cfg2.ID, cfg2.Bootstrap = "c2", false
	cfg2.DataDir, cfg2.Socket = filepath.Join(dir, "data"), filepath.Join(dir, "admin.sock")
	cfg2.RaftAddr, cfg2.HTTPAddr = testutil.Addr(t, "127.0.0.46"), testutil.Addr(t, "127.0.0.46")
	c2, err := Start(cfg2, testutil.Logger(t), testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c2.Close() })
	ctx := context.Background()
	tok, err := api.NewClient(cfg1.Socket).Token(ctx, api.TokenRequest{Kind: api.TokenMember, TTL: api.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.NewClient(cfg2.Socket).Join(ctx, cfg1.HTTPAddr, tok.Token); err != nil {
		t.Fatal(err)
	}
	peer := api.NewClient(cfg1.Socket)
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.47", MemoryMB: 1024}); err != nil {
		t.Fatal(err)
	}
	res, err := api.NewClient(cfg1.Socket).AddonCreate(ctx, api.AddonCreateRequest{App: "fig-app", Type: "redis", Plan: "redis-starter-256"})
	if err != nil {
		t.Fatal(err)
	}
	member := res.Addon.ID + "-redis-0"
	testutil.WaitFor(t, 10*time.Second, func() error {
		if _, err := peer.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{{MemberID: member, AddonID: res.Addon.ID,
			Role: api.RoleRedis, State: api.MemberStarting, Stats: &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: 7 << 20}}}}}); err != nil {
			return err
		}
		if latest, _ := c2.server.stats.member(member, time.Time{}); latest == nil || latest.MemoryBytes != 7<<20 {
			return fmt.Errorf("follower has no figures for %s yet", member)
		}
		return nil
	})
	_ = c1
}

// insecureGet GETs url over TLS without checking the server (the
// coordinator's /metrics and refusals; the identity tests check the rest).
func insecureGet(url string) (*http.Response, error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // test only
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err == nil {
		tr.CloseIdleConnections()
	}
	return resp, err
}
