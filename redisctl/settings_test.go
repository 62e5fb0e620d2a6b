package redisctl

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

var (
	rdb      = api.Settings{Persistence: api.PersistenceRDB}
	aof      = api.Settings{Persistence: api.PersistenceAOF}
	rdbCache = api.Settings{Persistence: api.PersistenceRDB, CacheMode: true}
	aofCache = api.Settings{Persistence: api.PersistenceAOF, CacheMode: true}
)

func TestConfig(t *testing.T) {
	tests := []struct {
		s    api.Settings
		mb   int
		want []Param
	}{
		{rdb, 256, []Param{{"appendfsync", "always"}, {"appendonly", "no"}, {"save", "900 1 300 10 60 10000"}, {"maxmemory", "256mb"}, {"maxmemory-policy", "noeviction"}}},
		{api.Settings{}, 256, []Param{{"appendfsync", "always"}, {"appendonly", "no"}, {"save", "900 1 300 10 60 10000"}, {"maxmemory", "256mb"}, {"maxmemory-policy", "noeviction"}}},
		{aof, 1024, []Param{{"appendfsync", "always"}, {"appendonly", "yes"}, {"save", "900 1 300 10 60 10000"}, {"maxmemory", "1024mb"}, {"maxmemory-policy", "noeviction"}}},
		{aofCache, 32, []Param{{"appendfsync", "always"}, {"appendonly", "yes"}, {"save", "900 1 300 10 60 10000"}, {"maxmemory", "32mb"}, {"maxmemory-policy", "allkeys-lru"}}},
		{api.Settings{Persistence: api.PersistenceRDB, CacheMode: true, ForceTLS: true}, 64, []Param{{"appendfsync", "always"}, {"appendonly", "no"}, {"save", "900 1 300 10 60 10000"}, {"maxmemory", "64mb"}, {"maxmemory-policy", "allkeys-lru"}}},
	}
	for _, tc := range tests {
		if got := Config(tc.s, tc.mb); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Config(%+v, %d) =\n %v\nwant\n %v", tc.s, tc.mb, got, tc.want)
		}
	}
}

// asConfigGet is what CONFIG GET answers for Config's parameters: bytes
// for maxmemory.
func asConfigGet(ps []Param) map[string]string {
	m := map[string]string{}
	for _, p := range ps {
		m[p.Name] = p.Value
		if p.Name == "maxmemory" {
			b, _ := parseMemory(p.Value)
			m[p.Name] = strconv.FormatInt(b, 10)
		}
	}
	return m
}

func asMap(ps []Param) map[string]string {
	m := map[string]string{}
	for _, p := range ps {
		m[p.Name] = p.Value
	}
	return m
}

func TestFromConfigRoundTrip(t *testing.T) {
	for _, s := range []api.Settings{rdb, aof, rdbCache, aofCache} {
		for _, mb := range []int{1, 25, 256, 1024, 65536} {
			for name, m := range map[string]map[string]string{"config get": asConfigGet(Config(s, mb)), "redis.conf": asMap(Config(s, mb))} {
				got, gotMB, err := FromConfig(m)
				if err != nil {
					t.Fatalf("%s %+v %d: %v", name, s, mb, err)
				}
				if got != s || gotMB != mb {
					t.Errorf("%s: FromConfig(Config(%+v, %d)) = %+v, %d", name, s, mb, got, gotMB)
				}
				if cmds := LiveChange(m, s, mb); cmds != nil {
					t.Errorf("%s: LiveChange from Config(%+v, %d) to itself = %q, want nothing", name, s, mb, cmds)
				}
			}
		}
	}
}

func TestFromConfig(t *testing.T) {
	base := map[string]string{"appendonly": "no", "maxmemory": "268435456", "maxmemory-policy": "noeviction", "appendfsync": "everysec", "save": ""}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		if v == "-" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		in      map[string]string
		want    api.Settings
		wantMB  int
		wantErr string
	}{
		{name: "defaults; appendfsync and save are not settings", in: base, want: rdb, wantMB: 256},
		{name: "upper case", in: with("appendonly", "YES"), want: aof, wantMB: 256},
		{name: "gb", in: with("maxmemory", "1gb"), want: rdb, wantMB: 1024},
		{name: "decimal mega rounds down", in: with("maxmemory", "100m"), want: rdb, wantMB: 95},
		{name: "zero (unlimited)", in: with("maxmemory", "0"), want: rdb, wantMB: 0},
		{name: "no appendonly", in: with("appendonly", "-"), wantErr: "appendonly"},
		{name: "odd appendonly", in: with("appendonly", "maybe"), wantErr: `appendonly "maybe"`},
		{name: "foreign policy", in: with("maxmemory-policy", "volatile-lru"), wantErr: `maxmemory-policy "volatile-lru"`},
		{name: "no maxmemory", in: with("maxmemory", "-"), wantErr: "maxmemory"},
		{name: "bad maxmemory", in: with("maxmemory", "lots"), wantErr: `"lots" is not a memory figure`},
		{name: "negative maxmemory", in: with("maxmemory", "-1"), wantErr: "not a memory figure"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, mb, err := FromConfig(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want || mb != tc.wantMB {
				t.Errorf("= %+v, %d; want %+v, %d", got, mb, tc.want, tc.wantMB)
			}
		})
	}
}

