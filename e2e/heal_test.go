package e2e

// Healing is per addon and never wrong (issue 10): several faults at once,
// starters that must not be switched over, a move an operator cancels.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// healAfter is the fleet's --heal-after in these tests.
const healAfter = 3 * time.Second

// starterClient is a go-redis client of an app's URL.
func starterClient(t *testing.T, f *bizFleet, app string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(RedisURL(t, f.c, app))
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxRetries = -1
	// As the fleet (the test SAVEs; the app's user may not).
	opt.Username, opt.Password = redisctl.FleetUser, fleetCredential(t, addonOfApp(t, f, app).ID, agentList(f.agents)...)
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

func addonOfApp(t *testing.T, f *bizFleet, app string) api.Addon {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := f.c.Client().AddonOfApp(ctx, app)
	if err != nil {
		t.Fatalf("addon of %s: %v", app, err)
	}
	full, err := f.c.Client().Addon(ctx, a.ID)
	if err != nil {
		t.Fatalf("addon %s: %v", a.ID, err)
	}
	return full
}

func opsOf(t *testing.T, f *bizFleet, app string) []api.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ops, err := f.c.Client().Operations(ctx, app, "")
	if err != nil {
		t.Fatalf("operations --app %s: %v", app, err)
	}
	return ops
}

