package operation

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// onRedis7 puts the fixture's addons on redis 7.0.15 (the catalog's
// default) with every process started at t0 - 1h.
func onRedis7(f *fixture) {
	for id, a := range f.addons {
		a.Engine, a.Version = api.EngineRedis, "7.0.15"
		f.addons[id] = a
	}
	for id, o := range f.obs {
		o.StartedAt = t0.Add(-time.Hour)
		f.obs[id] = o
	}
}

// upgradeOp is an upgrade of addon id to "engine-version" to, its first
// done steps done.
func upgradeOp(f *fixture, id, to string, rolling bool, done int) api.Operation {
	a := f.addons[id]
	e, ver, _ := strings.Cut(to, "-")
	prim, _ := Primary(a)
	op := api.Operation{ID: "op-u", AddonID: id, Kind: api.OpUpgrade, State: api.OpRunning, Steps: UpgradeSteps(a, rolling),
		Change: UpgradeChange(string(a.Engine)+"-"+a.Version, to), CreatedAt: t0.Add(-time.Minute),
		Upgrade: api.Upgrade{From: string(a.Engine) + "-" + a.Version, To: to, Engine: api.Engine(e), Version: ver, Rolling: rolling, Primary: prim.ID, Keys: 1000}}
	for i := 0; i < done; i++ {
		op.Steps[i].State = api.OpDone
		op.Steps[i].FinishedAt = t0.Add(-time.Minute)
	}
	return op
}

func stepNames(steps []api.Step) []string {
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = s.Name
	}
	return out
}

func TestUpgradeSteps(t *testing.T) {
	f := newFixture()
	tail := []string{"record version", "notify app", "mark running"}
	tests := []struct {
		name    string
		addon   func() api.Addon
		rolling bool
		want    []string
	}{
		{"starter", func() api.Addon { return f.addons["s-1"] }, true,
			append([]string{"save s-1-redis-0", "upgrade s-1-redis-0", "wait s-1-redis-0"}, tail...)},
		{"business, rolling: replica, switchover, old primary, sentinels, standby haproxy, VIP, holder, switch back", func() api.Addon { return f.addons["b-1"] }, true,
			append([]string{"upgrade b-1-redis-1", "wait b-1-redis-1", "switch over to b-1-redis-1", "upgrade b-1-redis-0", "wait b-1-redis-0",
				"upgrade b-1-sentinel-0", "wait b-1-sentinel-0", "upgrade b-1-sentinel-1", "wait b-1-sentinel-1", "upgrade b-1-sentinel-2", "wait b-1-sentinel-2",
				"upgrade b-1-haproxy-1", "wait b-1-haproxy-1", "move entrypoint to b-1-haproxy-1", "upgrade b-1-haproxy-0", "wait b-1-haproxy-0",
				"switch back to b-1-redis-0"}, tail...)},
		{"business, every node stops: save, stop the replica, primary, replica; no switch back", func() api.Addon { return f.addons["b-1"] }, false,
			append([]string{"save b-1-redis-0", "stop b-1-redis-1", "upgrade b-1-redis-0", "wait b-1-redis-0", "upgrade b-1-redis-1", "wait b-1-redis-1",
				"upgrade b-1-sentinel-0", "wait b-1-sentinel-0", "upgrade b-1-sentinel-1", "wait b-1-sentinel-1", "upgrade b-1-sentinel-2", "wait b-1-sentinel-2",
				"upgrade b-1-haproxy-1", "wait b-1-haproxy-1", "move entrypoint to b-1-haproxy-1", "upgrade b-1-haproxy-0", "wait b-1-haproxy-0"}, tail...)},
		{"business with the primary on h2 and no VIP", func() api.Addon {
			a := f.addons["b-1"]
			a.Members = slices.Clone(a.Members)
			a.Members[0].RedisRole, a.Members[1].RedisRole, a.Members[5].Active = "replica", "primary", false
			return a
		}, true,
			append([]string{"upgrade b-1-redis-0", "wait b-1-redis-0", "switch over to b-1-redis-0", "upgrade b-1-redis-1", "wait b-1-redis-1",
				"upgrade b-1-sentinel-0", "wait b-1-sentinel-0", "upgrade b-1-sentinel-1", "wait b-1-sentinel-1", "upgrade b-1-sentinel-2", "wait b-1-sentinel-2",
				"upgrade b-1-haproxy-0", "wait b-1-haproxy-0", "upgrade b-1-haproxy-1", "wait b-1-haproxy-1",
				"switch back to b-1-redis-1"}, tail...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := UpgradeSteps(tc.addon(), tc.rolling)
			if !slices.Equal(stepNames(got), tc.want) {
				t.Fatalf("steps\n%q\nwant\n%q", stepNames(got), tc.want)
			}
			for _, s := range got {
				if s.State != api.OpPending {
					t.Fatalf("step %q is %s", s.Name, s.State)
				}
			}
		})
	}
}

