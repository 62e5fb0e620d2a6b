package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Engine upgrades, I/O half: the admin route that starts one (pre-flight
// in operation.CheckUpgrade, with the primary read live), the two Raft
// commands (the upgrade's start, and each step's change to the members),
// and the engine's upgrade actions (save, check a member on the new
// version). The steps are decided in operation/upgrade.go.

// Upgrade figures.
const (
	// upgradeProbeTimeout bounds reading the primary before an upgrade.
	upgradeProbeTimeout = 3 * time.Second
	// saveTimeout bounds a BGSAVE waited for (a few GB take seconds to a
	// minute on a slow disk).
	saveTimeout = 5 * time.Minute
)

// handleEngineUpgrade answers addons-upgrade-engine (POST
// /v1/addons/{id}/engine): the cheap refusals first (rules, same version,
// busy, not running), then the primary is read (does it answer, how many
// keys it holds) for the data check, then one Raft entry starts the
// upgrade operation. Nothing restarts until the engine's first step.
func (s *Server) handleEngineUpgrade(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := api.ValidateMemberID("addon", id); err != nil {
		return err
	}
	var req api.EngineUpgradeRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	var (
		in          operation.UpgradeRequest
		ok          bool
		primaryAddr string
		primaryID   string
	)
	s.store.FSM().Read(func(st *State, _ uint64) {
		in.Addon, ok = st.Addons[id]
		if !ok || in.Addon.App != req.App {
			ok = false
			return
		}
		in.Addon.Members = append([]api.Member(nil), in.Addon.Members...)
		in.Plans = append([]api.Plan(nil), st.Plans...)
		in.Engines = append([]api.EngineVersion(nil), st.Engines...)
		in.Active, in.Busy = st.activeOperation(id)
		if p, has := operation.Primary(in.Addon); has {
			primaryAddr, primaryID = memberAddr(st, p), p.ID
		}
	})
	if !ok {
		return fmt.Errorf("%w: app %s has no addon %s (see: cacheplane addons --app %s)", api.ErrNotFound, req.App, id, req.App)
	}
	in.To, in.MayDiscardData = req.To, req.MayDiscardData
	if _, err := operation.CheckUpgrade(in); err != nil {
		return err
	}
	keys := int64(-1)
	ctx, cancel := context.WithTimeout(r.Context(), upgradeProbeTimeout)
	node, err := redisctl.ReadNode(ctx, primaryAddr, in.Addon.FleetPassword.Reveal())
	cancel()
	in.Probed = true
	switch {
	case primaryAddr == "":
		in.ProbeErr = "no redis member is placed"
	case err != nil:
		in.ProbeErr = err.Error()
	default:
		keys = node.Keys
	}
	plan, err := operation.CheckUpgrade(in)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		opID, err := newOperationID()
		if err != nil {
			return err
		}
		now := s.now().UTC()
		op := api.Operation{ID: opID, AddonID: id, App: req.App, Kind: api.OpUpgrade, State: api.OpRunning,
			Steps: operation.UpgradeStepsOf(in.Addon, plan.Rolling, plan.From.Images[api.RoleHAProxy] != plan.To.Images[api.RoleHAProxy]), Change: operation.UpgradeChange(plan.From.Key(), plan.To.Key()),
			Upgrade: api.Upgrade{From: plan.From.Key(), To: plan.To.Key(), Engine: plan.To.Engine, Version: plan.To.Version,
				Rolling: plan.Rolling, MayDiscardData: req.MayDiscardData, Primary: primaryID, Keys: keys},
			CreatedAt: now, UpdatedAt: now}
		res, err := s.store.Apply(r.Context(), CmdAddonUpgrade, AddonUpgradeCmd{AddonID: id, App: req.App, Operation: op, At: now})
		if errors.Is(err, errIDTaken) && attempt < 10 {
			continue
		}
		if err != nil {
			return err
		}
		a := res.(api.Addon)
		how := "rolling"
		if !plan.Rolling {
			how = "not rolling"
		}
		s.log.Info("engine upgrade started", "addon", id, "app", req.App, "from", plan.From.Key(), "to", plan.To.Key(),
			"kind", plan.Kind, "rolling", plan.Rolling, "keys", keys, "may_discard_data", req.MayDiscardData, "op", op.ID)
		writeJSON(w, http.StatusAccepted, api.EngineUpgradeResponse{Addon: a.Redacted(), Operation: op,
			Message: fmt.Sprintf("Addon %s is moving from %s to %s (%s upgrade, %s): %s; operation %s, follow it with: cacheplane operations --addon %s",
				id, plan.From.Key(), plan.To.Key(), plan.Kind, how, plan.Downtime, op.ID, id)})
		return nil
	}
}

// applyAddonUpgrade records the upgrade operation (the checks the state
// alone decides; the leader checked the rules and the data).
func (f *FSM) applyAddonUpgrade(c AddonUpgradeCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok || (c.App != "" && a.App != c.App) {
		return fmt.Errorf("%w: app %s has no addon %s", api.ErrNotFound, c.App, c.AddonID)
	}
	if o, busy := f.activeOperation(a.ID); busy {
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress", api.ErrConflict, a.ID, o.ID, o.Kind)
	}
	if a.Status != api.AddonRunning {
		return fmt.Errorf("%w: addon %s is %s; its engine can be upgraded once it is running", api.ErrConflict, a.ID, a.Status)
	}
	u := c.Operation.Upgrade
	if c.Operation.Kind != api.OpUpgrade || u.Engine == "" {
		return api.Invalidf("an engine upgrade needs an upgrade operation with a target")
	}
	if !f.state.hasEngine(u.Engine, u.Version) {
		return api.Invalidf("unknown engine version %s-%s", u.Engine, u.Version)
	}
	if _, ok := f.state.Operations[c.Operation.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, c.Operation.ID)
	}
	a.Status = api.AddonUpdating
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return a
}

