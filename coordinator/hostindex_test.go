package coordinator

import (
	"reflect"
	"sort"
	"testing"

	"github.com/cacheplane/cacheplane/api"
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
	})
	// The catalog is in every assignment: every host changes.
	f.Apply(entry(t, 13, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()}))
	if mod, _ := f.HostChanged("h4"); mod != 13 {
		t.Fatalf("after a catalog change h4 changed at %d; want 13", mod)
	}
}