func TestCheckUpgrade(t *testing.T) {
	cat := api.DefaultEngines()
	base := func() UpgradeRequest {
		f := newFixture()
		onRedis7(f)
		return UpgradeRequest{Addon: f.addons["s-1"], Plans: api.DefaultPlans(), Engines: cat, To: "valkey-8.0.1"}
	}
	biz := func() UpgradeRequest {
		r := base()
		f := newFixture()
		onRedis7(f)
		r.Addon = f.addons["b-1"]
		return r
	}
	on := func(r UpgradeRequest, e api.Engine, v string) UpgradeRequest {
		r.Addon.Engine, r.Addon.Version = e, v
		return r
	}
	tests := []struct {
		name     string
		req      UpgradeRequest
		err      error
		msg      string
		rolling  bool
		business bool
		kind     string
	}{
		{name: "starter redis 7 -> valkey 8.0.1", req: base(), rolling: true, kind: "switch"},
		{name: "business redis 7 -> valkey 8.0.1: rolling", req: biz(), rolling: true, business: true, kind: "switch"},
		{name: "business valkey 8.0.1 -> 8.1.1: minor, rolling", req: func() UpgradeRequest { r := on(biz(), api.EngineValkey, "8.0.1"); r.To = "valkey-8.1.1"; return r }(),
			rolling: true, business: true, kind: "minor"},
		{name: "business redis 7 -> redis 8: major, rolling", req: func() UpgradeRequest { r := biz(); r.To = "redis-8.0.2"; return r }(),
			rolling: true, business: true, kind: "major"},
		{name: "same version", req: func() UpgradeRequest { r := base(); r.To = "redis-7.0.15"; return r }(),
			err: api.ErrInvalid, msg: "addon s-1 is already on redis-7.0.15; nothing to upgrade"},
		{name: "unknown version", req: func() UpgradeRequest { r := base(); r.To = "valkey-9.0.0"; return r }(),
			err: api.ErrInvalid, msg: `cannot upgrade addon s-1 from redis-7.0.15 to valkey-9.0.0: unknown engine version "valkey-9.0.0"; the catalog has`},
		{name: "downgrade", req: func() UpgradeRequest { r := on(base(), api.EngineValkey, "8.1.1"); r.To = "valkey-8.0.1"; return r }(),
			err: api.ErrInvalid, msg: "valkey-8.1.1 → valkey-8.0.1 is a downgrade; downgrades are never allowed"},
		{name: "skipped minor: names the version to upgrade to first", req: func() UpgradeRequest { r := base(); r.To = "valkey-8.1.1"; return r }(),
			err: api.ErrInvalid, msg: "upgrade to valkey-8.0.1 first"},
		{name: "valkey -> redis", req: func() UpgradeRequest { r := on(base(), api.EngineValkey, "8.0.1"); r.To = "redis-8.0.2"; return r }(),
			err: api.ErrInvalid, msg: "cannot upgrade addon s-1 from valkey-8.0.1 to redis-8.0.2: "},
		{name: "addon on a version gone from the catalog", req: on(base(), api.EngineRedis, "6.2.0"),
			err: api.ErrConflict, msg: "addon s-1 runs redis-6.2.0, which is not in the engine catalog"},
		{name: "another operation", req: func() UpgradeRequest {
			r := base()
			r.Busy, r.Active = true, api.Operation{ID: "op-x", Kind: api.OpPlanChange}
			return r
		}(), err: api.ErrConflict, msg: "addon s-1 has operation op-x (plan-change) in progress"},
		{name: "not running", req: func() UpgradeRequest { r := base(); r.Addon.Status = api.AddonError; return r }(),
			err: api.ErrConflict, msg: "addon s-1 is error; its engine can be upgraded once it is running"},
		{name: "starter whose node does not answer: SAVE cannot capture its writes", req: func() UpgradeRequest {
			r := base()
			r.Probed, r.ProbeErr = true, "dial tcp: connection refused"
			return r
		}(), err: api.ErrConflict, msg: "the primary s-1-redis-0 of addon s-1 does not answer (dial tcp: connection refused), so SAVE cannot capture its latest writes before it restarts on valkey-8.0.1"},
		{name: "... accepted with --may-discard-data", req: func() UpgradeRequest {
			r := base()
			r.Probed, r.ProbeErr, r.MayDiscardData = true, "dial tcp: connection refused", true
			return r
		}(), rolling: true, kind: "switch"},
		{name: "rolling business whose primary does not answer: no data at risk (the steps wait)", req: func() UpgradeRequest {
			r := biz()
			r.Probed, r.ProbeErr = true, "i/o timeout"
			return r
		}(), rolling: true, business: true, kind: "switch"},
		{name: "a version that cannot read the old RDB format", req: func() UpgradeRequest {
			r := biz()
			r.Engines = slices.Clone(cat)
			r.Engines[3].Version, r.Engines[3].RDB = "7.2.0", 9 // "redis-7.2.0" writes an older format than 7.0.15's
			r.To = "redis-7.2.0"
			return r
		}(), err: api.ErrConflict, msg: "upgrading addon b-1 to redis-7.2.0 would lose its data: redis-7.2.0 reads RDB formats up to 9 and redis-7.0.15 wrote format 10"},
		{name: "not rolling, primary answering: every node stops", req: func() UpgradeRequest {
			r := biz()
			r.Engines = slices.Clone(cat)
			r.Engines[3].Version, r.Engines[3].RDB = "7.2.0", 0 // unknown format: not rolling
			r.To = "redis-7.2.0"
			r.Probed = true
			return r
		}(), business: true, kind: "minor"},
		{name: "not rolling, primary not answering", req: func() UpgradeRequest {
			r := biz()
			r.Engines = slices.Clone(cat)
			r.Engines[3].Version, r.Engines[3].RDB = "7.2.0", 0
			r.To = "redis-7.2.0"
			r.Probed, r.ProbeErr = true, "connection refused"
			return r
		}(), err: api.ErrConflict, msg: "the primary b-1-redis-0 of addon b-1 does not answer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := CheckUpgrade(tc.req)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(api.Message(err), tc.msg) {
					t.Fatalf("err = %v; want %v saying %q", err, tc.err, tc.msg)
				}
				if strings.Contains(api.Message(err), "\n") {
					t.Fatalf("refusal is not one line: %q", api.Message(err))
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if p.Rolling != tc.rolling || p.Business != tc.business || p.Kind != tc.kind || p.To.Key() != tc.req.To || p.Downtime == "" {
				t.Fatalf("plan %+v; want rolling %v business %v kind %s", p, tc.rolling, tc.business, tc.kind)
			}
		})
	}
}

// set records member id on to (as the effect does) with the process it ran.
func setMember(f *fixture, op *api.Operation, addon, id, to string) {
	a := f.addons[addon]
	a.Members = slices.Clone(a.Members)
	e, ver, _ := strings.Cut(to, "-")
	for i, m := range a.Members {
		if m.ID == id {
			a.Members[i].Engine, a.Members[i].Version, a.Members[i].Stopped = api.Engine(e), ver, false
		}
	}
	f.addons[addon] = a
	op.Upgrade = op.Upgrade.WithSet(api.UpgradeSet{MemberID: id, At: t0.Add(-3 * time.Second), RunningSince: f.obs[id].StartedAt})
}

