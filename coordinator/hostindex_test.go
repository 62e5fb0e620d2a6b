package coordinator

import (
	"reflect"
	"sort"
	"testing"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// addonsOnIDs lists the ids addonsOn answers for host.
func addonsOnIDs(s *State, host string) []string {
	var ids []string
	for _, a := range s.addonsOn(host) {
		ids = append(ids, a.ID)
	}
	return ids
}

// TestHostIndexFollowsMembers: the host index built entry by entry equals
// the one rebuilt from the state, and only the hosts an entry concerns
// are marked changed (their watches woken), at that entry's index.
func TestHostIndexFollowsMembers(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	for i, h := range []string{"h1", "h2", "h3", "h4"} {
		f.Apply(entry(t, uint64(i+1), CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: h, Address: "127.0.0." + string(rune('1'+i)), MemoryMB: 4096, State: api.HostReady}}))
	}
	f.Apply(entry(t, 5, CmdAddonCreate, testAddon("ha-app", "ha-app-1111", "")))
	f.Apply(entry(t, 6, CmdAddonCreate, testAddon("other", "other-2222", "")))
	_, h4ch := f.HostChanged("h4")
	mod3, h3ch := f.HostChanged("h3")
	prov := testAddon("ha-app", "ha-app-1111", "").Operation
	f.Apply(entry(t, 7, CmdAddonPlaced, AddonPlacedCmd{AddonID: "ha-app-1111", Operation: prov, Members: []api.Member{
		{ID: "r0", Role: api.RoleRedis, HostID: "h1", RedisRole: "primary"},
		{ID: "r1", Role: api.RoleRedis, HostID: "h2", RedisRole: "replica"},
		{ID: "s0", Role: api.RoleSentinel, HostID: "h3"},
	}}))
	select {
	case <-h3ch:
	default:
		t.Fatal("placing a member on h3 did not wake h3's watch")
	}
	select {
	case <-h4ch:
		t.Fatal("h4's watch woken by an addon without a member on it")
	default:
	}
	if mod, _ := f.HostChanged("h3"); mod != 7 || mod3 >= 7 {
		t.Fatalf("h3 changed at %d (before: %d); want 7", mod, mod3)
	}
	if mod, _ := f.HostChanged("h4"); mod >= 7 {
		t.Fatalf("h4 changed at %d; want before 7", mod)
	}
	prov.State = api.OpDone
	f.Apply(entry(t, 8, CmdOperationUpdate, OperationUpdateCmd{Operation: prov, AddonStatus: api.AddonRunning}))
	op := api.Operation{ID: "op-rep", AddonID: "ha-app-1111", Kind: api.OpReplaceMember, State: api.OpPending, Target: "r1"}
	f.Apply(entry(t, 9, CmdOperationCreate, OperationCreateCmd{Operation: op}))
	f.Apply(entry(t, 10, CmdMemberAdded, MemberAddedCmd{AddonID: "ha-app-1111", Operation: op,
		Member: api.Member{ID: "r2", Role: api.RoleRedis, HostID: "h4", RedisRole: "replica"}}))
	f.Apply(entry(t, 11, CmdMemberRemoved, MemberRemovedCmd{AddonID: "ha-app-1111", MemberID: "r1", Operation: op}))
	if mod, _ := f.HostChanged("h2"); mod != 11 {
		t.Fatalf("h2 changed at %d; want 11 (its member removed)", mod)
	}
	check := func(when string) {
		t.Helper()
		f.Read(func(s *State, _ uint64) {
			got := map[string][]string{}
			for _, h := range []string{"h1", "h2", "h3", "h4"} {
				got[h] = addonsOnIDs(s, h)
			}
			want := map[string][]string{"h1": {"ha-app-1111"}, "h2": {}, "h3": {"ha-app-1111"}, "h4": {"ha-app-1111"}}
			for h := range want {
				sort.Strings(want[h])
				if len(want[h]) == 0 {
					want[h] = nil
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: addons by host = %v; want %v", when, got, want)
			}
			if !s.isHostAddress("127.0.0.1") || s.isHostAddress("127.0.1.1") {
				t.Fatalf("%s: host addresses wrong", when)
			}
			if !reflect.DeepEqual(s.haAddons(), map[string]bool{"ha-app-1111": true}) {
				t.Fatalf("%s: HA addons %v; want ha-app-1111 (3 members)", when, s.haAddons())
			}
		})
	}
	check("applied")
	// A restore rebuilds it and wakes every watch.
	_, ch := f.HostChanged("h1")
	g := restored(t, f)
	g.Read(func(s *State, idx uint64) {
		if idx != 11 {
			t.Fatalf("restored FSM at index %d; want the snapshot's 11", idx)
		}
	})
	if mod, _ := g.HostChanged("h2"); mod != 11 {
		t.Fatalf("after restore h2 changed at %d; want 11", mod)
	}
	f.Apply(entry(t, 12, CmdAddonDelete, AddonDeleteCmd{AddonID: "ha-app-1111"}))
	select {
	case <-ch:
	default:
		t.Fatal("deleting the addon did not wake h1's watch")
	}
	f.Read(func(s *State, _ uint64) {
		if ids := addonsOnIDs(s, "h1"); len(ids) != 0 {
			t.Fatalf("h1 still lists %v after the delete", ids)
		}
		if len(s.haAddons()) != 0 {
			t.Fatalf("HA addons %v after the delete", s.haAddons())
		}
	})
	// The catalog is in every assignment: every host changes.
	f.Apply(entry(t, 13, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()}))
	if mod, _ := f.HostChanged("h4"); mod != 13 {
		t.Fatalf("after a catalog change h4 changed at %d; want 13", mod)
	}
}

