package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/redisctl"
	"github.com/cacheplane/cacheplane/scheduler"
)

// engine is the I/O half of the operation engine: every pass it reads the
// FSM, lets operation.PlanHealing decide which members to move and
// operation.Next decide each addon's next step, performs the step's action
// (ping, settings check, switchover, failover, sentinel reset) and commits
// the outcome through Raft before the step after it is considered. It
// keeps nothing between passes that the FSM does not hold, so a new leader
// resumes every operation where the old one stopped; a mutating action
// that was under way when the leader died is judged afresh from what is
// observed (a switchover that happened is seen as a new primary).
//
// Each addon's action runs in its own goroutine (at most parallel at
// once, one per addon): a slow or failing step of one addon never holds up
// another's.
//
// Healing never waits behind a backlog: a pass decides healing first,
// considers replace operations before every other (operation.Order), and
// stops the others once passBudget is spent, resuming there next pass; a
// placement reads the pass's per-host usage (scheduler.Usage, kept as the
// pass places), not every addon's members.
type engine struct {
	store    stateWriter
	obs      *observed
	stats    *statsHistory
	log      *slog.Logger
	now      func() time.Time
	vipPool  string
	heal     operation.HealConfig
	limits   operation.Limits
	act      actions
	hook     appHook // the fleet's app hook (NotifyApp)
	parallel int
	// backups: backup and restore figures and metrics (nil: defaults).
	backups *backupEnv

	mu       sync.Mutex
	inflight map[string]bool // addon ids with an action under way
	left     []operation.Left
	sem      chan struct{}
	// resume is where the last pass stopped when its budget ran out (only
	// the pass's goroutine uses it).
	resume operation.Cursor
	// budget bounds a pass's work on operations that are not urgent
	// (passBudget when zero).
	budget time.Duration
}

// passBudget bounds the sequential part of one pass over the non-urgent
// operations (decisions, placements and their commits): past it the pass
// ends and the next one, after its rest, decides healing again first. At
// 1,000 hosts, ~7,800 queued provisions made one pass last minutes and a
// lost host got no replace operation within 3 minutes.
const passBudget = 500 * time.Millisecond

// actions are the engine's conversations with redis and sentinel. Every
// password they take is the addon's fleet credential (redisctl logs in with
// it as redisctl.FleetUser on members, as the sentinels' default user on
// sentinels), never the app's.
type actions struct {
	ping          func(ctx context.Context, addr, password string) error
	checkSettings func(ctx context.Context, addr, password string, s api.Settings, planMB int) error
	switchover    func(ctx context.Context, sw redisctl.SwitchoverRequest) error
	failover      func(ctx context.Context, sentinels []string, password, name string) (string, error)
	reset         func(ctx context.Context, sentinel, password, name string) error
	known         func(ctx context.Context, sentinel, password, name string) (redisctl.Peers, error)
	master        func(ctx context.Context, sentinel, password, name string) (string, error)
	// checkMaxmemory checks a redis member's maxmemory (plan changes).
	checkMaxmemory func(ctx context.Context, addr, password string, planMB int) error
	// notify tells an app (tests); nil runs the engine's app hook.
	notify func(ctx context.Context, ev api.AppHookEvent) error
	// Engine upgrades: a snapshot waited for, a redis member checked on
	// its new version, a sentinel's version.
	save           func(ctx context.Context, addr, password string) error
	checkNode      func(ctx context.Context, addr, password string, w redisctl.Want) (redisctl.Node, error)
	sentinelServer func(ctx context.Context, addr, password string) (redisctl.Server, error)
	// checkPasswords checks a redis member's app passwords (rotate.go).
	checkPasswords func(ctx context.Context, addr, fleet string, want []string) error
}

// redisActions are the production actions (package redisctl).
func redisActions() actions {
	return actions{ping: redisctl.Ping, checkSettings: redisctl.CheckSettings, switchover: redisctl.Switchover,
		failover: redisctl.Failover, reset: redisctl.Reset, known: redisctl.Known, master: redisctl.MasterAddr,
		checkMaxmemory: redisctl.CheckMaxmemory, save: redisctl.Snapshot, checkNode: redisctl.CheckNode, sentinelServer: redisctl.SentinelServer,
		checkPasswords: redisctl.CheckAppPasswords}
}

// Action time bounds.
const (
	checkTimeout      = 2 * time.Second
	switchoverTimeout = 15 * time.Second
	sentinelTimeout   = time.Second
	// resetTimeout bounds a rolling reset: each sentinel rediscovers the
	// replicas at once and the other sentinels from their hello messages
	// (every 2 s).
	resetTimeout = time.Minute
)

