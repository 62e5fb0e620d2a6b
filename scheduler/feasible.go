package scheduler

import (
	"fmt"
	"sort"

	"github.com/cacheplane/cacheplane/api"
)

// Reason says why a host was not chosen for a member.
type Reason string

// Filter and ranking reasons, in the order the checkers run.
const (
	// ReasonExcluded: the request excluded the host (or it is the host the
	// member is being moved away from).
	ReasonExcluded Reason = "excluded"
	// ReasonNotReady: the host is down, or in a state other than ready.
	ReasonNotReady Reason = "not-ready"
	// ReasonDraining: the host is being drained.
	ReasonDraining Reason = "draining"
	// ReasonAntiAffinity: the host already runs a member of the same role of
	// this addon.
	ReasonAntiAffinity Reason = "anti-affinity"
	// ReasonPortTaken: the port this member must use (the haproxy pair's
	// shared port) is in use on the host.
	ReasonPortTaken Reason = "port-taken"
	// ReasonNoPort: no port of the range is free on the host (for an haproxy
	// pair: none free on both hosts).
	ReasonNoPort Reason = "no-free-port"
	// ReasonMemory: the host's free memory is below the member's reservation.
	ReasonMemory Reason = "memory"
	// ReasonColocated: the member must run on another host (a starter's
	// haproxy runs beside its redis node).
	ReasonColocated Reason = "colocated"
	// ReasonRankedLower: the host was feasible but another ranked higher.
	ReasonRankedLower Reason = "ranked-lower"
)

// need is what one member asks of a host.
type need struct {
	memberID  string
	role      api.Role
	mb        int
	fixedPort int        // port imposed by the haproxy partner; 0 means any
	partner   *hostUsage // the other haproxy's host when placing a pair
	exclude   map[string]string
	onHost    string // the only host it may run on ("" = any)
	// alsoMB is memory a member placed next on the same host will need (a
	// starter's haproxy beside its redis node): the host must have room
	// for both, but only mb is committed now.
	alsoMB int
}

// needMB is what the host must have free for n.
func (n need) needMB() int { return n.mb + n.alsoMB }

// checker refuses a host with a reason and a detail, or accepts it with "".
type checker func(f *fleet, h *hostUsage, n need) (Reason, string)

// checkers run in order; the first refusal is the host's reason.
var checkers = []checker{checkExcluded, checkColocated, checkReady, checkAntiAffinity, checkPorts, checkMemory}

func checkExcluded(_ *fleet, h *hostUsage, n need) (Reason, string) {
	if why, ok := n.exclude[h.host.ID]; ok {
		return ReasonExcluded, why
	}
	return "", ""
}

func checkColocated(_ *fleet, h *hostUsage, n need) (Reason, string) {
	if n.onHost != "" && h.host.ID != n.onHost {
		return ReasonColocated, fmt.Sprintf("a starter's %s runs on its redis node's host %s", n.role, n.onHost)
	}
	return "", ""
}

func checkReady(_ *fleet, h *hostUsage, _ need) (Reason, string) {
	switch h.host.State {
	case api.HostReady:
		return "", ""
	case api.HostDraining:
		return ReasonDraining, "host is draining"
	case api.HostDown:
		return ReasonNotReady, "host is down"
	default:
		return ReasonNotReady, fmt.Sprintf("host state is %q", h.host.State)
	}
}

func checkAntiAffinity(_ *fleet, h *hostUsage, n need) (Reason, string) {
	if h.roles[n.role] > 0 || h == n.partner {
		return ReasonAntiAffinity, fmt.Sprintf("already runs a %s of this addon", n.role)
	}
	return "", ""
}

