package agent_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// TestEngineUpgradeOfAMember: a starter on redis 7.0.15 whose assignment
// moves to valkey 8.0.1 is replaced (SIGTERM: redis saves on its way out)
// and comes back on valkey with every key, from the same data dir. Then
// assigned stopped: its process and container go, its data stays, it is
// reported stopped and not restarted; assigned again without stopped, it
// runs again with its keys.
func TestEngineUpgradeOfAMember(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.start(t)
	as := h.starter(t, "up1")
	coord.assign(h.id, as)
	c := redisClient(t, as)
	coord.waitMember(t, h.id, as.MemberID, 60*time.Second, isState(api.MemberRunning))
	ctx := ctxT(t)
	pipe := c.Pipeline()
	for i := 0; i < 1000; i++ {
		pipe.Set(ctx, "k"+strconv.Itoa(i), i, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(as.Address, strconv.Itoa(as.Port))
	server := func(want api.Engine, version string, keys int64) func() error {
		return func() error {
			n, err := redisctl.ReadNode(context.Background(), addr, as.FleetPassword.Reveal())
			if err != nil {
				return err
			}
			if n.Server.Engine != want || n.Server.Version != version || n.Keys != keys || n.Persistence.Loading {
				return fmt.Errorf("runs %s with %d keys (loading %v)", n.Server, n.Keys, n.Persistence.Loading)
			}
			return nil
		}
	}
	testutil.WaitFor(t, 10*time.Second, server(api.EngineRedis, "7.0.15", 1000))

	up := as
	up.Engine, up.Version, up.Image = api.EngineValkey, "8.0.1", api.ImageValkey8
	start := time.Now()
	coord.assign(h.id, up)
	testutil.WaitFor(t, 60*time.Second, server(api.EngineValkey, "8.0.1", 1000))
	t.Logf("redis 7.0.15 -> valkey 8.0.1 with 1000 keys in %s", time.Since(start).Round(time.Millisecond))
	coord.waitMember(t, h.id, as.MemberID, 20*time.Second, isState(api.MemberRunning))

	stopped := up
	stopped.Stopped = true
	coord.assign(h.id, stopped)
	m := coord.waitMember(t, h.id, as.MemberID, 30*time.Second, isState(api.MemberStopped))
	if !strings.Contains(m.Detail, "data is kept") {
		t.Errorf("stopped detail %q", m.Detail)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("a stopped member still accepts connections")
	}
	// Its container goes once the stop is through (reported stopped a
	// moment before, on a loaded machine).
	testutil.WaitFor(t, 10*time.Second, func() error {
		sts, err := h.agent.Runtime().List(ctx)
		if err != nil {
			return err
		}
		for _, st := range sts {
			if st.ID == as.MemberID {
				return fmt.Errorf("the stopped member's container is still there: %+v", st)
			}
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(h.cfg.DataDir, "members", as.MemberID, "dump.rdb")); err != nil {
		t.Fatalf("the stopped member's data: %v", err)
	}
	// Not restarted while it stays stopped (a heartbeat or two later).
	coord.waitMember(t, h.id, as.MemberID, 5*time.Second, func(m api.MemberStatus) error {
		if m.State != api.MemberStopped || m.Pid != 0 {
			return fmt.Errorf("want stopped, no pid")
		}
		return nil
	})

	coord.assign(h.id, up)
	testutil.WaitFor(t, 60*time.Second, server(api.EngineValkey, "8.0.1", 1000))
	coord.waitMember(t, h.id, as.MemberID, 20*time.Second, isState(api.MemberRunning))
}