func (e *engine) Name() string { return "operations" }

func (e *engine) Run(ctx context.Context) {
	e.mu.Lock()
	e.inflight = map[string]bool{}
	if e.parallel <= 0 {
		e.parallel = 8
	}
	e.sem = make(chan struct{}, e.parallel)
	e.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	runPasses(ctx, e.store.FSM(), e.obs, 500*time.Millisecond, func() { e.pass(ctx, &wg) })
}

// snapshot is one pass's copy of the FSM.
type snapshot struct {
	ops    []api.Operation // the oldest active operation of each addon
	addons map[string]api.Addon
	hosts  map[string]api.Host
	plans  []api.Plan
	fleet  scheduler.State
	used   []string
	active map[string]api.Operation
	// cancelled: when each member's replace operation was last cancelled.
	cancelled map[string]time.Time
	// backups are the records active operations work on, jobs each
	// active operation's latest job, by operation id.
	backups map[string]api.Backup
	jobs    map[string]operation.Job
}

func (e *engine) snapshot() snapshot {
	var (
		sn   snapshot
		view *State
	)
	e.store.FSM().Read(func(s *State, _ uint64) { sn, view = snapshotLocked(s) })
	sn.finish(view)
	return sn
}

// snapshotLocked is the part of a pass's snapshot taken under the FSM's
// read lock, which every apply waits for: the addons and hosts maps
// copied (their values shared: the FSM replaces a value, never changes
// one in place), the active operations and what they work on. The rest
// (finish) reads the copies after the lock: at 100,000 addons the
// scheduler's view and its usage were two thirds of the time the lock
// was held (BenchmarkScaleEngineSnapshot). view is nil when no operation
// is active.
func snapshotLocked(s *State) (snapshot, *State) {
	var sn snapshot
	// Members shared, not copied: nothing here writes into an addon's
	// slice (withEffect copies).
	sn.addons = maps.Clone(s.Addons)
	sn.hosts = maps.Clone(s.Hosts)
	sn.plans = append([]api.Plan(nil), s.Plans...)
	sn.active = map[string]api.Operation{}
	sn.cancelled = map[string]time.Time{}
	for _, o := range s.Operations {
		if o.Kind == api.OpReplaceMember && o.State == api.OpCancelled && o.UpdatedAt.After(sn.cancelled[o.Target]) {
			sn.cancelled[o.Target] = o.UpdatedAt
		}
	}
	sn.backups, sn.jobs = map[string]api.Backup{}, map[string]operation.Job{}
	for id := range s.active {
		if o := s.Operations[id]; o.BackupID != "" {
			if b, ok := s.Backups[o.BackupID]; ok {
				sn.backups[b.ID] = b
			}
		}
	}
	for _, j := range s.Jobs {
		if cur, ok := sn.jobs[j.OperationID]; s.active[j.OperationID] && (!ok || j.CreatedAt.After(cur.CreatedAt)) {
			sn.jobs[j.OperationID] = j
		}
	}
	for id := range s.active {
		o := s.Operations[id]
		if cur, ok := sn.active[o.AddonID]; ok && (cur.CreatedAt.Before(o.CreatedAt) || (cur.CreatedAt.Equal(o.CreatedAt) && cur.ID < o.ID)) {
			continue
		}
		o.Steps = append([]api.Step(nil), o.Steps...)
		sn.active[o.AddonID] = o
	}
	if len(s.active) == 0 {
		return sn, nil
	}
	return sn, &State{Addons: sn.addons, Hosts: sn.hosts, Plans: sn.plans}
}

// finish completes a snapshot from its copies, outside the FSM's lock:
// the entrypoints in use, the active operations in order and, when one
// is active (view), the scheduler's view of the fleet. The scheduler's
// view only then: with none active the pass decides nothing that reads
// it (one that healing or a retire creates comes with a new snapshot);
// each heartbeat wakes a pass, and at fleet size this view was most of an
// idle pass. Its usage is counted once per pass and kept by withEffect: a
// placement is then O(hosts), not O(addons). An addon on a plan nothing
// sizes leaves it unset (the scheduler then counts, and says why).
func (sn *snapshot) finish(view *State) {
	sn.used = make([]string, 0, len(sn.addons))
	for _, a := range sn.addons {
		sn.used = append(sn.used, a.Entrypoint)
	}
	if view != nil {
		sn.fleet = schedulerState(view)
		if u, err := scheduler.NewUsage(sn.fleet); err == nil {
			sn.fleet.Usage = u
		}
	}
	for _, o := range sn.active {
		sn.ops = append(sn.ops, o)
	}
	sortOps(sn.ops)
}

