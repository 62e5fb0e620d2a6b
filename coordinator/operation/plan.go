package operation

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// Plan changes. The new plan is recorded first (the command that starts
// the operation), so every agent's assignment carries the new plan memory
// and the agent resizes its redis members in place (cgroup limit and
// CONFIG SET maxmemory, the limit grown before maxmemory and shrunk
// after): nothing restarts, no connection is cut, no role moves.
//
//   - Same kind (starter → starter, business → business): the live resize
//     is the whole change.
//   - Starter → business: every addon's entrypoint is an HAProxy (a
//     starter runs one beside its redis node, on the addon's own address),
//     so the URL stays: the missing members are placed around the kept
//     redis node and haproxy (add members: a replica, three sentinels, the
//     pair's second haproxy); the starter's haproxy learns the replica at
//     run time (the agent adds the server through HAProxy's runtime API,
//     no restart) and starts following the sentinels. Done when every new
//     member runs, the replica is in sync with the primary, every
//     sentinel names the primary and knows the replica and its two peers,
//     and the entrypoint answers.
//   - Business → starter: the primary and the haproxy holding the
//     entrypoint stay, every other member goes in one step (the replica
//     and the sentinels together: nothing is left that could fail over
//     to a member being removed), only once the primary serves as the
//     primary. The kept haproxy drops the replica's server at run time.
//
// Then the engine checks each redis member's maxmemory, tells the app (the
// app hook) and marks the addon running.

// Step names of a plan change (recorded in the FSM: never rename one).
const (
	StepRecordPlan    = "record plan"
	StepResizeMembers = "resize members"
	// starter → business
	StepAddMembers  = "add members"
	StepWaitMembers = "wait new members"
	// business → starter
	StepRemoveSurplus = "remove surplus members"
	// StepNotifyApp runs the fleet's app hook: shared by every operation
	// that changes what an app runs on (plan changes, engine upgrades).
	StepNotifyApp = "notify app"
)

// DataHeadroomPercent is what a plan must hold beyond the data stored now
// (used_memory of the primary) for a change to it to be accepted.
const DataHeadroomPercent = 10

// PlanChangeSteps is the step list of a plan-change operation from a plan
// of kind from to one of kind to. The command that starts it records the
// plan: its first step is done at once.
func PlanChangeSteps(from, to api.PlanKind) []api.Step {
	switch {
	case from == api.PlanStarter && to == api.PlanBusiness:
		return steps(StepRecordPlan, StepAddMembers, StepWaitMembers, StepResizeMembers, StepNotifyApp, StepMarkRunning)
	case from == api.PlanBusiness && to == api.PlanStarter:
		return steps(StepRecordPlan, StepRemoveSurplus, StepResizeMembers, StepNotifyApp, StepMarkRunning)
	}
	return steps(StepRecordPlan, StepResizeMembers, StepNotifyApp, StepMarkRunning)
}

// PlanChangeRequest is what the pre-flight check of a plan change reads.
type PlanChangeRequest struct {
	Addon api.Addon
	Plans []api.Plan
	// To is the plan asked for, by name.
	To string
	// Active is the addon's active operation when Busy.
	Active api.Operation
	Busy   bool
	// Fleet is the scheduler's view (the addon at its current plan).
	Fleet scheduler.State
	// UsedBytes is used_memory of the addon's primary, read live when
	// Measured; the size check is skipped until it is (the cheap
	// refusals are decided without talking to redis).
	UsedBytes int64
	Measured  bool
}

