package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
)

// Password rotation (addons-password-rotate, api.OpRotatePassword): the
// leader draws the next password (NewPassword: crypto/rand) and records
// it with the operation (command 34); the agents make every redis member's
// default user accept it beside the URL's, live (agent/fleetauth.go:
// api.Assignment.OtherPasswords); the engine checks each member holds
// exactly both, publishes it (command 35: the URL's password, the old one
// still accepted), runs the app hook and records the grace period with the
// addon (command 35: api.Addon.OldPasswordUntil); the rotation ends there,
// so healing and the addon's other operations never wait on a grace
// period, and the assignments keep carrying the old password. When the
// grace period is over (or --finish, command 36, ended it) and the addon
// has no other operation, the engine starts a retire operation
// (operation.PlanRetire, command 12 operation-create): it retires the old
// password (command 35) and checks every member refuses it. The decisions
// are operation/rotate.go's.
// Replication, Sentinel and HAProxy log in as the fleet's user
// (redisctl.FleetUser): a rotation never touches them.

// PasswordRotateCmd starts a rotation: the addon's next password (picked
// by the leader) with its rotate-password operation. Refused unless the
// addon is running with no other active operation.
type PasswordRotateCmd struct {
	AddonID      string        `json:"addon_id"`
	App          string        `json:"app"`
	NextPassword api.Secret    `json:"next_password"`
	Operation    api.Operation `json:"operation"`
	At           time.Time     `json:"at"`
}

// PasswordRotateStepCmd is a rotation step's change to the addon's
// passwords (operation.RotateChangeKind), committed with the step. Each
// change is idempotent: a retried entry finds it done and changes only
// the operation.
type PasswordRotateStepCmd struct {
	AddonID string                     `json:"addon_id"`
	Change  operation.RotateChangeKind `json:"change"`
	// Until is RotateGrace's end of the grace period.
	Until     time.Time     `json:"until,omitzero"`
	Operation api.Operation `json:"operation"`
	At        time.Time     `json:"at"`
}

// PasswordRotateFinishCmd ends a rotation's grace period now
// (addons-password-rotate --finish): the rotation OperationID, while it
// runs, records none (FinishRequested), and addon AddonID's recorded one
// ends At; the engine retires the old password as soon as the addon has no
// other operation. Either may be empty, not both.
type PasswordRotateFinishCmd struct {
	OperationID string    `json:"operation_id,omitempty"`
	AddonID     string    `json:"addon_id,omitempty"`
	At          time.Time `json:"at"`
}

func (f *FSM) applyPasswordRotate(c PasswordRotateCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok || (c.App != "" && a.App != c.App) {
		return fmt.Errorf("%w: app %s has no addon %s", api.ErrNotFound, c.App, c.AddonID)
	}
	active, busy := f.activeOperation(a.ID)
	if err := operation.CheckRotate(a, active, busy); err != nil {
		return err
	}
	if c.NextPassword.IsZero() || c.NextPassword.Equal(a.Password) || c.NextPassword.Equal(a.FleetPassword) {
		return api.Invalidf("rotation of addon %s: the next password is empty or not new", a.ID)
	}
	if c.Operation.Kind != api.OpRotatePassword {
		return api.Invalidf("rotation of addon %s: operation kind %s", a.ID, c.Operation.Kind)
	}
	if _, ok := f.state.Operations[c.Operation.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, c.Operation.ID)
	}
	a.NextPassword = c.NextPassword
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return c.Operation
}

