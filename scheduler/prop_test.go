package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// Property tests: random fleets from fixed seeds, addons placed until the
// fleet is full, members replaced and plans changed at random; after every
// step the safety invariants of the whole state are checked.

const (
	propSeeds   = 40 // fleets
	propAddons  = 40 // placement attempts per fleet
	propReplace = 25 // replacement attempts per fleet
)

func randomFleet(r *rand.Rand) State {
	var s State
	n := 1 + r.IntN(9)
	zones := r.IntN(4) // 0: no zone labels
	sizes := []int{300, 512, 1024, 2048, 3000, 4096, 8192, 16384}
	for i := range n {
		h := host(fmt.Sprintf("host-%02d", i), sizes[r.IntN(len(sizes))], "")
		if zones > 0 {
			h.Labels = map[string]string{"zone": fmt.Sprintf("z%d", r.IntN(zones))}
		}
		switch r.IntN(10) {
		case 0:
			h.State = api.HostDown
		case 1:
			h.State = api.HostDraining
		}
		s.Hosts = append(s.Hosts, h)
	}
	if r.IntN(2) == 0 {
		s.Ports = PortRange{Min: 20000, Max: 20000 + r.IntN(8)} // small: exercises exhaustion
	}
	return s
}

// shuffled is a deep copy of s with every slice in another order.
func shuffled(r *rand.Rand, s State) State {
	c := State{Plans: s.Plans, Ports: s.Ports}
	c.Hosts = append([]api.Host(nil), s.Hosts...)
	r.Shuffle(len(c.Hosts), func(i, j int) { c.Hosts[i], c.Hosts[j] = c.Hosts[j], c.Hosts[i] })
	for _, a := range s.Addons {
		a.Members = append([]api.Member(nil), a.Members...)
		r.Shuffle(len(a.Members), func(i, j int) { a.Members[i], a.Members[j] = a.Members[j], a.Members[i] })
		c.Addons = append(c.Addons, a)
	}
	r.Shuffle(len(c.Addons), func(i, j int) { c.Addons[i], c.Addons[j] = c.Addons[j], c.Addons[i] })
	return c
}

// checkInvariants checks the safety invariants of a whole state. With
// complete, every addon must also hold exactly its plan's members.
func checkInvariants(t *testing.T, s State, complete bool) {
	t.Helper()
	capacity := map[string]int{}
	for _, h := range s.Hosts {
		capacity[h.ID] = h.MemoryMB
	}
	used := map[string]int{}
	ports := map[string]map[int]string{}
	r := s.portRange()
	for _, a := range s.Addons {
		p, err := s.planOf(a.Plan)
		if err != nil {
			t.Fatalf("addon %s: %v", a.ID, err)
		}
		roleHosts := map[api.Role]map[string]string{}
		counts := map[api.Role]int{}
		hpPort := 0
		for _, m := range a.Members {
			counts[m.Role]++
			used[m.HostID] += Reservation(m.Role, p)
			if ports[m.HostID] == nil {
				ports[m.HostID] = map[int]string{}
			}
			if other, ok := ports[m.HostID][m.Port]; ok {
				t.Errorf("port %d on %s used by %s and %s", m.Port, m.HostID, other, m.ID)
			}
			ports[m.HostID][m.Port] = m.ID
			if m.Port < r.Min || m.Port > r.Max {
				t.Errorf("%s port %d outside %s", m.ID, m.Port, r)
			}
			if roleHosts[m.Role] == nil {
				roleHosts[m.Role] = map[string]string{}
			}
			if other, ok := roleHosts[m.Role][m.HostID]; ok {
				t.Errorf("two %s of %s on %s: %s and %s", m.Role, a.ID, m.HostID, other, m.ID)
			}
			roleHosts[m.Role][m.HostID] = m.ID
			if m.Role == api.RoleHAProxy {
				if hpPort != 0 && hpPort != m.Port {
					t.Errorf("%s haproxy ports differ: %d and %d", a.ID, hpPort, m.Port)
				}
				hpPort = m.Port
			}
		}
		if complete {
			for _, role := range roleOrder {
				if counts[role] != roleCount(p, role) {
					t.Errorf("%s has %d %s members, plan %s runs %d", a.ID, counts[role], role, p.Name, roleCount(p, role))
				}
			}
		}
	}
	for h, u := range used {
		if u > capacity[h] {
			t.Errorf("host %s over capacity: %d MB used of %d", h, u, capacity[h])
		}
	}
}

