package scheduler

import (
	"errors"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// business is a placed redis-business-1024 addon app-1 on hosts a, b, c.
func business(t *testing.T, hosts []api.Host) api.Addon {
	t.Helper()
	p, _, err := Place(State{Hosts: hosts}, Request{AddonID: "app-1", Plan: plan(t, "redis-business-1024")})
	if err != nil {
		t.Fatalf("Place: %v", err)
	}
	a := addon("app-1", "redis-business-1024", p.Members...)
	a.Entrypoint = p.Entrypoint
	return a
}

func TestReplace(t *testing.T) {
	base := []api.Host{host("host-a", 4096, ""), host("host-b", 4096, ""), host("host-c", 4096, ""), host("host-d", 4096, "")}
	// On a, b, c only (d is added afterwards) the addon is:
	// redis-0 a:20000, redis-1 b:20000, sentinel-0 c, sentinel-1 a,
	// sentinel-2 b, haproxy-0 c:20002, haproxy-1 a:20002.
	a := business(t, base[:3])

	tests := []struct {
		name    string
		hosts   []api.Host
		others  []api.Addon
		member  string
		exclude []string

		want     api.Member
		why      map[string]Reason
		wantErr  string
		sentinel error
	}{
		{
			name:   "primary's host down: new replica on the free host",
			hosts:  []api.Host{withState(base[0], api.HostDown), base[1], base[2], base[3]},
			member: "app-1-redis-0",
			want:   api.Member{ID: "app-1-redis-2", Role: api.RoleRedis, HostID: "host-d", Address: "host-d.test", Port: 20000, RedisRole: RedisReplica},
			why:    map[string]Reason{"host-a": ReasonExcluded, "host-b": ReasonAntiAffinity},
		},
		{
			name:   "redis avoids the other redis's host even when it is emptiest",
			hosts:  []api.Host{base[0], host("host-b", 65536, ""), base[2]},
			member: "app-1-redis-0",
			want:   api.Member{ID: "app-1-redis-2", Role: api.RoleRedis, HostID: "host-c", Address: "host-c.test", Port: 20001, RedisRole: RedisReplica},
			why:    map[string]Reason{"host-a": ReasonExcluded, "host-b": ReasonAntiAffinity},
		},
		{
			name:    "drain with an explicit exclusion",
			hosts:   []api.Host{base[0], base[1], withState(base[2], api.HostDraining), base[3]},
			member:  "app-1-sentinel-0",
			exclude: []string{"host-d"},
			wantErr: "replace app-1: no host can run app-1-sentinel-3 (a sentinel of redis-business-1024): 2 anti-affinity, 2 excluded",
		},
		{
			name:   "sentinel moves off a draining host",
			hosts:  []api.Host{base[0], base[1], withState(base[2], api.HostDraining), base[3]},
			member: "app-1-sentinel-0",
			want:   api.Member{ID: "app-1-sentinel-3", Role: api.RoleSentinel, HostID: "host-d", Address: "host-d.test", Port: 20000},
			why:    map[string]Reason{"host-a": ReasonAntiAffinity, "host-b": ReasonAntiAffinity, "host-c": ReasonExcluded}, // its current host
		},
		{
			name:   "haproxy keeps its partner's port",
			hosts:  []api.Host{base[0], base[1], withState(base[2], api.HostDown), base[3]},
			member: "app-1-haproxy-0",
			want:   api.Member{ID: "app-1-haproxy-2", Role: api.RoleHAProxy, HostID: "host-d", Address: "host-d.test", Port: 20002},
			why:    map[string]Reason{"host-a": ReasonAntiAffinity, "host-c": ReasonExcluded, "host-b": ReasonRankedLower},
		},
		{
			name:  "haproxy skips a host where the shared port is taken",
			hosts: []api.Host{base[0], base[1], withState(base[2], api.HostDown), base[3]},
			others: []api.Addon{addon("other", "redis-business-256",
				mem("o-1", api.RoleSentinel, "host-d", 20002))},
			member: "app-1-haproxy-0",
			want:   api.Member{ID: "app-1-haproxy-2", Role: api.RoleHAProxy, HostID: "host-b", Address: "host-b.test", Port: 20002},
			why:    map[string]Reason{"host-d": ReasonPortTaken},
		},
		{
			name:    "nowhere to go",
			hosts:   []api.Host{withState(base[0], api.HostDown), base[1], base[2]},
			member:  "app-1-redis-0",
			others:  []api.Addon{filler("big", 3000, "host-c")}, // c: 3300+32+32 used of 4096
			wantErr: "replace app-1: no ready host has 1126 MB free for redis-business-1024 (largest free: 732 MB on host-c)",
		},
		{
			name:     "unknown member",
			hosts:    base,
			member:   "app-1-redis-9",
			wantErr:  "replace app-1: member app-1-redis-9: not found",
			sentinel: api.ErrNotFound,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			state := State{Hosts: tc.hosts, Addons: append([]api.Addon{a}, tc.others...)}
			m, expl, err := Replace(state, a, tc.member, tc.exclude)
			t.Logf("explanation:\n%s", expl)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error\n got %v\nwant %s", err, tc.wantErr)
				}
				s := tc.sentinel
				if s == nil {
					s = api.ErrNoCapacity
				}
				if !errors.Is(err, s) {
					t.Errorf("%v does not wrap %v", err, s)
				}
				return
			}
			if err != nil {
				t.Fatalf("Replace: %v", err)
			}
			if m != tc.want {
				t.Errorf("member\n got %+v\nwant %+v", m, tc.want)
			}
			for h, want := range tc.why {
				if got, _ := expl.Reason(m.ID, h); got != want {
					t.Errorf("reason for %s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

func TestReplaceAddonIsAuthoritative(t *testing.T) {
	// The state's copy of the addon is stale (no members); the addon passed
	// in still constrains anti-affinity and ports.
	hosts := []api.Host{host("host-a", 4096, ""), host("host-b", 4096, ""), host("host-c", 4096, "")}
	a := addon("app-1", "redis-business-1024",
		mem("app-1-redis-0", api.RoleRedis, "host-a", 20000),
		mem("app-1-redis-1", api.RoleRedis, "host-b", 20000),
		mem("app-1-sentinel-0", api.RoleSentinel, "host-c", 20000),
	)
	state := State{Hosts: hosts, Addons: []api.Addon{addon("app-1", "redis-business-1024")}}
	m, expl, err := Replace(state, a, "app-1-redis-0", nil)
	if err != nil {
		t.Fatalf("Replace: %v\n%s", err, expl)
	}
	if m.HostID != "host-c" || m.Port != 20001 {
		t.Errorf("member %+v: want host-c:20001", m)
	}
}

func TestPlanChangeFits(t *testing.T) {
	hosts := []api.Host{host("host-a", 4096, ""), host("host-b", 2048, ""), host("host-c", 4096, "")}
	biz := addon("app-1", "redis-business-1024",
		mem("app-1-redis-0", api.RoleRedis, "host-a", 20000),
		mem("app-1-redis-1", api.RoleRedis, "host-b", 20000),
		mem("app-1-sentinel-0", api.RoleSentinel, "host-c", 20000),
		mem("app-1-sentinel-1", api.RoleSentinel, "host-a", 20001),
		mem("app-1-sentinel-2", api.RoleSentinel, "host-b", 20001),
	)
	start := addon("app-2", "redis-starter-1024", mem("app-2-redis-0", api.RoleRedis, "host-c", 20001))

	tests := []struct {
		name    string
		addon   api.Addon
		hosts   []api.Host
		newPlan string
		wantErr string
	}{
		{name: "starter grows on a roomy host", addon: start, newPlan: "redis-starter-2048"},
		{name: "starter does not fit", addon: start, newPlan: "redis-starter-4096",
			wantErr: "resize app-2: host host-c has 2938 MB free; resizing app-2-redis-0 from redis-starter-1024 to redis-starter-4096 needs 3379 MB more"},
		{name: "business: the smaller host refuses", addon: biz, newPlan: "redis-business-2048",
			wantErr: "resize app-1: host host-b has 890 MB free; resizing app-1-redis-1 from redis-business-1024 to redis-business-2048 needs 1126 MB more"},
		{name: "downsizing always fits", addon: biz, newPlan: "redis-business-256",
			hosts: []api.Host{host("host-a", 10, ""), host("host-b", 10, ""), host("host-c", 10, "")}},
		{name: "same size fits", addon: biz, newPlan: "redis-starter-1024"},
		{name: "member on an unknown host", addon: addon("app-3", "redis-starter-256", mem("app-3-redis-0", api.RoleRedis, "ghost", 20000)), newPlan: "redis-starter-512",
			wantErr: "resize app-3: app-3-redis-0 runs on host ghost, which is not registered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := hosts
			if tc.hosts != nil {
				hs = tc.hosts
			}
			state := State{Hosts: hs, Addons: []api.Addon{biz, start}}
			err := PlanChangeFits(state, tc.addon, plan(t, tc.newPlan))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("PlanChangeFits: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.wantErr {
				t.Fatalf("error\n got %v\nwant %s", err, tc.wantErr)
			}
			if !errors.Is(err, api.ErrNoCapacity) {
				t.Errorf("%v does not wrap ErrNoCapacity", err)
			}
		})
	}
	if err := PlanChangeFits(State{Hosts: hosts}, start, api.Plan{Name: "bad", Kind: "x", MemoryMB: 1}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("bad plan: %v, want ErrInvalid", err)
	}
}

func TestReplaceHAProxyOfVIPAddonTakesAnyPort(t *testing.T) {
	// Same fleet as TestReplace, but the entrypoint is a VIP: the
	// replacement haproxy need not find its partner's port free.
	base := []api.Host{host("host-a", 4096, ""), host("host-b", 4096, ""), host("host-c", 4096, ""), host("host-d", 4096, "")}
	a := business(t, base[:3])
	a.Entrypoint = "10.0.9.1:20002"
	others := addon("other", "redis-business-256", mem("o-1", api.RoleSentinel, "host-d", 20002), mem("o-2", api.RoleSentinel, "host-b", 20002))
	state := State{Hosts: []api.Host{base[0], base[1], withState(base[2], api.HostDown), base[3]}, Addons: []api.Addon{a, others}}
	m, expl, err := Replace(state, a, "app-1-haproxy-0", nil)
	if err != nil {
		t.Fatalf("Replace: %v\n%s", err, expl)
	}
	if m.HostID != "host-d" || m.Port != 20000 {
		t.Errorf("member %+v: want host-d:20000 (lowest free port)", m)
	}
}