func sortOps(ops []api.Operation) {
	m := make(map[string]api.Operation, len(ops))
	for _, o := range ops {
		m[o.ID] = o
	}
	copy(ops, sortedOperations(m))
}

// view is the pure side's view of one addon.
func (e *engine) view(sn snapshot, addonID string, now time.Time) operation.View {
	a, ok := sn.addons[addonID]
	v := operation.View{Addon: a, Exists: ok, Hosts: sn.hosts, Fleet: sn.fleet, VIPPool: e.vipPool, UsedEntrypoints: sn.used, Now: now,
		Observed: map[string]operation.Observed{}, HostSeen: map[string]time.Time{}}
	v.Plan, v.PlanKnown = api.FindPlan(sn.plans, a.Plan)
	v.AppHook = e.hook.policy()
	for _, m := range a.Members {
		v.Observed[m.ID] = observe(e.obs, sn.hosts[m.HostID], m)
		v.HostSeen[m.HostID] = e.obs.lastSeen(m.HostID)
	}
	return v
}

// opView is view for op: with its backup record and job.
func (e *engine) opView(sn snapshot, op api.Operation, now time.Time) operation.View {
	v := e.view(sn, op.AddonID, now)
	v.BackupLimits = operation.DefaultBackupLimits()
	if e.backups != nil {
		v.BackupLimits = e.backups.limits
	}
	if op.BackupID != "" {
		v.Backup, v.BackupKnown = sn.backups[op.BackupID]
	}
	v.Job, v.JobKnown = sn.jobs[op.ID]
	return v
}

// observe is a member as the fleet sees it now: its agent's last report,
// or nothing when its host is down (that report says nothing about now).
func observe(obs *observed, h api.Host, m api.Member) operation.Observed {
	ms, seen := obs.member(m.HostID, m.ID)
	if h.State == api.HostDown {
		// Not seen; its last replication offset is kept, so a forced
		// failover can check the replica was in sync with it.
		return operation.Observed{Offset: ms.ReplOffset}
	}
	return operation.Observed{Seen: seen, State: ms.State, Detail: ms.Detail, RedisRole: ms.RedisRole, Offset: ms.ReplOffset, StartedAt: ms.StartedAt}
}

