package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/redisctl"
)

// measureTimeout bounds reading the primary's used_memory for a plan
// change.
const measureTimeout = 3 * time.Second

// handlePlanChange answers addons-upgrade (POST /v1/addons/{id}/plan): the
// pre-flight checks (operation.CheckPlanChange: the cheap ones first, then
// with used_memory read live from the addon's primary), then one Raft
// entry records the new plan with its plan-change operation. The agents
// resize the redis members live from their next assignment; the engine
// checks the resize and tells the app.
func (s *Server) handlePlanChange(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := api.ValidateMemberID("addon", id); err != nil {
		return err
	}
	var req api.PlanChangeRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	var (
		in          operation.PlanChangeRequest
		ok          bool
		primaryAddr string
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		in.Addon, ok = st.Addons[id]
		if !ok || in.Addon.App != req.App {
			ok = false
			return
		}
		in.Addon.Members = append([]api.Member(nil), in.Addon.Members...)
		in.Plans = append([]api.Plan(nil), st.Plans...)
		in.Active, in.Busy = st.activeOperation(id)
		in.Fleet = schedulerState(st)
		if p, has := operation.Primary(in.Addon); has {
			primaryAddr = memberAddr(st, p)
		}
	})
	if !ok {
		return fmt.Errorf("%w: app %s has no addon %s (see: cacheplane addons --app %s)", api.ErrNotFound, req.App, id, req.App)
	}
	in.To = req.Plan
	if _, _, err := operation.CheckPlanChange(in); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), measureTimeout)
	used, err := redisctl.UsedMemory(ctx, primaryAddr, in.Addon.FleetPassword.Reveal())
	cancel()
	if err != nil {
		return fmt.Errorf("%w: cannot read how much data addon %s stores from its primary (%v); nothing was changed: retry once it answers",
			api.ErrUnreachable, id, err)
	}
	in.UsedBytes, in.Measured = used, true
	from, to, err := operation.CheckPlanChange(in)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		opID, err := newOperationID()
		if err != nil {
			return err
		}
		now := s.now().UTC()
		op := api.Operation{ID: opID, AddonID: id, App: req.App, Kind: api.OpPlanChange, State: api.OpRunning,
			Steps: operation.PlanChangeSteps(from.Kind, to.Kind), Change: operation.PlanChange(from.Name, to.Name), CreatedAt: now, UpdatedAt: now}
		op.Steps[0] = api.Step{Name: operation.StepRecordPlan, State: api.OpDone, StartedAt: now, FinishedAt: now,
			Detail: fmt.Sprintf("%s -> %s recorded (%s stored now); the agents resize the redis members live", from.Name, to.Name, mbOf(used))}
		res, err := s.store.Apply(r.Context(), CmdAddonPlanChange, AddonPlanChangeCmd{AddonID: id, App: req.App, Plan: to.Name, Operation: op, At: now})
		if errors.Is(err, errIDTaken) && attempt < 10 {
			continue
		}
		if err != nil {
			return err
		}
		a := res.(api.Addon)
		s.log.Info("plan change started", "addon", id, "app", req.App, "from", from.Name, "to", to.Name, "op", op.ID, "used_bytes", used)
		how := "live, without a restart"
		switch {
		case from.Kind == api.PlanStarter && to.Kind == api.PlanBusiness:
			how = "live: a replica, three sentinels and a second haproxy join it, its URL stays"
		case from.Kind == api.PlanBusiness && to.Kind == api.PlanStarter:
			how = "live: the primary and the entrypoint stay, the other members go, its URL stays"
		}
		writeJSON(w, http.StatusAccepted, api.PlanChangeResponse{Addon: a.Redacted(), Operation: op,
			Message: fmt.Sprintf("Addon %s is moving from %s to %s %s (operation %s); follow it with: cacheplane operations --addon %s",
				id, from.Name, to.Name, how, op.ID, id)})
		return nil
	}
}

func mbOf(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
