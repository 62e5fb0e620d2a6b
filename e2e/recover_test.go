package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// fleetIDs lists every addon and operation the member's cluster holds.
func fleetIDs(t testing.TB, c *Coordinator) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cl := c.Client()
	addons, err := cl.Addons(ctx, "", false)
	if err != nil {
		t.Fatalf("addons on %s: %v", c.ID, err)
	}
	ops, err := cl.Operations(ctx, "", "")
	if err != nil {
		t.Fatalf("operations on %s: %v", c.ID, err)
	}
	var ids []string
	for _, a := range addons {
		ids = append(ids, "addon "+a.ID)
	}
	for _, o := range ops {
		ids = append(ids, fmt.Sprintf("operation %s %s of %s", o.ID, o.Kind, o.AddonID))
	}
	slices.Sort(ids)
	return ids
}

// TestMembersRecoverAfterQuorumLoss is issue 15 part 3's acceptance test:
// three real coordinators, an agent knowing all three and a running
// addon; members-recover is refused on the healthy cluster; kill -9 of two
// coordinators leaves the survivor without a leader (writes refused "no
// leader"); members-recover on it shows the plan, then with --confirm
// makes it a one-member cluster that leads; every addon and operation is
// there, the addon's URL answered throughout, the agent's heartbeat
// reaches the survivor (host ready, the agent switched to it) and a new
// addon is provisioned.
func TestMembersRecoverAfterQuorumLoss(t *testing.T) {
	cs := StartCluster(t, 3)
	leader := WaitForLeader(t, 10*time.Second, cs...)
	var survivor, other *Coordinator
	for _, c := range cs {
		if c == leader {
			continue
		}
		if survivor == nil {
			survivor = c
		} else {
			other = c
		}
	}
	// The agent talks to the leader first: after the loss it has to find
	// the survivor on its own.
	agent := StartAgent(t, leader, "h1", "127.0.0.96", AgentOpts{}, leader.HTTPAddr, other.HTTPAddr, survivor.HTTPAddr)

	// A healthy cluster: refused, with or without --confirm.
	for _, args := range [][]string{{"members-recover"}, {"members-recover", "--confirm", survivor.ID}} {
		res := survivor.CLI(args...)
		if res.Code == 0 || !strings.Contains(res.Stderr, "has a leader") {
			t.Fatalf("%s on a healthy cluster: %s; want a refusal naming the leader", strings.Join(args, " "), res)
		}
	}
	t.Logf("refused on a healthy cluster: %s", strings.TrimSpace(survivor.CLI("members-recover").Stderr))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if res := leader.CLI("addons-add", "--app", "rec-before", "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	WaitForAddonStatus(t, leader, "rec-before", api.AddonRunning, time.Minute)
	opt, err := redis.ParseURL(RedisURL(t, leader, "rec-before"))
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	if err := rc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	WaitForApplied(t, 10*time.Second, survivor, LeaderAppliedIndex(t, cs...))
	before := fleetIDs(t, survivor)

	// The data path never depends on the coordinators: GET k every 50 ms
	// through the URL from now until the end.
	var (
		gets, failures atomic.Int64
		lastFailure    atomic.Value
		stop           = make(chan struct{})
		wg             sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			gctx, gcancel := context.WithTimeout(ctx, time.Second)
			v, err := rc.Get(gctx, "k").Result()
			gcancel()
			gets.Add(1)
			if err != nil || v != "v" {
				failures.Add(1)
				lastFailure.Store(fmt.Sprintf("%q, %v", v, err))
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	leader.Kill()
	other.Kill()
	killedAt := time.Now()
	t.Logf("killed %s (leader) and %s; %s survives", leader.ID, other.ID, survivor.ID)

	// Without a majority the survivor refuses writes, saying why.
	res := survivor.CLI("--timeout", "3s", "addons-add", "--app", "rec-refused", "redis", "redis-starter-256")
	if res.Code == 0 || !strings.Contains(res.Stderr, "leader") {
		t.Fatalf("addons-add without a majority: %s; want a refusal: no leader", res)
	}
	t.Logf("write without a majority: %s", strings.TrimSpace(res.Stderr))

	// The plan: nothing changes, both dead members named.
	res = survivor.CLI("members-recover")
	if res.Code == 0 || !strings.Contains(res.Stdout, leader.ID) || !strings.Contains(res.Stdout, other.ID) ||
		!strings.Contains(res.Stdout, "--confirm "+survivor.ID) {
		t.Fatalf("members-recover without --confirm: %s; want the plan naming %s and %s", res, leader.ID, other.ID)
	}
	t.Logf("plan:\n%s", res.Stdout)

	res = survivor.CLI("members-recover", "--confirm", survivor.ID)
	if res.Code != 0 || !strings.Contains(res.Stdout, "leads a one-member cluster") {
		t.Fatalf("members-recover --confirm %s: %s", survivor.ID, res)
	}
	t.Logf("recovered in %s (%s after the kill):\n%s", res.Duration.Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond), res.Stdout)
	recoveredAt := time.Now()

	var st api.ClusterStatus
	survivor.CLI("members", "--json").JSON(t, &st)
	if len(st.Members) != 1 || st.LeaderID != survivor.ID {
		t.Fatalf("members after the recovery: %+v; want %s alone, leading", st, survivor.ID)
	}
	after := fleetIDs(t, survivor)
	for _, id := range before {
		if !slices.Contains(after, id) {
			t.Errorf("%s is gone after the recovery", id)
		}
	}
	t.Logf("%d addons and operations before the loss, all present after the recovery (%d now)", len(before), len(after))

	// The agent finds the survivor on its own: its heartbeat keeps the
	// host ready, and it says it switched.
	testutil.WaitFor(t, 20*time.Second, func() error {
		data, err := os.ReadFile(agent.LogPath)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "coordinator member switched") && strings.Contains(line, survivor.HTTPAddr) {
				return nil
			}
		}
		return fmt.Errorf("agent h1 has not switched to %s yet", survivor.HTTPAddr)
	})
	WaitForHostState(t, survivor, "h1", api.HostReady, 10*time.Second)
	t.Logf("agent on %s %s after the recovery", survivor.ID, time.Since(recoveredAt).Round(time.Millisecond))

	if res := survivor.CLI("addons-add", "--app", "rec-after", "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add after the recovery: %s", res)
	}
	WaitForAddonStatus(t, survivor, "rec-after", api.AddonRunning, time.Minute)
	opt2, err := redis.ParseURL(RedisURL(t, survivor, "rec-after"))
	if err != nil {
		t.Fatal(err)
	}
	rc2 := redis.NewClient(opt2)
	defer rc2.Close()
	if err := rc2.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING rec-after through its URL: %v", err)
	}
	if n, f := gets.Load(), failures.Load(); n == 0 || f != 0 {
		t.Fatalf("rec-before's URL through the loss and the recovery: %d of %d GETs failed (last: %v)", f, n, lastFailure.Load())
	} else {
		t.Logf("rec-before's URL answered all %d GETs through the loss and the recovery", n)
	}
}
