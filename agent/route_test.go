package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

func TestRouteCommands(t *testing.T) {
	const be = "be_a"
	// Server redis-N is at 127.0.0.1N:6379.
	addr := func(name string) string { return "127.0.0.1" + name[len(name)-1:] + ":6379" }
	ready := func(name string, sessions int) hapServer {
		return hapServer{Name: name, Addr: addr(name), Admin: hapReady, Up: true, Sessions: sessions}
	}
	maint := func(name string, sessions int) hapServer {
		return hapServer{Name: name, Addr: addr(name), Admin: hapMaint, Sessions: sessions}
	}
	cases := []struct {
		name    string
		servers []hapServer
		primary string
		want    []string
	}{
		{"no agreement: nothing, whatever the states", []hapServer{ready("redis-1", 3), ready("redis-2", 0)}, "", nil},
		{"no agreement, all in maint: left so", []hapServer{maint("redis-1", 0), maint("redis-2", 0)}, "", nil},
		{"primary not a server of this backend: nothing", []hapServer{ready("redis-1", 3), maint("redis-2", 0)}, "redis-9", nil},
		{"settled: nothing", []hapServer{ready("redis-1", 5), maint("redis-2", 0)}, "redis-1", nil},
		{"fresh HAProxy (all ready): the replica out", []hapServer{ready("redis-1", 0), ready("redis-2", 0)}, "redis-1", []string{
			"set server be_a/redis-2 state maint", "shutdown sessions server be_a/redis-2",
		}},
		{"switch: the old primary out and its sessions cut, then the new one ready",
			[]hapServer{ready("redis-1", 40), maint("redis-2", 0)}, "redis-2", []string{
				"set server be_a/redis-1 state maint", "shutdown sessions server be_a/redis-1",
				"set server be_a/redis-2 state ready", "set server be_a/redis-2 health down",
			}},
		{"a session left on a server in maint is shut", []hapServer{maint("redis-1", 2), ready("redis-2", 7)}, "redis-2", []string{
			"shutdown sessions server be_a/redis-1",
		}},
		{"primary drained by hand: ready again", []hapServer{{Name: "redis-1", Addr: addr("redis-1"), Admin: hapDrain, Up: true}, maint("redis-2", 0)}, "redis-1", []string{
			"set server be_a/redis-1 state ready",
		}},
		{"three servers (a replacement being added)", []hapServer{ready("redis-1", 1), ready("redis-2", 0), maint("redis-3", 0)}, "redis-3", []string{
			"set server be_a/redis-1 state maint", "shutdown sessions server be_a/redis-1",
			"set server be_a/redis-2 state maint", "shutdown sessions server be_a/redis-2",
			"set server be_a/redis-3 state ready", "set server be_a/redis-3 health down",
		}},
		{"primary whose check fails stays ready (its check decides)", []hapServer{{Name: "redis-1", Addr: addr("redis-1"), Admin: hapReady}, maint("redis-2", 0)}, "redis-1", nil},
		{"matched by address, not name: an HAProxy still running the previous file", []hapServer{
			{Name: "redis-1", Addr: "127.0.0.11:6379", Admin: hapMaint}, {Name: "redis-2", Addr: "127.0.0.12:6379", Admin: hapReady, Up: true, Sessions: 9},
			{Name: "redis-3", Addr: "127.0.0.13:6379", Admin: hapReady, Up: true}}, "redis-2", []string{"set server be_a/redis-3 state maint", "shutdown sessions server be_a/redis-3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			primary := ""
			if tc.primary != "" {
				primary = addr(tc.primary)
			}
			got := routeCommands(be, tc.servers, primary)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q\nwant %q", got, tc.want)
			}
			// Never every server out, never two ready after the commands.
			after := apply(tc.servers, got)
			readyN := 0
			for _, s := range after {
				if s.Admin == hapReady {
					readyN++
				}
			}
			if tc.primary != "" && len(got) > 0 && readyN != 1 {
				t.Errorf("after the commands %d servers are ready: %+v", readyN, after)
			}
			if again := routeCommands(be, after, primary); len(again) > 0 {
				t.Errorf("not idempotent: a second pass sends %q", again)
			}
		})
	}
}

// apply simulates HAProxy executing routeCommands' output.
func apply(servers []hapServer, cmds []string) []hapServer {
	out := append([]hapServer(nil), servers...)
	for _, c := range cmds {
		f := strings.Fields(c)
		name := f[len(f)-1]
		if f[0] == "set" {
			name = f[2]
		}
		name = name[strings.Index(name, "/")+1:]
		for i := range out {
			if out[i].Name != name {
				continue
			}
			switch {
			case strings.HasSuffix(c, "state maint"):
				out[i].Admin, out[i].Up = hapMaint, false
			case strings.HasSuffix(c, "state ready"):
				out[i].Admin = hapReady
			case strings.HasSuffix(c, "health down"):
				out[i].Up = false
			case f[0] == "shutdown":
				out[i].Sessions = 0
			}
		}
	}
	return out
}