func readyHost(s State, id string) bool {
	for _, h := range s.Hosts {
		if h.ID == id {
			return h.State == api.HostReady
		}
	}
	return false
}

func TestPropertyPlace(t *testing.T) {
	plans := api.DefaultPlans()
	placed, refused, business := 0, 0, 0
	for seed := range uint64(propSeeds) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		s := randomFleet(r)
		for i := range propAddons {
			req := Request{AddonID: fmt.Sprintf("app-%d", i), Plan: plans[r.IntN(len(plans))]}
			if r.IntN(5) == 0 {
				req.ExcludeHosts = []string{s.Hosts[r.IntN(len(s.Hosts))].ID}
			}
			p, expl, err := Place(s, req)

			// Deterministic, whatever the order of the input.
			p2, expl2, err2 := Place(shuffled(r, s), req)
			if !reflect.DeepEqual(p, p2) || !reflect.DeepEqual(expl, expl2) || fmt.Sprint(err) != fmt.Sprint(err2) {
				t.Fatalf("seed %d addon %d: not deterministic:\n%+v %v\n%+v %v", seed, i, p, err, p2, err2)
			}
			if err != nil {
				if !errors.Is(err, api.ErrNoCapacity) {
					t.Fatalf("seed %d addon %d: error %v does not wrap ErrNoCapacity", seed, i, err)
				}
				refused++
				continue
			}
			placed++
			if req.Plan.Kind == api.PlanBusiness {
				business++
			}
			for _, m := range p.Members {
				if !readyHost(s, m.HostID) {
					t.Errorf("seed %d: %s placed on non-ready host %s", seed, m.ID, m.HostID)
				}
				for _, ex := range req.ExcludeHosts {
					if m.HostID == ex {
						t.Errorf("seed %d: %s placed on excluded host %s", seed, m.ID, ex)
					}
				}
			}
			if p.Entrypoint == "" {
				t.Errorf("seed %d: %s has no entrypoint", seed, req.AddonID)
			}
			a := addon(req.AddonID, req.Plan.Name, p.Members...)
			s.Addons = append(s.Addons, a)
			checkInvariants(t, s, true)
			if t.Failed() {
				t.Fatalf("seed %d after %s:\n%s", seed, req.AddonID, expl)
			}
		}
	}
	t.Logf("%d placed (%d business), %d refused", placed, business, refused)
	if placed < 100 || business < 50 || refused < 100 {
		t.Errorf("random fleets exercise too little: %d placed (%d business), %d refused", placed, business, refused)
	}
}

// fill places random addons on s until propAddons attempts were made.
func fill(t *testing.T, r *rand.Rand, s State) State {
	plans := api.DefaultPlans()
	for i := range propAddons {
		req := Request{AddonID: fmt.Sprintf("app-%d", i), Plan: plans[r.IntN(len(plans))]}
		p, _, err := Place(s, req)
		if err != nil {
			continue
		}
		s.Addons = append(s.Addons, addon(req.AddonID, req.Plan.Name, p.Members...))
	}
	checkInvariants(t, s, true)
	return s
}

