package coordinator

import (
	"reflect"
	"testing"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/scheduler"
)

// TestWithEffect: the pass's fleet view after a committed placement (the
// next placement of the same pass counts it).
func TestWithEffect(t *testing.T) {
	m := func(id string) api.Member { return api.Member{ID: id, HostID: "h1", Port: 20000} }
	base := func() scheduler.State {
		return scheduler.State{Addons: []api.Addon{{ID: "a"}, {ID: "b", Members: []api.Member{m("b-0")}}, {ID: "c"}}}
	}
	cases := []struct {
		name    string
		addon   string
		eff     any
		members map[string][]api.Member
		ep      string
	}{
		{"place", "a", operation.PlaceMembers{Members: []api.Member{m("a-0"), m("a-1")}, Entrypoint: "127.0.0.1:20001"},
			map[string][]api.Member{"a": {m("a-0"), m("a-1")}, "b": {m("b-0")}}, "127.0.0.1:20001"},
		{"add", "b", operation.AddMember{Member: m("b-1")}, map[string][]api.Member{"b": {m("b-0"), m("b-1")}}, ""},
		{"other effect", "b", operation.RemoveMember{MemberID: "b-0"}, map[string][]api.Member{"b": {m("b-0")}}, ""},
		{"unknown addon", "zz", operation.AddMember{Member: m("z-0")}, map[string][]api.Member{"b": {m("b-0")}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := base()
			kept := before.Addons[1].Members
			got := withEffect(before, c.addon, c.eff)
			for _, a := range got.Addons {
				if want := c.members[a.ID]; !reflect.DeepEqual(a.Members, want) && !(len(want) == 0 && len(a.Members) == 0) {
					t.Errorf("%s: members %v; want %v", a.ID, a.Members, want)
				}
				if a.ID == c.addon && c.ep != "" && a.Entrypoint != c.ep {
					t.Errorf("%s: entrypoint %q; want %q", a.ID, a.Entrypoint, c.ep)
				}
			}
			if len(kept) != 1 || kept[0].ID != "b-0" {
				t.Errorf("the FSM's members slice was changed: %v", kept)
			}
		})
	}
}

// TestWithEffectKeepsUsage: the pass's per-host usage follows each
// committed placement (the next placement reads it instead of every
// addon's members).
func TestWithEffectKeepsUsage(t *testing.T) {
	m := func(id, host string, role api.Role, port int) api.Member {
		return api.Member{ID: id, HostID: host, Role: role, Port: port}
	}
	st := scheduler.State{Addons: []api.Addon{
		{ID: "a", Plan: "redis-starter-256"},
		{ID: "b", Plan: "redis-business-1024", Members: []api.Member{m("b-r0", "h1", api.RoleRedis, 20000), m("b-s0", "h2", api.RoleSentinel, 20001)}},
	}}
	u, err := scheduler.NewUsage(st)
	if err != nil {
		t.Fatal(err)
	}
	st.Usage = u
	st = withEffect(st, "a", operation.PlaceMembers{Members: []api.Member{m("a-r0", "h1", api.RoleRedis, 20002), m("a-h0", "h1", api.RoleHAProxy, 20003)}})
	st = withEffect(st, "b", operation.AddMember{Member: m("b-s1", "h3", api.RoleSentinel, 20000)})
	fresh, err := scheduler.NewUsage(st)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Usage.Equal(fresh) {
		t.Fatal("the kept usage differs from one counted from the placed members")
	}
	before, _ := scheduler.NewUsage(scheduler.State{Addons: []api.Addon{st.Addons[1]}})
	if st.Usage.Equal(before) {
		t.Fatal("the usage did not count the placement")
	}
}