func TestAgreement(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	const p, r = "127.0.0.11:6379", "127.0.0.12:6379"
	type step struct {
		at       time.Duration
		switchTo string // an announcement, or
		majority string // a majority's answer ("" none)
		want     string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"unknown until a majority answers", []step{{at: 0, majority: "", want: ""}, {at: time.Second, majority: p, want: p}}},
		{"a majority moves it when no announcement is recent", []step{{majority: p, want: p}, {at: 2 * time.Second, majority: r, want: r}}},
		{"an announcement wins at once", []step{{majority: p, want: p}, {at: time.Second, switchTo: r, want: r}}},
		{"a lagging majority is not believed within the settle time", []step{
			{majority: p, want: p}, {at: time.Second, switchTo: r, want: r},
			{at: 2 * time.Second, majority: p, want: r}, {at: 5900 * time.Millisecond, majority: p, want: r},
		}},
		{"a majority that keeps disagreeing wins after the settle time (a missed announcement)", []step{
			{switchTo: r, want: r}, {at: switchSettle, majority: p, want: p},
		}},
		{"no majority keeps the last agreement", []step{{switchTo: r, want: r}, {at: time.Minute, majority: "", want: r}}},
		{"announcements follow each other", []step{{switchTo: r, want: r}, {at: time.Second, switchTo: p, want: p}, {at: 2 * time.Second, majority: p, want: p}}},
		{"a promotion, then its switch, while the majority catches up", []step{
			{majority: p, want: p}, {at: time.Second, switchTo: r, want: r}, {at: 2 * time.Second, majority: p, want: r},
			{at: 2100 * time.Millisecond, switchTo: r, want: r}, {at: 4 * time.Second, majority: r, want: r},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var g agreement
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				if s.switchTo != "" {
					g = g.onSwitch(s.switchTo, now)
				} else {
					g = g.onMajority(s.majority, now)
				}
				if g.primary != s.want {
					t.Fatalf("step %d: primary %q, want %q", i, g.primary, s.want)
				}
			}
		})
	}
}