func TestLiveChange(t *testing.T) {
	cur := func(s api.Settings, mb int) map[string]string { return asConfigGet(Config(s, mb)) }
	set := func(kv ...string) [][]string {
		var out [][]string
		for i := 0; i < len(kv); i += 2 {
			out = append(out, []string{"CONFIG", "SET", kv[i], kv[i+1]})
		}
		return out
	}
	drifted := cur(rdb, 256)
	drifted["appendfsync"] = "everysec"
	drifted["save"] = "3600 1"
	tests := []struct {
		name string
		cur  map[string]string
		want api.Settings
		mb   int
		cmds [][]string
	}{
		{"nothing", cur(rdb, 256), rdb, 256, nil},
		{"empty persistence is rdb", cur(rdb, 256), api.Settings{}, 256, nil},
		{"ForceTLS is no CONFIG", cur(rdb, 256), api.Settings{Persistence: api.PersistenceRDB, ForceTLS: true}, 256, nil},
		{"rdb to aof", cur(rdb, 256), aof, 256, set("appendonly", "yes")},
		{"aof to rdb", cur(aof, 256), rdb, 256, set("appendonly", "no")},
		{"cache on", cur(rdb, 256), rdbCache, 256, set("maxmemory-policy", "allkeys-lru")},
		{"cache off", cur(aofCache, 256), aof, 256, set("maxmemory-policy", "noeviction")},
		{"plan grows", cur(rdb, 256), rdb, 512, set("maxmemory", "512mb")},
		{"everything", cur(rdb, 256), aofCache, 1024, set("appendonly", "yes", "maxmemory", "1024mb", "maxmemory-policy", "allkeys-lru")},
		{"drift is corrected, fsync before appendonly", drifted, aof, 256, set("appendfsync", "always", "appendonly", "yes", "save", "900 1 300 10 60 10000")},
		{"nothing known: everything, in order", map[string]string{}, rdbCache, 64,
			set("appendfsync", "always", "appendonly", "no", "save", "900 1 300 10 60 10000", "maxmemory", "64mb", "maxmemory-policy", "allkeys-lru")},
		{"save spacing does not matter", map[string]string{"appendfsync": "always", "appendonly": "no", "save": " 900 1  300 10 60 10000", "maxmemory": "256MB", "maxmemory-policy": "noeviction"}, rdb, 256, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LiveChange(tc.cur, tc.want, tc.mb); !reflect.DeepEqual(got, tc.cmds) {
				t.Errorf("LiveChange = %q, want %q", got, tc.cmds)
			}
		})
	}
}

func TestParseMemory(t *testing.T) {
	tests := map[string]int64{"0": 0, "1024": 1024, "1k": 1000, "1kb": 1024, "2m": 2e6, "2mb": 2 << 20, "1g": 1e9, "1GB": 1 << 30, "5b": 5}
	for in, want := range tests {
		if got, err := parseMemory(in); err != nil || got != want {
			t.Errorf("parseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "mb", "1tb", "1.5mb", "-3"} {
		if _, err := parseMemory(bad); err == nil {
			t.Errorf("parseMemory(%q): no error", bad)
		}
	}
}

func TestFailoverGuardParams(t *testing.T) {
	on, off := FenceParams(true), FenceParams(false)
	if len(on) != 2 || on[0].Name != ParamMinReplicasMaxLag || on[1] != (Param{ParamMinReplicas, "1"}) {
		t.Errorf("FenceParams(true) = %v", on)
	}
	if len(off) != 2 || off[1] != (Param{ParamMinReplicas, "0"}) || off[0] != on[0] {
		t.Errorf("FenceParams(false) = %v", off)
	}
	if p := PriorityParam(true); p != (Param{ParamReplicaPriority, "100"}) {
		t.Errorf("PriorityParam(true) = %v", p)
	}
	if p := PriorityParam(false); p != (Param{ParamReplicaPriority, "0"}) {
		t.Errorf("PriorityParam(false) = %v", p)
	}
}
