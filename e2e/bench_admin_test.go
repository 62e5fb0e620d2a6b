//go:build bench

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Benchmark knobs; CACHEPLANE_BENCH_DURATION and CACHEPLANE_BENCH_CLIENTS
// override the defaults.
const (
	benchClients  = 32
	benchDuration = 10 * time.Second
	benchWarmup   = 200
	benchMaxN     = 200_000 // app names are unique per run; a bound, not a target
	benchPlan     = "redis-starter-256"
	// The goal of issue 3.
	goalWritesPerSec = 1000
	goalP99          = 50 * time.Millisecond

	benchStart = "<!-- bench:admin-writes:start -->"
	benchEnd   = "<!-- bench:admin-writes:end -->"
)

// benchResult is one scenario's figures.
type benchResult struct {
	Name      string
	Members   int
	Sockets   string
	Writes    int
	Errors    int
	FirstErr  error
	Elapsed   time.Duration
	P50       time.Duration
	P90       time.Duration
	P99       time.Duration
	Max       time.Duration
	CPUPerOp  map[string]time.Duration // per coordinator id, and "clients"
	LeaderID  string
	Forwarded bool
	// AddonsAtStart is how many addons the state held when the measured
	// phase began: per-write cost grows with it.
	AddonsAtStart int
}

func (r benchResult) perSec() float64 { return float64(r.Writes) / r.Elapsed.Seconds() }

// TestBenchAdminWrites measures admin write latency and sustained
// throughput (addons-add through the admin sockets) on a 1-member and a
// 3-member cluster of real coordinator processes in one run, and writes the
// figures into docs/benchmarks.md. `make bench` runs it.
func TestBenchAdminWrites(t *testing.T) {
	clients := envInt(t, "CACHEPLANE_BENCH_CLIENTS", benchClients)
	duration := benchDuration
	if v := os.Getenv("CACHEPLANE_BENCH_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CACHEPLANE_BENCH_DURATION: %v", err)
		}
		duration = d
	}
	Build(t)
	fsyncP50, fsyncP99 := fsyncLatency(t, RootOf(t).Dir, 200)
	t.Logf("fsync (4 KiB write + fdatasync) in the data dirs' filesystem: p50 %s p99 %s", fsyncP50, fsyncP99)

	var results []benchResult

	one := StartClusterOn(t, []string{"solo"}, []string{"127.0.0.31"})
	results = append(results, runAdminWrites(t, "1 member", one, one, clients, duration))
	// Kill, not Stop: shutdown is not what is measured here (and a clean
	// stop can hang, see TestCoordinatorClusterSurvivesLeaderKill).
	for _, c := range one {
		c.Kill()
	}

	three := StartClusterOn(t, []string{"m1", "m2", "m3"}, []string{IP1, IP2, IP3})
	results = append(results, runAdminWrites(t, "3 members", three, three, clients, duration))
	leader := WaitForLeader(t, startTimeout, three...)
	// Same cluster, so it starts with the previous row's addons: compare
	// it with care (per-write cost grows with the state).
	results = append(results, runAdminWrites(t, "3 members, leader socket only", three, []*Coordinator{leader}, clients, duration))
	for _, c := range three {
		c.Kill()
	}

	for _, r := range results {
		t.Logf("%-30s %6d writes in %s: %7.0f writes/s  p50 %-8s p90 %-8s p99 %-8s max %-8s errors %d",
			r.Name, r.Writes, r.Elapsed.Round(time.Millisecond), r.perSec(), r.P50, r.P90, r.P99, r.Max, r.Errors)
		t.Logf("%-30s started with %d addons stored", r.Name, r.AddonsAtStart)
		if r.Errors > 0 {
			t.Errorf("%s: %d writes failed; first: %v", r.Name, r.Errors, r.FirstErr)
		}
	}
	section := benchSection(results, clients, duration, fsyncP50, fsyncP99)
	path := writeBenchSection(t, benchStart, benchEnd, section)
	t.Logf("wrote %s:\n%s", path, section)
}

