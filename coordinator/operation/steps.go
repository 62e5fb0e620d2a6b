package operation

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// Step names. They are recorded in the FSM: never rename one.
const (
	// provision
	StepPlace       = "place members"
	StepStart       = "start members"
	StepWaitHealthy = "wait healthy"
	StepMarkRunning = "mark running"
	// remove
	StepStopMembers = "stop members"
	StepDeleteData  = "delete data"
	StepForget      = "forget addon"
	// settings-change
	StepApplySettings = "apply settings"
	// replace-member
	StepDemote        = "demote primary"
	StepPlaceNew      = "place replacement"
	StepWaitNew       = "wait replacement running"
	StepRemoveOld     = "remove old member"
	StepResetSentinel = "reset sentinels"
)

// startFailGrace: a member reported failed this soon after the start step
// began is waited for, not a failed provision — a member restarted for a
// new assignment right after placement (HAProxy reads its file only at
// start) is briefly reported exited (found by e2e). A member that really
// cannot start (an image that does not import, a process that exits) is
// still reported failed after it.
const startFailGrace = 3 * time.Second

// firstLine is the first line of a member's failure detail.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Retry pacing of mutating actions.
const (
	switchoverEvery = 10 * time.Second
	failoverEvery   = 5 * time.Second
	resetEvery      = 5 * time.Second
)

func steps(names ...string) []api.Step {
	out := make([]api.Step, len(names))
	for i, n := range names {
		out[i] = api.Step{Name: n, State: api.OpPending}
	}
	return out
}

// ProvisionSteps is the step list of a provision operation.
func ProvisionSteps() []api.Step {
	return steps(StepPlace, StepStart, StepWaitHealthy, StepMarkRunning)
}

// RemoveSteps is the step list of a remove operation.
func RemoveSteps() []api.Step { return steps(StepStopMembers, StepDeleteData, StepForget) }

// SettingsSteps is the step list of a settings-change operation.
func SettingsSteps() []api.Step { return steps(StepApplySettings, StepMarkRunning) }

// ReplaceSteps is the step list of a replace-member operation.
func ReplaceSteps() []api.Step {
	return steps(StepDemote, StepPlaceNew, StepWaitNew, StepRemoveOld, StepResetSentinel)
}

func advance(detail string) Decision { return Decision{Kind: Advance, Detail: detail} }
func wait(detail string) Decision    { return Decision{Kind: Wait, Detail: detail} }
func fail(detail string) Decision    { return Decision{Kind: Fail, Detail: detail} }

