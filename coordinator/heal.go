package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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
	// switchover moves the primary role from a live primary to its replica
	// without losing an acknowledged write (see switchover); nil means a
	// bare SENTINEL FAILOVER.
	switchover func(ctx context.Context, sw switchoverReq) error
}

func (c *healController) Name() string { return "heal" }

func (c *healController) Run(ctx context.Context) {
	runPasses(ctx, c.store.FSM(), c.obs, time.Second, func() {
		if err := c.pass(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("healing step failed; will retry", "err", err)
		}
	})
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
			if c.switchover != nil {
				var replica api.Member
				for _, m := range a.Members {
					if m.Role == api.RoleRedis && m.ID != target.ID {
						replica = m
					}
				}
				sw := switchoverReq{name: a.ID, password: a.Password, primary: addrOf[target.ID], replica: addrOf[replica.ID], sentinels: senti}
				if err := c.switchover(ctx, sw); err != nil {
					c.log.Warn("switchover failed; will retry", "addon", a.ID, "from", target.ID, "to", replica.ID, "err", err)
					step.Detail = ""
					return waitFor("switchover failed, retrying: " + err.Error())
				}
				step.Detail = ""
				return waitFor("switched over to " + replica.ID + "; waiting for the new primary to be recorded")
			}
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
	c := redis.NewClient(memberOptions(addr, password))
	defer c.Close()
	host, port, err := splitHostPort(primary)
	if err != nil {
		return err
	}
	return c.Do(ctx, "REPLICAOF", host, port).Err()
}

// switchoverReq is a planned primary move.
type switchoverReq struct {
	name      string // master name (addon id)
	password  string
	primary   string // host:port of the live primary
	replica   string // host:port of its replica, promoted
	sentinels []string
}

// Switchover figures.
const (
	// switchoverPause bounds the write pause on the old primary should
	// the coordinator die half-way; normally it is lifted within ~1 s.
	switchoverPause = 5 * time.Second
	// switchoverSettle is how long the old primary stays paused after it
	// became a replica: HAProxy's role check (every 200 ms) marks it down
	// and cuts its sessions meanwhile, so paused clients reconnect to the
	// new primary instead of getting READONLY.
	switchoverSettle = 700 * time.Millisecond
)

// switchover moves the primary role from a live primary to its replica
// with no acknowledged write lost. A bare SENTINEL FAILOVER with a live
// primary promotes the replica while the old primary keeps accepting
// writes until Sentinel reconfigures it (seconds); those writes are lost
// when it resyncs. Instead: pause writes on the old primary (CLIENT PAUSE
// WRITE; clients wait, they get no error), wait until the replica has
// every write, ask Sentinel to fail over, wait for the replica to be a
// master, make the old primary its replica, let HAProxy see it, unpause.
func switchover(ctx context.Context, sw switchoverReq) error {
	old := redis.NewClient(memberOptions(sw.primary, sw.password))
	defer old.Close()
	rep := redis.NewClient(memberOptions(sw.replica, sw.password))
	defer rep.Close()
	call := func(c *redis.Client, args ...any) error {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return c.Do(cctx, args...).Err()
	}
	offset := func(c *redis.Client) (role string, off int64, err error) {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		info, err := c.Info(cctx, "replication").Result()
		if err != nil {
			return "", 0, err
		}
		for _, l := range strings.Split(info, "\n") {
			k, v, _ := strings.Cut(strings.TrimSpace(l), ":")
			switch k {
			case "role":
				role = v
			case "master_repl_offset":
				off, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return role, off, nil
	}
	poll := func(timeout time.Duration, fn func() error) error {
		deadline := time.Now().Add(timeout)
		for {
			err := fn()
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				return err
			}
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
	}
	if err := call(old, "CLIENT", "PAUSE", strconv.FormatInt(switchoverPause.Milliseconds(), 10), "WRITE"); err != nil {
		return fmt.Errorf("pause writes on %s: %w", sw.primary, err)
	}
	promoted := false
	defer func() {
		if !promoted { // give the primary its writes back
			_ = call(old, "CLIENT", "UNPAUSE")
		}
	}()
	// The replica has every write once its offset reaches the primary's.
	err := poll(2*time.Second, func() error {
		_, want, err := offset(old)
		if err != nil {
			return err
		}
		role, got, err := offset(rep)
		if err != nil {
			return err
		}
		if role != "slave" || got < want {
			return fmt.Errorf("replica %s at offset %d (%s), primary at %d", sw.replica, got, role, want)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replica not caught up: %w", err)
	}
	var ferr error
	for _, s := range sw.sentinels {
		if ferr = sentinelFailoverCtx(ctx, s, sw.name); ferr == nil {
			break
		}
	}
	if ferr != nil {
		return fmt.Errorf("sentinel failover: %w", ferr)
	}
	err = poll(5*time.Second, func() error {
		role, _, err := offset(rep)
		if err != nil {
			return err
		}
		if role != "master" {
			return fmt.Errorf("%s is still %s", sw.replica, role)
		}
		return nil
	})
	if err != nil {
		// Sentinel has the failover under way: unpausing now would let the
		// old primary take writes beside the new one; the pause expires by
		// itself.
		promoted = true
		return fmt.Errorf("replica not promoted: %w", err)
	}
	promoted = true
	host, port, err := splitHostPort(sw.replica)
	if err != nil {
		return err
	}
	if err := call(old, "REPLICAOF", host, port); err != nil {
		return fmt.Errorf("demote %s: %w", sw.primary, err)
	}
	t := time.NewTimer(switchoverSettle)
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	_ = call(old, "CLIENT", "UNPAUSE")
	return nil
}

func sentinelFailoverCtx(ctx context.Context, sentinel, name string) error {
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return sentinelFailover(fctx, sentinel, name)
}
