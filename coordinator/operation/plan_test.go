package operation

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

func TestCheckPlanChange(t *testing.T) {
	const mib = int64(1) << 20
	type req = PlanChangeRequest
	tests := []struct {
		name   string
		addon  string // fixture addon
		plan   string // its plan before (default: the fixture's)
		status api.AddonStatus
		host   int // MB of every host (default 4096)
		edit   func(r *req)
		to     string
		err    error
		want   string
	}{
		{name: "starter grows", addon: "s-1", to: "redis-starter-1024"},
		{name: "starter shrinks, data fits with headroom", addon: "s-1", plan: "redis-starter-1024", to: "redis-starter-256",
			edit: func(r *req) { r.Measured, r.UsedBytes = true, 232*mib }},
		{name: "business grows", addon: "b-1", to: "redis-business-1024"},
		{name: "business shrinks, not measured yet: the size is checked later", addon: "b-1", plan: "redis-business-2048", to: "redis-business-256"},
		{name: "unknown plan", addon: "s-1", to: "redis-starter-300", err: api.ErrInvalid,
			want: `unknown plan "redis-starter-300"; valid plans: redis-business-1024,`},
		{name: "same plan", addon: "s-1", to: "redis-starter-256", err: api.ErrInvalid,
			want: "addon s-1 is already on plan redis-starter-256; nothing to change"},
		{name: "starter made before starters had an entrypoint: refused going business", addon: "s-1", to: "redis-business-256", err: api.ErrInvalid,
			want: "addon s-1 was created before starters had an entrypoint of their own: its URL is its redis node's address, " +
				"which an HAProxy pair cannot take over; pick another starter plan, or add a business addon, copy the data over and point the app at its URL"},
		{name: "starter to business", addon: "s-2", to: "redis-business-512"},
		{name: "starter to business: no hosts for the added members", addon: "s-2", to: "redis-business-256", err: api.ErrNoCapacity,
			edit: func(r *req) {
				for i := range r.Fleet.Hosts {
					if r.Fleet.Hosts[i].ID != "h5" {
						r.Fleet.Hosts[i].State = api.HostDown
					}
				}
			},
			want: "cannot change addon s-2 to redis-business-256: redis-business-256 needs 3 ready hosts (one per sentinel), found 1 (h5)"},
		{name: "business to starter", addon: "b-1", to: "redis-starter-1024"},
		{name: "business to starter, too small for the data", addon: "b-1", plan: "redis-business-1024", to: "redis-starter-256", err: api.ErrPlanTooSmall,
			edit: func(r *req) { r.Measured, r.UsedBytes = true, 300*mib }, want: "choose a plan of at least redis-starter-512"},
		{name: "another operation runs", addon: "b-1", to: "redis-business-512", err: api.ErrConflict,
			edit: func(r *req) { r.Busy, r.Active = true, api.Operation{ID: "op-9", Kind: api.OpReplaceMember} },
			want: "addon b-1 has operation op-9 (replace-member) in progress; wait for it to finish (cacheplane operations --addon b-1) or cancel it (cacheplane operations-cancel op-9)"},
		{name: "not running", addon: "s-1", status: api.AddonError, to: "redis-starter-512", err: api.ErrConflict,
			want: "addon s-1 is error; its plan can be changed once it is running"},
		{name: "too small for the data", addon: "s-1", plan: "redis-starter-1024", to: "redis-starter-256", err: api.ErrPlanTooSmall,
			edit: func(r *req) { r.Measured, r.UsedBytes = true, 300*mib },
			want: "plan redis-starter-256 (256 MB) is too small for addon s-1: it stores 300.0 MB now (used_memory of its primary), 330.0 MB with 10 % headroom; delete data first, or choose a plan of at least redis-starter-512"},
		{name: "too small only with the headroom", addon: "s-1", plan: "redis-starter-1024", to: "redis-starter-256", err: api.ErrPlanTooSmall,
			edit: func(r *req) { r.Measured, r.UsedBytes = true, 240*mib }, want: "264.0 MB with 10 % headroom"},
		{name: "no plan of the kind is large enough", addon: "b-1", plan: "redis-business-8192", to: "redis-business-4096", err: api.ErrPlanTooSmall,
			edit: func(r *req) { r.Measured, r.UsedBytes = true, 8000*mib }, want: "no business plan is large enough"},
		{name: "no room on a member's host", addon: "b-1", to: "redis-business-2048", host: 2048, err: api.ErrNoCapacity,
			want: "cannot change addon b-1 to redis-business-2048: host h1 has 1703 MB free; resizing b-1-redis-0 from redis-business-256 to redis-business-2048 needs 1971 MB more"},
		{name: "shrinking always fits", addon: "b-1", plan: "redis-business-2048", to: "redis-business-512", host: 2048},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			a := f.addons[tc.addon]
			if tc.plan != "" {
				a.Plan = tc.plan
			}
			if tc.status != "" {
				a.Status = tc.status
			}
			f.addons[a.ID] = a
			if tc.host > 0 {
				for id, h := range f.hosts {
					h.MemoryMB = tc.host
					f.hosts[id] = h
				}
			}
			r := req{Addon: a, Plans: api.DefaultPlans(), To: tc.to, Fleet: f.view(a.ID).Fleet}
			if tc.edit != nil {
				tc.edit(&r)
			}
			from, to, err := CheckPlanChange(r)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if from.Name != a.Plan || to.Name != tc.to {
					t.Fatalf("plans %s -> %s", from.Name, to.Name)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v; want %v", err, tc.err)
			}
			wantIn(t, api.Message(err), tc.want)
			if api.HTTPStatus(err) >= 500 || api.HTTPStatus(err) < 400 {
				t.Fatalf("status %d is not a 4xx", api.HTTPStatus(err))
			}
		})
	}
}

