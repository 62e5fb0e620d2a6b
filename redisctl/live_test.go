package redisctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

func TestRealMember(t *testing.T) {
	ctx := context.Background()
	a := startRedis(t, ip1, "")
	b := startRedis(t, ip2, "")

	err := Ping(ctx, a, "wrong-"+testPassword)
	if err == nil || strings.Contains(err.Error(), testPassword) {
		t.Errorf("ping with a wrong password: %v", err)
	}
	start := time.Now()
	if err := Ping(ctx, deadAddr(t, ip3), testPassword); err == nil {
		t.Error("ping of a closed port: no error")
	}
	if d := time.Since(start); d > MemberDialTimeout {
		t.Errorf("ping of a closed port took %v", d)
	}
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	<-short.Done()
	if err := Ping(short, a, testPassword); err == nil {
		t.Error("ping with an expired ctx: no error")
	}
	cancel()

	r, err := GetReplication(ctx, a, testPassword)
	if err != nil || !r.IsMaster() || len(r.Replicas) != 0 {
		t.Fatalf("replication of a lone redis: %+v, %v", r, err)
	}

	if err := ReplicaOf(ctx, b, testPassword, a); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := GetReplication(ctx, b, testPassword)
		if err != nil {
			return err
		}
		if r.Role != RoleReplica || r.Master() != a || r.LinkStatus != "up" {
			return fmt.Errorf("b: %+v", r)
		}
		p, err := GetReplication(ctx, a, testPassword)
		if err != nil {
			return err
		}
		if len(p.Replicas) != 1 || p.Replicas[0].Addr() != b || p.Replicas[0].State != "online" {
			return fmt.Errorf("a's replicas: %+v", p.Replicas)
		}
		return nil
	})
	if err := Demote(ctx, b, testPassword, "nonsense"); err == nil || !strings.Contains(err.Error(), `"nonsense"`) {
		t.Errorf("demote to a bad address: %v", err)
	}
	if err := PromoteNoOne(ctx, b, testPassword); err != nil {
		t.Fatal(err)
	}
	if r, err := GetReplication(ctx, b, testPassword); err != nil || !r.IsMaster() {
		t.Errorf("b after REPLICAOF NO ONE: %+v, %v", r, err)
	}
}