func editMember(f *fixture, addon, id string, fn func(*api.Member)) {
	a := f.addons[addon]
	a.Members = slices.Clone(a.Members)
	for i := range a.Members {
		if a.Members[i].ID == id {
			fn(&a.Members[i])
		}
	}
	f.addons[addon] = a
}

func restarted(f *fixture, id string) {
	o := f.obs[id]
	o.StartedAt = t0.Add(-time.Second)
	f.obs[id] = o
}

func TestUpgradeStepDecisions(t *testing.T) {
	const to = "valkey-8.0.1"
	type tcase struct {
		name    string
		addon   string
		rolling bool
		done    int
		edit    func(f *fixture, op *api.Operation)
		kind    Kind
		then    Kind
		detail  string
		action  string // Action.String(), "" none
		check   func(t *testing.T, d Decision)
		effect  Effect
		status  api.AddonStatus
		mayLose bool
	}
	tests := []tcase{
		// --- starter: save, set, wait, record, notify, mark running
		{name: "starter save: BGSAVE on the node", addon: "s-1", rolling: true, done: 0, kind: Run, then: Advance,
			action: "save 127.0.0.14:20010", detail: "s-1-redis-0 saved its data"},
		{name: "starter save: a node that does not serve is waited for", addon: "s-1", rolling: true, done: 0, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				f.obs["s-1-redis-0"] = Observed{Seen: true, State: api.MemberFailed}
			},
			detail: "waiting for s-1-redis-0 to serve, to save its data (now: failed)"},
		{name: "starter save: ... or given up with --may-discard-data", addon: "s-1", rolling: true, done: 0, kind: Advance, mayLose: true,
			edit: func(f *fixture, _ *api.Operation) {
				f.obs["s-1-redis-0"] = Observed{Seen: true, State: api.MemberFailed}
			},
			detail: "s-1-redis-0 does not serve (failed): not saved; going on, as --may-discard-data allows"},
		{name: "starter save: a failed save is retried, paced", addon: "s-1", rolling: true, done: 0, kind: Wait,
			edit: func(_ *fixture, op *api.Operation) {
				op.Steps[0].Attempts, op.Steps[0].LastAttempt, op.Steps[0].Detail = 1, t0.Add(-time.Second), "save failed (attempt 1), retrying: MISCONF"
			},
			detail: "save failed (attempt 1), retrying: MISCONF"},
		{name: "starter save: retried after the pause, never given up without the flag", addon: "s-1", rolling: true, done: 0, kind: Run, then: Advance,
			edit: func(_ *fixture, op *api.Operation) {
				op.Steps[0].Attempts, op.Steps[0].LastAttempt = 7, t0.Add(-time.Minute)
			},
			action: "save 127.0.0.14:20010"},
		{name: "starter save: given up after 3 failures with the flag", addon: "s-1", rolling: true, done: 0, kind: Advance, mayLose: true,
			edit: func(_ *fixture, op *api.Operation) {
				op.Steps[0].Attempts, op.Steps[0].LastAttempt, op.Steps[0].Detail = 3, t0.Add(-time.Minute), "MISCONF"
			},
			detail: "not saved after 3 attempts (MISCONF); going on, as --may-discard-data allows"},
		{name: "starter set: the version, with the process it ran", addon: "s-1", rolling: true, done: 1, kind: Advance,
			effect: SetMemberVersion{MemberID: "s-1-redis-0", Engine: api.EngineValkey, Version: "8.0.1", RunningSince: t0.Add(-time.Hour)},
			detail: "s-1-redis-0 set to valkey-8.0.1: its agent restarts it on it, data dir kept"},
		{name: "starter set, resumed: already set is not set again", addon: "s-1", rolling: true, done: 1, kind: Advance,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "s-1", "s-1-redis-0", to) },
			detail: "s-1-redis-0 is already set to valkey-8.0.1"},
		{name: "starter wait: not running yet", addon: "s-1", rolling: true, done: 2, kind: Wait,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "s-1", "s-1-redis-0", to)
				f.obs["s-1-redis-0"] = Observed{Seen: true, State: api.MemberStarting}
			},
			detail: "waiting for s-1-redis-0 to run valkey-8.0.1 (now: starting)"},
		{name: "starter wait: the live check wants a master with its keys; the detail has the downtime", addon: "s-1", rolling: true, done: 2, kind: Run, then: Advance,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "s-1", "s-1-redis-0", to)
				restarted(f, "s-1-redis-0")
			},
			check: func(t *testing.T, d Decision) {
				c := d.Action.(CheckUpgraded)
				if !reflect.DeepEqual(c, CheckUpgraded{Addr: "127.0.0.14:20010", Role: api.RoleRedis, Engine: api.EngineValkey, Version: "8.0.1", Master: true, MinKeys: 1000}) {
					t.Fatalf("check %+v", c)
				}
			},
			detail: "s-1-redis-0 runs valkey-8.0.1 as the primary with its data (at least the 1000 keys it had), 3s after its version was set (the restart's downtime)"},
		{name: "starter wait: a version not set fails the operation", addon: "s-1", rolling: true, done: 2, kind: Fail,
			detail: "s-1-redis-0 is not set to valkey-8.0.1"},
		{name: "starter wait: host down", addon: "s-1", rolling: true, done: 2, kind: Wait,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "s-1", "s-1-redis-0", to); downHost(f, "h4") },
			detail: "waiting for s-1-redis-0: host h4 is down"},
		{name: "record version: the addon's, member versions dropped", addon: "s-1", rolling: true, done: 3, kind: Advance,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "s-1", "s-1-redis-0", to) },
			effect: SetAddonVersion{Engine: api.EngineValkey, Version: "8.0.1"}, detail: "addon s-1 recorded on valkey-8.0.1 (was redis-7.0.15)"},
		{name: "record version: a member not set fails", addon: "s-1", rolling: true, done: 3, kind: Fail,
			detail: "cannot record valkey-8.0.1: s-1-redis-0 not set to it"},
		{name: "notify: no hook", addon: "s-1", rolling: true, done: 4, kind: Advance, detail: "no hook configured"},
		{name: "mark running", addon: "s-1", rolling: true, done: 5, kind: Advance, status: api.AddonRunning, detail: "redis-7.0.15 -> valkey-8.0.1 done in 1m0s"},

		// --- business, rolling
		{name: "replica set while the primary serves", addon: "b-1", rolling: true, done: 0, kind: Advance,
			effect: SetMemberVersion{MemberID: "b-1-redis-1", Engine: api.EngineValkey, Version: "8.0.1", RunningSince: t0.Add(-time.Hour)}},
		{name: "replica set waits for a serving primary (it resyncs from it)", addon: "b-1", rolling: true, done: 0, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberStarting}
			},
			detail: "waiting for the primary b-1-redis-0 to serve before b-1-redis-1 restarts and resyncs from it (now: starting)"},
		{name: "replica wait: a replica of the primary in sync", addon: "b-1", rolling: true, done: 1, kind: Run, then: Advance,
			edit: func(f *fixture, op *api.Operation) { setMember(f, op, "b-1", "b-1-redis-1", to) },
			check: func(t *testing.T, d Decision) {
				c := d.Action.(CheckUpgraded)
				if c.Master || c.ReplicaOf != "127.0.0.11:20001" || c.MinKeys != -1 || c.Addr != "127.0.0.12:20001" ||
					!slices.Equal(c.Sentinels, []string{"127.0.0.11:20002", "127.0.0.12:20002", "127.0.0.13:20002"}) {
					t.Fatalf("check %+v", c)
				}
			},
			detail: "b-1-redis-1 runs valkey-8.0.1 as a replica of b-1-redis-0 in sync, known to the sentinels, 3s after"},
		{name: "switchover to the upgraded replica", addon: "b-1", rolling: true, done: 2, kind: Run, then: Wait,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "b-1", "b-1-redis-1", to) },
			action: "switchover 127.0.0.11:20001 -> 127.0.0.12:20001", detail: "switched over to b-1-redis-1 (zero-loss); waiting for it to be recorded"},
		{name: "switchover waits for the replica in sync", addon: "b-1", rolling: true, done: 2, kind: Wait,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-redis-1", to)
				f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "master", Offset: 5 << 20}
			},
			detail: "waiting before switching over to b-1-redis-1: b-1-redis-1 is 5242880 bytes behind the primary"},
		{name: "switchover, resumed: an attempt just made is not repeated", addon: "b-1", rolling: true, done: 2, kind: Wait,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-redis-1", to)
				op.Steps[2].Attempts, op.Steps[2].LastAttempt, op.Steps[2].Detail = 1, t0.Add(-2*time.Second), "switched over to b-1-redis-1 (zero-loss); waiting for it to be recorded"
			},
			detail: "waiting for it to be recorded"},
		{name: "switchover, resumed: done (recorded, serving) is not done again", addon: "b-1", rolling: true, done: 2, kind: Advance,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-redis-1", to)
				swapPrimary(f)
			},
			detail: "b-1-redis-1 is the primary, on host h2"},
		{name: "switchover recorded but the new primary not yet serving as one", addon: "b-1", rolling: true, done: 2, kind: Wait,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-redis-1", to)
				swapPrimary(f)
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"}
			},
			detail: "waiting for b-1-redis-1 to serve as the primary (now: running as slave)"},
		{name: "old primary: set once it is a replica", addon: "b-1", rolling: true, done: 3, kind: Advance,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "b-1", "b-1-redis-1", to); swapPrimary(f) },
			effect: SetMemberVersion{MemberID: "b-1-redis-0", Engine: api.EngineValkey, Version: "8.0.1", RunningSince: t0.Add(-time.Hour)}},
		{name: "old primary still the primary (a failover back): switched over first, never restarted as the primary", addon: "b-1", rolling: true, done: 3, kind: Run, then: Wait,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "b-1", "b-1-redis-1", to) },
			action: "switchover 127.0.0.11:20001 -> 127.0.0.12:20001", detail: "b-1-redis-0 is the primary: switched over to b-1-redis-1 first"},
		{name: "old primary still the primary, no replica in sync: waits", addon: "b-1", rolling: true, done: 3, kind: Wait,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-redis-1", to)
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStarting}
			},
			detail: "b-1-redis-0 is the primary and must not restart as one; no replica to switch over to yet: b-1-redis-1 is not a replica yet (starting)"},
		{name: "old primary on a lost host: waits for a failover", addon: "b-1", rolling: true, done: 3, kind: Wait,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "b-1", "b-1-redis-1", to); downHost(f, "h1") },
			detail: "the primary b-1-redis-0 is on a lost host: waiting for a failover"},
		{name: "old primary wait: a replica of the new primary in sync", addon: "b-1", rolling: true, done: 4, kind: Run, then: Advance,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-redis-1", to)
				swapPrimary(f)
				setMember(f, op, "b-1", "b-1-redis-0", to)
			},
			check: func(t *testing.T, d Decision) {
				if c := d.Action.(CheckUpgraded); c.Master || c.ReplicaOf != "127.0.0.12:20001" {
					t.Fatalf("check %+v", c)
				}
			}},
		{name: "sentinel set while the others run", addon: "b-1", rolling: true, done: 5, kind: Advance,
			effect: SetMemberVersion{MemberID: "b-1-sentinel-0", Engine: api.EngineValkey, Version: "8.0.1", RunningSince: t0.Add(-time.Hour)}},
		{name: "sentinel set waits for every other sentinel (a majority stays)", addon: "b-1", rolling: true, done: 5, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				f.obs["b-1-sentinel-2"] = Observed{Seen: true, State: api.MemberStarting}
			},
			detail: "waiting for sentinel b-1-sentinel-2 to run before b-1-sentinel-0 restarts (a majority must stay; now: starting)"},
		{name: "sentinel wait: version, primary, replica, peers", addon: "b-1", rolling: true, done: 6, kind: Run, then: Advance,
			edit: func(f *fixture, op *api.Operation) { setMember(f, op, "b-1", "b-1-sentinel-0", to) },
			check: func(t *testing.T, d Decision) {
				c := d.Action.(CheckUpgraded)
				want := CheckSentinel{Addr: "127.0.0.11:20002", Primary: "127.0.0.11:20001", Replicas: []string{"127.0.0.12:20001"}, Others: 2}
				if c.Role != api.RoleSentinel || c.Sentinel.Addr != want.Addr || c.Sentinel.Primary != want.Primary || !slices.Equal(c.Sentinel.Replicas, want.Replicas) || c.Sentinel.Others != 2 {
					t.Fatalf("check %+v", c)
				}
			}},
		{name: "standby haproxy set while the holder runs", addon: "b-1", rolling: true, done: 11, kind: Advance,
			effect: SetMemberVersion{MemberID: "b-1-haproxy-1", Engine: api.EngineValkey, Version: "8.0.1", RunningSince: t0.Add(-time.Hour)}},
		{name: "haproxy wait: not restarted yet (same process)", addon: "b-1", rolling: true, done: 12, kind: Wait,
			edit:   func(f *fixture, op *api.Operation) { setMember(f, op, "b-1", "b-1-haproxy-1", to) },
			detail: "waiting for b-1-haproxy-1 to restart on valkey-8.0.1"},
		{name: "haproxy wait: restarted, routes (PING through it)", addon: "b-1", rolling: true, done: 12, kind: Run, then: Advance,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-haproxy-1", to)
				restarted(f, "b-1-haproxy-1")
			},
			action: "ping 127.0.0.12:20003", detail: "b-1-haproxy-1 restarted on valkey-8.0.1 and routes to the primary"},
		{name: "VIP moves to the upgraded standby", addon: "b-1", rolling: true, done: 13, kind: Advance,
			effect: MoveEntrypoint{MemberID: "b-1-haproxy-1"}},
		{name: "VIP move, resumed: already there", addon: "b-1", rolling: true, done: 13, kind: Advance,
			edit:   func(f *fixture, _ *api.Operation) { moveVIP(f, "b-1-haproxy-1") },
			detail: "b-1-haproxy-1 holds the entrypoint"},
		{name: "VIP move waits for the standby to run", addon: "b-1", rolling: true, done: 13, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				f.obs["b-1-haproxy-1"] = Observed{Seen: true, State: api.MemberStarting}
			},
			detail: "waiting for b-1-haproxy-1 to run before the entrypoint moves to it"},
		{name: "old holder waits for the entrypoint to settle", addon: "b-1", rolling: true, done: 14, kind: Wait,
			edit: func(f *fixture, op *api.Operation) {
				moveVIP(f, "b-1-haproxy-1")
				op.Steps[13].FinishedAt = t0.Add(-2 * time.Second)
			},
			detail: "letting the entrypoint settle on b-1-haproxy-1 before b-1-haproxy-0 restarts"},
		{name: "old holder set once settled", addon: "b-1", rolling: true, done: 14, kind: Advance,
			edit: func(f *fixture, op *api.Operation) {
				moveVIP(f, "b-1-haproxy-1")
				op.Steps[13].FinishedAt = t0.Add(-6 * time.Second)
			},
			effect: SetMemberVersion{MemberID: "b-1-haproxy-0", Engine: api.EngineValkey, Version: "8.0.1", RunningSince: t0.Add(-time.Hour)}},
		{name: "a holder is never restarted while the other could hold the VIP", addon: "b-1", rolling: true, done: 14, kind: Wait,
			detail: "b-1-haproxy-0 holds the entrypoint: waiting for it to move to b-1-haproxy-1 before it restarts"},
		{name: "a haproxy is not restarted while the other is down", addon: "b-1", rolling: true, done: 14, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				moveVIP(f, "b-1-haproxy-1")
				f.obs["b-1-haproxy-1"] = Observed{Seen: true, State: api.MemberFailed}
			},
			detail: "waiting for haproxy b-1-haproxy-1 to run before b-1-haproxy-0 restarts (now: failed)"},
		{name: "switch back to the primary's own host", addon: "b-1", rolling: true, done: 16, kind: Run, then: Wait,
			edit: func(f *fixture, op *api.Operation) {
				for _, id := range []string{"b-1-redis-1", "b-1-redis-0"} {
					setMember(f, op, "b-1", id, to)
				}
				swapPrimary(f)
			},
			action: "switchover 127.0.0.12:20001 -> 127.0.0.11:20001", detail: "switched over to b-1-redis-0"},
		{name: "switch back, resumed: already back", addon: "b-1", rolling: true, done: 16, kind: Advance,
			detail: "b-1-redis-0 is the primary, on host h1"},

		// --- business, every node stops
		{name: "stop-all: save on the primary", addon: "b-1", rolling: false, done: 0, kind: Run, then: Advance, action: "save 127.0.0.11:20001"},
		{name: "stop-all: stop the replica", addon: "b-1", rolling: false, done: 1, kind: Advance,
			effect: StopMember{MemberID: "b-1-redis-1"}, detail: "b-1-redis-1 stopped (SIGTERM, data kept): it cannot be promoted while the primary restarts"},
		{name: "stop-all: stop, resumed", addon: "b-1", rolling: false, done: 1, kind: Advance,
			edit: func(f *fixture, _ *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
			},
			detail: "b-1-redis-1 is stopped"},
		{name: "stop-all: the primary waits for the replica to stop", addon: "b-1", rolling: false, done: 2, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
			},
			detail: "waiting for b-1-redis-1 to stop before the primary restarts (now: running as slave)"},
		{name: "stop-all: ... and for its agent to report it", addon: "b-1", rolling: false, done: 2, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
				delete(f.obs, "b-1-redis-1")
			},
			detail: "waiting for b-1-redis-1 to stop before the primary restarts (now: not reported)"},
		{name: "stop-all: the primary restarts in place once the replica is stopped", addon: "b-1", rolling: false, done: 2, kind: Advance,
			edit: func(f *fixture, _ *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStopped}
			},
			effect: SetMemberVersion{MemberID: "b-1-redis-0", Engine: api.EngineValkey, Version: "8.0.1", RunningSince: t0.Add(-time.Hour)},
			detail: "b-1-redis-0 (the primary; its replicas are stopped) set to valkey-8.0.1"},
		{name: "stop-all: the primary is back with its keys", addon: "b-1", rolling: false, done: 3, kind: Run, then: Advance,
			edit: func(f *fixture, op *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
				setMember(f, op, "b-1", "b-1-redis-0", to)
			},
			check: func(t *testing.T, d Decision) {
				if c := d.Action.(CheckUpgraded); !c.Master || c.MinKeys != 1000 {
					t.Fatalf("check %+v", c)
				}
			}},
		{name: "stop-all: the replica starts on the new version once the primary runs it", addon: "b-1", rolling: false, done: 4, kind: Advance,
			edit: func(f *fixture, op *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStopped}
				setMember(f, op, "b-1", "b-1-redis-0", to)
			},
			effect: SetMemberVersion{MemberID: "b-1-redis-1", Engine: api.EngineValkey, Version: "8.0.1"},
			detail: "b-1-redis-1 set to valkey-8.0.1 and started: it resyncs from the primary b-1-redis-0"},
		{name: "stop-all: the replica is not started before the primary runs the new version", addon: "b-1", rolling: false, done: 4, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
			},
			detail: "waiting for the primary b-1-redis-0 to run valkey-8.0.1 before b-1-redis-1 starts on it"},

		// --- cancel
		{name: "cancel: versions stay, the account says so", addon: "b-1", rolling: true, done: 2, kind: Cancel, status: api.AddonRunning,
			edit: func(f *fixture, op *api.Operation) {
				setMember(f, op, "b-1", "b-1-redis-1", to)
				op.CancelRequested = true
			},
			detail: "cancelled by an operator; done: upgrade b-1-redis-1, wait b-1-redis-1; not done: switch over to b-1-redis-1"},
		{name: "cancel of a stop-all: the stopped replica starts again on its primary's version", addon: "b-1", rolling: false, done: 2, kind: Cancel, status: api.AddonRunning,
			edit: func(f *fixture, op *api.Operation) {
				editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.Stopped = true })
				op.CancelRequested = true
			},
			effect: SetMemberVersion{MemberID: "b-1-redis-1", Engine: api.EngineRedis, Version: "7.0.15"},
			detail: "b-1-redis-1 started again on redis-7.0.15 (its primary's version)"},
		{name: "addon gone", addon: "b-1", rolling: true, done: 1, kind: Fail,
			edit: func(f *fixture, _ *api.Operation) { delete(f.addons, "b-1") }, detail: "the addon no longer exists"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			onRedis7(f)
			op := upgradeOp(f, tc.addon, to, tc.rolling, tc.done)
			op.Upgrade.MayDiscardData = tc.mayLose
			if tc.edit != nil {
				tc.edit(f, &op)
			}
			d := Next(f.view(tc.addon), op)
			if d.Kind != tc.kind || d.Status != tc.status {
				t.Fatalf("at %q: decision %v %q (status %q); want %v (status %q)", op.Steps[min(op.CurrentStep(), len(op.Steps)-1)].Name, d.Kind, d.Detail, d.Status, tc.kind, tc.status)
			}
			wantIn(t, d.Detail, tc.detail)
			if d.Kind == Run {
				if d.Then != tc.then {
					t.Fatalf("then %v; want %v", d.Then, tc.then)
				}
				if tc.action != "" && d.Action.String() != tc.action {
					t.Fatalf("action %q; want %q", d.Action, tc.action)
				}
			} else if d.Action != nil {
				t.Fatalf("action %v on a %v", d.Action, d.Kind)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
			if fmt.Sprintf("%#v", d.Effect) != fmt.Sprintf("%#v", tc.effect) {
				t.Fatalf("effect %#v; want %#v", d.Effect, tc.effect)
			}
		})
	}
}

