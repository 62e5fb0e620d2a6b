package engines

import (
	"fmt"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

const (
	redis7   = "redis-7.0.15"
	valkey80 = "valkey-8.0.1"
	valkey81 = "valkey-8.1.1"
	redis8   = "redis-8.0.2"
)

// TestDefaultCatalogEveryPair decides every ordered pair of the four
// versions of the default catalog.
func TestDefaultCatalogEveryPair(t *testing.T) {
	cat := api.DefaultEngines()
	if err := Validate(cat); err != nil {
		t.Fatal(err)
	}
	type want struct {
		ok      bool
		kind    string
		next    string
		rolling bool
		reason  []string // substrings
	}
	cases := map[[2]string]want{
		{redis7, redis7}:   {reason: []string{"already on redis-7.0.15"}},
		{redis7, valkey80}: {ok: true, kind: KindSwitch, rolling: true, reason: []string{"valkey-8.0.1 takes over redis 7 data", "rolling"}},
		{redis7, valkey81}: {kind: KindSwitch, next: valkey80, reason: []string{"no switch lands on valkey-8.1.1", "lands on valkey-8.0.1", "upgrade to valkey-8.0.1 first"}},
		{redis7, redis8}:   {ok: true, kind: KindMajor, rolling: true, reason: []string{"latest minor of redis 7"}},

		{valkey80, redis7}:   {kind: KindSwitch, reason: []string{"no redis version in the catalog takes over valkey 8 data", "it may upgrade to valkey-8.1.1"}},
		{valkey80, valkey80}: {reason: []string{"already on"}},
		{valkey80, valkey81}: {ok: true, kind: KindMinor, rolling: true, reason: []string{"within valkey 8"}},
		{valkey80, redis8}:   {kind: KindSwitch, reason: []string{"no redis version", "valkey-8.0.1 cannot reach redis-8.0.2, it may upgrade to valkey-8.1.1"}},

		{valkey81, redis7}:   {kind: KindSwitch, reason: []string{"no redis version", "valkey-8.1.1 has no upgrade in the catalog"}},
		{valkey81, valkey80}: {reason: []string{"valkey-8.1.1 → valkey-8.0.1 is a downgrade", "never allowed"}},
		{valkey81, valkey81}: {reason: []string{"already on"}},
		{valkey81, redis8}:   {kind: KindSwitch, reason: []string{"no redis version in the catalog takes over valkey 8 data"}},

		{redis8, redis7}:   {reason: []string{"redis-8.0.2 → redis-7.0.15 is a downgrade", "redis-8.0.2 has no upgrade in the catalog"}},
		{redis8, valkey80}: {kind: KindSwitch, reason: []string{"no valkey version in the catalog takes over redis 8 data"}},
		{redis8, valkey81}: {kind: KindSwitch, reason: []string{"no valkey version in the catalog takes over redis 8 data"}},
		{redis8, redis8}:   {reason: []string{"already on"}},
	}
	keys := []string{redis7, valkey80, valkey81, redis8}
	for _, from := range keys {
		for _, to := range keys {
			w, ok := cases[[2]string{from, to}]
			if !ok {
				t.Fatalf("no case for %s → %s", from, to)
			}
			t.Run(from+"_to_"+to, func(t *testing.T) {
				ok, reason, next := UpgradeAllowed(cat, from, to)
				if ok != w.ok || next != w.next {
					t.Errorf("UpgradeAllowed = %v, next %q (%s); want %v, next %q", ok, next, reason, w.ok, w.next)
				}
				for _, s := range w.reason {
					if !strings.Contains(reason, s) {
						t.Errorf("reason %q lacks %q", reason, s)
					}
				}
				if !ok && w.next != "" && !strings.Contains(reason, w.next) {
					t.Errorf("a refusal with a next step must name it: %q", reason)
				}
				if got := Rolling(cat, from, to); got != w.rolling {
					t.Errorf("Rolling = %v, want %v", got, w.rolling)
				}
				p := path(index(cat), from, to)
				if p.Kind != w.kind {
					t.Errorf("kind %q, want %q", p.Kind, w.kind)
				}
			})
		}
	}
}

// hypothetical catalogs exercise the rules the default catalog cannot:
// several minors and majors per engine.
func ev(engine api.Engine, version string, rdb int, switchFrom ...string) api.EngineVersion {
	return api.EngineVersion{Engine: engine, Version: version, RDB: rdb, SwitchFrom: switchFrom,
		Images: map[api.Role]string{api.RoleRedis: "r", api.RoleSentinel: "s", api.RoleHAProxy: "h"}}
}

func TestRulesOnWiderCatalog(t *testing.T) {
	cat := []api.EngineVersion{
		ev(api.EngineRedis, "6.2.14", 9),
		ev(api.EngineRedis, "7.0.15", 10),
		ev(api.EngineRedis, "7.2.4", 11),
		ev(api.EngineRedis, "7.2.5", 11),
		ev(api.EngineRedis, "8.0.2", 12),
		ev(api.EngineRedis, "8.2.1", 12),
		ev(api.EngineValkey, "7.2.5", 11, "redis-7.2"),
		ev(api.EngineValkey, "8.0.1", 11, "redis-7"),
		ev(api.EngineValkey, "8.1.1", 11),
		ev(api.EngineValkey, "9.0.0", 80),
	}
	if err := Validate(cat); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		from, to string
		ok       bool
		next     string
		reason   string
	}{
		{"redis-7.0.15", "redis-7.2.4", true, "", "upgrade within redis 7"},
		{"redis-7.0.15", "redis-7.2.5", true, "", "upgrade within redis 7"}, // minors may be skipped
		{"redis-7.2.4", "redis-7.2.5", true, "", "within redis 7"},
		{"redis-7.0.15", "redis-8.0.2", false, "redis-7.2.5", "latest minor of redis 7 (7.2); upgrade to redis-7.2.5 first"},
		{"redis-7.0.15", "redis-8.2.1", false, "redis-7.2.5", "upgrade to redis-7.2.5 first"},
		{"redis-7.2.4", "redis-8.0.2", true, "", "major upgrade"}, // latest minor, not latest patch
		{"redis-7.2.5", "redis-8.2.1", true, "", "major upgrade"}, // any version of the next major
		{"redis-6.2.14", "redis-8.0.2", false, "redis-7.2.5", "skips redis 7"},
		{"redis-6.2.14", "redis-7.0.15", true, "", "major upgrade"},
		{"redis-8.2.1", "redis-8.0.2", false, "", "downgrade"},
		// switches: by major, by major.minor, and the path through a switch
		{"redis-7.0.15", "valkey-8.0.1", true, "", "takes over redis 7 data"},
		{"redis-7.0.15", "valkey-7.2.5", false, "redis-7.2.5", "valkey-7.2.5 takes over redis-7.2 data only; a switch from redis-7.0.15 lands on valkey-8.0.1; upgrade to redis-7.2.5 first"},
		{"redis-7.2.4", "valkey-7.2.5", true, "", "engine switch"},
		{"redis-7.0.15", "valkey-9.0.0", false, "valkey-8.0.1", "upgrade to valkey-8.0.1 first"},
		{"redis-6.2.14", "valkey-8.0.1", false, "redis-7.2.5", "upgrade to redis-7.2.5 first"},
		{"valkey-8.0.1", "valkey-9.0.0", false, "valkey-8.1.1", "latest minor of valkey 8 (8.1)"},
		{"valkey-8.1.1", "valkey-9.0.0", true, "", "major upgrade"},
		{"valkey-8.1.1", "redis-8.2.1", false, "", "no redis version in the catalog takes over valkey 8 data"},
		{"redis-8.0.2", "valkey-9.0.0", false, "", "no valkey version in the catalog takes over redis 8 data"},
		{"redis-7.0.15", "redis-9.9.9", false, "", `unknown engine version "redis-9.9.9"`},
		{"nope", "redis-7.0.15", false, "", `unknown engine version "nope"; the catalog has redis-6.2.14, redis-7.0.15`},
	}
	for _, c := range cases {
		t.Run(c.from+"_to_"+c.to, func(t *testing.T) {
			ok, reason, next := UpgradeAllowed(cat, c.from, c.to)
			if ok != c.ok || next != c.next || !strings.Contains(reason, c.reason) {
				t.Errorf("got %v, next %q, %q; want %v, next %q, reason containing %q", ok, next, reason, c.ok, c.next, c.reason)
			}
		})
	}
	// Rolling follows the RDB formats: valkey 9's format 80 is read by no
	// valkey 8 replica, but a valkey 9 replica reads valkey 8.
	if !Rolling(cat, "valkey-8.1.1", "valkey-9.0.0") {
		t.Error("valkey-8.1.1 → valkey-9.0.0 should roll (RDB 11 → 80)")
	}
	if Rolling(cat, "redis-8.2.1", "redis-8.0.2") {
		t.Error("a refused upgrade never rolls")
	}
}

