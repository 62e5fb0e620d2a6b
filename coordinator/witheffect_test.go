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
