package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/engines"
)

// Controller is leader-only work. Run starts after the leader's barrier and
// must return when ctx is cancelled (leadership lost or shutdown). It keeps
// no state of its own between runs: everything it needs is in the FSM, so a
// new leader resumes where the old one stopped.
type Controller interface {
	Name() string
	Run(ctx context.Context)
}

// leadership starts the controllers on winning leadership and stops them on
// losing it.
type leadership struct {
	store       *Store
	log         *slog.Logger
	self        api.CoordinatorMember
	controllers []Controller
}

func (l *leadership) run(ctx context.Context) {
	var (
		cancel context.CancelFunc
		wg     sync.WaitGroup
	)
	stop := func() {
		if cancel != nil {
			cancel()
			wg.Wait()
			cancel = nil
			l.store.setReady(false)
			l.log.Info("leader controllers stopped")
		}
	}
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case isLeader := <-l.store.LeaderCh():
			stop()
			if !isLeader {
				continue
			}
			lctx, lcancel := context.WithCancel(ctx)
			cancel = lcancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.lead(lctx, &wg)
			}()
		}
	}
}

// lead establishes leadership (barrier, own address, catalogs) and starts
// every controller.
func (l *leadership) lead(ctx context.Context, wg *sync.WaitGroup) {
	start := time.Now()
	for {
		if err := l.store.Barrier(5 * time.Second); err == nil {
			break
		} else if !l.store.isRaftLeader() || ctx.Err() != nil {
			return
		} else {
			l.log.Warn("leader barrier failed; retrying", "err", err)
		}
	}
	if err := l.establish(ctx); err != nil {
		if ctx.Err() == nil {
			l.log.Error("cannot establish leadership", "err", err)
		}
		return
	}
	l.store.setReady(true)
	l.log.Info("leading the cluster", "took", time.Since(start).String())
	for _, c := range l.controllers {
		wg.Add(1)
		go func(c Controller) {
			defer wg.Done()
			c.Run(ctx)
		}(c)
	}
}

func (l *leadership) establish(ctx context.Context) error {
	var (
		recorded       api.CoordinatorMember
		needCatalog    bool
		haveSelfRecord bool
		plans          []api.Plan
		stored         []api.EngineVersion
	)
	l.store.FSM().Read(func(s *State, _ uint64) {
		recorded, haveSelfRecord = s.Coordinators[l.self.ID]
		needCatalog = len(s.Plans) == 0 || len(s.Engines) == 0
		plans = append(plans, s.Plans...)
		stored = append(stored, s.Engines...)
	})
	// The record carries this release's protocol level: the gate of
	// Store.Apply reads it on every member.
	if !haveSelfRecord || recorded.HTTPAddr != l.self.HTTPAddr || recorded.RaftAddr != l.self.RaftAddr ||
		recorded.Protocol != l.self.Protocol || recorded.Release != l.self.Release || recorded.StateKey != l.self.StateKey {
		if _, err := l.store.Apply(ctx, CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: l.self}); err != nil {
			return err
		}
	}
	// The cluster CA: made by the first leader (the FSM keeps the first
	// recorded, so two leaders racing agree). In a cluster still running
	// an older release on some member it waits (cluster-secure, or the
	// next leadership, makes it).
	if err := l.store.Supports(CmdCASet); err != nil {
		l.log.Warn("no cluster CA yet: a member runs an older release", "why", api.Message(err))
	} else if _, created, err := ensureCA(ctx, l.store, time.Now()); err != nil {
		return err
	} else if created {
		l.log.Info("cluster CA created")
	}
	if needCatalog {
		if _, err := l.store.Apply(ctx, CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()}); err != nil {
			return err
		}
		return nil
	}
	// A cluster made by an older release learns this release's engine
	// versions (and their upgrade rule data); what runs is never changed.
	if merged, changed := engines.Merge(stored, api.DefaultEngines()); changed {
		if _, err := l.store.Apply(ctx, CmdCatalogSet, CatalogSetCmd{Plans: plans, Engines: merged}); err != nil {
			return fmt.Errorf("update the engine catalog: %w", err)
		}
		l.log.Info("engine catalog updated", "versions", len(merged), "were", len(stored))
	}
	return nil
}

// runPasses calls pass now and again after every FSM change, every
// heartbeat, or period without either, until ctx ends. The channels are
// taken before the pass, so a change during it is never missed. After a
// pass, the next waits passRest times as long as that pass took (at most
// period: a pass that was long because it waited on Raft commits is not
// held back further):
// with thousands of hosts heartbeating and thousands of addons a pass is
// no longer free, and back-to-back passes would take a core from the
// writes and heartbeats they serve; a small fleet's passes take
// microseconds and are not held back.
func runPasses(ctx context.Context, f *FSM, obs *observed, period time.Duration, pass func()) {
	for {
		fsmCh, obsCh := f.Changed(), obs.Changed()
		start := time.Now()
		pass()
		if rest := min(passRest*time.Since(start), period); rest >= time.Millisecond {
			t := time.NewTimer(rest)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		t := time.NewTimer(period)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-fsmCh:
		case <-obsCh:
		case <-t.C:
		}
		t.Stop()
	}
}

// passRest bounds a controller's passes to a third of a core (see
// runPasses).
const passRest = 2

// runEvery runs pass every period until ctx ends, for a controller whose
// Raft command needs every coordinator's release: while a member cannot
// apply it (ErrMixedReleases) it logs waitMsg once and waits; any other
// error is logged with failMsg and retried at the next period.
func runEvery(ctx context.Context, log *slog.Logger, period time.Duration, waitMsg, failMsg string, pass func(context.Context) error) {
	t := time.NewTicker(period)
	defer t.Stop()
	waiting := false
	for {
		err := pass(ctx)
		switch {
		case err == nil:
			waiting = false
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrMixedReleases) && !waiting:
			waiting = true // one line while a member is behind
			log.Warn(waitMsg, "err", err)
		case !errors.Is(err, ErrMixedReleases):
			log.Warn(failMsg, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
