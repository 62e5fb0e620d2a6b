package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// Provision step names (ProvisionSteps).
const (
	StepPlace       = "place members"
	StepStart       = "start members"
	StepWaitHealthy = "wait healthy"
	StepMarkRunning = "mark running"
)

// provisionController drives provision operations step by step. Each step is
// committed before the next starts; a new leader resumes from the FSM. A
// step that has to wait (capacity, agents starting members) records why in
// its detail and is retried on the next FSM change or heartbeat.
type provisionController struct {
	store *Store
	obs   *observed
	log   *slog.Logger
	now   func() time.Time
	// vipPool is the entrypoint CIDR for business addons ("" = none).
	vipPool string
	// view is the scheduler's view of the fleet for the current pass.
	view *scheduler.State
	// ping checks the entrypoint answers with the addon's password.
	ping func(ctx context.Context, addr, password string) error
}

func (c *provisionController) Name() string { return "provision" }

func (c *provisionController) Run(ctx context.Context) {
	runPasses(ctx, c.store.FSM(), c.obs, 500*time.Millisecond, func() {
		c.view = nil // rebuilt at most once per pass, and after each placement
		for _, op := range c.active() {
			if err := c.advance(ctx, op); err != nil && ctx.Err() == nil {
				c.log.Warn("provision step failed; will retry", "op", op.ID, "addon", op.AddonID, "err", err)
			}
		}
	})
}

func (c *provisionController) active() []api.Operation {
	var out []api.Operation
	c.store.FSM().Read(func(s *State, _ uint64) { out = s.activeOps(api.OpProvision) })
	return out
}

// advance does what the current step needs and commits its outcome.
func (c *provisionController) advance(ctx context.Context, op api.Operation) error {
	i := op.CurrentStep()
	if i >= len(op.Steps) {
		return c.commit(ctx, op, api.OpDone, "")
	}
	var (
		addon api.Addon
		ok    bool
	)
	c.store.FSM().Read(func(s *State, _ uint64) {
		addon, ok = s.Addons[op.AddonID]
		if c.view == nil && op.Steps[min(op.CurrentStep(), len(op.Steps)-1)].Name == StepPlace {
			v := schedulerState(s)
			c.view = &v
		}
	})
	if !ok {
		return c.fail(ctx, op, i, "the addon no longer exists")
	}
	now := c.now().UTC()
	step := &op.Steps[i]
	if step.StartedAt.IsZero() {
		step.StartedAt = now
	}
	switch step.Name {
	case StepPlace:
		st := *c.view
		plan, found := api.FindPlan(st.Plans, addon.Plan)
		if !found {
			return c.fail(ctx, op, i, fmt.Sprintf("plan %s is not in the catalog", addon.Plan))
		}
		p, _, err := scheduler.Place(st, scheduler.Request{AddonID: addon.ID, Plan: plan})
		if err != nil {
			if errors.Is(err, api.ErrNoCapacity) {
				return c.wait(ctx, op, i, "waiting for capacity: "+api.Message(err))
			}
			return c.fail(ctx, op, i, api.Message(err))
		}
		if plan.Kind == api.PlanBusiness && c.vipPool != "" && addon.Entrypoint == "" {
			var used []string
			c.store.FSM().Read(func(s *State, _ uint64) {
				for _, a := range s.Addons {
					used = append(used, a.Entrypoint)
				}
			})
			vip, err := allocateVIP(c.vipPool, used)
			if err != nil {
				return c.wait(ctx, op, i, "waiting for an entrypoint address: "+err.Error())
			}
			_, port, _ := net.SplitHostPort(p.Entrypoint)
			p.Entrypoint = net.JoinHostPort(vip, port)
			for j := range p.Members {
				if p.Members[j].Role == api.RoleHAProxy {
					p.Members[j].Active = true
					break
				}
			}
		}
		c.done(&op, i, now, fmt.Sprintf("%d members placed; entrypoint %s", len(p.Members), p.Entrypoint))
		_, err = c.store.Apply(ctx, CmdAddonPlaced, AddonPlacedCmd{AddonID: addon.ID, Members: p.Members, Entrypoint: p.Entrypoint, Operation: op})
		c.view = nil // the fleet changed: the next placement sees this one
		if err == nil {
			c.log.Info("addon placed", "addon", addon.ID, "entrypoint", p.Entrypoint, "members", len(p.Members))
		}
		return err
	case StepStart:
		var waiting []string
		for _, m := range addon.Members {
			ms, seen := c.obs.member(m.HostID, m.ID)
			switch {
			case seen && ms.State == api.MemberFailed:
				return c.fail(ctx, op, i, fmt.Sprintf("member %s on host %s failed: %s", m.ID, m.HostID, ms.Detail))
			case seen && ms.State == api.MemberRunning:
			default:
				state := "not reported yet"
				if seen {
					state = ms.State
				}
				waiting = append(waiting, fmt.Sprintf("%s on %s (%s)", m.ID, m.HostID, state))
			}
		}
		if len(waiting) > 0 {
			return c.wait(ctx, op, i, "waiting for "+strings.Join(waiting, ", "))
		}
		c.done(&op, i, now, fmt.Sprintf("%d members running", len(addon.Members)))
		return c.commit(ctx, op, api.OpRunning, "")
	case StepWaitHealthy:
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.ping(pctx, addon.Entrypoint, addon.Password)
		cancel()
		if err != nil {
			return c.wait(ctx, op, i, fmt.Sprintf("entrypoint %s does not answer yet: %v", addon.Entrypoint, err))
		}
		c.done(&op, i, now, "entrypoint "+addon.Entrypoint+" answers PING")
		return c.commit(ctx, op, api.OpRunning, "")
	case StepMarkRunning:
		c.done(&op, i, now, "")
		op.State = api.OpDone
		op.UpdatedAt = now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonRunning})
		if err == nil {
			c.log.Info("addon running", "addon", addon.ID, "took", now.Sub(op.CreatedAt).Round(time.Millisecond).String())
		}
		return err
	}
	return c.fail(ctx, op, i, "unknown step "+step.Name)
}

