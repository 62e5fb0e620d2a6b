package api

import "fmt"

// PlanSizesMB are the memory sizes offered for each plan kind.
var PlanSizesMB = []int{256, 512, 1024, 2048, 4096, 8192}

// DefaultPlans is the built-in plans catalog: redis-starter-<MB> (one node)
// and redis-business-<MB> (HA). Every plan is backed up except the smallest
// starter, which is meant for trials.
func DefaultPlans() []Plan {
	var ps []Plan
	for _, kind := range []PlanKind{PlanStarter, PlanBusiness} {
		for _, mb := range PlanSizesMB {
			ps = append(ps, Plan{
				Name:     fmt.Sprintf("redis-%s-%d", kind, mb),
				Kind:     kind,
				MemoryMB: mb,
				Backups:  !(kind == PlanStarter && mb == 256),
			})
		}
	}
	return ps
}

// Image references of the locally built images (packaging/ builds them:
// from the machine's own Debian packages for bookworm's versions, from
// bookworm-backports' and trixie's packages for the others). A new
// reference names one exact version, so two patch releases never share one;
// the references of Redis 7.0.15 and Valkey 8.0.1 keep their first names
// because running clusters stored them in their catalog (the FSM), and a
// renamed reference would be missing from their image directories. Valkey
// and Redis 8 run sentinels from the server image (the same binary run as a
// sentinel).
const (
	ImageRedis7    = "cacheplane.local/redis:7.0"
	ImageSentinel7 = "cacheplane.local/redis-sentinel:7.0"
	ImageValkey8   = "cacheplane.local/valkey:8.0"
	ImageValkey81  = "cacheplane.local/valkey:8.1.1"
	ImageRedis8    = "cacheplane.local/redis:8.0.2"
	ImageHAProxy   = "cacheplane.local/haproxy:2.6"
)

// DefaultEngines is the built-in engine catalog: real versions from Debian
// (Redis 7.0.15 from bookworm, Valkey 8.0.1 from bookworm-backports, Valkey
// 8.1.1 and Redis 8.0.2 from trixie), oldest first per engine (an addon
// asking for an engine without a version gets its last listed one).
//
// RDB and SwitchFrom drive the upgrade rules (package engines): Valkey 8.0
// loads a Redis 7 RDB, so a Redis 7 addon may switch to it; nothing takes
// over Valkey data for Redis, nor Redis 8's RDB 12 for Valkey 8.
func DefaultEngines() []EngineVersion {
	return []EngineVersion{
		{Engine: EngineRedis, Version: "7.0.15", Default: true, RDB: 10, Images: map[Role]string{
			RoleRedis: ImageRedis7, RoleSentinel: ImageSentinel7, RoleHAProxy: ImageHAProxy,
		}},
		{Engine: EngineValkey, Version: "8.0.1", RDB: 11, SwitchFrom: []string{"redis-7"}, Images: map[Role]string{
			RoleRedis: ImageValkey8, RoleSentinel: ImageValkey8, RoleHAProxy: ImageHAProxy,
		}},
		{Engine: EngineValkey, Version: "8.1.1", RDB: 11, Images: map[Role]string{
			RoleRedis: ImageValkey81, RoleSentinel: ImageValkey81, RoleHAProxy: ImageHAProxy,
		}},
		{Engine: EngineRedis, Version: "8.0.2", RDB: 12, Images: map[Role]string{
			RoleRedis: ImageRedis8, RoleSentinel: ImageRedis8, RoleHAProxy: ImageHAProxy,
		}},
	}
}

// EnginePath says whether an addon on From may be upgraded to To, as the
// engine rules (package engines) decide.
type EnginePath struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Kind is "minor" (same engine and major), "major" or "switch" (to
	// another engine); empty for a refusal that is none of these.
	Kind    string `json:"kind,omitempty"`
	Allowed bool   `json:"allowed"`
	// Reason says why, in words for the operator; a refusal names Next.
	Reason string `json:"reason"`
	// Next is, for a refusal, the version to upgrade to first on the way
	// to To; empty when To cannot be reached from From at all.
	Next string `json:"next,omitempty"`
	// Rolling: allowed, and a replica on To syncs from a primary on From,
	// so a business addon upgrades one node at a time.
	Rolling bool `json:"rolling"`
}

// EngineCatalog is the engine catalog with every upgrade path between its
// versions (GET /v1/engines/paths).
type EngineCatalog struct {
	Engines []EngineVersion `json:"engines"`
	Paths   []EnginePath    `json:"paths"`
}
