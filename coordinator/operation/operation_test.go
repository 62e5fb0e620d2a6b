package operation

import (
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

// fixture: five ready hosts and one business addon b (primary on h1,
// replica on h2, sentinels on h1-h3, haproxys on h1-h2) plus a starter s
// on h4.
type fixture struct {
	hosts  map[string]api.Host
	addons map[string]api.Addon
	obs    map[string]Observed
}

func newFixture() *fixture {
	f := &fixture{hosts: map[string]api.Host{}, addons: map[string]api.Addon{}, obs: map[string]Observed{}}
	for i, id := range []string{"h1", "h2", "h3", "h4", "h5"} {
		f.hosts[id] = api.Host{ID: id, Address: "127.0.0.1" + string(rune('1'+i)), MemoryMB: 4096, State: api.HostReady}
	}
	b := api.Addon{ID: "b-1", App: "b", Plan: "redis-business-256", Status: api.AddonRunning, Password: api.NewSecret("pw"), Entrypoint: "127.0.1.1:20000",
		Members: []api.Member{
			{ID: "b-1-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 20001, RedisRole: "primary"},
			{ID: "b-1-redis-1", Role: api.RoleRedis, HostID: "h2", Port: 20001, RedisRole: "replica"},
			{ID: "b-1-sentinel-0", Role: api.RoleSentinel, HostID: "h1", Port: 20002},
			{ID: "b-1-sentinel-1", Role: api.RoleSentinel, HostID: "h2", Port: 20002},
			{ID: "b-1-sentinel-2", Role: api.RoleSentinel, HostID: "h3", Port: 20002},
			{ID: "b-1-haproxy-0", Role: api.RoleHAProxy, HostID: "h1", Port: 20003, Active: true},
			{ID: "b-1-haproxy-1", Role: api.RoleHAProxy, HostID: "h2", Port: 20003},
		}}
	s := api.Addon{ID: "s-1", App: "s", Plan: "redis-starter-256", Status: api.AddonRunning, Password: api.NewSecret("pw"), Entrypoint: "127.0.0.14:20010",
		Members: []api.Member{{ID: "s-1-redis-0", Role: api.RoleRedis, HostID: "h4", Port: 20010, RedisRole: "primary"}}}
	// s-2: a starter as they are made now, with its haproxy beside the
	// redis node and a VIP entrypoint.
	s2 := api.Addon{ID: "s-2", App: "s2", Plan: "redis-starter-256", Status: api.AddonRunning, Password: api.NewSecret("pw"), Entrypoint: "127.0.1.2:20021",
		Members: []api.Member{
			{ID: "s-2-redis-0", Role: api.RoleRedis, HostID: "h5", Port: 20020, RedisRole: "primary"},
			{ID: "s-2-haproxy-0", Role: api.RoleHAProxy, HostID: "h5", Port: 20021, Active: true},
		}}
	f.addons[b.ID], f.addons[s.ID], f.addons[s2.ID] = b, s, s2
	for _, a := range f.addons {
		for _, m := range a.Members {
			o := Observed{Seen: true, State: api.MemberRunning}
			if m.Role == api.RoleRedis {
				o.RedisRole = "slave"
				if m.RedisRole == "primary" {
					o.RedisRole = "master"
				}
			}
			f.obs[m.ID] = o
		}
	}
	return f
}

func (f *fixture) view(addonID string) View {
	a, ok := f.addons[addonID]
	v := View{Addon: a, Exists: ok, Hosts: f.hosts, Observed: f.obs, HostSeen: map[string]time.Time{}, Now: t0}
	v.Plan, v.PlanKnown = api.FindPlan(api.DefaultPlans(), a.Plan)
	st := scheduler.State{Plans: api.DefaultPlans()}
	for _, id := range []string{"h1", "h2", "h3", "h4", "h5"} {
		st.Hosts = append(st.Hosts, f.hosts[id])
	}
	for _, id := range []string{"b-1", "s-1", "s-2"} {
		if a, ok := f.addons[id]; ok {
			st.Addons = append(st.Addons, a)
		}
	}
	v.Fleet = st
	return v
}

func replaceOp(target string, stepsDone int) api.Operation {
	op := api.Operation{ID: "op1", AddonID: "b-1", Kind: api.OpReplaceMember, State: api.OpRunning, Target: target, Steps: ReplaceSteps(), CreatedAt: t0}
	for i := 0; i < stepsDone; i++ {
		op.Steps[i].State = api.OpDone
	}
	return op
}

func TestReplace(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(f *fixture, op *api.Operation)
		target string
		done   int
		want   Kind
		check  func(t *testing.T, d Decision)
	}{
		{name: "demote: a replica needs no switchover", target: "b-1-redis-1", want: Advance,
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "b-1-redis-0 is the primary") }},
		{name: "demote: a sentinel is not redis", target: "b-1-sentinel-0", want: Advance},
		{name: "demote: planned move of the primary is a switchover to the replica", target: "b-1-redis-0", want: Run,
			check: func(t *testing.T, d Decision) {
				sw, ok := d.Action.(Switchover)
				if !ok || sw.Primary != "127.0.0.11:20001" || sw.Replica != "127.0.0.12:20001" || len(sw.Sentinels) != 3 || d.Then != Wait {
					t.Fatalf("action %#v then %v", d.Action, d.Then)
				}
			}},
		{name: "demote: never a switchover while the replica is not serving as one", target: "b-1-redis-0", want: Wait,
			setup: func(f *fixture, _ *api.Operation) {
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStarting}
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "b-1-redis-1") }},
		{name: "demote: a recent attempt paces the next", target: "b-1-redis-0", want: Wait,
			setup: func(f *fixture, op *api.Operation) {
				op.Steps[0].LastAttempt, op.Steps[0].Attempts, op.Steps[0].Detail = t0.Add(-2*time.Second), 1, "switchover failed (attempt 1)"
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "attempt 1") }},
		{name: "demote: after the pace, try again", target: "b-1-redis-0", want: Run,
			setup: func(f *fixture, op *api.Operation) { op.Steps[0].LastAttempt = t0.Add(-11 * time.Second) }},
		{name: "demote: the primary's host is lost: forced failover through the sentinels off that host", target: "b-1-redis-0", want: Run,
			setup: func(f *fixture, _ *api.Operation) {
				h := f.hosts["h1"]
				h.State, h.Lost = api.HostDown, true
				f.hosts["h1"] = h
			},
			check: func(t *testing.T, d Decision) {
				fo, ok := d.Action.(Failover)
				if !ok || len(fo.Sentinels) != 2 || contains(fo.Sentinels, "127.0.0.11:20002") {
					t.Fatalf("action %#v", d.Action)
				}
			}},
		{name: "demote: a silent host (down, not lost) may still serve: a zero-loss switchover, never a bare failover", target: "b-1-redis-0", want: Run,
			setup: func(f *fixture, _ *api.Operation) {
				h := f.hosts["h1"]
				h.State = api.HostDown
				f.hosts["h1"] = h
			},
			check: func(t *testing.T, d Decision) {
				if _, ok := d.Action.(Switchover); !ok {
					t.Fatalf("action %#v", d.Action)
				}
			}},
		{name: "demote: the only redis node is never switched over", target: "b-1-redis-0", want: Fail,
			setup: func(f *fixture, _ *api.Operation) {
				a := f.addons["b-1"]
				a.Members = append(a.Members[:1:1], a.Members[2:]...)
				f.addons["b-1"] = a
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "no replica") }},
		{name: "place: a replacement on another host", target: "b-1-redis-1", done: 1, want: Advance,
			check: func(t *testing.T, d Decision) {
				am, ok := d.Effect.(AddMember)
				if !ok || am.Member.HostID == "h2" || am.Member.HostID == "h1" || am.Member.Role != api.RoleRedis || am.Member.RedisRole != "replica" {
					t.Fatalf("effect %#v", d.Effect)
				}
			}},
		{name: "place: no host with room waits", target: "b-1-redis-1", done: 1, want: Wait,
			setup: func(f *fixture, _ *api.Operation) {
				for _, id := range []string{"h3", "h4", "h5"} {
					h := f.hosts[id]
					h.State = api.HostDraining
					f.hosts[id] = h
				}
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "capacity") }},
		{name: "wait: replacement running", target: "b-1-redis-1", done: 2, want: Advance,
			setup: func(f *fixture, op *api.Operation) {
				addReplacement(f, op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"})
			}},
		{name: "wait: a new sentinel counts once it knows the primary, the replicas and its peers", target: "b-1-sentinel-2", done: 2, want: Run,
			setup: func(f *fixture, op *api.Operation) {
				a := f.addons["b-1"]
				a.Members = append(a.Members, api.Member{ID: "b-1-sentinel-3", Role: api.RoleSentinel, HostID: "h4", Port: 20002})
				f.addons["b-1"] = a
				op.Replacement = "b-1-sentinel-3"
				f.obs["b-1-sentinel-3"] = Observed{Seen: true, State: api.MemberRunning}
			},
			check: func(t *testing.T, d Decision) {
				cs, ok := d.Action.(CheckSentinel)
				if !ok || cs.Addr != "127.0.0.14:20002" || cs.Primary != "127.0.0.11:20001" || len(cs.Replicas) != 1 || cs.Others != 2 || d.Then != Advance {
					t.Fatalf("action %#v", d.Action)
				}
			}},
		{name: "wait: replacement failed keeps waiting with why", target: "b-1-redis-1", done: 2, want: Wait,
			setup: func(f *fixture, op *api.Operation) {
				addReplacement(f, op, Observed{Seen: true, State: api.MemberFailed, Detail: "exit 1"})
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "exit 1") }},
		{name: "remove old: never the recorded primary", target: "b-1-redis-0", done: 3, want: Wait},
		{name: "remove old: a replica goes once its replacement is in sync", target: "b-1-redis-1", done: 3, want: Advance,
			setup: func(f *fixture, op *api.Operation) {
				addReplacement(f, op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"})
			},
			check: func(t *testing.T, d Decision) {
				if rm, ok := d.Effect.(RemoveMember); !ok || rm.MemberID != "b-1-redis-1" {
					t.Fatalf("effect %#v", d.Effect)
				}
			}},
		{name: "remove old: kept while the replacement lags", target: "b-1-redis-1", done: 3, want: Wait,
			setup: func(f *fixture, op *api.Operation) {
				f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master", Offset: 10 << 20}
				addReplacement(f, op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave", Offset: 1 << 20})
			},
			check: func(t *testing.T, d Decision) {
				wantIn(t, d.Detail, "keeping b-1-redis-1 until its replacement holds the data")
			}},
		{name: "remove old: never while the primary does not serve (the old replica may hold the only copy)", target: "b-1-redis-1", done: 3, want: Wait,
			setup: func(f *fixture, op *api.Operation) {
				addReplacement(f, op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"})
				h := f.hosts["h1"]
				h.State = api.HostDown
				f.hosts["h1"] = h
				f.obs["b-1-redis-0"] = Observed{}
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "primary b-1-redis-0 is not serving") }},
		{name: "remove old: it became the primary again: switch over to the replacement", target: "b-1-redis-1", done: 3, want: Run,
			setup: func(f *fixture, op *api.Operation) {
				a := f.addons["b-1"]
				a.Members[0].RedisRole, a.Members[1].RedisRole = "replica", "primary"
				f.addons["b-1"] = a
				f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"}
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"}
				addReplacement(f, op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"})
			},
			check: func(t *testing.T, d Decision) {
				if sw, ok := d.Action.(Switchover); !ok || sw.Primary != "127.0.0.12:20001" || sw.Replica != "127.0.0.13:20004" {
					t.Fatalf("action %#v", d.Action)
				}
			}},
		{name: "wait: a redis replacement counts once it is a replica in sync", target: "b-1-redis-1", done: 2, want: Wait,
			setup: func(f *fixture, op *api.Operation) {
				addReplacement(f, op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"})
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "not a replica yet") }},
		{name: "reset: waits while a member still answers as a master (stray)", target: "b-1-sentinel-2", done: 4, want: Wait,
			setup: func(f *fixture, op *api.Operation) {
				replaceSentinel(f, op)
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"}
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "want slave, now running as master") }},
		{name: "reset: waits while a member has not rejoined", target: "b-1-sentinel-2", done: 4, want: Wait,
			setup: func(f *fixture, op *api.Operation) {
				replaceSentinel(f, op)
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStarting}
			}},
		{name: "reset: every member in its role: the sentinels one by one", target: "b-1-sentinel-2", done: 4, want: Run,
			setup: func(f *fixture, op *api.Operation) { replaceSentinel(f, op) },
			check: func(t *testing.T, d Decision) {
				if r, ok := d.Action.(ResetSentinels); !ok || len(r.Sentinels) != 3 || d.Then != Advance || len(r.Replicas) != 1 || r.Replicas[0] != "127.0.0.12:20001" {
					t.Fatalf("action %#v", d.Action)
				}
			}},
		{name: "reset: a sentinel on a lost host is neither reset nor waited for", target: "b-1-sentinel-2", done: 4, want: Run,
			setup: func(f *fixture, op *api.Operation) {
				replaceSentinel(f, op)
				a := f.addons["b-1"]
				for i := range a.Members {
					if a.Members[i].ID == "b-1-sentinel-3" {
						a.Members[i].HostID = "h5"
					}
				}
				f.addons["b-1"] = a
				h := f.hosts["h5"]
				h.State = api.HostDown
				f.hosts["h5"] = h
			},
			check: func(t *testing.T, d Decision) {
				if r, ok := d.Action.(ResetSentinels); !ok || len(r.Sentinels) != 2 || contains(r.Sentinels, "127.0.0.15:20002") {
					t.Fatalf("action %#v", d.Action)
				}
			}},
		{name: "reset: a redis member of a lost host is not waited for (it is replaced next)", target: "b-1-sentinel-2", done: 4, want: Run,
			setup: func(f *fixture, op *api.Operation) {
				replaceSentinel(f, op)
				a := f.addons["b-1"]
				a.Members[0].RedisRole, a.Members[1].RedisRole = "replica", "primary"
				f.addons["b-1"] = a
				h := f.hosts["h1"]
				h.State = api.HostDown
				f.hosts["h1"] = h
				f.obs["b-1-redis-0"] = Observed{}
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"}
			}},
		{name: "reset: a replaced redis member needs none", target: "b-1-redis-1", done: 4, want: Advance,
			setup: func(f *fixture, op *api.Operation) {
				addReplacement(f, op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"})
				removeMember(f, "b-1-redis-1")
			},
			check: func(t *testing.T, d Decision) { wantIn(t, d.Detail, "no sentinel replaced") }},
		{name: "reset: a haproxy needs none", target: "b-1-haproxy-1", done: 4, want: Advance,
			setup: func(f *fixture, op *api.Operation) {
				a := f.addons["b-1"]
				a.Members = append(a.Members, api.Member{ID: "b-1-haproxy-2", Role: api.RoleHAProxy, HostID: "h3", Port: 20003})
				f.addons["b-1"] = a
				op.Replacement = "b-1-haproxy-2"
				removeMember(f, "b-1-haproxy-1")
			}},
		{name: "addon gone", target: "b-1-redis-1", want: Fail,
			setup: func(f *fixture, _ *api.Operation) { delete(f.addons, "b-1") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			op := replaceOp(tc.target, tc.done)
			if tc.setup != nil {
				tc.setup(f, &op)
			}
			d := Next(f.view("b-1"), op)
			if d.Kind != tc.want {
				t.Fatalf("decision %v (%q), want %v", d.Kind, d.Detail, tc.want)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

func addReplacement(f *fixture, op *api.Operation, o Observed) {
	a := f.addons["b-1"]
	a.Members = append(a.Members, api.Member{ID: "b-1-redis-2", Role: api.RoleRedis, HostID: "h3", Port: 20004, RedisRole: "replica"})
	f.addons["b-1"] = a
	op.Replacement = "b-1-redis-2"
	f.obs["b-1-redis-2"] = o
}

// replaceSentinel: sentinel-2 (h3) was replaced by sentinel-3 (h4) and
// removed.
func replaceSentinel(f *fixture, op *api.Operation) {
	a := f.addons["b-1"]
	a.Members = append(a.Members, api.Member{ID: "b-1-sentinel-3", Role: api.RoleSentinel, HostID: "h4", Port: 20002})
	f.addons["b-1"] = a
	op.Replacement = "b-1-sentinel-3"
	f.obs["b-1-sentinel-3"] = Observed{Seen: true, State: api.MemberRunning}
	removeMember(f, "b-1-sentinel-2")
}

func removeMember(f *fixture, id string) {
	a := f.addons["b-1"]
	var kept []api.Member
	for _, m := range a.Members {
		if m.ID != id {
			kept = append(kept, m)
		}
	}
	a.Members = kept
	f.addons["b-1"] = a
}

func wantIn(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Fatalf("%q does not say %q", s, sub)
	}
}

func TestProvision(t *testing.T) {
	newOp := func(done int) api.Operation {
		op := api.Operation{ID: "p", AddonID: "b-1", Kind: api.OpProvision, State: api.OpRunning, Steps: ProvisionSteps()}
		for i := 0; i < done; i++ {
			op.Steps[i].State = api.OpDone
		}
		return op
	}
	t.Run("place: members and a VIP from the pool", func(t *testing.T) {
		f := newFixture()
		a := f.addons["b-1"]
		a.Members, a.Entrypoint = nil, ""
		f.addons["b-1"] = a
		v := f.view("b-1")
		v.VIPPool, v.UsedEntrypoints = "127.0.1.0/24", []string{"127.0.1.1:20000"}
		d := Next(v, newOp(0))
		pm, ok := d.Effect.(PlaceMembers)
		if d.Kind != Advance || !ok || len(pm.Members) != 7 || !strings.HasPrefix(pm.Entrypoint, "127.0.1.2:") {
			t.Fatalf("decision %v %#v", d.Kind, d.Effect)
		}
	})
	t.Run("place: unknown plan fails the addon", func(t *testing.T) {
		f := newFixture()
		v := f.view("b-1")
		v.PlanKnown = false
		if d := Next(v, newOp(0)); d.Kind != Fail || d.Status != api.AddonError {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("place: no capacity waits", func(t *testing.T) {
		f := newFixture()
		a := f.addons["b-1"]
		a.Members = nil
		f.addons["b-1"] = a
		for id, h := range f.hosts {
			h.State = api.HostDraining
			f.hosts[id] = h
		}
		if d := Next(f.view("b-1"), newOp(0)); d.Kind != Wait || !strings.Contains(d.Detail, "capacity") {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("start: a member failed right at the start is waited for (a restart for a new assignment)", func(t *testing.T) {
		f := newFixture()
		f.obs["b-1-sentinel-1"] = Observed{Seen: true, State: api.MemberFailed, Detail: "exited (status unknown)\nlast log lines: ..."}
		op := newOp(1)
		op.Steps[1].StartedAt = t0.Add(-time.Second)
		if d := Next(f.view("b-1"), op); d.Kind != Wait || !strings.Contains(d.Detail, "failed: exited (status unknown)") {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("start: a member still failed after the grace fails the provision", func(t *testing.T) {
		f := newFixture()
		f.obs["b-1-sentinel-1"] = Observed{Seen: true, State: api.MemberFailed, Detail: "image not importable"}
		op := newOp(1)
		op.Steps[1].StartedAt = t0.Add(-startFailGrace)
		if d := Next(f.view("b-1"), op); d.Kind != Fail || !strings.Contains(d.Detail, "image not importable") {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("start: waits for the unreported", func(t *testing.T) {
		f := newFixture()
		delete(f.obs, "b-1-haproxy-1")
		if d := Next(f.view("b-1"), newOp(1)); d.Kind != Wait || !strings.Contains(d.Detail, "b-1-haproxy-1 on h2 (not reported yet)") {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("start: all running", func(t *testing.T) {
		if d := Next(newFixture().view("b-1"), newOp(1)); d.Kind != Advance {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("healthy: ping the entrypoint", func(t *testing.T) {
		d := Next(newFixture().view("b-1"), newOp(2))
		if p, ok := d.Action.(PingEntrypoint); d.Kind != Run || !ok || p.Addr != "127.0.1.1:20000" || d.Then != Advance || p.Mutates() {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("mark running", func(t *testing.T) {
		if d := Next(newFixture().view("b-1"), newOp(3)); d.Kind != Advance || d.Status != api.AddonRunning {
			t.Fatalf("decision %+v", d)
		}
	})
}

func TestRemove(t *testing.T) {
	newOp := func(done int, started time.Time) api.Operation {
		op := api.Operation{ID: "r", AddonID: "s-1", Kind: api.OpRemove, State: api.OpRunning, Steps: RemoveSteps()}
		for i := 0; i < done; i++ {
			op.Steps[i].State = api.OpDone
		}
		op.Steps[done].StartedAt = started
		return op
	}
	f := newFixture()
	v := f.view("s-1")
	if d := Next(v, newOp(0, time.Time{})); d.Kind != Wait {
		t.Fatalf("unstarted step: %+v", d)
	}
	v.HostSeen["h4"] = t0.Add(-time.Second)
	if d := Next(v, newOp(0, t0.Add(-2*time.Second))); d.Kind != Wait {
		t.Fatalf("a report from before the step began still has the member: %+v", d)
	}
	f.obs["s-1-redis-0"] = Observed{}
	v.HostSeen["h4"] = t0
	if d := Next(v, newOp(0, t0.Add(-2*time.Second))); d.Kind != Advance {
		t.Fatalf("reported without the member: %+v", d)
	}
	f.obs["s-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning}
	h := f.hosts["h4"]
	h.State = api.HostDown
	f.hosts["h4"] = h
	if d := Next(v, newOp(1, t0.Add(-2*time.Second))); d.Kind != Advance {
		t.Fatalf("a down host counts as done: %+v", d)
	}
	if d := Next(v, newOp(2, time.Time{})); d.Kind != Advance || d.Effect != (DeleteAddon{}) {
		t.Fatalf("forget: %+v", d)
	}
}

func TestSettings(t *testing.T) {
	f := newFixture()
	a := f.addons["s-1"]
	a.Settings = api.Settings{Persistence: api.PersistenceAOF, CacheMode: true}
	f.addons["s-1"] = a
	op := api.Operation{ID: "c", AddonID: "s-1", Kind: api.OpSettingsChange, State: api.OpRunning, Steps: SettingsSteps()}
	d := Next(f.view("s-1"), op)
	cs, ok := d.Action.(CheckSettings)
	if d.Kind != Run || !ok || cs.Settings != a.Settings || cs.PlanMB != 256 || cs.Addr != a.Entrypoint {
		t.Fatalf("decision %+v", d)
	}
	op.Steps[0].State = api.OpDone
	if d := Next(f.view("s-1"), op); d.Kind != Advance || d.Status != api.AddonRunning {
		t.Fatalf("decision %+v", d)
	}
}

func TestCancel(t *testing.T) {
	t.Run("replace with its replacement placed: the replacement goes again", func(t *testing.T) {
		f := newFixture()
		op := replaceOp("b-1-redis-1", 2)
		addReplacement(f, &op, Observed{Seen: true, State: api.MemberStarting})
		op.CancelRequested = true
		d := Next(f.view("b-1"), op)
		if rm, ok := d.Effect.(RemoveMember); d.Kind != Cancel || !ok || rm.MemberID != "b-1-redis-2" {
			t.Fatalf("decision %+v", d)
		}
		wantIn(t, d.Detail, "done: demote primary, place replacement; not done: wait replacement running")
	})
	t.Run("replace whose replacement became the primary: nothing removed", func(t *testing.T) {
		f := newFixture()
		op := replaceOp("b-1-redis-1", 2)
		addReplacement(f, &op, Observed{Seen: true, State: api.MemberRunning, RedisRole: "master"})
		a := f.addons["b-1"]
		a.Members[0].RedisRole = "replica"
		a.Members[len(a.Members)-1].RedisRole = "primary"
		f.addons["b-1"] = a
		op.CancelRequested = true
		d := Next(f.view("b-1"), op)
		if d.Kind != Cancel || d.Effect != nil {
			t.Fatalf("decision %+v", d)
		}
		wantIn(t, d.Detail, "is the primary now")
	})
	t.Run("replace after the old member left: nothing to undo", func(t *testing.T) {
		f := newFixture()
		op := replaceOp("b-1-redis-1", 4)
		addReplacement(f, &op, Observed{Seen: true, State: api.MemberRunning})
		removeMember(f, "b-1-redis-1")
		op.CancelRequested = true
		if d := Next(f.view("b-1"), op); d.Kind != Cancel || d.Effect != nil {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("provision leaves the addon in error", func(t *testing.T) {
		op := api.Operation{ID: "p", AddonID: "b-1", Kind: api.OpProvision, State: api.OpRunning, Steps: ProvisionSteps(), CancelRequested: true}
		if d := Next(newFixture().view("b-1"), op); d.Kind != Cancel || d.Status != api.AddonError {
			t.Fatalf("decision %+v", d)
		}
	})
	t.Run("what may be cancelled", func(t *testing.T) {
		for _, tc := range []struct {
			op api.Operation
			ok bool
		}{
			{api.Operation{Kind: api.OpReplaceMember, State: api.OpRunning}, true},
			{api.Operation{Kind: api.OpSettingsChange, State: api.OpPending}, true},
			{api.Operation{Kind: api.OpRemove, State: api.OpRunning}, false},
			{api.Operation{Kind: api.OpReplaceMember, State: api.OpDone}, false},
			{api.Operation{Kind: api.OpReplaceMember, State: api.OpCancelled}, false},
		} {
			if err := Cancellable(tc.op); (err == nil) != tc.ok {
				t.Errorf("%s %s: %v", tc.op.Kind, tc.op.State, err)
			}
		}
	})
}

func TestStuck(t *testing.T) {
	l := Limits{StuckAfter: 5 * time.Minute, StuckAttempts: 3}
	op := replaceOp("b-1-redis-0", 0)
	op.Steps[0].StartedAt = t0.Add(-time.Minute)
	if s := Stuck(op, t0, l); s != "" {
		t.Fatalf("a minute is not stuck: %q", s)
	}
	if s := Stuck(op, t0.Add(5*time.Minute), l); !strings.Contains(s, "has waited 6m0s") {
		t.Fatalf("stuck: %q", s)
	}
	op.Steps[0].Attempts, op.Steps[0].Detail = 3, "switchover failed (attempt 3), retrying: replica not caught up"
	if s := Stuck(op, t0, l); !strings.Contains(s, "failed 3 times") {
		t.Fatalf("stuck: %q", s)
	}
}

func TestPlanHealing(t *testing.T) {
	cfg := HealConfig{HealAfter: 30 * time.Second, MaxParallel: 2}
	set := func(f *fixture, host string, st api.HostState, downFor time.Duration) {
		h := f.hosts[host]
		h.State = st
		if st == api.HostDown {
			h.DownSince = t0.Add(-downFor)
		}
		f.hosts[host] = h
	}
	fleet := func(f *fixture, active ...api.Operation) Fleet {
		fl := Fleet{Hosts: f.hosts, Plans: api.DefaultPlans(), Active: map[string]api.Operation{}, Now: t0}
		for _, id := range []string{"b-1", "s-1"} {
			fl.Addons = append(fl.Addons, f.addons[id])
		}
		for _, op := range active {
			fl.Active[op.AddonID] = op
		}
		return fl
	}
	t.Run("a starter on a draining host is left, with why; never a switchover", func(t *testing.T) {
		f := newFixture()
		set(f, "h4", api.HostDraining, 0)
		h := PlanHealing(fleet(f), cfg)
		if len(h.Create) != 0 || len(h.Left) != 1 || h.Left[0].MemberID != "s-1-redis-0" || !strings.Contains(h.Left[0].Reason, "no replica") {
			t.Fatalf("healing %+v", h)
		}
	})
	t.Run("a starter on a lost host restarts in place", func(t *testing.T) {
		f := newFixture()
		set(f, "h4", api.HostDown, time.Hour)
		h := PlanHealing(fleet(f), cfg)
		if len(h.Create) != 0 || len(h.Left) != 1 || !strings.Contains(h.Left[0].Reason, "restarts in place") {
			t.Fatalf("healing %+v", h)
		}
	})
	t.Run("a host down for less than heal-after is waited for", func(t *testing.T) {
		f := newFixture()
		set(f, "h3", api.HostDown, 29*time.Second)
		if h := PlanHealing(fleet(f), cfg); len(h.Create) != 0 {
			t.Fatalf("healing %+v", h)
		}
	})
	t.Run("a business member on a lost host is replaced, one per addon", func(t *testing.T) {
		f := newFixture()
		set(f, "h1", api.HostDown, 31*time.Second)
		h := PlanHealing(fleet(f), cfg)
		if len(h.Create) != 1 || h.Create[0].Target != "b-1-redis-0" || h.Create[0].Kind != api.OpReplaceMember || !strings.Contains(h.Create[0].Reason, "down since") {
			t.Fatalf("healing %+v", h)
		}
	})
	t.Run("an addon with an operation waits for it", func(t *testing.T) {
		f := newFixture()
		set(f, "h3", api.HostDraining, 0)
		if h := PlanHealing(fleet(f, api.Operation{AddonID: "b-1", Kind: api.OpSettingsChange}), cfg); len(h.Create) != 0 {
			t.Fatalf("healing %+v", h)
		}
	})
	t.Run("another addon's stuck operation does not delay this one", func(t *testing.T) {
		f := newFixture()
		set(f, "h3", api.HostDraining, 0)
		stuck := api.Operation{AddonID: "other", Kind: api.OpReplaceMember, Stuck: "step \"demote primary\" has waited 1h"}
		h := PlanHealing(fleet(f, stuck), cfg)
		if len(h.Create) != 1 || h.Create[0].Target != "b-1-sentinel-2" {
			t.Fatalf("healing %+v", h)
		}
	})
	t.Run("the fleet-wide bound holds", func(t *testing.T) {
		f := newFixture()
		set(f, "h3", api.HostDraining, 0)
		a1 := api.Operation{AddonID: "x", Kind: api.OpReplaceMember}
		a2 := api.Operation{AddonID: "y", Kind: api.OpReplaceMember}
		if h := PlanHealing(fleet(f, a1, a2), cfg); len(h.Create) != 0 {
			t.Fatalf("healing %+v", h)
		}
	})
	t.Run("an addon not running is not healed", func(t *testing.T) {
		f := newFixture()
		set(f, "h3", api.HostDraining, 0)
		a := f.addons["b-1"]
		a.Status = api.AddonProvisioning
		f.addons["b-1"] = a
		if h := PlanHealing(fleet(f), cfg); len(h.Create) != 0 {
			t.Fatalf("healing %+v", h)
		}
	})
}
