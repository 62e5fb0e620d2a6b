package scheduler

import (
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

func TestReservation(t *testing.T) {
	for _, tc := range []struct {
		role api.Role
		plan string
		want int
	}{
		{api.RoleRedis, "redis-starter-1024", 1126},
		{api.RoleRedis, "redis-business-256", 281},
		{api.RoleRedis, "redis-starter-8192", 9011},
		{api.RoleSentinel, "redis-business-8192", SidecarReserveMB},
		{api.RoleHAProxy, "redis-business-256", SidecarReserveMB},
	} {
		if got := Reservation(tc.role, plan(t, tc.plan)); got != tc.want {
			t.Errorf("Reservation(%s, %s) = %d, want %d", tc.role, tc.plan, got, tc.want)
		}
	}
}

func TestPlaceStarter(t *testing.T) {
	tests := []struct {
		name    string
		hosts   []api.Host
		addons  []api.Addon
		ports   PortRange
		exclude []string
		plan    string

		wantHost  string
		wantPort  int
		wantEntry string
		// why[host] is the reason the explanation gives for not choosing it
		why map[string]Reason
		// wantErr is the exact error; it must wrap api.ErrNoCapacity unless
		// wantInvalid.
		wantErr     string
		wantInvalid bool
	}{
		{
			name:      "fits on the only host",
			hosts:     []api.Host{host("host-a", 2048, "")},
			plan:      "redis-starter-1024",
			wantHost:  "host-a",
			wantPort:  20000,
			wantEntry: "host-a.test:20001",
		},
		{
			name:     "exactly fits (the redis node and its haproxy)",
			hosts:    []api.Host{host("host-a", 1158, "")},
			plan:     "redis-starter-1024",
			wantHost: "host-a", wantPort: 20000, wantEntry: "host-a.test:20001",
		},
		{
			name:    "no host fits names the largest free memory",
			hosts:   []api.Host{host("host-a", 500, ""), host("host-b", 2000, ""), host("host-c", 300, "")},
			addons:  []api.Addon{filler("other", 1000, "host-b")}, // 1100 reserved, 900 free
			plan:    "redis-starter-1024",
			why:     map[string]Reason{"host-a": ReasonMemory, "host-b": ReasonMemory, "host-c": ReasonMemory},
			wantErr: "place app-1: no ready host has 1158 MB free for redis-starter-1024 (largest free: 900 MB on host-b)",
		},
		{
			name:    "one MB short",
			hosts:   []api.Host{host("host-a", 1157, "")},
			plan:    "redis-starter-1024",
			wantErr: "place app-1: no ready host has 1158 MB free for redis-starter-1024 (largest free: 1157 MB on host-a)",
		},
		{
			name:    "overcommitted host reports zero free",
			hosts:   []api.Host{host("host-a", 1000, "")},
			addons:  []api.Addon{filler("other", 1000, "host-a")},
			plan:    "redis-starter-256",
			wantErr: "place app-1: no ready host has 313 MB free for redis-starter-256 (largest free: 0 MB on host-a)",
		},
		{
			name:     "down host skipped",
			hosts:    []api.Host{withState(host("host-a", 8192, ""), api.HostDown), host("host-b", 2048, "")},
			plan:     "redis-starter-1024",
			wantHost: "host-b", wantPort: 20000, wantEntry: "host-b.test:20001",
			why: map[string]Reason{"host-a": ReasonNotReady},
		},
		{
			name:     "draining host skipped",
			hosts:    []api.Host{withState(host("host-a", 8192, ""), api.HostDraining), host("host-b", 2048, "")},
			plan:     "redis-starter-1024",
			wantHost: "host-b", wantPort: 20000, wantEntry: "host-b.test:20001",
			why: map[string]Reason{"host-a": ReasonDraining},
		},
		{
			name:     "unknown host state counts as not ready",
			hosts:    []api.Host{withState(host("host-a", 8192, ""), "booting"), host("host-b", 2048, "")},
			plan:     "redis-starter-1024",
			wantHost: "host-b", wantPort: 20000, wantEntry: "host-b.test:20001",
			why: map[string]Reason{"host-a": ReasonNotReady},
		},
		{
			name:     "excluded host skipped",
			hosts:    []api.Host{host("host-a", 8192, ""), host("host-b", 2048, "")},
			exclude:  []string{"host-a"},
			plan:     "redis-starter-1024",
			wantHost: "host-b", wantPort: 20000, wantEntry: "host-b.test:20001",
			why: map[string]Reason{"host-a": ReasonExcluded},
		},
		{
			name: "all hosts unusable for other reasons",
			hosts: []api.Host{
				withState(host("host-a", 8192, ""), api.HostDown),
				withState(host("host-b", 8192, ""), api.HostDraining),
				withState(host("host-c", 8192, ""), api.HostDown),
			},
			plan:    "redis-starter-1024",
			wantErr: "place app-1: no host can run app-1-redis-0 (redis-starter-1024): 1 draining, 2 not-ready",
		},
		{
			name:    "empty fleet",
			plan:    "redis-starter-1024",
			wantErr: "place app-1: no host is registered",
		},
		{
			name:     "least loaded wins",
			hosts:    []api.Host{host("host-a", 4096, ""), host("host-b", 4096, "")},
			addons:   []api.Addon{filler("other", 1024, "host-a")},
			plan:     "redis-starter-1024",
			wantHost: "host-b", wantPort: 20000, wantEntry: "host-b.test:20001",
			why: map[string]Reason{"host-a": ReasonRankedLower},
		},
		{
			name:     "load is a fraction of capacity, not free MB",
			hosts:    []api.Host{host("host-a", 8192, ""), host("host-b", 2048, "")},
			addons:   []api.Addon{filler("other", 1862, "host-a")}, // a: 2048 used of 8192
			plan:     "redis-starter-1024",
			wantHost: "host-a", wantPort: 20000, wantEntry: "host-a.test:20001", // a 38% after, b 55%
			why: map[string]Reason{"host-b": ReasonRankedLower},
		},
		{
			name:     "ties broken by host id",
			hosts:    []api.Host{host("host-c", 4096, ""), host("host-b", 4096, ""), host("host-a", 4096, "")},
			plan:     "redis-starter-1024",
			wantHost: "host-a", wantPort: 20000, wantEntry: "host-a.test:20001",
			why: map[string]Reason{"host-b": ReasonRankedLower, "host-c": ReasonRankedLower},
		},
		{
			name:  "lowest free port on the host",
			hosts: []api.Host{host("host-a", 4096, "")},
			addons: []api.Addon{addon("other", "redis-business-256",
				mem("o-1", api.RoleSentinel, "host-a", 20000),
				mem("o-2", api.RoleHAProxy, "host-a", 20001),
				mem("o-3", api.RoleSentinel, "host-a", 20003))},
			plan:     "redis-starter-1024",
			wantHost: "host-a", wantPort: 20002, wantEntry: "host-a.test:20004",
		},
		{
			name:  "host without a free port is skipped",
			hosts: []api.Host{host("host-a", 8192, ""), host("host-b", 2048, "")},
			addons: []api.Addon{addon("other", "redis-business-256",
				mem("o-1", api.RoleSentinel, "host-a", 20000),
				mem("o-2", api.RoleHAProxy, "host-a", 20001))},
			ports:    PortRange{Min: 20000, Max: 20001},
			plan:     "redis-starter-1024",
			wantHost: "host-b", wantPort: 20000, wantEntry: "host-b.test:20001",
			why: map[string]Reason{"host-a": ReasonNoPort},
		},
		{
			name:  "ports outside the range do not count against it",
			hosts: []api.Host{host("host-a", 8192, "")},
			addons: []api.Addon{addon("other", "redis-business-256",
				mem("o-1", api.RoleSentinel, "host-a", 6379))},
			ports:    PortRange{Min: 20000, Max: 20001},
			plan:     "redis-starter-256",
			wantHost: "host-a", wantPort: 20000, wantEntry: "host-a.test:20001",
		},
		{
			name:        "invalid port range",
			hosts:       []api.Host{host("host-a", 8192, "")},
			ports:       PortRange{Min: 30000, Max: 20000},
			plan:        "redis-starter-256",
			wantErr:     "place app-1: invalid request: port range 30000-20000 is invalid: want 1 <= min <= max <= 65535",
			wantInvalid: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state := State{Hosts: tc.hosts, Addons: tc.addons, Ports: tc.ports}
			req := Request{AddonID: "app-1", Plan: plan(t, tc.plan), ExcludeHosts: tc.exclude}
			p, expl, err := Place(state, req)
			t.Logf("explanation:\n%s", expl)
			for h, want := range tc.why {
				if got, ok := expl.Reason("app-1-redis-0", h); !ok || got != want {
					t.Errorf("reason for %s = %q (found %v), want %q", h, got, ok, want)
				}
			}
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("Place succeeded with %+v, want error %q", p, tc.wantErr)
				}
				if err.Error() != tc.wantErr {
					t.Errorf("error\n got %q\nwant %q", err, tc.wantErr)
				}
				sentinel := api.ErrNoCapacity
				if tc.wantInvalid {
					sentinel = api.ErrInvalid
				}
				if !errors.Is(err, sentinel) {
					t.Errorf("error %v does not wrap %v", err, sentinel)
				}
				return
			}
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			_, hport, _ := strings.Cut(tc.wantEntry, ":")
			hp, _ := strconv.Atoi(hport)
			want := []api.Member{{
				ID: "app-1-redis-0", Role: api.RoleRedis, HostID: tc.wantHost,
				Address: tc.wantHost + ".test", Port: tc.wantPort, RedisRole: RedisPrimary,
			}, { // the entrypoint, beside it
				ID: "app-1-haproxy-0", Role: api.RoleHAProxy, HostID: tc.wantHost,
				Address: tc.wantHost + ".test", Port: hp,
			}}
			if !reflect.DeepEqual(p.Members, want) {
				t.Errorf("members\n got %+v\nwant %+v", p.Members, want)
			}
			if p.Entrypoint != tc.wantEntry {
				t.Errorf("entrypoint = %q, want %q", p.Entrypoint, tc.wantEntry)
			}
			if p.AddonID != "app-1" || p.Plan != tc.plan {
				t.Errorf("placement header = %q %q", p.AddonID, p.Plan)
			}
			if r, ok := expl.Reason("app-1-redis-0", tc.wantHost); !ok || r != "" {
				t.Errorf("chosen host reason = %q, %v", r, ok)
			}
		})
	}
}

