//go:build bench

package e2e

// make bench: failover time of a business addon (primary process killed,
// primary host lost) measured through its URL, and throughput through the
// entrypoint (HAProxy) against direct to the primary with redis-benchmark,
// in the same run, as ratios; HAProxy's CPU per million commands.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
)

const (
	foStart = "<!-- bench:failover:start -->"
	foEnd   = "<!-- bench:failover:end -->"
)

// Goals of issues 5 and 10.
const (
	goalProcessKill = 500 * time.Millisecond
	goalHostLoss    = 2000 * time.Millisecond
	// goalRedundant: full redundancy (replica in sync, sentinels agree)
	// after a process kill.
	goalRedundant = 5 * time.Second
	goalRatioP1   = 0.60
	goalRatioP16  = 0.47
)

func TestBenchFailover(t *testing.T) {
	kills := envInt(t, "CACHEPLANE_BENCH_KILLS", 10)
	hostKills := envInt(t, "CACHEPLANE_BENCH_HOST_KILLS", 10)
	vipKills := envInt(t, "CACHEPLANE_BENCH_VIP_KILLS", 10)
	f := startBusiness(t, "bench-fo", bizOpts{
		CoordIP: "127.0.0.90", HostIPs: []string{"127.0.0.91", "127.0.0.92", "127.0.0.93", "127.0.0.94"}, VIPPool: "127.0.2.0/24",
	})

	// Throughput first, on a fresh addon.
	tp := benchThroughput(t, f)

	var proc, host, vip []foKill
	for i := 0; i < kills; i++ {
		proc = append(proc, benchKill(t, f, fmt.Sprintf("p%d:", i), faultProcess))
	}
	for i := 0; i < hostKills; i++ {
		host = append(host, benchKill(t, f, fmt.Sprintf("h%d:", i), faultPrimaryHost))
	}
	for i := 0; i < vipKills; i++ {
		vip = append(vip, benchKill(t, f, fmt.Sprintf("v%d:", i), faultHolderHost))
	}
	section := foSection(proc, host, vip, tp)
	path := writeBenchSection(t, foStart, foEnd, section)
	t.Logf("wrote %s:\n%s", path, section)
}

// foKill is one fault: time from the fault to the first write acknowledged
// through the URL, and the writer's record around it.
type foKill struct {
	member   string
	toWrite  time.Duration
	stall    time.Duration
	failed   int
	acked    int
	lost     int
	restored time.Duration // fault → full redundancy again
	// Process kills: how often the restarted node answered INFO, and
	// whether it ever said role:master (two primaries at once).
	roleAnswers  int
	twoPrimaries bool
}

// Faults benchKill injects.
const (
	faultProcess     = iota // the primary's redis process
	faultPrimaryHost        // the primary's whole host
	faultHolderHost         // the whole host of the haproxy holding the VIP
)

