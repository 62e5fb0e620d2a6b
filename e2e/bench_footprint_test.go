//go:build bench

package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// Footprint benchmark knobs; CACHEPLANE_BENCH_FOOTPRINT_SECONDS overrides
// the sampling window, CACHEPLANE_BENCH_FOOTPRINT_ADDONS the number of
// starters (two members each: redis and its HAProxy) and
// CACHEPLANE_BENCH_FOOTPRINT_HEARTBEAT the agent's heartbeat interval.
var (
	fpAddons    = 10
	fpHeartbeat = 2 * time.Second
)

const (
	fpPlan    = "redis-starter-256"
	fpWindow  = 60 * time.Second
	fpSettle  = 10 * time.Second // after the last addon runs, before sampling
	fpEvery   = time.Second      // sampling interval
	fpScrape  = 15 * time.Second // a Prometheus scrape of the agent's /metrics
	fpCoordIP = "127.0.0.24"
	fpHostIP  = "127.0.0.41"

	fpStart = "<!-- bench:footprint:start -->"
	fpEnd   = "<!-- bench:footprint:end -->"
)

// TestBenchFootprint measures what cacheplane itself costs on a host: one
// coordinator and one agent (2 s heartbeat) with 10 starter addons on the
// agent's host, idle, sampled for 60 s from /proc. The figures go into
// docs/benchmarks.md between the footprint markers.
func TestBenchFootprint(t *testing.T) {
	window := fpWindow
	if s := os.Getenv("CACHEPLANE_BENCH_FOOTPRINT_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("CACHEPLANE_BENCH_FOOTPRINT_SECONDS=%q: want a positive number of seconds", s)
		}
		window = time.Duration(n) * time.Second
	}
	fpAddons = envInt(t, "CACHEPLANE_BENCH_FOOTPRINT_ADDONS", fpAddons)
	if s := os.Getenv("CACHEPLANE_BENCH_FOOTPRINT_HEARTBEAT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("CACHEPLANE_BENCH_FOOTPRINT_HEARTBEAT=%q: want a positive duration", s)
		}
		fpHeartbeat = d
	}
	c := StartCoordinator(t, "c1", fpCoordIP, CoordinatorOpts{Bootstrap: true})
	WaitForLeader(t, startTimeout, c)
	ag := fpStartAgent(t, c)

	cl := c.Client()
	defer cl.Close()
	provisionStart := time.Now()
	for i := range fpAddons {
		app := fmt.Sprintf("fp-app-%d", i)
		if res := c.CLI("addons-add", "--app", app, "redis", fpPlan); res.Code != 0 {
			t.Fatalf("addons-add %s: %s", app, res)
		}
	}
	testutil.WaitFor(t, 5*time.Minute, func() error {
		for i := range fpAddons {
			app := fmt.Sprintf("fp-app-%d", i)
			as, err := cl.Addons(ctxT(t, 5*time.Second), app, false)
			if err != nil {
				return err
			}
			if len(as) != 1 || as[0].Status != api.AddonRunning {
				return fmt.Errorf("%s: %d addons, not running yet", app, len(as))
			}
		}
		return nil
	})
	provisioned := time.Since(provisionStart)
	t.Logf("%d addons running after %s; settling %s, then sampling for %s", fpAddons, provisioned.Round(time.Millisecond), fpSettle, window)
	if !sleepUnlessDead(t, fpSettle, ag, c) {
		return
	}

	procs := []*fpProc{{name: "agent", pid: ag.Pid()}, {name: "coordinator", pid: c.Pid()}}
	for _, p := range procs {
		p.sample(t)
	}
	start := time.Now()
	tick := time.NewTicker(fpEvery)
	defer tick.Stop()
	nextScrape := start
	scrapes := 0
	for time.Since(start) < window {
		if !time.Now().Before(nextScrape) {
			ag.scrape(t)
			scrapes++
			nextScrape = nextScrape.Add(fpScrape)
		}
		<-tick.C
		if !ag.Running() || !c.Running() {
			t.Fatalf("a daemon exited during the benchmark (agent log %s, coordinator log %s)", ag.LogPath, c.LogPath)
		}
		for _, p := range procs {
			p.sample(t)
		}
	}
	elapsed := time.Since(start)
	for _, p := range procs {
		t.Logf("%s: %s", p.name, p.summary())
	}
	members := membersRSS(ag)

	section := fpSection(procs, elapsed, scrapes, provisioned, members)
	path := writeBenchSection(t, fpStart, fpEnd, section)
	t.Logf("wrote %s:\n%s", path, section)
}

