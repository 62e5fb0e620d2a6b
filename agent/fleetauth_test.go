package agent

import (
	"slices"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// TestRotationRestartsNothing: a password rotation changes what the
// agent applies live (authDigest) but no member's spec hash, and an addon
// never rotated keeps the hash it had before rotations existed (the app's
// password in it).
func TestRotationRestartsNothing(t *testing.T) {
	a := &Agent{cfg: Config{Address: "127.0.0.13", DataDir: "/var/lib/cacheplane"}}
	orig, next := api.NewSecret("orig-password"), api.NewSecret("next-password")
	base := func(role api.Role, port int) api.Assignment {
		return api.Assignment{MemberID: "app-1-" + string(role) + "-0", AddonID: "app-1", App: "app", Role: role, Port: port,
			Engine: api.EngineRedis, Version: "7.0.15", Image: "img", PlanMemoryMB: 256, Password: orig, FleetPassword: api.NewSecret("fleet-password"),
			Settings: api.DefaultSettings(), MasterName: "app-1", Primary: "127.0.0.13:20000"}
	}
	type stage struct {
		name string
		edit func(as api.Assignment) api.Assignment
		// apply: the redis member's set of passwords changes (published
		// keeps the set of the stage before: nothing to apply).
		apply bool
	}
	stages := []stage{
		{"next recorded", func(as api.Assignment) api.Assignment { as.OtherPasswords = []api.Secret{next}; return as }, true},
		{"published", func(as api.Assignment) api.Assignment {
			as.Password, as.OtherPasswords, as.SpecPassword = next, []api.Secret{orig}, orig
			return as
		}, false},
		{"retired", func(as api.Assignment) api.Assignment { as.Password, as.SpecPassword = next, orig; return as }, true},
	}
	for _, role := range []api.Role{api.RoleRedis, api.RoleSentinel} {
		before := base(role, 20000)
		p0, err := a.planMember(before)
		if err != nil {
			t.Fatal(err)
		}
		// The hash an agent before rotations made: the app's password in it.
		legacy := map[string]any{"v": 1, "role": role, "engine": before.Engine, "version": before.Version, "image": "img",
			"address": "127.0.0.13", "port": 20000, "password": orig}
		if role == api.RoleRedis {
			legacy["force_tls"] = false
		} else {
			legacy["master_name"] = "app-1"
		}
		if p0.spec.SpecHash != hashOf(legacy) {
			t.Fatalf("%s: the spec hash of an addon never rotated changed", role)
		}
		prev := authDigest(before)
		for _, st := range stages {
			name, as := st.name, st.edit(before)
			p, err := a.planMember(as)
			if err != nil {
				t.Fatal(err)
			}
			if p.spec.SpecHash != p0.spec.SpecHash {
				t.Errorf("%s %s: the spec hash changed (a restart)", role, name)
			}
			d := authDigest(as)
			if role == api.RoleRedis && (d != prev) != st.apply {
				t.Errorf("%s %s: applied live %v, want %v", role, name, d != prev, st.apply)
			}
			if role == api.RoleSentinel && d != prev {
				t.Errorf("sentinel %s: re-applied for an app password change", name)
			}
			prev = d
		}
	}
	pub := stages[1].edit(base(api.RoleRedis, 20000))
	if got := appPasswords(pub); !slices.Equal(got, []string{"next-password", "orig-password"}) {
		t.Errorf("app passwords %v: the URL's first, then the old one", got)
	}
	// The set, not the order, decides.
	swapped := pub
	swapped.Password, swapped.OtherPasswords = orig, []api.Secret{next}
	if authDigest(swapped) != authDigest(pub) {
		t.Error("the same set of passwords applied twice")
	}
}