// planOp is a plan change of addon id to plan, its first done steps done
// (the first is always done: the command records the plan).
func planOp(f *fixture, id, to string, done int) api.Operation {
	a := f.addons[id]
	from, _ := api.FindPlan(api.DefaultPlans(), a.Plan)
	toPlan, ok := api.FindPlan(api.DefaultPlans(), to)
	if !ok {
		toPlan.Kind = from.Kind
	}
	op := api.Operation{ID: "op-p", AddonID: id, Kind: api.OpPlanChange, State: api.OpRunning, Steps: PlanChangeSteps(from.Kind, toPlan.Kind),
		Change: PlanChange(a.Plan, to), CreatedAt: t0}
	a.Plan, a.Status = to, api.AddonUpdating
	f.addons[id] = a
	for i := 0; i < done; i++ {
		op.Steps[i].State = api.OpDone
	}
	return op
}

func TestPlanChangeSteps(t *testing.T) {
	hook := AppHook{Describe: "command notify; webhook https://hooks.example", Attempts: 3, Every: 5 * time.Second}
	tests := []struct {
		name   string
		addon  string
		to     string
		done   int
		hook   AppHook
		edit   func(f *fixture, op *api.Operation)
		kind   Kind
		status api.AddonStatus
		addrs  []string // CheckMaxmemory's
		notify bool     // a NotifyApp action
		detail string
	}{
		{name: "record plan (resume: the command records it)", addon: "s-1", to: "redis-starter-1024", done: 0, kind: Advance, detail: "plan redis-starter-1024 recorded"},
		{name: "starter: check its maxmemory", addon: "s-1", to: "redis-starter-1024", done: 1, kind: Run,
			addrs: []string{"127.0.0.14:20010"}, detail: "maxmemory 1024mb on s-1-redis-0, resized live"},
		{name: "business: check both redis members", addon: "b-1", to: "redis-business-1024", done: 1, kind: Run,
			addrs: []string{"127.0.0.11:20001", "127.0.0.12:20001"}, detail: "maxmemory 1024mb on b-1-redis-0, b-1-redis-1, resized live"},
		{name: "business: a replica restarting is waited for", addon: "b-1", to: "redis-business-1024", done: 1, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStarting}
			},
			detail: "waiting for b-1-redis-1 (starting) to serve, to check its maxmemory"},
		{name: "business: a member not reported yet is waited for", addon: "b-1", to: "redis-business-1024", done: 1, kind: Wait,
			edit:   func(f *fixture, _ *api.Operation) { delete(f.obs, "b-1-redis-0") },
			detail: "waiting for b-1-redis-0 (not reported) to serve"},
		{name: "business: a member on a down host is left out", addon: "b-1", to: "redis-business-1024", done: 1, kind: Run,
			edit:  func(f *fixture, _ *api.Operation) { downHost(f, "h2") },
			addrs: []string{"127.0.0.11:20001"}, detail: "b-1-redis-1 on a down host: it starts on the new plan"},
		{name: "business: no member serves", addon: "b-1", to: "redis-business-1024", done: 1, kind: Wait,
			edit:   func(f *fixture, _ *api.Operation) { downHost(f, "h1"); downHost(f, "h2") },
			detail: "no redis member serves"},
		{name: "starter on a down host is waited for", addon: "s-1", to: "redis-starter-1024", done: 1, kind: Wait,
			edit:   func(f *fixture, _ *api.Operation) { downHost(f, "h4") },
			detail: "waiting for s-1-redis-0 (host h4 is down) to serve"},
		{name: "plan gone from the catalog", addon: "s-1", to: "redis-starter-300", done: 1, kind: Fail, status: api.AddonError,
			detail: "plan redis-starter-300 is not in the catalog"},
		{name: "notify: no hook configured", addon: "s-1", to: "redis-starter-1024", done: 2, kind: Advance, detail: "no hook configured"},
		{name: "notify: the hook runs", addon: "s-1", to: "redis-starter-1024", done: 2, hook: hook, kind: Run, notify: true,
			detail: "app told (command notify; webhook https://hooks.example): ok"},
		{name: "notify: a failed attempt is retried, paced", addon: "s-1", to: "redis-starter-1024", done: 2, hook: hook, kind: Wait,
			edit: func(_ *fixture, op *api.Operation) {
				op.Steps[2].Attempts, op.Steps[2].LastAttempt, op.Steps[2].Detail = 1, t0.Add(-time.Second), "app hook attempt 1 failed: webhook: 500"
			},
			detail: "app hook attempt 1 failed: webhook: 500"},
		{name: "notify: retried once paced", addon: "s-1", to: "redis-starter-1024", done: 2, hook: hook, kind: Run, notify: true,
			edit: func(_ *fixture, op *api.Operation) {
				op.Steps[2].Attempts, op.Steps[2].LastAttempt, op.Steps[2].Detail = 2, t0.Add(-6*time.Second), "app hook attempt 2 failed: webhook: 500"
			},
			detail: "ok on attempt 3"},
		{name: "notify: a hook that keeps failing does not fail the change", addon: "b-1", to: "redis-business-512", done: 2, hook: hook, kind: Advance,
			edit: func(_ *fixture, op *api.Operation) {
				op.Steps[2].Attempts, op.Steps[2].LastAttempt, op.Steps[2].Detail = 3, t0.Add(-time.Hour), "app hook attempt 3 failed: command notify: exit status 1"
			},
			detail: "the app was NOT told (3 attempts failed; the change itself is done): app hook attempt 3 failed: command notify: exit status 1"},
		{name: "mark running", addon: "b-1", to: "redis-business-512", done: 3, kind: Advance, status: api.AddonRunning},
		{name: "addon gone", addon: "b-1", to: "redis-business-512", done: 1, kind: Fail,
			edit: func(f *fixture, _ *api.Operation) { delete(f.addons, "b-1") }, detail: "the addon no longer exists"},
		{name: "cancelled: the new plan stays, the addon runs", addon: "b-1", to: "redis-business-512", done: 1, kind: Cancel, status: api.AddonRunning,
			edit:   func(_ *fixture, op *api.Operation) { op.CancelRequested = true },
			detail: "cancelled by an operator; done: record plan; not done: resize members, notify app, mark running; the new plan stays recorded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			op := planOp(f, tc.addon, tc.to, tc.done)
			if tc.edit != nil {
				tc.edit(f, &op)
			}
			v := f.view(tc.addon)
			v.AppHook = tc.hook
			d := Next(v, op)
			if d.Kind != tc.kind || d.Status != tc.status {
				t.Fatalf("decision %v %q (status %q); want %v (status %q)", d.Kind, d.Detail, d.Status, tc.kind, tc.status)
			}
			wantIn(t, d.Detail, tc.detail)
			switch a := d.Action.(type) {
			case CheckMaxmemory:
				if !slices.Equal(a.Addrs, tc.addrs) || a.PlanMB != v.Plan.MemoryMB || d.Then != Advance || a.Mutates() {
					t.Fatalf("action %+v then %v; want a check of %v", a, d.Then, tc.addrs)
				}
			case NotifyApp:
				if !tc.notify || a.Change != op.Change || a.OperationID != op.ID || a.Kind != api.OpPlanChange || !a.Mutates() || d.RetryAfter != hook.Every || d.Then != Advance {
					t.Fatalf("action %+v (retry after %s)", a, d.RetryAfter)
				}
			case nil:
				if tc.addrs != nil || tc.notify {
					t.Fatalf("no action; want one")
				}
			default:
				t.Fatalf("unexpected action %T", a)
			}
		})
	}
}