// TestAssignedMembersAsAssignments: the member ids a heartbeat is checked
// against are those assignmentsFor hands out, for every host, with and
// without the cluster CA: removed addons and member-TLS addons without
// their certificate are left out, members on other hosts too.
func TestAssignedMembersAsAssignments(t *testing.T) {
	addon := func(id string, status api.AddonStatus, memberTLS bool, cert string, members ...api.Member) api.Addon {
		a := testAddon(id, id, "").Addon
		a.Status, a.Settings.MemberTLS, a.TLSCert, a.Members = status, memberTLS, cert, members
		return a
	}
	m := func(id string, role api.Role, host string) api.Member {
		return api.Member{ID: id, Role: role, HostID: host, Port: 20000}
	}
	for _, withCA := range []bool{false, true} {
		st := newState()
		st.Plans, st.Engines = api.DefaultPlans(), api.DefaultEngines()
		if withCA {
			st.CA = &identity.CA{CertPEM: "ca"}
		}
		for i, h := range []string{"h1", "h2", "h3"} {
			st.Hosts[h] = api.Host{ID: h, Address: "127.0.0." + string(rune('1'+i)), State: api.HostReady}
		}
		for _, a := range []api.Addon{
			addon("starter", api.AddonRunning, false, "", m("s-r", api.RoleRedis, "h1"), m("s-p", api.RoleHAProxy, "h1")),
			addon("business", api.AddonRunning, false, "", m("b-r0", api.RoleRedis, "h1"), m("b-r1", api.RoleRedis, "h2"),
				m("b-s0", api.RoleSentinel, "h1"), m("b-s1", api.RoleSentinel, "h2"), m("b-s2", api.RoleSentinel, "h3"),
				m("b-p0", api.RoleHAProxy, "h2"), m("b-p1", api.RoleHAProxy, "h3")),
			addon("removing", api.AddonRemoving, false, "", m("x-r", api.RoleRedis, "h1"), m("x-p", api.RoleHAProxy, "h2")),
			addon("tls-waiting", api.AddonProvisioning, true, "", m("w-r", api.RoleRedis, "h2"), m("w-p", api.RoleHAProxy, "h3")),
			addon("tls-issued", api.AddonRunning, true, "cert", m("t-r", api.RoleRedis, "h3"), m("t-p", api.RoleHAProxy, "h3")),
			addon("unplaced", api.AddonProvisioning, false, ""),
		} {
			st.Addons[a.ID] = a
		}
		st.reindexHosts()
		for _, h := range []string{"h1", "h2", "h3", "h4"} {
			want := map[string]bool{}
			for _, as := range assignmentsFor(st, h) {
				want[as.MemberID] = true
			}
			if got := assignedMembers(st, h); !reflect.DeepEqual(got, want) {
				t.Errorf("CA %v, %s: assignedMembers %v; assignmentsFor lists %v", withCA, h, got, want)
			}
		}
		if got := assignedMembers(st, "h3"); got["t-r"] != withCA || got["w-p"] {
			t.Errorf("CA %v: h3's members %v: a member-TLS addon's members go out only with its certificate and the CA", withCA, got)
		}
	}
}

