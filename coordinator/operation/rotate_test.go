package operation

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

func TestAcceptedPasswords(t *testing.T) {
	cur, next, old := api.NewSecret("cur"), api.NewSecret("next"), api.NewSecret("old")
	tests := []struct {
		name string
		a    api.Addon
		want []string
	}{
		{"never rotated", api.Addon{Password: cur}, []string{"cur"}},
		{"next recorded, not published", api.Addon{Password: cur, NextPassword: next}, []string{"cur", "next"}},
		{"published: the old one in its grace period", api.Addon{Password: next, OldPassword: cur}, []string{"next", "cur"}},
		{"retired", api.Addon{Password: next, SpecPassword: old}, []string{"next"}},
		{"never twice", api.Addon{Password: cur, OldPassword: cur}, []string{"cur"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range AcceptedPasswords(tc.a) {
				got = append(got, p.Reveal())
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("accepted %v, want %v", got, tc.want)
			}
		})
	}
}

// retireOp is a retire operation of addon id (in its grace period, over)
// with its first done steps done.
func retireOp(f *fixture, id string, done int) api.Operation {
	a := f.addons[id]
	a.OldPassword, a.OldPasswordUntil = api.NewSecret("old"), t0
	if done >= 1 {
		a.OldPassword, a.OldPasswordUntil = api.Secret{}, time.Time{}
	}
	f.addons[id] = a
	op := PlanRetire([]api.Addon{a}, nil, t0)
	if done >= 1 {
		op = []api.Operation{{AddonID: id, App: a.App, Kind: api.OpRotatePassword, State: api.OpRunning, Steps: RetireSteps(), Change: RetireChange}}
	}
	op[0].ID = "op-x"
	for i := 0; i < done; i++ {
		op[0].Steps[i].State = api.OpDone
	}
	return op[0]
}

// rotateOp is a rotation of addon id with its first done steps done;
// published moves the addon's passwords as the publish step does.
func rotateOp(f *fixture, id string, done int) api.Operation {
	a := f.addons[id]
	op := api.Operation{ID: "op-r", AddonID: id, App: a.App, Kind: api.OpRotatePassword, State: api.OpRunning, Steps: RotateSteps(),
		Change: RotateChange, Rotate: api.PasswordRotation{Grace: api.Duration(time.Hour)}, CreatedAt: t0}
	a.NextPassword = api.NewSecret("next")
	if done >= 3 { // published
		a.OldPassword, a.Password, a.NextPassword = a.Password, a.NextPassword, api.Secret{}
	}
	if done >= 5 { // grace recorded: the rotation is over
		a.OldPasswordUntil = t0.Add(time.Hour)
	}
	f.addons[id] = a
	for i := 0; i < done; i++ {
		op.Steps[i].State = api.OpDone
	}
	return op
}