// TestPlanChangeRunsEachStepOnce walks a whole plan change the way the
// engine does (each decision's outcome recorded on the operation before
// the next decision), and checks every step is done once and in order,
// and that the change says what it changes.
func TestPlanChangeRunsEachStepOnce(t *testing.T) {
	f := newFixture()
	op := planOp(f, "b-1", "redis-business-1024", 1)
	if op.Change != "plan redis-business-256 -> redis-business-1024" {
		t.Fatalf("change %q", op.Change)
	}
	var ran []string
	for i := 0; i < 10 && op.CurrentStep() < len(op.Steps); i++ {
		v := f.view("b-1")
		v.AppHook = AppHook{Describe: "command notify", Attempts: 3, Every: time.Second}
		d := Next(v, op)
		switch d.Kind {
		case Run:
			ran = append(ran, d.Action.String())
			if d.Then != Advance {
				t.Fatalf("%s leads to %v", d.Action, d.Then)
			}
		case Advance:
		default:
			t.Fatalf("step %q: %v %q", op.Steps[op.CurrentStep()].Name, d.Kind, d.Detail)
		}
		op.Steps[op.CurrentStep()].State = api.OpDone
	}
	if op.CurrentStep() != len(op.Steps) {
		t.Fatalf("not done: %+v", op.Steps)
	}
	want := []string{"check maxmemory 1024mb on 127.0.0.11:20001, 127.0.0.12:20001", "app hook: plan redis-business-256 -> redis-business-1024"}
	if !slices.Equal(ran, want) {
		t.Fatalf("actions %q; want %q", ran, want)
	}
}