// TestHostAddressWakesOnlyItsAddons: a new host, a host's new address or
// a host gone wake the watches of that host and of the hosts whose
// assignments carry its address (the addons with a member on it, those
// whose entrypoint is at the old or new address: VIP or not), not every
// watch; the counted addresses and entrypoints stay those a rebuild
// finds.
func TestHostAddressWakesOnlyItsAddons(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	idx := uint64(0)
	apply := func(ct CommandType, cmd any) uint64 {
		t.Helper()
		idx++
		if res, ok := f.Apply(entry(t, idx, ct, cmd)).(error); ok {
			t.Fatalf("entry %d (%s): %v", idx, ct, res)
		}
		return idx
	}
	host := func(id, addr string) HostUpsertCmd {
		return HostUpsertCmd{Host: api.Host{ID: id, Address: addr, MemoryMB: 4096, State: api.HostReady}}
	}
	apply(CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()})
	for i, h := range []string{"h1", "h2", "h3", "h4"} {
		apply(CmdHostUpsert, host(h, "127.0.0."+string(rune('1'+i))))
	}
	place := func(id, ep string, members ...api.Member) {
		c := testAddon(id, id, "")
		apply(CmdAddonCreate, c)
		apply(CmdAddonPlaced, AddonPlacedCmd{AddonID: id, Operation: c.Operation, Entrypoint: ep, Members: members})
	}
	place("a-1000", "127.0.0.2:20001", api.Member{ID: "a-r", Role: api.RoleRedis, HostID: "h1", Port: 20000},
		api.Member{ID: "a-p", Role: api.RoleHAProxy, HostID: "h2", Port: 20001})
	place("b-1000", "10.9.9.9:6379", api.Member{ID: "b-p", Role: api.RoleHAProxy, HostID: "h3", Port: 20001})
	place("c-1000", "127.0.0.4:20001", api.Member{ID: "c-p", Role: api.RoleHAProxy, HostID: "h4", Port: 20001})
	hosts := []string{"h1", "h2", "h3", "h4", "h5", "h6"}
	for _, step := range []struct {
		name  string
		ct    CommandType
		cmd   any
		woken []string
	}{
		{"a new host", CmdHostUpsert, host("h5", "127.0.0.5"), []string{"h5"}},
		{"a host's state", CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h4", Address: "127.0.0.4", MemoryMB: 4096, State: api.HostDown}}, []string{"h4"}},
		{"h1's new address", CmdHostUpsert, host("h1", "127.0.0.11"), []string{"h1", "h2"}},
		{"a new host at a VIP's address", CmdHostUpsert, host("h6", "10.9.9.9"), []string{"h3", "h6"}},
		{"that host gone", CmdHostRemove, HostRemoveCmd{HostID: "h6"}, []string{"h3", "h6"}},
		{"the entrypoint host's new address", CmdHostUpsert, host("h2", "127.0.0.12"), []string{"h1", "h2"}},
	} {
		before := map[string]uint64{}
		for _, h := range hosts {
			before[h], _ = f.HostChanged(h)
		}
		at := apply(step.ct, step.cmd)
		var woken []string
		for _, h := range hosts {
			if mod, _ := f.HostChanged(h); mod != before[h] {
				if mod != at {
					t.Fatalf("%s: %s changed at %d; want %d", step.name, h, mod, at)
				}
				woken = append(woken, h)
			}
		}
		if !reflect.DeepEqual(woken, step.woken) {
			t.Errorf("%s: woke %v; want %v", step.name, woken, step.woken)
		}
		f.Read(func(s *State, _ uint64) {
			rebuilt := &State{Hosts: s.Hosts, Addons: s.Addons}
			rebuilt.reindexHosts()
			if !reflect.DeepEqual(s.hosts, rebuilt.hosts) {
				t.Fatalf("%s: index kept entry by entry\n %+v\nrebuilt\n %+v", step.name, s.hosts, rebuilt.hosts)
			}
		})
	}
	f.Read(func(s *State, _ uint64) {
		if _, vip := entrypointVIP(s, s.Addons["b-1000"]); !vip {
			t.Fatal("b's entrypoint is no VIP once no host has its address")
		}
		if _, vip := entrypointVIP(s, s.Addons["c-1000"]); vip {
			t.Fatal("c's entrypoint, h4's address, taken for a VIP")
		}
	})
}