func TestCapacityErrorMessage(t *testing.T) {
	state := State{Hosts: []api.Host{host("host-a", 500, ""), host("host-b", 2000, "")},
		Addons: []api.Addon{filler("other", 1000, "host-b")}}
	_, _, err := Place(state, Request{AddonID: "app-1", Plan: plan(t, "redis-starter-1024")})
	var ce *CapacityError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *CapacityError", err)
	}
	want := "no ready host has 1158 MB free for redis-starter-1024 (largest free: 900 MB on host-b)"
	if ce.Message != want || ce.Op != "place" || ce.AddonID != "app-1" {
		t.Errorf("CapacityError = %+v, want message %q", ce, want)
	}
	if api.HTTPStatus(err) != 422 || api.ErrorCode(err) != "no_capacity" {
		t.Errorf("HTTP mapping: %d %s", api.HTTPStatus(err), api.ErrorCode(err))
	}
}

func TestPlaceBusiness(t *testing.T) {
	hosts := []api.Host{host("host-a", 4096, ""), host("host-b", 4096, ""), host("host-c", 4096, "")}
	p, expl, err := Place(State{Hosts: hosts}, Request{AddonID: "app-1", Plan: plan(t, "redis-business-1024")})
	if err != nil {
		t.Fatalf("Place: %v\n%s", err, expl)
	}
	t.Logf("explanation:\n%s", expl)
	// redis-0: all equal, host id decides (a); redis-1: a refused by
	// anti-affinity, b by id. sentinel-0: c holds nothing of the addon;
	// sentinel-1 and -2: a then b (equal spread and load, id). haproxy-0: c
	// holds the fewest members; haproxy-1: a by id, on the lowest port free
	// on both a and c.
	want := []api.Member{
		{ID: "app-1-redis-0", Role: api.RoleRedis, HostID: "host-a", Address: "host-a.test", Port: 20000, RedisRole: RedisPrimary},
		{ID: "app-1-redis-1", Role: api.RoleRedis, HostID: "host-b", Address: "host-b.test", Port: 20000, RedisRole: RedisReplica},
		{ID: "app-1-sentinel-0", Role: api.RoleSentinel, HostID: "host-c", Address: "host-c.test", Port: 20000},
		{ID: "app-1-sentinel-1", Role: api.RoleSentinel, HostID: "host-a", Address: "host-a.test", Port: 20001},
		{ID: "app-1-sentinel-2", Role: api.RoleSentinel, HostID: "host-b", Address: "host-b.test", Port: 20001},
		{ID: "app-1-haproxy-0", Role: api.RoleHAProxy, HostID: "host-c", Address: "host-c.test", Port: 20002},
		{ID: "app-1-haproxy-1", Role: api.RoleHAProxy, HostID: "host-a", Address: "host-a.test", Port: 20002},
	}
	if !reflect.DeepEqual(p.Members, want) {
		t.Errorf("members\n got %+v\nwant %+v", p.Members, want)
	}
	if p.Entrypoint != "host-c.test:20002" {
		t.Errorf("entrypoint = %q, want host-c.test:20002", p.Entrypoint)
	}
	if r, _ := expl.Reason("app-1-redis-1", "host-a"); r != ReasonAntiAffinity {
		t.Errorf("redis-1 on host-a: reason %q, want anti-affinity", r)
	}
	if r, _ := expl.Reason("app-1-haproxy-1", "host-c"); r != ReasonAntiAffinity {
		t.Errorf("haproxy-1 on host-c: reason %q, want anti-affinity", r)
	}
}