func TestPropertyReplace(t *testing.T) {
	replaced, refused := 0, 0
	for seed := range uint64(propSeeds) {
		r := rand.New(rand.NewPCG(seed, 0xfeed))
		s := fill(t, r, randomFleet(r))
		if len(s.Addons) == 0 {
			continue
		}
		for range propReplace {
			// A host goes down or starts draining now and then.
			if r.IntN(3) == 0 {
				h := &s.Hosts[r.IntN(len(s.Hosts))]
				h.State = []api.HostState{api.HostDown, api.HostDraining, api.HostReady}[r.IntN(3)]
			}
			ai := r.IntN(len(s.Addons))
			a := s.Addons[ai]
			old := a.Members[r.IntN(len(a.Members))]
			var exclude []string
			if r.IntN(4) == 0 {
				exclude = []string{s.Hosts[r.IntN(len(s.Hosts))].ID}
			}
			m, expl, err := Replace(s, a, old.ID, exclude)
			m2, expl2, err2 := Replace(shuffled(r, s), a, old.ID, exclude)
			if m != m2 || !reflect.DeepEqual(expl, expl2) || fmt.Sprint(err) != fmt.Sprint(err2) {
				t.Fatalf("seed %d: Replace not deterministic: %+v %v / %+v %v", seed, m, err, m2, err2)
			}
			if err != nil {
				if !errors.Is(err, api.ErrNoCapacity) {
					t.Fatalf("seed %d: error %v does not wrap ErrNoCapacity", seed, err)
				}
				refused++
				continue
			}
			replaced++
			if m.HostID == old.HostID || !readyHost(s, m.HostID) || m.Role != old.Role {
				t.Errorf("seed %d: %s replaced by %+v (old host %s)", seed, old.ID, m, old.HostID)
			}
			for _, ex := range exclude {
				if m.HostID == ex {
					t.Errorf("seed %d: %s placed on excluded host %s", seed, m.ID, ex)
				}
			}
			for _, o := range a.Members {
				if o.ID == m.ID {
					t.Errorf("seed %d: replacement reuses id %s", seed, m.ID)
				}
			}
			// While both run (the new one syncing), nothing is violated.
			a.Members = append(append([]api.Member(nil), a.Members...), m)
			s.Addons[ai] = a
			checkInvariants(t, s, false)
			// Then the old one is removed.
			var keep []api.Member
			for _, o := range a.Members {
				if o.ID != old.ID {
					keep = append(keep, o)
				}
			}
			a.Members = keep
			s.Addons[ai] = a
			checkInvariants(t, s, true)
			if t.Failed() {
				t.Fatalf("seed %d after replacing %s:\n%s", seed, old.ID, expl)
			}
		}
	}
	t.Logf("%d replaced, %d refused", replaced, refused)
	if replaced < 50 || refused < 20 {
		t.Errorf("random fleets exercise too little: %d replaced, %d refused", replaced, refused)
	}
}

// TestPropertyPlanChangeFits: PlanChangeFits says yes exactly when applying
// the new plan keeps every host within capacity.
func TestPropertyPlanChangeFits(t *testing.T) {
	plans := api.DefaultPlans()
	yes, no := 0, 0
	for seed := range uint64(propSeeds) {
		r := rand.New(rand.NewPCG(seed, 0xbeef))
		s := fill(t, r, randomFleet(r))
		for range propAddons {
			if len(s.Addons) == 0 {
				break
			}
			ai := r.IntN(len(s.Addons))
			a := s.Addons[ai]
			cur, _ := s.planOf(a.Plan)
			var same []api.Plan
			for _, p := range plans {
				if p.Kind == cur.Kind {
					same = append(same, p)
				}
			}
			np := same[r.IntN(len(same))]
			err := PlanChangeFits(s, a, np)
			if err != nil && !errors.Is(err, api.ErrNoCapacity) {
				t.Fatalf("seed %d: %v does not wrap ErrNoCapacity", seed, err)
			}
			next := s
			next.Addons = append([]api.Addon(nil), s.Addons...)
			a.Plan = np.Name
			next.Addons[ai] = a
			fits := withinCapacity(next)
			if fits != (err == nil) {
				t.Fatalf("seed %d: PlanChangeFits(%s %s → %s) = %v, but applying it within capacity = %v", seed, a.ID, cur.Name, np.Name, err, fits)
			}
			if err == nil {
				yes++
				s = next
				checkInvariants(t, s, true)
			} else {
				no++
			}
		}
	}
	t.Logf("%d fit, %d refused", yes, no)
	if yes < 50 || no < 50 {
		t.Errorf("random fleets exercise too little: %d fit, %d refused", yes, no)
	}
}

func withinCapacity(s State) bool {
	used := map[string]int{}
	for _, a := range s.Addons {
		p, _ := s.planOf(a.Plan)
		for _, m := range a.Members {
			used[m.HostID] += Reservation(m.Role, p)
		}
	}
	for _, h := range s.Hosts {
		if used[h.ID] > h.MemoryMB {
			return false
		}
	}
	return true
}