// hasEngine reports whether the catalog lists engine-version.
func (s *State) hasEngine(e api.Engine, version string) bool {
	for _, ev := range s.Engines {
		if ev.Engine == e && ev.Version == version {
			return true
		}
	}
	return false
}

// applyMemberVersion applies an upgrade step's change with the step. An
// unknown member or version, or an operation no longer active, changes
// nothing.
func (f *FSM) applyMemberVersion(c MemberVersionCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok {
		return fmt.Errorf("%w: addon %s", api.ErrNotFound, c.AddonID)
	}
	if err := f.checkStep(c.Operation); err != nil {
		return err
	}
	members := append([]api.Member(nil), a.Members...)
	find := func(id string) (int, error) {
		for i, m := range members {
			if m.ID == id {
				return i, nil
			}
		}
		return 0, fmt.Errorf("%w: addon %s has no member %s", api.ErrNotFound, a.ID, id)
	}
	for _, s := range c.Set {
		i, err := find(s.MemberID)
		if err != nil {
			return err
		}
		if !f.state.hasEngine(s.Engine, s.Version) {
			return api.Invalidf("unknown engine version %s-%s", s.Engine, s.Version)
		}
		members[i].Engine, members[i].Version, members[i].Stopped = s.Engine, s.Version, false
	}
	for _, id := range c.Stop {
		i, err := find(id)
		if err != nil {
			return err
		}
		members[i].Stopped = true
	}
	if c.Engine != "" {
		if !f.state.hasEngine(c.Engine, c.Version) {
			return api.Invalidf("unknown engine version %s-%s", c.Engine, c.Version)
		}
		a.Engine, a.Version = c.Engine, c.Version
		for i := range members {
			members[i].Engine, members[i].Version, members[i].Stopped = "", "", false
		}
	}
	if c.Holder != "" {
		i, err := find(c.Holder)
		if err != nil || members[i].Role != api.RoleHAProxy {
			return fmt.Errorf("%w: addon %s has no haproxy member %s", api.ErrNotFound, a.ID, c.Holder)
		}
		for j := range members {
			if members[j].Role == api.RoleHAProxy {
				members[j].Active = members[j].ID == c.Holder
			}
		}
	}
	a.Members = members
	a.UpdatedAt = c.Operation.UpdatedAt
	if c.AddonStatus != "" {
		a.Status = c.AddonStatus
	}
	f.state.Addons[a.ID] = a
	f.state.putOp(c.Operation)
	return nil
}

// upgradeCmd is the entry that commits an upgrade effect with op (whose
// upgrade record it updates for a member set at now).
func upgradeCmd(op api.Operation, eff operation.Effect, now time.Time) (MemberVersionCmd, bool) {
	c := MemberVersionCmd{AddonID: op.AddonID}
	switch e := eff.(type) {
	case operation.SetMemberVersion:
		c.Set = []MemberVersionTo{{MemberID: e.MemberID, Engine: e.Engine, Version: e.Version}}
		op.Upgrade = op.Upgrade.WithSet(api.UpgradeSet{MemberID: e.MemberID, At: now, RunningSince: e.RunningSince})
	case operation.StopMember:
		c.Stop = []string{e.MemberID}
	case operation.SetAddonVersion:
		c.Engine, c.Version = e.Engine, e.Version
	case operation.MoveEntrypoint:
		c.Holder = e.MemberID
	default:
		return c, false
	}
	c.Operation = op
	return c, true
}

// checkUpgraded performs operation.CheckUpgraded: the member's engine and
// version (INFO server), then what its part needs (redis: master with its
// keys or replica in sync; sentinel: the CheckSentinel checks).
func (e *engine) checkUpgraded(ctx context.Context, v operation.View, a operation.CheckUpgraded) error {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if a.Role == api.RoleSentinel {
		s, err := e.act.sentinelServer(cctx, a.Addr, v.Addon.FleetPassword.Reveal())
		if err != nil {
			return err
		}
		if s.Engine != a.Engine || s.Version != a.Version {
			return fmt.Errorf("sentinel %s runs %s, want %s %s", a.Addr, s, a.Engine, a.Version)
		}
		return e.perform(ctx, v, a.Sentinel)
	}
	_, err := e.act.checkNode(cctx, a.Addr, v.Addon.FleetPassword.Reveal(), redisctl.Want{Engine: a.Engine, Version: a.Version, Master: a.Master,
		ReplicaOf: a.ReplicaOf, InSyncBytes: operation.InSyncBytes, MinKeys: a.MinKeys})
	if err != nil || len(a.Sentinels) == 0 {
		return err
	}
	ok := 0
	var why []string
	for _, s := range a.Sentinels {
		sctx, cancel := context.WithTimeout(ctx, 2*sentinelTimeout)
		p, err := e.act.known(sctx, s, v.Addon.FleetPassword.Reveal(), v.Addon.ID)
		cancel()
		switch {
		case err != nil:
			why = append(why, err.Error())
		case redisctl.Promotable(p.Replicas, a.Addr):
			ok++
		default:
			why = append(why, "sentinel "+s+" does not list it as a healthy replica yet")
		}
	}
	if ok*2 <= len(a.Sentinels) {
		return fmt.Errorf("%d of %d sentinels could promote %s: %s", ok, len(a.Sentinels), a.Addr, strings.Join(why, "; "))
	}
	return nil
}
