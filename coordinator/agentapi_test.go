package coordinator

import (
	"reflect"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// TestHAProxyAssignments: with a VIP both haproxy members get the VIP
// entrypoint (the same haproxy.cfg, so a move restarts nothing) and only
// the holder gets VIP; without one, each gets its own address. Both get
// the sentinels and the master name, so their agents route to the primary
// the sentinels agree on.
func TestHAProxyAssignments(t *testing.T) {
	st := newState()
	st.Plans, st.Engines = api.DefaultPlans(), api.DefaultEngines()
	for i, addr := range []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"} {
		id := []string{"h1", "h2", "h3"}[i]
		st.Hosts[id] = api.Host{ID: id, Address: addr, MemoryMB: 4096, State: api.HostReady}
	}
	members := []api.Member{
		{ID: "b-1-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 20000, RedisRole: "primary"},
		{ID: "b-1-redis-1", Role: api.RoleRedis, HostID: "h2", Port: 20000},
		{ID: "b-1-sentinel-0", Role: api.RoleSentinel, HostID: "h1", Port: 20001},
		{ID: "b-1-sentinel-1", Role: api.RoleSentinel, HostID: "h2", Port: 20001},
		{ID: "b-1-sentinel-2", Role: api.RoleSentinel, HostID: "h3", Port: 20001},
		{ID: "b-1-haproxy-0", Role: api.RoleHAProxy, HostID: "h2", Port: 20002, Active: true},
		{ID: "b-1-haproxy-1", Role: api.RoleHAProxy, HostID: "h3", Port: 20002},
	}
	st.Addons["b-1"] = api.Addon{ID: "b-1", App: "b", Plan: "redis-business-256", Engine: api.EngineRedis, Version: "7.0.15",
		Password: api.NewSecret("pw"), FleetPassword: api.NewSecret("fleet-pw"), Status: api.AddonRunning, Entrypoint: "127.0.1.1:20002", Members: members}
	sentinels := []string{"127.0.0.11:20001", "127.0.0.12:20001", "127.0.0.13:20001"}
	servers := []string{"127.0.0.11:20000", "127.0.0.12:20000"}

	haproxy := func(host string) api.Assignment {
		t.Helper()
		st.reindexHosts() // the state is written directly here, not through the FSM
		for _, as := range assignmentsFor(st, host) {
			if as.Role == api.RoleHAProxy {
				return as
			}
		}
		t.Fatalf("no haproxy assigned to %s", host)
		return api.Assignment{}
	}
	type view struct {
		Address, Entrypoint, VIP, MasterName string
		Sentinels, Servers                   []string
	}
	viewOf := func(as api.Assignment) view {
		return view{as.Address, as.Entrypoint, as.VIP, as.MasterName, as.Sentinels, as.Servers}
	}
	check := func(name, host string, want view) {
		t.Helper()
		if got := viewOf(haproxy(host)); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %s's haproxy\n got %+v\nwant %+v", name, host, got, want)
		}
	}
	check("VIP", "h2", view{"127.0.0.12", "127.0.1.1:20002", "127.0.1.1", "b-1", sentinels, servers})
	check("VIP", "h3", view{"127.0.0.13", "127.0.1.1:20002", "", "b-1", sentinels, servers})

	// The holder changes: only VIP moves.
	a := st.Addons["b-1"]
	a.Members = append([]api.Member(nil), members...)
	a.Members[5].Active, a.Members[6].Active = false, true
	st.Addons["b-1"] = a
	check("moved", "h2", view{"127.0.0.12", "127.0.1.1:20002", "", "b-1", sentinels, servers})
	check("moved", "h3", view{"127.0.0.13", "127.0.1.1:20002", "127.0.1.1", "b-1", sentinels, servers})

	// A moment where no member holds it (a holder being replaced): both
	// still bind the VIP, neither enables it.
	a.Members[6].Active = false
	st.Addons["b-1"] = a
	check("no holder", "h3", view{"127.0.0.13", "127.0.1.1:20002", "", "b-1", sentinels, servers})

	// No VIP pool: the entrypoint is the first haproxy's own address; each
	// member binds its own.
	a.Entrypoint = "127.0.0.12:20002"
	st.Addons["b-1"] = a
	check("no VIP", "h2", view{"127.0.0.12", "127.0.0.12:20002", "", "b-1", sentinels, servers})
	check("no VIP", "h3", view{"127.0.0.13", "127.0.0.13:20002", "", "b-1", sentinels, servers})
}