// TestHealingPerAddon: a starter's host is drained, another starter's host
// and a host of the business addon are killed, all at once. The business
// addon is fully redundant again within heal-after + 30 s with no
// acknowledged write lost; the drained starter is never switched over and
// keeps serving its data where it is (the drain says so); the killed
// starter is reported unknown (host down), never replaced, and serves its
// data again in place when its host returns.
func TestHealingPerAddon(t *testing.T) {
	ips := []string{"127.0.0.111", "127.0.0.112", "127.0.0.113", "127.0.0.114", "127.0.0.115", "127.0.0.116"}
	f := startBusiness(t, "heal-biz", bizOpts{CoordIP: "127.0.0.110", HostIPs: ips, VIPPool: "127.0.3.0/24"})
	for _, app := range []string{"heal-s1", "heal-s2"} {
		if res := f.c.CLI("addons-add", "--app", app, "redis", "redis-starter-256"); res.Code != 0 {
			t.Fatalf("addons-add %s: %s", app, res)
		}
		WaitForAddonStatus(t, f.c, app, api.AddonRunning, 90*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s1c, s2c := starterClient(t, f, "heal-s1"), starterClient(t, f, "heal-s2")
	for _, c := range []*redis.Client{s1c, s2c} {
		if err := c.Set(ctx, "heal:seed", "kept", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Save(ctx).Err(); err != nil { // on disk before the host dies
			t.Fatal(err)
		}
	}
	s1, s2 := addonOfApp(t, f, "heal-s1"), addonOfApp(t, f, "heal-s2")
	x, y := s1.Members[0].HostID, s2.Members[0].HostID
	if x == y {
		t.Fatalf("both starters were placed on %s; the test needs two hosts", x)
	}
	// z: a third host whose loss, with y's, leaves the business addon a
	// redis node, two sentinels and a haproxy — preferably its primary's.
	b := f.mustAddon()
	survives := func(lost ...string) bool {
		n := map[api.Role]int{}
		for _, m := range b.Members {
			if !contains(lost, m.HostID) {
				n[m.Role]++
			}
		}
		return n[api.RoleRedis] >= 1 && n[api.RoleSentinel] >= 2 && n[api.RoleHAProxy] >= 1
	}
	z := ""
	for _, m := range b.Members {
		if m.HostID != x && m.HostID != y && survives(y, m.HostID) && (z == "" || m.Role == api.RoleRedis && m.RedisRole == "primary") {
			z = m.HostID
		}
	}
	if z == "" {
		t.Fatalf("no host to kill beside %s that the business addon survives: %+v", y, b.Members)
	}
	t.Logf("drain %s (starter %s), kill %s (starter %s) and %s (business members)", x, s1.ID, y, s2.ID, z)

	w := startWriter(f.opt, "heal:")
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			w.finish()
		}
	})
	w.waitAcksAfter(t, time.Now(), 300, 20*time.Second)
	at := time.Now()
	drained := make(chan CLIResult, 1)
	go func() { drained <- f.c.CLI("hosts-drain", x) }()
	f.agents[y].KillHost()
	f.agents[z].KillHost()
	res := <-drained
	if res.Code != 0 {
		t.Fatalf("hosts-drain: %s", res)
	}
	if !strings.Contains(res.Stdout, s1.Members[0].ID+" stays") {
		t.Errorf("hosts-drain does not say the starter stays: %s", res.Stdout)
	}

	// The killed starter: unknown, degraded, never replaced.
	testutil.WaitFor(t, 20*time.Second, func() error {
		a := addonOfApp(t, f, "heal-s2")
		if st := a.Members[0].State; st != "unknown (host down)" {
			return fmt.Errorf("member %s is %q", a.Members[0].ID, st)
		}
		if !strings.HasPrefix(a.Health, "degraded") {
			return fmt.Errorf("health %q", a.Health)
		}
		return nil
	})

	// The business addon heals, per addon, whatever the starters do.
	f.waitRedundantOff(healAfter+30*time.Second, x, y, z)
	healed := time.Since(at)
	w.waitAcksAfter(t, time.Now(), 100, 30*time.Second)
	acks, failed, _ := w.finish()
	stopped = true
	c := redis.NewClient(f.opt)
	defer c.Close()
	if lost := missing(t, c, "heal:", acks); len(lost) > 0 {
		t.Errorf("%d of %d acknowledged writes lost", len(lost), len(acks))
	}
	gap, _ := longestGap(acks, at)
	t.Logf("business addon fully redundant %s after the faults (heal-after %s); %d writes, %d failed, longest stall %s",
		healed.Round(100*time.Millisecond), healAfter, len(acks), failed, gap.Round(time.Millisecond))

	// The starters were never switched over or replaced.
	for _, app := range []string{"heal-s1", "heal-s2"} {
		for _, o := range opsOf(t, f, app) {
			if o.Kind == api.OpReplaceMember {
				t.Errorf("%s got a replace operation: %+v", app, o)
			}
		}
	}
	// The drained starter serves its data where it is.
	if got, err := s1c.Get(ctx, "heal:seed").Result(); err != nil || got != "kept" {
		t.Errorf("drained starter: GET = %q, %v", got, err)
	}
	if h := addonOfApp(t, f, "heal-s1").Members[0].HostID; h != x {
		t.Errorf("drained starter moved to %s", h)
	}
	// The killed starter's host returns: it serves its data in place.
	f.agents[y].Restart()
	testutil.WaitFor(t, 60*time.Second, func() error {
		got, err := s2c.Get(ctx, "heal:seed").Result()
		if err != nil {
			return err
		}
		if got != "kept" {
			return fmt.Errorf("GET = %q", got)
		}
		if a := addonOfApp(t, f, "heal-s2"); a.Health != "ok" {
			return fmt.Errorf("health %q", a.Health)
		}
		return nil
	})
}