func TestPlaceBusinessRefused(t *testing.T) {
	tests := []struct {
		name    string
		hosts   []api.Host
		exclude []string
		want    string
	}{
		{
			name:  "two hosts",
			hosts: []api.Host{host("host-a", 8192, ""), host("host-b", 8192, "")},
			want:  "place app-1: redis-business-1024 needs 3 ready hosts (one per sentinel), found 2 (host-a, host-b)",
		},
		{
			name: "three hosts, one down",
			hosts: []api.Host{host("host-a", 8192, ""), host("host-b", 8192, ""),
				withState(host("host-c", 8192, ""), api.HostDown)},
			want: "place app-1: redis-business-1024 needs 3 ready hosts (one per sentinel), found 2 (host-a, host-b)",
		},
		{
			name:    "three hosts, one excluded",
			hosts:   []api.Host{host("host-a", 8192, ""), host("host-b", 8192, ""), host("host-c", 8192, "")},
			exclude: []string{"host-a"},
			want:    "place app-1: redis-business-1024 needs 3 ready hosts (one per sentinel), found 2 (host-b, host-c)",
		},
		{
			name: "no ready host",
			want: "place app-1: redis-business-1024 needs 3 ready hosts (one per sentinel), found none",
		},
		{
			name:  "second redis does not fit",
			hosts: []api.Host{host("host-a", 4096, ""), host("host-b", 1000, ""), host("host-c", 512, "")},
			want:  "place app-1: no ready host has 1126 MB free for redis-business-1024 (largest free: 1000 MB on host-b)",
		},
		{
			name:  "third sentinel does not fit",
			hosts: []api.Host{host("host-a", 4096, ""), host("host-b", 4096, ""), host("host-c", 20, "")},
			want:  "place app-1: no ready host has 32 MB free for a sentinel of redis-business-1024 (largest free: 20 MB on host-c)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, expl, err := Place(State{Hosts: tc.hosts}, Request{AddonID: "app-1", Plan: plan(t, "redis-business-1024"), ExcludeHosts: tc.exclude})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error\n got %v\nwant %s\n%s", err, tc.want, expl)
			}
			if !errors.Is(err, api.ErrNoCapacity) {
				t.Errorf("%v does not wrap ErrNoCapacity", err)
			}
		})
	}
}

