package coordinator

import (
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/scheduler"
)

// schedulerState is the scheduler's read-only view of the FSM state; the
// caller holds the read lock.
func schedulerState(s *State) scheduler.State {
	st := scheduler.State{Hosts: sortedHosts(s.Hosts), Plans: append([]api.Plan(nil), s.Plans...)}
	for _, a := range sortedAddons(s.Addons) {
		a.Members = append([]api.Member(nil), a.Members...)
		a.Password, a.FleetPassword = api.Secret{}, api.Secret{}
		st.Addons = append(st.Addons, a)
	}
	return st
}
