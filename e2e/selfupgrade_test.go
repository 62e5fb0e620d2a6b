package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// previousRelease is the last commit before backups: its coordinators
// apply command types 1-19 (protocol level 1) and record no level.
const previousRelease = "4c02432^"

// Previous is the previous release's build.
type Previous struct {
	Coordinator, Agent string
}

var (
	prevOnce sync.Once
	prev     Previous
	prevErr  error
)

// PreviousRelease builds cmd/coordinator and cmd/agent of previousRelease
// (with -race when this test binary has it) from git history, once: cached
// under .dev/prev-release/<commit>[-race]/ of the main checkout, so reruns
// and other worktrees reuse them.
func PreviousRelease(t testing.TB) Previous {
	t.Helper()
	prevOnce.Do(func() { prev, prevErr = buildPrevious() })
	if prevErr != nil {
		t.Fatalf("previous release's binaries: %v", prevErr)
	}
	return prev
}

func buildPrevious() (Previous, error) {
	root, err := moduleRoot()
	if err != nil {
		return Previous{}, err
	}
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	rev, err := git("rev-parse", "--verify", "--quiet", previousRelease+"^{commit}")
	if err != nil || rev == "" {
		return Previous{}, fmt.Errorf("commit %s is not in this clone (a shallow clone? run: git fetch --unshallow): %v", previousRelease, err)
	}
	common, err := git("rev-parse", "--path-format=absolute", "--git-common-dir")
	if err != nil {
		return Previous{}, fmt.Errorf("git common dir: %w", err)
	}
	key := rev
	if raceEnabled {
		key += "-race"
	}
	dir := filepath.Join(filepath.Dir(common), ".dev", "prev-release", key)
	out := Previous{Coordinator: filepath.Join(dir, "cacheplane-coordinator"), Agent: filepath.Join(dir, "cacheplane-agent")}
	_, errC := os.Stat(out.Coordinator)
	_, errA := os.Stat(out.Agent)
	if errC == nil && errA == nil {
		return out, nil
	}
	src, err := os.MkdirTemp("", "cacheplane-prev-src-")
	if err != nil {
		return Previous{}, err
	}
	defer os.RemoveAll(src)
	// The tree of the commit, without touching the repository's worktrees.
	archive := exec.Command("sh", "-c", `git archive "$1" | tar -x -C "$2"`, "sh", rev, src)
	archive.Dir = root
	if b, err := archive.CombinedOutput(); err != nil {
		return Previous{}, fmt.Errorf("git archive %s: %v\n%s", rev, err, b)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Previous{}, err
	}
	for _, b := range []struct{ bin, pkg string }{{out.Coordinator, "./cmd/coordinator"}, {out.Agent, "./cmd/agent"}} {
		tmp := b.bin + ".tmp-" + randomHex(4)
		args := []string{"build", "-tags", buildTags}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "-o", tmp, b.pkg)
		build := exec.Command("go", args...)
		build.Dir = src
		if o, err := build.CombinedOutput(); err != nil {
			return Previous{}, fmt.Errorf("go %s at %s: %v\n%s", strings.Join(args, " "), rev, err, o)
		}
		if err := os.Rename(tmp, b.bin); err != nil {
			return Previous{}, err
		}
	}
	return out, nil
}

// rejoinAgent restarts the agent as bin (SIGKILL: its members keep
// running, as on a host whose agent alone restarts) with a join token
// instead of the cluster token file, and waits until the host is ready
// again.
func rejoinAgent(a *Agent, c *Coordinator, bin, token string) {
	a.t.Helper()
	a.Kill()
	a.mu.Lock()
	a.bin = bin
	var args []string
	for i := 0; i < len(a.args); i++ {
		if a.args[i] == "--cluster-token-file" {
			i++
			continue
		}
		args = append(args, a.args[i])
	}
	a.args = append(args, "--join-token", token)
	a.mu.Unlock()
	a.Restart()
	a.WaitReady(c)
}

