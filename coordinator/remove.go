package coordinator

import (
	"context"
	"log/slog"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Removal steps, in order. Each is committed as done before the next starts.
const (
	StepStopMembers = "stop members"
	StepDeleteData  = "delete data"
	StepForget      = "forget addon"
)

// removeSteps is the step list of a remove operation.
func removeSteps() []api.Step {
	return []api.Step{{Name: StepStopMembers, State: api.OpPending}, {Name: StepDeleteData, State: api.OpPending}, {Name: StepForget, State: api.OpPending}}
}

// removeController finishes remove operations of addons that have no placed
// members (nothing runs anywhere). Addons with members are left to the agent
// controllers, which stop containers first.
type removeController struct {
	store *Store
	log   *slog.Logger
	now   func() time.Time
}

func (c *removeController) Name() string { return "remove" }

func (c *removeController) Run(ctx context.Context) {
	for {
		ch := c.store.FSM().Changed()
		for _, op := range c.pending() {
			if err := c.advance(ctx, op); err != nil && ctx.Err() == nil {
				c.log.Warn("remove step failed; will retry", "op", op.ID, "addon", op.AddonID, "err", err)
			}
		}
		if !waitChange(ctx, ch, 5*time.Second) {
			return
		}
	}
}

// pending returns remove operations whose addon has no members.
func (c *removeController) pending() []api.Operation {
	var out []api.Operation
	c.store.FSM().Read(func(s *State, _ uint64) {
		for _, op := range sortedOperations(s.Operations) {
			if op.Kind != api.OpRemove || (op.State != api.OpPending && op.State != api.OpRunning) {
				continue
			}
			if a, ok := s.Addons[op.AddonID]; ok && len(a.Members) > 0 {
				continue
			}
			op.Steps = append([]api.Step(nil), op.Steps...)
			out = append(out, op)
		}
	})
	return out
}

// advance commits the next step of op.
func (c *removeController) advance(ctx context.Context, op api.Operation) error {
	now := c.now().UTC()
	i := op.CurrentStep()
	if i >= len(op.Steps) {
		op.State = api.OpDone
		op.UpdatedAt = now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
		return err
	}
	step := &op.Steps[i]
	if step.Name == StepForget {
		if _, err := c.store.Apply(ctx, CmdAddonDelete, AddonDeleteCmd{AddonID: op.AddonID, At: now}); err != nil {
			return err
		}
	}
	step.State = api.OpDone
	if step.StartedAt.IsZero() {
		step.StartedAt = now
	}
	step.FinishedAt = now
	if step.Name != StepForget {
		step.Detail = "no members were placed"
	}
	op.State = api.OpRunning
	if i == len(op.Steps)-1 {
		op.State = api.OpDone
	}
	op.UpdatedAt = now
	_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
	return err
}
