package scheduler

import (
	"fmt"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// host is a ready host with address <id>.test.
func host(id string, mb int, zone string) api.Host {
	h := api.Host{ID: id, Address: id + ".test", MemoryMB: mb, State: api.HostReady}
	if zone != "" {
		h.Labels = map[string]string{"zone": zone}
	}
	return h
}

func withState(h api.Host, s api.HostState) api.Host {
	h.State = s
	return h
}

func plan(t testing.TB, name string) api.Plan {
	t.Helper()
	p, ok := api.FindPlan(api.DefaultPlans(), name)
	if !ok {
		t.Fatalf("no plan %s", name)
	}
	return p
}

func mem(id string, role api.Role, hostID string, port int) api.Member {
	return api.Member{ID: id, Role: role, HostID: hostID, Address: hostID + ".test", Port: port}
}

func addon(id, planName string, ms ...api.Member) api.Addon {
	return api.Addon{ID: id, App: id, Type: api.AddonType, Plan: planName, Members: ms}
}

// filler is an addon of other-app whose redis members use mb MB (as a
// starter plan named by its size, which planOf sizes from the suffix) on
// each given host, on consecutive ports from 20000 upwards.
func filler(id string, mb int, hosts ...string) api.Addon {
	a := addon(id, fmt.Sprintf("redis-starter-%d", mb))
	for i, h := range hosts {
		a.Members = append(a.Members, mem(fmt.Sprintf("%s-redis-%d", id, i), api.RoleRedis, h, 29000+i))
	}
	return a
}

// byRole returns the members of role.
func byRole(ms []api.Member, role api.Role) []api.Member {
	var out []api.Member
	for _, m := range ms {
		if m.Role == role {
			out = append(out, m)
		}
	}
	return out
}

func hostsOf(ms []api.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.HostID
	}
	return out
}
