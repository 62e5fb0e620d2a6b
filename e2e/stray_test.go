package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// TestStrayMasterNeverServes: the primary is busy (DEBUG SLEEP 3) when a
// failover is forced, while a drain move of a sentinel is about to reset
// the sentinels. The old primary wakes up as a master beside the new one:
// it must be a replica of the new primary within seconds, take no write
// that is later lost, and the addon must say it is degraded meanwhile; the
// drain's sentinel reset waits until it rejoined.
func TestStrayMasterNeverServes(t *testing.T) {
	ips := []string{"127.0.0.131", "127.0.0.132", "127.0.0.133", "127.0.0.134"}
	f := startBusiness(t, "stray-biz", bizOpts{CoordIP: "127.0.0.130", HostIPs: ips, VIPPool: "127.0.5.0/24"})
	a := f.mustAddon()
	p := f.primary()
	var r api.Member
	for _, m := range membersOf(a, api.RoleRedis) {
		if m.ID != p.ID {
			r = m
		}
	}
	// A host with a sentinel and no redis member: its drain moves a
	// sentinel, whose operation ends with a sentinel reset.
	redisHosts := map[string]bool{p.HostID: true, r.HostID: true}
	drain := ""
	for _, m := range membersOf(a, api.RoleSentinel) {
		if !redisHosts[m.HostID] {
			drain = m.HostID
		}
	}
	if drain == "" {
		t.Fatalf("no sentinel host without redis: %+v", a.Members)
	}
	w := startWriter(f.opt, "stray:")
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			w.finish()
		}
	})
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)

	// Watch the old primary's role from outside, as a client would.
	var (
		mu          sync.Mutex
		masterAfter time.Duration // last time it answered role:master after waking
		woke        time.Time
	)
	watch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		c := f.direct(f.memberAddr(p))
		defer c.Close()
		for {
			select {
			case <-watch:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			info, err := c.Info(ctx, "replication").Result()
			cancel()
			if err == nil {
				mu.Lock()
				if woke.IsZero() {
					woke = time.Now()
				}
				if strings.Contains(info, "role:master") {
					masterAfter = time.Since(woke)
				}
				mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond) // sampling period of the watch
		}
	}()

	slept := make(chan error, 1)
	go func() {
		c := redis.NewClient(&redis.Options{Addr: f.memberAddr(p), Username: redisctl.FleetUser, Password: f.fleet(), ReadTimeout: 10 * time.Second, MaxRetries: -1})
		defer c.Close()
		slept <- c.Do(context.Background(), "DEBUG", "SLEEP", "3").Err()
	}()
	// The watch's first answer must come after the sleep began.
	pc := f.direct(f.memberAddr(p))
	defer pc.Close()
	testutil.WaitFor(t, 2*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := pc.Ping(ctx).Err(); err == nil {
			return fmt.Errorf("primary still answers")
		}
		return nil
	})
	mu.Lock()
	woke = time.Time{}
	mu.Unlock()
	at := time.Now()
	var forced error
	for _, s := range membersOf(a, api.RoleSentinel) {
		c := redis.NewClient(&redis.Options{Addr: f.memberAddr(s), Password: f.fleet(), MaxRetries: -1})
		forced = c.Do(context.Background(), "SENTINEL", "FAILOVER", f.id).Err()
		c.Close()
		if forced == nil {
			break
		}
	}
	if forced != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", forced)
	}
	if res := f.c.CLI("hosts-drain", drain); res.Code != 0 {
		t.Fatalf("hosts-drain %s: %s", drain, res)
	}
	if err := <-slept; err != nil {
		t.Fatalf("DEBUG SLEEP: %v", err)
	}
	// Degraded while the stray is a master (or while anything is off).
	testutil.WaitFor(t, 10*time.Second, func() error {
		if h := f.mustAddon().Health; !strings.HasPrefix(h, "degraded") {
			return fmt.Errorf("health %q", h)
		}
		return nil
	})
	// Within seconds, a replica of the new primary.
	testutil.WaitFor(t, 8*time.Second, func() error {
		ri, err := f.replInfo(f.memberAddr(p))
		if err != nil {
			return err
		}
		if ri["role"] != "slave" || ri["master_host"] != f.hostIP(r.HostID) {
			return fmt.Errorf("old primary %s: role %s of %s", p.ID, ri["role"], ri["master_host"])
		}
		return nil
	})
	close(watch)
	<-watched
	f.waitRedundantOff(60*time.Second, drain)
	w.waitAcksAfter(t, time.Now(), 100, 30*time.Second)
	acks, failed, errs := w.finish()
	stopped = true
	c := redis.NewClient(f.opt)
	defer c.Close()
	lost := missing(t, c, "stray:", acks)
	if len(lost) > 0 {
		t.Errorf("%d of %d acknowledged writes lost: the stray master took writes", len(lost), len(acks))
	}
	gap, _ := longestGap(acks, at)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("stray %s answered role:master for %s after it woke; %d writes, %d failed %v, longest stall %s",
		p.ID, masterAfter.Round(time.Millisecond), len(acks), failed, errs, gap.Round(time.Millisecond))
}
