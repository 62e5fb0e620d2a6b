package coordinator

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestPasswordRotateCommands: commands 34-36 move the addon's passwords
// through a rotation (next, published with the old one kept, retired),
// refuse a second rotation with a clear 409, survive a snapshot round
// trip at each stage, and name no password in a refusal.
func TestPasswordRotateCommands(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	create := testAddon("shop", "shop-1", "")
	if res := f.Apply(entry(t, 1, CmdAddonCreate, create)); isErr(res) {
		t.Fatal(res)
	}
	a := f.state.Addons["shop-1"]
	a.Status = api.AddonRunning
	f.state.Addons["shop-1"] = a
	done := create.Operation
	done.State = api.OpDone
	f.state.putOp(done)
	orig := a.Password

	next := api.NewSecret(strings.Repeat("n", 64))
	op := api.Operation{ID: "rot-1", AddonID: "shop-1", App: "shop", Kind: api.OpRotatePassword, State: api.OpRunning,
		Steps: operation.RotateSteps(), Rotate: api.PasswordRotation{Grace: api.Duration(time.Hour)}, CreatedAt: t0, UpdatedAt: t0}
	if res := f.Apply(entry(t, 2, CmdPasswordRotate, PasswordRotateCmd{AddonID: "shop-1", App: "shop", NextPassword: next, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	a = f.state.Addons["shop-1"]
	if !a.NextPassword.Equal(next) || !a.Password.Equal(orig) || !a.OldPassword.IsZero() {
		t.Fatal("after command 34 the next password is recorded beside the URL's")
	}
	if got := otherPasswords(a); len(got) != 1 || !got[0].Equal(next) {
		t.Fatalf("assignments carry %d other passwords, want the next one", len(got))
	}
	assertRoundTrip(t, f)

	// A second rotation: 409, saying which and how to finish it, no secret.
	op2 := op
	op2.ID = "rot-2"
	res := f.Apply(entry(t, 3, CmdPasswordRotate, PasswordRotateCmd{AddonID: "shop-1", App: "shop", NextPassword: api.NewSecret(strings.Repeat("m", 64)), Operation: op2, At: t0}))
	err, _ := res.(error)
	if !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "already rotating") || !strings.Contains(err.Error(), "--finish") {
		t.Fatalf("second rotation: %v", res)
	}
	if strings.Contains(err.Error(), next.Reveal()) || strings.Contains(err.Error(), orig.Reveal()) {
		t.Fatal("a refusal names a password")
	}

	op.Steps[1].State, op.Steps[2].State = api.OpDone, api.OpDone
	if res := f.Apply(entry(t, 4, CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: "shop-1", Change: operation.RotatePublish, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	// Retried: changes nothing more.
	if res := f.Apply(entry(t, 5, CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: "shop-1", Change: operation.RotatePublish, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	a = f.state.Addons["shop-1"]
	if !a.Password.Equal(next) || !a.OldPassword.Equal(orig) || !a.NextPassword.IsZero() || !a.SpecPassword.Equal(orig) {
		t.Fatal("publish: the next password is the URL's, the old one kept, the spec password the original")
	}
	if !strings.Contains(RedisURL(a), next.Reveal()) {
		t.Fatal("the URL does not carry the new password")
	}
	assertRoundTrip(t, f)

	if res := f.Apply(entry(t, 6, CmdPasswordRotateFinish, PasswordRotateFinishCmd{OperationID: "rot-1", At: t0})); isErr(res) {
		t.Fatal(res)
	}
	if !f.state.Operations["rot-1"].Rotate.FinishRequested {
		t.Fatal("finish not recorded")
	}
	op = f.state.Operations["rot-1"]
	op.Steps = append([]api.Step(nil), op.Steps...)
	op.Steps[3].State, op.Steps[4].State = api.OpDone, api.OpDone
	if res := f.Apply(entry(t, 7, CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: "shop-1", Change: operation.RotateRetire, Operation: op, At: t0})); isErr(res) {
		t.Fatal(res)
	}
	a = f.state.Addons["shop-1"]
	if !a.OldPassword.IsZero() || len(otherPasswords(a)) != 0 || !a.SpecPassword.Equal(orig) {
		t.Fatal("retire: only the new password is accepted, the spec password stays")
	}
	op.Steps[5].State, op.State = api.OpDone, api.OpDone
	if res := f.Apply(entry(t, 8, CmdOperationUpdate, OperationUpdateCmd{Operation: op})); isErr(res) {
		t.Fatal(res)
	}
	if res := f.Apply(entry(t, 9, CmdPasswordRotateFinish, PasswordRotateFinishCmd{OperationID: "rot-1", At: t0})); !errors.Is(res.(error), api.ErrConflict) {
		t.Fatalf("finish of a finished rotation: %v", res)
	}
	assertRoundTrip(t, f)
	if f.state.Version != ProtocolBackups {
		t.Fatalf("state version %d", f.state.Version)
	}
	// A later rotation is accepted again; its spec password stays the first.
	op3 := op2
	op3.ID = "rot-3"
	if res := f.Apply(entry(t, 10, CmdPasswordRotate, PasswordRotateCmd{AddonID: "shop-1", App: "shop", NextPassword: api.NewSecret(strings.Repeat("m", 64)), Operation: op3, At: t0})); isErr(res) {
		t.Fatal(res)
	}
}

func isErr(res any) bool { _, ok := res.(error); return ok }
