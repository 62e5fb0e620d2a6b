package scheduler

import (
	"fmt"

	"github.com/cacheplane/cacheplane/api"
)

// Usage is what the members of every addon of a State reserve on each
// host: memory and ports, counted once (NewUsage) and then kept by its
// owner as addons change (Add, Remove). With State.Usage set, Place,
// Replace and PlanChangeFits start from it instead of counting every
// addon's members: a placement costs O(hosts), not O(addons), which is
// what lets the coordinator's engine place a burst of thousands of addons
// on a large fleet one after the other. A Usage must count exactly the
// members of State.Addons it is given with (the answers are then the same
// as without it); it is not safe for concurrent use.
type Usage struct {
	ports PortRange // the range inRange counts in
	hosts map[string]*hostTotal
}

// hostTotal is one host's line of a Usage.
type hostTotal struct {
	mb      int
	ports   map[int]int // members on each port
	inRange int         // distinct used ports inside Usage.ports
}

// NewUsage counts the members of every addon of s at its addon's plan.
func NewUsage(s State) (*Usage, error) {
	u := &Usage{ports: s.portRange(), hosts: map[string]*hostTotal{}}
	for _, a := range s.Addons {
		if err := u.Add(s, a); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// Add counts addon a's members at its plan (resolved in s's catalog).
func (u *Usage) Add(s State, a api.Addon) error { return u.change(s, a, 1) }

// Remove takes back what Add counted for a (the same members and plan).
func (u *Usage) Remove(s State, a api.Addon) error { return u.change(s, a, -1) }

func (u *Usage) change(s State, a api.Addon, sign int) error {
	if len(a.Members) == 0 {
		return nil
	}
	p, err := s.planOf(a.Plan)
	if err != nil {
		return fmt.Errorf("addon %s: %w", a.ID, err)
	}
	for _, m := range a.Members {
		h := u.hosts[m.HostID]
		if h == nil {
			h = &hostTotal{ports: map[int]int{}}
			u.hosts[m.HostID] = h
		}
		h.mb += sign * Reservation(m.Role, p)
		if m.Port <= 0 {
			continue
		}
		was := h.ports[m.Port]
		now := max(was+sign, 0)
		if now == 0 {
			delete(h.ports, m.Port)
		} else {
			h.ports[m.Port] = now
		}
		if m.Port >= u.ports.Min && m.Port <= u.ports.Max {
			switch {
			case was == 0 && now > 0:
				h.inRange++
			case was > 0 && now == 0:
				h.inRange--
			}
		}
	}
	return nil
}

// Equal reports whether u and o count the same memory and ports on every
// host (a Usage kept with Add and Remove against one counted afresh).
func (u *Usage) Equal(o *Usage) bool {
	if u == nil || o == nil {
		return u == o
	}
	if u.ports != o.ports {
		return false
	}
	for _, pair := range [2][2]*Usage{{u, o}, {o, u}} {
		for id, h := range pair[0].hosts {
			k := pair[1].hosts[id]
			if k == nil {
				if h.mb != 0 || len(h.ports) != 0 {
					return false
				}
				continue
			}
			if k.mb != h.mb || k.inRange != h.inRange || len(k.ports) != len(h.ports) {
				return false
			}
			for p, n := range h.ports {
				if k.ports[p] != n {
					return false
				}
			}
		}
	}
	return true
}