func checkPorts(f *fleet, h *hostUsage, n need) (Reason, string) {
	switch {
	case n.fixedPort > 0:
		if h.portUsed(n.fixedPort) {
			return ReasonPortTaken, fmt.Sprintf("port %d (shared by the addon's haproxy members) is in use", n.fixedPort)
		}
	case n.partner != nil:
		if _, ok := lowestCommon(h, n.partner, f.ports); !ok {
			return ReasonNoPort, fmt.Sprintf("no port in %s free on both this host and %s", f.ports, n.partner.host.ID)
		}
	default:
		if h.freePorts(f.ports) <= 0 {
			return ReasonNoPort, fmt.Sprintf("no port in %s is free", f.ports)
		}
	}
	return "", ""
}

func checkMemory(_ *fleet, h *hostUsage, n need) (Reason, string) {
	if h.freeMB() < n.needMB() {
		return ReasonMemory, fmt.Sprintf("%d MB free, needs %d MB", h.freeMB(), n.needMB())
	}
	return "", ""
}

// feasible runs the checkers on every known host. It returns the hosts that
// pass, in id order, and a verdict for every host (empty Reason for the
// feasible ones, to be filled by rank).
func (f *fleet) feasible(n need) ([]*hostUsage, []HostVerdict) {
	var ok []*hostUsage
	verdicts := make([]HostVerdict, 0, len(f.hosts))
	for _, h := range f.hosts {
		v := HostVerdict{HostID: h.host.ID}
		for _, c := range checkers {
			if r, d := c(f, h, n); r != "" {
				v.Reason, v.Detail = r, d
				break
			}
		}
		if v.Reason == "" {
			ok = append(ok, h)
		}
		verdicts = append(verdicts, v)
	}
	return ok, verdicts
}

// score is a host's rank key for one member; lower is better.
type score struct {
	zone    int   // members of the same role of this addon in the host's zone
	members int   // members of this addon on the host
	used    int64 // memory used once the member is added …
	cap     int64 // … over capacity
}

func (f *fleet) score(h *hostUsage, n need) score {
	z := f.zoneCount(h, n.role)
	if p := n.partner; p != nil && h.host.Zone() != "" && p.host.Zone() == h.host.Zone() {
		z++
	}
	return score{zone: z, members: h.members, used: int64(h.usedMB + n.needMB()), cap: int64(h.host.MemoryMB)}
}

// less orders two scores: zone spread, addon spread, load.
func (a score) less(b score) (less, equal bool) {
	if a.zone != b.zone {
		return a.zone < b.zone, false
	}
	if a.members != b.members {
		return a.members < b.members, false
	}
	// a.used/a.cap < b.used/b.cap without floats; capacities are > 0 for
	// any host that passed the memory check with a positive need.
	l, r := a.used*b.cap, b.used*a.cap
	if l != r {
		return l < r, false
	}
	return false, true
}

func (s score) String() string {
	pct := int64(100)
	if s.cap > 0 {
		pct = s.used * 100 / s.cap
	}
	return fmt.Sprintf("same role in zone %d, members of this addon %d, memory used after %d%%", s.zone, s.members, pct)
}

// rank orders feasible hosts best first: zone spread, addon spread, least
// loaded, host id.
func (f *fleet) rank(hosts []*hostUsage, n need) []*hostUsage {
	out := append([]*hostUsage(nil), hosts...)
	sort.SliceStable(out, func(i, j int) bool {
		l, eq := f.score(out[i], n).less(f.score(out[j], n))
		if eq {
			return out[i].host.ID < out[j].host.ID
		}
		return l
	})
	return out
}

// rankedVerdicts fills in ReasonRankedLower for every feasible host but the
// chosen one.
func (f *fleet) rankedVerdicts(verdicts []HostVerdict, ranked []*hostUsage, chosen *hostUsage, n need) {
	pos := map[string]int{}
	for i, h := range ranked {
		pos[h.host.ID] = i
	}
	for i := range verdicts {
		v := &verdicts[i]
		if v.Reason != "" || v.HostID == chosen.host.ID {
			continue
		}
		if p, ok := pos[v.HostID]; ok {
			v.Reason = ReasonRankedLower
			v.Detail = fmt.Sprintf("ranked %d of %d: %s", p+1, len(ranked), f.score(ranked[p], n))
		}
	}
}
