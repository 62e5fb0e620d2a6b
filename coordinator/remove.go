package coordinator

import (
	"context"
	"fmt"
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

// removeController drives remove operations: the addon, marked removing,
// has left every agent's assignments, so agents destroy its members and
// their data; the controller waits until each host has reported after the
// step began without the member (a down host counts as done: its agent
// removes unassigned members when it returns), then forgets the addon.
type removeController struct {
	store *Store
	obs   *observed
	stats *statsHistory
	log   *slog.Logger
	now   func() time.Time
}

func (c *removeController) Name() string { return "remove" }

func (c *removeController) Run(ctx context.Context) {
	runPasses(ctx, c.store.FSM(), c.obs, time.Second, func() {
		for _, op := range c.pending() {
			if err := c.advance(ctx, op); err != nil && ctx.Err() == nil {
				c.log.Warn("remove step failed; will retry", "op", op.op.ID, "addon", op.op.AddonID, "err", err)
			}
		}
	})
}

type removal struct {
	op      api.Operation
	members []api.Member
	hosts   map[string]api.Host
}

func (c *removeController) pending() []removal {
	var out []removal
	c.store.FSM().Read(func(s *State, _ uint64) {
		for _, op := range s.activeOps(api.OpRemove) {
			r := removal{op: op, hosts: map[string]api.Host{}}
			if a, ok := s.Addons[op.AddonID]; ok {
				r.members = append(r.members, a.Members...)
			}
			for _, m := range r.members {
				r.hosts[m.HostID] = s.Hosts[m.HostID]
			}
			out = append(out, r)
		}
	})
	return out
}

// advance commits the next step of a removal, or records why it waits.
func (c *removeController) advance(ctx context.Context, r removal) error {
	op := r.op
	now := c.now().UTC()
	i := op.CurrentStep()
	if i >= len(op.Steps) {
		op.State = api.OpDone
		op.UpdatedAt = now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
		return err
	}
	step := &op.Steps[i]
	if step.StartedAt.IsZero() {
		step.StartedAt = now
		step.State = api.OpRunning
		op.State = api.OpRunning
		op.UpdatedAt = now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
		return err
	}
	detail := ""
	switch step.Name {
	case StepStopMembers, StepDeleteData:
		if len(r.members) == 0 {
			detail = "no members were placed"
			break
		}
		var waiting []string
		for _, m := range r.members {
			if r.hosts[m.HostID].State == api.HostDown {
				continue
			}
			if !c.obs.hostReported(m.HostID, step.StartedAt) {
				waiting = append(waiting, m.ID+" on "+m.HostID)
				continue
			}
			if ms, still := c.obs.member(m.HostID, m.ID); still && ms.State != api.MemberStopped {
				waiting = append(waiting, m.ID+" on "+m.HostID)
			}
		}
		if len(waiting) > 0 {
			return nil // re-checked at the next heartbeat
		}
		detail = fmt.Sprintf("%d members gone", len(r.members))
		if step.Name == StepDeleteData {
			detail = "data directories deleted with their members"
		}
	case StepForget:
		if _, err := c.store.Apply(ctx, CmdAddonDelete, AddonDeleteCmd{AddonID: op.AddonID, At: now}); err != nil {
			return err
		}
		for _, m := range r.members {
			c.stats.drop(m.ID)
		}
	}
	step.State = api.OpDone
	step.FinishedAt = now
	step.Detail = detail
	op.State = api.OpRunning
	if i == len(op.Steps)-1 {
		op.State = api.OpDone
		c.log.Info("addon removed", "addon", op.AddonID)
	}
	op.UpdatedAt = now
	_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
	return err
}