func TestRotateSteps(t *testing.T) {
	tests := []struct {
		name   string
		addon  string
		done   int
		retire bool // a retire operation (retireOp), not a rotation
		edit   func(f *fixture, op *api.Operation)
		kind   Kind
		effect RotateChangeKind
		until  time.Time // RotateGrace's
		addrs  []string  // CheckPasswords'
		detail string
	}{
		{name: "record (resume: the command records it)", addon: "b-1", done: 0, kind: Advance, detail: "next password recorded"},
		{name: "accept both: every redis member checked", addon: "b-1", done: 1, kind: Run,
			addrs: []string{"127.0.0.11:20001", "127.0.0.12:20001"}, detail: "every redis member accepts both passwords"},
		{name: "accept both: a member restarting is waited for", addon: "b-1", done: 1, kind: Wait,
			edit: func(f *fixture, _ *api.Operation) {
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStarting}
			},
			detail: "waiting for b-1-redis-1 (starting) to serve, to check its passwords"},
		{name: "accept both: a member on a down host gets them on its return", addon: "b-1", done: 1, kind: Run,
			edit:  func(f *fixture, _ *api.Operation) { downHost(f, "h2") },
			addrs: []string{"127.0.0.11:20001"}, detail: "b-1-redis-1 on a down host: its agent applies them when it returns"},
		{name: "accept both: a starter on a down host is waited for", addon: "s-1", done: 1, kind: Wait,
			edit:   func(f *fixture, _ *api.Operation) { downHost(f, "h4") },
			detail: "waiting for s-1-redis-0 (host h4 is down)"},
		{name: "publish", addon: "b-1", done: 2, kind: Advance, effect: RotatePublish, detail: "the URL carries the new password"},
		{name: "publish, resumed after its entry", addon: "b-1", done: 2, kind: Advance,
			edit: func(f *fixture, _ *api.Operation) {
				a := f.addons["b-1"]
				a.OldPassword, a.Password, a.NextPassword = a.Password, a.NextPassword, api.Secret{}
				f.addons["b-1"] = a
			},
			detail: "the URL carries the new password"},
		{name: "notify: no hook", addon: "b-1", done: 3, kind: Advance, detail: "no hook configured"},
		{name: "grace: recorded with the addon, the rotation ends", addon: "b-1", done: 4, kind: Advance, effect: RotateGrace, until: t0.Add(time.Hour),
			detail: "the old password is accepted until 2026-12-07T11:00:00Z (the addon's other operations run meanwhile), or: cacheplane addons-password-rotate --app b --finish"},
		{name: "grace: ended by --finish before it began", addon: "b-1", done: 4, kind: Advance, effect: RotateGrace, until: t0,
			edit:   func(_ *fixture, op *api.Operation) { op.Rotate.FinishRequested = true },
			detail: "ended by --finish"},
		{name: "grace: recorded already (resumed after its entry)", addon: "b-1", done: 4, kind: Advance,
			edit: func(f *fixture, _ *api.Operation) {
				a := f.addons["b-1"]
				a.OldPasswordUntil = t0.Add(time.Hour)
				f.addons["b-1"] = a
			},
			detail: "accepted until 2026-12-07T11:00:00Z"},
		{name: "rotation over after the grace step", addon: "b-1", done: 5, kind: Advance, detail: "all steps done"},
		{name: "retire: the old password leaves the addon", addon: "b-1", retire: true, done: 0, kind: Advance, effect: RotateRetire,
			detail: "grace period over"},
		{name: "retire: resumed after its entry", addon: "b-1", retire: true, done: 0, kind: Advance,
			edit: func(f *fixture, _ *api.Operation) {
				a := f.addons["b-1"]
				a.OldPassword, a.OldPasswordUntil = api.Secret{}, time.Time{}
				f.addons["b-1"] = a
			},
			detail: "removed already"},
		{name: "retire: every member checked to refuse it", addon: "b-1", retire: true, done: 1, kind: Run,
			addrs: []string{"127.0.0.11:20001", "127.0.0.12:20001"}, detail: "the old password is refused by every redis member"},
		{name: "cancel before publish drops the next password", addon: "b-1", done: 1, kind: Cancel, effect: RotateAbort,
			edit:   func(_ *fixture, op *api.Operation) { op.CancelRequested = true },
			detail: "the next password is dropped, the URL's stays"},
		{name: "addon gone", addon: "b-1", done: 1, kind: Fail,
			edit: func(f *fixture, _ *api.Operation) { delete(f.addons, "b-1") }, detail: "the addon no longer exists"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			op := rotateOp(f, tc.addon, tc.done)
			if tc.retire {
				op = retireOp(f, tc.addon, tc.done)
			}
			if tc.edit != nil {
				tc.edit(f, &op)
			}
			v := f.view(tc.addon)
			d := Next(v, op)
			if d.Kind != tc.kind {
				t.Fatalf("decision %v %q; want %v", d.Kind, d.Detail, tc.kind)
			}
			wantIn(t, d.Detail, tc.detail)
			var eff RotateEffect
			if e, ok := d.Effect.(RotateEffect); ok {
				eff = e
			}
			if eff.Change != tc.effect || !eff.Until.Equal(tc.until) {
				t.Fatalf("effect %q until %s, want %q until %s", eff.Change, eff.Until, tc.effect, tc.until)
			}
			if a, ok := d.Action.(CheckPasswords); ok {
				if !slices.Equal(a.Addrs, tc.addrs) || a.Mutates() || d.Then != Advance {
					t.Fatalf("action %+v; want a check of %v", a, tc.addrs)
				}
			} else if tc.addrs != nil {
				t.Fatalf("action %T; want a password check", d.Action)
			}
			if d.Status != "" {
				t.Fatalf("a rotation changes no addon status (%q)", d.Status)
			}
		})
	}
}

func TestRotateRefusals(t *testing.T) {
	a := api.Addon{ID: "b-1", App: "b", Status: api.AddonRunning}
	rot := api.Operation{ID: "op-r", Kind: api.OpRotatePassword}
	plan := api.Operation{ID: "op-p", Kind: api.OpPlanChange}
	if err := CheckRotate(a, api.Operation{}, false); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"second rotation": CheckRotate(a, rot, true),
		"other operation": CheckRotate(a, plan, true),
		"not running":     CheckRotate(api.Addon{ID: "b-1", Status: api.AddonUpdating}, api.Operation{}, false),
		"finish nothing":  CheckFinish(a, plan, true),
	} {
		if !errors.Is(err, api.ErrConflict) {
			t.Errorf("%s: %v, want a conflict", name, err)
		}
	}
	wantIn(t, CheckRotate(a, rot, true).Error(), "already rotating its password (operation op-r)")
	if err := CheckFinish(a, rot, true); err != nil {
		t.Fatal(err)
	}
	// Cancel: before publish yes, after it only --finish.
	f := newFixture()
	if err := Cancellable(rotateOp(f, "b-1", 2)); err != nil {
		t.Fatal(err)
	}
	err := Cancellable(rotateOp(f, "b-1", 3))
	if !errors.Is(err, api.ErrConflict) {
		t.Fatalf("cancel after publish: %v", err)
	}
	wantIn(t, err.Error(), "--finish")
	// A second rotation during the grace period is refused: finish it
	// first. --finish during it is allowed, also behind another
	// operation; not while the old password is being removed.
	grace := a
	grace.OldPassword, grace.OldPasswordUntil = api.NewSecret("old"), t0.Add(time.Hour)
	err = CheckRotate(grace, api.Operation{}, false)
	if !errors.Is(err, api.ErrConflict) {
		t.Fatalf("rotate during grace: %v", err)
	}
	wantIn(t, err.Error(), "grace period of its previous rotation (the old password is accepted until 2026-12-07T11:00:00Z); end it first with: cacheplane addons-password-rotate --app b --finish")
	if err := CheckFinish(grace, api.Operation{}, false); err != nil {
		t.Fatalf("finish during grace: %v", err)
	}
	if err := CheckFinish(grace, plan, true); err != nil {
		t.Fatalf("finish during grace behind a plan change: %v", err)
	}
	retire := retireOp(f, "b-1", 0)
	if err := CheckFinish(grace, retire, true); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("finish while retiring: %v", err)
	}
	wantIn(t, CheckRotate(grace, retire, true).Error(), "removing the old password of its previous rotation")
	// The check steps are stuck when they wait too long.
	op := rotateOp(f, "b-1", 1)
	op.Steps[1].StartedAt = t0.Add(-time.Hour)
	if s := Stuck(op, t0, DefaultLimits()); s == "" {
		t.Fatal("a check step waiting an hour is not stuck")
	}
}