// CheckPlanChange decides whether addon r.Addon may move to plan r.To now
// and returns both plans. Each refusal is one line for the operator,
// wrapping an api sentinel: an unknown or identical plan, or a starter
// without an entrypoint of its own (made before starters had one) going
// business, is invalid; another operation of the addon or an addon that is
// not running is a conflict; a plan smaller than the data stored now plus
// DataHeadroomPercent is too small; a member's host without room for the
// larger reservation, or no hosts for the members a business plan adds,
// is no capacity.
func CheckPlanChange(r PlanChangeRequest) (from, to api.Plan, err error) {
	a := r.Addon
	to, ok := api.FindPlan(r.Plans, r.To)
	if !ok {
		return from, to, api.Invalidf("unknown plan %q; valid plans: %s", r.To, planList(r.Plans))
	}
	from, ok = api.FindPlan(r.Plans, a.Plan)
	if !ok { // a retired plan: its name says its kind
		from = api.Plan{Name: a.Plan, Kind: api.PlanStarter}
		if strings.Contains(a.Plan, "-"+string(api.PlanBusiness)+"-") {
			from.Kind = api.PlanBusiness
		}
	}
	switch {
	case to.Name == a.Plan:
		return from, to, api.Invalidf("addon %s is already on plan %s; nothing to change", a.ID, a.Plan)
	case from.Kind != to.Kind && !hasRole(a, api.RoleHAProxy):
		return from, to, api.Invalidf("addon %s was created before starters had an entrypoint of their own: its URL is its redis node's address, "+
			"which an HAProxy pair cannot take over; pick another %s plan, or add a %s addon, copy the data over and point the app at its URL",
			a.ID, from.Kind, to.Kind)
	case r.Busy:
		return from, to, fmt.Errorf("%w: addon %s has operation %s (%s) in progress; wait for it to finish (cacheplane operations --addon %s) or cancel it (cacheplane operations-cancel %s)",
			api.ErrConflict, a.ID, r.Active.ID, r.Active.Kind, a.ID, r.Active.ID)
	case a.Status != api.AddonRunning:
		return from, to, fmt.Errorf("%w: addon %s is %s; its plan can be changed once it is running", api.ErrConflict, a.ID, a.Status)
	}
	if r.Measured {
		need := r.UsedBytes + r.UsedBytes*DataHeadroomPercent/100
		if need > int64(to.MemoryMB)<<20 {
			return from, to, fmt.Errorf("%w: plan %s (%d MB) is too small for addon %s: it stores %s now (used_memory of its primary), %s with %d %% headroom; delete data first, or %s",
				api.ErrPlanTooSmall, to.Name, to.MemoryMB, a.ID, mb(r.UsedBytes), mb(need), DataHeadroomPercent, biggerPlan(r.Plans, to.Kind, need))
		}
	}
	if from.Kind == api.PlanStarter && to.Kind == api.PlanBusiness {
		// The added members must have hosts now (the kept ones are
		// resized: PlanChangeFits below).
		if _, _, err := scheduler.Place(r.Fleet, scheduler.Request{AddonID: a.ID, Plan: to, Keep: a.Members}); err != nil {
			var ce *scheduler.CapacityError
			if errors.As(err, &ce) {
				return from, to, fmt.Errorf("%w: cannot change addon %s to %s: %s", api.ErrNoCapacity, a.ID, to.Name, ce.Message)
			}
			return from, to, fmt.Errorf("cannot change addon %s to %s: %w", a.ID, to.Name, err)
		}
	}
	if err := scheduler.PlanChangeFits(r.Fleet, a, to); err != nil {
		var ce *scheduler.CapacityError
		if errors.As(err, &ce) {
			return from, to, fmt.Errorf("%w: cannot change addon %s to %s: %s", api.ErrNoCapacity, a.ID, to.Name, ce.Message)
		}
		return from, to, fmt.Errorf("cannot change addon %s to %s: %w", a.ID, to.Name, err)
	}
	return from, to, nil
}

// mb shows a byte count in MB with one decimal.
func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

// biggerPlan names the smallest plan of kind holding need bytes.
func biggerPlan(plans []api.Plan, kind api.PlanKind, need int64) string {
	ps := append([]api.Plan(nil), plans...)
	api.SortPlans(ps)
	for _, p := range ps {
		if p.Kind == kind && int64(p.MemoryMB)<<20 >= need {
			return "choose a plan of at least " + p.Name
		}
	}
	return "no " + string(kind) + " plan is large enough"
}

