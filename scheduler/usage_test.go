package scheduler

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// withUsage is s with a Usage counted from its addons.
func withUsage(t *testing.T, s State) State {
	t.Helper()
	u, err := NewUsage(s)
	if err != nil {
		t.Fatal(err)
	}
	s.Usage = u
	return s
}

// TestPropertyUsage: with a Usage, Place, Replace and PlanChangeFits give
// the same answers (members, explanations, errors) as counting every
// addon, on random fleets; and a Usage kept with Add and Remove as addons
// are placed, grown and shrunk stays equal to one counted afresh.
func TestPropertyUsage(t *testing.T) {
	plans := api.DefaultPlans()
	calls := 0
	for seed := range uint64(propSeeds) {
		r := rand.New(rand.NewPCG(seed, 0xab5))
		s := randomFleet(r)
		kept := withUsage(t, s)
		same := func(what string, a, b any) {
			t.Helper()
			calls++
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("seed %d: %s differs with a Usage:\n%+v\nwithout:\n%+v", seed, what, b, a)
			}
		}
		for i := range propAddons {
			req := Request{AddonID: fmt.Sprintf("app-%d", i), Plan: plans[r.IntN(len(plans))]}
			kept.Addons = s.Addons
			p, e, err := Place(s, req)
			p2, e2, err2 := Place(kept, req)
			same("Place "+req.AddonID, []any{p, e, fmt.Sprint(err)}, []any{p2, e2, fmt.Sprint(err2)})
			if err != nil {
				continue
			}
			a := addon(req.AddonID, req.Plan.Name, p.Members...)
			s.Addons = append(s.Addons, a)
			if err := kept.Usage.Add(s, a); err != nil {
				t.Fatal(err)
			}
		}
		for range propReplace {
			if len(s.Addons) == 0 {
				break
			}
			kept.Addons = s.Addons
			ai := r.IntN(len(s.Addons))
			a := s.Addons[ai]
			old := a.Members[r.IntN(len(a.Members))]
			m, e, err := Replace(s, a, old.ID, nil)
			m2, e2, err2 := Replace(kept, a, old.ID, nil)
			same("Replace "+old.ID, []any{m, e, fmt.Sprint(err)}, []any{m2, e2, fmt.Sprint(err2)})
			np := plans[r.IntN(len(plans))]
			if cur, _ := s.planOf(a.Plan); cur.Kind == np.Kind {
				same("PlanChangeFits "+a.ID, fmt.Sprint(PlanChangeFits(s, a, np)), fmt.Sprint(PlanChangeFits(kept, a, np)))
			} else {
				keep := []api.Member{}
				for _, k := range a.Members {
					if k.Role == api.RoleRedis {
						keep = append(keep, k)
						break
					}
				}
				req := Request{AddonID: a.ID, Plan: np, Keep: keep}
				p, e, err := Place(s, req)
				p2, e2, err2 := Place(kept, req)
				same("Place (plan change) "+a.ID, []any{p, e, fmt.Sprint(err)}, []any{p2, e2, fmt.Sprint(err2)})
			}
			if err != nil {
				continue
			}
			// The replacement joins, then the old member leaves: the kept
			// Usage follows each change.
			next := a
			next.Members = append(append([]api.Member(nil), a.Members...), m)
			for _, step := range [][]api.Member{next.Members, without(next.Members, old.ID)} {
				before := s.Addons[ai]
				after := before
				after.Members = step
				s.Addons = append([]api.Addon(nil), s.Addons...)
				s.Addons[ai] = after
				if err := kept.Usage.Remove(s, before); err != nil {
					t.Fatal(err)
				}
				if err := kept.Usage.Add(s, after); err != nil {
					t.Fatal(err)
				}
			}
		}
		fresh, err := NewUsage(s)
		if err != nil {
			t.Fatal(err)
		}
		if !kept.Usage.Equal(fresh) || !fresh.Equal(kept.Usage) {
			t.Fatalf("seed %d: the kept usage differs from one counted afresh", seed)
		}
	}
	t.Logf("%d calls compared", calls)
	if calls < 1000 {
		t.Errorf("random fleets exercise too little: %d calls compared", calls)
	}
}

func without(ms []api.Member, id string) []api.Member {
	var out []api.Member
	for _, m := range ms {
		if m.ID != id {
			out = append(out, m)
		}
	}
	return out
}
