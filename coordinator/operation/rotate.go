package operation

import (
	"fmt"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Steps of a rotate-password operation (api.OpRotatePassword).
const (
	StepRecordPassword = "record next password"
	StepAcceptBoth     = "accept both passwords"
	StepPublish        = "publish new URL"
	StepGrace          = "grace period"
	StepRetireOldPass  = "retire old password"
	StepRemoveOldPass  = "remove old password"
)

// RotateSteps is the step list of a rotate-password operation: the
// coordinator records the next password with the operation (its first
// step done), every redis member's default user is made to accept it
// beside the current one (the agents, live), the URL changes to it, the
// app hook runs, and the grace period is recorded with the addon
// (api.Addon.OldPasswordUntil): the operation ends there, so the addon's
// other operations (healing first) never wait on a grace period. The
// assignments keep carrying the old password until it is retired.
func RotateSteps() []api.Step {
	return steps(StepRecordPassword, StepAcceptBoth, StepPublish, StepNotifyApp, StepGrace)
}

// RetireSteps is the step list of a retire operation (kind
// api.OpRotatePassword, RetireChange): the old password leaves the addon
// (the agents drop it from every member), then every redis member is
// checked to refuse it. PlanRetire starts one when the grace period is
// over or was ended with --finish.
func RetireSteps() []api.Step {
	return steps(StepRetireOldPass, StepRemoveOldPass)
}

// RetireChange is the Change of a retire operation.
const RetireChange = "retire the old password: its grace period is over"

// IsRetire reports whether op is a retire operation (RetireSteps), not a
// rotation.
func IsRetire(op api.Operation) bool {
	return op.Kind == api.OpRotatePassword && len(op.Steps) > 0 && op.Steps[0].Name == StepRetireOldPass
}

// RetireDue reports whether a's old password is due to be retired at now:
// its grace period, recorded by its rotation, is over (or was ended by
// --finish).
func RetireDue(a api.Addon, now time.Time) bool {
	return !a.OldPassword.IsZero() && !a.OldPasswordUntil.IsZero() && !now.Before(a.OldPasswordUntil)
}

// PlanRetire is the retire operations to start at now (IDs left to the
// caller): one for each addon whose old password is due and that has no
// active operation. An addon with one waits for it: its old password is
// accepted a little longer, never less.
func PlanRetire(addons []api.Addon, active map[string]api.Operation, now time.Time) []api.Operation {
	var out []api.Operation
	for _, a := range addons {
		if !RetireDue(a, now) || a.Status == api.AddonRemoving {
			continue
		}
		if _, busy := active[a.ID]; busy {
			continue
		}
		out = append(out, api.Operation{AddonID: a.ID, App: a.App, Kind: api.OpRotatePassword, State: api.OpRunning,
			Steps: RetireSteps(), Change: RetireChange, CreatedAt: now, UpdatedAt: now})
	}
	return out
}

// RotateChange is what the app hook is told a rotation changed.
const RotateChange = "password rotated: the old URL works until the grace period ends"

// AcceptedPasswords are the passwords every redis member's default user
// must accept, and nothing else: the URL's, plus a rotation's next
// password before it is published, plus the old one during its grace
// period. The agents apply exactly this set (redisctl.ApplyACL), also to a
// member placed or restarted during a rotation.
func AcceptedPasswords(a api.Addon) []api.Secret {
	out := []api.Secret{a.Password}
	for _, p := range []api.Secret{a.NextPassword, a.OldPassword} {
		if !p.IsZero() && !containsSecret(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func containsSecret(xs []api.Secret, x api.Secret) bool {
	for _, y := range xs {
		if y.Equal(x) {
			return true
		}
	}
	return false
}

// CheckPasswords checks that the default user of each redis member at
// Addrs holds exactly AcceptedPasswords of the addon (the engine compares
// SHA-256 digests from ACL GETUSER, as the fleet's user): Want names them
// for the operator, never their values.
type CheckPasswords struct {
	Addrs []string
	Want  string
}

func (CheckPasswords) Mutates() bool { return false }
func (a CheckPasswords) String() string {
	return "check passwords (" + a.Want + ") on " + strings.Join(a.Addrs, ", ")
}

// RotateEffect is a rotation's change to the addon's passwords, committed
// with its step (coordinator command password-rotate-step). Until is
// RotateGrace's end of the grace period.
type RotateEffect struct {
	Change RotateChangeKind
	Until  time.Time
}

// RotateChangeKind says which change.
type RotateChangeKind string

// Rotation changes.
const (
	// RotatePublish: the next password becomes the URL's, the current one
	// the old one (still accepted).
	RotatePublish RotateChangeKind = "publish"
	// RotateGrace: the old password is accepted until RotateEffect.Until
	// (api.Addon.OldPasswordUntil); the rotation ends.
	RotateGrace RotateChangeKind = "grace"
	// RotateRetire: the old password is no longer accepted.
	RotateRetire RotateChangeKind = "retire"
	// RotateAbort: a cancelled rotation's next password is dropped.
	RotateAbort RotateChangeKind = "abort"
)

func (RotateEffect) effect() {}

// rotate decides a rotate-password operation's current step.
func rotate(v View, op api.Operation, step api.Step) Decision {
	if !v.Exists {
		return fail("the addon no longer exists")
	}
	a := v.Addon
	switch step.Name {
	case StepRecordPassword:
		return advance("next password recorded")
	case StepAcceptBoth:
		if a.NextPassword.IsZero() {
			// Published already (a leader died between the entry and the
			// step's record): nothing left to check here.
			return advance("the next password is the URL's already")
		}
		return checkPasswords(v, "the current and the next password", "every redis member accepts both passwords")
	case StepPublish:
		if a.NextPassword.IsZero() {
			return advance("the URL carries the new password")
		}
		return Decision{Kind: Advance, Detail: "the URL carries the new password; the old one is still accepted",
			Effect: RotateEffect{Change: RotatePublish}}
	case StepNotifyApp:
		return NotifyStep(v, op, step)
	case StepGrace:
		if a.OldPassword.IsZero() {
			return advance("the old password is removed already")
		}
		if !a.OldPasswordUntil.IsZero() {
			return advance(fmt.Sprintf("the old password is accepted until %s", a.OldPasswordUntil.UTC().Format(time.RFC3339)))
		}
		if op.Rotate.FinishRequested {
			return Decision{Kind: Advance, Detail: "ended by --finish: the old password is retired next",
				Effect: RotateEffect{Change: RotateGrace, Until: v.Now}}
		}
		until := GraceUntil(op, step, v.Now)
		return Decision{Kind: Advance, Effect: RotateEffect{Change: RotateGrace, Until: until},
			Detail: fmt.Sprintf("the old password is accepted until %s (the addon's other operations run meanwhile), or: cacheplane addons-password-rotate --app %s --finish",
				until.UTC().Format(time.RFC3339), op.App)}
	case StepRetireOldPass:
		if a.OldPassword.IsZero() {
			return advance("the old password is removed already")
		}
		return Decision{Kind: Advance, Detail: "grace period over: the old password is being removed from every redis member",
			Effect: RotateEffect{Change: RotateRetire}}
	case StepRemoveOldPass:
		return checkPasswords(v, "the new password only", "the old password is refused by every redis member")
	}
	return fail("unknown step " + step.Name)
}

// GraceUntil is when op's grace step ends: its start (now, before it is
// recorded) plus the rotation's grace.
func GraceUntil(op api.Operation, step api.Step, now time.Time) time.Time {
	start := step.StartedAt
	if start.IsZero() {
		start = now
	}
	return start.Add(time.Duration(op.Rotate.Grace))
}

// checkPasswords checks the accepted passwords on every redis member
// that serves. A business member on a down host is left out: its
// assignment carries the passwords and its agent applies them when it
// returns (a starter's only node is waited for).
func checkPasswords(v View, want, done string) Decision {
	var addrs, skipped, waiting []string
	for _, m := range v.Addon.Members {
		if m.Role != api.RoleRedis {
			continue
		}
		o := v.Observed[m.ID]
		switch {
		case v.Hosts[m.HostID].State == api.HostDown && v.Plan.Kind == api.PlanBusiness:
			skipped = append(skipped, m.ID)
		case v.Hosts[m.HostID].State == api.HostDown:
			waiting = append(waiting, fmt.Sprintf("%s (host %s is down)", m.ID, m.HostID))
		case !o.alive():
			waiting = append(waiting, fmt.Sprintf("%s (%s)", m.ID, describe(o)))
		default:
			addrs = append(addrs, addr(v, m))
		}
	}
	if len(waiting) > 0 {
		return wait("waiting for " + strings.Join(waiting, ", ") + " to serve, to check its passwords")
	}
	if len(addrs) == 0 {
		return wait("no redis member serves: waiting for one, to check its passwords")
	}
	if len(skipped) > 0 {
		done += "; " + strings.Join(skipped, ", ") + " on a down host: its agent applies them when it returns"
	}
	return Decision{Kind: Run, Action: CheckPasswords{Addrs: addrs, Want: want}, Then: Advance, Detail: done}
}

// CheckRotate is the pre-flight check of addons-password-rotate (start):
// the addon must be running with no other operation and out of the grace
// period of its previous rotation (a second rotation during it is
// refused: finish the first one, then rotate again).
func CheckRotate(a api.Addon, active api.Operation, busy bool) error {
	switch {
	case busy && IsRetire(active):
		return fmt.Errorf("%w: addon %s is removing the old password of its previous rotation (operation %s); rotate again once it is done (cacheplane operations --addon %s)",
			api.ErrConflict, a.ID, active.ID, a.ID)
	case busy && active.Kind == api.OpRotatePassword:
		return fmt.Errorf("%w: addon %s is already rotating its password (operation %s); end its grace period with: cacheplane addons-password-rotate --app %s --finish",
			api.ErrConflict, a.ID, active.ID, a.App)
	case busy:
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress; wait for it to finish (cacheplane operations --addon %s) or cancel it (cacheplane operations-cancel %s)",
			api.ErrConflict, a.ID, active.ID, active.Kind, a.ID, active.ID)
	case a.Status != api.AddonRunning:
		return fmt.Errorf("%w: addon %s is %s; its password can be rotated once it is running", api.ErrConflict, a.ID, a.Status)
	case !a.OldPassword.IsZero() && !a.OldPasswordUntil.IsZero():
		return fmt.Errorf("%w: addon %s is in the grace period of its previous rotation (the old password is accepted until %s); end it first with: cacheplane addons-password-rotate --app %s --finish, then rotate again",
			api.ErrConflict, a.ID, a.OldPasswordUntil.UTC().Format(time.RFC3339), a.App)
	case !a.NextPassword.IsZero() || !a.OldPassword.IsZero():
		return fmt.Errorf("%w: addon %s still holds a rotation's password (an interrupted rotation): wait a moment and retry", api.ErrConflict, a.ID)
	}
	return nil
}

// CheckFinish is the pre-flight check of addons-password-rotate --finish:
// the addon is rotating its password (its active operation is a rotation)
// or in a rotation's grace period.
func CheckFinish(a api.Addon, active api.Operation, busy bool) error {
	switch {
	case busy && IsRetire(active):
		return fmt.Errorf("%w: addon %s is removing its old password already (operation %s); follow it with: cacheplane operations --addon %s",
			api.ErrConflict, a.ID, active.ID, a.ID)
	case busy && active.Kind == api.OpRotatePassword, !a.OldPassword.IsZero():
		return nil
	}
	return fmt.Errorf("%w: addon %s is not rotating its password; nothing to finish (start one with: cacheplane addons-password-rotate --app %s)",
		api.ErrConflict, a.ID, a.App)
}

// rotatePublished reports whether a rotation has published its new
// password: from then on it cannot be cancelled, only finished.
func rotatePublished(op api.Operation) bool {
	for _, s := range op.Steps {
		if s.Name == StepPublish {
			return s.State == api.OpDone
		}
	}
	return false
}
