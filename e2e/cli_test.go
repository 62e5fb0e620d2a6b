package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestCLIOperatorErrors drives a 3-member cluster through the real CLI
// binary: every bad input answers one clear line on stderr and a non-zero
// exit, nothing is half-written, the socket is found from --socket or
// $CACHEPLANE_SOCKET, and a follower that leaves shrinks the cluster to two
// members that still accept writes.
func TestCLIOperatorErrors(t *testing.T) {
	cs := StartCluster(t, 3)
	leader := WaitForLeader(t, startTimeout, cs...)
	follower := without(cs, leader)[0]

	// One addon so that duplicates and removals have something to hit; sent
	// through a follower, so errors below also cross the forwarding path.
	if res := follower.CLI("addons-add", "--app", "dup-app", "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("first addons-add: %s", res)
	}
	addons := addonsOf(t, leader, "dup-app")
	if len(addons) != 1 {
		t.Fatalf("dup-app has %d addons after one addons-add, want 1", len(addons))
	}
	dupID := addons[0].ID
	deadAddr := fmt.Sprintf("127.0.0.29:%d", testutil.FreePort(t, "127.0.0.29"))
	memberToken := leader.Token("members-token", "")

	cases := []struct {
		name   string
		socket string // default: the follower's
		args   []string
		code   int
		want   []string // substrings of the one stderr line
	}{
		{name: "unknown plan lists valid plans",
			args: []string{"addons-add", "--app", "web-app", "redis", "redis-nope-512"}, code: 2,
			want: []string{`unknown plan "redis-nope-512"`, "valid plans:", "redis-starter-256", "redis-business-8192"}},
		{name: "missing plan",
			args: []string{"addons-add", "--app", "web-app", "redis"}, code: 2,
			want: []string{"addons-add takes the addon type and the plan"}},
		{name: "unknown addon type",
			args: []string{"addons-add", "--app", "web-app", "memcached", "redis-starter-256"}, code: 2,
			want: []string{`unknown addon type "memcached"`, `"redis"`}},
		{name: "malformed app name",
			args: []string{"addons-add", "--app", "Web_App", "redis", "redis-starter-256"}, code: 2,
			want: []string{`app name "Web_App" is malformed`}},
		{name: "missing --app",
			args: []string{"addons-add", "redis", "redis-starter-256"}, code: 2,
			want: []string{"app name is missing", "--app"}},
		{name: "duplicate addon",
			args: []string{"addons-add", "--app", "dup-app", "redis", "redis-business-1024"}, code: 2,
			want: []string{"app dup-app already has a redis addon", dupID}},
		{name: "unknown addon on remove",
			args: []string{"addons-remove", "--app", "dup-app", "dup-app-0000"}, code: 2,
			want: []string{"dup-app", "dup-app-0000"}},
		{name: "addon of another app on remove",
			args: []string{"addons-remove", "--app", "other-app", dupID}, code: 2,
			want: []string{"other-app", dupID}},
		{name: "missing --app on remove",
			args: []string{"addons-remove", dupID}, code: 2,
			want: []string{"app name is missing"}},
		{name: "env of an app without addon",
			args: []string{"env", "--app", "nobody-app"}, code: 2,
			want: []string{"app nobody-app has no redis addon", "addons-add --app nobody-app"}},
		{name: "leave of an unknown member",
			args: []string{"leave", "c9"}, code: 2,
			want: []string{"c9 is not a member"}},
		{name: "join where nothing listens",
			args: []string{"join", deadAddr, "--token", memberToken}, code: 1,
			want: []string{"cannot reach coordinator at " + deadAddr}},
		{name: "join with a malformed address",
			args: []string{"join", "nowhere", "--token", memberToken}, code: 2,
			want: []string{`"nowhere" is not host:port`}},
		{name: "join without a token",
			args: []string{"join", deadAddr}, code: 2,
			want: []string{"a member join token is missing", "members-token"}},
		{name: "join with a malformed token",
			args: []string{"join", deadAddr, "--token", "secret"}, code: 2,
			want: []string{"not a cacheplane join token"}},
		{name: "nothing listens on the socket",
			socket: "/nonexistent/admin.sock", args: []string{"members"}, code: 3,
			want: []string{"no coordinator listening on /nonexistent/admin.sock", "--socket", "CACHEPLANE_SOCKET"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			socket := tc.socket
			if socket == "" {
				socket = follower.Socket
			}
			res := CLI(t, socket, tc.args...)
			t.Logf("%s", res)
			assertOneLineError(t, res, tc.code, tc.want...)
		})
	}

	// Nothing was half-written by the refused requests.
	if all := addonsOf(t, leader, ""); len(all) != 1 || all[0].ID != dupID {
		t.Errorf("after the refused requests the addons are %v, want only %s", addonIDs(all), dupID)
	}
	ops, err := leader.Client().Operations(ctxT(t, 10*time.Second), "", "")
	if err != nil {
		t.Fatalf("operations: %v", err)
	}
	if len(ops) != 1 || ops[0].AddonID != dupID || ops[0].Kind != api.OpProvision {
		t.Errorf("after the refused requests the operations are %+v, want the one provision of %s", ops, dupID)
	}

	t.Run("CACHEPLANE_SOCKET is honoured", func(t *testing.T) {
		res := CLIEnv(t, map[string]string{"CACHEPLANE_SOCKET": cs[0].Socket}, "members", "--json")
		if res.Code != 0 {
			t.Fatalf("%s", res)
		}
		var st api.ClusterStatus
		res.JSON(t, &st)
		if st.ServedBy != cs[0].ID {
			t.Errorf("members with CACHEPLANE_SOCKET=%s was served by %s, want %s", cs[0].Socket, st.ServedBy, cs[0].ID)
		}

		res = CLIEnv(t, map[string]string{"CACHEPLANE_SOCKET": cs[0].Socket}, "--socket", cs[1].Socket, "members", "--json")
		if res.Code != 0 {
			t.Fatalf("%s", res)
		}
		res.JSON(t, &st)
		if st.ServedBy != cs[1].ID {
			t.Errorf("--socket should win over CACHEPLANE_SOCKET: served by %s, want %s", st.ServedBy, cs[1].ID)
		}

		res = CLIEnv(t, map[string]string{"CACHEPLANE_SOCKET": "/nonexistent/env.sock"}, "addons")
		assertOneLineError(t, res, 3, "no coordinator listening on /nonexistent/env.sock")
	})

	t.Run("leave of a follower", func(t *testing.T) {
		leaver := follower
		stay := without(cs, leaver)
		res := leaver.CLI("leave")
		if res.Code != 0 || !strings.Contains(res.Stdout, "removed "+leaver.ID) {
			t.Fatalf("leave on %s: %s", leaver.ID, res)
		}
		WaitForVoters(t, startTimeout, 2, stay...)
		for _, c := range stay {
			res := c.CLI("members", "--json")
			if res.Code != 0 {
				t.Fatalf("members on %s: %s", c.ID, res)
			}
			var st api.ClusterStatus
			res.JSON(t, &st)
			if len(st.Members) != 2 || st.LeaderID == "" {
				t.Errorf("members on %s after %s left: %+v, want 2 members and a leader", c.ID, leaver.ID, st)
			}
			for _, m := range st.Members {
				if m.ID == leaver.ID {
					t.Errorf("members on %s still lists %s after it left", c.ID, leaver.ID)
				}
			}
		}
		// Writes still work on both remaining members, while the member that
		// left is still running (as it would until the operator stops it).
		for i, c := range append(stay, stay...) {
			app := fmt.Sprintf("after-leave-%d", i)
			if res := c.CLI("addons-add", "--app", app, "redis", "redis-starter-256"); res.Code != 0 {
				t.Fatalf("addons-add via %s after %s left: %s", c.ID, leaver.ID, res)
			}
			if as := addonsOf(t, stay[0], app); len(as) != 1 {
				t.Errorf("%s has %d addons after addons-add, want 1", app, len(as))
			}
		}
		leaver.Stop()
		if res := stay[1].CLI("addons-add", "--app", "after-leaver-stopped", "redis", "redis-starter-256"); res.Code != 0 {
			t.Fatalf("addons-add after %s stopped: %s", leaver.ID, res)
		}
	})
}

