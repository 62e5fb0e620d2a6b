package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/scheduler"
)

// commitWriter is fsmWriter with a Raft commit's latency on every
// placement and hooks on what the engine commits (Raft is not the subject).
type commitWriter struct {
	fsmWriter
	latency time.Duration
	after   func(t CommandType, payload any)
}

func (w *commitWriter) Apply(ctx context.Context, t CommandType, payload any) (any, error) {
	if t == CmdAddonPlaced {
		timer := time.NewTimer(w.latency)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
	res, err := w.fsmWriter.Apply(ctx, t, payload)
	if err == nil && w.after != nil {
		w.after(t, payload)
	}
	return res, err
}

// TestHealingNotStarvedByProvisions: a host holding a business addon's
// sentinel is lost while the engine works through a backlog of 2,000
// provisions (each placement a commit of 2 ms): its replace operation is
// created, and its new member placed, while most of the backlog still
// waits. Before passes were bounded and healing went first, the pass under
// way placed the whole backlog (minutes at scale) before the next one
// decided any healing.
func TestHealingNotStarvedByProvisions(t *testing.T) {
	const backlog, hosts = 2000, 20
	f := NewFSM(slog.New(slog.NewTextHandler(io.Discard, nil)))
	w := &commitWriter{fsmWriter: fsmWriter{f: f}, latency: 2 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must := func(t CommandType, payload any) {
		if _, err := w.fsmWriter.Apply(ctx, t, payload); err != nil {
			panic(fmt.Sprintf("%s: %v", t, err))
		}
	}
	must(CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()})
	for i := range hosts {
		must(CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: fmt.Sprintf("h%02d", i), Address: fmt.Sprintf("10.0.0.%d", i+1),
			MemoryMB: 65536, State: api.HostReady, Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3)}}})
	}
	// A running business addon.
	var business api.Plan
	for _, p := range api.DefaultPlans() {
		if p.Kind == api.PlanBusiness {
			business = p
			break
		}
	}
	c := testAddon("biz", "biz-0001", "")
	c.Addon.Plan = business.Name
	must(CmdAddonCreate, c)
	var st scheduler.State
	f.Read(func(s *State, _ uint64) { st = schedulerState(s) })
	p, _, err := scheduler.Place(st, scheduler.Request{AddonID: c.Addon.ID, Plan: business})
	if err != nil {
		t.Fatal(err)
	}
	op := c.Operation
	op.State = api.OpRunning
	must(CmdAddonPlaced, AddonPlacedCmd{AddonID: c.Addon.ID, Members: p.Members, Entrypoint: p.Entrypoint, Operation: op})
	op.State = api.OpDone
	for k := range op.Steps {
		op.Steps[k].State = api.OpDone
	}
	must(CmdOperationUpdate, OperationUpdateCmd{Operation: op, AddonStatus: api.AddonRunning})
	var victim, target string
	for _, m := range p.Members {
		if m.Role == api.RoleSentinel {
			victim, target = m.HostID, m.ID
			break
		}
	}
	// The backlog: provisions waiting for placement.
	for i := range backlog {
		must(CmdAddonCreate, testAddon(fmt.Sprintf("app-%05d", i), fmt.Sprintf("app-%05d-0001", i), ""))
	}

	// After the 50th placement the victim is lost; then record how many
	// provisions were placed when its replace operation was created and
	// when its new member was placed.
	var placed atomic.Int64
	var mu sync.Mutex
	created, added := -1, -1
	w.after = func(ct CommandType, payload any) {
		switch ct {
		case CmdAddonPlaced:
			if n := placed.Add(1); n == 50 {
				must(CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: victim, Address: "x", MemoryMB: 65536, State: api.HostDown,
					DownSince: time.Now().Add(-time.Minute)}})
			}
		case CmdOperationCreate:
			if o := payload.(OperationCreateCmd).Operation; o.Kind == api.OpReplaceMember && o.Target == target {
				mu.Lock()
				created = int(placed.Load())
				mu.Unlock()
			}
		case CmdMemberAdded:
			if payload.(MemberAddedCmd).AddonID == c.Addon.ID {
				mu.Lock()
				added = int(placed.Load())
				mu.Unlock()
			}
		}
	}
	e := &engine{store: w, obs: newObserved(), stats: newStatsHistory(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now,
		heal: operation.HealConfig{MaxParallel: 4}, limits: operation.DefaultLimits(),
		act: actions{ping: func(context.Context, string, string) error { return errors.New("no agent in this test") }}}
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testutil.WaitFor(t, 2*time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if created < 0 || added < 0 {
			return fmt.Errorf("%d of %d provisions placed; replace created after %d, member added after %d", placed.Load(), backlog, created, added)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("host lost after 50 placements; replace operation created after %d, its member placed after %d, of %d provisions", created, added, backlog)
	if created > backlog/2 || added > backlog/2 {
		t.Fatalf("healing waited behind the provisions: replace created after %d placements, its member placed after %d (of %d queued)", created, added, backlog)
	}
	var a api.Addon
	f.Read(func(s *State, _ uint64) { a = s.Addons[c.Addon.ID] })
	for _, m := range a.Members {
		if m.ID != target && m.Role == api.RoleSentinel && m.HostID == victim {
			t.Fatalf("replacement %s placed on the lost host", m.ID)
		}
	}
	if !strings.Contains(fmt.Sprint(a.Members), victim) {
		t.Fatalf("members %v: the lost host's member is gone before its replacement runs", a.Members)
	}
}
