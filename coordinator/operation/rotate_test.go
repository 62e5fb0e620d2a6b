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
	if done >= 5 { // retired
		a.OldPassword = api.Secret{}
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
		edit   func(f *fixture, op *api.Operation)
		kind   Kind
		effect RotateChangeKind
		addrs  []string // CheckPasswords'
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
		{name: "grace: waits until its end, says how to finish", addon: "b-1", done: 4, kind: Wait,
			edit:   func(_ *fixture, op *api.Operation) { op.Steps[4].StartedAt = t0.Add(-10 * time.Minute) },
			detail: "the old password is accepted until 2026-12-07T10:50:00Z, or: cacheplane addons-password-rotate --app b --finish"},
		{name: "grace: first look counts from now", addon: "b-1", done: 4, kind: Wait,
			detail: "accepted until 2026-12-07T11:00:00Z"},
		{name: "grace over", addon: "b-1", done: 4, kind: Advance, effect: RotateRetire,
			edit:   func(_ *fixture, op *api.Operation) { op.Steps[4].StartedAt = t0.Add(-time.Hour) },
			detail: "grace period over"},
		{name: "grace ended by --finish", addon: "b-1", done: 4, kind: Advance, effect: RotateRetire,
			edit:   func(_ *fixture, op *api.Operation) { op.Steps[4].StartedAt, op.Rotate.FinishRequested = t0, true },
			detail: "ended by --finish"},
		{name: "remove old: every member checked", addon: "b-1", done: 5, kind: Run,
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
			if tc.edit != nil {
				tc.edit(f, &op)
			}
			v := f.view(tc.addon)
			d := Next(v, op)
			if d.Kind != tc.kind {
				t.Fatalf("decision %v %q; want %v", d.Kind, d.Detail, tc.kind)
			}
			wantIn(t, d.Detail, tc.detail)
			var eff RotateChangeKind
			if e, ok := d.Effect.(RotateEffect); ok {
				eff = e.Change
			}
			if eff != tc.effect {
				t.Fatalf("effect %q, want %q", eff, tc.effect)
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
	// The grace step is never stuck; the check steps are.
	op := rotateOp(f, "b-1", 4)
	op.Steps[4].StartedAt = t0.Add(-23 * time.Hour)
	if s := Stuck(op, t0, DefaultLimits()); s != "" {
		t.Fatalf("grace step stuck: %s", s)
	}
	op = rotateOp(f, "b-1", 1)
	op.Steps[1].StartedAt = t0.Add(-time.Hour)
	if s := Stuck(op, t0, DefaultLimits()); s == "" {
		t.Fatal("a check step waiting an hour is not stuck")
	}
}