func planList(plans []api.Plan) string {
	names := make([]string, 0, len(plans))
	for _, p := range plans {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// PlanChange describes a plan change as the app hook tells it.
func PlanChange(from, to string) string { return "plan " + from + " -> " + to }

// AppHook is the fleet's app hook as the engine runs it.
type AppHook struct {
	// Describe names what runs, without secrets ("" = no hook configured).
	Describe string
	// Attempts is how often a failing hook is tried; Every paces them.
	Attempts int
	Every    time.Duration
}

// CheckMaxmemory checks that each redis member at Addrs runs with
// maxmemory PlanMB.
type CheckMaxmemory struct {
	Addrs  []string
	PlanMB int
}

// NotifyApp runs the fleet's app hook for the addon: its id, app, Change
// and its URL (the engine supplies them from the addon).
type NotifyApp struct {
	Change      string
	OperationID string
	Kind        api.OperationKind
}

func (CheckMaxmemory) Mutates() bool { return false }

// Mutates: a hook is told once per attempt (attempts are counted and
// paced).
func (NotifyApp) Mutates() bool { return true }

func (a CheckMaxmemory) String() string {
	return fmt.Sprintf("check maxmemory %dmb on %s", a.PlanMB, strings.Join(a.Addrs, ", "))
}
func (a NotifyApp) String() string { return "app hook: " + a.Change }

// planChange: the plan is recorded (so the agents resize live); wait until
// every redis member runs with the new maxmemory, tell the app, mark the
// addon running.
func planChange(v View, op api.Operation, step api.Step) Decision {
	if !v.Exists {
		return fail("the addon no longer exists")
	}
	switch step.Name {
	case StepRecordPlan:
		return advance("plan " + v.Addon.Plan + " recorded")
	case StepAddMembers:
		return addMembers(v)
	case StepWaitMembers:
		return waitMembers(v, step)
	case StepRemoveSurplus:
		return removeSurplus(v)
	case StepResizeMembers:
		return resizeMembers(v)
	case StepNotifyApp:
		return NotifyStep(v, op, step)
	case StepMarkRunning:
		return Decision{Kind: Advance, Status: api.AddonRunning}
	}
	return fail("unknown step " + step.Name)
}

// resizeMembers waits until every redis member serves, then checks its
// maxmemory. A business member on a down host is left out (it starts on
// the new plan when its host returns, or its replacement is placed at the
// new size); a starter's only member is waited for.
func resizeMembers(v View) Decision {
	if !v.PlanKnown {
		return Decision{Kind: Fail, Status: api.AddonError, Detail: fmt.Sprintf("plan %s is not in the catalog", v.Addon.Plan)}
	}
	var addrs, names, skipped, waiting []string
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
			addrs, names = append(addrs, addr(v, m)), append(names, m.ID)
		}
	}
	if len(waiting) > 0 {
		return wait("waiting for " + strings.Join(waiting, ", ") + " to serve, to check its maxmemory")
	}
	if len(addrs) == 0 {
		return wait("no redis member serves: waiting for one, to check its maxmemory")
	}
	detail := fmt.Sprintf("maxmemory %dmb on %s, resized live", v.Plan.MemoryMB, strings.Join(names, ", "))
	if len(skipped) > 0 {
		detail += "; " + strings.Join(skipped, ", ") + " on a down host: it starts on the new plan"
	}
	return Decision{Kind: Run, Action: CheckMaxmemory{Addrs: addrs, PlanMB: v.Plan.MemoryMB}, Then: Advance, Detail: detail}
}

// NotifyStep is the app-hook step of any operation whose Change says what
// changed: no hook configured → done at once; else the hook runs, paced,
// up to v.AppHook.Attempts times. A hook that keeps failing does not fail
// the operation (what it reports on is done): the step records that the
// app was not told, with the last error, and the operation goes on.
func NotifyStep(v View, op api.Operation, step api.Step) Decision {
	h := v.AppHook
	switch {
	case h.Describe == "":
		return advance("no hook configured")
	case !v.Exists:
		return advance("the addon no longer exists: nothing to tell")
	case step.Attempts >= max(h.Attempts, 1):
		return advance(fmt.Sprintf("the app was NOT told (%d attempts failed; the change itself is done): %s", step.Attempts, step.Detail))
	}
	ok := "app told (" + h.Describe + "): ok"
	if step.Attempts > 0 {
		ok += fmt.Sprintf(" on attempt %d", step.Attempts+1)
	}
	return paced(step, v, Decision{Kind: Run, Action: NotifyApp{Change: op.Change, OperationID: op.ID, Kind: op.Kind}, Then: Advance,
		Detail: ok, RetryAfter: h.Every})
}

func hasRole(a api.Addon, r api.Role) bool {
	for _, m := range a.Members {
		if m.Role == r {
			return true
		}
	}
	return false
}

// addMembers places the members a business plan runs beyond the kept ones
// (all of the addon's); the placement keeps the entrypoint.
func addMembers(v View) Decision {
	a := v.Addon
	if !v.PlanKnown {
		return Decision{Kind: Fail, Status: api.AddonError, Detail: fmt.Sprintf("plan %s is not in the catalog", a.Plan)}
	}
	if len(a.Members) >= v.Plan.Redis()+v.Plan.Sentinels()+v.Plan.HAProxies() {
		return advance("every member of " + a.Plan + " is placed")
	}
	p, _, err := scheduler.Place(v.Fleet, scheduler.Request{AddonID: a.ID, Plan: v.Plan, Keep: a.Members})
	if err != nil {
		if errors.Is(err, api.ErrNoCapacity) {
			return wait("waiting for capacity: " + api.Message(err))
		}
		return Decision{Kind: Fail, Status: api.AddonError, Detail: api.Message(err)}
	}
	var added []string
	for _, m := range p.Members {
		if _, kept := member(a, m.ID); !kept {
			added = append(added, fmt.Sprintf("%s on %s", m.ID, m.HostID))
		}
	}
	return Decision{Kind: Advance, Effect: PlaceMembers{Members: p.Members, Entrypoint: a.Entrypoint},
		Detail: "added " + strings.Join(added, ", ") + "; entrypoint " + a.Entrypoint + " kept"}
}

