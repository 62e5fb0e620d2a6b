package operation

import (
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

func TestCancelledMoveIsNotRetriedOnTheSameDrain(t *testing.T) {
	f := newFixture()
	h := f.hosts["h3"]
	h.State, h.DrainingSince = api.HostDraining, t0.Add(-time.Minute)
	f.hosts["h3"] = h
	fl := Fleet{Hosts: f.hosts, Addons: []api.Addon{f.addons["b-1"]}, Plans: api.DefaultPlans(), Active: map[string]api.Operation{},
		Cancelled: map[string]time.Time{"b-1-sentinel-2": t0.Add(-time.Second)}, Now: t0}
	got := PlanHealing(fl, HealConfig{MaxParallel: 4})
	if len(got.Create) != 0 || len(got.Left) != 1 || got.Left[0].MemberID != "b-1-sentinel-2" {
		t.Fatalf("healing %+v", got)
	}
	// Drained again later: the move is retried.
	h.DrainingSince = t0
	f.hosts["h3"] = h
	if got := PlanHealing(fl, HealConfig{MaxParallel: 4}); len(got.Create) != 1 {
		t.Fatalf("healing after a new drain %+v", got)
	}
}

func TestStuckMovesDoNotHoldTheBound(t *testing.T) {
	f := newFixture()
	h := f.hosts["h3"]
	h.State, h.DrainingSince = api.HostDraining, t0
	f.hosts["h3"] = h
	active := map[string]api.Operation{}
	for _, id := range []string{"x", "y", "z", "w"} {
		active[id] = api.Operation{AddonID: id, Kind: api.OpReplaceMember, Stuck: "step \"place replacement\" has waited 6m0s"}
	}
	fl := Fleet{Hosts: f.hosts, Addons: []api.Addon{f.addons["b-1"]}, Plans: api.DefaultPlans(), Active: active, Now: t0}
	if got := PlanHealing(fl, HealConfig{MaxParallel: 4}); len(got.Create) != 1 {
		t.Fatalf("four stuck moves filled the bound: %+v", got)
	}
	delete(active, "w")
	active["v"] = api.Operation{AddonID: "v", Kind: api.OpReplaceMember}
	for _, id := range []string{"x", "y", "z"} {
		o := active[id]
		o.Stuck = ""
		active[id] = o
	}
	if got := PlanHealing(fl, HealConfig{MaxParallel: 4}); len(got.Create) != 0 {
		t.Fatalf("four running moves: the bound holds: %+v", got)
	}
}
