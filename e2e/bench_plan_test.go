//go:build bench

package e2e

// make bench: plan changes measured through the URL (issue 11, item 3 and
// "make bench"): starter and business addons grown and shrunk live while
// a go-redis client writes sequence-numbered keys through the URL; failed
// commands, longest stall and duration per transition, next to the
// downtime the product docs give.

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

const (
	planBenchStart = "<!-- bench:plan-changes:start -->"
	planBenchEnd   = "<!-- bench:plan-changes:end -->"
)

// planBenchRow is one transition measured rounds times.
type planBenchRow struct {
	name, how, docs string
	runs            []transition
	lost            int
}

func TestBenchPlanChanges(t *testing.T) {
	rounds := envInt(t, "CACHEPLANE_BENCH_PLAN_ROUNDS", 5)
	f := startBusiness(t, "bench-plan-biz", bizOpts{
		CoordIP: "127.0.0.170", HostIPs: []string{"127.0.0.171", "127.0.0.172", "127.0.0.173", "127.0.0.174"}, VIPPool: "127.0.18.0/24",
	})
	const starterApp = "bench-plan-starter"
	if res := f.c.CLI("addons-add", "--app", starterApp, "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	starterID := WaitForAddonStatus(t, f.c, starterApp, api.AddonRunning, 90*time.Second).ID
	starterOpt, err := redis.ParseURL(RedisURL(t, f.c, starterApp))
	if err != nil {
		t.Fatal(err)
	}

	type addon struct {
		app, id, kind string
		opt           *redis.Options
	}
	var rows []*planBenchRow
	for _, a := range []addon{{starterApp, starterID, "starter", starterOpt}, {f.app, f.id, "business", f.opt}} {
		small, large := "redis-"+a.kind+"-256", "redis-"+a.kind+"-1024"
		how := "the agent resizes the one redis node in place: cgroup limit, then `CONFIG SET maxmemory` (growing; the reverse order shrinking); no restart"
		docs := "2–10 s"
		if a.kind == "business" {
			how = "both redis nodes resized in place at once (cgroup limit and `CONFIG SET maxmemory`); no restart, no switchover"
			docs = "none"
		}
		base := &planBenchRow{name: a.kind + ", no change (baseline)", how: "`cacheplane addons --app` run instead of the change, stall counted over a window as long as the change's", docs: "–"}
		grow := &planBenchRow{name: a.kind + " → " + a.kind + ", grow (256 → 1024 MB)", how: how, docs: docs}
		shrink := &planBenchRow{name: a.kind + " → " + a.kind + ", shrink (1024 → 256 MB)", how: how, docs: docs}
		prefix := "bench-" + a.kind + ":"
		w := startWriter(a.opt, prefix)
		w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
		for i := 0; i < rounds; i++ {
			grow.runs = append(grow.runs, changePlan(t, f.c, w, a.app, a.id, small, large))
			w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
			shrink.runs = append(shrink.runs, changePlan(t, f.c, w, a.app, a.id, large, small))
			w.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
			base.runs = append(base.runs, noChange(t, f.c, w, a.app, shrink.runs[i].took))
		}
		acks, failed, errs := w.finish()
		c := redis.NewClient(a.opt)
		lost := len(missing(t, c, prefix, acks))
		c.Close()
		grow.lost, shrink.lost, base.lost = lost, lost, lost // over the whole writer run
		t.Logf("%s: %d writes acknowledged, %d failed %v, %d lost", a.kind, len(acks), failed, errs, lost)
		for _, r := range []*planBenchRow{grow, shrink, base} {
			for _, tr := range r.runs {
				t.Logf("%s", tr)
			}
		}
		rows = append(rows, base, grow, shrink)
	}
	// Changes of kind, on the starter: to business and back, at the same
	// size and at another one.
	kindRounds := min(rounds, 3)
	kinds := []struct {
		name, from, to, how, docs string
	}{
		{"starter → business, same size (256 MB)", "redis-starter-256", "redis-business-256",
			"a replica, three sentinels and a second haproxy placed around the kept redis node and haproxy; the starter's haproxy learns the replica at run time (no restart); done once the replica is in sync, every sentinel could fail over and the URL answers", "none"},
		{"business → starter, same size (256 MB)", "redis-business-256", "redis-starter-256",
			"the primary and the entrypoint's haproxy stay (not restarted), the replica, the sentinels and the other haproxy go in one step; the haproxy drops the replica's server at run time", "none"},
		{"starter → business, larger (256 → 1024 MB)", "redis-starter-256", "redis-business-1024",
			"as above, the kept redis node resized in place (cgroup limit, `CONFIG SET maxmemory`)", "none"},
		{"business → starter, smaller (1024 → 256 MB)", "redis-business-1024", "redis-starter-256",
			"as above, then the last node resized in place", "2–10 s"},
	}
	kindRows := make([]*planBenchRow, len(kinds))
	for i, k := range kinds {
		kindRows[i] = &planBenchRow{name: k.name, how: k.how, docs: k.docs}
	}
	kw := startWriter(starterOpt, "bench-kind:")
	kw.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	for r := 0; r < kindRounds; r++ {
		for i, k := range kinds {
			kindRows[i].runs = append(kindRows[i].runs, changePlan(t, f.c, kw, starterApp, starterID, k.from, k.to))
			kw.waitAcksAfter(t, time.Now(), 100, 20*time.Second)
		}
	}
	acks, failed, errs := kw.finish()
	kc := redis.NewClient(starterOpt)
	klost := len(missing(t, kc, "bench-kind:", acks))
	kc.Close()
	t.Logf("changes of kind: %d writes acknowledged, %d failed %v, %d lost", len(acks), failed, errs, klost)
	for _, r := range kindRows {
		r.lost = klost
		for _, tr := range r.runs {
			t.Logf("%s", tr)
		}
	}
	rows = append(rows, kindRows...)
	section := planSection(rows, rounds)
	path := writeBenchSection(t, planBenchStart, planBenchEnd, section)
	t.Logf("wrote %s:\n%s", path, section)
	for _, r := range rows {
		for _, tr := range r.runs {
			if tr.failed > 0 {
				t.Errorf("%s: %d failed commands", r.name, tr.failed)
			}
		}
		if r.lost > 0 {
			t.Errorf("%s: %d acknowledged writes lost", r.name, r.lost)
		}
	}
}

// noChange measures the writer over a window of length d that starts
// with a CLI run changing nothing: the stall a client sees anyway on this
// machine (the CLI process, the coordinator and the agents share the same
// 2 CPUs with redis, HAProxy and the client).
func noChange(t *testing.T, c *Coordinator, w *writer, app string, d time.Duration) transition {
	t.Helper()
	failedBefore := w.failures()
	start := time.Now()
	if res := c.CLI("addons", "--app", app); res.Code != 0 {
		t.Fatalf("addons: %s", res)
	}
	end := start.Add(d)
	w.waitAcksAfter(t, end, 10, 20*time.Second) // the window is over
	acks := w.ackLog()
	return transition{took: d, opTook: d, stall: gapWithin(acks, start, end), failed: w.failures() - failedBefore}
}

func durStats(ds []time.Duration) (med, hi time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0, 0
	}
	return medianDur(s), s[len(s)-1]
}

