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

// Image references of the locally built images (packaging/ builds them from
// the Debian packages on the machine).
const (
	ImageRedis7    = "cacheplane.local/redis:7.0"
	ImageSentinel7 = "cacheplane.local/redis-sentinel:7.0"
	ImageValkey8   = "cacheplane.local/valkey:8.0"
	ImageHAProxy   = "cacheplane.local/haproxy:2.6"
)

// DefaultEngines is the built-in engine catalog: what Debian bookworm (and
// its backports) ship, which is what the local image build can package.
func DefaultEngines() []EngineVersion {
	return []EngineVersion{
		{Engine: EngineRedis, Version: "7.0.15", Default: true, Images: map[Role]string{
			RoleRedis: ImageRedis7, RoleSentinel: ImageSentinel7, RoleHAProxy: ImageHAProxy,
		}},
		{Engine: EngineValkey, Version: "8.0.1", Images: map[Role]string{
			RoleRedis: ImageValkey8, RoleSentinel: ImageValkey8, RoleHAProxy: ImageHAProxy,
		}},
	}
}
