package redisctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

// SaveRules are the RDB snapshot rules, "seconds changes" each (DESIGN.md
// §3); they stay on in AOF mode too.
var SaveRules = [][2]int{{900, 1}, {300, 10}, {60, 10000}}

// Eviction policies: cache mode evicts least recently used keys at the
// limit; otherwise a write at the limit gets an OOM error.
const (
	PolicyCache   = "allkeys-lru"
	PolicyNoCache = "noeviction"
)

// Param is one CONFIG parameter and its value, as redis.conf spells it.
type Param struct {
	Name  string
	Value string
}

// Config maps an addon's settings and plan memory to the CONFIG parameters
// they decide, in the order a live change must set them: appendfsync
// before appendonly (the AOF is written synchronously from its first
// byte), the save rules, maxmemory before maxmemory-policy. Persistence
// "aof" turns AOF on; anything else is RDB (callers validate first).
// ForceTLS and InternetAccess map to no parameter: the entrypoint
// terminates TLS.
//
//   - appendfsync always in both modes (inert while appendonly is no), so
//     switching rdb<->aof live is one CONFIG SET appendonly.
//   - save: the RDB rules, in both modes: the snapshot is the restart
//     fallback and what backups copy.
//   - maxmemory is the plan memory in both modes; the policy is
//     allkeys-lru in cache mode, else noeviction.
func Config(s api.Settings, planMB int) []Param {
	appendonly := "no"
	if s.Persistence == api.PersistenceAOF {
		appendonly = "yes"
	}
	policy := PolicyNoCache
	if s.CacheMode {
		policy = PolicyCache
	}
	rules := make([]string, 0, 2*len(SaveRules))
	for _, r := range SaveRules {
		rules = append(rules, strconv.Itoa(r[0]), strconv.Itoa(r[1]))
	}
	return []Param{
		{"appendfsync", "always"},
		{"appendonly", appendonly},
		{"save", strings.Join(rules, " ")},
		{"maxmemory", strconv.Itoa(planMB) + "mb"},
		{"maxmemory-policy", policy},
	}
}

// FromConfig reads settings and plan memory (MB, rounded down) back from
// CONFIG GET answers (or redis.conf values): appendonly, maxmemory and
// maxmemory-policy must be present and hold values Config produces.
// ForceTLS and InternetAccess are never set: they are not CONFIG
// parameters.
func FromConfig(m map[string]string) (api.Settings, int, error) {
	var s api.Settings
	switch v := strings.ToLower(m["appendonly"]); v {
	case "yes":
		s.Persistence = api.PersistenceAOF
	case "no":
		s.Persistence = api.PersistenceRDB
	default:
		return api.Settings{}, 0, fmt.Errorf("appendonly %q: want yes or no", m["appendonly"])
	}
	switch v := strings.ToLower(m["maxmemory-policy"]); v {
	case PolicyCache:
		s.CacheMode = true
	case PolicyNoCache:
	default:
		return api.Settings{}, 0, fmt.Errorf("maxmemory-policy %q: want %s or %s", m["maxmemory-policy"], PolicyCache, PolicyNoCache)
	}
	b, err := parseMemory(m["maxmemory"])
	if err != nil {
		return api.Settings{}, 0, fmt.Errorf("maxmemory: %w", err)
	}
	return s, int(b >> 20), nil
}

// LiveChange returns the CONFIG SET commands that bring a running redis
// whose CONFIG GET answers are current to settings want and plan memory
// planMB, in Config's order, each a full command ready for go-redis's Do;
// nil when nothing differs. Values are compared as redis means them
// (maxmemory "256mb" equals "268435456"). A parameter missing from current
// is set.
//
//   - rdb -> aof: appendonly yes starts an AOF rewrite in the background;
//     the switch is complete when INFO persistence shows
//     aof_rewrite_in_progress:0 and aof_rewrite_scheduled:0 with
//     aof_last_bgrewrite_status:ok.
//   - cache mode off on a full cache: the next writes fail with OOM until
//     keys are deleted or the plan grows.
//
// redis.conf must be re-rendered too, so a restart keeps the settings.
// Force TLS and internet access are the entrypoint's (HAProxy), not
// redis's: they map to no parameter and need no restart.
func LiveChange(current map[string]string, want api.Settings, planMB int) [][]string {
	var cmds [][]string
	for _, p := range Config(want, planMB) {
		cur, ok := current[p.Name]
		if ok && sameValue(p.Name, cur, p.Value) {
			continue
		}
		cmds = append(cmds, []string{"CONFIG", "SET", p.Name, p.Value})
	}
	return cmds
}

