package coordinator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// legacyAddon is an addon as a release before the fleet credential
// recorded it: no FleetPassword.
func legacyAddon(app, id string) AddonCreateCmd {
	c := testAddon(app, id, "")
	c.Addon.FleetPassword = api.Secret{}
	return c
}

func TestApplyAddonFleetCredential(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdAddonCreate, legacyAddon("old-app", "old-app-1000")))
	fleet := func() api.Secret {
		var s api.Secret
		f.Read(func(st *State, _ uint64) { s = st.Addons["old-app-1000"].FleetPassword })
		return s
	}
	if !fleet().IsZero() {
		t.Fatal("the legacy addon has a fleet credential")
	}
	first := api.NewSecret(strings.Repeat("a", 64))
	if res := f.Apply(entry(t, 2, CmdAddonFleetCredential, AddonFleetCredentialCmd{AddonID: "old-app-1000", FleetPassword: first})); res != nil {
		t.Fatalf("apply: %v", res)
	}
	if !fleet().Equal(first) {
		t.Fatal("the fleet credential was not recorded")
	}
	// A second one (a retried or duplicated entry) changes nothing.
	if res := f.Apply(entry(t, 3, CmdAddonFleetCredential, AddonFleetCredentialCmd{AddonID: "old-app-1000", FleetPassword: api.NewSecret("other")})); res != nil {
		t.Fatalf("apply again: %v", res)
	}
	if !fleet().Equal(first) {
		t.Fatal("an addon's fleet credential was replaced")
	}
	assertRoundTrip(t, f)

	before := stateJSON(t, f)
	for _, tc := range []struct {
		cmd  AddonFleetCredentialCmd
		want error
	}{
		{AddonFleetCredentialCmd{AddonID: "nope-1", FleetPassword: first}, api.ErrNotFound},
		{AddonFleetCredentialCmd{AddonID: "old-app-1000"}, api.ErrInvalid},
	} {
		res := f.Apply(entry(t, 4, CmdAddonFleetCredential, tc.cmd))
		if err, ok := res.(error); !ok || !errors.Is(err, tc.want) || strings.Contains(err.Error(), first.Reveal()) {
			t.Errorf("%+v: %v, want %v", tc.cmd, res, tc.want)
		}
	}
	if after := stateJSON(t, f); string(before) != string(after) {
		t.Fatal("a refused command changed the state")
	}
	if CmdAddonFleetCredential != 27 {
		t.Fatal("command 27 renumbered")
	}
	if since, ok := CmdAddonFleetCredential.Since(); !ok || since != ProtocolBackups {
		t.Fatalf("command 27 is level %d, want %d", since, ProtocolBackups)
	}
}

// TestLeaderGivesFleetCredential: an addon in the FSM without a fleet
// credential (created by a release before it) gets one from the leader,
// distinct from its app password, and its assignments carry it to the
// agents; a new addon is created with one.
func TestLeaderGivesFleetCredential(t *testing.T) {
	c, cfg := startTestCoordinator(t, "127.0.0.77")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	legacy := legacyAddon("old-app", "old-app-1000")
	if _, err := c.store.Apply(ctx, CmdAddonCreate, legacy); err != nil {
		t.Fatal(err)
	}
	var got api.Addon
	testutil.WaitFor(t, 15*time.Second, func() error {
		c.store.FSM().Read(func(s *State, _ uint64) { got = s.Addons[legacy.Addon.ID] })
		if got.FleetPassword.IsZero() {
			return errors.New("no fleet credential yet")
		}
		return nil
	})
	if len(got.FleetPassword.Reveal()) != 64 || got.FleetPassword.Equal(got.Password) || !got.Password.Equal(legacy.Addon.Password) {
		t.Fatal("the fleet credential is not a new 64-character secret beside the unchanged app password")
	}

	// A new addon has one from its creation on.
	admin := api.NewClient(cfg.Socket)
	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "new-app", Type: api.AddonType, Plan: "redis-starter-256"})
	if err != nil {
		t.Fatal(err)
	}
	c.store.FSM().Read(func(s *State, _ uint64) { got = s.Addons[res.Addon.ID] })
	if len(got.FleetPassword.Reveal()) != 64 || got.FleetPassword.Equal(got.Password) {
		t.Fatal("a new addon has no fleet credential of its own")
	}
	if !res.Addon.Password.IsZero() || !res.Addon.FleetPassword.IsZero() {
		t.Fatal("the create answer holds a secret")
	}
}
