//go:build bench

package e2e

// Provisioning latency: from the addons-add API call to the first PING
// answered through the addon's URL, against the same run's baseline of a
// redis member created and started by the containerd driver alone.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
)

const (
	provBenchStart = "<!-- bench:provision:start -->"
	provBenchEnd   = "<!-- bench:provision:end -->"

	provCoordIP    = "127.0.0.76"
	provHostIP     = "127.0.0.77"
	provBaselineIP = "127.0.0.78"
	provRuns       = 5
	provPlan       = "redis-starter-256"
	provPlanMB     = 256
	// provPoll is how often the client polls env (until the URL exists)
	// and then PINGs (until redis answers).
	provEnvPoll  = 5 * time.Millisecond
	provPingPoll = 2 * time.Millisecond
	provGoal     = time.Second
)

// provRun is one starter's timeline, every figure measured from the start
// of the addons-add API call.
type provRun struct {
	App       string
	API       time.Duration // addons-add answered
	Placed    time.Duration // "place members" step done (coordinator)
	Assigned  time.Duration // the agent's blocking query returned it
	Started   time.Duration // containerd create+start returned in the agent
	StartTook time.Duration // of which rt.Start itself
	URL       time.Duration // env first returned the URL
	FirstPing time.Duration // PONG through the URL
	Reported  time.Duration // "start members" step done (heartbeat seen running)
	Running   time.Duration // addon marked running
	Import    time.Duration // image imported during this provision (first use), 0 if none
	At        time.Time     // wall clock at the start of the call
}

// TestBenchProvision measures provisioning latency of 5 starters and the
// same run's containerd-only baseline, and writes its section of
// docs/benchmarks.md.
func TestBenchProvision(t *testing.T) {
	load := loadAvg()
	bl, baseImport := newProvBaseline(t)

	c := StartCoordinator(t, "c1", provCoordIP, CoordinatorOpts{Bootstrap: true})
	ag := StartAgent(t, c, "h1", provHostIP, AgentOpts{})
	cl := c.Client()
	defer cl.Close()

	// Baseline and starters alternate, so a change of the machine's load
	// during the run weighs on both alike.
	runs := make([]provRun, 0, provRuns)
	var base []time.Duration
	for i := 1; i <= provRuns; i++ {
		base = append(base, bl.run())
		r := provOne(t, c, cl, fmt.Sprintf("bench-prov-%d", i))
		provFromLogs(t, ag, &r, i)
		t.Logf("%s: API %s, URL %s, first PING %s, running %s", r.App, ms(r.API), ms(r.URL), ms(r.FirstPing), ms(r.Running))
		runs = append(runs, r)
	}
	section := provSection(runs, base, baseImport, load+" at the start, "+loadAvg()+" at the end")
	path := writeBenchSection(t, provBenchStart, provBenchEnd, section)
	t.Logf("wrote %s:\n%s", path, section)
}

// provOne adds one starter through the API and times it to the first PING.
func provOne(t *testing.T, c *Coordinator, cl *api.Client, app string) provRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	t0 := time.Now()
	r := provRun{App: app, At: t0}
	res, err := cl.AddonCreate(ctx, api.AddonCreateRequest{App: app, Type: api.AddonType, Plan: provPlan})
	if err != nil {
		t.Fatalf("addons-add %s: %v", app, err)
	}
	r.API = time.Since(t0)
	var url string
	for url == "" {
		env, err := cl.Env(ctx, app)
		switch {
		case err == nil:
			for _, v := range env.Vars {
				if v.Name == "REDIS_URL" {
					url = v.Value
				}
			}
		case !errors.Is(err, api.ErrConflict):
			t.Fatalf("env --app %s: %v", app, err)
		}
		if url == "" {
			if ctx.Err() != nil {
				t.Fatalf("no URL for %s within the deadline", app)
			}
			time.Sleep(provEnvPoll) // polling interval
		}
	}
	r.URL = time.Since(t0)
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL: %v", scrub(err.Error(), url))
	}
	provWaitPing(ctx, t, app, opt)
	r.FirstPing = time.Since(t0)

	// The coordinator's own record of the steps (same machine, same clock).
	a := WaitForAddonStatus(t, c, app, api.AddonRunning, time.Minute)
	op := operationByID(t, c, app, res.OperationID)
	for _, s := range op.Steps {
		d := s.FinishedAt.Sub(t0)
		switch s.Name {
		case "place members":
			r.Placed = d
		case "start members":
			r.Reported = d
		case "mark running":
			r.Running = d
		}
	}
	if len(a.Members) != 2 || a.Members[0].HostID != "h1" {
		t.Fatalf("%s: want its redis member and haproxy on h1, got %+v", app, a.Members)
	}
	r.App = a.ID
	return r
}

