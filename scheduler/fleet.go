package scheduler

import (
	"fmt"
	"sort"

	"github.com/cacheplane/cacheplane/api"
)

// hostUsage is one host as seen while placing: what it holds overall and
// what it holds of the addon being placed.
type hostUsage struct {
	host    api.Host
	known   bool // false for a host id referenced by a member but absent from State.Hosts
	usedMB  int
	ports   map[int]bool
	inRange int // used ports inside the fleet's port range

	roles   map[api.Role]int // members of the placed addon, by role
	members int              // members of the placed addon
}

func (h *hostUsage) freeMB() int { return h.host.MemoryMB - h.usedMB }

// freePorts is how many ports of r are still free on the host.
func (h *hostUsage) freePorts(r PortRange) int { return r.Size() - h.inRange }

// lowestFree is the lowest port of r free on the host.
func (h *hostUsage) lowestFree(r PortRange) (int, bool) {
	for p := r.Min; p <= r.Max; p++ {
		if !h.ports[p] {
			return p, true
		}
	}
	return 0, false
}

// lowestCommon is the lowest port of r free on both hosts.
func lowestCommon(a, b *hostUsage, r PortRange) (int, bool) {
	if a.freePorts(r) == 0 || b.freePorts(r) == 0 {
		return 0, false
	}
	for p := r.Min; p <= r.Max; p++ {
		if !a.ports[p] && !b.ports[p] {
			return p, true
		}
	}
	return 0, false
}

// fleet is the working copy of State a placement runs against.
type fleet struct {
	hosts []*hostUsage // hosts of State.Hosts, by id
	byID  map[string]*hostUsage
	ports PortRange
	zones map[string]map[api.Role]int // placed addon: zone → role → members
}

func newFleet(s State) *fleet {
	f := &fleet{
		byID:  map[string]*hostUsage{},
		ports: s.portRange(),
		zones: map[string]map[api.Role]int{},
	}
	for _, h := range s.Hosts {
		if _, dup := f.byID[h.ID]; dup {
			continue // first registration wins; the FSM never holds duplicates
		}
		u := &hostUsage{host: h, known: true, ports: map[int]bool{}, roles: map[api.Role]int{}}
		f.byID[h.ID] = u
		f.hosts = append(f.hosts, u)
	}
	sort.Slice(f.hosts, func(i, j int) bool { return f.hosts[i].host.ID < f.hosts[j].host.ID })
	return f
}

// get returns the usage of a host id, creating an unknown one if needed so
// members on vanished hosts still count for their addon's anti-affinity.
func (f *fleet) get(id string) *hostUsage {
	if u, ok := f.byID[id]; ok {
		return u
	}
	u := &hostUsage{host: api.Host{ID: id}, ports: map[int]bool{}, roles: map[api.Role]int{}}
	f.byID[id] = u
	return u
}

// account adds a member's memory and port to its host.
func (f *fleet) account(m api.Member, mb int) {
	u := f.get(m.HostID)
	u.usedMB += mb
	f.usePort(u, m.Port)
}

func (f *fleet) usePort(u *hostUsage, port int) {
	if port <= 0 || u.ports[port] {
		return
	}
	u.ports[port] = true
	if port >= f.ports.Min && port <= f.ports.Max {
		u.inRange++
	}
}

// own records a member of the addon being placed, for anti-affinity and
// spread.
func (f *fleet) own(m api.Member) {
	u := f.get(m.HostID)
	u.roles[m.Role]++
	u.members++
	if z := u.host.Zone(); z != "" {
		if f.zones[z] == nil {
			f.zones[z] = map[api.Role]int{}
		}
		f.zones[z][m.Role]++
	}
}

// zoneCount is how many members of role of the placed addon are in h's zone.
func (f *fleet) zoneCount(h *hostUsage, role api.Role) int {
	z := h.host.Zone()
	if z == "" {
		return 0
	}
	return f.zones[z][role]
}

// accountAddons counts every member of every addon except skip (an addon id)
// at its addon's plan.
func (f *fleet) accountAddons(s State, skip string) error {
	for _, a := range s.Addons {
		if a.ID == skip || len(a.Members) == 0 {
			continue
		}
		p, err := s.planOf(a.Plan)
		if err != nil {
			return fmt.Errorf("addon %s: %w", a.ID, err)
		}
		for _, m := range a.Members {
			f.account(m, Reservation(m.Role, p))
		}
	}
	return nil
}
