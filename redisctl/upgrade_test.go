package redisctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// INFO server as the catalog's engines answer it (trimmed).
const (
	infoRedis7 = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\nos:Linux\r\nrun_id:abc\r\n"
	infoValkey = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\nredis_git_sha1:00000000\r\nserver_mode:sentinel\r\n"
	infoRedis8 = "# Server\r\nredis_version:8.0.2\r\nredis_mode:standalone\r\n"
)

func TestParseServer(t *testing.T) {
	tests := []struct {
		name, info string
		want       Server
		err        string
	}{
		{"redis 7", infoRedis7, Server{api.EngineRedis, "7.0.15", "standalone"}, ""},
		{"valkey 8 (redis_version stays 7.2.4)", infoValkey, Server{api.EngineValkey, "8.0.1", "sentinel"}, ""},
		{"redis 8", infoRedis8, Server{api.EngineRedis, "8.0.2", "standalone"}, ""},
		{"valkey without its version", "server_name:valkey\r\nredis_version:7.2.4\r\n", Server{}, "without valkey_version"},
		{"nothing", "# Server\r\n", Server{}, "no redis_version"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseServer(tc.info)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	n, err := ParseKeys("# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n")
	if err != nil || n != 15 {
		t.Fatalf("keys %d, %v; want 15 (every database)", n, err)
	}
	if n, err := ParseKeys("# Keyspace\r\n"); err != nil || n != 0 {
		t.Fatalf("empty keyspace: %d, %v", n, err)
	}
	if _, err := ParseKeys("db0:keys=x,expires=0\r\n"); err == nil {
		t.Fatal("a bad count parsed")
	}
}

func TestParsePersistence(t *testing.T) {
	p, err := ParsePersistence("loading:0\r\nrdb_bgsave_in_progress:1\r\nrdb_last_bgsave_status:ok\r\nrdb_saves:7\r\n")
	if err != nil || p != (Persistence{BGSaveInProgress: true, Saves: 7, LastBGSaveOK: true}) {
		t.Fatalf("%+v, %v", p, err)
	}
	p, err = ParsePersistence("loading:1\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:err\r\n")
	if err != nil || !p.Loading || p.LastBGSaveOK || p.Saves != 0 {
		t.Fatalf("%+v, %v", p, err)
	}
	if _, err := ParsePersistence("# Persistence\r\n"); err == nil {
		t.Fatal("no fields parsed")
	}
}

func TestWantJudge(t *testing.T) {
	valkey := Server{Engine: api.EngineValkey, Version: "8.0.1"}
	master := Node{Server: valkey, Replication: Replication{Role: RoleMaster, Offset: 5000}, Persistence: Persistence{LastBGSaveOK: true}, Keys: 100}
	replica := Node{Server: valkey, Replication: Replication{Role: RoleReplica, Offset: 4000, MasterHost: "127.0.0.1", MasterPort: 7000, LinkStatus: "up"}, Keys: 100}
	asMaster := Want{Engine: api.EngineValkey, Version: "8.0.1", Master: true, MinKeys: 100}
	asReplica := Want{Engine: api.EngineValkey, Version: "8.0.1", ReplicaOf: "127.0.0.1:7000", InSyncBytes: 1 << 20, MinKeys: -1}
	with := func(n Node, f func(*Node)) Node { f(&n); return n }
	tests := []struct {
		name    string
		want    Want
		node    Node
		primary int64
		why     string
	}{
		{"master with its data", asMaster, master, 0, ""},
		{"still the old version", asMaster, with(master, func(n *Node) { n.Server = Server{Engine: api.EngineRedis, Version: "7.0.15"} }), 0, "runs redis 7.0.15, want valkey 8.0.1"},
		{"another minor", asMaster, with(master, func(n *Node) { n.Server.Version = "8.1.1" }), 0, "runs valkey 8.1.1, want valkey 8.0.1"},
		{"loading", asMaster, with(master, func(n *Node) { n.Persistence.Loading = true }), 0, "still loading its data"},
		{"fewer keys than before", asMaster, with(master, func(n *Node) { n.Keys = 40 }), 0, "holds 40 keys, 100 before the upgrade"},
		{"more keys than before", asMaster, with(master, func(n *Node) { n.Keys = 140 }), 0, ""},
		{"a replica where a master is wanted", asMaster, replica, 0, "answers as slave, want a master"},
		{"replica in sync", asReplica, replica, 4100, ""},
		{"replica behind", asReplica, replica, 4000 + 2<<20, "is 2097152 bytes behind its primary"},
		{"replica syncing", asReplica, with(replica, func(n *Node) { n.Replication.LinkStatus = "down" }), 4000, "its link to 127.0.0.1:7000 is down (syncing)"},
		{"replica of another", asReplica, with(replica, func(n *Node) { n.Replication.MasterPort = 7001 }), 4000, "follows 127.0.0.1:7001, want 127.0.0.1:7000"},
		{"a master where a replica is wanted", asReplica, master, 5000, "answers as master, want a replica of 127.0.0.1:7000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.want.Judge(tc.node, tc.primary); got != tc.why {
				t.Fatalf("judge = %q; want %q", got, tc.why)
			}
		})
	}
}

