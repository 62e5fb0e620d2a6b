package operation

import (
	"fmt"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Fleet is what healing decisions read.
type Fleet struct {
	Hosts  map[string]api.Host
	Addons []api.Addon // by id
	Plans  []api.Plan
	// Active is each addon's active operation, by addon id.
	Active map[string]api.Operation
	// Cancelled is when an operator last cancelled a replace operation of
	// each member, by member id: that member is not moved again while its
	// host stays in the state it was in then.
	Cancelled map[string]time.Time
	Now       time.Time
}

// HealConfig are healing's figures.
type HealConfig struct {
	// HealAfter: a member of a host down this long is replaced.
	HealAfter time.Duration
	// MaxParallel bounds the replace operations running at once across
	// the fleet.
	MaxParallel int
}

// Healing is what PlanHealing decided.
type Healing struct {
	// Create are the replace operations to start (ids, times to fill).
	Create []api.Operation
	// Left are members on unhealthy hosts that healing does not move, with
	// why (starters: no replica to switch to).
	Left []Left
}

// Left is a member healing leaves where it is.
type Left struct {
	AddonID, MemberID, HostID, Reason string
}

// unhealthy says why members must leave host h ("" when they need not).
func unhealthy(h api.Host, now time.Time, after time.Duration) string {
	switch {
	case h.State == api.HostDraining:
		return "host " + h.ID + " is draining"
	case h.State == api.HostDown && !h.DownSince.IsZero() && now.Sub(h.DownSince) >= after:
		return fmt.Sprintf("host %s is down since %s", h.ID, h.DownSince.UTC().Format(time.RFC3339))
	}
	return ""
}

// since is when host h entered its current unhealthy state.
func since(h api.Host) time.Time {
	if h.State == api.HostDown {
		return h.DownSince
	}
	return h.DrainingSince
}

// PlanHealing decides which members to move: each member of a running
// business addon on a draining host, or on a host down for HealAfter, gets
// a replace operation — one per addon at a time (an addon with an active
// operation waits for it), at most MaxParallel running across the fleet
// (stuck ones not counted), addons in id order. One addon's operation, stuck or not, never holds up another's.
// A starter is never replaced (its one node has no replica to switch to):
// on a lost host it restarts in place when the host returns, on a draining
// host it stays, listed in Left with why.
func PlanHealing(f Fleet, c HealConfig) Healing {
	var out Healing
	// A stuck replace does not hold a slot: stuck ones must never stop
	// the fleet healing (they stay visible, and an operator may cancel).
	running := 0
	for _, op := range f.Active {
		if op.Kind == api.OpReplaceMember && op.Stuck == "" {
			running++
		}
	}
	for _, a := range f.Addons {
		if a.Status != api.AddonRunning && a.Status != api.AddonUpdating {
			continue
		}
		plan, _ := api.FindPlan(f.Plans, a.Plan)
		redis := 0
		for _, m := range a.Members {
			if m.Role == api.RoleRedis {
				redis++
			}
		}
		for _, m := range a.Members {
			h, ok := f.Hosts[m.HostID]
			if !ok {
				continue
			}
			reason := unhealthy(h, f.Now, c.HealAfter)
			if reason == "" {
				continue
			}
			if plan.Kind == api.PlanStarter || (m.Role == api.RoleRedis && redis < 2) {
				why := "a starter has one redis node and no replica to switch to: it stays on " + h.ID
				if h.State == api.HostDown {
					why += " and restarts in place on its own data when the host returns"
				} else {
					why += " (move it by changing its plan, or remove it)"
				}
				out.Left = append(out.Left, Left{AddonID: a.ID, MemberID: m.ID, HostID: h.ID, Reason: why})
				continue
			}
			if at, ok := f.Cancelled[m.ID]; ok && at.After(since(h)) {
				out.Left = append(out.Left, Left{AddonID: a.ID, MemberID: m.ID, HostID: h.ID,
					Reason: "its move was cancelled by an operator at " + at.UTC().Format(time.RFC3339) + "; undrain and drain the host again to retry"})
				continue
			}
			if _, busy := f.Active[a.ID]; busy {
				break // one operation per addon; this one comes after
			}
			if c.MaxParallel > 0 && running >= c.MaxParallel {
				break
			}
			out.Create = append(out.Create, api.Operation{AddonID: a.ID, App: a.App, Kind: api.OpReplaceMember, State: api.OpPending,
				Steps: ReplaceSteps(), Target: m.ID, Reason: reason, CreatedAt: f.Now, UpdatedAt: f.Now})
			running++
			break
		}
	}
	return out
}