// swapPrimary records b-1-redis-1 as the primary (and observes it so).
func swapPrimary(f *fixture) {
	editMember(f, "b-1", "b-1-redis-0", func(m *api.Member) { m.RedisRole = "replica" })
	editMember(f, "b-1", "b-1-redis-1", func(m *api.Member) { m.RedisRole = "primary" })
	o0, o1 := f.obs["b-1-redis-0"], f.obs["b-1-redis-1"]
	o0.RedisRole, o1.RedisRole = "slave", "master"
	f.obs["b-1-redis-0"], f.obs["b-1-redis-1"] = o0, o1
}

func moveVIP(f *fixture, to string) {
	for _, id := range []string{"b-1-haproxy-0", "b-1-haproxy-1"} {
		editMember(f, "b-1", id, func(m *api.Member) { m.Active = m.ID == to })
	}
}

// world simulates the engine and the fleet for a walk through a whole
// upgrade: each decision's effect is committed, each action performed
// (its outcome: a restart on the set version, a switchover recorded), the
// clock moves a second per decision.
type world struct {
	t       *testing.T
	f       *fixture
	addon   string
	now     time.Time
	actions []string
	effects []string
}

func (w *world) apply(op *api.Operation, d Decision) {
	i := op.CurrentStep()
	switch d.Kind {
	case Advance:
		switch e := d.Effect.(type) {
		case SetMemberVersion:
			editMember(w.f, w.addon, e.MemberID, func(m *api.Member) { m.Engine, m.Version, m.Stopped = e.Engine, e.Version, false })
			op.Upgrade = op.Upgrade.WithSet(api.UpgradeSet{MemberID: e.MemberID, At: w.now, RunningSince: e.RunningSince})
			o := w.f.obs[e.MemberID]
			o.StartedAt, o.State = w.now, api.MemberRunning
			w.f.obs[e.MemberID] = o
			w.effects = append(w.effects, "set "+e.MemberID)
		case StopMember:
			editMember(w.f, w.addon, e.MemberID, func(m *api.Member) { m.Stopped = true })
			w.f.obs[e.MemberID] = Observed{Seen: true, State: api.MemberStopped}
			w.effects = append(w.effects, "stop "+e.MemberID)
		case MoveEntrypoint:
			moveVIP(w.f, e.MemberID)
			w.effects = append(w.effects, "vip "+e.MemberID)
		case SetAddonVersion:
			a := w.f.addons[w.addon]
			a.Engine, a.Version = e.Engine, e.Version
			a.Members = slices.Clone(a.Members)
			for j := range a.Members {
				a.Members[j].Engine, a.Members[j].Version = "", ""
			}
			w.f.addons[w.addon] = a
			w.effects = append(w.effects, "record")
		case nil:
		default:
			w.t.Fatalf("unexpected effect %T", e)
		}
		op.Steps[i].State, op.Steps[i].FinishedAt = api.OpDone, w.now
	case Run:
		w.actions = append(w.actions, op.Steps[i].Name+": "+d.Action.String())
		if d.Action.Mutates() {
			op.Steps[i].Attempts++
			op.Steps[i].LastAttempt = w.now
		}
		if sw, ok := d.Action.(Switchover); ok {
			// The topology controller records the new primary.
			a := w.f.addons[w.addon]
			a.Members = slices.Clone(a.Members)
			for j, m := range a.Members {
				if m.Role != api.RoleRedis {
					continue
				}
				role, obs := "replica", "slave"
				if addr(w.f.view(w.addon), m) == sw.Replica {
					role, obs = "primary", "master"
				}
				a.Members[j].RedisRole = role
				o := w.f.obs[m.ID]
				o.RedisRole = obs
				w.f.obs[m.ID] = o
			}
			w.f.addons[w.addon] = a
		}
		if d.Then == Advance {
			op.Steps[i].State, op.Steps[i].FinishedAt = api.OpDone, w.now
		} else {
			op.Steps[i].State, op.Steps[i].Detail = api.OpRunning, d.Detail
		}
	case Wait:
		op.Steps[i].State, op.Steps[i].Detail = api.OpRunning, d.Detail
	default:
		w.t.Fatalf("step %q: %v %q", op.Steps[i].Name, d.Kind, d.Detail)
	}
	if op.Steps[min(i, len(op.Steps)-1)].StartedAt.IsZero() {
		op.Steps[i].StartedAt = w.now
	}
}