// sameValue compares two values of parameter name as redis means them.
func sameValue(name, a, b string) bool {
	switch name {
	case "maxmemory":
		x, errx := parseMemory(a)
		y, erry := parseMemory(b)
		return errx == nil && erry == nil && x == y
	case "save":
		return strings.Join(strings.Fields(a), " ") == strings.Join(strings.Fields(b), " ")
	}
	return strings.EqualFold(strings.TrimSpace(a), strings.TrimSpace(b))
}

// parseMemory reads a redis memory figure: bytes, or with k/kb/m/mb/g/gb
// (k = 1000, kb = 1024…), as redis's memtoull.
func parseMemory(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	mul := int64(1)
	for _, u := range []struct {
		suffix string
		mul    int64
	}{{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSuffix(s, u.suffix), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a memory figure", v)
	}
	return n * mul, nil
}

// ConfigValues asks an open client for the CONFIG GET value of every
// parameter Config sets.
func ConfigValues(ctx context.Context, c redis.Cmdable) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range Config(api.Settings{}, 0) {
		got, err := c.ConfigGet(ctx, p.Name).Result()
		if err != nil {
			return nil, fmt.Errorf("CONFIG GET %s: %w", p.Name, err)
		}
		v, ok := got[p.Name]
		if !ok {
			return nil, fmt.Errorf("CONFIG GET %s: no such parameter", p.Name)
		}
		out[p.Name] = v
	}
	return out, nil
}

// ApplySettings brings the redis behind an open client (the agent's probe
// client) to settings want and plan memory planMB live: it reads the
// current values and sends LiveChange's commands, returning those it sent.
func ApplySettings(ctx context.Context, c *redis.Client, want api.Settings, planMB int) ([][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*callTimeout)
	defer cancel()
	cur, err := ConfigValues(ctx, c)
	if err != nil {
		return nil, err
	}
	cmds := LiveChange(cur, want, planMB)
	for i, cmd := range cmds {
		args := make([]any, len(cmd))
		for j, s := range cmd {
			args[j] = s
		}
		if err := c.Do(ctx, args...).Err(); err != nil {
			return cmds[:i], fmt.Errorf("%s: %w", strings.Join(cmd, " "), err)
		}
	}
	return cmds, nil
}

// CheckSettings returns nil once the redis at addr (a member, or the
// entrypoint) runs with settings s and plan memory planMB, else an error
// naming each parameter that differs.
func CheckSettings(ctx context.Context, addr, password string, s api.Settings, planMB int) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	cur, err := ConfigValues(ctx, c)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	var diffs []string
	for _, p := range Config(s, planMB) {
		if !sameValue(p.Name, cur[p.Name], p.Value) {
			diffs = append(diffs, fmt.Sprintf("%s is %q, want %q", p.Name, cur[p.Name], p.Value))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s: %s", addr, strings.Join(diffs, "; "))
	}
	return nil
}

// Failover guard parameters: the fence of a business primary and the
// promotability of its replica (docs/failover.md). redis.conf renders
// the unfenced, promotable values (FenceOff, PriorityPromotable): the
// agent's failover guard (agent/promoteguard.go) sets them at run time
// with FenceParams and PriorityParam, from what it observes.
const (
	ParamMinReplicas       = "min-replicas-to-write"
	ParamMinReplicasMaxLag = "min-replicas-max-lag"
	ParamReplicaPriority   = "replica-priority"

	// FenceMaxLag is min-replicas-max-lag in seconds: a fenced primary
	// refuses writes (-NOREPLICAS) once its replica's last ACK is older.
	// Replicas ACK every second, so a connected replica reads 0 or 1; 2
	// bounds, in time, what a fenced primary cut off from its replica
	// still acknowledges (redis's default is 10).
	FenceMaxLag = 2
	// PriorityPromotable is redis's default replica-priority; PriorityNever
	// (0) makes Sentinel never promote the replica.
	PriorityPromotable = 100
	PriorityNever      = 0
	// DefaultPromoteMaxLagBytes is the default bound on how far behind its
	// primary (replication offset, bytes) a replica may be and still be
	// promoted.
	DefaultPromoteMaxLagBytes = 8 << 20
)

// FenceParams are the CONFIG parameters that fence a primary (on: it
// refuses writes unless one replica ACKed within FenceMaxLag seconds) or
// lift the fence (off: min-replicas-to-write 0), in the order a live
// change sets them (the lag before the count).
func FenceParams(on bool) []Param {
	n := "0"
	if on {
		n = "1"
	}
	return []Param{{ParamMinReplicasMaxLag, strconv.Itoa(FenceMaxLag)}, {ParamMinReplicas, n}}
}

// PriorityParam is replica-priority for a replica Sentinel may promote
// (PriorityPromotable) or must not (PriorityNever).
func PriorityParam(promotable bool) Param {
	if promotable {
		return Param{ParamReplicaPriority, strconv.Itoa(PriorityPromotable)}
	}
	return Param{ParamReplicaPriority, strconv.Itoa(PriorityNever)}
}