func (f *FSM) applyPasswordRotateStep(c PasswordRotateStepCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if err := f.checkStep(c.Operation); err != nil {
		return err
	}
	switch c.Change {
	case operation.RotatePublish:
		if !a.NextPassword.IsZero() {
			if a.SpecPassword.IsZero() {
				a.SpecPassword = a.Password
			}
			a.OldPassword, a.Password, a.NextPassword = a.Password, a.NextPassword, api.Secret{}
			a.OldPasswordUntil = time.Time{}
		}
	case operation.RotateGrace:
		if !a.OldPassword.IsZero() && a.OldPasswordUntil.IsZero() {
			a.OldPasswordUntil = c.Until
		}
	case operation.RotateRetire:
		a.OldPassword, a.OldPasswordUntil = api.Secret{}, time.Time{}
	case operation.RotateAbort:
		a.NextPassword = api.Secret{}
	default:
		return api.Invalidf("unknown rotation change %q", c.Change)
	}
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return nil
}

func (f *FSM) applyPasswordRotateFinish(c PasswordRotateFinishCmd) any {
	if c.OperationID == "" && c.AddonID == "" {
		return api.Invalidf("password rotation finish: no operation and no addon")
	}
	var op api.Operation
	if c.OperationID != "" {
		var ok bool
		op, ok = f.state.Operations[c.OperationID]
		if !ok || op.Kind != api.OpRotatePassword {
			return fmt.Errorf("%w: no password rotation %s", api.ErrNotFound, c.OperationID)
		}
		if op.State.Finished() {
			return fmt.Errorf("%w: operation %s is already %s", api.ErrConflict, op.ID, op.State)
		}
	}
	var a api.Addon
	if c.AddonID != "" {
		var ok bool
		if a, ok = f.state.Addons[c.AddonID]; !ok {
			return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
		}
		if c.OperationID == "" && a.OldPassword.IsZero() {
			return fmt.Errorf("%w: addon %s is not in a password rotation's grace period", api.ErrConflict, a.ID)
		}
	}
	if c.OperationID != "" {
		op.Steps = append([]api.Step(nil), op.Steps...)
		op.Rotate.FinishRequested = true
		op.UpdatedAt = c.At
		f.state.putOp(op)
	}
	if c.AddonID != "" && !a.OldPassword.IsZero() && !a.OldPasswordUntil.IsZero() && c.At.Before(a.OldPasswordUntil) {
		a.OldPasswordUntil = c.At
		a.UpdatedAt = c.At
		f.state.Addons[a.ID] = a
	}
	return op
}

// otherPasswords are the passwords a's redis members accept beside its
// URL's (api.Assignment.OtherPasswords).
func otherPasswords(a api.Addon) []api.Secret {
	return operation.AcceptedPasswords(a)[1:]
}

