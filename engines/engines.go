package engines

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cacheplane/cacheplane/api"
)

// Kinds of upgrade (api.EnginePath.Kind).
const (
	KindMinor  = "minor"  // same engine and major
	KindMajor  = "major"  // same engine, next major
	KindSwitch = "switch" // another engine
)

// Version is a parsed engine version, "major.minor[.patch]".
type Version struct{ Major, Minor, Patch int }

// ParseVersion parses "7.0.15" (or "8.0").
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return Version{}, fmt.Errorf("version %q: want major.minor.patch", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || p != strconv.Itoa(v) {
			return Version{}, fmt.Errorf("version %q: %q is not a number", s, p)
		}
		n[i] = v
	}
	return Version{n[0], n[1], n[2]}, nil
}

// Compare orders versions: -1, 0 or +1.
func (v Version) Compare(o Version) int {
	if c := cmp.Compare(v.Major, o.Major); c != 0 {
		return c
	}
	if c := cmp.Compare(v.Minor, o.Minor); c != 0 {
		return c
	}
	return cmp.Compare(v.Patch, o.Patch)
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// entry is a catalog entry with its parsed version.
type entry struct {
	ev  api.EngineVersion
	v   Version
	key string
}

// line names an engine's major, "redis 7".
func (e entry) line() string { return fmt.Sprintf("%s %d", e.ev.Engine, e.v.Major) }

// catalog indexes entries sorted by engine, then version. Entries whose
// version does not parse are left out (Validate reports them).
type catalog struct {
	entries []entry
	byKey   map[string]entry
}

func index(evs []api.EngineVersion) catalog {
	c := catalog{byKey: map[string]entry{}}
	for _, ev := range evs {
		v, err := ParseVersion(ev.Version)
		if err != nil {
			continue
		}
		e := entry{ev: ev, v: v, key: ev.Key()}
		if _, dup := c.byKey[e.key]; dup {
			continue
		}
		c.byKey[e.key] = e
		c.entries = append(c.entries, e)
	}
	slices.SortFunc(c.entries, func(a, b entry) int {
		if x := cmp.Compare(a.ev.Engine, b.ev.Engine); x != 0 {
			return x
		}
		return a.v.Compare(b.v)
	})
	return c
}

func (c catalog) keys() []string {
	out := make([]string, len(c.entries))
	for i, e := range c.entries {
		out[i] = e.key
	}
	return out
}

// latestMinor is the highest minor the catalog lists for engine's major.
func (c catalog) latestMinor(engine api.Engine, major int) int {
	m := -1
	for _, e := range c.entries {
		if e.ev.Engine == engine && e.v.Major == major {
			m = max(m, e.v.Minor)
		}
	}
	return m
}

// nextMajor is the smallest major of engine above major, -1 if none.
func (c catalog) nextMajor(engine api.Engine, major int) int {
	n := -1
	for _, e := range c.entries {
		if e.ev.Engine == engine && e.v.Major > major && (n < 0 || e.v.Major < n) {
			n = e.v.Major
		}
	}
	return n
}

// switchAccepts reports whether to takes over from's data in an engine
// switch: one of to.SwitchFrom is from's "engine-major" or
// "engine-major.minor".
func switchAccepts(from, to entry) bool {
	for _, s := range to.ev.SwitchFrom {
		if s == fmt.Sprintf("%s-%d", from.ev.Engine, from.v.Major) ||
			s == fmt.Sprintf("%s-%d.%d", from.ev.Engine, from.v.Major, from.v.Minor) {
			return true
		}
	}
	return false
}

// step decides the direct upgrade from → to (no path search): its kind and
// whether it is allowed, with the reason.
func (c catalog) step(from, to entry) (kind string, ok bool, reason string) {
	if from.key == to.key {
		return "", false, fmt.Sprintf("the addon is already on %s", from.key)
	}
	if from.ev.Engine != to.ev.Engine {
		if switchAccepts(from, to) {
			return KindSwitch, true, fmt.Sprintf("engine switch: %s takes over %s data", to.key, from.line())
		}
		var takers []string
		for _, e := range c.entries {
			if e.ev.Engine == to.ev.Engine && switchAccepts(from, e) {
				takers = append(takers, e.key)
			}
		}
		if len(takers) > 0 {
			why := fmt.Sprintf("no switch lands on %s", to.key)
			if len(to.ev.SwitchFrom) > 0 {
				why = fmt.Sprintf("%s takes over %s data only", to.key, strings.Join(to.ev.SwitchFrom, ", "))
			}
			return KindSwitch, false, fmt.Sprintf("%s; a switch from %s lands on %s", why, from.key, strings.Join(takers, " or "))
		}
		return KindSwitch, false, fmt.Sprintf("no %s version in the catalog takes over %s data: a switch from %s to %s is not possible",
			to.ev.Engine, from.line(), from.key, to.ev.Engine)
	}
	if to.v.Compare(from.v) < 0 {
		return "", false, fmt.Sprintf("%s → %s is a downgrade; downgrades are never allowed", from.key, to.key)
	}
	if to.v.Major == from.v.Major {
		return KindMinor, true, fmt.Sprintf("upgrade within %s", from.line())
	}
	if next := c.nextMajor(from.ev.Engine, from.v.Major); to.v.Major != next {
		return KindMajor, false, fmt.Sprintf("%s → %s skips %s %d: a major is never skipped", from.key, to.key, from.ev.Engine, next)
	}
	if latest := c.latestMinor(from.ev.Engine, from.v.Major); from.v.Minor < latest {
		return KindMajor, false, fmt.Sprintf("to reach %s you must first be on the latest minor of %s (%d.%d)",
			to.line(), from.line(), from.v.Major, latest)
	}
	return KindMajor, true, fmt.Sprintf("major upgrade: %s is on the latest minor of %s", from.key, from.line())
}

// allowedFrom lists, in catalog order, the versions from may upgrade to
// directly.
func (c catalog) allowedFrom(from entry) []entry {
	var out []entry
	for _, e := range c.entries {
		if _, ok, _ := c.step(from, e); ok {
			out = append(out, e)
		}
	}
	return out
}

// next is the first step of the shortest allowed path from → to, "" when
// to cannot be reached. Between first steps of equally short paths it
// prefers the target's engine, then the newest version.
func (c catalog) next(from, to entry) string {
	// Breadth-first from the target backwards would need the reverse
	// graph; the catalog is small, so search forward and keep each
	// node's first step.
	first := map[string]string{from.key: ""}
	frontier := []entry{from}
	for len(frontier) > 0 {
		var nextFrontier []entry
		for _, n := range frontier {
			cands := c.allowedFrom(n)
			slices.SortStableFunc(cands, func(a, b entry) int {
				if (a.ev.Engine == to.ev.Engine) != (b.ev.Engine == to.ev.Engine) {
					if a.ev.Engine == to.ev.Engine {
						return -1
					}
					return 1
				}
				return b.v.Compare(a.v)
			})
			for _, e := range cands {
				if _, seen := first[e.key]; seen {
					continue
				}
				f := first[n.key]
				if f == "" {
					f = e.key
				}
				if e.key == to.key {
					return f
				}
				first[e.key] = f
				nextFrontier = append(nextFrontier, e)
			}
		}
		frontier = nextFrontier
	}
	return ""
}

// UpgradeAllowed decides whether an addon on from may be upgraded to to
// (catalog keys, "redis-7.0.15"). reason says why in words for the
// operator. When refused, next is the version to upgrade to first on the
// way to to ("" when to cannot be reached from from), and reason names it,
// or lists what from may upgrade to.
func UpgradeAllowed(catalog []api.EngineVersion, from, to string) (ok bool, reason, next string) {
	p := path(index(catalog), from, to)
	return p.Allowed, p.Reason, p.Next
}

// Rolling reports whether the upgrade from → to is allowed and can roll:
// a replica on to syncs from a primary on from (see CanReplicate).
func Rolling(catalog []api.EngineVersion, from, to string) bool {
	return path(index(catalog), from, to).Rolling
}

// CanReplicate reports whether a replica on replica's version completes a
// full sync from a primary on primary's: it loads primary's RDB format.
// Unknown formats (0) never do.
func CanReplicate(primary, replica api.EngineVersion) bool {
	return primary.RDB > 0 && replica.RDB > 0 && primary.RDB <= replica.RDB
}

func path(c catalog, from, to string) api.EnginePath {
	p := api.EnginePath{From: from, To: to}
	f, okf := c.byKey[from]
	t, okt := c.byKey[to]
	switch {
	case !okf:
		p.Reason = fmt.Sprintf("unknown engine version %q; the catalog has %s", from, strings.Join(c.keys(), ", "))
		return p
	case !okt:
		p.Reason = fmt.Sprintf("unknown engine version %q; the catalog has %s", to, strings.Join(c.keys(), ", "))
		return p
	}
	kind, ok, reason := c.step(f, t)
	p.Kind, p.Allowed, p.Reason = kind, ok, reason
	if ok {
		p.Rolling = CanReplicate(f.ev, t.ev)
		if p.Rolling {
			p.Reason += fmt.Sprintf("; rolling: a %s replica syncs from a %s primary", t.key, f.key)
		} else {
			p.Reason += fmt.Sprintf("; not rolling: a %s replica cannot sync from a %s primary, all nodes stop", t.key, f.key)
		}
		return p
	}
	if from == to {
		return p
	}
	if p.Next = c.next(f, t); p.Next != "" {
		p.Reason += fmt.Sprintf("; upgrade to %s first", p.Next)
		return p
	}
	var allowed []string
	for _, e := range c.allowedFrom(f) {
		allowed = append(allowed, e.key)
	}
	if len(allowed) == 0 {
		p.Reason += fmt.Sprintf("; %s has no upgrade in the catalog", from)
	} else {
		p.Reason += fmt.Sprintf("; %s cannot reach %s, it may upgrade to %s", from, to, strings.Join(allowed, ", "))
	}
	return p
}

// Paths lists every ordered pair of distinct catalog versions with the
// decision, sorted by from then to (engine, then version).
func Paths(catalog []api.EngineVersion) []api.EnginePath {
	c := index(catalog)
	var out []api.EnginePath
	for _, f := range c.entries {
		for _, t := range c.entries {
			if f.key != t.key {
				out = append(out, path(c, f.key, t.key))
			}
		}
	}
	return out
}

// Validate checks a catalog: versions parse, keys are unique, every role
// has an image, SwitchFrom names another engine's "engine-major[.minor]",
// RDB is not negative, at most one entry is the default.
func Validate(catalog []api.EngineVersion) error {
	var errs []error
	seen := map[string]bool{}
	defaults := 0
	for _, ev := range catalog {
		key := ev.Key()
		if ev.Engine != api.EngineRedis && ev.Engine != api.EngineValkey {
			errs = append(errs, fmt.Errorf("%s: unknown engine %q", key, ev.Engine))
		}
		if _, err := ParseVersion(ev.Version); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
		}
		if seen[key] {
			errs = append(errs, fmt.Errorf("%s: listed twice", key))
		}
		seen[key] = true
		if ev.Default {
			defaults++
		}
		if ev.RDB < 0 {
			errs = append(errs, fmt.Errorf("%s: negative RDB format %d", key, ev.RDB))
		}
		for _, r := range []api.Role{api.RoleRedis, api.RoleSentinel, api.RoleHAProxy} {
			if ev.Images[r] == "" {
				errs = append(errs, fmt.Errorf("%s: no image for role %s", key, r))
			}
		}
		for _, s := range ev.SwitchFrom {
			engine, ver, ok := strings.Cut(s, "-")
			if !ok || api.Engine(engine) == ev.Engine || (engine != string(api.EngineRedis) && engine != string(api.EngineValkey)) {
				errs = append(errs, fmt.Errorf("%s: switch_from %q: want another engine's \"engine-major\" or \"engine-major.minor\"", key, s))
				continue
			}
			valid := false
			if n, err := strconv.Atoi(ver); err == nil && n >= 0 {
				valid = true
			} else if _, err := ParseVersion(ver); err == nil && strings.Count(ver, ".") == 1 {
				valid = true
			}
			if !valid {
				errs = append(errs, fmt.Errorf("%s: switch_from %q: want \"engine-major\" or \"engine-major.minor\"", key, s))
			}
		}
	}
	if defaults > 1 {
		errs = append(errs, fmt.Errorf("%d entries are the default, want at most one", defaults))
	}
	return errors.Join(errs...)
}

