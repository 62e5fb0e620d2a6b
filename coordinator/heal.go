package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// Replace-member steps.
const (
	StepDemote        = "demote primary"
	StepPlaceNew      = "place replacement"
	StepWaitNew       = "wait replacement running"
	StepRemoveOld     = "remove old member"
	StepResetSentinel = "reset sentinels"
)

// ReplaceSteps is the step list of a replace-member operation.
func ReplaceSteps() []api.Step {
	names := []string{StepDemote, StepPlaceNew, StepWaitNew, StepRemoveOld, StepResetSentinel}
	steps := make([]api.Step, len(names))
	for i, n := range names {
		steps[i] = api.Step{Name: n, State: api.OpPending}
	}
	return steps
}

// healController moves members off hosts that are down for longer than
// healAfter, or draining, one member at a time across the fleet: the
// replacement starts (a redis one as a replica of the current primary)
// beside the old member, and only once it runs is the old one dropped and
// the sentinels reset, so redundancy never goes lower than the loss itself.
type healController struct {
	store     *Store
	obs       *observed
	log       *slog.Logger
	now       func() time.Time
	healAfter time.Duration
	failover  func(ctx context.Context, sentinel, name string) error
	reset     func(ctx context.Context, sentinel, name string) error
	// demote makes the old primary a replica of the new one at once, so a
	// planned switchover leaves no window with two writable primaries.
	demote func(ctx context.Context, addr, password, primary string) error
}

func (c *healController) Name() string { return "heal" }

func (c *healController) Run(ctx context.Context) {
	for {
		fsmCh, obsCh := c.store.FSM().Changed(), c.obs.Changed()
		if err := c.pass(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("healing step failed; will retry", "err", err)
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-fsmCh:
		case <-obsCh:
		case <-t.C:
		}
		t.Stop()
	}
}

func (c *healController) pass(ctx context.Context) error {
	var (
		active *api.Operation
		next   *api.Operation
		now    = c.now().UTC()
	)
	c.store.FSM().Read(func(s *State, _ uint64) {
		if ops := s.activeOps(api.OpReplaceMember); len(ops) > 0 {
			active = &ops[0]
			return
		}
		unhealthy := false
		for _, h := range s.Hosts {
			unhealthy = unhealthy || h.State == api.HostDraining || (h.State == api.HostDown && !h.DownSince.IsZero() && now.Sub(h.DownSince) >= c.healAfter)
		}
		if !unhealthy {
			return
		}
		for _, a := range sortedAddons(s.Addons) {
			if a.Status != api.AddonRunning && a.Status != api.AddonUpdating {
				continue
			}
			if _, busy := s.activeOperation(a.ID); busy {
				continue
			}
			for _, m := range a.Members {
				h := s.Hosts[m.HostID]
				reason := ""
				switch {
				case h.State == api.HostDraining:
					reason = "host " + h.ID + " is draining"
				case h.State == api.HostDown && !h.DownSince.IsZero() && now.Sub(h.DownSince) >= c.healAfter:
					reason = fmt.Sprintf("host %s is down since %s", h.ID, h.DownSince.Format(time.RFC3339))
				default:
					continue
				}
				next = &api.Operation{AddonID: a.ID, App: a.App, Kind: api.OpReplaceMember, State: api.OpPending,
					Steps: ReplaceSteps(), Target: m.ID, Reason: reason, CreatedAt: now, UpdatedAt: now}
				return
			}
		}
	})
	if active != nil {
		return c.advance(ctx, *active)
	}
	if next == nil {
		return nil
	}
	id, err := newOperationID()
	if err != nil {
		return err
	}
	next.ID = id
	if _, err := c.store.Apply(ctx, CmdOperationCreate, OperationCreateCmd{Operation: *next}); err != nil {
		return err
	}
	c.log.Warn("replacing member", "addon", next.AddonID, "member", next.Target, "reason", next.Reason, "op", next.ID)
	return nil
}

