package redisctl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/redis/go-redis/v9"
)

func TestAppRules(t *testing.T) {
	got := strings.Join(AppRules(), " ")
	want := "~* &* +@all -config -replicaof -slaveof -shutdown -debug -acl -module -failover -cluster -save -bgsave" +
		" -bgrewriteaof -sync -psync -replconf -migrate +acl|whoami +acl|cat +acl|genpass +acl|help"
	if got != want {
		t.Fatalf("AppRules:\n got %s\nwant %s", got, want)
	}
}

// refusedToApp are commands the app's user must not run, as an app sends
// them.
var refusedToApp = [][]any{
	{"CONFIG", "SET", "timeout", "1"}, {"CONFIG", "GET", "dir"}, {"REPLICAOF", "127.0.0.1", "1"},
	{"SLAVEOF", "NO", "ONE"}, {"SHUTDOWN", "NOSAVE"}, {"DEBUG", "SLEEP", "0"}, {"ACL", "SETUSER", "x", "on"},
	{"ACL", "LIST"}, {"ACL", "USERS"}, {"ACL", "GETUSER", FleetUser}, {"ACL", "LOG"}, {"MODULE", "LIST"},
	{"FAILOVER"}, {"CLUSTER", "INFO"}, {"SAVE"}, {"BGSAVE"}, {"BGREWRITEAOF"}, {"SYNC"}, {"PSYNC", "?", "-1"},
	{"REPLCONF", "listening-port", "1"}, {"MIGRATE", "127.0.0.1", "1", "k", "0", "1000"},
	{"EVAL", "return redis.call('CONFIG','GET','dir')", "0"},
}

// checkAppConfined runs every refused command as the app through c and a
// few data commands that must work.
func checkAppConfined(ctx context.Context, t *testing.T, c *redis.Client) {
	t.Helper()
	for _, cmd := range refusedToApp {
		err := c.Do(ctx, cmd...).Err()
		if err == nil || !(strings.HasPrefix(err.Error(), "NOPERM") || strings.Contains(err.Error(), "not allowed")) {
			t.Errorf("app ran %v: %v", cmd, err)
		}
	}
	if who, err := c.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "default" {
		t.Errorf("ACL WHOAMI = %q, %v", who, err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Errorf("SET: %v", err)
	}
	if v, err := c.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"k"}).Text(); err != nil || v != "v" {
		t.Errorf("EVAL = %q, %v", v, err)
	}
}

// TestApplyACLMigratesLive: an addon created before the fleet credential
// (the app's default user with +@all, masterauth the app's password, its
// sentinels without a password) gets the fleet user and credential live:
// the app's connections made before keep working (a subscriber receives,
// a client writes), the app loses the commands of AppDenied, the sentinels
// require the fleet credential, and a failover afterwards reconnects the
// demoted primary with the fleet's user.
func TestApplyACLMigratesLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const name = "legacy"
	legacy := []string{"user default on >" + testAppPassword + " ~* &* +@all", "masterauth " + testAppPassword}
	primary := startRedisACL(t, ip1, "", legacy, testAppPassword)
	replica := startRedisACL(t, ip2, primary, legacy, testAppPassword)
	sentinelAuth := []string{"sentinel auth-pass " + name + " " + testAppPassword}
	var sentinels []string
	for _, ip := range []string{ip1, ip2, ip3} {
		s, _ := startSentinelAuth(t, ip, name, primary, sentinelAuth, "")
		sentinels = append(sentinels, s)
	}
	// Not migrated: the fleet's user does not exist.
	if err := Ping(ctx, primary, testPassword); err == nil {
		t.Fatal("the fleet's user exists before the migration")
	}

	// The app's connections, made before.
	app := redis.NewClient(appOptions(primary))
	defer app.Close()
	sub := app.Subscribe(ctx, "news")
	defer sub.Close()
	if _, err := sub.ReceiveTimeout(ctx, 2*time.Second); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := app.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	for _, addr := range []string{primary, replica} {
		migrated, err := ApplyACL(ctx, addr, []string{testAppPassword}, testPassword)
		if err != nil || !migrated {
			t.Fatalf("ApplyACL %s = %v, %v", addr, migrated, err)
		}
		// Idempotent: the second pass logs in as the fleet.
		if migrated, err := ApplyACL(ctx, addr, []string{testAppPassword}, testPassword); err != nil || migrated {
			t.Fatalf("ApplyACL again %s = %v, %v", addr, migrated, err)
		}
	}
	for _, s := range sentinels {
		if err := ApplySentinelAuth(ctx, s, name, testPassword); err != nil {
			t.Fatalf("ApplySentinelAuth %s: %v", s, err)
		}
		if err := ApplySentinelAuth(ctx, s, name, testPassword); err != nil {
			t.Fatalf("ApplySentinelAuth again %s: %v", s, err)
		}
	}

	// The app's connections kept working.
	if err := app.Publish(ctx, "news", "hello").Err(); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.ReceiveTimeout(ctx, 2*time.Second)
	if m, ok := msg.(*redis.Message); err != nil || !ok || m.Payload != "hello" {
		t.Fatalf("the subscriber made before the migration: %v, %v", msg, err)
	}
	checkAppConfined(ctx, t, app)

	// Sentinels refuse anyone without the fleet credential.
	for _, s := range sentinels {
		nc := redis.NewClient(SentinelOptions(s, ""))
		err := nc.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name).Err()
		nc.Close()
		if err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
			t.Errorf("sentinel %s without a password: %v", s, err)
		}
		if a := KnockSentinel(ctx, s, testPassword, true, time.Second, time.Second); a.Reply != ReplyPong {
			t.Errorf("KnockSentinel %s: %+v", s, a)
		}
		if a := KnockSentinel(ctx, s, "", true, time.Second, time.Second); a.Reply != ReplyOther || !strings.HasPrefix(a.Text, "-NOAUTH") {
			t.Errorf("KnockSentinel %s without a password: %+v", s, a)
		}
		bad := redis.NewClient(SentinelOptions(s, testAppPassword))
		err = bad.Ping(ctx).Err()
		bad.Close()
		if err == nil {
			t.Errorf("sentinel %s accepts the app's password", s)
		}
	}
	// The sentinels still agree and still talk to each other (sentinel-pass).
	testutil.WaitFor(t, 20*time.Second, func() error {
		for _, s := range sentinels {
			k, err := Known(ctx, s, testPassword, name)
			if err != nil {
				return err
			}
			if !Has(k.Replicas, replica) || len(k.Sentinels) != 2 {
				return fmt.Errorf("sentinel %s knows replicas %v, sentinels %v", s, k.Replicas, k.Sentinels)
			}
		}
		return nil
	})

	// A failover: the sentinels log in as the fleet (auth-user), the old
	// primary replicates from the new one with masteruser.
	testutil.WaitFor(t, 20*time.Second, func() error {
		_, err := Failover(ctx, sentinels, testPassword, name)
		if errors.Is(err, ErrFailoverInProgress) {
			return nil
		}
		return err
	})
	testutil.WaitFor(t, 30*time.Second, func() error {
		r, err := GetReplication(ctx, primary, testPassword)
		if err != nil {
			return err
		}
		if r.IsMaster() || r.LinkStatus != "up" {
			return fmt.Errorf("old primary: master=%v link=%s", r.IsMaster(), r.LinkStatus)
		}
		return nil
	})
	app2 := redis.NewClient(appOptions(replica))
	defer app2.Close()
	if v, err := app2.Get(ctx, "before").Result(); err != nil || v != "1" {
		t.Fatalf("new primary: GET before = %q, %v", v, err)
	}
	checkAppConfined(ctx, t, app2)
}

func TestApplyACLErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := startRedis(t, ip3, "")
	_, err := ApplyACL(ctx, addr, []string{"wrong-" + testAppPassword}, "wrong-"+testPassword)
	if !errors.Is(err, ErrAuth) || strings.Contains(err.Error(), testPassword) || strings.Contains(err.Error(), testAppPassword) {
		t.Fatalf("wrong passwords: %v", err)
	}
	if _, err := ApplyACL(ctx, deadAddr(t, ip3), []string{testAppPassword}, testPassword); err == nil || errors.Is(err, ErrAuth) {
		t.Fatalf("nothing listening: %v", err)
	}
	if _, err := ApplyACL(ctx, addr, nil, testPassword); err == nil {
		t.Fatal("no app password accepted")
	}
}

// TestApplyACLRotatesLive: the default user accepts two passwords, then
// only the new one; a connection authenticated with the old password stays
// usable throughout, new ones with it are refused once it is removed, and
// CheckAppPasswords sees each set exactly.
func TestApplyACLRotatesLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := startRedisACL(t, ip1, "", aclLines(), testPassword)
	const next = "next_redisctl-test-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
	auth := func(pw string) error {
		o := MemberOptions(addr, "")
		o.Username, o.Password = "default", pw
		c := redis.NewClient(o)
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	old := redis.NewClient(appOptions(addr)) // stays open through the rotation
	defer old.Close()
	if err := old.Set(ctx, "k", "0", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := CheckAppPasswords(ctx, addr, testPassword, []string{testAppPassword}); err != nil {
		t.Fatalf("before: %v", err)
	}
	if err := CheckAppPasswords(ctx, addr, testPassword, []string{testAppPassword, next}); !errors.Is(err, ErrPasswords) ||
		strings.Contains(err.Error(), next) {
		t.Fatalf("next not applied yet: %v", err)
	}

	if _, err := ApplyACL(ctx, addr, []string{testAppPassword, next}, testPassword); err != nil {
		t.Fatal(err)
	}
	if err := CheckAppPasswords(ctx, addr, testPassword, []string{next, testAppPassword}); err != nil {
		t.Fatalf("both: %v", err)
	}
	for _, pw := range []string{testAppPassword, next} {
		if err := auth(pw); err != nil {
			t.Fatalf("AUTH during the grace period: %v", err)
		}
	}

	if _, err := ApplyACL(ctx, addr, []string{next}, testPassword); err != nil {
		t.Fatal(err)
	}
	if err := CheckAppPasswords(ctx, addr, testPassword, []string{next}); err != nil {
		t.Fatalf("new only: %v", err)
	}
	if err := auth(testAppPassword); err == nil || !authFailed(err) {
		t.Fatalf("AUTH with the old password after its removal: %v", err)
	}
	if err := auth(next); err != nil {
		t.Fatalf("AUTH with the new password: %v", err)
	}
	if err := old.Incr(ctx, "k").Err(); err != nil {
		t.Fatalf("a connection authenticated with the old password: %v", err)
	}
	checkAppConfined(ctx, t, old) // the rules stayed
}