func downHost(f *fixture, id string) {
	h := f.hosts[id]
	h.State = api.HostDown
	f.hosts[id] = h
}

// TestPlanChangeKinds: starter → business adds the members around the kept
// ones and waits until they could take over; business → starter keeps the
// primary and the entrypoint's haproxy and drops the rest at once.
func TestPlanChangeKinds(t *testing.T) {
	t.Run("starter to business: steps", func(t *testing.T) {
		got := PlanChangeSteps(api.PlanStarter, api.PlanBusiness)
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
		}
		want := []string{StepRecordPlan, StepAddMembers, StepWaitMembers, StepResizeMembers, StepNotifyApp, StepMarkRunning}
		if !slices.Equal(names, want) {
			t.Fatalf("steps %q; want %q", names, want)
		}
	})
	t.Run("starter to business: members added, entrypoint kept", func(t *testing.T) {
		f := newFixture()
		op := planOp(f, "s-2", "redis-business-256", 1)
		d := Next(f.view("s-2"), op)
		pm, ok := d.Effect.(PlaceMembers)
		if d.Kind != Advance || !ok {
			t.Fatalf("decision %v %q %T; want members placed", d.Kind, d.Detail, d.Effect)
		}
		if len(pm.Members) != 7 || pm.Entrypoint != "127.0.1.2:20021" {
			t.Fatalf("placed %d members, entrypoint %s", len(pm.Members), pm.Entrypoint)
		}
		roles := map[api.Role]int{}
		for _, m := range pm.Members {
			roles[m.Role]++
			switch m.ID {
			case "s-2-redis-0", "s-2-haproxy-0":
				if m.HostID != "h5" {
					t.Errorf("kept member %s moved to %s", m.ID, m.HostID)
				}
			case "s-2-redis-1":
				if m.HostID == "h5" || m.RedisRole != "replica" {
					t.Errorf("new redis %+v: want a replica off h5", m)
				}
			}
		}
		if roles[api.RoleRedis] != 2 || roles[api.RoleSentinel] != 3 || roles[api.RoleHAProxy] != 2 {
			t.Fatalf("roles %v", roles)
		}
		wantIn(t, d.Detail, "entrypoint 127.0.1.2:20021 kept")

		// Resume: placed already → done at once.
		a := f.addons["s-2"]
		a.Members = pm.Members
		f.addons["s-2"] = a
		if d := Next(f.view("s-2"), op); d.Kind != Advance || d.Effect != nil {
			t.Fatalf("resume: %v %q %T", d.Kind, d.Detail, d.Effect)
		}

		// Wait: new members not reported yet.
		op.Steps[1].State = api.OpDone
		d = Next(f.view("s-2"), op)
		if d.Kind != Wait {
			t.Fatalf("wait new members: %v %q", d.Kind, d.Detail)
		}
		wantIn(t, d.Detail, "waiting for s-2-redis-1")
		// All running; the replica behind.
		for _, m := range pm.Members {
			o := Observed{Seen: true, State: api.MemberRunning}
			if m.Role == api.RoleRedis {
				o.RedisRole, o.Offset = "slave", 100
				if m.ID == "s-2-redis-0" {
					o.RedisRole, o.Offset = "master", 100+InSyncBytes+1
				}
			}
			f.obs[m.ID] = o
		}
		d = Next(f.view("s-2"), op)
		if d.Kind != Wait {
			t.Fatalf("replica behind: %v %q", d.Kind, d.Detail)
		}
		wantIn(t, d.Detail, "bytes behind the primary")
		o := f.obs["s-2-redis-1"]
		o.Offset = f.obs["s-2-redis-0"].Offset
		f.obs["s-2-redis-1"] = o
		d = Next(f.view("s-2"), op)
		cj, ok := d.Action.(CheckJoined)
		if d.Kind != Run || !ok || d.Then != Advance || cj.Mutates() {
			t.Fatalf("in sync: %v %q %T", d.Kind, d.Detail, d.Action)
		}
		if len(cj.Sentinels) != 3 || cj.Entrypoint != "127.0.1.2:20021" {
			t.Fatalf("check %+v", cj)
		}
		for _, c := range cj.Sentinels {
			if c.Others != 2 || c.Primary != "127.0.0.15:20020" || len(c.Replicas) != 1 {
				t.Errorf("sentinel check %+v", c)
			}
		}
	})
	t.Run("business to starter: keeps the primary and the entrypoint's haproxy", func(t *testing.T) {
		f := newFixture()
		op := planOp(f, "b-1", "redis-starter-512", 1)
		if op.Steps[1].Name != StepRemoveSurplus {
			t.Fatalf("steps %+v", op.Steps)
		}
		d := Next(f.view("b-1"), op)
		pm, ok := d.Effect.(PlaceMembers)
		if d.Kind != Advance || !ok {
			t.Fatalf("decision %v %q %T", d.Kind, d.Detail, d.Effect)
		}
		var ids []string
		for _, m := range pm.Members {
			ids = append(ids, m.ID)
		}
		if !slices.Equal(ids, []string{"b-1-redis-0", "b-1-haproxy-0"}) || pm.Entrypoint != "127.0.1.1:20000" {
			t.Fatalf("kept %v, entrypoint %s", ids, pm.Entrypoint)
		}
		wantIn(t, d.Detail, "removed b-1-redis-1, b-1-sentinel-0, b-1-sentinel-1, b-1-sentinel-2, b-1-haproxy-1")
	})
	t.Run("business to starter: the other haproxy holds the entrypoint", func(t *testing.T) {
		f := newFixture()
		a := f.addons["b-1"]
		a.Members[5].Active, a.Members[6].Active = false, true
		f.addons["b-1"] = a
		op := planOp(f, "b-1", "redis-starter-512", 1)
		pm := Next(f.view("b-1"), op).Effect.(PlaceMembers)
		if len(pm.Members) != 2 || pm.Members[1].ID != "b-1-haproxy-1" {
			t.Fatalf("kept %+v", pm.Members)
		}
	})
	t.Run("business to starter: waits for a serving primary", func(t *testing.T) {
		f := newFixture()
		f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberFailed}
		op := planOp(f, "b-1", "redis-starter-512", 1)
		d := Next(f.view("b-1"), op)
		if d.Kind != Wait || d.Effect != nil {
			t.Fatalf("decision %v %q %T", d.Kind, d.Detail, d.Effect)
		}
		wantIn(t, d.Detail, "waiting for the primary b-1-redis-0 to serve as the primary")
	})
	t.Run("business to starter: resume once removed", func(t *testing.T) {
		f := newFixture()
		a := f.addons["b-1"]
		a.Members = []api.Member{a.Members[0], a.Members[5]}
		f.addons["b-1"] = a
		op := planOp(f, "b-1", "redis-starter-512", 1)
		if d := Next(f.view("b-1"), op); d.Kind != Advance || d.Effect != nil {
			t.Fatalf("resume: %v %q %T", d.Kind, d.Detail, d.Effect)
		}
	})
}
