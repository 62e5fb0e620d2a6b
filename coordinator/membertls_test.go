package coordinator

import (
	"slices"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// memberTLSState is a business addon with member TLS on three hosts, its
// certificate not issued yet.
func memberTLSState(t *testing.T) *State {
	t.Helper()
	st := newState()
	st.Plans, st.Engines = api.DefaultPlans(), api.DefaultEngines()
	ca, err := identity.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st.CA = &ca
	for i, addr := range []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"} {
		id := []string{"h1", "h2", "h3"}[i]
		st.Hosts[id] = api.Host{ID: id, Address: addr, MemoryMB: 4096, State: api.HostReady}
	}
	members := []api.Member{
		{ID: "m-1-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 20000, RedisRole: "primary"},
		{ID: "m-1-redis-1", Role: api.RoleRedis, HostID: "h2", Port: 20000},
		{ID: "m-1-sentinel-0", Role: api.RoleSentinel, HostID: "h1", Port: 20001},
		{ID: "m-1-sentinel-1", Role: api.RoleSentinel, HostID: "h2", Port: 20001},
		{ID: "m-1-sentinel-2", Role: api.RoleSentinel, HostID: "h3", Port: 20001},
		{ID: "m-1-haproxy-0", Role: api.RoleHAProxy, HostID: "h2", Port: 20002, Active: true},
		{ID: "m-1-haproxy-1", Role: api.RoleHAProxy, HostID: "h3", Port: 20002},
	}
	s := api.DefaultSettings()
	s.MemberTLS = true
	st.Addons["m-1"] = api.Addon{ID: "m-1", App: "m", Plan: "redis-business-256", Engine: api.EngineRedis, Version: "7.0.15",
		Password: api.NewSecret("pw"), FleetPassword: api.NewSecret("fleet-pw"), Status: api.AddonProvisioning,
		Entrypoint: "127.0.1.1:20002", Members: members, Settings: s}
	st.reindexHosts()
	return st
}

// TestMemberTLSAssignments: a member-TLS addon's members are handed out
// only once its certificate exists; then every role gets the certificate,
// its key, the CA, and the servers and sentinels (the agent's TLS table).
func TestMemberTLSAssignments(t *testing.T) {
	st := memberTLSState(t)
	for _, h := range []string{"h1", "h2", "h3"} {
		if as := assignmentsFor(st, h); len(as) != 0 {
			t.Fatalf("%s: %d members handed out before the certificate exists", h, len(as))
		}
	}
	a := st.Addons["m-1"]
	a.TLSCert, a.TLSKey = "CERT", api.NewSecret("KEY")
	st.Addons["m-1"] = a
	servers := []string{"127.0.0.11:20000", "127.0.0.12:20000"}
	sentinels := []string{"127.0.0.11:20001", "127.0.0.12:20001", "127.0.0.13:20001"}
	n := 0
	for _, h := range []string{"h1", "h2", "h3"} {
		for _, as := range assignmentsFor(st, h) {
			n++
			if !as.Settings.MemberTLS || as.TLSCert != "CERT" || as.TLSKey.Reveal() != "KEY" || as.CACert != st.CA.CertPEM {
				t.Errorf("%s: member TLS %v, cert %q, CA set %v", as.MemberID, as.Settings.MemberTLS, as.TLSCert, as.CACert != "")
			}
			got := append([]string(nil), as.Servers...)
			slices.Sort(got)
			if !slices.Equal(got, servers) || len(as.Sentinels) != 3 {
				t.Errorf("%s: servers %v sentinels %v, want %v and %v", as.MemberID, as.Servers, as.Sentinels, servers, sentinels)
			}
		}
	}
	if n != 7 {
		t.Fatalf("%d members handed out, want 7", n)
	}
	// Without member TLS nothing waits and no CA is sent.
	a.Settings.MemberTLS, a.TLSCert, a.TLSKey = false, "", api.Secret{}
	st.Addons["m-1"] = a
	for _, as := range assignmentsFor(st, "h1") {
		if as.CACert != "" || as.TLSCert != "" {
			t.Errorf("%s: TLS material without member TLS", as.MemberID)
		}
	}
	if len(assignmentsFor(st, "h1")) != 2 { // redis-0 and sentinel-0
		t.Error("an addon without member TLS waited for its certificate")
	}
}

// TestMemberTLSTable: the coordinator's clients speak TLS to the redis and
// sentinel addresses of member-TLS addons only, with the addon id as the
// name.
func TestMemberTLSTable(t *testing.T) {
	st := memberTLSState(t)
	tb := &memberTLSTable{}
	tb.rebuild(st)
	for _, addr := range []string{"127.0.0.11:20000", "127.0.0.12:20000", "127.0.0.13:20001"} {
		if tt := tb.addrs[addr]; tt == nil || tt.ServerName != "m-1" {
			t.Errorf("%s: %+v, want TLS named m-1", addr, tt)
		}
	}
	if tb.addrs["127.0.0.12:20002"] != nil {
		t.Error("the haproxy member's address got TLS (it is reached by the apps, not the fleet)")
	}
	a := st.Addons["m-1"]
	a.Settings.MemberTLS = false
	st.Addons["m-1"] = a
	tb.rebuild(st)
	if len(tb.addrs) != 0 {
		t.Errorf("addresses without member TLS in the table: %v", tb.addrs)
	}
}