func planSection(rows []*planBenchRow, rounds int) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("%s\n## Plan changes: every direction, measured through the URL\n\n", planBenchStart)
	p("Measured %s on %s.  \n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	p("Commit %s.  \n", gitCommit())
	p("Command: `make bench` (runs `go test -tags bench -run TestBench -v ./e2e/`; this section alone: " +
		"`go test -tags bench -run TestBenchPlanChanges -v ./e2e/`, `CACHEPLANE_BENCH_PLAN_ROUNDS` rounds, default 5).\n\n")
	p("Set-up: 1 coordinator, 4 agents on 127.0.0.171–174 under containerd (4096 MB each), one `redis-starter-256` and one "+
		"`redis-business-256` addon (VIP entrypoint). For each addon a go-redis client with default options (retries on) writes "+
		"sequence-numbered keys back to back through the URL the whole time while `cacheplane addons-upgrade` moves it 256 → 1024 MB and "+
		"back, %d rounds; every acknowledged write is read back at the end. Failed commands and the longest stall (longest time "+
		"without an acknowledged write) are counted from the request to the operation being done; duration is the operation's own "+
		"(created → last step done: record plan, resize members — `CONFIG GET maxmemory` on each redis node —, notify app — no hook "+
		"configured here —, mark running). Changes of kind: the starter addon goes to business and back, at the same size and at "+
		"another, %d rounds, one writer over all of them (its lost writes count over all of them); the URL is the same VIP throughout.\n\n", rounds, min(rounds, 3))
	p("| transition | how | downtime in the product docs | runs | failed commands | lost writes | longest stall (median / max) | duration (median / max) |\n")
	p("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		var stalls, took []time.Duration
		failed := 0
		for _, tr := range r.runs {
			stalls = append(stalls, tr.stall)
			took = append(took, tr.opTook)
			failed += tr.failed
		}
		sm, sx := durStats(stalls)
		tm, tx := durStats(took)
		dur := secs(tm) + " / " + secs(tx)
		if strings.Contains(r.name, "baseline") {
			dur = "–"
		}
		p("| %s | %s | %s | %d | %d | %d | %s / %s | %s |\n", r.name, r.how, r.docs, len(r.runs), failed, r.lost, ms(sm), ms(sx), dur)
	}
	p("\nThe docs' order for business → business (\"replicas first, failover, then the old primary\") is not needed: the resize is " +
		"live on every node (no restart, no role change), so both nodes are resized at once and nothing fails over. Lost writes count " +
		"over all rounds of an addon (one writer per addon). The stall is the longest time between two of the client's own back-to-back " +
		"writes (one connection, ~0.1 ms round trip on loopback); the baseline rows show what it is over a window of the same length " +
		"with no change at all (the CLI, the coordinator and the agents share the machine's 2 CPUs with redis, HAProxy and the client).\n")
	p("%s\n", planBenchEnd)
	return b.String()
}