// Merge brings a catalog stored by a running cluster up to date with
// defaults (api.DefaultEngines of this release): versions it lacks are
// appended (never as a second default), and for versions it has, the rule
// data (RDB, SwitchFrom) is taken from defaults. What runs is never
// changed: a stored version keeps its images and default flag, and no
// stored version is removed. changed reports whether merged differs from
// stored.
func Merge(stored, defaults []api.EngineVersion) (merged []api.EngineVersion, changed bool) {
	byKey := map[string]api.EngineVersion{}
	for _, d := range defaults {
		byKey[d.Key()] = d
	}
	have := map[string]bool{}
	hasDefault := false
	for _, s := range stored {
		m := s
		if d, ok := byKey[s.Key()]; ok {
			if m.RDB != d.RDB || !slices.Equal(m.SwitchFrom, d.SwitchFrom) {
				m.RDB, m.SwitchFrom, changed = d.RDB, slices.Clone(d.SwitchFrom), true
			}
		}
		have[s.Key()] = true
		hasDefault = hasDefault || s.Default
		merged = append(merged, m)
	}
	for _, d := range defaults {
		if have[d.Key()] {
			continue
		}
		if hasDefault {
			d.Default = false
		}
		hasDefault = hasDefault || d.Default
		merged = append(merged, d)
		changed = true
	}
	return merged, changed
}
