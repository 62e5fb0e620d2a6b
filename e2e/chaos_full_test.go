//go:build chaos

package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestChaos is `make chaos`: every fault kind, in rounds of a seeded
// shuffle, for CHAOS_DURATION (default 10m); the seed is CHAOS_SEED or
// drawn from the clock, and printed. The report goes to docs/chaos/
// (CHAOS_REPORT_DIR overrides). Partitions are reported against the lag
// bound, not asserted: an isolated primary's last writes before its fence
// may be lost (docs/failover.md).
func TestChaos(t *testing.T) {
	seed := time.Now().UnixNano() % 1_000_000
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED %q: %v", s, err)
		}
		seed = v
	}
	d := 10 * time.Minute
	if s := os.Getenv("CHAOS_DURATION"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CHAOS_DURATION %q: %v", s, err)
		}
		d = v
	}
	dir := os.Getenv("CHAOS_REPORT_DIR")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "docs", "chaos")
	}
	kinds := append(append([]string(nil), chaosKills...), fkStopPrimary, fkStopSentinel, fkStopHAProxy,
		fkPlanChange, fkDrain, fkUpgrade, fkPartitionPrim, fkPartitionRepl)
	rep := runChaos(t, chaosOpts{Seed: seed, Kinds: kinds, Duration: d, ReportDir: dir})
	checkChaos(t, rep)
}