func (e *engine) pass(ctx context.Context, wg *sync.WaitGroup) {
	now := e.now().UTC()
	sn := e.snapshot()
	h := operation.PlanHealing(operation.Fleet{Hosts: sn.hosts, Addons: onUnhealthyHosts(sn), Plans: sn.plans, Active: sn.active, Cancelled: sn.cancelled, Now: now}, e.heal)
	e.setLeft(h.Left)
	for _, op := range h.Create {
		id, err := newOperationID()
		if err != nil {
			e.log.Error("cannot draw an operation id", "err", err)
			return
		}
		op.ID = id
		if _, err := e.store.Apply(ctx, CmdOperationCreate, OperationCreateCmd{Operation: op}); err != nil {
			if ctx.Err() == nil {
				e.log.Warn("cannot start healing", "addon", op.AddonID, "member", op.Target, "err", err)
			}
			continue
		}
		e.log.Warn("replacing member", "addon", op.AddonID, "member", op.Target, "reason", op.Reason, "op", op.ID)
	}
	if len(h.Create) > 0 {
		sn = e.snapshot()
	}
	if e.startRetires(ctx, sn, now) { // after healing: a replacement goes first
		sn = e.snapshot()
	}
	budget := e.budget
	if budget <= 0 {
		budget = passBudget
	}
	started := time.Now()
	ops := operation.Order(sn.ops, e.resume)
	e.resume = operation.Cursor{}
	for _, op := range ops {
		if ctx.Err() != nil {
			return
		}
		if !operation.Urgent(op) && time.Since(started) > budget {
			e.resume = operation.CursorOf(op) // the rest next pass, from here
			break
		}
		if !e.claim(op.AddonID) {
			continue // its action is under way
		}
		// The snapshot may be older than the operation: an action of the
		// previous pass may have been recorded since it was taken. Decide
		// only on what the FSM holds now (the next pass sees the rest).
		if cur, ok := e.current(op.ID); !ok || !cur.UpdatedAt.Equal(op.UpdatedAt) || cur.State.Finished() {
			e.release(op.AddonID)
			continue
		}
		d := operation.Next(e.opView(sn, op, now), op)
		if d.Kind == operation.Run {
			v, step := e.opView(sn, op, now), op.CurrentStep()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer e.release(op.AddonID)
				select {
				case e.sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				err := e.perform(ctx, v, d.Action)
				<-e.sem
				if ctx.Err() != nil {
					return
				}
				if err := e.record(ctx, op.ID, step, d, err); err != nil && ctx.Err() == nil {
					e.log.Warn("cannot record a step", "op", op.ID, "addon", op.AddonID, "err", err)
				}
			}()
			continue
		}
		switch d.Effect.(type) {
		case operation.PlaceMembers, operation.AddMember:
		default:
			if d.Kind == operation.Wait {
				break // mostly nothing to record: inline, no goroutine per waiting operation
			}
			// A step done (or failed) that places nothing does not change
			// what the next decisions of this pass read: committed beside
			// them (up to e.parallel at once, as actions are), so a pass
			// over thousands of operations is not one Raft round trip
			// each in a row.
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer e.release(op.AddonID)
				select {
				case e.sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				err := e.commit(ctx, op, d, now, false)
				<-e.sem
				if err != nil && ctx.Err() == nil {
					e.log.Warn("operation step not recorded; will retry", "op", op.ID, "addon", op.AddonID, "kind", op.Kind, "err", err)
				}
			}()
			continue
		}
		err := e.commit(ctx, op, d, now, false)
		e.release(op.AddonID)
		if err != nil && ctx.Err() == nil {
			e.log.Warn("operation step not recorded; will retry", "op", op.ID, "addon", op.AddonID, "kind", op.Kind, "err", err)
		}
		if err == nil {
			// The next placement of this pass sees this one (the fleet
			// view only: a whole new snapshot per placement made a pass
			// over n pending provisions O(n × state)).
			sn.fleet = withEffect(sn.fleet, op.AddonID, d.Effect)
			if pm, ok := d.Effect.(operation.PlaceMembers); ok && pm.Entrypoint != "" {
				sn.used = append(sn.used, pm.Entrypoint)
			}
		}
	}
}