// TestPathInvariants checks, on both catalogs, that following Next always
// reaches the target through allowed steps, that nothing allowed is a
// downgrade or a no-op, and that Paths agrees with UpgradeAllowed.
func TestPathInvariants(t *testing.T) {
	wide := []api.EngineVersion{
		ev(api.EngineRedis, "6.2.14", 9), ev(api.EngineRedis, "7.0.15", 10), ev(api.EngineRedis, "7.2.4", 11),
		ev(api.EngineRedis, "8.0.2", 12), ev(api.EngineValkey, "8.0.1", 11, "redis-7"), ev(api.EngineValkey, "8.1.1", 11),
		ev(api.EngineValkey, "9.0.0", 80),
	}
	for name, cat := range map[string][]api.EngineVersion{"default": api.DefaultEngines(), "wide": wide} {
		t.Run(name, func(t *testing.T) {
			c := index(cat)
			paths := Paths(cat)
			if want := len(c.entries) * (len(c.entries) - 1); len(paths) != want {
				t.Fatalf("%d paths, want %d", len(paths), want)
			}
			for _, p := range paths {
				ok, reason, next := UpgradeAllowed(cat, p.From, p.To)
				if ok != p.Allowed || reason != p.Reason || next != p.Next {
					t.Errorf("Paths and UpgradeAllowed disagree on %s → %s", p.From, p.To)
				}
				f, to := c.byKey[p.From], c.byKey[p.To]
				if p.Allowed && f.ev.Engine == to.ev.Engine && to.v.Compare(f.v) <= 0 {
					t.Errorf("%s → %s allowed: not upward", p.From, p.To)
				}
				if p.Rolling && !p.Allowed {
					t.Errorf("%s → %s rolls but is refused", p.From, p.To)
				}
				if p.Allowed || p.Next == "" {
					continue
				}
				// Follow the next steps: each is allowed, and they reach To.
				cur, hops := p.From, 0
				for cur != p.To {
					ok, reason, n := UpgradeAllowed(cat, cur, p.To)
					if ok {
						break
					}
					if n == "" {
						t.Fatalf("%s → %s: stuck at %s: %s", p.From, p.To, cur, reason)
					}
					if ok, r, _ := UpgradeAllowed(cat, cur, n); !ok {
						t.Fatalf("%s → %s: next step %s → %s refused: %s", p.From, p.To, cur, n, r)
					}
					cur = n
					if hops++; hops > len(cat) {
						t.Fatalf("%s → %s: no end", p.From, p.To)
					}
				}
			}
		})
	}
}

