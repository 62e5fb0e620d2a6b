package redisctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoReplica: a switchover was asked without a replica to move the
// primary role to (none given, or the primary has none connected).
var ErrNoReplica = errors.New("no replica to switch over to")

// SwitchoverRequest is a planned primary move.
type SwitchoverRequest struct {
	Name      string // master name (the addon id)
	Password  string // the fleet credential: members and sentinels
	Primary   string // host:port of the live primary
	Replica   string // host:port of its replica, promoted
	Sentinels []string
}

// Switchover figures.
const (
	// switchoverPause bounds the write pause on the old primary should
	// the caller die half-way; normally it is lifted within ~1 s.
	switchoverPause = 5 * time.Second
	// switchoverSettle is how long the old primary stays paused after it
	// became a replica: HAProxy's role check (every 200 ms) marks it down
	// and cuts its sessions meanwhile, so paused clients reconnect to the
	// new primary instead of getting READONLY.
	switchoverSettle = 700 * time.Millisecond
	// switchoverCatchUp bounds the wait for the replica to have every
	// write; switchoverPromote the wait for Sentinel to promote it.
	switchoverCatchUp = 2 * time.Second
	switchoverPromote = 5 * time.Second
)

// Switchover moves the primary role from a live primary to its replica
// with no acknowledged write lost. A bare SENTINEL FAILOVER with a live
// primary promotes the replica while the old primary keeps accepting
// writes until Sentinel reconfigures it (seconds); those writes are lost
// when it resyncs. Instead: pause writes on the old primary (CLIENT PAUSE
// WRITE; clients wait, they get no error), wait until the replica has
// every write, ask Sentinel to fail over, wait for the replica to be a
// master, make the old primary its replica, let HAProxy see it, unpause.
//
// Without a replica (none named, or none connected to the primary) it
// returns ErrNoReplica at once, before pausing anything.
func Switchover(ctx context.Context, sw SwitchoverRequest) error {
	if sw.Replica == "" || sw.Replica == sw.Primary {
		return fmt.Errorf("switchover of %s from %s: %w", sw.Name, sw.Primary, ErrNoReplica)
	}
	host, port, err := net.SplitHostPort(sw.Replica)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("switchover of %s: replica address %q: %w", sw.Name, sw.Replica, errBadAddr(err))
	}
	if sw.Primary == "" {
		return fmt.Errorf("switchover of %s: no primary address", sw.Name)
	}
	if len(sw.Sentinels) == 0 {
		return fmt.Errorf("switchover of %s: no sentinel to ask", sw.Name)
	}
	old := redis.NewClient(MemberOptions(sw.Primary, sw.Password))
	defer old.Close()
	rep := redis.NewClient(MemberOptions(sw.Replica, sw.Password))
	defer rep.Close()
	call := func(c *redis.Client, args ...any) error {
		cctx, cancel := context.WithTimeout(ctx, MemberIOTimeout)
		defer cancel()
		if err := c.Do(cctx, args...).Err(); err != nil {
			return fmt.Errorf("%s: %w", cmdName(args), err)
		}
		return nil
	}
	replication := func(c *redis.Client) (Replication, error) {
		cctx, cancel := context.WithTimeout(ctx, MemberIOTimeout)
		defer cancel()
		return ClientReplication(cctx, c)
	}
	if r, err := replication(old); err != nil {
		return fmt.Errorf("switchover of %s: primary %s: %w", sw.Name, sw.Primary, err)
	} else if r.IsMaster() && len(r.Replicas) == 0 {
		return fmt.Errorf("switchover of %s: primary %s has no replica connected: %w", sw.Name, sw.Primary, ErrNoReplica)
	}
	if err := call(old, "CLIENT", "PAUSE", strconv.FormatInt(switchoverPause.Milliseconds(), 10), "WRITE"); err != nil {
		return fmt.Errorf("pause writes on %s: %w", sw.Primary, err)
	}
	promoted := false
	defer func() {
		if !promoted { // give the primary its writes back
			_ = call(old, "CLIENT", "UNPAUSE")
		}
	}()
	// The replica has every write once its offset reaches the primary's.
	err = poll(ctx, switchoverCatchUp, func() error {
		o, err := replication(old)
		if err != nil {
			return err
		}
		r, err := replication(rep)
		if err != nil {
			return err
		}
		if r.Role != RoleReplica || r.Offset < o.Offset {
			return fmt.Errorf("replica %s at offset %d (%s), primary at %d", sw.Replica, r.Offset, r.Role, o.Offset)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("replica not caught up: %w", err)
	}
	if _, err := Failover(ctx, sw.Sentinels, sw.Password, sw.Name); err != nil {
		return fmt.Errorf("sentinel failover: %w", err)
	}
	err = poll(ctx, switchoverPromote, func() error {
		r, err := replication(rep)
		if err != nil {
			return err
		}
		if r.Role != RoleMaster {
			return fmt.Errorf("%s is still %s", sw.Replica, r.Role)
		}
		return nil
	})
	if err != nil {
		// Sentinel has the failover under way: unpausing now would let the
		// old primary take writes beside the new one; the pause expires by
		// itself.
		promoted = true
		return fmt.Errorf("replica not promoted: %w", err)
	}
	promoted = true
	if err := call(old, "REPLICAOF", host, port); err != nil {
		return fmt.Errorf("demote %s: %w", sw.Primary, err)
	}
	t := time.NewTimer(switchoverSettle)
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	_ = call(old, "CLIENT", "UNPAUSE")
	return nil
}

// poll calls fn every 10 ms until it returns nil, timeout passes or ctx
// ends, and returns fn's last error.
func poll(ctx context.Context, timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}