func walk(t *testing.T, addon string, rolling bool) *world { return walkOf(t, addon, rolling, true) }

// walkOf is walk with the haproxy members upgraded or not (UpgradeStepsOf).
func walkOf(t *testing.T, addon string, rolling, restartHAProxy bool) *world {
	f := newFixture()
	onRedis7(f)
	w := &world{t: t, f: f, addon: addon, now: t0}
	op := upgradeOp(f, addon, "valkey-8.0.1", rolling, 0)
	op.Steps = UpgradeStepsOf(f.addons[addon], rolling, restartHAProxy)
	for n := 0; op.CurrentStep() < len(op.Steps); n++ {
		if n > 200 {
			t.Fatalf("no end: %+v", op.Steps)
		}
		v := f.view(addon)
		v.Now = w.now
		v.AppHook = AppHook{Describe: "command notify", Attempts: 3, Every: time.Second}
		d := Next(v, op)
		if d.Kind == Wait && !strings.Contains(d.Detail, "waiting for it to be recorded") && !strings.Contains(d.Detail, "letting the entrypoint settle") {
			t.Fatalf("step %q waits: %s", op.Steps[op.CurrentStep()].Name, d.Detail)
		}
		w.apply(&op, d)
		w.now = w.now.Add(time.Second)
	}
	a := f.addons[addon]
	if a.Engine != api.EngineValkey || a.Version != "8.0.1" {
		t.Fatalf("addon on %s %s", a.Engine, a.Version)
	}
	for _, m := range a.Members {
		if m.Engine != "" || m.Stopped {
			t.Fatalf("member %+v keeps its own version", m)
		}
	}
	if prim, _ := Primary(a); prim.ID != op.Upgrade.Primary {
		t.Fatalf("primary %s at the end; want %s (its host before)", prim.ID, op.Upgrade.Primary)
	}
	return w
}

