package coordinator

import (
	"sort"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// schedulerState is the scheduler's read-only view of the FSM state; the
// caller holds the read lock. The scheduler reads an addon's id, plan,
// entrypoint and members only: the view carries those (the members slice
// shared, as the FSM replaces an addon's members and never changes them
// in place), not a copy of every addon — at 100,000 addons a full copy
// was a second and 300 MB per call.
func schedulerState(s *State) scheduler.State {
	st := scheduler.State{Hosts: sortedHosts(s.Hosts), Plans: append([]api.Plan(nil), s.Plans...)}
	ids := make([]string, 0, len(s.Addons))
	for id := range s.Addons {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	st.Addons = make([]api.Addon, len(ids))
	for i, id := range ids {
		a := s.Addons[id]
		st.Addons[i] = api.Addon{ID: a.ID, App: a.App, Plan: a.Plan, Status: a.Status, Entrypoint: a.Entrypoint, Members: a.Members}
	}
	return st
}