// provFromLogs reads the agent's JSON log for when the n-th member was
// assigned (the blocking query's answer), when its container was started
// and how long rt.Start took, and any image import.
func provFromLogs(t *testing.T, ag *Agent, r *provRun, n int) {
	t.Helper()
	t0 := r.At
	shift := func(at time.Time) time.Duration { return at.Sub(t0) }
	f, err := os.Open(ag.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	member := r.App + "-redis-0"
	for sc.Scan() {
		var l struct {
			Time    time.Time       `json:"time"`
			Msg     string          `json:"msg"`
			Members int             `json:"members"`
			Member  string          `json:"member"`
			Took    json.RawMessage `json:"took"`
			Ref     string          `json:"ref"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Time.Before(t0) {
			continue
		}
		switch {
		case l.Msg == "assignments" && l.Members == n && r.Assigned == 0:
			r.Assigned = shift(l.Time)
		case l.Msg == "member started" && l.Member == member && r.Started == 0:
			r.Started = shift(l.Time)
			r.StartTook = logDuration(l.Took)
		case l.Msg == "image imported" && r.Started == 0:
			r.Import = logDuration(l.Took)
		}
	}
}

// logDuration decodes a slog JSON duration: nanoseconds, or a string.
func logDuration(raw json.RawMessage) time.Duration {
	var ns int64
	if json.Unmarshal(raw, &ns) == nil {
		return time.Duration(ns)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		d, _ := time.ParseDuration(s)
		return d
	}
	return 0
}

// provWaitPing PINGs opt's server every provPingPoll until it answers. One
// dial per attempt (go-redis's default is 5, 100 ms apart), and a new
// client each time: a pool whose dials failed PoolSize times keeps
// returning the last dial error and re-dials only once a second.
func provWaitPing(ctx context.Context, t *testing.T, what string, opt *redis.Options) {
	t.Helper()
	o := *opt
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.DialTimeout = 200 * time.Millisecond
	o.ReadTimeout = 200 * time.Millisecond
	o.PoolSize = 1
	o.DisableIdentity = true
	for {
		rc := redis.NewClient(&o)
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := rc.Ping(pctx).Err()
		pcancel()
		rc.Close()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s never answered PING: %v", what, err)
		}
		time.Sleep(provPingPoll) // polling interval
	}
}

// provBaseline runs redis members with the containerd driver alone: no
// coordinator, no agent, a fresh namespace.
type provBaseline struct {
	t     *testing.T
	rt    *runtime.Containerd
	root  string
	ports []int
	n     int
}

// newProvBaseline connects the driver and imports the image; it returns
// the import's time.
func newProvBaseline(t *testing.T) (*provBaseline, time.Duration) {
	t.Helper()
	b := &provBaseline{t: t, root: filepath.Join(RootOf(t).Dir, "baseline"), ports: freePorts(t, provBaselineIP, provRuns)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := "cacheplane-bench-" + randomHex(4)
	rt, err := runtime.NewContainerd(ctx, runtime.Config{Namespace: ns, ImageDir: Images(t), LogDir: filepath.Join(b.root, "logs")})
	if err != nil {
		t.Fatalf("containerd: %v", err)
	}
	b.rt = rt
	t.Cleanup(func() {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Minute)
		defer pcancel()
		if err := rt.Purge(pctx); err != nil {
			t.Logf("purge %s: %v", ns, err)
		}
		rt.Close()
	})
	start := time.Now()
	if err := rt.EnsureImage(ctx, api.ImageRedis7); err != nil {
		t.Fatalf("image: %v", err)
	}
	return b, time.Since(start)
}

// run starts the next member (same config, image, bind mount and memory
// limit as the agent's) and times rt.Start to the first PING.
func (b *provBaseline) run() time.Duration {
	t := b.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id := fmt.Sprintf("base-%d", b.n)
	port := b.ports[b.n]
	b.n++
	dir := filepath.Join(b.root, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pw := randomHex(32)
	conf, err := render.Redis(render.RedisInput{BindAddr: provBaselineIP, Port: port, DataDir: dir,
		Password: api.NewSecret(pw), FleetPassword: api.NewSecret(randomHex(32)), PlanMemoryMB: provPlanMB, Settings: api.DefaultSettings()})
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := runtime.Spec{ID: id, Addon: "base", Member: id, Role: string(api.RoleRedis), Image: api.ImageRedis7,
		Args: []string{"/usr/bin/redis-server", confPath}, DataDir: dir,
		MemoryLimitBytes: render.ContainerMemoryLimitBytes(provPlanMB), SpecHash: "baseline"}
	t0 := time.Now()
	if err := b.rt.Start(ctx, spec); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	provWaitPing(ctx, t, id, &redis.Options{Addr: fmt.Sprintf("%s:%d", provBaselineIP, port), Password: pw})
	d := time.Since(t0)
	t.Logf("baseline %s: create+start to first PING %s", id, ms(d))
	return d
}

func provStats(ds []time.Duration) (med, lo, hi time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[0], s[len(s)-1]
}

func provCol(runs []provRun, f func(provRun) time.Duration) []time.Duration {
	out := make([]time.Duration, len(runs))
	for i, r := range runs {
		out[i] = f(r)
	}
	return out
}

func provSection(runs []provRun, base []time.Duration, baseImport time.Duration, load string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	now := time.Now().UTC()
	p("%s\n## Provisioning: `addons-add` to the first PING through the URL (starter)\n\n", provBenchStart)
	p("Measured %s on %s; load average %s.  \n", now.Format("2006-01-02 15:04 MST"), machine(), load)
	p("Commit %s, %s.  \n", gitCommit(), goVersion())
	p("Command: `make bench` (runs `go test -tags bench -run TestBench -v ./e2e/`; this one alone: `go test -tags bench -run TestBenchProvision -v ./e2e/`).\n\n")
	p("Set-up: real `cacheplane-coordinator` (1 member) and `cacheplane-agent` (heartbeat 500 ms) processes built without -race, on loopback addresses, real containerd %s. "+
		"%d starters `%s` added one after the other through the API (`api.Client.AddonCreate`, what `addons-add` calls), all on the one host. "+
		"The clock starts when the call starts; the client then polls `env` every %s until the URL exists, then PINGs through it every %s (go-redis, no retries). "+
		"Baseline, same run, one member before each starter: the agent's containerd driver alone (`runtime.NewContainerd` on a fresh namespace, image already imported) "+
		"starts a redis member with the same config, image, bind mount and memory limit; time from `Start` to the first PING.\n\n",
		containerdVersion(), len(runs), provPlan, provEnvPoll, provPingPoll)

	fp, fpLo, fpHi := provStats(provCol(runs, func(r provRun) time.Duration { return r.FirstPing }))
	bm, bLo, bHi := provStats(base)
	p("| | median | min | max |\n| --- | ---: | ---: | ---: |\n")
	p("| addons-add → first PING (%d starters) | **%s** | %s | %s |\n", len(runs), ms(fp), ms(fpLo), ms(fpHi))
	p("| baseline: containerd create+start → first PING (%d members) | %s | %s | %s |\n\n", len(base), ms(bm), ms(bLo), ms(bHi))
	p("Ratio (medians): **%.1f×** the baseline; our overhead **%s** per starter.  \n", float64(fp)/float64(bm), ms(fp-bm))
	verdict := "**met**"
	if fpHi >= provGoal {
		verdict = fmt.Sprintf("**not met** by the slowest (%s)", ms(fpHi))
		if fp >= provGoal {
			verdict = "**not met**"
		}
	}
	p("Goal (issue 4): under %s: %s (median %s).  \n", ms(provGoal), verdict, ms(fp))
	if len(runs) > 2 && runs[0].Import > 0 {
		wm, wLo, wHi := provStats(provCol(runs[1:], func(r provRun) time.Duration { return r.FirstPing }))
		p("The first starter paid the image import on first use on this host (%s in the agent); without it: median %s (%s–%s).  \n",
			ms(runs[0].Import), ms(wm), ms(wLo), ms(wHi))
	}
	p("First image import into the baseline's fresh namespace: %s.\n\n", ms(baseImport))

	p("Per starter, every figure from the start of the addons-add call (coordinator step times from `operations`, agent times from its JSON log; one machine, one clock):\n\n")
	p("| addon | API answer | placed | agent has it | container started (Start took) | URL seen | first PING | agent reports running | addon running | image import |\n")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range runs {
		imp := "-"
		if r.Import > 0 {
			imp = ms(r.Import)
		}
		p("| %s | %s | %s | %s | %s (%s) | %s | **%s** | %s | %s | %s |\n", r.App, ms(r.API), ms(r.Placed), ms(r.Assigned),
			ms(r.Started), ms(r.StartTook), ms(r.URL), ms(r.FirstPing), ms(r.Reported), ms(r.Running), imp)
	}
	med := func(f func(provRun) time.Duration) time.Duration {
		m, _, _ := provStats(provCol(runs, f))
		return m
	}
	p("\nWhere the time goes (medians of the phases above):\n\n")
	p("- API call to placement committed: %s (Raft apply of the addon, then the provision controller's wake-up, scheduler, second Raft apply).\n",
		ms(med(func(r provRun) time.Duration { return r.Placed })))
	p("- Placement to the agent holding the assignment: %s (the blocking query wakes on the FSM change; no polling interval).\n",
		ms(med(func(r provRun) time.Duration { return r.Assigned - r.Placed })))
	p("- Assignment to container started: %s, of which containerd create+start %s (the rest: config render and write, image check).\n",
		ms(med(func(r provRun) time.Duration { return r.Started - r.Assigned })), ms(med(func(r provRun) time.Duration { return r.StartTook })))
	p("- Container started to first PING: %s (redis boot, plus the client's %s poll).\n",
		ms(med(func(r provRun) time.Duration { return r.FirstPing - r.Started })), provPingPoll)
	p("- First PING to the agent's heartbeat reporting the member running (\"start members\" done): %s; the addon is `running` at %s from the call's start. "+
		"The app can use the URL before `running` is recorded.\n",
		ms(med(func(r provRun) time.Duration { return r.Reported - r.FirstPing })), ms(med(func(r provRun) time.Duration { return r.Running })))
	p("%s\n", provBenchEnd)
	return b.String()
}

// loadAvg is the 1, 5 and 15 minute load averages (/proc/loadavg).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

func goVersion() string { return goruntime.Version() }

// containerdVersion is the daemon's version as `containerd --version` says.
func containerdVersion() string {
	out, err := exec.Command("containerd", "--version").Output()
	if f := strings.Fields(string(out)); err == nil && len(f) >= 3 {
		return f[2]
	}
	return "(version unknown)"
}