func (c *healController) advance(ctx context.Context, op api.Operation) error {
	var (
		a       api.Addon
		ok      bool
		st      scheduler.State
		hosts   map[string]api.Host
		addrOf  = map[string]string{}
		senti   []string
		oldHost api.Host
	)
	c.store.FSM().Read(func(s *State, _ uint64) {
		a, ok = s.Addons[op.AddonID]
		st = schedulerState(s)
		hosts = map[string]api.Host{}
		for id, h := range s.Hosts {
			hosts[id] = h
		}
		for _, m := range a.Members {
			addrOf[m.ID] = memberAddr(s, m)
			if m.Role == api.RoleSentinel && m.ID != op.Target {
				senti = append(senti, memberAddr(s, m))
			}
		}
	})
	now := c.now().UTC()
	i := op.CurrentStep()
	if !ok || i >= len(op.Steps) {
		return c.finish(ctx, op, api.OpDone, "")
	}
	var target *api.Member
	for _, m := range a.Members {
		if m.ID == op.Target {
			m := m
			target = &m
		}
	}
	if target != nil {
		oldHost = hosts[target.HostID]
	}
	step := &op.Steps[i]
	if step.StartedAt.IsZero() {
		step.StartedAt = now
	}
	commit := func(detail string) error {
		step.State, step.Detail, step.FinishedAt = api.OpDone, detail, now
		op.State, op.UpdatedAt = api.OpRunning, now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
		return err
	}
	waitFor := func(detail string) error {
		if step.Detail == detail && step.State == api.OpRunning {
			return nil
		}
		step.State, step.Detail = api.OpRunning, detail
		op.State, op.UpdatedAt = api.OpRunning, now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
		return err
	}
	switch step.Name {
	case StepDemote:
		if target == nil || target.Role != api.RoleRedis {
			return commit("not a redis member")
		}
		primary, _ := primaryOf(a)
		if target.RedisRole != "primary" {
			if oldHost.State == api.HostDown || step.State != api.OpRunning {
				return commit("not the primary")
			}
			// Sentinel promoted the replica: demote the old primary now
			// rather than when Sentinel gets to it, so it never takes writes
			// beside the new one.
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			err := c.demote(dctx, addrOf[target.ID], a.Password, addrOf[primary.ID])
			cancel()
			if err != nil {
				c.log.Warn("cannot demote old primary; Sentinel will", "addon", a.ID, "member", target.ID, "err", err)
			}
			return commit(fmt.Sprintf("%s is the primary; %s demoted", primary.ID, target.ID))
		}
		if oldHost.State == api.HostDown {
			return waitFor("waiting for Sentinel to promote the replica")
		}
		// Planned: ask Sentinel now (again every 10 s), then wait for the
		// topology controller to record the new primary.
		if step.State != api.OpRunning || now.Sub(op.UpdatedAt) > 10*time.Second {
			for _, s := range senti {
				fctx, cancel := context.WithTimeout(ctx, time.Second)
				err := c.failover(fctx, s, a.ID)
				cancel()
				if err == nil {
					break
				}
			}
			step.Detail = ""
			return waitFor("failover requested from Sentinel")
		}
		return nil
	case StepPlaceNew:
		if target == nil {
			return commit("member already gone")
		}
		exclude := []string{target.HostID}
		nm, _, err := scheduler.Replace(st, a, target.ID, exclude)
		if err != nil {
			return waitFor("waiting for capacity: " + api.Message(err))
		}
		if nm.Role == api.RoleRedis {
			nm.RedisRole = "replica"
		}
		op.Replacement = nm.ID
		step.State, step.Detail, step.FinishedAt = api.OpDone, fmt.Sprintf("%s on %s port %d", nm.ID, nm.HostID, nm.Port), now
		op.State, op.UpdatedAt = api.OpRunning, now
		_, err = c.store.Apply(ctx, CmdMemberAdded, MemberAddedCmd{AddonID: a.ID, Member: nm, Operation: op})
		return err
	case StepWaitNew:
		var nm *api.Member
		for _, m := range a.Members {
			if m.ID == op.Replacement {
				m := m
				nm = &m
			}
		}
		if nm == nil {
			return commit("no replacement")
		}
		ms, seen := c.obs.member(nm.HostID, nm.ID)
		switch {
		case seen && ms.State == api.MemberRunning:
			return commit(nm.ID + " running")
		case seen && ms.State == api.MemberFailed:
			return waitFor(nm.ID + " failed: " + ms.Detail)
		}
		return waitFor("waiting for " + nm.ID + " to run")
	case StepRemoveOld:
		if target == nil {
			return commit("already removed")
		}
		if target.Role == api.RoleRedis && target.RedisRole == "primary" {
			return waitFor("waiting for the old primary to be demoted")
		}
		step.State, step.Detail, step.FinishedAt = api.OpDone, target.ID+" removed", now
		op.State, op.UpdatedAt = api.OpRunning, now
		_, err := c.store.Apply(ctx, CmdMemberRemoved, MemberRemovedCmd{AddonID: a.ID, MemberID: target.ID, Operation: op})
		return err
	case StepResetSentinel:
		n := 0
		for _, s := range senti {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			if c.reset(rctx, s, a.ID) == nil {
				n++
			}
			cancel()
		}
		step.State, step.Detail, step.FinishedAt = api.OpDone, fmt.Sprintf("%d of %d sentinels reset", n, len(senti)), now
		return c.finish(ctx, op, api.OpDone, "")
	}
	return c.finish(ctx, op, api.OpFailed, "unknown step "+step.Name)
}

func (c *healController) finish(ctx context.Context, op api.Operation, state api.OperationState, errMsg string) error {
	op.State, op.Error, op.UpdatedAt = state, errMsg, c.now().UTC()
	_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
	if err == nil && state == api.OpDone {
		c.log.Info("member replaced", "addon", op.AddonID, "old", op.Target, "new", op.Replacement)
	}
	return err
}

// sentinelReset makes a sentinel forget replicas and sentinels that are gone.
func sentinelReset(ctx context.Context, sentinel, name string) error {
	c := sentinelClient(sentinel)
	defer c.Close()
	return c.Do(ctx, "SENTINEL", "RESET", name).Err()
}

// demoteRedis makes the redis at addr a replica of primary.
func demoteRedis(ctx context.Context, addr, password, primary string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, DialTimeout: time.Second,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: -1, PoolSize: 1, DisableIdentity: true})
	defer c.Close()
	host, port, err := splitHostPort(primary)
	if err != nil {
		return err
	}
	return c.Do(ctx, "REPLICAOF", host, port).Err()
}
