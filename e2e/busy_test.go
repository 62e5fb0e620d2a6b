package e2e

// A busy primary is not a dead one (issue 10): a business addon's primary
// runs a 3 s script and then sleeps 3 s while an app writes through the
// URL. Nothing fails over, no session is cut, the app's commands wait and
// complete; a kill -9 of the same primary still fails over at once.

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// busyScript loops for ms milliseconds of redis's own clock: a busy
// primary, as a slow app script makes it.
const busyScript = `local t = redis.call('TIME'); local stop = t[1]*1000000 + t[2] + ARGV[1]*1000
repeat t = redis.call('TIME') until t[1]*1000000 + t[2] >= stop
return 1`

// memberStates polls the addon every 50 ms and records each state its
// member id was reported in, with when it was first seen.
type memberStates struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen map[string]time.Time
}

func (f *bizFleet) watchMember(id string) *memberStates {
	w := &memberStates{stop: make(chan struct{}), done: make(chan struct{}), seen: map[string]time.Time{}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			if a, err := f.addon(); err == nil {
				for _, m := range a.Members {
					if m.ID == id {
						w.mu.Lock()
						if _, ok := w.seen[m.State]; !ok {
							w.seen[m.State] = time.Now()
						}
						w.mu.Unlock()
					}
				}
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *memberStates) finish() map[string]time.Time {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// primaryViews returns the primary member per addons-info --json and the
// address a majority of the addon's sentinels name.
func (f *bizFleet) primaryViews(t *testing.T) (infoPrimary string, sentinels []string) {
	t.Helper()
	res := f.c.CLI("addons-info", "--app", f.app, "--json")
	if res.Code != 0 {
		t.Fatalf("addons-info: %s", res)
	}
	var a api.Addon
	res.JSON(t, &a)
	for _, m := range membersOf(a, api.RoleRedis) {
		if m.RedisRole == "primary" {
			infoPrimary = m.ID
		}
	}
	for _, s := range membersOf(a, api.RoleSentinel) {
		got, err := sentinelMaster(f.memberAddr(s), f.fleet(), f.id)
		if err != nil {
			got = "error: " + err.Error()
		}
		sentinels = append(sentinels, got)
	}
	return infoPrimary, sentinels
}

// TestBusinessBusyPrimary: a go-redis client writes through the URL on one
// connection (read timeout 10 s, no retries) while the primary runs a 3 s
// busy EVAL (sent through the URL) and then a 3 s DEBUG SLEEP (sent to the
// primary's own address from loopback). No failover (the same primary per
// addons-info and per every sentinel), the client's session is never cut
// (same CLIENT ID, 0 failed commands) and its commands complete after each
// pause. Then kill -9 of that primary's redis still fails over, writes
// resuming within about half a second.
func TestBusinessBusyPrimary(t *testing.T) {
	f := startBusiness(t, "biz-busy", bizOpts{})
	old := f.primary()
	addr := f.memberAddr(old)
	pid := f.pidOf(old.HostID, old.ID)
	if pid == 0 {
		t.Fatalf("primary %s has no running process", old.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	opt := *f.opt
	opt.PoolSize, opt.MinIdleConns, opt.MaxRetries = 1, 0, -1
	opt.ReadTimeout, opt.WriteTimeout = 10*time.Second, 10*time.Second
	w := startWriter(&opt, "busy:")
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	idBefore, err := w.c.ClientID(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT ID: %v", err)
	}
	states := f.watchMember(old.ID)

	// 1. A 3 s script through the URL, on its own connection.
	app := redis.NewClient(&redis.Options{Addr: opt.Addr, Username: opt.Username, Password: opt.Password,
		MaxRetries: -1, PoolSize: 1, ReadTimeout: 10 * time.Second, DisableIdentity: true})
	defer app.Close()
	evalAt := time.Now()
	if err := app.Eval(ctx, busyScript, nil, 3000).Err(); err != nil {
		t.Fatalf("3 s EVAL through the URL: %v", err)
	}
	evalEnd := time.Now()
	w.waitAcksAfter(t, evalEnd, 100, 10*time.Second)

	// 2. DEBUG SLEEP 3, sent to the primary itself from 127.0.0.1
	// (enable-debug-command local).
	dbg := redis.NewClient(&redis.Options{Addr: addr, Username: redisctl.FleetUser, Password: f.fleet(), MaxRetries: -1, PoolSize: 1,
		ReadTimeout: 10 * time.Second, DisableIdentity: true})
	defer dbg.Close()
	sleepAt := time.Now()
	if err := dbg.Do(ctx, "DEBUG", "SLEEP", "3").Err(); err != nil {
		t.Fatalf("DEBUG SLEEP 3 on %s: %v", addr, err)
	}
	sleepEnd := time.Now()
	w.waitAcksAfter(t, sleepEnd, 100, 10*time.Second)
	seen := states.finish()

	idAfter, err := w.c.ClientID(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT ID after the pauses: %v", err)
	}
	acks, failed, errs := w.finish()
	evalGap, _ := longestGap(acks, evalAt.Add(-time.Second))
	sleepGap, _ := longestGap(acks, sleepAt.Add(-time.Second))
	firstAfter := func(at time.Time) time.Duration {
		for _, a := range acks {
			if a.at.After(at) {
				return a.at.Sub(at)
			}
		}
		return -1
	}
	infoPrimary, sentinels := f.primaryViews(t)
	t.Logf("primary %s (%s, pid %d): 3 s EVAL took %v, the writer's longest stall around it %v, first write %v after it ended; "+
		"DEBUG SLEEP 3 took %v, stall %v, first write %v after it; CLIENT ID %d -> %d; %d acknowledged, %d failed %v; "+
		"states seen %v; primary per addons-info %s, per sentinels %v",
		old.ID, addr, pid, evalEnd.Sub(evalAt).Round(time.Millisecond), evalGap.Round(time.Millisecond), firstAfter(evalEnd).Round(time.Millisecond),
		sleepEnd.Sub(sleepAt).Round(time.Millisecond), sleepGap.Round(time.Millisecond), firstAfter(sleepEnd).Round(time.Millisecond),
		idBefore, idAfter, len(acks), failed, errs, stateList(seen), infoPrimary, sentinels)
	if idAfter != idBefore {
		t.Errorf("the writer's session was cut: CLIENT ID %d before, %d after", idBefore, idAfter)
	}
	if failed != 0 {
		t.Errorf("%d failed commands during the pauses: %v", failed, errs)
	}
	if evalGap < 2500*time.Millisecond || sleepGap < 2500*time.Millisecond {
		t.Errorf("stalls %v and %v: the writer did not wait for the busy primary (was it moved?)", evalGap, sleepGap)
	}
	if infoPrimary != old.ID {
		t.Errorf("addons-info names %s the primary, was %s: failed over", infoPrimary, old.ID)
	}
	for i, s := range sentinels {
		if s != addr {
			t.Errorf("sentinel %d names %s, the primary was %s", i+1, s, addr)
		}
	}
	if now := f.pidOf(old.HostID, old.ID); now != pid {
		t.Errorf("the busy primary's process changed: pid %d -> %d", pid, now)
	}
	if _, ok := seen[api.MemberBusy]; !ok {
		t.Errorf("the primary was never reported busy (states seen: %v)", stateList(seen))
	}
	for _, s := range []string{api.MemberUnresponsive, api.MemberFailed} {
		if _, ok := seen[s]; ok {
			t.Errorf("the busy primary was reported %s", s)
		}
	}
	rc := redis.NewClient(f.opt)
	defer rc.Close()
	if lost := missing(t, rc, "busy:", acks); len(lost) > 0 {
		t.Errorf("%d acknowledged writes lost", len(lost))
	}
	f.waitHealthy(30 * time.Second)

	// 3. The same primary's process killed: failover within ~0.5 s.
	o := killPrimaryProcess(t, f, "busykill:")
	if o.window > 2*time.Second {
		t.Errorf("kill -9 of the primary: longest write stall %v, want about 0.5 s", o.window)
	}
}

func stateList(m map[string]time.Time) string {
	var out []string
	for k, at := range m {
		out = append(out, fmt.Sprintf("%s (first %s)", k, at.Format("15:04:05.000")))
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}
