package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

// TestAgentFollowsNewLeader: an agent configured with every coordinator
// member, talking first to the leader, keeps working when that leader is
// killed: it fails over to another member, which forwards to the new
// leader, and an addon added after the kill is provisioned on its host.
func TestAgentFollowsNewLeader(t *testing.T) {
	cs := StartCluster(t, 3)
	leader := WaitForLeader(t, 10*time.Second, cs...)
	peers := []string{leader.HTTPAddr}
	var survivors []*Coordinator
	for _, c := range cs {
		if c != leader {
			peers = append(peers, c.HTTPAddr)
			survivors = append(survivors, c)
		}
	}
	StartAgent(t, leader, "h1", "127.0.0.91", AgentOpts{}, peers...)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := leader.Client().AddonCreate(ctx, api.AddonCreateRequest{App: "before-kill", Type: "redis", Plan: "redis-starter-256"}); err != nil {
		t.Fatal(err)
	}
	WaitForAddonStatus(t, leader, "before-kill", api.AddonRunning, time.Minute)

	leader.Kill()
	next := WaitForLeader(t, 10*time.Second, survivors...)
	cl := next.Client()
	cl.RetryFor = 10 * time.Second
	if _, err := cl.AddonCreate(ctx, api.AddonCreateRequest{App: "after-kill", Type: "redis", Plan: "redis-starter-256"}); err != nil {
		t.Fatal(err)
	}
	WaitForAddonStatus(t, next, "after-kill", api.AddonRunning, time.Minute)
	WaitForHostState(t, next, "h1", api.HostReady, 10*time.Second)
	for _, app := range []string{"before-kill", "after-kill"} {
		opt, err := redis.ParseURL(RedisURL(t, next, app))
		if err != nil {
			t.Fatal(err)
		}
		rc := redis.NewClient(opt)
		err = rc.Ping(ctx).Err()
		rc.Close()
		if err != nil {
			t.Fatalf("%s: PING through its URL after the leader change: %v", app, err)
		}
	}
}