// sleepUnlessDead waits d (a settle period, not a synchronisation),
// failing the test if a daemon exits meanwhile.
func sleepUnlessDead(t *testing.T, d time.Duration, ag *fpAgent, c *Coordinator) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !ag.Running() || !c.Running() {
			t.Fatalf("a daemon exited while settling (agent log %s, coordinator log %s)", ag.LogPath, c.LogPath)
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// ---------------------------------------------------------------------------
// The agent process

// fpAgent is the agent under measurement and its /metrics address.
type fpAgent struct {
	*Agent
	metrics string
}

// fpStartAgent runs the agent for host h1 on fpHostIP with a 2 s heartbeat,
// info logging (debug lines would be measured too) and /metrics on a free
// port, and waits until the coordinator lists the host as ready.
func fpStartAgent(t *testing.T, c *Coordinator) *fpAgent {
	t.Helper()
	metrics := fmt.Sprintf("%s:%d", fpHostIP, freePorts(t, fpHostIP, 1)[0])
	a := StartAgent(t, c, "h1", fpHostIP, AgentOpts{
		MemoryMB:  max(8192, fpAddons*(256+64)+1024),
		Heartbeat: fpHeartbeat,
		ExtraArgs: []string{"--log-level", "info", "--metrics-addr", metrics},
	})
	return &fpAgent{Agent: a, metrics: metrics}
}

// scrape does what a Prometheus server would every 15 s.
func (a *fpAgent) scrape(t *testing.T) {
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get("http://" + a.metrics + "/metrics")
	if err != nil {
		t.Errorf("scrape /metrics: %v", err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("scrape /metrics: %s", resp.Status)
	}
}

// membersRSS sums the RSS of the member processes the agent runs.
func membersRSS(a *fpAgent) uint64 {
	var sum uint64
	for _, st := range a.Members() {
		if st.Pid > 0 {
			if rss, _, err := procSample(st.Pid); err == nil {
				sum += rss.total
			}
		}
	}
	return sum
}

// ---------------------------------------------------------------------------
// /proc sampling

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

type fpProc struct {
	name string
	pid  int
	rss  []uint64
	anon []uint64        // RssAnon: heap, stacks (the process's own)
	file []uint64        // RssFile: mapped pages of the executable (shared, reclaimable)
	cpu  []time.Duration // cumulative user+system CPU time
	at   []time.Time
}

func (p *fpProc) sample(t *testing.T) {
	rss, cpu, err := procSample(p.pid)
	if err != nil {
		t.Fatalf("%s (pid %d): %v", p.name, p.pid, err)
	}
	p.rss = append(p.rss, rss.total)
	p.anon = append(p.anon, rss.anon)
	p.file = append(p.file, rss.file)
	p.cpu = append(p.cpu, cpu)
	p.at = append(p.at, time.Now())
}

// procRSS is a process's resident memory from /proc/<pid>/status.
type procRSS struct {
	total, anon, file uint64 // VmRSS, RssAnon, RssFile
}

// procSample reads a process's RSS (/proc/<pid>/status) and its CPU time
// (utime + stime of /proc/<pid>/stat).
func procSample(pid int) (rss procRSS, cpu time.Duration, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rss, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "VmRSS":
			dst = &rss.total
		case "RssAnon":
			dst = &rss.anon
		case "RssFile":
			dst = &rss.file
		default:
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return rss, 0, fmt.Errorf("/proc/%d/status: %s: %q", pid, k, v)
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return rss, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		*dst = kb << 10
	}
	if rss.total == 0 {
		return rss, 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return rss, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the
	// fields after it start behind the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return rss, 0, fmt.Errorf("/proc/%d/stat: %q", pid, stat)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return rss, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return rss, 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return rss, time.Duration(ut+st) * time.Second / clockTicks, nil
}

// fpStats are one process's figures over the window.
type fpStats struct {
	rssMedian, rssMax      uint64
	anonMedian, fileMedian uint64
	cpuMean, cpuMax        float64 // % of one CPU; max over 1 s intervals
	cpuTotal               time.Duration
}

func (p *fpProc) stats() fpStats {
	var s fpStats
	s.rssMedian, s.rssMax = medianMax(p.rss)
	s.anonMedian, _ = medianMax(p.anon)
	s.fileMedian, _ = medianMax(p.file)
	if n := len(p.cpu); n > 1 {
		s.cpuTotal = p.cpu[n-1] - p.cpu[0]
		s.cpuMean = 100 * s.cpuTotal.Seconds() / p.at[n-1].Sub(p.at[0]).Seconds()
		for i := 1; i < n; i++ {
			pct := 100 * (p.cpu[i] - p.cpu[i-1]).Seconds() / p.at[i].Sub(p.at[i-1]).Seconds()
			s.cpuMax = math.Max(s.cpuMax, pct)
		}
	}
	return s
}

func medianMax(vs []uint64) (median, maximum uint64) {
	sorted := append([]uint64(nil), vs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	n := len(sorted)
	if n == 0 {
		return 0, 0
	}
	if n%2 == 1 {
		median = sorted[n/2]
	} else {
		median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return median, sorted[n-1]
}

func (p *fpProc) summary() string {
	s := p.stats()
	return fmt.Sprintf("RSS median %s (anon %s, file %s) max %s; CPU mean %.2f%% (max %.0f%% over 1 s), %s CPU in %d samples",
		mibU(s.rssMedian), mibU(s.anonMedian), mibU(s.fileMedian), mibU(s.rssMax), s.cpuMean, s.cpuMax, s.cpuTotal.Round(time.Millisecond), len(p.rss))
}

func mibU(v uint64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }

// ---------------------------------------------------------------------------
// docs/benchmarks.md

func fpSection(procs []*fpProc, elapsed time.Duration, scrapes int, provisioned time.Duration, membersRSS uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n## Footprint: one agent with %d starter addons, one coordinator\n\n", fpStart, fpAddons)
	fmt.Fprintf(&b, "Measured %s on %s.  \n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), fpMachine())
	fmt.Fprintf(&b, "Commit %s, %s.  \n", gitCommitShort(), goruntime.Version())
	fmt.Fprintf(&b, "Command: `make bench` (runs `go test -tags bench -run TestBench -v ./e2e/`; this one alone: `go test -tags bench -run TestBenchFootprint -v ./e2e/`).\n\n")
	fmt.Fprintf(&b, "Set-up: real `cacheplane-coordinator` (1 member, bootstrap) and `cacheplane-agent` processes on loopback "+
		"addresses, built without -race; the agent runs under real containerd with `--heartbeat-interval %s`; %d addons `%s` "+
		"(one redis member each, all on this host; provisioned in %s). Idle members: no client traffic. "+
		"After a %s settle period, RSS (VmRSS of /proc/<pid>/status) and CPU time (utime + stime of /proc/<pid>/stat) of each daemon "+
		"were sampled every %s for %s; CPU %% is of one CPU. The agent's /metrics was scraped every %s during the window "+
		"(%d scrapes), as a Prometheus server would.\n\n",
		fpHeartbeat, fpAddons, fpPlan, provisioned.Round(100*time.Millisecond), fpSettle, fpEvery, elapsed.Round(time.Second), fpScrape, scrapes)
	fmt.Fprintf(&b, "| process | RSS median | of which anon | of which file | RSS max | CPU mean | CPU max (1 s) | CPU time in window |\n")
	fmt.Fprintf(&b, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range procs {
		s := p.stats()
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.2f %% | %.0f %% | %s |\n", p.name, mibU(s.rssMedian), mibU(s.anonMedian), mibU(s.fileMedian),
			mibU(s.rssMax), s.cpuMean, s.cpuMax, s.cpuTotal.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "\nanon = RssAnon (heap, stacks: the process's own memory); file = RssFile (pages of the executable mapped in: shared with "+
		"other processes running it and reclaimable under memory pressure).\n")
	if membersRSS > 0 {
		fmt.Fprintf(&b, "\nFor scale: the %d idle redis members themselves used %s RSS together at the end.\n", fpAddons, mibU(membersRSS))
	}
	fmt.Fprintf(&b, "%s\n", fpEnd)
	return b.String()
}

// fpMachine describes this machine: OS/arch, CPUs and model, memory.
func fpMachine() string {
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
	return fmt.Sprintf("%s/%s, nproc %d%s, %s", goruntime.GOOS, goruntime.GOARCH, goruntime.NumCPU(), model, mem)
}

// gitCommitShort is HEAD's short hash, noting uncommitted changes.
func gitCommitShort() string {
	root, err := moduleRoot()
	if err != nil {
		return "unknown"
	}
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += " (with uncommitted changes)"
	}
	return c
}