// TestRealSnapshotAndCheck: on real redis-server processes, Snapshot takes
// a new snapshot (rdb_saves moves, the RDB file holds every key: a
// restart without AOF has them), also while another save is scheduled;
// CheckNode judges a primary and its replica; ReadNode counts every
// database's keys.
func TestRealSnapshotAndCheck(t *testing.T) {
	primary := startRedis(t, ip1, "")
	replica := startRedis(t, ip2, primary)
	ctx := context.Background()
	c := redis.NewClient(MemberOptions(primary, testPassword))
	defer c.Close()
	for db := 0; db < 2; db++ {
		pipe := c.Pipeline()
		pipe.Select(ctx, db)
		for i := 0; i < 500; i++ {
			pipe.Set(ctx, fmt.Sprintf("k%d:%d", db, i), i, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n, err := ReadNode(ctx, primary, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	if n.Keys != 1000 || n.Server.Engine != api.EngineRedis || n.Replication.Role != RoleMaster {
		t.Fatalf("node %+v; want redis, a master with 1000 keys", n)
	}
	before := n.Persistence.Saves
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := Snapshot(sctx, primary, testPassword); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	n, err = ReadNode(ctx, primary, testPassword)
	if err != nil || n.Persistence.Saves <= before || n.Persistence.BGSaveInProgress {
		t.Fatalf("after snapshot: %+v, %v (saves before %d)", n.Persistence, err, before)
	}
	// Twice in a row: the second waits for a save of its own.
	if err := Snapshot(sctx, primary, testPassword); err != nil {
		t.Fatalf("second snapshot: %v", err)
	}
	if m, _ := ReadNode(ctx, primary, testPassword); m.Persistence.Saves < n.Persistence.Saves+1 {
		t.Fatalf("second snapshot did not save: %d -> %d", n.Persistence.Saves, m.Persistence.Saves)
	}

	want := Want{Engine: n.Server.Engine, Version: n.Server.Version, ReplicaOf: primary, InSyncBytes: 1 << 20, MinKeys: -1}
	testutil.WaitFor(t, 10*time.Second, func() error {
		_, err := CheckNode(ctx, replica, testPassword, want)
		return err
	})
	if _, err := CheckNode(ctx, replica, testPassword, Want{Engine: api.EngineValkey, Version: "8.0.1", ReplicaOf: primary, MinKeys: -1}); err == nil ||
		!strings.Contains(err.Error(), "runs redis "+n.Server.Version+", want valkey 8.0.1") {
		t.Fatalf("check of another version: %v", err)
	}
	if _, err := CheckNode(ctx, primary, testPassword, Want{Engine: n.Server.Engine, Version: n.Server.Version, Master: true, MinKeys: 1001}); err == nil ||
		!strings.Contains(err.Error(), "holds 1000 keys, 1001 before") {
		t.Fatalf("check of a key count: %v", err)
	}
	if _, err := CheckNode(ctx, primary, testPassword, Want{Engine: n.Server.Engine, Version: n.Server.Version, Master: true, MinKeys: 1000}); err != nil {
		t.Fatalf("check of the primary: %v", err)
	}
	if err := Snapshot(sctx, deadAddr(t, ip3), testPassword); err == nil {
		t.Fatal("a snapshot of a dead node succeeded")
	}
}

func TestRealSentinelServer(t *testing.T) {
	b := startBusiness(t, "upg")
	s, err := SentinelServer(context.Background(), b.sentinels[0], testPassword)
	if err != nil || s.Engine != api.EngineRedis || s.Mode != "sentinel" || s.Version == "" {
		t.Fatalf("sentinel server %+v, %v", s, err)
	}
}

func TestPromotable(t *testing.T) {
	const r = "127.0.0.2:7000"
	tests := []struct {
		name  string
		peers []Peer
		want  bool
	}{
		{"healthy", []Peer{{Addr: r, Flags: []string{"slave"}, LinkStatus: "ok"}}, true},
		{"its link down as of the last INFO (just restarted)", []Peer{{Addr: r, Flags: []string{"slave"}, LinkStatus: "err"}}, false},
		{"down", []Peer{{Addr: r, Flags: []string{"slave", "s_down"}, LinkStatus: "ok"}}, false},
		{"disconnected", []Peer{{Addr: r, Flags: []string{"slave", "disconnected"}, LinkStatus: "ok"}}, false},
		{"another replica", []Peer{{Addr: "127.0.0.3:7000", Flags: []string{"slave"}, LinkStatus: "ok"}}, false},
		{"none", nil, false},
	}
	for _, tc := range tests {
		if got := Promotable(tc.peers, r); got != tc.want {
			t.Errorf("%s: %v; want %v", tc.name, got, tc.want)
		}
	}
}
