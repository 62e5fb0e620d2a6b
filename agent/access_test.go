package agent

import (
	"testing"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
)

// rlAccess writes a haproxy member's access files, as ensure does before
// a start, for tests that start HAProxy themselves.
func rlAccess(t *testing.T, p memberPlan) {
	t.Helper()
	if p.access == nil {
		return
	}
	if err := writeAccessFiles(p.access, p.as); err != nil {
		t.Fatal(err)
	}
}

// TestSwitchesFile: the switches file lists what the settings turn on.
func TestSwitchesFile(t *testing.T) {
	for _, tc := range []struct {
		s    api.Settings
		want string
	}{
		{api.Settings{}, ""},
		{api.Settings{ForceTLS: true}, render.SwitchForceTLS + "\n"},
		{api.Settings{InternetAccess: true}, render.SwitchInternet + "\n"},
		{api.Settings{ForceTLS: true, InternetAccess: true}, render.SwitchForceTLS + "\n" + render.SwitchInternet + "\n"},
	} {
		if got := switchesFile(tc.s); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.s, got, tc.want)
		}
	}
}