// TestUpgradeWalks walks whole upgrades the way the engine does and checks
// what reaches the world, in order, each once.
func TestUpgradeWalks(t *testing.T) {
	t.Run("starter", func(t *testing.T) {
		w := walk(t, "s-1", true)
		wantActions := []string{"save s-1-redis-0: save 127.0.0.14:20010", "wait s-1-redis-0: check redis 127.0.0.14:20010 runs valkey 8.0.1",
			"notify app: app hook: engine redis-7.0.15 -> valkey-8.0.1"}
		if !slices.Equal(w.actions, wantActions) || !slices.Equal(w.effects, []string{"set s-1-redis-0", "record"}) {
			t.Fatalf("actions %q\neffects %q", w.actions, w.effects)
		}
	})
	t.Run("business rolling", func(t *testing.T) {
		w := walk(t, "b-1", true)
		wantEffects := []string{"set b-1-redis-1", "set b-1-redis-0", "set b-1-sentinel-0", "set b-1-sentinel-1", "set b-1-sentinel-2",
			"set b-1-haproxy-1", "vip b-1-haproxy-1", "set b-1-haproxy-0", "record"}
		if !slices.Equal(w.effects, wantEffects) {
			t.Fatalf("effects %q\nwant %q", w.effects, wantEffects)
		}
		var switchovers []string
		for _, a := range w.actions {
			if strings.Contains(a, "switchover") {
				switchovers = append(switchovers, a)
			}
		}
		want := []string{"switch over to b-1-redis-1: switchover 127.0.0.11:20001 -> 127.0.0.12:20001", "switch back to b-1-redis-0: switchover 127.0.0.12:20001 -> 127.0.0.11:20001"}
		if !slices.Equal(switchovers, want) {
			t.Fatalf("switchovers %q; want %q", switchovers, want)
		}
	})
	t.Run("business rolling, the same HAProxy image: no haproxy touched, recorded", func(t *testing.T) {
		w := walkOf(t, "b-1", true, false)
		wantEffects := []string{"set b-1-redis-1", "set b-1-redis-0", "set b-1-sentinel-0", "set b-1-sentinel-1", "set b-1-sentinel-2", "record"}
		if !slices.Equal(w.effects, wantEffects) {
			t.Fatalf("effects %q\nwant %q", w.effects, wantEffects)
		}
	})
	t.Run("business, every node stops", func(t *testing.T) {
		w := walk(t, "b-1", false)
		wantEffects := []string{"stop b-1-redis-1", "set b-1-redis-0", "set b-1-redis-1", "set b-1-sentinel-0", "set b-1-sentinel-1", "set b-1-sentinel-2",
			"set b-1-haproxy-1", "vip b-1-haproxy-1", "set b-1-haproxy-0", "record"}
		if !slices.Equal(w.effects, wantEffects) {
			t.Fatalf("effects %q\nwant %q", w.effects, wantEffects)
		}
		for _, a := range w.actions {
			if strings.Contains(a, "switchover") {
				t.Fatalf("a stop-all switched over: %s", a)
			}
		}
	})
}