func TestRealSettings(t *testing.T) {
	ctx := context.Background()
	addr := startRedis(t, ip1, "")
	c := redis.NewClient(MemberOptions(addr, testPassword))
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	// redis's own defaults (appendfsync everysec, other save rules, no
	// maxmemory) are not what the settings say.
	err := CheckSettings(ctx, addr, testPassword, api.DefaultSettings(), 32)
	if err == nil || !strings.Contains(err.Error(), `appendfsync is "everysec", want "always"`) || !strings.Contains(err.Error(), `maxmemory is "0", want "32mb"`) {
		t.Errorf("CheckSettings on defaults: %v", err)
	}
	for _, step := range []struct {
		s    api.Settings
		mb   int
		sent []string // parameters set
	}{
		{api.DefaultSettings(), 32, []string{"appendfsync", "save", "maxmemory"}},
		{api.Settings{Persistence: api.PersistenceAOF, CacheMode: true}, 32, []string{"appendonly", "maxmemory-policy"}},
		{api.Settings{Persistence: api.PersistenceAOF, CacheMode: true}, 64, []string{"maxmemory"}},
		{api.DefaultSettings(), 64, []string{"appendonly", "maxmemory-policy"}},
		{api.DefaultSettings(), 64, nil},
	} {
		cmds, err := ApplySettings(ctx, c, step.s, step.mb)
		if err != nil {
			t.Fatalf("apply %+v %d MB: %v", step.s, step.mb, err)
		}
		var sent []string
		for _, cmd := range cmds {
			sent = append(sent, cmd[2])
		}
		if !slices.Equal(sent, step.sent) {
			t.Errorf("apply %+v %d MB set %v, want %v", step.s, step.mb, sent, step.sent)
		}
		if err := CheckSettings(ctx, addr, testPassword, step.s, step.mb); err != nil {
			t.Errorf("CheckSettings after apply %+v: %v", step.s, err)
		}
		vals, err := ConfigValues(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		got, mb, err := FromConfig(vals)
		if err != nil || got != step.s || mb != step.mb {
			t.Errorf("FromConfig after apply %+v %d MB = %+v %d MB, %v", step.s, step.mb, got, mb, err)
		}
		if step.s.Persistence == api.PersistenceAOF {
			testutil.WaitFor(t, 10*time.Second, func() error {
				info, err := c.Info(ctx, "persistence").Result()
				if err != nil {
					return err
				}
				for _, want := range []string{"aof_enabled:1", "aof_rewrite_in_progress:0", "aof_rewrite_scheduled:0", "aof_last_bgrewrite_status:ok"} {
					if !strings.Contains(info, want+"\r\n") {
						return fmt.Errorf("no %s yet", want)
					}
				}
				return nil
			})
		}
	}
	if got := c.Get(ctx, "k").Val(); got != "v" {
		t.Errorf("GET k = %q after the changes", got)
	}
	if err := CheckSettings(ctx, deadAddr(t, ip2), testPassword, api.DefaultSettings(), 64); err == nil {
		t.Error("CheckSettings of a closed port: no error")
	}
}

func TestRealSentinel(t *testing.T) {
	ctx := context.Background()
	const name = "redisctl-sentinel"
	b := startBusiness(t, name)
	dead1, dead2 := deadAddr(t, ip3), deadAddr(t, ip3)

	for _, s := range b.sentinels {
		if got, err := MasterAddr(ctx, s, testPassword, name); err != nil || got != b.primary {
			t.Errorf("MasterAddr(%s) = %s, %v; want %s", s, got, err, b.primary)
		}
	}
	if _, err := MasterAddr(ctx, b.sentinels[0], testPassword, "no-such-addon"); err == nil || !strings.Contains(err.Error(), `no master named "no-such-addon"`) {
		t.Errorf("MasterAddr of an unknown name: %v", err)
	}

	addr, votes, err := AskMajority(ctx, b.sentinels, testPassword, name)
	if err != nil || addr != b.primary || votes != 3 {
		t.Errorf("AskMajority(3 live) = %s, %d, %v", addr, votes, err)
	}
	addr, votes, err = AskMajority(ctx, append(slices.Clone(b.sentinels), dead1, dead2), testPassword, name)
	if err != nil || addr != b.primary || votes != 3 {
		t.Errorf("AskMajority(3 live of 5) = %s, %d, %v", addr, votes, err)
	}
	start := time.Now()
	_, _, err = AskMajority(ctx, []string{b.sentinels[0], dead1, dead2}, testPassword, name)
	if !errors.Is(err, ErrNoMajority) || !strings.Contains(err.Error(), "answers: "+b.primary+" (1)") ||
		!strings.Contains(err.Error(), "unreachable: sentinel "+dead1) || !strings.Contains(err.Error(), dead2) {
		t.Errorf("AskMajority(1 live of 3): %v", err)
	}
	if d := time.Since(start); d > 2*SentinelTimeout {
		t.Errorf("AskMajority with dead sentinels took %v (asked at once?)", d)
	}
	if _, _, err := AskMajority(ctx, nil, testPassword, name); !errors.Is(err, ErrNoMajority) {
		t.Errorf("AskMajority of none: %v", err)
	}

	// RESET: the sentinel forgets, then rediscovers the other sentinels
	// (the replica too, but only at its next INFO of the master, up to 10 s).
	if err := Reset(ctx, b.sentinels[0], testPassword, name); err != nil {
		t.Fatal(err)
	}
	if err := Reset(ctx, b.sentinels[0], testPassword, "no-such-addon"); err == nil || !strings.Contains(err.Error(), "no master named") {
		t.Errorf("Reset of an unknown name: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		k, err := Known(ctx, b.sentinels[0], testPassword, name)
		if err != nil {
			return err
		}
		if len(k.Sentinels) != 2 {
			return fmt.Errorf("after RESET: sentinels %v", k.Sentinels)
		}
		return nil
	})

	// -NOGOODSLAVE: a master without a replica.
	lone := startRedis(t, ip3, "")
	host, port, _ := strings.Cut(lone, ":")
	sc := redis.NewClient(SentinelOptions(b.sentinels[1], testPassword))
	defer sc.Close()
	if err := sc.Do(ctx, "SENTINEL", "MONITOR", "lone", host, port, "2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := sc.Do(ctx, "SENTINEL", "SET", "lone", "auth-user", FleetUser, "auth-pass", testPassword).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = Failover(ctx, []string{b.sentinels[1], dead1}, testPassword, "lone")
	var fe *FailoverError
	if !errors.Is(err, ErrNoGoodReplica) || !errors.As(err, &fe) || fe.Count(ErrNoGoodReplica) != 1 || len(fe.Answers) != 2 {
		t.Errorf("Failover of a master without replica: %v", err)
	}
	if strings.Contains(fmt.Sprint(err), testPassword) {
		t.Error("the error holds the password")
	}

	// A failover is accepted by the first live sentinel; a second one
	// right after is refused with -INPROG.
	by, err := Failover(ctx, []string{dead1, b.sentinels[2]}, testPassword, name)
	if err != nil || by != b.sentinels[2] {
		t.Fatalf("Failover = %s, %v", by, err)
	}
	_, err = Failover(ctx, []string{b.sentinels[2], b.sentinels[0]}, testPassword, name)
	if !errors.Is(err, ErrFailoverInProgress) || !errors.As(err, &fe) || len(fe.Answers) != 1 {
		t.Errorf("second Failover: %v (want INPROG from the first sentinel, and no further sentinel asked)", err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		addr, _, err := AskMajority(ctx, b.sentinels, testPassword, name)
		if err != nil {
			return err
		}
		if addr != b.replica {
			return fmt.Errorf("majority names %s", addr)
		}
		return nil
	})
}

func TestSwitchoverWithoutReplica(t *testing.T) {
	start := time.Now()
	for _, sw := range []SwitchoverRequest{
		{Name: "a", Primary: "127.0.0.61:1", Sentinels: []string{"127.0.0.61:2"}},
		{Name: "a", Primary: "127.0.0.61:1", Replica: "127.0.0.61:1", Sentinels: []string{"127.0.0.61:2"}},
		{Name: "a"},
	} {
		err := Switchover(context.Background(), sw)
		if !errors.Is(err, ErrNoReplica) {
			t.Errorf("Switchover(%+v) = %v, want ErrNoReplica", sw, err)
		}
	}
	if err := Switchover(context.Background(), SwitchoverRequest{Name: "a", Replica: "nonsense", Primary: "127.0.0.61:1", Sentinels: []string{"x"}}); err == nil || errors.Is(err, ErrNoReplica) {
		t.Errorf("Switchover to a bad address: %v", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("took %v: something was dialled", d)
	}
}

func TestRealSwitchoverReplicaNotConnected(t *testing.T) {
	ctx := context.Background()
	primary := startRedis(t, ip1, "")
	other := startRedis(t, ip2, "")
	start := time.Now()
	err := Switchover(ctx, SwitchoverRequest{Name: "a", Password: testPassword, Primary: primary, Replica: other, Sentinels: []string{deadAddr(t, ip3)}})
	if !errors.Is(err, ErrNoReplica) {
		t.Fatalf("Switchover from a primary without replica: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	// Nothing was paused.
	c := redis.NewClient(MemberOptions(primary, testPassword))
	defer c.Close()
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := c.Set(wctx, "k", "v", 0).Err(); err != nil {
		t.Errorf("write on the primary after the refused switchover: %v", err)
	}
}

func TestRealSwitchover(t *testing.T) {
	ctx := context.Background()
	const name = "redisctl-switchover"
	b := startBusiness(t, name)

	// A client writes without pause, to the primary, then (once it answers
	// READONLY) to the new one; a write counts when it was acknowledged.
	var (
		mu       sync.Mutex
		acked    []string
		ackedNew int // of which on the new primary
	)
	wctx, stopWriting := context.WithCancel(ctx)
	writerDone := make(chan struct{})
	moved := make(chan struct{})
	go func() {
		defer close(writerDone)
		target := b.primary
		opt := MemberOptions(target, testPassword)
		opt.ReadTimeout = 10 * time.Second // a paused write waits, it does not fail
		c := redis.NewClient(opt)
		defer func() { c.Close() }()
		for i := 0; wctx.Err() == nil; i++ {
			key := "key:" + strconv.Itoa(i)
			err := c.Set(wctx, key, i, 0).Err()
			switch {
			case err == nil:
				mu.Lock()
				acked = append(acked, key)
				if target == b.replica {
					ackedNew++
				}
				mu.Unlock()
			case target == b.primary && redis.HasErrorPrefix(err, "READONLY"):
				target = b.replica
				c.Close()
				opt.Addr = target
				c = redis.NewClient(opt)
				close(moved)
			}
		}
	}()
	testutil.WaitFor(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 100 {
			return fmt.Errorf("%d writes", len(acked))
		}
		return nil
	})

	start := time.Now()
	err := Switchover(ctx, SwitchoverRequest{Name: name, Password: testPassword, Primary: b.primary, Replica: b.replica, Sentinels: b.sentinels})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Switchover: %v", err)
	}
	t.Logf("switchover took %v", took.Round(time.Millisecond))
	select {
	case <-moved:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer never got READONLY from the old primary")
	}
	testutil.WaitFor(t, 5*time.Second, func() error { // some writes on the new primary too
		mu.Lock()
		defer mu.Unlock()
		if ackedNew < 100 {
			return fmt.Errorf("%d writes on the new primary", ackedNew)
		}
		return nil
	})
	stopWriting()
	<-writerDone

	if r, err := GetReplication(ctx, b.replica, testPassword); err != nil || !r.IsMaster() {
		t.Errorf("old replica after switchover: %+v, %v", r, err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		r, err := GetReplication(ctx, b.primary, testPassword)
		if err != nil {
			return err
		}
		if r.Role != RoleReplica || r.Master() != b.replica || r.LinkStatus != "up" {
			return fmt.Errorf("old primary: %+v", r)
		}
		return nil
	})
	testutil.WaitFor(t, 10*time.Second, func() error {
		addr, votes, err := AskMajority(ctx, b.sentinels, testPassword, name)
		if err != nil {
			return err
		}
		if addr != b.replica || votes != 3 {
			return fmt.Errorf("sentinels name %s (%d)", addr, votes)
		}
		return nil
	})

	// No acknowledged write lost, on the new primary and on its replica.
	mu.Lock()
	keys := slices.Clone(acked)
	mu.Unlock()
	for _, addr := range []string{b.replica, b.primary} {
		c := redis.NewClient(MemberOptions(addr, testPassword))
		testutil.WaitFor(t, 10*time.Second, func() error {
			missing := 0
			for chunk := range slices.Chunk(keys, 500) {
				args := make([]string, len(chunk))
				copy(args, chunk)
				n, err := c.Exists(ctx, args...).Result()
				if err != nil {
					return err
				}
				missing += len(chunk) - int(n)
			}
			if missing > 0 {
				return fmt.Errorf("%s: %d of %d acknowledged writes missing", addr, missing, len(keys))
			}
			return nil
		})
		c.Close()
	}
	t.Logf("%d acknowledged writes, none lost", len(keys))
}
