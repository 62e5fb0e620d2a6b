package coordinator

import (
	"errors"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestPreflight: no hosts accepts (the operation waits); a plan that does
// not fit is refused every time it is asked, never from memory; one that
// fitted is accepted for preflightFresh without a placement, then asked
// again.
func TestPreflight(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	f.Apply(entry(t, 1, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()}))
	plan := func(name string) api.Plan {
		p, ok := api.FindPlan(api.DefaultPlans(), name)
		if !ok {
			t.Fatalf("no plan %s", name)
		}
		return p
	}
	var p preflight
	now := t0
	if err := p.check(f, "a", plan("redis-starter-1024"), now); err != nil {
		t.Fatalf("no hosts: %v; want accepted (waits for hosts)", err)
	}
	f.Apply(entry(t, 2, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h1", Address: "127.0.0.11", MemoryMB: 700, State: api.HostReady}}))
	if err := p.check(f, "a", plan("redis-starter-256"), now); err != nil {
		t.Fatalf("256 MB on a 700 MB host: %v", err)
	}
	for range 2 {
		if err := p.check(f, "a", plan("redis-starter-1024"), now); !errors.Is(err, api.ErrNoCapacity) {
			t.Fatalf("1024 MB on a 700 MB host: %v; want no capacity", err)
		}
	}
	// The host goes: a plan that fitted within preflightFresh is still
	// accepted (the operation then waits for capacity); later it is not.
	f.Apply(entry(t, 3, CmdHostRemove, HostRemoveCmd{HostID: "h1"}))
	f.Apply(entry(t, 4, CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h2", Address: "127.0.0.12", MemoryMB: 100, State: api.HostReady}}))
	if err := p.check(f, "b", plan("redis-starter-256"), now.Add(preflightFresh/2)); err != nil {
		t.Fatalf("within the fresh window: %v", err)
	}
	// While another request asks the scheduler, a fit younger than
	// preflightStale is taken; an older one is not.
	p.checking = map[string]bool{"redis-starter-256": true}
	if err := p.check(f, "b", plan("redis-starter-256"), now.Add(preflightStale-time.Millisecond)); err != nil {
		t.Fatalf("another request checking, fit %s old: %v; want accepted", preflightStale-time.Millisecond, err)
	}
	if err := p.check(f, "b", plan("redis-starter-256"), now.Add(preflightStale)); !errors.Is(err, api.ErrNoCapacity) {
		t.Fatalf("another request checking, fit %s old: %v; want no capacity", preflightStale, err)
	}
	if p.checking["redis-starter-256"] {
		t.Fatal("a check left its plan marked as being checked")
	}
	if err := p.check(f, "b", plan("redis-starter-256"), now.Add(preflightFresh+time.Millisecond)); !errors.Is(err, api.ErrNoCapacity) {
		t.Fatalf("after the fresh window on a 100 MB host: %v; want no capacity", err)
	}
}