// onUnhealthyHosts are the addons with a member on a host down or
// draining, by id: the only ones PlanHealing may move or list (so a pass
// on a healthy fleet sorts no addon).
func onUnhealthyHosts(sn snapshot) []api.Addon {
	unhealthy := false
	for _, h := range sn.hosts {
		unhealthy = unhealthy || h.State == api.HostDown || h.State == api.HostDraining
	}
	var out []api.Addon
	if !unhealthy {
		return out
	}
	for _, a := range sn.addons {
		for _, m := range a.Members {
			if st := sn.hosts[m.HostID].State; st == api.HostDown || st == api.HostDraining {
				out = append(out, a)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// withEffect returns fleet with a committed placement's members in
// addonID's entry, and its Usage counting them (fleet.Addons is sorted by
// id; schedulerState builds it afresh, so it is this pass's own).
func withEffect(fleet scheduler.State, addonID string, eff any) scheduler.State {
	var add []api.Member
	replace := false
	switch x := eff.(type) {
	case operation.PlaceMembers:
		add, replace = x.Members, true
	case operation.AddMember:
		add = []api.Member{x.Member}
	default:
		return fleet
	}
	i := sort.Search(len(fleet.Addons), func(i int) bool { return fleet.Addons[i].ID >= addonID })
	if i == len(fleet.Addons) || fleet.Addons[i].ID != addonID {
		return fleet
	}
	a := fleet.Addons[i]
	before := a
	if replace {
		a.Members = append([]api.Member(nil), add...)
		if a.Entrypoint == "" {
			a.Entrypoint = eff.(operation.PlaceMembers).Entrypoint
		}
	} else {
		a.Members = append(append([]api.Member(nil), a.Members...), add...)
	}
	fleet.Addons[i] = a
	if fleet.Usage != nil {
		if fleet.Usage.Remove(fleet, before) != nil || fleet.Usage.Add(fleet, a) != nil {
			fleet.Usage = nil // a plan nothing sizes: count every addon from now on
		}
	}
	return fleet
}

func (e *engine) claim(addonID string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inflight[addonID] {
		return false
	}
	e.inflight[addonID] = true
	return true
}

func (e *engine) release(addonID string) {
	e.mu.Lock()
	delete(e.inflight, addonID)
	e.mu.Unlock()
}

func (e *engine) setLeft(l []operation.Left) {
	e.mu.Lock()
	e.left = l
	e.mu.Unlock()
}

// Left lists the members healing leaves where they are (last pass).
func (e *engine) Left() []operation.Left {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]operation.Left(nil), e.left...)
}

// errTerminal marks an action error that no retry can fix.
var errTerminal = errors.New("cannot succeed")

// checkSentinel: the sentinel names the primary and knows the replicas
// and its peers (operation.CheckSentinel).
func (e *engine) checkSentinel(ctx context.Context, a operation.CheckSentinel, pw, name string) error {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	got, err := e.act.master(cctx, a.Addr, pw, name)
	if err != nil {
		return err
	}
	if got != a.Primary {
		return fmt.Errorf("sentinel %s names %s, the primary is %s", a.Addr, got, a.Primary)
	}
	p, err := e.act.known(cctx, a.Addr, pw, name)
	if err != nil {
		return err
	}
	for _, r := range a.Replicas {
		if !redisctl.Has(p.Replicas, r) {
			return fmt.Errorf("sentinel %s does not know replica %s yet", a.Addr, r)
		}
	}
	if len(p.Sentinels) < a.Others {
		return fmt.Errorf("sentinel %s knows %d of its %d peers", a.Addr, len(p.Sentinels), a.Others)
	}
	return nil
}

// perform runs one action with its time bound.
func (e *engine) perform(ctx context.Context, v operation.View, act operation.Action) error {
	pw, name := v.Addon.FleetPassword.Reveal(), v.Addon.ID
	switch a := act.(type) {
	case operation.PingEntrypoint:
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		return e.act.ping(cctx, a.Addr, pw)
	case operation.CheckSettings:
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		return e.act.checkSettings(cctx, a.Addr, pw, a.Settings, a.PlanMB)
	case operation.CheckSentinel:
		return e.checkSentinel(ctx, a, pw, name)
	case operation.CheckJoined:
		for _, c := range a.Sentinels {
			if err := e.checkSentinel(ctx, c, pw, name); err != nil {
				return err
			}
		}
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		if err := e.act.ping(cctx, a.Entrypoint, pw); err != nil {
			return fmt.Errorf("entrypoint %s: %w", a.Entrypoint, err)
		}
		return nil
	case operation.Switchover:
		cctx, cancel := context.WithTimeout(ctx, switchoverTimeout)
		defer cancel()
		err := e.act.switchover(cctx, redisctl.SwitchoverRequest{Name: name, Password: pw, Primary: a.Primary, Replica: a.Replica, Sentinels: a.Sentinels})
		if errors.Is(err, redisctl.ErrNoReplica) {
			return fmt.Errorf("%w: %w", errTerminal, err)
		}
		return err
	case operation.Failover:
		cctx, cancel := context.WithTimeout(ctx, sentinelTimeout*time.Duration(max(1, len(a.Sentinels))))
		defer cancel()
		_, err := e.act.failover(cctx, a.Sentinels, pw, name)
		if errors.Is(err, redisctl.ErrFailoverInProgress) {
			return nil
		}
		return err
	case operation.ResetSentinels:
		cctx, cancel := context.WithTimeout(ctx, resetTimeout)
		defer cancel()
		return e.rollingReset(cctx, pw, name, a)
	case operation.CheckMaxmemory:
		var errs []error
		for _, addr := range a.Addrs {
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			errs = append(errs, e.act.checkMaxmemory(cctx, addr, pw, a.PlanMB))
			cancel()
		}
		return errors.Join(errs...)
	case operation.Save:
		cctx, cancel := context.WithTimeout(ctx, saveTimeout)
		defer cancel()
		return e.act.save(cctx, a.Addr, pw)
	case operation.CheckUpgraded:
		return e.checkUpgraded(ctx, v, a)
	case operation.CheckPasswords:
		return e.checkPasswords(ctx, v, a)
	case operation.NotifyApp:
		ev := api.AppHookEvent{AddonID: v.Addon.ID, App: v.Addon.App, Change: a.Change, RedisURL: RedisURL(v.Addon),
			OperationID: a.OperationID, Kind: a.Kind}
		if e.act.notify != nil {
			return e.act.notify(ctx, ev)
		}
		return e.hook.run(ctx, ev)
	}
	return fmt.Errorf("%w: unknown action %T", errTerminal, act)
}

// rollingReset resets the sentinels one at a time: each must know every
// replica and the other sentinels again before the next is reset, so a
// majority always knows the replica a failover needs. A sentinel that does
// not answer is skipped (it is on a lost host, or being replaced); the
// reset fails unless a majority went through.
func (e *engine) rollingReset(ctx context.Context, pw, name string, a operation.ResetSentinels) error {
	ok := 0
	var errs []string
	member := map[string]bool{}
	for _, m := range a.Members {
		member[m] = true
	}
	for _, s := range a.Sentinels {
		// Nothing to forget (it never met the sentinel that left, e.g. it
		// is the replacement): no reset, no window without the replicas.
		kctx, cancel := context.WithTimeout(ctx, sentinelTimeout)
		k, err := e.act.known(kctx, s, pw, name)
		cancel()
		if err == nil && len(a.Members) > 0 {
			stale := false
			for _, p := range k.Sentinels {
				stale = stale || !member[p.Addr]
			}
			if !stale {
				ok++
				continue
			}
		}
		rctx, cancel := context.WithTimeout(ctx, sentinelTimeout)
		err = e.act.reset(rctx, s, pw, name)
		cancel()
		if err != nil {
			errs = append(errs, s+": "+err.Error())
			continue
		}
		err = pollCtx(ctx, func() error {
			kctx, cancel := context.WithTimeout(ctx, sentinelTimeout)
			defer cancel()
			p, err := e.act.known(kctx, s, pw, name)
			if err != nil {
				return err
			}
			for _, r := range a.Replicas {
				if !redisctl.Has(p.Replicas, r) {
					return fmt.Errorf("sentinel %s does not know replica %s again yet", s, r)
				}
			}
			if n := len(p.Sentinels); n < len(a.Sentinels)-1 {
				return fmt.Errorf("sentinel %s knows %d of the %d other sentinels again", s, n, len(a.Sentinels)-1)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("after resetting %s: %w", s, err)
		}
		ok++
	}
	if ok*2 <= len(a.Sentinels) {
		return fmt.Errorf("%d of %d sentinels reset: %s", ok, len(a.Sentinels), strings.Join(errs, "; "))
	}
	return nil
}

// pollCtx calls fn every 100 ms until it returns nil or ctx ends (then its
// last error).
func pollCtx(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			return nil
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// current reads operation id from the FSM.
func (e *engine) current(id string) (api.Operation, bool) {
	var (
		op api.Operation
		ok bool
	)
	e.store.FSM().Read(func(s *State, _ uint64) { op, ok = s.Operations[id] })
	return op, ok
}

// record commits an action's outcome on the operation as it is now, if
// the step it was decided for is still the current one (else the outcome
// is about a step already recorded: dropped).
func (e *engine) record(ctx context.Context, opID string, step int, d operation.Decision, actErr error) error {
	var (
		op api.Operation
		ok bool
	)
	e.store.FSM().Read(func(s *State, _ uint64) {
		op, ok = s.Operations[opID]
		op.Steps = append([]api.Step(nil), op.Steps...)
	})
	if !ok || op.State.Finished() {
		return nil
	}
	now := e.now().UTC()
	i := op.CurrentStep()
	if i >= len(op.Steps) || i != step {
		return nil
	}
	mut := d.Action.Mutates()
	if mut {
		op.Steps[i].Attempts++
		op.Steps[i].LastAttempt = now
	}
	switch {
	case actErr == nil && d.Then == operation.Advance:
		if mut {
			e.log.Info("operation action done", "op", op.ID, "addon", op.AddonID, "action", d.Action.String())
		}
		return e.commit(ctx, op, operation.Decision{Kind: operation.Advance, Detail: d.Detail, Effect: d.Effect, Status: d.Status}, now, mut)
	case actErr == nil:
		if mut {
			e.log.Info("operation action done", "op", op.ID, "addon", op.AddonID, "action", d.Action.String())
		}
		return e.commit(ctx, op, operation.Decision{Kind: operation.Wait, Detail: d.Detail}, now, mut)
	case errors.Is(actErr, errTerminal):
		return e.commit(ctx, op, operation.Decision{Kind: operation.Fail, Detail: d.Action.String() + ": " + actErr.Error()}, now, true)
	}
	var detail string
	switch a := d.Action.(type) {
	case operation.PingEntrypoint:
		detail = fmt.Sprintf("entrypoint %s does not answer yet: %v", a.Addr, actErr)
	case operation.CheckSettings:
		detail = "waiting for the members to apply them: " + actErr.Error()
	case operation.CheckMaxmemory:
		detail = "waiting for the agents to resize: " + strings.ReplaceAll(actErr.Error(), "\n", "; ")
	case operation.NotifyApp:
		detail = fmt.Sprintf("app hook attempt %d failed: %v", op.Steps[i].Attempts, actErr)
		e.log.Warn("app hook failed", "op", op.ID, "addon", op.AddonID, "attempt", op.Steps[i].Attempts, "err", actErr)
	case operation.CheckSentinel:
		detail = "waiting for the new sentinel to know the addon: " + actErr.Error()
	case operation.CheckJoined:
		detail = "waiting for the new members to join: " + actErr.Error()
	case operation.CheckPasswords:
		detail = "waiting for the agents to apply " + a.Want + ": " + strings.ReplaceAll(actErr.Error(), "\n", "; ")
	case operation.CheckUpgraded:
		detail = "waiting for " + a.Addr + " on " + string(a.Engine) + " " + a.Version + ": " + actErr.Error()
	default:
		detail = fmt.Sprintf("%s failed (attempt %d), retrying: %v", d.Action, op.Steps[i].Attempts, actErr)
		e.log.Warn("operation action failed; will retry", "op", op.ID, "addon", op.AddonID, "action", d.Action.String(), "attempt", op.Steps[i].Attempts, "err", actErr)
	}
	return e.commit(ctx, op, operation.Decision{Kind: operation.Wait, Detail: detail}, now, mut)
}

// commit records decision d on op (whose current step it is about) with
// its effect, in one Raft entry where it can. A wait that changes nothing
// is not written unless force.
func (e *engine) commit(ctx context.Context, op api.Operation, d operation.Decision, now time.Time, force bool) error {
	i := op.CurrentStep()
	var step *api.Step
	if i < len(op.Steps) {
		step = &op.Steps[i]
		if step.StartedAt.IsZero() {
			step.StartedAt = now
		}
	}
	op.UpdatedAt = now
	apply := func(t CommandType, cmd any) error {
		_, err := e.store.Apply(ctx, t, cmd)
		return err
	}
	switch d.Kind {
	case operation.Wait:
		if step == nil {
			return nil
		}
		prevDetail, prevState, prevStuck := step.Detail, step.State, op.Stuck
		step.State, step.Detail = api.OpRunning, d.Detail
		op.State = api.OpRunning
		op.Stuck = operation.Stuck(op, now, e.limits)
		if sj, ok := d.Effect.(operation.StartJob); ok {
			id, err := newJobID()
			if err != nil {
				return err
			}
			j := operation.Job{ID: id, Kind: sj.Kind, OperationID: op.ID, AddonID: op.AddonID, BackupID: op.BackupID,
				HostID: sj.HostID, MemberID: sj.MemberID, CreatedAt: now}
			op.Steps[i].Detail = d.Detail + " (job " + id + ")"
			if err := apply(CmdJobStart, JobStartCmd{Job: j, Operation: op}); err != nil {
				return err
			}
			e.log.Info("job listed", "op", op.ID, "addon", op.AddonID, "kind", sj.Kind, "job", id, "backup", op.BackupID, "host", sj.HostID, "member", sj.MemberID)
			return nil
		}
		if !force && prevState == api.OpRunning && prevDetail == d.Detail && prevStuck == op.Stuck {
			return nil
		}
		if op.Stuck != "" && prevStuck == "" {
			e.log.Error("operation stuck", "op", op.ID, "addon", op.AddonID, "kind", op.Kind, "why", op.Stuck)
		}
		return apply(CmdOperationUpdate, OperationUpdateCmd{Operation: op})
	case operation.Advance:
		if step != nil {
			step.State, step.FinishedAt = api.OpDone, now
			if d.Detail != "" {
				step.Detail = d.Detail
			}
		}
		op.Stuck = ""
		op.State = api.OpRunning
		if op.CurrentStep() >= len(op.Steps) {
			op.State = api.OpDone
		}
		var err error
		switch eff := d.Effect.(type) {
		case nil:
			err = apply(CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: d.Status})
			d.Status = ""
		case operation.PlaceMembers:
			err = apply(CmdAddonPlaced, AddonPlacedCmd{AddonID: op.AddonID, Members: eff.Members, Entrypoint: eff.Entrypoint, Operation: op})
		case operation.AddMember:
			op.Replacement = eff.Member.ID
			err = apply(CmdMemberAdded, MemberAddedCmd{AddonID: op.AddonID, Member: eff.Member, Operation: op})
		case operation.RemoveMember:
			err = apply(CmdMemberRemoved, MemberRemovedCmd{AddonID: op.AddonID, MemberID: eff.MemberID, Operation: op})
		case operation.SetMemberVersion, operation.StopMember, operation.SetAddonVersion, operation.MoveEntrypoint:
			c, _ := upgradeCmd(op, eff, now)
			err = apply(CmdMemberVersion, c)
		case operation.UpdateBackup:
			err = apply(CmdBackupUpdate, BackupUpdateCmd{Backup: eff.Backup, Operation: op, AddonStatus: d.Status})
			d.Status = ""
		case operation.RotateEffect:
			err = apply(CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: op.AddonID, Change: eff.Change, Until: eff.Until, Operation: op, At: now})
		case operation.DeleteAddon:
			var members []api.Member
			e.store.FSM().Read(func(s *State, _ uint64) { members = append(members, s.Addons[op.AddonID].Members...) })
			if err = apply(CmdAddonDelete, AddonDeleteCmd{AddonID: op.AddonID, At: now}); err == nil {
				for _, m := range members {
					e.stats.drop(m.ID)
				}
				err = apply(CmdOperationUpdate, OperationUpdateCmd{Operation: op})
			}
		default:
			return fmt.Errorf("unknown effect %T", d.Effect)
		}
		if err == nil && d.Status != "" && op.State != api.OpDone {
			err = apply(CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: d.Status})
		}
		if err == nil {
			e.logStep(op, i, d)
			e.finished(op)
		}
		return err
	case operation.Fail:
		if step != nil {
			step.State, step.Detail, step.FinishedAt = api.OpFailed, d.Detail, now
		}
		op.State, op.Error, op.Stuck = api.OpFailed, d.Detail, ""
		e.log.Warn("operation failed", "op", op.ID, "addon", op.AddonID, "kind", op.Kind, "reason", d.Detail)
		var err error
		if ub, ok := d.Effect.(operation.UpdateBackup); ok {
			err = apply(CmdBackupUpdate, BackupUpdateCmd{Backup: ub.Backup, Operation: op, AddonStatus: d.Status})
		} else {
			err = apply(CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: d.Status})
		}
		if err == nil {
			e.finished(op)
		}
		return err
	case operation.Cancel:
		op.State, op.Error, op.Stuck = api.OpCancelled, d.Detail, ""
		if step != nil && step.State == api.OpRunning {
			step.Detail = strings.TrimPrefix(step.Detail+"; stopped here", "; ")
		}
		e.log.Warn("operation cancelled", "op", op.ID, "addon", op.AddonID, "kind", op.Kind, "account", d.Detail)
		if c, ok := upgradeCmd(op, d.Effect, now); ok {
			c.AddonStatus = d.Status
			return apply(CmdMemberVersion, c)
		}
		if re, ok := d.Effect.(operation.RotateEffect); ok {
			return apply(CmdPasswordRotateStep, PasswordRotateStepCmd{AddonID: op.AddonID, Change: re.Change, Operation: op, At: now})
		}
		if rm, ok := d.Effect.(operation.RemoveMember); ok {
			return apply(CmdMemberRemoved, MemberRemovedCmd{AddonID: op.AddonID, MemberID: rm.MemberID, Operation: op})
		}
		if ub, ok := d.Effect.(operation.UpdateBackup); ok {
			err := apply(CmdBackupUpdate, BackupUpdateCmd{Backup: ub.Backup, Operation: op, AddonStatus: d.Status})
			if err == nil {
				e.finished(op)
			}
			return err
		}
		return apply(CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: d.Status})
	}
	return fmt.Errorf("unknown decision %v", d.Kind)
}

// finished counts a backup operation that ended.
func (e *engine) finished(op api.Operation) {
	if e.backups != nil && op.State.Finished() {
		e.backups.metrics.finished(op)
	}
}

func (e *engine) logStep(op api.Operation, i int, d operation.Decision) {
	name := "done"
	if i < len(op.Steps) {
		name = op.Steps[i].Name
	}
	e.log.Info("operation step done", "op", op.ID, "addon", op.AddonID, "kind", op.Kind, "step", name, "detail", d.Detail)
	if op.State == api.OpDone {
		e.log.Info("operation done", "op", op.ID, "addon", op.AddonID, "kind", op.Kind, "took", op.UpdatedAt.Sub(op.CreatedAt).Round(time.Millisecond).String())
	}
}