func zoneOf(hosts []api.Host, id string) string {
	for _, h := range hosts {
		if h.ID == id {
			return h.Zone()
		}
	}
	return ""
}

func distinct(ss []string) int {
	m := map[string]bool{}
	for _, s := range ss {
		m[s] = true
	}
	return len(m)
}

func TestPlaceZones(t *testing.T) {
	tests := []struct {
		name  string
		hosts []api.Host
		// load makes the zone-blind choice put both redis in zone z1.
		load []api.Addon
		// wantZones[role] is the number of distinct zones the role must span.
		wantZones map[api.Role]int
	}{
		{
			name: "three zones: every role spread",
			hosts: []api.Host{
				host("a1", 8192, "z1"), host("a2", 8192, "z1"),
				host("b1", 8192, "z2"), host("b2", 8192, "z2"),
				host("c1", 8192, "z3"), host("c2", 8192, "z3"),
			},
			load:      []api.Addon{filler("busy", 3000, "b1", "b2", "c1", "c2")},
			wantZones: map[api.Role]int{api.RoleRedis: 2, api.RoleSentinel: 3, api.RoleHAProxy: 2},
		},
		{
			name: "two zones: sentinels fall back to sharing one",
			hosts: []api.Host{
				host("a1", 8192, "z1"), host("a2", 8192, "z1"), host("a3", 8192, "z1"),
				host("b1", 8192, "z2"),
			},
			load:      []api.Addon{filler("busy", 3000, "b1")},
			wantZones: map[api.Role]int{api.RoleRedis: 2, api.RoleSentinel: 2, api.RoleHAProxy: 2},
		},
		{
			name: "one zone: placement still succeeds",
			hosts: []api.Host{
				host("a1", 8192, "z1"), host("a2", 8192, "z1"), host("a3", 8192, "z1"),
			},
			wantZones: map[api.Role]int{api.RoleRedis: 1, api.RoleSentinel: 1, api.RoleHAProxy: 1},
		},
		{
			name: "unlabelled hosts beside labelled ones",
			hosts: []api.Host{
				host("a1", 8192, "z1"), host("a2", 8192, "z1"), host("n1", 8192, ""),
			},
			load:      []api.Addon{filler("busy", 3000, "n1")},
			wantZones: map[api.Role]int{api.RoleRedis: 2, api.RoleSentinel: 2, api.RoleHAProxy: 2}, // "" counts as its own value here
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, expl, err := Place(State{Hosts: tc.hosts, Addons: tc.load}, Request{AddonID: "app-1", Plan: plan(t, "redis-business-1024")})
			if err != nil {
				t.Fatalf("Place: %v\n%s", err, expl)
			}
			t.Logf("explanation:\n%s", expl)
			for role, want := range tc.wantZones {
				var zones []string
				for _, m := range byRole(p.Members, role) {
					zones = append(zones, zoneOf(tc.hosts, m.HostID))
				}
				if got := distinct(zones); got != want {
					t.Errorf("%s zones %v: %d distinct, want %d", role, zones, got, want)
				}
			}
		})
	}
}

