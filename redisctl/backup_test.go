package redisctl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/internal/testutil"
)

func TestParseSaveState(t *testing.T) {
	const full = "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:1\r\nrdb_last_save_time:1796623391\r\n" +
		"rdb_last_bgsave_status:ok\r\nrdb_saves:3\r\naof_rewrite_in_progress:1\r\n"
	tests := []struct {
		name, info string
		want       SaveState
		err        string
	}{
		{"running", full, SaveState{InProgress: true, Saves: 3, LastSave: time.Unix(1796623391, 0).UTC(), LastOK: true, AOFRewriteInProgress: true}, ""},
		{"failed, loading", "loading:1\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:10\r\nrdb_last_bgsave_status:err\r\nrdb_saves:0\r\n",
			SaveState{Loading: true, LastSave: time.Unix(10, 0).UTC()}, ""},
		{"no counter (redis < 7)", "rdb_bgsave_in_progress:0\r\nrdb_last_save_time:10\r\nrdb_last_bgsave_status:ok\r\n", SaveState{}, "no rdb_saves"},
		{"bad counter", strings.Replace(full, "rdb_saves:3", "rdb_saves:x", 1), SaveState{}, "rdb_saves"},
		{"bad time", strings.Replace(full, "1796623391", "-4", 1), SaveState{}, "rdb_last_save_time"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSaveState(tc.info)
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

func TestParseKeyspaceAndQuota(t *testing.T) {
	tests := []struct {
		name  string
		info  string
		want  Keyspace
		err   string
		n     int
		quota map[int]int
	}{
		{"empty", "# Keyspace\r\n", Keyspace{}, "", 32, map[int]int{}},
		{"one db", "db0:keys=50000,expires=10,avg_ttl=0\r\n", Keyspace{0: 50000}, "", 32, map[int]int{0: 32}},
		{"skewed: a small db gets one", "db0:keys=9990,expires=0\r\ndb4:keys=10,expires=0\r\n", Keyspace{0: 9990, 4: 10}, "", 32, map[int]int{0: 31, 4: 1}},
		{"halves", "db1:keys=100,expires=0\r\ndb2:keys=100,expires=0\r\n", Keyspace{1: 100, 2: 100}, "", 32, map[int]int{1: 16, 2: 16}},
		{"fewer keys than asked", "db3:keys=2,expires=0\r\n", Keyspace{3: 2}, "", 32, map[int]int{3: 2}},
		{"no sample", "db0:keys=5,expires=0\r\n", Keyspace{0: 5}, "", 0, map[int]int{}},
		{"bad count", "db0:keys=-1,expires=0\r\n", nil, "keys", 0, nil},
		{"no count", "db0:expires=0\r\n", nil, "no keys=", 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKeyspace(tc.info)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
			if q := SampleQuota(got, tc.n); fmt.Sprint(q) != fmt.Sprint(tc.quota) {
				t.Fatalf("quota %v; want %v", q, tc.quota)
			}
		})
	}
}

func TestValueDigest(t *testing.T) {
	arr := func(s ...string) any {
		out := make([]any, len(s))
		for i, x := range s {
			out[i] = x
		}
		return out
	}
	stream := func(id string) any { return []any{[]any{id, arr("f", "v")}} }
	tests := []struct {
		name       string
		typ        string
		a, b       any
		same       bool
		errA, errB bool
	}{
		{"string", "string", "v", "v", true, false, false},
		{"strings differ", "string", "v", "w", false, false, false},
		{"a set's order does not count", "set", arr("a", "b", "c"), arr("c", "a", "b"), true, false, false},
		{"a hash's order does not count", "hash", arr("f1", "1", "f2", "2"), arr("f2", "2", "f1", "1"), true, false, false},
		{"a hash's pairing counts", "hash", arr("f1", "1", "f2", "2"), arr("f1", "2", "f2", "1"), false, false, false},
		{"a list's order counts", "list", arr("a", "b"), arr("b", "a"), false, false, false},
		{"parts are length-prefixed", "list", arr("ab", "c"), arr("a", "bc"), false, false, false},
		{"zset", "zset", arr("m", "1.5"), arr("m", "1.5"), true, false, false},
		{"stream ids count", "stream", stream("1-1"), stream("1-2"), false, false, false},
		{"module type", "ReJSON-RL", "x", "x", false, true, true},
		{"odd hash", "hash", arr("f"), arr("f"), false, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, errA := ValueDigest(tc.typ, tc.a)
			b, errB := ValueDigest(tc.typ, tc.b)
			if (errA != nil) != tc.errA || (errB != nil) != tc.errB {
				t.Fatalf("errors %v, %v", errA, errB)
			}
			if tc.errA {
				return
			}
			if (a == b) != tc.same {
				t.Fatalf("digests %s, %s; same = %v, want %v", a, b, a == b, tc.same)
			}
		})
	}
	// The type is part of the digest: a one-member set is not a one-element list.
	l, _ := ValueDigest("list", arr("a"))
	s, _ := ValueDigest("set", arr("a"))
	if l == s {
		t.Fatal("a list and a set with the same element have the same digest")
	}
}

func TestRestoreTTLAndUnchanged(t *testing.T) {
	for _, tc := range []struct {
		pttl, ttl int64
		ok        bool
	}{{-2, 0, false}, {-1, 0, true}, {0, 1, true}, {1500, 1500, true}} {
		if ttl, ok := RestoreTTL(tc.pttl); ttl != tc.ttl || ok != tc.ok {
			t.Errorf("RestoreTTL(%d) = %d, %v; want %d, %v", tc.pttl, ttl, ok, tc.ttl, tc.ok)
		}
	}
	before := []KeySample{{0, "a", "d1"}, {0, "b", "d2"}, {1, "a", "d3"}, {0, "c", ""}, {2, "gone", "d4"}}
	after := []KeySample{{0, "a", "d1"}, {0, "b", "changed"}, {1, "a", "d3"}, {0, "c", ""}, {2, "gone", ""}}
	got := Unchanged(before, after)
	if fmt.Sprint(got) != fmt.Sprint([]KeySample{{0, "a", "d1"}, {1, "a", "d3"}}) {
		t.Fatalf("unchanged %v", got)
	}
}

// client is a test's client of a member, on database db.
func dbClient(t *testing.T, addr string, db int) *redis.Client {
	t.Helper()
	o := MemberOptions(addr, testPassword)
	o.DB, o.PoolSize, o.ReadTimeout = db, 4, 10*time.Second
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// fill writes n string keys k<i> = v<i> into db 0 of addr, pipelined.
func fill(t *testing.T, addr string, db, n int, prefix string) {
	t.Helper()
	ctx := context.Background()
	c := dbClient(t, addr, db)
	for i := 0; i < n; i += 1000 {
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := i; j < min(i+1000, n); j++ {
				p.Set(ctx, fmt.Sprintf("%s%d", prefix, j), fmt.Sprintf("value-%d-%s", j, strings.Repeat("x", 100)), 0)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestRealBGSave(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primary := startRedis(t, ip1, "")
	replica := startRedis(t, ip2, primary)
	fill(t, primary, 0, 20000, "k")
	testutil.WaitFor(t, 10*time.Second, func() error {
		k, err := ReadKeyspace(ctx, Endpoint{replica, testPassword})
		if err != nil || k.Total() != 20000 {
			return fmt.Errorf("replica keyspace %v, %v", k, err)
		}
		return nil
	})
	pBefore, err := ReadSaveState(ctx, Endpoint{primary, testPassword})
	if err != nil {
		t.Fatal(err)
	}

	// Taken on the replica: its counter moves, the primary's does not.
	info, err := BGSave(ctx, replica, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	if info.After.Saves != info.Before.Saves+1 || info.Waited || !info.After.LastOK || info.After.InProgress {
		t.Fatalf("save info %+v", info)
	}
	if info.LastSave().Before(info.Before.LastSave) || info.LastSave().IsZero() {
		t.Fatalf("last save %v, before %v", info.LastSave(), info.Before.LastSave)
	}
	pAfter, err := ReadSaveState(ctx, Endpoint{primary, testPassword})
	if err != nil {
		t.Fatal(err)
	}
	if pAfter.Saves != pBefore.Saves {
		t.Fatalf("the primary saved too: %+v -> %+v", pBefore, pAfter)
	}
	var dir string
	if v, err := dbClient(t, replica, 0).ConfigGet(ctx, "dir").Result(); err != nil {
		t.Fatal(err)
	} else {
		dir = v["dir"]
	}
	if fi, err := os.Stat(filepath.Join(dir, "dump.rdb")); err != nil || fi.Size() < 100<<10 {
		t.Fatalf("dump.rdb: %v, %v", fi, err)
	}

	// A save already running is waited for, then ours follows it.
	if err := dbClient(t, replica, 0).BgSave(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	info, err = BGSave(ctx, replica, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	// The first save may have finished before BGSave looked (then ours
	// is simply the next one).
	if info.Before.Saves < 2 || info.After.Saves != info.Before.Saves+1 {
		t.Fatalf("after a running save: %+v", info)
	}
	t.Logf("second save: waited for the running one: %v, took %s", info.Waited, info.Took)

	// A save that cannot write its file is an error saying so.
	if err := os.Remove(filepath.Join(dir, "dump.rdb")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "dump.rdb"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = BGSave(ctx, replica, testPassword)
	if err == nil || !strings.Contains(err.Error(), "rdb_last_bgsave_status:err") || strings.Contains(err.Error(), testPassword) {
		t.Fatalf("failed save: %v", err)
	}
	t.Logf("failed save: %v", err)

	if _, err := BGSave(ctx, deadAddr(t, ip3), testPassword); err == nil {
		t.Fatal("BGSave of a dead address succeeded")
	}
}

// mixed writes keys of every sampled type over databases 0-4, some with a
// TTL; it returns the number of keys.
func mixed(t *testing.T, addr string) int64 {
	t.Helper()
	ctx := context.Background()
	var n int64
	for db := 0; db < 5; db++ {
		c := dbClient(t, addr, db)
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < 200*(db+1); i++ {
				k := fmt.Sprintf("db%d:%d", db, i)
				switch i % 7 {
				case 0:
					p.Set(ctx, k, "s"+k, 0)
				case 1:
					p.RPush(ctx, k, "a", "b", k)
				case 2:
					p.SAdd(ctx, k, "x", "y", k, 1, 2, 3)
				case 3:
					p.HSet(ctx, k, "f1", k, "f2", "v2")
				case 4:
					p.ZAdd(ctx, k, redis.Z{Score: 1.5, Member: "a"}, redis.Z{Score: -2, Member: k})
				case 5:
					p.XAdd(ctx, &redis.XAddArgs{Stream: k, Values: []any{"f", k}})
				case 6:
					p.Set(ctx, k, "ttl"+k, 2*time.Hour)
				}
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func TestRealSampleAndCopyKeys(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	source := startRedis(t, ip1, "")
	target := startRedis(t, ip2, "")
	targetReplica := startRedis(t, ip3, target)
	src, dst := Endpoint{source, testPassword}, Endpoint{target, testPassword}
	n := mixed(t, source)
	// A big value is not sampled; an expiring one is not either.
	big := dbClient(t, source, 0)
	if err := big.Set(ctx, "big", strings.Repeat("b", SampleMaxBytes+1), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := big.Set(ctx, "soon", "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	n += 2
	// The target's own keys must be gone after the copy.
	fill(t, target, 0, 500, "old")
	fill(t, target, 4, 500, "old")

	sample, err := SampleKeys(ctx, src, 32)
	if err != nil {
		t.Fatal(err)
	}
	dbs := map[int]bool{}
	for _, s := range sample {
		dbs[s.DB] = true
		if s.Key == "big" || s.Key == "soon" || s.Digest == "" {
			t.Fatalf("sampled %+v", s)
		}
	}
	if len(sample) < 25 || len(dbs) != 5 {
		t.Fatalf("%d samples over databases %v", len(sample), dbs)
	}
	again, err := DigestKeys(ctx, src, sample)
	if err != nil {
		t.Fatal(err)
	}
	if u := Unchanged(sample, again); len(u) != len(sample) {
		t.Fatalf("%d of %d samples unchanged on an idle server", len(u), len(sample))
	}

	st, err := CopyKeys(ctx, src, dst, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != n || st.Skipped != 0 || !st.Flushed {
		t.Fatalf("copied %+v; want %d keys, flushed", st, n)
	}
	ks, err := ReadKeyspace(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := ReadKeyspace(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ks) != fmt.Sprint(kd) {
		t.Fatalf("keyspace: source %v, target %v", ks, kd)
	}
	// Every key, not only the sample, has the same value.
	for db := 0; db < 5; db++ {
		var all []KeySample
		iter := dbClient(t, source, db).Scan(ctx, 0, "*", 1000).Iterator()
		for iter.Next(ctx) {
			all = append(all, KeySample{DB: db, Key: iter.Val()})
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		a, err := DigestKeys(ctx, src, all)
		if err != nil {
			t.Fatal(err)
		}
		b, err := DigestKeys(ctx, dst, all)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("db %d differs after the copy", db)
		}
	}
	if v, err := dbClient(t, target, 0).Get(ctx, "big").Result(); err != nil || len(v) != SampleMaxBytes+1 {
		t.Fatalf("big value: %d bytes, %v", len(v), err)
	}
	ttl, err := dbClient(t, target, 1).TTL(ctx, "db1:6").Result()
	if err != nil || ttl < time.Hour || ttl > 2*time.Hour {
		t.Fatalf("ttl kept: %v, %v", ttl, err)
	}
	if ttl, err := dbClient(t, target, 0).TTL(ctx, "db0:0").Result(); err != nil || ttl != -1 {
		t.Fatalf("persistent key: ttl %v, %v", ttl, err)
	}
	// The target's replica follows.
	testutil.WaitFor(t, 10*time.Second, func() error {
		kr, err := ReadKeyspace(ctx, Endpoint{targetReplica, testPassword})
		if err != nil || fmt.Sprint(kr) != fmt.Sprint(ks) {
			return fmt.Errorf("replica keyspace %v, %v; want %v", kr, err, ks)
		}
		return nil
	})
	got, err := DigestKeys(ctx, Endpoint{targetReplica, testPassword}, sample)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(sample) {
		t.Fatalf("replica's sample %v; want %v", got, sample)
	}

	// Into a replica: refused before anything changed.
	if st, err := CopyKeys(ctx, src, Endpoint{targetReplica, testPassword}, 0); err == nil || !strings.Contains(err.Error(), "READONLY") || st.Flushed {
		t.Fatalf("copy into a replica: %v (flushed %v)", err, st.Flushed)
	}
	if _, err := CopyKeys(ctx, src, src, 0); err == nil {
		t.Fatal("copy of a server into itself")
	}
}