// TestUpgradeResumesFromAnyStep: a new leader sees only the FSM (the
// operation's steps and the members) and what the agents report. At
// every point of a rolling upgrade, deciding again from the same state
// never sets a member already set, never switches over when the
// switchover happened, never moves a VIP already moved.
func TestUpgradeResumesFromAnyStep(t *testing.T) {
	f := newFixture()
	onRedis7(f)
	w := &world{t: t, f: f, addon: "b-1", now: t0}
	op := upgradeOp(f, "b-1", "valkey-8.0.1", true, 0)
	for n := 0; op.CurrentStep() < len(op.Steps) && n < 200; n++ {
		v := f.view("b-1")
		v.Now = w.now
		d := Next(v, op)
		// A new leader deciding the same step again, after the effect or
		// the action of this decision happened but before its step was
		// recorded: the world moved, the step did not.
		snap := *f
		snap.addons, snap.obs = cloneMap(f.addons), cloneMap(f.obs)
		opCopy := op
		opCopy.Steps = slices.Clone(op.Steps)
		w.apply(&op, d)
		i := opCopy.CurrentStep()
		if d.Kind == Advance && d.Effect != nil || d.Kind == Run && d.Action.Mutates() {
			opCopy.Upgrade = op.Upgrade
			again := Next(func() View { v := f.view("b-1"); v.Now = w.now; return v }(), opCopy)
			if again.Effect != nil {
				t.Fatalf("step %q: effect %#v applied again after %#v", opCopy.Steps[i].Name, again.Effect, d.Effect)
			}
			if sw, ok := again.Action.(Switchover); ok {
				t.Fatalf("step %q: switchover %v again after %v", opCopy.Steps[i].Name, sw, d.Action)
			}
		}
		w.now = w.now.Add(time.Second)
	}
	if op.CurrentStep() != len(op.Steps) {
		t.Fatalf("not done: %+v", op.Steps)
	}
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestSwitchingOver(t *testing.T) {
	f := newFixture()
	onRedis7(f)
	a := f.addons["b-1"]
	op := upgradeOp(f, "b-1", "valkey-8.0.1", true, 0)
	for i, want := range map[int]bool{0: true, 1: false, 2: true, 3: true, 5: false, 16: true, 17: false} {
		o := op
		o.Steps = slices.Clone(op.Steps)
		for j := 0; j < i; j++ {
			o.Steps[j].State = api.OpDone
		}
		if got := SwitchingOver(a, o); got != want {
			t.Errorf("at %q: switching %v; want %v", o.Steps[i].Name, got, want)
		}
	}
	if !SwitchingOver(a, replaceOp("b-1-redis-0", 0)) || SwitchingOver(a, replaceOp("b-1-redis-0", 1)) {
		t.Error("a replace switches over in its demote step only")
	}
}

// TestUpgradeStepsKeepHAProxy: versions with the same HAProxy image upgrade
// no haproxy member (no VIP move, no restart): a starter's URL breaks once.
func TestUpgradeStepsKeepHAProxy(t *testing.T) {
	f := newFixture()
	names := func(ss []api.Step) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
		}
		return out
	}
	s := names(UpgradeStepsOf(f.addons["s-2"], true, false))
	want := []string{StepSavePrefix + "s-2-redis-0", StepUpgradePrefix + "s-2-redis-0", StepWaitPrefix + "s-2-redis-0", StepRecordVersion, StepNotifyApp, StepMarkRunning}
	if !slices.Equal(s, want) {
		t.Errorf("starter steps %q; want %q", s, want)
	}
	for _, n := range names(UpgradeStepsOf(f.addons["b-1"], true, false)) {
		if strings.Contains(n, "haproxy") || strings.HasPrefix(n, StepMoveEntrypointPrefix) {
			t.Errorf("business step %q with the same HAProxy image", n)
		}
	}
	if got := names(UpgradeStepsOf(f.addons["b-1"], true, true)); !slices.Contains(got, StepUpgradePrefix+"b-1-haproxy-0") {
		t.Errorf("a new HAProxy image upgrades no haproxy: %q", got)
	}
}