// plainGet sends GET path in plain HTTP to a coordinator's peer port, with
// the cluster token when token is set; the status, or 0 when nothing
// answered.
func plainGet(addr, path, token string) int {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return -1
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// suWrites is the admin writer's record.
type suWrites struct {
	mu        sync.Mutex
	acked     []string // operation ids of acknowledged settings changes
	lastAcked *bool    // cache mode of the last acknowledged one (or answered "unchanged")
	tries     int
	refused   int // 409: the previous change still running
	failed    int // no leader, forwarding failed, timed out: not acknowledged
	// unknownSince: cache modes of writes not acknowledged since the last
	// acknowledged one; such a write may still be applied (a leader that
	// loses its quorum may have the entry that the next one commits).
	unknownSince map[bool]bool
}

// TestSelfUpgradeMemberByMember is issue 14, part 3, and the migration to
// daemon identities (docs/security.md): three coordinators and an agent of
// the previous release (protocol 1, plain HTTP with a cluster token) run
// an addon; the coordinators are replaced one at a time by this build on
// the same data dir and addresses (the current leader first while it is
// old, so leader changes between an old and a new member happen with
// operations in flight), while an admin writer changes the addon's
// settings every 200 ms through whichever member answers and a client
// PINGs the addon's URL every 100 ms. While any member is old,
// backups-create is refused with the mixed-releases message. Once all are
// new their levels are recorded (asked in plain HTTP: not secured yet) and
// the old agent still works; then, as an operator does: cluster-secure,
// every member's certificate, plain HTTP answered by none, the members
// restarted one at a time (Raft over TLS), the agent joined again with a
// hosts-token as this build. A backup is then taken. At the end: every
// acknowledged write is there, no operation is left pending or running,
// the addon never stopped serving.
func TestSelfUpgradeMemberByMember(t *testing.T) {
	start := time.Now()
	prev := PreviousRelease(t)
	bins := Build(t)
	t.Logf("binaries ready in %s (previous release: %s)", time.Since(start).Round(time.Millisecond), filepath.Dir(prev.Coordinator))
	start = time.Now()

	// --- Three coordinators of the previous release, an agent of this one.
	ips := []string{"127.0.0.171", "127.0.0.172", "127.0.0.173"}
	cs := make([]*Coordinator, 3)
	// The cluster token of the releases before identities.
	clusterToken := randomHex(16)
	tokenFile := filepath.Join(RootOf(t).Dir, "cluster-token")
	if err := os.WriteFile(tokenFile, []byte(clusterToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withToken := []string{"--cluster-token-file", tokenFile}
	cs[0] = StartCoordinator(t, "c1", ips[0], CoordinatorOpts{Bootstrap: true, Binary: prev.Coordinator, ExtraArgs: withToken})
	WaitForLeader(t, startTimeout, cs[0])
	for i := 1; i < 3; i++ {
		cs[i] = StartCoordinator(t, fmt.Sprintf("c%d", i+1), ips[i], CoordinatorOpts{Binary: prev.Coordinator, ExtraArgs: withToken})
		if res := cs[i].CLI("join", cs[0].HTTPAddr); res.Code != 0 {
			t.Fatalf("join %s: %s", cs[i].ID, res)
		}
	}
	WaitForVoters(t, startTimeout, 3, cs...)
	peers := make([]string, len(cs))
	for i, c := range cs {
		peers[i] = c.HTTPAddr
	}
	agent := StartAgent(t, cs[0], "h1", "127.0.0.174", AgentOpts{Binary: prev.Agent, ExtraArgs: withToken}, peers...)
	const app = "su-app"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if res := cs[0].CLI("addons-add", "--app", app, "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	WaitForAddonStatus(t, cs[0], app, api.AddonRunning, time.Minute)
	url := RedisURL(t, cs[0], app)
	t.Logf("old cluster with a running addon in %s", time.Since(start).Round(time.Millisecond))

	// --- The addon's URL answers throughout; an admin writer runs.
	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var pings, pingFails int
	var pingErrs []string
	wg.Add(2)
	go func() {
		defer wg.Done()
		opt, err := redis.ParseURL(url)
		if err != nil {
			pingErrs = append(pingErrs, err.Error())
			return
		}
		rc := redis.NewClient(opt)
		defer rc.Close()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-tick.C:
			}
			pctx, pcancel := context.WithTimeout(bg, time.Second)
			err := rc.Ping(pctx).Err()
			pcancel()
			if bg.Err() != nil {
				return
			}
			pings++
			if err != nil {
				pingFails++
				pingErrs = append(pingErrs, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
			}
		}
	}()
	w := &suWrites{}
	go func() {
		defer wg.Done()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		next := 0
		for {
			select {
			case <-bg.Done():
				return
			case <-tick.C:
			}
			c := cs[next%len(cs)]
			next++
			if !c.Running() {
				continue
			}
			w.mu.Lock()
			mode := true
			if w.lastAcked != nil {
				mode = !*w.lastAcked
			}
			w.tries++
			w.mu.Unlock()
			cl := c.Client()
			cl.RetryFor = 0
			wctx, wcancel := context.WithTimeout(bg, 5*time.Second)
			res, err := cl.AddonSettings(wctx, api.SettingsRequest{App: app, CacheMode: &mode})
			wcancel()
			// A request cut off by the writer's stop is recorded too: the
			// leader may have applied it (an unacknowledged write).
			w.mu.Lock()
			switch {
			case err == nil && res.Operation.ID != "":
				w.acked = append(w.acked, res.Operation.ID)
				w.lastAcked, w.unknownSince = &mode, nil
			case err == nil: // "Settings unchanged": the mode is known
				w.lastAcked, w.unknownSince = &mode, nil
			case errors.Is(err, api.ErrConflict):
				w.refused++
			default:
				w.failed++
				if w.unknownSince == nil {
					w.unknownSince = map[bool]bool{}
				}
				w.unknownSince[mode] = true
			}
			w.mu.Unlock()
			if bg.Err() != nil {
				return
			}
		}
	}()
	stopped := false
	stopBackground := func() {
		if !stopped {
			stopped = true
			stopBG()
			wg.Wait()
		}
	}
	defer stopBackground()

	// --- Replace the members one at a time, the leader first while old.
	isNew := map[string]bool{}
	backupRefused := func(via *Coordinator) {
		t.Helper()
		res := via.CLI("backups-create", "--app", app)
		if res.Code == 0 || !strings.Contains(res.Stderr, "the cluster runs mixed releases: backups need protocol 2 on every coordinator") ||
			!strings.Contains(res.Stderr, "upgrade every coordinator") {
			t.Fatalf("backups-create through %s with an older member: %s", via.ID, res)
		}
		// The members named are exactly the older ones (an older leader
		// records no level: the member asks those its records leave behind).
		for _, c := range cs {
			named := strings.Contains(res.Stderr, c.ID+" runs an older cacheplane release (protocol 1)")
			if named == isNew[c.ID] || (isNew[c.ID] && strings.Contains(res.Stderr, c.ID+" ")) {
				t.Errorf("backups-create through %s: %s named %v, new %v: %s", via.ID, c.ID, named, isNew[c.ID], res.Stderr)
			}
		}
		t.Logf("backups-create through %s refused: %s", via.ID, strings.TrimSpace(res.Stderr))
	}
	var leaders []string
	for phase := 1; phase <= 3; phase++ {
		leader := WaitForLeader(t, startTimeout, cs...)
		target := leader
		if isNew[leader.ID] {
			for _, c := range cs {
				if !isNew[c.ID] {
					target = c
					break
				}
			}
		}
		// As an operator does before the next step: the host is ready. An
		// older release that stops while it leads keeps leading for its
		// 5 s shutdown timeout with its peer API closed (this release
		// hands off first: coordinator.Close), so the agent's heartbeats
		// are refused and that leader marks the host down until they
		// reach the next one.
		WaitForHostState(t, leader, "h1", api.HostReady, startTimeout)
		// An operation in flight across the replacement (and, when the
		// target leads, the leader change).
		extra := fmt.Sprintf("su-extra-%d", phase)
		if res := leader.CLI("addons-add", "--app", extra, "redis", "redis-starter-256"); res.Code != 0 {
			t.Fatalf("addons-add %s: %s", extra, res)
		}
		phaseStart := time.Now()
		target.Replace(bins.Coordinator)
		isNew[target.ID] = true
		next := WaitForLeader(t, startTimeout, cs...)
		leaders = append(leaders, fmt.Sprintf("%s(%s)->%s(%s)", leader.ID, age(isNew[leader.ID] && leader != target), next.ID, age(isNew[next.ID])))
		WaitForVoters(t, startTimeout, 3, cs...)
		t.Logf("phase %d: %s replaced by this build in %s; leader %s, now %s", phase, target.ID,
			time.Since(phaseStart).Round(time.Millisecond), leader.ID, next.ID)
		if phase < 3 {
			// As an operator does: the member is listed and has caught up.
			WaitForApplied(t, startTimeout, target, LeaderAppliedIndex(t, cs...))
			backupRefused(target)
		}
	}
	t.Logf("leaders across the phases: %s", strings.Join(leaders, " "))

	// --- Every member new, none secured yet: the leader records their
	// levels (asked in plain HTTP), the old agent keeps working.
	var status api.ClusterStatus
	testutil.WaitFor(t, 20*time.Second, func() error {
		res := cs[0].CLI("members", "--json")
		if res.Code != 0 {
			return fmt.Errorf("members: %s", res)
		}
		res.JSON(t, &status)
		for _, m := range status.Members {
			if m.Protocol != 2 || m.Release == "" {
				return fmt.Errorf("member %s recorded at protocol %d, release %q", m.ID, m.Protocol, m.Release)
			}
		}
		return nil
	})
	WaitForHostState(t, cs[0], agent.ID, api.HostReady, 10*time.Second)
	for _, c := range cs {
		// Plain HTTP: the cluster token, and only the routes an older
		// member or agent needs.
		if got := plainGet(c.HTTPAddr, "/v1/internal/protocol", clusterToken); got != http.StatusOK {
			t.Fatalf("%s not secured: plain protocol question with the token: %d", c.ID, got)
		}
		if got := plainGet(c.HTTPAddr, "/v1/internal/protocol", ""); got != http.StatusUnauthorized {
			t.Fatalf("%s not secured: plain protocol question without the token: %d, want 401", c.ID, got)
		}
		if got := plainGet(c.HTTPAddr, "/v1/hosts", clusterToken); got != http.StatusUnauthorized {
			t.Fatalf("%s not secured: plain admin read with the token: %d, want 401", c.ID, got)
		}
	}

	// --- cluster-secure (on a follower: forwarded to the leader in plain
	// HTTP); every member writes its certificate, then plain HTTP gets
	// nothing anywhere.
	leader := WaitForLeader(t, startTimeout, cs...)
	via := cs[0]
	if via == leader {
		via = cs[1]
	}
	secureStart := time.Now()
	if res := via.CLI("cluster-secure"); res.Code != 0 || !strings.Contains(res.Stdout, "The cluster CA is in place") {
		t.Fatalf("cluster-secure through %s: %s", via.ID, res)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		for _, c := range cs {
			if _, err := os.Stat(filepath.Join(c.DataDir, "tls", "cert.pem")); err != nil {
				return fmt.Errorf("%s has no member certificate yet: %v", c.ID, err)
			}
		}
		return nil
	})
	// (A member writes its certificate, then puts it in use.)
	testutil.WaitFor(t, 5*time.Second, func() error {
		for _, c := range cs {
			if got := plainGet(c.HTTPAddr, "/v1/internal/protocol", clusterToken); got != 0 {
				return fmt.Errorf("%s secured: plain HTTP answered %d", c.ID, got)
			}
		}
		return nil
	})
	t.Logf("cluster-secure: every member's certificate in %s", time.Since(secureStart).Round(time.Millisecond))

	// --- Restart the members one at a time: Raft over TLS. The first one
	// restarted reaches no other until a second runs TLS too, so the
	// second follows at once; the third once the two have a leader.
	restartStart := time.Now()
	for i, c := range cs {
		c.Stop()
		c.Restart()
		if i > 0 {
			WaitForLeader(t, startTimeout, cs[:i+1]...)
		}
	}
	WaitForVoters(t, startTimeout, 3, cs...)
	idx := LeaderAppliedIndex(t, cs...)
	for _, c := range cs {
		WaitForApplied(t, startTimeout, c, idx)
		raftRefuses(t, c.RaftAddr, nil)
	}
	t.Logf("members restarted on Raft over TLS in %s", time.Since(restartStart).Round(time.Millisecond))

	// --- The agent joins again with a hosts-token, as this build.
	leader = WaitForLeader(t, startTimeout, cs...)
	rejoinAgent(agent, leader, bins.Agent, leader.Token("hosts-token", agent.ID))
	t.Logf("agent-less from cluster-secure to the agent's rejoin: %s", time.Since(secureStart).Round(time.Millisecond))

	// (su-extra-1: the writer keeps su-app busy with settings changes.)
	leader = WaitForLeader(t, startTimeout, cs...)
	res := leader.CLI("--json", "backups-create", "--app", "su-extra-1")
	if res.Code != 0 {
		t.Fatalf("backups-create once every coordinator is upgraded: %s", res)
	}
	var created api.BackupCreateResponse
	res.JSON(t, &created)
	testutil.WaitFor(t, time.Minute, func() error {
		for _, b := range backupsOf(t, leader, "su-extra-1") {
			if b.ID == created.Backup.ID {
				if b.Status != api.BackupDone {
					return fmt.Errorf("backup %s is %s (%s)", b.ID, b.Status, b.Reason)
				}
				return nil
			}
		}
		return fmt.Errorf("backup %s not listed", created.Backup.ID)
	})

	// --- Let the writer run a little on the new cluster, then check.
	testutil.WaitFor(t, 20*time.Second, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.acked) < 5 {
			return fmt.Errorf("%d settings changes acknowledged", len(w.acked))
		}
		return nil
	})
	stopBackground()
	w.mu.Lock()
	t.Logf("writer: %d tries, %d acknowledged, %d refused while one ran, %d not acknowledged (no leader); pings: %d, %d failed",
		w.tries, len(w.acked), w.refused, w.failed, pings, pingFails)
	acked, last, unknown := append([]string(nil), w.acked...), *w.lastAcked, w.unknownSince
	w.mu.Unlock()
	if pingFails > 0 {
		t.Errorf("the addon's URL did not answer %d of %d PINGs: %s", pingFails, pings, strings.Join(pingErrs, "; "))
	}

	// No operation stuck, none lost; every addon running.
	cl := leader.Client()
	cl.RetryFor = 5 * time.Second
	var ops []api.Operation
	testutil.WaitFor(t, time.Minute, func() error {
		var err error
		if ops, err = cl.Operations(ctx, "", ""); err != nil {
			return err
		}
		for _, o := range ops {
			if !o.State.Finished() {
				return fmt.Errorf("operation %s (%s of %s) is %s", o.ID, o.Kind, o.App, o.State)
			}
		}
		return nil
	})
	byID := map[string]api.Operation{}
	for _, o := range ops {
		byID[o.ID] = o
		if o.State != api.OpDone {
			t.Errorf("operation %s (%s of %s) ended %s: %s", o.ID, o.Kind, o.App, o.State, o.Error)
		}
	}
	// The history keeps an addon's newest coordinator.OpHistoryPerAddon
	// finished operations (coordinator/history.go): an acknowledged change
	// may be gone only as one of the oldest (a prefix of the writer's
	// order), and only once the app's history is at its bound.
	kept := 0
	for _, o := range ops {
		if o.App == app {
			kept++
		}
	}
	pruned := 0
	for pruned < len(acked) {
		if _, ok := byID[acked[pruned]]; ok {
			break
		}
		pruned++
	}
	if pruned > 0 && kept < coordinator.OpHistoryPerAddon {
		t.Errorf("the %d oldest acknowledged settings changes are gone while %s keeps only %d operations (bound %d)",
			pruned, app, kept, coordinator.OpHistoryPerAddon)
	}
	for _, id := range acked[pruned:] {
		if _, ok := byID[id]; !ok {
			t.Errorf("acknowledged settings change %s is lost", id)
		}
	}
	t.Logf("acknowledged settings changes: %d, of which the %d oldest left the bounded history", len(acked), pruned)
	a := WaitForAddonStatus(t, leader, app, api.AddonRunning, 10*time.Second)
	if a.Settings.CacheMode != last && !unknown[a.Settings.CacheMode] {
		t.Errorf("cache mode %v; the last acknowledged change set %v (and no write not acknowledged since set %v)", a.Settings.CacheMode, last, a.Settings.CacheMode)
	}
	for phase := 1; phase <= 3; phase++ {
		WaitForAddonStatus(t, leader, fmt.Sprintf("su-extra-%d", phase), api.AddonRunning, 30*time.Second)
	}
	// Every member applied the same log: the same addons and operations.
	idx = LeaderAppliedIndex(t, cs...)
	for _, c := range cs {
		WaitForApplied(t, 10*time.Second, c, idx)
	}
	t.Logf("upgrade and checks in %s", time.Since(start).Round(time.Millisecond))
}

func age(isNew bool) string {
	if isNew {
		return "new"
	}
	return "old"
}
