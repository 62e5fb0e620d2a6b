package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

// StepApplySettings waits until the addon answers with its new settings.
const StepApplySettings = "apply settings"

// settingsController drives settings-change operations: the new settings
// are in the addon (and so in its agents' assignments, which apply them with
// CONFIG SET, no restart); the controller checks through the entrypoint that
// redis runs with them, then marks the addon running again.
type settingsController struct {
	store *Store
	obs   *observed
	log   *slog.Logger
	now   func() time.Time
	// check returns nil once the server at addr runs with settings s.
	check func(ctx context.Context, addr, password string, s api.Settings, planMB int) error
}

func (c *settingsController) Name() string { return "settings" }

func (c *settingsController) Run(ctx context.Context) {
	runPasses(ctx, c.store.FSM(), c.obs, 500*time.Millisecond, func() {
		for _, op := range c.active() {
			if err := c.advance(ctx, op); err != nil && ctx.Err() == nil {
				c.log.Warn("settings step failed; will retry", "op", op.ID, "addon", op.AddonID, "err", err)
			}
		}
	})
}

func (c *settingsController) active() []api.Operation {
	var out []api.Operation
	c.store.FSM().Read(func(s *State, _ uint64) { out = s.activeOps(api.OpSettingsChange) })
	return out
}

func (c *settingsController) advance(ctx context.Context, op api.Operation) error {
	var (
		a    api.Addon
		ok   bool
		plan api.Plan
	)
	c.store.FSM().Read(func(s *State, _ uint64) {
		a, ok = s.Addons[op.AddonID]
		if ok {
			plan, _ = api.FindPlan(s.Plans, a.Plan)
		}
	})
	now := c.now().UTC()
	i := op.CurrentStep()
	if !ok || i >= len(op.Steps) {
		op.State = api.OpDone
		op.UpdatedAt = now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
		return err
	}
	step := &op.Steps[i]
	if step.StartedAt.IsZero() {
		step.StartedAt = now
	}
	switch step.Name {
	case StepApplySettings:
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.check(cctx, a.Entrypoint, a.Password, a.Settings, plan.MemoryMB)
		cancel()
		if err != nil {
			detail := "waiting for the members to apply them: " + err.Error()
			if step.Detail == detail {
				return nil
			}
			step.State, step.Detail = api.OpRunning, detail
			op.State, op.UpdatedAt = api.OpRunning, now
			_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
			return err
		}
		step.State, step.Detail, step.FinishedAt = api.OpDone, fmt.Sprintf("persistence %s, cache mode %s", a.Settings.Persistence, onOff(a.Settings.CacheMode)), now
		op.State, op.UpdatedAt = api.OpRunning, now
		_, err = c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op})
		return err
	default: // mark running
		step.State, step.FinishedAt = api.OpDone, now
		op.State, op.UpdatedAt = api.OpDone, now
		_, err := c.store.Apply(ctx, CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonRunning})
		return err
	}
}

// checkRedisSettings compares CONFIG GET answers with the settings.
func checkRedisSettings(ctx context.Context, addr, password string, s api.Settings, planMB int) error {
	c := redis.NewClient(memberOptions(addr, password))
	defer c.Close()
	want := map[string]string{"appendonly": "no", "maxmemory-policy": "noeviction"}
	if s.Persistence == api.PersistenceAOF {
		want["appendonly"] = "yes"
	}
	if s.CacheMode {
		want["maxmemory-policy"] = "allkeys-lru"
	}
	for k, v := range want {
		got, err := c.ConfigGet(ctx, k).Result()
		if err != nil {
			return fmt.Errorf("CONFIG GET %s: %w", k, err)
		}
		if got[k] != v {
			return fmt.Errorf("%s is %q, want %q", k, got[k], v)
		}
	}
	return nil
}
