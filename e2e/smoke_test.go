package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

// TestStarterSmoke is the shortest path a new user takes: one coordinator,
// one agent, addons-add through the CLI, then the URL from env works.
func TestStarterSmoke(t *testing.T) {
	c := StartCoordinator(t, "c1", "127.0.0.61", CoordinatorOpts{Bootstrap: true})
	StartAgent(t, c, "h1", "127.0.0.62", AgentOpts{})
	if res := c.CLI("addons-add", "--app", "smoke-app", "redis", "redis-starter-256"); res.Code != 0 {
		t.Fatalf("addons-add: %s", res)
	}
	WaitForAddonStatus(t, c, "smoke-app", api.AddonRunning, 60*time.Second)
	opt, err := redis.ParseURL(RedisURL(t, c, "smoke-app"))
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rc.Set(ctx, "hello", "world", 0).Err(); err != nil {
		t.Fatalf("SET through REDIS_URL: %v", err)
	}
	if v, err := rc.Get(ctx, "hello").Result(); err != nil || v != "world" {
		t.Fatalf("GET = %q, %v", v, err)
	}
}
