package coordinator

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestStoppingLeaderHandsOff: three members with real Raft. HandOff on the
// leader makes another member lead while it still runs (without it the old
// leader would lead until it is gone); Close on the new leader, with an
// agent's assignment watch open on it, hands off too and does not wait for
// the watch: the watch ends with an error and Close returns well before
// the servers' 5 s shutdown timeout (it took all of it before).
func TestStoppingLeaderHandsOff(t *testing.T) {
	ctx := context.Background()
	keys := recoverKeys(t)
	m1 := startRecoverMember(t, "c1", "127.0.0.76", true, keys)
	testutil.WaitFor(t, 10*time.Second, func() error {
		_, err := m1.admin().Plans(ctx)
		return err
	})
	m2 := startRecoverMember(t, "c2", "127.0.0.77", false, keys)
	m3 := startRecoverMember(t, "c3", "127.0.0.78", false, keys)
	for _, m := range []*recoverMember{m2, m3} {
		if _, err := m.admin().Join(ctx, m1.cfg.HTTPAddr, memberToken(t, m1.admin())); err != nil {
			t.Fatalf("join %s: %v", m.cfg.ID, err)
		}
	}
	members := []*recoverMember{m1, m2, m3}
	leaderOf := func(skip *recoverMember) (*recoverMember, error) {
		for _, m := range members {
			if m != skip && m.c != nil && m.c.Store().IsLeader() {
				return m, nil
			}
		}
		return nil, errors.New("no leader yet")
	}
	var first *recoverMember
	testutil.WaitFor(t, 10*time.Second, func() (err error) {
		first, err = leaderOf(nil)
		return err
	})

	if err := first.c.Store().HandOff(3 * time.Second); err != nil {
		t.Fatalf("hand off: %v", err)
	}
	if st := first.c.Store().raft().State(); st == raft.Leader {
		t.Fatalf("%s still leads after handing off", first.cfg.ID)
	}
	var second *recoverMember
	testutil.WaitFor(t, 5*time.Second, func() (err error) {
		second, err = leaderOf(first)
		return err
	})

	// An agent's watch on the second leader: the host registers, then
	// waits for assignments past the current index (a long poll).
	admin := second.admin()
	if _, err := admin.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.79", MemoryMB: 4096}); err != nil {
		t.Fatal(err)
	}
	as, err := admin.Assignments(ctx, "h1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The agent's loop: each answer (any write moves the index) starts the
	// next wait; waiting holds the time its wait started.
	watched := make(chan error, 1)
	var waitingSince atomic.Int64
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		index := as.Index
		for {
			waitingSince.Store(time.Now().UnixNano())
			got, err := admin.Assignments(wctx, "h1", index, 25*time.Second)
			waitingSince.Store(0)
			if err != nil {
				watched <- err
				return
			}
			index = got.Index
		}
	}()
	// Close starts while a wait has been open for a while (not answered).
	testutil.WaitFor(t, 10*time.Second, func() error {
		since := waitingSince.Load()
		if since == 0 || time.Since(time.Unix(0, since)) < 300*time.Millisecond {
			return errors.New("no watch waiting for 300 ms yet")
		}
		return nil
	})
	start := time.Now()
	_ = second.c.Close()
	took := time.Since(start)
	second.c = nil
	if took >= 4*time.Second {
		t.Fatalf("Close took %s: it waited for the open watch", took)
	}
	select {
	case err := <-watched:
		if err == nil {
			t.Fatal("the watch got an answer from a stopping coordinator, want an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watch was still open 5 s after Close returned")
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		_, err := leaderOf(second)
		return err
	})
	t.Logf("Close of a leader with a watch open took %s", took.Round(time.Millisecond))
}
