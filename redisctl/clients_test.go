package redisctl

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestRealKillAppClients: the app's connections are closed, the fleet's
// stay.
func TestRealKillAppClients(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t, ip1, "")
	app := redis.NewClient(appOptions(addr))
	defer app.Close()
	if err := app.Ping(ctx).Err(); err != nil {
		t.Fatalf("app ping: %v", err)
	}
	fleet := redis.NewClient(MemberOptions(addr, testPassword))
	defer fleet.Close()
	if err := fleet.Ping(ctx).Err(); err != nil {
		t.Fatalf("fleet ping: %v", err)
	}
	n, err := KillAppClients(ctx, addr, testPassword)
	if err != nil || n != 1 {
		t.Fatalf("KillAppClients: %d, %v; want 1 closed", n, err)
	}
	list, err := fleet.Do(ctx, "CLIENT", "LIST").Text()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	if strings.Contains(list, "user=default") {
		t.Errorf("an app connection is left: %s", list)
	}
	if err := fleet.Ping(ctx).Err(); err != nil {
		t.Errorf("the fleet's connection was closed: %v", err)
	}
	if _, err := KillAppClients(ctx, addr, "wrong"); err == nil {
		t.Error("KillAppClients with a wrong password: no error")
	}
}