// benchKill kills the primary's redis process, or the whole host of the
// primary or of the VIP holder, while a probe writes through the URL with
// no retries and short timeouts, so the first success after the fault is
// seen within a few milliseconds.
func benchKill(t *testing.T, f *bizFleet, prefix string, fault int) foKill {
	f.waitHealthy(60 * time.Second)
	wholeHost := fault != faultProcess
	old := f.primary()
	victim := old.HostID
	if fault == faultHolderHost {
		victim = f.holder().HostID
	}
	opt := *f.opt
	opt.MaxRetries = -1
	opt.DialTimeout = 100 * time.Millisecond
	opt.ReadTimeout = 200 * time.Millisecond
	opt.WriteTimeout = 200 * time.Millisecond
	opt.PoolSize = 4
	w := startWriter(&opt, prefix)
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
	var (
		at time.Time
		rw *roleWatch
	)
	ag := f.agents[victim]
	if wholeHost {
		// The agent first (no report, no restart), then every member at
		// once: the fault is the moment the primary dies.
		ag.Kill()
		var pids []int
		for _, st := range ag.Members() {
			if st.State == runtime.StateRunning && st.Pid > 0 {
				pids = append(pids, st.Pid)
			}
		}
		at = time.Now()
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	} else {
		pid := f.pidOf(old.HostID, old.ID)
		if pid == 0 {
			t.Fatalf("primary %s has no running process", old.ID)
		}
		// Watch the killed node: from its restart on, it must never answer
		// role:master beside the new primary.
		rw = f.watchRole(f.memberAddr(old))
		at = time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
	}
	w.waitAcksAfter(t, at, 50, 30*time.Second)
	k := foKill{member: old.ID}
	if wholeHost {
		f.waitRedundant(victim, 120*time.Second)
	} else {
		f.waitHealthy(60 * time.Second)
	}
	k.restored = time.Since(at)
	if rw != nil {
		master, answers := rw.finish()
		k.roleAnswers, k.twoPrimaries = answers, !master.IsZero()
	}
	acks, failed, _ := w.finish()
	// The first write after the outage ends the longest stall (a write in
	// flight at the kill may still be acknowledged a moment after it).
	gap, from := longestGap(acks, at)
	k.stall, k.toWrite = gap, from.Add(gap).Sub(at)
	k.failed, k.acked = failed, len(acks)
	c := redis.NewClient(f.opt)
	defer c.Close()
	k.lost = len(missing(t, c, prefix, acks))
	// Start the next round empty: the probe writes ~100k keys a round and
	// the plan holds 256 MB.
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Logf("flushall after round %s: %v", prefix, err)
	}
	t.Logf("%s (primary %s, host %s): first write after %s (stall %s), %d failed, %d acknowledged, %d lost, redundant again after %s; restarted node answered %d times, said master: %v",
		[]string{"process kill", "primary host loss", "VIP holder host loss"}[fault], old.ID, victim, k.toWrite.Round(time.Millisecond),
		k.stall.Round(time.Millisecond), k.failed, k.acked, k.lost, k.restored.Round(time.Millisecond), k.roleAnswers, k.twoPrimaries)
	if wholeHost {
		// Bring the host back (empty of this addon's members) for the next round.
		ag.Restart()
		ag.WaitReady(f.c)
	}
	return k
}

// tpRun is one redis-benchmark run.
type tpRun struct {
	target   string // direct or entrypoint
	pipeline int
	set, get float64 // requests per second
	requests int
	hapCPU   time.Duration // HAProxy CPU during the run (entrypoint only)
}

type throughput struct {
	runs []tpRun
	n1   int
	n16  int
}

// benchThroughput runs redis-benchmark -t set,get -c 50 against the
// primary directly and through the entrypoint, unpipelined and -P 16,
// interleaved (direct, entrypoint, direct, entrypoint) in the same run.
func benchThroughput(t *testing.T, f *bizFleet) throughput {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		t.Fatalf("redis-benchmark is needed (apt-get install redis-tools): %v", err)
	}
	f.waitHealthy(60 * time.Second)
	tp := throughput{n1: envInt(t, "CACHEPLANE_BENCH_N", 200000)}
	tp.n16 = tp.n1 * 8
	primary := f.primary()
	direct := f.memberAddr(primary)
	ep := f.mustAddon().Entrypoint
	holder := f.holder()
	hpid := f.pidOf(holder.HostID, holder.ID)
	if hpid == 0 {
		t.Fatalf("haproxy %s is not running", holder.ID)
	}
	for _, p := range []int{1, 16} {
		n := tp.n1
		if p == 16 {
			n = tp.n16
		}
		for round := 0; round < 2; round++ {
			for _, target := range []string{"direct", "entrypoint"} {
				addr := direct
				if target == "entrypoint" {
					addr = ep
				}
				before := procCPU(t, hpid)
				set, get := redisBenchmark(t, addr, f.opt.Password, p, n)
				r := tpRun{target: target, pipeline: p, set: set, get: get, requests: 2 * n}
				if target == "entrypoint" {
					r.hapCPU = procCPU(t, hpid) - before
				}
				t.Logf("%s P%d: SET %.0f/s GET %.0f/s", target, p, set, get)
				tp.runs = append(tp.runs, r)
			}
		}
	}
	// The benchmark's keys are not part of the dataset the failover checks.
	c := f.direct(direct)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = c.Del(ctx, "key:__rand_int__").Err()
	return tp
}

var benchLine = regexp.MustCompile(`^"?(SET|GET)"?[:,]\s*"?([0-9.]+)`)