func TestCanReplicate(t *testing.T) {
	cat := map[string]api.EngineVersion{}
	for _, e := range api.DefaultEngines() {
		cat[e.Key()] = e
	}
	// primary → replica: the replica must load the primary's RDB format.
	want := map[string]bool{
		redis7 + ">" + valkey80: true, redis7 + ">" + valkey81: true, redis7 + ">" + redis8: true,
		valkey80 + ">" + valkey81: true, valkey81 + ">" + valkey80: true, // same format, 11
		valkey80 + ">" + redis8: true, valkey81 + ">" + redis8: true,
		valkey80 + ">" + redis7: false, valkey81 + ">" + redis7: false, redis8 + ">" + redis7: false,
		redis8 + ">" + valkey80: false, redis8 + ">" + valkey81: false,
	}
	for k, w := range want {
		p, r, _ := strings.Cut(k, ">")
		if got := CanReplicate(cat[p], cat[r]); got != w {
			t.Errorf("CanReplicate(primary %s, replica %s) = %v, want %v", p, r, got, w)
		}
	}
	if CanReplicate(api.EngineVersion{}, cat[redis8]) {
		t.Error("an unknown format replicates")
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]string{"7.0.15": "7.0.15", "8.0": "8.0.0", "10.11.12": "10.11.12"} {
		v, err := ParseVersion(in)
		if err != nil || v.String() != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %s", in, v, err, want)
		}
	}
	for _, in := range []string{"", "7", "7.0.15.1", "7.x.1", "07.0.1", "-1.0.0", "7.0.15-rc1"} {
		if _, err := ParseVersion(in); err == nil {
			t.Errorf("ParseVersion(%q) accepted", in)
		}
	}
	a, _ := ParseVersion("7.2.4")
	b, _ := ParseVersion("7.10.0")
	if a.Compare(b) >= 0 || b.Compare(a) <= 0 || a.Compare(a) != 0 {
		t.Error("7.2.4 < 7.10.0 numerically")
	}
}

