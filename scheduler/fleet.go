package scheduler

import (
	"fmt"
	"sort"

	"github.com/cacheplane/cacheplane/api"
)

// hostUsage is one host as seen while placing: what it holds overall and
// what it holds of the addon being placed.
type hostUsage struct {
	host   api.Host
	known  bool // false for a host id referenced by a member but absent from State.Hosts
	usedMB int
	// base is the host's line of State.Usage (read only, shared; nil
	// without one); ports counts what this placement changed on top of it
	// (members on each port; nil until a change).
	base    *hostTotal
	ports   map[int]int
	inRange int // used ports inside the fleet's port range

	roles   map[api.Role]int // members of the placed addon, by role
	members int              // members of the placed addon
}

func (h *hostUsage) freeMB() int { return h.host.MemoryMB - h.usedMB }

// portCount is how many members use port p on the host.
func (h *hostUsage) portCount(p int) int {
	n := h.ports[p]
	if h.base != nil {
		n += h.base.ports[p]
	}
	return n
}

// portUsed reports whether a member uses port p on the host.
func (h *hostUsage) portUsed(p int) bool { return h.portCount(p) > 0 }

// freePorts is how many ports of r are still free on the host.
func (h *hostUsage) freePorts(r PortRange) int { return r.Size() - h.inRange }

// lowestFree is the lowest port of r free on the host.
func (h *hostUsage) lowestFree(r PortRange) (int, bool) {
	for p := r.Min; p <= r.Max; p++ {
		if !h.portUsed(p) {
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
		if !a.portUsed(p) && !b.portUsed(p) {
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
	usage *Usage                      // State.Usage (nil: accountAddons counts every addon)
}

func newFleet(s State) *fleet {
	f := &fleet{
		byID:  make(map[string]*hostUsage, len(s.Hosts)),
		ports: s.portRange(),
		zones: map[string]map[api.Role]int{},
		usage: s.Usage,
	}
	for _, h := range s.Hosts {
		if _, dup := f.byID[h.ID]; dup {
			continue // first registration wins; the FSM never holds duplicates
		}
		u := f.newHost(h, true)
		f.byID[h.ID] = u
		f.hosts = append(f.hosts, u)
	}
	if !sort.SliceIsSorted(f.hosts, func(i, j int) bool { return f.hosts[i].host.ID < f.hosts[j].host.ID }) {
		sort.Slice(f.hosts, func(i, j int) bool { return f.hosts[i].host.ID < f.hosts[j].host.ID })
	}
	return f
}

// newHost is h's usage, starting from its line of the fleet's Usage.
func (f *fleet) newHost(h api.Host, known bool) *hostUsage {
	u := &hostUsage{host: h, known: known}
	if f.usage == nil {
		return u
	}
	t := f.usage.hosts[h.ID]
	if t == nil {
		return u
	}
	u.base, u.usedMB = t, t.mb
	if f.usage.ports == f.ports {
		u.inRange = t.inRange
		return u
	}
	for p := range t.ports {
		if p >= f.ports.Min && p <= f.ports.Max {
			u.inRange++
		}
	}
	return u
}

// get returns the usage of a host id, creating an unknown one if needed so
// members on vanished hosts still count for their addon's anti-affinity.
func (f *fleet) get(id string) *hostUsage {
	if u, ok := f.byID[id]; ok {
		return u
	}
	u := f.newHost(api.Host{ID: id}, false)
	f.byID[id] = u
	return u
}

// account adds a member's memory and port to its host.
func (f *fleet) account(m api.Member, mb int) {
	u := f.get(m.HostID)
	u.usedMB += mb
	f.usePort(u, m.Port, 1)
}

// unaccount takes a member counted in the fleet's Usage back off its host.
func (f *fleet) unaccount(m api.Member, mb int) {
	u := f.get(m.HostID)
	u.usedMB -= mb
	f.usePort(u, m.Port, -1)
}

// usePort counts one more (delta 1) or one less (-1) member on port.
func (f *fleet) usePort(u *hostUsage, port, delta int) {
	if port <= 0 || (delta < 0 && !u.portUsed(port)) {
		return
	}
	was := u.portUsed(port)
	if u.ports == nil {
		u.ports = map[int]int{}
	}
	u.ports[port] += delta
	if port < f.ports.Min || port > f.ports.Max {
		return
	}
	switch now := u.portUsed(port); {
	case now && !was:
		u.inRange++
	case was && !now:
		u.inRange--
	}
}

// own records a member of the addon being placed, for anti-affinity and
// spread.
func (f *fleet) own(m api.Member) {
	u := f.get(m.HostID)
	if u.roles == nil {
		u.roles = map[api.Role]int{}
	}
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
// at its addon's plan. With a Usage (which counts them all) it only takes
// skip's members back off.
func (f *fleet) accountAddons(s State, skip string) error {
	if f.usage != nil {
		for _, a := range s.Addons {
			if a.ID != skip || len(a.Members) == 0 {
				continue
			}
			p, err := s.planOf(a.Plan)
			if err != nil {
				return fmt.Errorf("addon %s: %w", a.ID, err)
			}
			for _, m := range a.Members {
				f.unaccount(m, Reservation(m.Role, p))
			}
		}
		return nil
	}
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