func (c *provisionController) done(op *api.Operation, i int, now time.Time, detail string) {
	op.Steps[i].State = api.OpDone
	op.Steps[i].FinishedAt = now
	op.Steps[i].Detail = detail
	op.State = api.OpRunning
	op.UpdatedAt = now
}

// wait records why step i waits, only when the reason changed.
func (c *provisionController) wait(ctx context.Context, op api.Operation, i int, detail string) error {
	if op.Steps[i].Detail == detail && op.Steps[i].State == api.OpRunning {
		return nil
	}
	op.Steps[i].State = api.OpRunning
	op.Steps[i].Detail = detail
	op.State = api.OpRunning
	op.UpdatedAt = c.now().UTC()
	_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
	return err
}

func (c *provisionController) fail(ctx context.Context, op api.Operation, i int, reason string) error {
	now := c.now().UTC()
	if i < len(op.Steps) {
		op.Steps[i].State = api.OpFailed
		op.Steps[i].Detail = reason
		op.Steps[i].FinishedAt = now
	}
	op.State = api.OpFailed
	op.Error = reason
	op.UpdatedAt = now
	c.log.Warn("provision failed", "op", op.ID, "addon", op.AddonID, "reason", reason)
	_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonError})
	return err
}

func (c *provisionController) commit(ctx context.Context, op api.Operation, state api.OperationState, status api.AddonStatus) error {
	op.State = state
	op.UpdatedAt = c.now().UTC()
	_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: status})
	return err
}

// schedulerState is the scheduler's read-only view of the FSM state; the
// caller holds the read lock.
func schedulerState(s *State) scheduler.State {
	st := scheduler.State{Hosts: sortedHosts(s.Hosts), Plans: append([]api.Plan(nil), s.Plans...)}
	for _, a := range sortedAddons(s.Addons) {
		a.Members = append([]api.Member(nil), a.Members...)
		a.Password = ""
		st.Addons = append(st.Addons, a)
	}
	return st
}

// pingRedis dials addr, authenticates and sends PING, within ctx.
func pingRedis(ctx context.Context, addr, password string) error {
	opt := memberOptions(addr, password)
	opt.DialerRetries = 1
	c := redis.NewClient(opt)
	defer c.Close()
	return c.Ping(ctx).Err()
}

// memberOptions are the options of the coordinator's short-lived clients of
// a member: one connection, one-second timeouts, no retries (the controllers
// retry on their next pass).
func memberOptions(addr, password string) *redis.Options {
	return &redis.Options{Addr: addr, Password: password, DialTimeout: time.Second, ReadTimeout: time.Second,
		WriteTimeout: time.Second, MaxRetries: -1, PoolSize: 1, DisableIdentity: true}
}

// allocateVIP returns the lowest address of pool (network address excluded)
// that no entrypoint in used has.
func allocateVIP(pool string, used []string) (string, error) {
	pfx, err := netip.ParsePrefix(pool)
	if err != nil {
		return "", fmt.Errorf("entrypoint pool %q: %w", pool, err)
	}
	taken := map[string]bool{}
	for _, ep := range used {
		if h, _, err := net.SplitHostPort(ep); err == nil {
			taken[h] = true
		}
	}
	pfx = pfx.Masked()
	for a := pfx.Addr().Next(); pfx.Contains(a); a = a.Next() {
		if !taken[a.String()] {
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("the entrypoint pool %s is exhausted", pool)
}
