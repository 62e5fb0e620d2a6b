package operation

import (
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

func topo(f *fixture) Topology {
	return Topology{Addon: f.addons["b-1"], Hosts: f.hosts, Observed: f.obs, StraySince: map[string]time.Time{}, Now: t0}
}

func TestNeedsSentinels(t *testing.T) {
	f := newFixture()
	if NeedsSentinels(topo(f)) {
		t.Fatal("reports agree with the record")
	}
	f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberBusy, RedisRole: "master"}
	if NeedsSentinels(topo(f)) {
		t.Fatal("a busy primary that still says master agrees")
	}
	f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"}
	if !NeedsSentinels(topo(f)) {
		t.Fatal("a second master disagrees")
	}
	f = newFixture()
	f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"}
	if !NeedsSentinels(topo(f)) {
		t.Fatal("the recorded primary answering as a replica disagrees")
	}
}

func TestReconcile(t *testing.T) {
	twoMasters := func(f *fixture) {
		f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"}
		f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"}
	}
	t.Run("failover happened: record the named member, the old primary is a stray after the grace", func(t *testing.T) {
		f := newFixture()
		twoMasters(f)
		tp := topo(f)
		tp.Majority, tp.Votes = "b-1-redis-1", 3
		r := Reconcile(tp)
		if r.Record != "b-1-redis-1" || len(r.Demote) != 0 || r.Stray["b-1-redis-0"] != t0 {
			t.Fatalf("first sight: %+v", r)
		}
		tp.StraySince, tp.Now = r.Stray, t0.Add(StrayGrace)
		r = Reconcile(tp)
		if len(r.Demote) != 1 || r.Demote[0] != "b-1-redis-0" || r.Primary != "b-1-redis-1" {
			t.Fatalf("after the grace: %+v", r)
		}
	})
	t.Run("never demote during a planned switchover", func(t *testing.T) {
		f := newFixture()
		twoMasters(f)
		tp := topo(f)
		tp.Majority, tp.Votes, tp.Switching = "b-1-redis-1", 3, true
		tp.StraySince = map[string]time.Time{"b-1-redis-0": t0.Add(-time.Hour)}
		if r := Reconcile(tp); len(r.Demote) != 0 {
			t.Fatalf("demoted during a switchover: %+v", r)
		}
	})
	t.Run("one stale sentinel alone never gets the real primary demoted", func(t *testing.T) {
		f := newFixture()
		twoMasters(f)
		tp := topo(f)
		tp.Majority, tp.Votes = "b-1-redis-1", 1
		tp.StraySince = map[string]time.Time{"b-1-redis-0": t0.Add(-time.Hour)}
		if r := Reconcile(tp); len(r.Demote) != 0 || r.Record != "b-1-redis-1" || !strings.Contains(r.Why, "not enough") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("never demote towards a primary not seen serving", func(t *testing.T) {
		f := newFixture()
		f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberFailed}
		tp := topo(f)
		tp.Majority, tp.Votes = "b-1-redis-1", 3
		tp.StraySince = map[string]time.Time{"b-1-redis-0": t0.Add(-time.Hour)}
		r := Reconcile(tp)
		if len(r.Demote) != 0 || !strings.Contains(r.Why, "not seen serving") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("no majority: nothing", func(t *testing.T) {
		f := newFixture()
		twoMasters(f)
		if r := Reconcile(topo(f)); r.Record != "" || len(r.Demote) != 0 || r.Why == "" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("a stray that became a replica is forgotten", func(t *testing.T) {
		f := newFixture()
		tp := topo(f)
		tp.Majority, tp.Votes = "b-1-redis-0", 3
		tp.StraySince = map[string]time.Time{"b-1-redis-1": t0.Add(-time.Hour)}
		if r := Reconcile(tp); len(r.Stray) != 0 || len(r.Demote) != 0 {
			t.Fatalf("%+v", r)
		}
	})
}

func TestFailoverReason(t *testing.T) {
	tests := []struct {
		name string
		set  func(f *fixture)
		want string
	}{
		{"healthy", func(f *fixture) {}, ""},
		{"busy is never a reason", func(f *fixture) {
			f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberBusy, RedisRole: "master"}
		}, ""},
		{"process dead", func(f *fixture) { f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberFailed} }, "process is dead"},
		{"unresponsive", func(f *fixture) {
			f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberUnresponsive, Detail: "frozen (SIGSTOP)"}
		}, "frozen"},
		{"host lost", func(f *fixture) {
			h := f.hosts["h1"]
			h.State, h.Lost = api.HostDown, true
			f.hosts["h1"] = h
		}, "host h1 of primary b-1-redis-0 is lost"},
		{"host silent, not lost (its members may still serve): no bare failover", func(f *fixture) {
			h := f.hosts["h1"]
			h.State = api.HostDown
			f.hosts["h1"] = h
		}, ""},
		{"a replica's death is not the primary's", func(f *fixture) { f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberFailed} }, ""},
		{"host lost but the replica was far behind when last seen: no forced failover", func(f *fixture) {
			h := f.hosts["h1"]
			h.State, h.Lost = api.HostDown, true
			f.hosts["h1"] = h
			f.obs["b-1-redis-0"] = Observed{Offset: 10 << 20} // last known, host down
			f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave", Offset: 1 << 20}
		}, ""},
		{"host lost, the replica in sync when last seen: forced failover", func(f *fixture) {
			h := f.hosts["h1"]
			h.State, h.Lost = api.HostDown, true
			f.hosts["h1"] = h
			f.obs["b-1-redis-0"] = Observed{Offset: 10 << 20}
			f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave", Offset: 10<<20 - 100}
		}, "is lost"},
		{"no replica: nothing to fail over to", func(f *fixture) {
			f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberFailed}
			removeMember(f, "b-1-redis-1")
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			tc.set(f)
			got := FailoverReason(topo(f))
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("reason %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEntrypointHolder(t *testing.T) {
	f := newFixture()
	if got := EntrypointHolder(topo(f)); got != "" {
		t.Fatalf("holder on a ready host moved to %q", got)
	}
	h := f.hosts["h1"]
	h.State = api.HostDown
	f.hosts["h1"] = h
	if got := EntrypointHolder(topo(f)); got != "b-1-haproxy-1" {
		t.Fatalf("moved to %q", got)
	}
	h2 := f.hosts["h2"]
	h2.State = api.HostDraining
	f.hosts["h2"] = h2
	if got := EntrypointHolder(topo(f)); got != "" {
		t.Fatalf("moved to %q with no ready candidate", got)
	}
}

func TestHealth(t *testing.T) {
	tests := []struct {
		name string
		set  func(f *fixture)
		want string
	}{
		{"all serving", func(f *fixture) {}, "ok"},
		{"busy primary is still ok", func(f *fixture) {
			f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberBusy, RedisRole: "master"}
		}, "ok"},
		{"stray master", func(f *fixture) {
			f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"}
		}, "degraded: 2 masters (b-1-redis-0, b-1-redis-1); b-1-redis-1 is not a replica (running as master)"},
		{"replica far behind", func(f *fixture) {
			f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master", Offset: 5 << 20}
			f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave", Offset: 1 << 20}
		}, "degraded: b-1-redis-1 is 4194304 bytes behind"},
		{"host down", func(f *fixture) { f.obs["b-1-redis-1"] = Observed{} }, "degraded: b-1-redis-1 not reported"},
		{"no master", func(f *fixture) { f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberFailed} }, "degraded: no master; b-1-redis-0 failed"},
		{"a sentinel down", func(f *fixture) { f.obs["b-1-sentinel-2"] = Observed{Seen: true, State: api.MemberFailed} }, "degraded: b-1-sentinel-2 failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			tc.set(f)
			if got := Health(topo(f)); got != tc.want {
				t.Fatalf("health %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStaleSentinels(t *testing.T) {
	f := newFixture()
	tp := topo(f)
	tp.Votes = 2
	tp.Named = map[string]NamedPrimary{
		"s1": {Addr: "new:1", Epoch: 2}, "s2": {Addr: "new:1", Epoch: 2},
		"s3": {Addr: "old:1", Epoch: 1}, // missed the failover
	}
	got, since := StaleSentinels(tp, "new:1", 2)
	if len(got) != 0 || since["s3"] != t0 || len(since) != 1 {
		t.Fatalf("first sight: %v %v", got, since)
	}
	tp.StaleSince, tp.Now = since, t0.Add(StaleGrace)
	if got, _ := StaleSentinels(tp, "new:1", 2); len(got) != 1 || got[0] != "s3" {
		t.Fatalf("after the grace: %v", got)
	}
	// Without the quorum naming the primary, nobody is re-pointed.
	one := tp
	one.Votes = 1
	if got, _ := StaleSentinels(one, "new:1", 2); len(got) != 0 {
		t.Fatalf("with one vote: %v", got)
	}
	// Naming the current primary, or at the latest epoch: never stale.
	tp.Named["s3"] = NamedPrimary{Addr: "new:1", Epoch: 1}
	if got, since := StaleSentinels(tp, "new:1", 2); len(got) != 0 || len(since) != 0 {
		t.Fatalf("current: %v %v", got, since)
	}
}