// handleRotatePassword answers addons-password-rotate (POST
// /v1/addons/{id}/password): starts a rotation (409 while one or another
// operation runs), or with finish ends the grace period of the one
// running. Nothing it answers or logs holds a password: the new URL is
// read with env.
func (s *Server) handleRotatePassword(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := api.ValidateMemberID("addon", id); err != nil {
		return err
	}
	var req api.PasswordRotateRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	var (
		a      api.Addon
		ok     bool
		active api.Operation
		busy   bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		a, ok = st.Addons[id]
		active, busy = st.activeOperation(id)
	})
	if !ok || a.App != req.App {
		return fmt.Errorf("%w: app %s has no addon %s (see: cacheplane addons --app %s)", api.ErrNotFound, req.App, id, req.App)
	}
	now := s.now().UTC()
	if req.Finish {
		if err := operation.CheckFinish(a, active, busy); err != nil {
			return err
		}
		c := PasswordRotateFinishCmd{AddonID: id, At: now}
		if busy && active.Kind == api.OpRotatePassword {
			c.OperationID = active.ID
		}
		res, err := s.store.Apply(r.Context(), CmdPasswordRotateFinish, c)
		if err != nil {
			return err
		}
		op := res.(api.Operation)
		s.log.Info("password rotation finish asked", "addon", id, "app", req.App, "op", op.ID)
		msg := fmt.Sprintf("The grace period of addon %s ends now: its old password is being removed from every member; follow it with: cacheplane operations --addon %s", id, id)
		if busy && active.Kind != api.OpRotatePassword {
			msg = fmt.Sprintf("The grace period of addon %s ends now: its old password is removed from every member once operation %s (%s) is done; follow it with: cacheplane operations --addon %s",
				id, active.ID, active.Kind, id)
		}
		writeJSON(w, http.StatusAccepted, api.PasswordRotateResponse{Operation: op, Message: msg})
		return nil
	}
	if err := operation.CheckRotate(a, active, busy); err != nil {
		return err
	}
	grace := time.Duration(req.Grace)
	if grace == 0 {
		grace = time.Duration(s.cfg.PasswordGrace)
	}
	next, err := NewPassword()
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		opID, err := newOperationID()
		if err != nil {
			return err
		}
		op := api.Operation{ID: opID, AddonID: id, App: req.App, Kind: api.OpRotatePassword, State: api.OpRunning,
			Steps: operation.RotateSteps(), Change: operation.RotateChange, Rotate: api.PasswordRotation{Grace: api.Duration(grace)},
			CreatedAt: now, UpdatedAt: now}
		op.Steps[0] = api.Step{Name: operation.StepRecordPassword, State: api.OpDone, StartedAt: now, FinishedAt: now,
			Detail: "next password drawn and recorded; the agents make every redis member accept it beside the current one"}
		_, err = s.store.Apply(r.Context(), CmdPasswordRotate, PasswordRotateCmd{AddonID: id, App: req.App, NextPassword: next, Operation: op, At: now})
		if errors.Is(err, errIDTaken) && attempt < 10 {
			continue
		}
		if err != nil {
			return err
		}
		s.log.Info("password rotation started", "addon", id, "app", req.App, "op", op.ID, "grace", grace.String())
		writeJSON(w, http.StatusAccepted, api.PasswordRotateResponse{Operation: op,
			Message: fmt.Sprintf("Addon %s is rotating its password (operation %s): every member accepts both passwords, then `cacheplane env --app %s` prints the new URL and the app is told; "+
				"the old password keeps working for %s after that, or until: cacheplane addons-password-rotate --app %s --finish",
				id, op.ID, req.App, grace, req.App)})
		return nil
	}
}

// checkPasswords performs operation.CheckPasswords: each member's default
// user holds exactly the addon's accepted passwords.
func (e *engine) checkPasswords(ctx context.Context, v operation.View, a operation.CheckPasswords) error {
	var want []string
	for _, p := range operation.AcceptedPasswords(v.Addon) {
		want = append(want, p.Reveal())
	}
	var errs []error
	for _, addr := range a.Addrs {
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		errs = append(errs, e.act.checkPasswords(cctx, addr, v.Addon.FleetPassword.Reveal(), want))
		cancel()
	}
	return errors.Join(errs...)
}

// startRetires starts the retire operations due at now
// (operation.PlanRetire) and reports whether it started one. One refused
// (the addon got an operation meanwhile) is tried again at a later pass.
func (e *engine) startRetires(ctx context.Context, sn snapshot, now time.Time) bool {
	started := false
	var due []api.Addon // sorted only when some are due: a pass runs per heartbeat
	for _, a := range sn.addons {
		if operation.RetireDue(a, now) {
			due = append(due, a)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].ID < due[j].ID })
	for _, op := range operation.PlanRetire(due, sn.active, now) {
		id, err := newOperationID()
		if err != nil {
			e.log.Error("cannot draw an operation id", "err", err)
			return started
		}
		op.ID = id
		if _, err := e.store.Apply(ctx, CmdOperationCreate, OperationCreateCmd{Operation: op}); err != nil {
			if ctx.Err() == nil {
				e.log.Warn("cannot start retiring an old password; will retry", "addon", op.AddonID, "err", err)
			}
			continue
		}
		started = true
		e.log.Info("retiring an old password: its grace period is over", "addon", op.AddonID, "op", op.ID)
	}
	return started
}