// provision: place members, wait until every agent runs its member, PING
// the entrypoint, mark the addon running.
func provision(v View, op api.Operation, step api.Step) Decision {
	if !v.Exists {
		return fail("the addon no longer exists")
	}
	a := v.Addon
	switch step.Name {
	case StepPlace:
		if !v.PlanKnown {
			return Decision{Kind: Fail, Status: api.AddonError, Detail: fmt.Sprintf("plan %s is not in the catalog", a.Plan)}
		}
		p, _, err := scheduler.Place(v.Fleet, scheduler.Request{AddonID: a.ID, Plan: v.Plan})
		if err != nil {
			if errors.Is(err, api.ErrNoCapacity) {
				return wait("waiting for capacity: " + api.Message(err))
			}
			return Decision{Kind: Fail, Status: api.AddonError, Detail: api.Message(err)}
		}
		if v.VIPPool != "" && a.Entrypoint == "" { // every addon: a starter keeps its URL when it becomes a business addon
			vip, err := AllocateVIP(v.VIPPool, v.UsedEntrypoints)
			if err != nil {
				return wait("waiting for an entrypoint address: " + err.Error())
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
		return Decision{Kind: Advance, Detail: fmt.Sprintf("%d members placed; entrypoint %s", len(p.Members), p.Entrypoint),
			Effect: PlaceMembers{Members: p.Members, Entrypoint: p.Entrypoint}}
	case StepStart:
		var waiting []string
		for _, m := range a.Members {
			o := v.Observed[m.ID]
			switch {
			case o.Seen && o.State == api.MemberFailed && !step.StartedAt.IsZero() && v.Now.Sub(step.StartedAt) >= startFailGrace:
				return Decision{Kind: Fail, Status: api.AddonError, Detail: fmt.Sprintf("member %s on host %s failed: %s", m.ID, m.HostID, o.Detail)}
			case o.Seen && o.State == api.MemberFailed:
				waiting = append(waiting, fmt.Sprintf("%s on %s (failed: %s)", m.ID, m.HostID, firstLine(o.Detail)))
			case o.Seen && o.State == api.MemberRunning:
			default:
				state := "not reported yet"
				if o.Seen {
					state = o.State
				}
				waiting = append(waiting, fmt.Sprintf("%s on %s (%s)", m.ID, m.HostID, state))
			}
		}
		if len(waiting) > 0 {
			return wait("waiting for " + strings.Join(waiting, ", "))
		}
		return advance(fmt.Sprintf("%d members running", len(a.Members)))
	case StepWaitHealthy:
		return Decision{Kind: Run, Action: PingEntrypoint{Addr: a.Entrypoint}, Then: Advance, Detail: "entrypoint " + a.Entrypoint + " answers PING"}
	case StepMarkRunning:
		return Decision{Kind: Advance, Status: api.AddonRunning}
	}
	return fail("unknown step " + step.Name)
}

// remove: the addon left every agent's assignments when the removal began;
// wait until each host has reported, after the step began, without the
// member (a down host counts: its agent removes unassigned members when it
// returns), then forget the addon.
func remove(v View, op api.Operation, step api.Step) Decision {
	switch step.Name {
	case StepStopMembers, StepDeleteData:
		if !v.Exists || len(v.Addon.Members) == 0 {
			return advance("no members were placed")
		}
		if step.StartedAt.IsZero() {
			return wait(fmt.Sprintf("waiting for the agents to stop %d members", len(v.Addon.Members)))
		}
		var waiting []string
		for _, m := range v.Addon.Members {
			if v.Hosts[m.HostID].State == api.HostDown {
				continue
			}
			o := v.Observed[m.ID]
			if !v.HostSeen[m.HostID].After(step.StartedAt) || (o.Seen && o.State != api.MemberStopped) {
				waiting = append(waiting, m.ID+" on "+m.HostID)
			}
		}
		if len(waiting) > 0 {
			return wait("waiting for the agents to stop " + strings.Join(waiting, ", "))
		}
		if step.Name == StepDeleteData {
			return advance("data directories deleted with their members")
		}
		return advance(fmt.Sprintf("%d members gone", len(v.Addon.Members)))
	case StepForget:
		return Decision{Kind: Advance, Effect: DeleteAddon{}, Detail: "addon forgotten"}
	}
	return fail("unknown step " + step.Name)
}

// settings: the new settings are in the addon (so in its agents'
// assignments, applied live); check through the entrypoint that redis runs
// with them, then mark the addon running.
func settings(v View, step api.Step) Decision {
	if !v.Exists {
		return fail("the addon no longer exists")
	}
	switch step.Name {
	case StepApplySettings:
		s := v.Addon.Settings
		return Decision{Kind: Run, Action: CheckSettings{Addr: v.Addon.Entrypoint, Settings: s, PlanMB: v.Plan.MemoryMB}, Then: Advance,
			Detail: fmt.Sprintf("persistence %s, cache mode %s", s.Persistence, onOff(s.CacheMode))}
	case StepMarkRunning:
		return Decision{Kind: Advance, Status: api.AddonRunning}
	}
	return fail("unknown step " + step.Name)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// AllocateVIP returns the lowest address of pool (network address
// excluded) that no entrypoint in used has.
func AllocateVIP(pool string, used []string) (string, error) {
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
