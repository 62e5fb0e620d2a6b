package redisctl

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// KillAppClients closes every connection of the app's user ("default") on
// the member at addr (CLIENT KILL USER default), logged in with the
// addon's fleet credential, and returns how many it closed. The fleet's
// own connections (replication, sentinels, the agent) are other users and
// stay. The kernel entrypoint calls it on a demoted primary, so its
// clients see the connection end at once and reconnect to the new one.
func KillAppClients(ctx context.Context, addr, password string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, password))
	defer c.Close()
	n, err := c.Do(ctx, "CLIENT", "KILL", "USER", "default").Int64()
	if err != nil {
		return 0, fmt.Errorf("%s: CLIENT KILL USER default: %w", addr, err)
	}
	return n, nil
}