func TestPlanRetire(t *testing.T) {
	old := api.NewSecret("old")
	grace := func(id string, until time.Time) api.Addon {
		return api.Addon{ID: id, App: "a-" + id, Status: api.AddonRunning, Password: api.NewSecret("new"), OldPassword: old, OldPasswordUntil: until}
	}
	heal := api.Operation{ID: "op-h", AddonID: "due-busy", Kind: api.OpReplaceMember, State: api.OpRunning}
	addons := []api.Addon{
		grace("due", t0),
		grace("due-long-ago", t0.Add(-48*time.Hour)),
		grace("not-due", t0.Add(time.Second)),
		grace("due-busy", t0.Add(-time.Minute)),
		{ID: "never-rotated", Status: api.AddonRunning, Password: api.NewSecret("p")},
		{ID: "publishing", Status: api.AddonRunning, Password: api.NewSecret("p"), OldPassword: old}, // grace not recorded yet
		func() api.Addon { a := grace("removing", t0.Add(-time.Hour)); a.Status = api.AddonRemoving; return a }(),
	}
	tests := []struct {
		name   string
		active map[string]api.Operation
		now    time.Time
		want   []string
	}{
		{"due at the deadline, never before", nil, t0, []string{"due", "due-long-ago", "due-busy"}},
		{"another active operation: the retire waits for it", map[string]api.Operation{"due-busy": heal}, t0, []string{"due", "due-long-ago"}},
		{"a second later", map[string]api.Operation{"due-busy": heal}, t0.Add(time.Second), []string{"due", "due-long-ago", "not-due"}},
		{"a minute early", nil, t0.Add(-2 * time.Minute), []string{"due-long-ago"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, op := range PlanRetire(addons, tc.active, tc.now) {
				got = append(got, op.AddonID)
				if !IsRetire(op) || op.Kind != api.OpRotatePassword || op.State != api.OpRunning || op.ID != "" || op.App != "a-"+op.AddonID || len(op.Steps) != 2 {
					t.Errorf("retire op %+v", op)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("retire %v, want %v", got, tc.want)
			}
		})
	}
	for _, a := range addons {
		if RetireDue(a, t0) != slices.Contains([]string{"due", "due-long-ago", "due-busy", "removing"}, a.ID) {
			t.Errorf("RetireDue(%s) = %v", a.ID, RetireDue(a, t0))
		}
	}
}

// TestHealingDuringGrace: an addon in a rotation's grace period (old
// password accepted, no active operation) is healed like any other.
func TestHealingDuringGrace(t *testing.T) {
	f := newFixture()
	rotateOp(f, "b-1", 5) // the rotation is over, its grace period runs
	h := f.hosts["h2"]
	h.State, h.DownSince = api.HostDown, t0
	f.hosts["h2"] = h
	a := f.addons["b-1"]
	if a.OldPassword.IsZero() || a.OldPasswordUntil.IsZero() {
		t.Fatalf("fixture not in grace: %+v", a.Redacted())
	}
	fl := Fleet{Hosts: f.hosts, Addons: []api.Addon{a}, Plans: api.DefaultPlans(), Active: map[string]api.Operation{}, Now: t0.Add(10 * time.Minute)}
	got := PlanHealing(fl, HealConfig{HealAfter: 30 * time.Second, MaxParallel: 4})
	if len(got.Create) != 1 || got.Create[0].AddonID != "b-1" || got.Create[0].Kind != api.OpReplaceMember {
		t.Fatalf("healing in grace: %+v", got)
	}
	// Once due, the retire yields to the replacement.
	active := map[string]api.Operation{"b-1": got.Create[0]}
	if r := PlanRetire([]api.Addon{a}, active, t0.Add(2*time.Hour)); len(r) != 0 {
		t.Fatalf("retire beside a replacement: %+v", r)
	}
}
