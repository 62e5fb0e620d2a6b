package scheduler

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/cacheplane/cacheplane/api"
)

// Memory reservations (see Reservation).
const (
	// RedisOverheadPercent is added to a plan's memory for each redis member:
	// headroom for fork copy-on-write, replication and client buffers.
	RedisOverheadPercent = 10
	// SidecarReserveMB is what a sentinel or an haproxy member reserves.
	SidecarReserveMB = 32
)

// Redis roles set on redis members.
const (
	RedisPrimary = "primary"
	RedisReplica = "replica"
)

// PortRange is the inclusive range member ports are allocated from, on
// every host.
type PortRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// DefaultPortRange is used when State.Ports is unset.
var DefaultPortRange = PortRange{Min: 20000, Max: 29999}

// Size is how many ports the range holds.
func (r PortRange) Size() int { return r.Max - r.Min + 1 }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Validate checks the range lies within 1-65535 and is not empty.
func (r PortRange) Validate() error {
	if r.Min < 1 || r.Max > 65535 || r.Min > r.Max {
		return api.Invalidf("port range %s is invalid: want 1 <= min <= max <= 65535", r)
	}
	return nil
}

// State is the read-only view of the fleet the scheduler decides on. The
// scheduler never modifies it.
type State struct {
	Hosts  []api.Host
	Addons []api.Addon
	// Plans is the catalog used to size existing addons' members; nil
	// means api.DefaultPlans().
	Plans []api.Plan
	// Ports is the range member ports come from; zero means DefaultPortRange.
	Ports PortRange
	// Usage, when set, is what the members of Addons reserve on each
	// host (NewUsage), so that a placement need not count them all; it
	// must match Addons. nil: every call counts every addon's members.
	Usage *Usage
}

func (s State) portRange() PortRange {
	if s.Ports == (PortRange{}) {
		return DefaultPortRange
	}
	return s.Ports
}

func (s State) plans() []api.Plan {
	if s.Plans == nil {
		return api.DefaultPlans()
	}
	return s.Plans
}

// planOf resolves an existing addon's plan by name. A name missing from the
// catalog (a retired plan) is sized from its "-<MB>" suffix, so its members
// still count; a name that says nothing is an error rather than a silent
// zero.
func (s State) planOf(name string) (api.Plan, error) {
	if p, ok := api.FindPlan(s.plans(), name); ok {
		return p, nil
	}
	i := strings.LastIndex(name, "-")
	if i >= 0 {
		if mb, err := strconv.Atoi(name[i+1:]); err == nil && mb > 0 {
			kind := api.PlanStarter
			if strings.Contains(name, string(api.PlanBusiness)) {
				kind = api.PlanBusiness
			}
			return api.Plan{Name: name, Kind: kind, MemoryMB: mb}, nil
		}
	}
	return api.Plan{}, fmt.Errorf("plan %q is not in the catalog and names no memory size", name)
}

// Request asks for the members of one addon on a plan.
type Request struct {
	AddonID string
	Plan    api.Plan
	// ExcludeHosts are never chosen for new members.
	ExcludeHosts []string
	// Keep are members of the addon that stay where they are (a plan change
	// from starter to business keeps the redis member); only the missing
	// members are placed. Kept members are accounted at Plan's size.
	Keep []api.Member
}

// Placement is the full member set of an addon after placement, kept
// members included, ordered redis, sentinel, haproxy and by id.
type Placement struct {
	AddonID    string       `json:"addon_id"`
	Plan       string       `json:"plan"`
	Members    []api.Member `json:"members"`
	Entrypoint string       `json:"entrypoint"`
}

// Reservation is the memory in MB a member of role reserves on its host for
// an addon on plan: plan memory plus RedisOverheadPercent for redis,
// SidecarReserveMB for sentinel, haproxy and any other role.
func Reservation(role api.Role, plan api.Plan) int {
	if role == api.RoleRedis {
		return plan.MemoryMB + plan.MemoryMB*RedisOverheadPercent/100
	}
	return SidecarReserveMB
}

// MemberID is the deterministic id of an addon's n-th member of role.
func MemberID(addonID string, role api.Role, n int) string {
	return fmt.Sprintf("%s-%s-%d", addonID, role, n)
}

// CapacityError is a placement the fleet cannot hold. It unwraps to
// api.ErrNoCapacity; Message is one line for the operator.
type CapacityError struct {
	Op      string // place, replace or resize
	AddonID string
	Message string
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Op, e.AddonID, e.Message)
}

// Unwrap makes errors.Is(err, api.ErrNoCapacity) true.
func (e *CapacityError) Unwrap() error { return api.ErrNoCapacity }

func capacityErr(op, addonID, format string, args ...any) error {
	return &CapacityError{Op: op, AddonID: addonID, Message: fmt.Sprintf(format, args...)}
}
