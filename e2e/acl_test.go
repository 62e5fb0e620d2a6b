package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
)

// takeover are commands that take an instance over, as an app would send
// them through its URL; each must be refused (docs/security.md).
var takeover = [][]string{
	{"CONFIG", "SET", "replica-announce-ip", "10.9.9.9"},
	{"CONFIG", "GET", "masterauth"},
	{"REPLICAOF", "127.0.0.1", "1"},
	{"SLAVEOF", "NO", "ONE"},
	{"SHUTDOWN", "NOSAVE"},
	{"DEBUG", "SLEEP", "0"},
	{"ACL", "SETUSER", "x", "on", ">x", "+@all"},
	{"ACL", "LIST"},
	{"BGSAVE"},
	{"SAVE"},
	{"BGREWRITEAOF"},
	{"PSYNC", "?", "-1"},
	{"FAILOVER"},
	{"MODULE", "LIST"},
	{"CLUSTER", "INFO"},
	{"MIGRATE", "127.0.0.1", "1", "k", "0", "1000"},
	{"EVAL", "return redis.call('CONFIG','SET','dir','/tmp')", "0"},
}

// appRefused reports whether err is redis refusing the command to this user.
func appRefused(err error) bool {
	return err != nil && (strings.HasPrefix(err.Error(), "NOPERM") || strings.Contains(err.Error(), "not allowed") ||
		strings.Contains(err.Error(), "no permissions") || strings.HasPrefix(err.Error(), "ERR unknown command"))
}

// TestAppCannotTakeOver: through the app's URL (go-redis and redis-cli) the
// commands that take an instance over are refused while the data commands
// work; the sentinels refuse anyone without the fleet credential; then a
// primary kill still fails over with no acknowledged write lost, and the
// app's user is just as confined on the promoted primary.
func TestAppCannotTakeOver(t *testing.T) {
	f := startBusiness(t, "acl-app", bizOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	app := redis.NewClient(f.opt)
	defer app.Close()
	checkConfined(ctx, t, app)

	// redis-cli -u URL, as an app's operator would.
	for _, cmd := range [][]string{{"CONFIG", "SET", "dir", "/tmp"}, {"REPLICAOF", "127.0.0.1", "1"}, {"ACL", "SETUSER", "x"}, {"SHUTDOWN"}} {
		out, _ := exec.CommandContext(ctx, "redis-cli", append([]string{"-u", f.url, "--no-auth-warning"}, cmd...)...).CombinedOutput()
		if !strings.Contains(string(out), "NOPERM") {
			t.Errorf("redis-cli %v: %q, want NOPERM", cmd, scrub(string(out), f.opt.Password))
		}
	}
	out, err := exec.CommandContext(ctx, "redis-cli", "-u", f.url, "--no-auth-warning", "SET", "cli", "ok").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Errorf("redis-cli SET: %q, %v", scrub(string(out), f.opt.Password), err)
	}

	// Sentinels: nothing without the fleet credential, not even with the
	// app's password.
	a := f.mustAddon()
	for _, s := range membersOf(a, api.RoleSentinel) {
		for _, pw := range []string{"", f.opt.Password} {
			c := redis.NewClient(&redis.Options{Addr: f.memberAddr(s), Password: pw, MaxRetries: -1, DisableIdentity: true})
			err := c.Do(ctx, "SENTINEL", "SET", f.id, "down-after-milliseconds", "1").Err()
			c.Close()
			if err == nil || !(strings.HasPrefix(err.Error(), "NOAUTH") || strings.Contains(err.Error(), "WRONGPASS") ||
				strings.Contains(err.Error(), "ERR AUTH")) {
				t.Errorf("sentinel %s, password %q: SENTINEL SET: %v, want refused", s.ID, strings.Repeat("*", len(pw)), err)
			}
		}
		if _, err := sentinelMaster(f.memberAddr(s), f.fleet(), f.id); err != nil {
			t.Errorf("sentinel %s with the fleet credential: %v", s.ID, err)
		}
	}

	// A primary kill still fails over (the replication and the sentinels
	// use the fleet's user) and the app's user is the same on the new
	// primary.
	o := killPrimaryProcess(t, f, "acl:")
	if o.lost > 0 {
		t.Errorf("%s", o)
	}
	checkConfined(ctx, t, app)
}

// checkConfined runs takeover and the data commands through c (the app's
// URL).
func checkConfined(ctx context.Context, t *testing.T, c *redis.Client) {
	t.Helper()
	mustOK := func(what string, err error) {
		if err != nil {
			t.Errorf("%s through the URL: %v", what, err)
		}
	}
	for _, cmd := range takeover {
		args := make([]any, len(cmd))
		for i, a := range cmd {
			args[i] = a
		}
		if err := c.Do(ctx, args...).Err(); !appRefused(err) {
			t.Errorf("%v through the URL: %v, want NOPERM", cmd, err)
		}
	}
	mustOK("SET", c.Set(ctx, "acl:k", "v", 0).Err())
	if v, err := c.Get(ctx, "acl:k").Result(); err != nil || v != "v" {
		t.Errorf("GET = %q, %v", v, err)
	}
	if v, err := c.Eval(ctx, "return redis.call('INCR', KEYS[1])", []string{"acl:n"}).Int(); err != nil || v < 1 {
		t.Errorf("EVAL = %d, %v", v, err)
	}
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "acl:m1", "1", 0)
		p.Set(ctx, "acl:m2", "2", 0)
		return nil
	})
	mustOK("MULTI/EXEC", err)
	sub := c.Subscribe(ctx, "acl:ch")
	defer sub.Close()
	if _, err := sub.ReceiveTimeout(ctx, 2*time.Second); err != nil {
		t.Fatalf("SUBSCRIBE: %v", err)
	}
	mustOK("PUBLISH", c.Publish(ctx, "acl:ch", "hi").Err())
	if m, err := sub.ReceiveTimeout(ctx, 2*time.Second); err != nil || fmt.Sprint(m) != "Message<acl:ch: hi>" {
		t.Errorf("subscriber got %v, %v", m, err)
	}
	mustOK("RPUSH", c.RPush(ctx, "acl:list", "x").Err())
	if v, err := c.BLPop(ctx, time.Second, "acl:list").Result(); err != nil || len(v) != 2 || v[1] != "x" {
		t.Errorf("BLPOP = %v, %v", v, err)
	}
	if who, err := c.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "default" {
		t.Errorf("ACL WHOAMI = %q, %v", who, err)
	}
}