// runAdminWrites drives `clients` concurrent addons-add with unique app
// names over the sockets of targets (round-robin, one connection per
// client) for about duration, after a short warm-up, and measures each
// request's latency.
func runAdminWrites(t *testing.T, name string, cluster, targets []*Coordinator, clients int, duration time.Duration) benchResult {
	t.Helper()
	leader := WaitForLeader(t, startTimeout, cluster...)
	prefix := fmt.Sprintf("b%s-", strings.NewReplacer(" ", "", ",", "").Replace(name))
	prefix = strings.ToLower(prefix[:min(len(prefix), 12)])
	prefix = strings.Trim(strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, prefix), "-") + "-"
	var next int64
	var mu sync.Mutex
	nextApp := func() (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if next >= benchMaxN {
			return "", false
		}
		next++
		return fmt.Sprintf("%sapp-%06d", prefix, next), true
	}
	add := func(cl *api.Client, app string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := cl.AddonCreate(ctx, api.AddonCreateRequest{App: app, Type: api.AddonType, Plan: benchPlan})
		return err
	}
	newClient := func(i int) *api.Client {
		cl := api.NewClient(targets[i%len(targets)].Socket)
		cl.RetryFor = 0
		return cl
	}

	// Warm-up: connections, leader caches, the first batch of Raft entries.
	// Its writes retry as the CLI's do: a leader elected a moment ago
	// answers "no leader" until its barrier is through (not measured).
	{
		var wg sync.WaitGroup
		for i := range clients {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cl := api.NewClient(targets[i%len(targets)].Socket)
				for range benchWarmup / clients {
					app, _ := nextApp()
					if err := add(cl, app); err != nil {
						t.Errorf("%s warm-up: %v", name, err)
						return
					}
				}
			}(i)
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}

	stored, err := leader.Client().Addons(context.Background(), "", true)
	if err != nil {
		t.Fatalf("%s: count addons: %v", name, err)
	}
	cpuBefore := cpuTimes(t, cluster)
	var selfBefore syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &selfBefore)

	var (
		wg       sync.WaitGroup
		lats     = make([][]time.Duration, clients)
		errs     = make([]int, clients)
		firstErr = make([]error, clients)
		start    = time.Now()
		stopAt   = start.Add(duration)
	)
	for i := range clients {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cl := newClient(i)
			for time.Now().Before(stopAt) {
				app, ok := nextApp()
				if !ok {
					return
				}
				t0 := time.Now()
				err := add(cl, app)
				d := time.Since(t0)
				if err != nil {
					errs[i]++
					if firstErr[i] == nil {
						firstErr[i] = fmt.Errorf("%s: %w", app, err)
					}
					continue
				}
				lats[i] = append(lats[i], d)
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)

	var selfAfter syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &selfAfter)
	cpuAfter := cpuTimes(t, cluster)

	r := benchResult{Name: name, Members: len(cluster), Elapsed: elapsed, LeaderID: leader.ID, AddonsAtStart: len(stored),
		Forwarded: len(targets) > 1 || targets[0] != leader, CPUPerOp: map[string]time.Duration{}}
	var all []time.Duration
	for i := range clients {
		all = append(all, lats[i]...)
		r.Errors += errs[i]
		if r.FirstErr == nil {
			r.FirstErr = firstErr[i]
		}
	}
	r.Writes = len(all)
	if r.Writes == 0 {
		t.Fatalf("%s: no write succeeded; first error: %v", name, r.FirstErr)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) time.Duration {
		return all[min(len(all)-1, int(float64(len(all))*p))].Round(100 * time.Microsecond)
	}
	r.P50, r.P90, r.P99, r.Max = pct(0.50), pct(0.90), pct(0.99), all[len(all)-1].Round(100*time.Microsecond)
	for id, before := range cpuBefore {
		r.CPUPerOp[id] = (cpuAfter[id] - before) / time.Duration(r.Writes)
	}
	self := rusageCPU(selfAfter) - rusageCPU(selfBefore)
	r.CPUPerOp["clients"] = self / time.Duration(r.Writes)
	var sockets []string
	for _, c := range targets {
		sockets = append(sockets, c.ID)
	}
	r.Sockets = strings.Join(sockets, ", ")
	return r
}

// cpuTimes reads each coordinator process's user+system CPU time.
func cpuTimes(t *testing.T, cs []*Coordinator) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for _, c := range cs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Pid()))
		if err != nil {
			t.Fatalf("%s: cpu time: %v", c.ID, err)
		}
		// Fields after the command name (which is in parentheses).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[c.ID] = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	return out
}