func TestValidate(t *testing.T) {
	good := ev(api.EngineRedis, "7.0.15", 10)
	cases := map[string]struct {
		mut  func(*api.EngineVersion)
		want string
	}{
		"engine":         {func(e *api.EngineVersion) { e.Engine = "memcached" }, "unknown engine"},
		"version":        {func(e *api.EngineVersion) { e.Version = "7" }, "want major.minor.patch"},
		"image":          {func(e *api.EngineVersion) { delete(e.Images, api.RoleSentinel) }, "no image for role sentinel"},
		"rdb":            {func(e *api.EngineVersion) { e.RDB = -1 }, "negative RDB"},
		"switch same":    {func(e *api.EngineVersion) { e.SwitchFrom = []string{"redis-6"} }, "another engine"},
		"switch shape":   {func(e *api.EngineVersion) { e.SwitchFrom = []string{"valkey-7.x"} }, `switch_from "valkey-7.x"`},
		"switch patch":   {func(e *api.EngineVersion) { e.SwitchFrom = []string{"valkey-7.2.4"} }, `switch_from "valkey-7.2.4"`},
		"switch unknown": {func(e *api.EngineVersion) { e.SwitchFrom = []string{"keydb-6"} }, "another engine"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			e := ev(good.Engine, good.Version, good.RDB)
			c.mut(&e)
			if err := Validate([]api.EngineVersion{e}); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, c.want)
			}
		})
	}
	if err := Validate([]api.EngineVersion{good, good}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate: %v", err)
	}
	d := ev(api.EngineValkey, "8.0.1", 11, "redis-7")
	d.Default, good.Default = true, true
	if err := Validate([]api.EngineVersion{good, d}); err == nil || !strings.Contains(err.Error(), "at most one") {
		t.Errorf("two defaults: %v", err)
	}
	if err := Validate([]api.EngineVersion{ev(api.EngineValkey, "8.0.1", 11, "redis-7", "redis-7.2")}); err != nil {
		t.Errorf("valid switch_from refused: %v", err)
	}
}

// ExampleUpgradeAllowed shows a refusal naming the version allowed next.
func ExampleUpgradeAllowed() {
	ok, reason, next := UpgradeAllowed(api.DefaultEngines(), "redis-7.0.15", "valkey-8.1.1")
	fmt.Println(ok, next)
	fmt.Println(reason)
	// Output:
	// false valkey-8.0.1
	// no switch lands on valkey-8.1.1; a switch from redis-7.0.15 lands on valkey-8.0.1; upgrade to valkey-8.0.1 first
}

func TestMerge(t *testing.T) {
	defaults := api.DefaultEngines()
	// What a cluster bootstrapped by the previous release stored.
	old := []api.EngineVersion{
		{Engine: api.EngineRedis, Version: "7.0.15", Default: true, Images: map[api.Role]string{
			api.RoleRedis: api.ImageRedis7, api.RoleSentinel: api.ImageSentinel7, api.RoleHAProxy: api.ImageHAProxy}},
		{Engine: api.EngineValkey, Version: "8.0.1", Images: map[api.Role]string{
			api.RoleRedis: "cacheplane.local/valkey:old", api.RoleSentinel: "cacheplane.local/valkey:old", api.RoleHAProxy: api.ImageHAProxy}},
		{Engine: api.EngineRedis, Version: "6.2.14", RDB: 9, Images: map[api.Role]string{
			api.RoleRedis: "r6", api.RoleSentinel: "s6", api.RoleHAProxy: api.ImageHAProxy}},
	}
	merged, changed := Merge(old, defaults)
	if !changed {
		t.Fatal("Merge of an old catalog reports no change")
	}
	var keys []string
	for _, e := range merged {
		keys = append(keys, e.Key())
	}
	if want := "redis-7.0.15 valkey-8.0.1 redis-6.2.14 valkey-8.1.1 redis-8.0.2"; strings.Join(keys, " ") != want {
		t.Fatalf("merged %v, want %s (stored order kept, new versions appended, none removed)", keys, want)
	}
	if merged[0].RDB != 10 || merged[1].RDB != 11 || strings.Join(merged[1].SwitchFrom, ",") != "redis-7" {
		t.Errorf("rule data not taken from the defaults: %+v %+v", merged[0], merged[1])
	}
	if merged[1].Images[api.RoleRedis] != "cacheplane.local/valkey:old" {
		t.Errorf("a stored version's image changed: %v", merged[1].Images)
	}
	defaultsCount := 0
	for _, e := range merged {
		if e.Default {
			defaultsCount++
		}
	}
	if defaultsCount != 1 || !merged[0].Default {
		t.Errorf("%d defaults, want the stored one only", defaultsCount)
	}
	if err := Validate(merged); err != nil {
		t.Errorf("merged catalog: %v", err)
	}
	if ok, _, _ := UpgradeAllowed(merged, "redis-6.2.14", "redis-7.0.15"); !ok {
		t.Error("the merged catalog's rules do not apply")
	}
	if again, changed := Merge(merged, defaults); changed || len(again) != len(merged) {
		t.Errorf("Merge is not idempotent: changed %v, %d entries", changed, len(again))
	}
	if m, changed := Merge(nil, defaults); !changed || len(m) != len(defaults) {
		t.Errorf("Merge into an empty catalog: %d entries, changed %v", len(m), changed)
	}
	if _, changed := Merge(defaults, defaults); changed {
		t.Error("the defaults merged into themselves change")
	}
}