// redisBenchmark runs redis-benchmark (with extra flags, e.g. --tls
// --cacert) and returns SET and GET requests/s.
func redisBenchmark(t *testing.T, addr, password string, pipeline, n int, extra ...string) (set, get float64) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	args := append([]string{"-h", host, "-p", port, "--user", "default", "-a", password,
		"-t", "set,get", "-c", "50", "-n", strconv.Itoa(n), "-P", strconv.Itoa(pipeline), "-q", "--csv"}, extra...)
	cmd := exec.Command("redis-benchmark", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("redis-benchmark %s -P %d %v: %v\n%s", addr, pipeline, extra, err, strings.ReplaceAll(errb.String(), password, "<password>"))
	}
	for _, line := range strings.Split(out.String(), "\n") {
		m := benchLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "SET" {
			set = v
		} else {
			get = v
		}
	}
	if set == 0 || get == 0 {
		t.Fatalf("redis-benchmark %s %v: no SET/GET figures in:\n%s", addr, extra, out.String())
	}
	return set, get
}

// procCPU is a process's user+system CPU time.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("cpu time of %d: %v", pid, err)
	}
	fs := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(fs[11], 10, 64)
	stime, _ := strconv.ParseInt(fs[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func medianDur(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func killStats(ks []foKill) (med, lo, hi time.Duration, failed, lost, acked int) {
	var ds []time.Duration
	for _, k := range ks {
		ds = append(ds, k.toWrite)
		failed += k.failed
		lost += k.lost
		acked += k.acked
	}
	med = medianDur(ds)
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if len(ds) > 0 {
		lo, hi = ds[0], ds[len(ds)-1]
	}
	return
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func foSection(proc, host, vip []foKill, tp throughput) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("%s\n## Business addon: failover and entrypoint throughput\n\n", foStart)
	p("Measured %s on %s.  \n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	p("Commit %s.  \n", gitCommit())
	p("Command: `make bench` (runs `go test -tags bench -run TestBench -v ./e2e/`; this section is `TestBenchFailover`).\n\n")
	p("Set-up: 1 coordinator with the default host detection (agents' liveness signal every 250 ms, `host_suspect_after` 1 s then a TCP probe of the host's members, "+
		"`host_down_after` 5 s) and `--heal-after 3s` (so rounds do not wait 30 s for replacements), 4 agents on 127.0.0.91–94 under containerd with the default "+
		"1 s heartbeat, one `redis-business-256` addon (2 redis, 3 sentinels with down-after %d ms — the safety net —, 2 haproxy, VIP entrypoint from 127.0.2.0/24); "+
		"everything, clients included, on this one machine.\n\n", render.SentinelDownAfter.Milliseconds())

	p("### Unplanned failover, from the fault to the first write acknowledged through the URL\n\n")
	p("A probe writes sequence-numbered keys back to back through the URL (go-redis, no retries, 100 ms dial / 200 ms I/O timeouts). " +
		"Process kill: `kill -9` of the primary's redis-server; the agent sees the exit and asks Sentinel for the failover at once, then restarts the " +
		"process as a replica of the new primary. Host loss: the primary's agent is killed, then every member process of that host at once " +
		"(the moment counted as the fault); the coordinator misses its liveness signal for 1 s, finds none of its members accepting a connection, marks it " +
		"down and forces the failover (and moves the VIP when the host held it); self-healing then rebuilds the missing members elsewhere " +
		"and the host is brought back empty before the next round. VIP holder host loss: the same for the host of the haproxy holding the VIP.\n\n")
	p("| fault | runs | median | min | max | goal | failed probe writes | acknowledged | lost |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(name string, ks []foKill, goal time.Duration) {
		med, lo, hi, failed, lost, acked := killStats(ks)
		verdict := "met"
		if med > goal {
			verdict = "**not met**"
		}
		p("| %s | %d | %s | %s | %s | ≤ %s (%s) | %d | %d | %d |\n", name, len(ks), secs(med), secs(lo), secs(hi), secs(goal), verdict, failed, acked, lost)
	}
	row("redis process killed", proc, goalProcessKill)
	if len(host) > 0 {
		row("primary's host lost", host, goalHostLoss)
	}
	if len(vip) > 0 {
		row("VIP holder's host lost", vip, goalHostLoss)
	}
	var restored []time.Duration
	for _, k := range proc {
		restored = append(restored, k.restored)
	}
	if len(restored) > 0 {
		med := medianDur(restored)
		verdict := "met"
		if med > goalRedundant {
			verdict = "**not met**"
		}
		sort.Slice(restored, func(i, j int) bool { return restored[i] < restored[j] })
		p("\nFull redundancy again after a process kill (the killed node a replica in sync, every sentinel naming the primary and knowing the replica, a write "+
			"through the URL): median %s (min %s, max %s) over %d kills; goal ≤ %s (%s).\n", secs(med), secs(restored[0]), secs(restored[len(restored)-1]),
			len(restored), secs(goalRedundant), verdict)
	}
	twice, watched := 0, 0
	for _, k := range proc {
		if k.roleAnswers > 0 {
			watched++
		}
		if k.twoPrimaries {
			twice++
		}
	}
	p("\nTwo primaries at once: after each process kill the killed node was polled (INFO replication every ~10 ms from its restart until "+
		"the addon was healthy again): it answered in %d of %d kills and said `role:master` in **%d** of them (goal: never).\n", watched, len(proc), twice)
	p("\nPer run (first write / longest stall / full redundancy again): ")
	var parts []string
	for _, k := range proc {
		parts = append(parts, fmt.Sprintf("%s / %s / %s", secs(k.toWrite), secs(k.stall), secs(k.restored)))
	}
	p("process kills %s", strings.Join(parts, "; "))
	parts = nil
	for _, k := range host {
		parts = append(parts, fmt.Sprintf("%s / %s / %s", secs(k.toWrite), secs(k.stall), secs(k.restored)))
	}
	if len(parts) > 0 {
		p("; host losses %s", strings.Join(parts, "; "))
	}
	parts = nil
	for _, k := range vip {
		parts = append(parts, fmt.Sprintf("%s / %s / %s", secs(k.toWrite), secs(k.stall), secs(k.restored)))
	}
	if len(parts) > 0 {
		p("; VIP holder host losses %s", strings.Join(parts, "; "))
	}
	p(".\n\n")

	p("### Throughput through the entrypoint vs direct to the primary\n\n")
	p("`redis-benchmark -t set,get -c 50 -n %d` (unpipelined) and `-n %d -P 16`, with `--user default -a <password>`, against the primary's own "+
		"address and against the VIP (HAProxy with the role check every 200 ms and the 2,000-connection cap on), interleaved "+
		"direct/entrypoint twice per pipeline depth in the same run. HAProxy CPU from /proc/<pid>/stat of the VIP holder during its runs.\n\n", tp.n1, tp.n16)
	p("| pipeline | direct SET/s | direct GET/s | entrypoint SET/s | entrypoint GET/s | ratio | goal | HAProxy CPU s per million commands |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, pl := range []int{1, 16} {
		var dSet, dGet, eSet, eGet float64
		var cpu time.Duration
		var reqs, nd, ne int
		for _, r := range tp.runs {
			if r.pipeline != pl {
				continue
			}
			if r.target == "direct" {
				dSet, dGet, nd = dSet+r.set, dGet+r.get, nd+1
			} else {
				eSet, eGet, ne = eSet+r.set, eGet+r.get, ne+1
				cpu += r.hapCPU
				reqs += r.requests
			}
		}
		if nd == 0 || ne == 0 {
			continue
		}
		dSet, dGet, eSet, eGet = dSet/float64(nd), dGet/float64(nd), eSet/float64(ne), eGet/float64(ne)
		ratio := (eSet + eGet) / (dSet + dGet)
		goal := goalRatioP1
		if pl == 16 {
			goal = goalRatioP16
		}
		verdict := "met"
		if ratio < goal {
			verdict = "**not met**"
		}
		p("| %d | %.0f | %.0f | %.0f | %.0f | **%.2f** | ≥ %.2f (%s) | %.2f |\n", pl, dSet, dGet, eSet, eGet, ratio, goal, verdict, cpu.Seconds()/(float64(reqs)/1e6))
	}
	p("\nRatio = (entrypoint SET/s + GET/s) / (direct SET/s + GET/s), means of the two rounds. On 2 vCPUs the benchmark client, HAProxy and redis share the two cores, " +
		"so the ratio is what one extra user-space hop costs here, not HAProxy's capacity.\n")
	p("%s\n", foEnd)
	return b.String()
}
