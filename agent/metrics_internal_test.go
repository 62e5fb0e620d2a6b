package agent

import (
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// parseRedisInfo against INFO of a real redis 7.0.15 primary with one
// replica and of that replica (testdata/info-redis7-*.txt, captured with
// redis-cli; CRLF line ends as the server sends them).
func TestParseRedisInfo(t *testing.T) {
	tests := []struct {
		file string
		want redisInfo
	}{
		{"testdata/info-redis7-primary.txt", redisInfo{
			connectedClients: 1, opsPerSec: 3, commandsProcessed: 11, usedMemory: 1108928, keys: 5,
			role: "master", connectedReplicas: 1, masterReplOffset: 186,
			replicas: []replicaOffset{{addr: "127.0.0.1:17002", offset: 0}},
		}},
		{"testdata/info-redis7-replica.txt", redisInfo{
			connectedClients: 2, opsPerSec: 9, commandsProcessed: 42, usedMemory: 1063824, keys: 5,
			role: "slave", masterReplOffset: 186, masterLinkUp: true,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			got := parseRedisInfo(string(b))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseRedisInfo:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	// Malformed lines are skipped, not fatal.
	got := parseRedisInfo("db0:keys=x\r\nslave0:ip=1.2.3.4\r\ndbx:keys=3\r\nslaves:9\r\nrole:master\r\n")
	if got.keys != 0 || len(got.replicas) != 0 || got.role != "master" {
		t.Errorf("malformed lines: %+v", got)
	}
	got = parseRedisInfo("evicted_keys:17\nslave1:ip=10.0.0.2,port=6380,state=online,offset=900,lag=0\nmaster_repl_offset:1000\n")
	if got.evictedKeys != 17 || len(got.replicas) != 1 || got.replicas[0] != (replicaOffset{"10.0.0.2:6380", 900}) || got.masterReplOffset != 1000 {
		t.Errorf("evictions and replica offsets: %+v", got)
	}
}

// observe counts a member's new runs (new pid or start time), not reports
// of the same run nor reports while it is down, and forgets members that
// are gone.
func TestObserveCountsRestarts(t *testing.T) {
	a := &Agent{cfg: Config{HostID: "h1", HeartbeatInterval: Duration(time.Second)}}
	m := newAgentMetrics(a)
	t0 := time.Unix(1000, 0)
	report := func(pid int, started time.Time) api.HeartbeatRequest {
		return api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{{MemberID: "m1", Pid: pid, StartedAt: started}}}
	}
	steps := []struct {
		req  api.HeartbeatRequest
		want uint64
	}{
		{report(10, t0), 0},
		{report(10, t0), 0},
		{report(0, time.Time{}), 0},             // down: not a run
		{report(11, t0.Add(time.Minute)), 1},    // back with a new pid
		{report(11, t0.Add(2*time.Minute)), 2},  // same pid, new start (pid reuse)
		{report(11, t0.Add(2*time.Minute)), 2},  // same run
		{api.HeartbeatRequest{HostID: "h1"}, 0}, // removed: forgotten
		{report(12, t0.Add(3*time.Minute)), 0},  // assigned again: a new series
		{report(13, t0.Add(4*time.Minute)), 1},
	}
	for i, s := range steps {
		m.observe(s.req, time.Now())
		if got := m.restarts["m1"]; got != s.want {
			t.Fatalf("step %d: restarts %d, want %d", i, got, s.want)
		}
	}
}