func rusageCPU(r syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// fsyncLatency measures n times a 4 KiB write followed by fdatasync in dir.
func fsyncLatency(t *testing.T, dir string, n int) (p50, p99 time.Duration) {
	t.Helper()
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		t.Fatalf("fsync probe: %v", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	lats := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("fsync probe: %v", err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			t.Fatalf("fsync probe: %v", err)
		}
		lats = append(lats, time.Since(t0))
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return lats[n/2].Round(time.Microsecond), lats[n*99/100].Round(time.Microsecond)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func benchSection(rs []benchResult, clients int, duration, fsyncP50, fsyncP99 time.Duration) string {
	var b strings.Builder
	fmt.Fprintln(&b, benchStart)
	fmt.Fprintln(&b, "## Admin writes: `addons-add` through the admin sockets")
	fmt.Fprintln(&b)
	fmt.Fprintf(&b, "Measured %s on %s.  \n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	fmt.Fprintf(&b, "Commit %s, %s.  \n", gitCommit(), runtime.Version())
	fmt.Fprintln(&b, "Command: `make bench` (runs `go test -tags bench -run TestBenchAdminWrites -v ./e2e/`).")
	fmt.Fprintln(&b)
	fmt.Fprintf(&b, "Load: %d concurrent clients (api.Client, one admin-socket connection each, spread round-robin over the sockets listed), "+
		"each sending `addons-add` with a unique app name (plan %s) back to back for %s after %d warm-up writes. "+
		"Real coordinator processes on loopback addresses, each with its own data dir; all on this one machine, clients included. "+
		"Latency is one request as the client sees it (socket, forwarding to the leader, Raft commit on a quorum with fsync, FSM apply, answer).\n",
		clients, benchPlan, duration, benchWarmup)
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| cluster | sockets used | addons at start | writes | writes/s | p50 | p90 | p99 | max | errors |")
	fmt.Fprintln(&b, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %.0f | %s | %s | %s | %s | %d |\n",
			r.Name, r.Sockets, r.AddonsAtStart, r.Writes, r.perSec(), ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max), r.Errors)
	}
	fmt.Fprintln(&b)
	var one, three *benchResult
	for i := range rs {
		switch {
		case rs[i].Members == 1 && one == nil:
			one = &rs[i]
		case rs[i].Members == 3 && three == nil:
			three = &rs[i]
		}
	}
	if one != nil && three != nil {
		fmt.Fprintf(&b, "Baseline measured in the same run: 3 members / 1 member throughput = **%.2f** (%.0f / %.0f writes/s).\n\n",
			three.perSec()/one.perSec(), three.perSec(), one.perSec())
		met := three.perSec() >= goalWritesPerSec && three.P99 < goalP99
		verdict := "**met**"
		if !met {
			var gaps []string
			if three.perSec() < goalWritesPerSec {
				gaps = append(gaps, fmt.Sprintf("throughput is %.0f%% of the goal", 100*three.perSec()/goalWritesPerSec))
			}
			if three.P99 >= goalP99 {
				gaps = append(gaps, fmt.Sprintf("p99 is %s", ms(three.P99)))
			}
			verdict = "**not met**: " + strings.Join(gaps, ", ")
		}
		fmt.Fprintf(&b, "Goal (issue 3): at least %d admin writes/s on 3 members with p99 under %s: %s.\n\n", goalWritesPerSec, ms(goalP99), verdict)
	}
	fmt.Fprintln(&b, "Where the time goes (CPU time per write, from /proc/<pid>/stat of each coordinator and getrusage of the client process):")
	fmt.Fprintln(&b)
	for _, r := range rs {
		ids := make([]string, 0, len(r.CPUPerOp))
		for id := range r.CPUPerOp {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		var parts []string
		var total time.Duration
		for _, id := range ids {
			label := id
			if id == r.LeaderID {
				label += " (leader)"
			}
			parts = append(parts, fmt.Sprintf("%s %s", label, us(r.CPUPerOp[id])))
			total += r.CPUPerOp[id]
		}
		capacity := float64(runtime.NumCPU()) / total.Seconds()
		fmt.Fprintf(&b, "- %s: %s; total %s per write, i.e. at most ~%.0f writes/s if CPU-bound on %d CPUs.\n",
			r.Name, strings.Join(parts, ", "), us(total), capacity, runtime.NumCPU())
	}
	fmt.Fprintf(&b, "- fsync (4 KiB write + fdatasync) on the data dirs' filesystem: p50 %s, p99 %s.\n", us(fsyncP50), us(fsyncP99))
	fmt.Fprintln(&b, benchEnd)
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func machine() string {
	mem := "unknown memory"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					mem = fmt.Sprintf("%.1f GiB RAM", kb/(1<<20))
				}
			}
		}
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = " (" + strings.TrimSpace(v) + ")"
				break
			}
		}
	}
	return fmt.Sprintf("%s/%s, nproc %d%s, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), model, mem)
}

func gitCommit() string {
	root, err := moduleRoot()
	if err != nil {
		return "unknown"
	}
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}

// writeBenchSection replaces one benchmark's section of docs/benchmarks.md
// (between its start and end markers), creating the file or appending the
// section when missing, and returns the file's path. Every benchmark of the
// package writes through it.
func writeBenchSection(t *testing.T, benchStart, benchEnd, section string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("module root: %v", err)
	}
	path := filepath.Join(root, "docs", "benchmarks.md")
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("read %s: %v", path, err)
	}
	doc := string(old)
	if doc == "" {
		doc = "# cacheplane benchmarks\n\n" +
			"Figures written by `make bench`. Each benchmark replaces only its own section (between its\n" +
			"`<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` markers); the rest of this file is kept.\n"
	}
	i, j := strings.Index(doc, benchStart), strings.Index(doc, benchEnd)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + strings.TrimSuffix(section, "\n") + doc[j+len(benchEnd):]
	case i >= 0 || j >= 0:
		t.Fatalf("%s: only one of the markers %s / %s is present; fix the file by hand", path, benchStart, benchEnd)
	default:
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatalf("docs dir: %v", err)
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}