func TestFrontendCommand(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	const fe = "fe_a"
	cases := []struct {
		name                   string
		known, enabled, holder bool
		releaseAt              time.Time
		want                   string
	}{
		{"holder, enabled", true, true, true, time.Time{}, ""},
		{"holder, disabled (it just got the VIP, or HAProxy kept an old state)", true, false, true, time.Time{}, "enable frontend fe_a"},
		{"non-holder, enabled, no grace (HAProxy or agent restarted): disabled at once", true, true, false, time.Time{}, "disable frontend fe_a"},
		{"non-holder in its release grace: kept", true, true, false, now.Add(time.Second), ""},
		{"non-holder, grace over", true, true, false, now, "disable frontend fe_a"},
		{"non-holder, disabled", true, false, false, time.Time{}, ""},
		{"no such frontend (no VIP)", false, false, true, time.Time{}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := frontendCommand(fe, tc.known, tc.enabled, tc.holder, tc.releaseAt, now); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseShowStat(t *testing.T) {
	// Trimmed from HAProxy 2.6's "show stat -1 5 -1" (the real header has
	// ~100 columns; only the names matter).
	out := "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,weight,type,addr,\n" +
		"fe_a,FRONTEND,,,3,5,2064,9,OPEN,,0,,\n" +
		"fe_a_local,FRONTEND,,,0,1,16,4,OPEN,,0,,\n" +
		"fe_b,FRONTEND,,,0,0,2064,0,PAUSED,,0,,\n" +
		"fe_c,FRONTEND,,,2064,2064,2064,9000,FULL,,0,,\n" +
		"be_a,redis-1,0,0,3,5,,9,UP,1,2,127.0.0.11:6379,\n" +
		"be_a,redis-2,0,0,0,1,,2,MAINT,1,2,127.0.0.12:6379,\n" +
		"be_a,redis-3,0,0,1,1,,1,DOWN,1,2,[::1]:6379,\n" +
		"be_a,redis-4,0,0,0,0,,0,DRAIN,0,2,::1:6380,\n" +
		"be_a,redis-5,0,0,0,0,,0,MAINT (via be_x/r),1,2,127.0.0.15:6379,\n\n"
	st, err := parseShowStat(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"fe_a": true, "fe_a_local": true, "fe_b": false, "fe_c": true}; !reflect.DeepEqual(st.Frontends, want) {
		t.Errorf("frontends %v, want %v", st.Frontends, want)
	}
	want := []hapServer{
		{Name: "redis-1", Addr: "127.0.0.11:6379", Admin: hapReady, Up: true, Sessions: 3},
		{Name: "redis-2", Addr: "127.0.0.12:6379", Admin: hapMaint},
		{Name: "redis-3", Addr: "[::1]:6379", Admin: hapReady, Sessions: 1},
		{Name: "redis-4", Addr: "[::1]:6380", Admin: hapDrain, Up: true},
		{Name: "redis-5", Addr: "127.0.0.15:6379", Admin: hapMaint},
	}
	if !reflect.DeepEqual(st.Servers["be_a"], want) {
		t.Errorf("servers\n%+v\nwant\n%+v", st.Servers["be_a"], want)
	}
	for _, bad := range []string{"", "Unknown command.\n", "# pxname,svname\nx,y\n"} {
		if _, err := parseShowStat(bad); err == nil {
			t.Errorf("parseShowStat(%q): no error", bad)
		}
	}
}

func TestRouteSpecOf(t *testing.T) {
	a := &Agent{cfg: Config{Address: "127.0.0.13", DataDir: "/var/lib/cacheplane"}}
	as := api.Assignment{
		MemberID: "app-1-haproxy-0", AddonID: "app-1", Role: api.RoleHAProxy, Address: "127.0.0.13", Port: 20002,
		Password: api.NewSecret("pw"), FleetPassword: api.NewSecret("fleet-pw"), Entrypoint: "127.0.1.1:20002", VIP: "127.0.1.1",
		Servers:   []string{"127.0.0.12:20000", "127.0.0.11:20000"},
		Sentinels: []string{"127.0.0.13:20001", "127.0.0.11:20001"}, MasterName: "app-1",
	}
	in, err := a.haproxyInput(as)
	if err != nil {
		t.Fatal(err)
	}
	if in.Local != (render.Endpoint{Addr: "127.0.0.13", Port: 20002}) || in.Entrypoint != (render.Endpoint{Addr: "127.0.1.1", Port: 20002}) ||
		in.StatsSocket != "/var/lib/cacheplane/members/app-1-haproxy-0/haproxy.sock" {
		t.Errorf("input %+v", in)
	}
	got := routeSpecOf(as, in)
	want := routeSpec{
		socket: in.StatsSocket, backend: "be_app-1", frontend: "fe_app-1", holder: true,
		sentinels: []string{"127.0.0.11:20001", "127.0.0.13:20001"}, masterName: "app-1", addon: "app-1",
		sentinelPass: api.NewSecret("fleet-pw"),
		servers: []render.HAProxyServer{
			{Name: "redis_127.0.0.11_20000", Addr: "127.0.0.11", Port: 20000},
			{Name: "redis_127.0.0.12_20000", Addr: "127.0.0.12", Port: 20000},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("spec\n%v\nwant\n%v", got, want)
	}
	// The other member of the pair: same file but for its own address, not
	// the holder.
	other := as
	other.MemberID, other.Address, other.VIP = "app-1-haproxy-1", "127.0.0.14", ""
	oin, _ := a.haproxyInput(other)
	if s := routeSpecOf(other, oin); s.holder || s.frontend != "fe_app-1" {
		t.Errorf("non-holder spec %v", s)
	}
	// No VIP: one frontend, nothing to enable or disable.
	novip := as
	novip.Entrypoint, novip.VIP = "127.0.0.13:20002", ""
	nin, _ := a.haproxyInput(novip)
	if s := routeSpecOf(novip, nin); s.frontend != "" {
		t.Errorf("no-VIP spec %v", s)
	}
	// A VIP move changes no byte of haproxy.cfg.
	p1, err := a.planMember(as)
	if err != nil {
		t.Fatal(err)
	}
	moved := as
	moved.VIP = ""
	p2, _ := a.planMember(moved)
	if p1.conf != p2.conf || p1.spec.SpecHash != p2.spec.SpecHash {
		t.Error("the VIP holder changes haproxy.cfg (a move would restart HAProxy)")
	}
	// Nor does the addon's engine version (an upgrade that keeps the
	// HAProxy image restarts no HAProxy).
	upg := as
	upg.Engine, upg.Version = api.EngineValkey, "8.0.1"
	if p3, _ := a.planMember(upg); p3.spec.SpecHash != p1.spec.SpecHash {
		t.Error("an engine version change restarts HAProxy")
	}
	upg.Image = "cacheplane.local/haproxy:2.8"
	if p4, _ := a.planMember(upg); p4.spec.SpecHash == p1.spec.SpecHash {
		t.Error("a new HAProxy image does not restart HAProxy")
	}
	if p1.probe != "127.0.0.13:20002" {
		t.Errorf("probe %s, want the member's own address", p1.probe)
	}
}

// TestRoutesStop: routers (their sentinel subscriptions, majority asks and
// HAProxy exchanges, all failing here: nothing listens) end with stop, and
// with their member when sync no longer lists it; no goroutine is left.
func TestRoutesStop(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	spec := func(id string) routeSpec {
		return routeSpec{socket: filepath.Join(dir, id+".sock"), backend: "be_x", frontend: "fe_x", holder: true,
			sentinels: []string{testutil.Addr(t, "127.0.0.1"), testutil.Addr(t, "127.0.0.1")}, masterName: "x", addon: "x"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rs := newRoutes()
	log := testutil.Logger(t)
	rs.sync(ctx, log, map[string]routeSpec{"a": spec("a"), "b": spec("b")})
	rs.pokeMember("a")
	rs.sync(ctx, log, map[string]routeSpec{"a": spec("a")}) // b ends
	rs.mu.Lock()
	n := len(rs.r)
	rs.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d routers after b was dropped", n)
	}
	rs.stop()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if now := runtime.NumGoroutine(); now > before {
			return fmt.Errorf("%d goroutines, %d before the routers", now, before)
		}
		return nil
	})
}

func TestServerCommands(t *testing.T) {
	be := "be_a"
	srv := func(addr string) render.HAProxyServer {
		h, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		return render.HAProxyServer{Name: render.HAProxyServerName(h, port), Addr: h, Port: port}
	}
	have := func(addr, admin string, sessions int) hapServer {
		s := srv(addr)
		return hapServer{Name: s.Name, Addr: addr, Admin: admin, Sessions: sessions}
	}
	const p, r = "127.0.0.1:7001", "127.0.0.2:7002"
	add := "add server be_a/redis_127.0.0.2_7002 127.0.0.2:7002 check inter 200ms rise 1 fall 1 on-marked-down shutdown-sessions"
	for _, tc := range []struct {
		name       string
		have       []hapServer
		want       []render.HAProxyServer
		follows    bool
		cmds, dels []string
	}{
		{"same list: nothing", []hapServer{have(p, hapReady, 3)}, []render.HAProxyServer{srv(p)}, false, nil, nil},
		{"a replica joins: added (in MAINT, check on)", []hapServer{have(p, hapReady, 3)}, []render.HAProxyServer{srv(p), srv(r)}, true,
			[]string{add, "enable health be_a/redis_127.0.0.2_7002"}, nil},
		{"a member leaves: MAINT, sessions shut, then deleted", []hapServer{have(p, hapReady, 3), have(r, hapReady, 1)}, []render.HAProxyServer{srv(p)}, true,
			[]string{"set server be_a/redis_127.0.0.2_7002 state maint", "shutdown sessions server be_a/redis_127.0.0.2_7002"},
			[]string{"del server be_a/redis_127.0.0.2_7002"}},
		{"a member in MAINT without sessions leaves: only deleted", []hapServer{have(p, hapReady, 3), have(r, hapMaint, 0)}, []render.HAProxyServer{srv(p)}, true,
			nil, []string{"del server be_a/redis_127.0.0.2_7002"}},
		{"no sentinels (a starter): a wanted server in MAINT is readied, its check decides", []hapServer{have(p, hapMaint, 0)}, []render.HAProxyServer{srv(p)}, false,
			[]string{"set server be_a/redis_127.0.0.1_7001 state ready", "set server be_a/redis_127.0.0.1_7001 health down"}, nil},
		{"following sentinels: MAINT is the router's, left alone", []hapServer{have(p, hapReady, 0), have(r, hapMaint, 0)}, []render.HAProxyServer{srv(p), srv(r)}, true, nil, nil},
		{"empty wanted list: nothing deleted", []hapServer{have(p, hapReady, 3)}, nil, false, nil, nil},
		{"matched by address, whatever the name (an older file)", []hapServer{{Name: "redis-1", Addr: p, Admin: hapReady}}, []render.HAProxyServer{srv(p)}, false, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmds, dels := serverCommands(be, tc.have, tc.want, tc.follows)
			if !reflect.DeepEqual(cmds, tc.cmds) || !reflect.DeepEqual(dels, tc.dels) {
				t.Errorf("got\n%q\n%q\nwant\n%q\n%q", cmds, dels, tc.cmds, tc.dels)
			}
		})
	}
}