// TestPlaceHAProxySamePort: the haproxy pair listens on one port, the lowest
// free on both hosts, even when the hosts' own lowest free ports differ.
func TestPlaceHAProxySamePort(t *testing.T) {
	hosts := []api.Host{host("host-a", 8192, ""), host("host-b", 8192, ""), host("host-c", 8192, "")}
	other := addon("other", "redis-business-256",
		mem("o-1", api.RoleSentinel, "host-a", 20000),
		mem("o-2", api.RoleSentinel, "host-a", 20001),
		mem("o-3", api.RoleSentinel, "host-a", 20002),
		mem("o-4", api.RoleSentinel, "host-b", 20005),
		mem("o-5", api.RoleSentinel, "host-c", 20004),
		mem("o-6", api.RoleSentinel, "host-c", 20006),
	)
	state := State{Hosts: hosts, Addons: []api.Addon{other}}
	p, expl, err := Place(state, Request{AddonID: "app-1", Plan: plan(t, "redis-business-512")})
	if err != nil {
		t.Fatalf("Place: %v\n%s", err, expl)
	}
	t.Logf("explanation:\n%s", expl)
	hp := byRole(p.Members, api.RoleHAProxy)
	if len(hp) != 2 || hp[0].Port != hp[1].Port || hp[0].HostID == hp[1].HostID {
		t.Fatalf("haproxy members %+v: want two hosts, one port", hp)
	}
	taken := map[string]map[int]bool{}
	for _, m := range append(other.Members, p.Members...) {
		if m.Role == api.RoleHAProxy && strings.HasPrefix(m.ID, "app-1") {
			continue
		}
		if taken[m.HostID] == nil {
			taken[m.HostID] = map[int]bool{}
		}
		if taken[m.HostID][m.Port] {
			t.Errorf("port %d used twice on %s", m.Port, m.HostID)
		}
		taken[m.HostID][m.Port] = true
	}
	port := hp[0].Port
	if taken[hp[0].HostID][port] || taken[hp[1].HostID][port] {
		t.Errorf("haproxy port %d collides", port)
	}
	for q := DefaultPortRange.Min; q < port; q++ {
		if !taken[hp[0].HostID][q] && !taken[hp[1].HostID][q] {
			t.Errorf("port %d was free on both %s and %s, lower than %d", q, hp[0].HostID, hp[1].HostID, port)
		}
	}
	if want := hp[0].Address + ":" + itoa(port); p.Entrypoint != want {
		t.Errorf("entrypoint %q, want %q", p.Entrypoint, want)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestPlacePairSkipsHostWithoutPartner: the best first haproxy host is
// skipped when it shares no free port with any other candidate.
func TestPlacePairSkipsHostWithoutPartner(t *testing.T) {
	ports := PortRange{Min: 20000, Max: 20001}
	state := State{
		Hosts: []api.Host{host("host-a", 8192, ""), host("host-b", 4096, ""), host("host-c", 4096, "")},
		Addons: []api.Addon{addon("other", "redis-business-256",
			mem("o-1", api.RoleSentinel, "host-a", 20000),
			mem("o-2", api.RoleSentinel, "host-b", 20001),
			mem("o-3", api.RoleHAProxy, "host-c", 20001))},
		Ports: ports,
	}
	f := newFleet(state)
	if err := f.accountAddons(state, ""); err != nil {
		t.Fatal(err)
	}
	p := plan(t, "redis-business-256")
	n0 := need{memberID: "x-haproxy-0", role: api.RoleHAProxy, mb: SidecarReserveMB}
	n1 := need{memberID: "x-haproxy-1", role: api.RoleHAProxy, mb: SidecarReserveMB}
	ms, es, err := f.placePair("place", "x", p, n0, n1)
	if err != nil {
		t.Fatalf("placePair: %v", err)
	}
	if got := hostsOf(ms); !slices.Equal(got, []string{"host-b", "host-c"}) || ms[0].Port != 20000 || ms[1].Port != 20000 {
		t.Errorf("pair %+v, want host-b and host-c on 20000", ms)
	}
	expl := Explanation{Members: es}
	if r, _ := expl.Reason("x-haproxy-0", "host-a"); r != ReasonNoPort {
		t.Errorf("host-a reason %q, want %q\n%s", r, ReasonNoPort, expl)
	}

	// With host-c unable to pair either, there is no pair at all.
	state.Addons[0].Members = append(state.Addons[0].Members, mem("o-4", api.RoleHAProxy, "host-c", 20000))
	f = newFleet(state)
	if err := f.accountAddons(state, ""); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.placePair("place", "x", p, n0, n1)
	if !errors.Is(err, api.ErrNoCapacity) {
		t.Fatalf("placePair error %v, want ErrNoCapacity", err)
	}
}

func TestPlaceKeep(t *testing.T) {
	hosts := []api.Host{host("host-a", 4096, ""), host("host-b", 4096, ""), host("host-c", 4096, "")}
	starter := addon("app-1", "redis-starter-1024", api.Member{
		ID: "app-1-redis-0", Role: api.RoleRedis, HostID: "host-b", Address: "host-b.test", Port: 20000, RedisRole: RedisPrimary,
	})
	state := State{Hosts: hosts, Addons: []api.Addon{starter}}

	t.Run("starter to business keeps the redis member", func(t *testing.T) {
		p, expl, err := Place(state, Request{AddonID: "app-1", Plan: plan(t, "redis-business-1024"), Keep: starter.Members})
		if err != nil {
			t.Fatalf("Place: %v\n%s", err, expl)
		}
		t.Logf("explanation:\n%s", expl)
		if len(p.Members) != 7 || !reflect.DeepEqual(p.Members[0], starter.Members[0]) {
			t.Fatalf("members %+v: want 7 with the kept redis first", p.Members)
		}
		r1 := p.Members[1]
		if r1.ID != "app-1-redis-1" || r1.HostID == "host-b" || r1.RedisRole != RedisReplica {
			t.Errorf("new redis %+v: want app-1-redis-1, replica, off host-b", r1)
		}
		if e, _ := expl.Member("app-1-redis-0"); !e.Kept {
			t.Errorf("redis-0 not reported kept")
		}
		if hp := byRole(p.Members, api.RoleHAProxy); p.Entrypoint != hp[0].Address+":"+itoa(hp[0].Port) {
			t.Errorf("entrypoint %q is not the first haproxy %+v", p.Entrypoint, hp[0])
		}
	})

	t.Run("members of the addon not kept still hold their ports and ids", func(t *testing.T) {
		p, _, err := Place(state, Request{AddonID: "app-1", Plan: plan(t, "redis-starter-1024"), ExcludeHosts: []string{"host-a", "host-c"}})
		if err != nil {
			t.Fatalf("Place: %v", err)
		}
		m := p.Members[0]
		if m.ID != "app-1-redis-1" || m.HostID != "host-b" || m.Port != 20001 || m.RedisRole != RedisPrimary {
			t.Errorf("member %+v: want app-1-redis-1 primary on host-b:20001", m)
		}
	})

	t.Run("one haproxy kept: the other joins its port", func(t *testing.T) {
		keep := []api.Member{
			mem("app-1-haproxy-0", api.RoleHAProxy, "host-a", 20007),
		}
		p, expl, err := Place(State{Hosts: hosts}, Request{AddonID: "app-1", Plan: plan(t, "redis-business-1024"), Keep: keep})
		if err != nil {
			t.Fatalf("Place: %v\n%s", err, expl)
		}
		hp := byRole(p.Members, api.RoleHAProxy)
		if len(hp) != 2 || hp[1].Port != 20007 || hp[1].HostID == "host-a" {
			t.Errorf("haproxy %+v: want the second on port 20007 off host-a", hp)
		}
		if p.Entrypoint != "host-a.test:20007" {
			t.Errorf("entrypoint %q", p.Entrypoint)
		}
	})

	t.Run("starter with its haproxy and a VIP entrypoint to business: the second haproxy takes any port", func(t *testing.T) {
		st := addon("app-1", "redis-starter-1024",
			api.Member{ID: "app-1-redis-0", Role: api.RoleRedis, HostID: "host-b", Address: "host-b.test", Port: 20000, RedisRole: RedisPrimary},
			mem("app-1-haproxy-0", api.RoleHAProxy, "host-b", 20001))
		st.Entrypoint = "127.0.1.5:20001"
		other := addon("o", "redis-starter-256", mem("o-redis-0", api.RoleRedis, "host-a", 20000), mem("o-haproxy-0", api.RoleHAProxy, "host-a", 20001))
		other.Entrypoint = "127.0.1.6:20001"
		p, expl, err := Place(State{Hosts: hosts, Addons: []api.Addon{st, other}}, Request{AddonID: "app-1", Plan: plan(t, "redis-business-1024"), Keep: st.Members})
		if err != nil {
			t.Fatalf("Place: %v\n%s", err, expl)
		}
		hp := byRole(p.Members, api.RoleHAProxy)
		if len(hp) != 2 || hp[0] != st.Members[1] || hp[1].HostID == "host-b" {
			t.Fatalf("haproxy %+v: want haproxy-0 kept and the second off host-b", hp)
		}
		if hp[1].HostID == "host-a" && hp[1].Port == 20001 {
			t.Errorf("second haproxy %+v on a port another member of host-a uses", hp[1])
		}
	})

	for _, tc := range []struct {
		name string
		keep []api.Member
	}{
		{"two redis on one host", []api.Member{mem("x-redis-0", api.RoleRedis, "host-a", 1), mem("x-redis-1", api.RoleRedis, "host-a", 2)}},
		{"more redis than the plan runs", []api.Member{mem("x-redis-0", api.RoleRedis, "host-a", 1), mem("x-redis-1", api.RoleRedis, "host-b", 2), mem("x-redis-2", api.RoleRedis, "host-c", 2)}},
		{"role the plan does not run", []api.Member{mem("x-sentinel-0", api.RoleSentinel, "host-a", 1)}},
		{"duplicate id", []api.Member{mem("x-redis-0", api.RoleRedis, "host-a", 1), mem("x-redis-0", api.RoleRedis, "host-b", 1)}},
		{"no host", []api.Member{mem("x-redis-0", api.RoleRedis, "", 1)}},
	} {
		t.Run("invalid keep: "+tc.name, func(t *testing.T) {
			planName := "redis-business-1024"
			if tc.name == "role the plan does not run" {
				planName = "redis-starter-1024"
			}
			_, _, err := Place(State{Hosts: hosts}, Request{AddonID: "x", Plan: plan(t, planName), Keep: tc.keep})
			if !errors.Is(err, api.ErrInvalid) {
				t.Errorf("error %v, want ErrInvalid", err)
			}
		})
	}
}

func TestPlaceInvalidRequest(t *testing.T) {
	hosts := []api.Host{host("host-a", 4096, "")}
	for _, tc := range []struct {
		name string
		req  Request
	}{
		{"no addon id", Request{Plan: plan(t, "redis-starter-256")}},
		{"unknown plan kind", Request{AddonID: "x", Plan: api.Plan{Name: "redis-pro-256", Kind: "pro", MemoryMB: 256}}},
		{"no memory", Request{AddonID: "x", Plan: api.Plan{Name: "redis-starter-0", Kind: api.PlanStarter}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Place(State{Hosts: hosts}, tc.req); !errors.Is(err, api.ErrInvalid) {
				t.Errorf("error %v, want ErrInvalid", err)
			}
		})
	}
}

func TestPlanOf(t *testing.T) {
	s := State{Plans: []api.Plan{{Name: "custom", Kind: api.PlanStarter, MemoryMB: 100}}}
	for _, tc := range []struct {
		name string
		mb   int
		ok   bool
	}{
		{"custom", 100, true},
		{"redis-starter-1024", 1024, true}, // retired from this catalog: sized from the name
		{"redis-business-300", 300, true},
		{"mystery", 0, false},
		{"redis-starter-0", 0, false},
	} {
		p, err := s.planOf(tc.name)
		if (err == nil) != tc.ok || p.MemoryMB != tc.mb {
			t.Errorf("planOf(%q) = %+v, %v; want %d MB ok=%v", tc.name, p, err, tc.mb, tc.ok)
		}
	}

	// An addon with a plan nobody can size stops placement rather than be
	// counted as zero.
	state := State{Hosts: []api.Host{host("host-a", 4096, "")}, Addons: []api.Addon{
		addon("odd", "mystery", mem("odd-redis-0", api.RoleRedis, "host-a", 20000)),
	}}
	_, _, err := Place(state, Request{AddonID: "x", Plan: plan(t, "redis-starter-256")})
	if err == nil || !strings.Contains(err.Error(), `addon odd: plan "mystery"`) {
		t.Errorf("error %v, want the unknown plan named", err)
	}
}

func TestExplanationString(t *testing.T) {
	state := State{Hosts: []api.Host{
		host("host-a", 4096, ""), withState(host("host-b", 4096, ""), api.HostDown), host("host-c", 512, ""), host("host-d", 8192, ""),
	}}
	_, expl, err := Place(state, Request{AddonID: "app-1", Plan: plan(t, "redis-starter-1024")})
	if err != nil {
		t.Fatal(err)
	}
	want := `app-1-redis-0: placed on host-d:20000
  host-a: ranked-lower (ranked 2 of 2: same role in zone 0, members of this addon 0, memory used after 28%)
  host-b: not-ready (host is down)
  host-c: memory (512 MB free, needs 1158 MB)
  host-d: chosen
app-1-haproxy-0: placed on host-d:20001
  host-a: colocated (a starter's haproxy runs on its redis node's host host-d)
  host-b: colocated (a starter's haproxy runs on its redis node's host host-d)
  host-c: colocated (a starter's haproxy runs on its redis node's host host-d)
  host-d: chosen
`
	if got := expl.String(); got != want {
		t.Errorf("String()\n got:\n%s\nwant:\n%s", got, want)
	}
}