// TestOperationCancel: a drain move that cannot finish (no host left for a
// third sentinel) waits and says why; operations-cancel stops it with an
// account and it is not started again for the same drain; a second drain's
// stuck move is cancelled by undrain. The addon stays fully redundant.
func TestOperationCancel(t *testing.T) {
	ips := []string{"127.0.0.121", "127.0.0.122", "127.0.0.123", "127.0.0.124"}
	f := startBusiness(t, "cancel-biz", bizOpts{CoordIP: "127.0.0.120", HostIPs: ips, VIPPool: "127.0.4.0/24"})
	// Drain the hosts of two sentinels: only two ready hosts remain, and a
	// sentinel needs a host of its own.
	var drain []string
	for _, s := range membersOf(f.mustAddon(), api.RoleSentinel) {
		if len(drain) < 2 && !contains(drain, s.HostID) {
			drain = append(drain, s.HostID)
		}
	}
	waiting := func() api.Operation {
		var op api.Operation
		testutil.WaitFor(t, 90*time.Second, func() error {
			for _, o := range opsOf(t, f, f.app) {
				if o.Kind != api.OpReplaceMember || o.State.Finished() {
					continue
				}
				if i := o.CurrentStep(); i < len(o.Steps) && strings.Contains(o.Steps[i].Detail, "waiting for capacity") {
					op = o
					return nil
				}
			}
			return fmt.Errorf("no move waiting for capacity yet")
		})
		return op
	}
	for _, h := range drain {
		if res := f.c.CLI("hosts-drain", h); res.Code != 0 {
			t.Fatalf("hosts-drain %s: %s", h, res)
		}
	}
	op := waiting()
	res := f.c.CLI("operations-cancel", op.ID)
	if res.Code != 0 || !strings.Contains(res.Stdout, "next safe point") {
		t.Fatalf("operations-cancel: %s", res)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		for _, o := range opsOf(t, f, f.app) {
			if o.ID == op.ID {
				if o.State != api.OpCancelled || !strings.Contains(o.Error, "cancelled by an operator; done: demote primary") {
					return fmt.Errorf("operation %s: %s (%s)", o.ID, o.State, o.Error)
				}
				return nil
			}
		}
		return fmt.Errorf("operation %s gone", op.ID)
	})
	if res := f.c.CLI("operations-cancel", op.ID); res.Code == 0 || !strings.Contains(res.Stderr, "already cancelled") {
		t.Errorf("second cancel: %s", res)
	}
	if res := f.c.CLI("operations-cancel", "op-nope"); res.Code == 0 || !strings.Contains(res.Stderr, "no operation op-nope") {
		t.Errorf("cancel of an unknown operation: %s", res)
	}
	// Not started again for the same drain (the engine passes every
	// 500 ms: several passes in 3 s).
	restarted := testutil.Poll(3*time.Second, func() error {
		for _, o := range opsOf(t, f, f.app) {
			if o.Kind == api.OpReplaceMember && o.Target == op.Target && o.ID != op.ID {
				return nil
			}
		}
		return fmt.Errorf("not started again")
	})
	if restarted == nil {
		t.Fatalf("the cancelled move of %s was started again", op.Target)
	}
	// Undrain cancels the moves of a drain.
	for _, h := range drain {
		if res := f.c.CLI("hosts-undrain", h); res.Code != 0 {
			t.Fatalf("hosts-undrain %s: %s", h, res)
		}
	}
	for _, h := range drain {
		if res := f.c.CLI("hosts-drain", h); res.Code != 0 {
			t.Fatalf("hosts-drain %s: %s", h, res)
		}
	}
	op2 := waiting()
	// Undrain the moved member's host first: the undrain of the other one
	// would give the move room to finish.
	var first string
	for _, m := range f.mustAddon().Members {
		if m.ID == op2.Target {
			first = m.HostID
		}
	}
	if !contains(drain, first) {
		t.Fatalf("move %s of %s is not off a drained host (%s)", op2.ID, op2.Target, first)
	}
	res = f.c.CLI("hosts-undrain", first)
	if res.Code != 0 || !strings.Contains(res.Stdout, "drain move "+op2.ID+" cancelled") {
		t.Errorf("undrain of %s does not cancel %s: %s", first, op2.ID, res)
	}
	for _, h := range drain {
		if h != first {
			if res := f.c.CLI("hosts-undrain", h); res.Code != 0 {
				t.Fatalf("hosts-undrain %s: %s", h, res)
			}
		}
	}
	testutil.WaitFor(t, 60*time.Second, func() error {
		for _, o := range opsOf(t, f, f.app) {
			if !o.State.Finished() {
				return fmt.Errorf("operation %s (%s) still %s", o.ID, o.Kind, o.State)
			}
		}
		return f.healthy()
	})
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// waitRedundantOff waits until the addon is fully redundant with no member
// on any of the hosts gone and no replace operation unfinished.
func (f *bizFleet) waitRedundantOff(timeout time.Duration, gone ...string) {
	f.t.Helper()
	testutil.WaitFor(f.t, timeout, func() error {
		a, err := f.addon()
		if err != nil {
			return err
		}
		for _, m := range a.Members {
			if contains(gone, m.HostID) {
				return fmt.Errorf("member %s still on host %s", m.ID, m.HostID)
			}
		}
		return f.healthy()
	})
}