// assertOneLineError checks a failed CLI run: exit code, nothing on stdout,
// exactly one line on stderr starting with "Error: " and holding want.
func assertOneLineError(t testing.TB, res CLIResult, code int, want ...string) {
	t.Helper()
	if res.Code != code {
		t.Errorf("exit code %d, want %d: %s", res.Code, code, res)
	}
	if res.Stdout != "" {
		t.Errorf("stdout should be empty on error: %q", res.Stdout)
	}
	line := strings.TrimSuffix(res.Stderr, "\n")
	if line == "" || strings.Contains(line, "\n") {
		t.Errorf("stderr should be exactly one line, got %q", res.Stderr)
	}
	if !strings.HasPrefix(line, "Error: ") {
		t.Errorf("stderr should start with \"Error: \": %q", line)
	}
	for _, w := range want {
		if !strings.Contains(line, w) {
			t.Errorf("stderr %q does not mention %q", line, w)
		}
	}
	// The operator should never read Go internals or the sentinel prefix.
	for _, bad := range []string{"invalid request:", "not found:", "conflict:", "panic", "goroutine"} {
		if strings.Contains(line, bad) {
			t.Errorf("stderr %q contains %q", line, bad)
		}
	}
}

// addonsOf is a consistent read of an app's addons (all with app "").
func addonsOf(t testing.TB, c *Coordinator, app string) []api.Addon {
	t.Helper()
	cl := c.Client()
	cl.RetryFor = 10 * time.Second
	as, err := cl.Addons(ctxT(t, 15*time.Second), app, false)
	if err != nil {
		t.Fatalf("addons of %q via %s: %v", app, c.ID, err)
	}
	return as
}

// ctxT is a context cancelled after d or at the end of the test.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