// waitMembers waits until every member runs, the replicas are in sync,
// every sentinel could run a failover (names the primary, knows the
// replicas and its peers) and the entrypoint answers.
func waitMembers(v View, step api.Step) Decision {
	a := v.Addon
	var waiting []string
	for _, m := range a.Members {
		o := v.Observed[m.ID]
		switch {
		case o.Seen && o.State == api.MemberFailed && !step.StartedAt.IsZero() && v.Now.Sub(step.StartedAt) >= startFailGrace:
			return wait(fmt.Sprintf("member %s on host %s failed: %s", m.ID, m.HostID, firstLine(o.Detail)))
		case !o.Seen || o.State != api.MemberRunning:
			waiting = append(waiting, fmt.Sprintf("%s on %s (%s)", m.ID, m.HostID, describe(o)))
		}
	}
	if len(waiting) > 0 {
		return wait("waiting for " + strings.Join(waiting, ", "))
	}
	prim, ok := Primary(a)
	if !ok {
		return wait("no primary recorded")
	}
	for _, m := range a.Members {
		if m.Role == api.RoleRedis && m.ID != prim.ID {
			if why := notInSync(v, m.ID); why != "" {
				return wait(why)
			}
		}
	}
	var checks []CheckSentinel
	for _, m := range a.Members {
		if m.Role == api.RoleSentinel {
			checks = append(checks, CheckSentinel{Addr: addr(v, m), Primary: addr(v, prim), Replicas: servingReplicas(v), Others: v.Plan.Sentinels() - 1})
		}
	}
	return Decision{Kind: Run, Action: CheckJoined{Sentinels: checks, Entrypoint: a.Entrypoint}, Then: Advance,
		Detail: fmt.Sprintf("%d members running; replica in sync; every sentinel names the primary %s and knows the replica and its peers; entrypoint %s answers",
			len(a.Members), prim.ID, a.Entrypoint)}
}

// removeSurplus keeps the primary and the entrypoint's haproxy (the VIP
// holder, else the one whose address is the entrypoint) and drops every
// other member, once the primary serves as the primary.
func removeSurplus(v View) Decision {
	a := v.Addon
	if n := v.Plan.Redis() + v.Plan.Sentinels() + v.Plan.HAProxies(); v.PlanKnown && len(a.Members) <= n {
		return advance("only the members of " + a.Plan + " are left")
	}
	prim, ok := Primary(a)
	if !ok {
		return wait("no primary recorded: waiting for one before the others go")
	}
	if o := v.Observed[prim.ID]; !o.alive() || o.RedisRole != "master" {
		return wait(fmt.Sprintf("waiting for the primary %s to serve as the primary before the other members go (now: %s)", prim.ID, describe(o)))
	}
	var holder api.Member
	for _, m := range a.Members {
		if m.Role != api.RoleHAProxy {
			continue
		}
		if m.Active || (holder.ID == "" && addr(v, m) == a.Entrypoint) {
			holder = m
		}
	}
	if holder.ID == "" {
		for _, m := range a.Members { // no VIP and no own-address match: the first
			if m.Role == api.RoleHAProxy {
				holder = m
				break
			}
		}
	}
	kept := []api.Member{prim}
	if holder.ID != "" {
		kept = append(kept, holder)
	}
	var gone []string
	for _, m := range a.Members {
		if m.ID != prim.ID && m.ID != holder.ID {
			gone = append(gone, m.ID)
		}
	}
	return Decision{Kind: Advance, Effect: PlaceMembers{Members: kept, Entrypoint: a.Entrypoint},
		Detail: fmt.Sprintf("kept the primary %s on %s and the entrypoint's haproxy %s on %s; removed %s",
			prim.ID, prim.HostID, holder.ID, holder.HostID, strings.Join(gone, ", "))}
}

// CheckJoined checks that each sentinel could run a failover
// (CheckSentinel) and that the entrypoint answers PING.
type CheckJoined struct {
	Sentinels  []CheckSentinel
	Entrypoint string
}

func (CheckJoined) Mutates() bool { return false }
func (a CheckJoined) String() string {
	return fmt.Sprintf("check %d sentinels and entrypoint %s", len(a.Sentinels), a.Entrypoint)
}
