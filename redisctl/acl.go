package redisctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// FleetUser is the fleet's own user on every redis member: the agent, the
// coordinator, replication (masteruser) and the sentinels (auth-user) log in
// with it, with the addon's fleet credential (api.Addon.FleetPassword). The
// app never learns its password and cannot see the user: the app's default
// user may not run ACL LIST, ACL USERS, ACL GETUSER, ACL LOG or ACL DRYRUN.
const FleetUser = "cacheplane"

// SentinelUser is the user the fleet logs in as on a sentinel: Sentinel's
// default user, whose password (requirepass) is the fleet credential.
// Sentinels authenticate to each other with it too (sentinel-user and
// sentinel-pass): "AUTH default PW" also succeeds on a sentinel that has no
// password yet, so an addon's three sentinels can switch one by one.
const SentinelUser = "default"

// AppDenied are the commands the app's default user may not run: everything
// that takes an instance over or breaks the addon's high availability.
// ACL (and hence every ACL subcommand) is denied, then the harmless ACL
// reads of the app's own user are given back (AppAllowedACL). REPLCONF is
// denied with SYNC and PSYNC: it is the replication handshake, the
// replicas' (FleetUser's) business. DEBUG is also refused by
// enable-debug-command local to non-loopback clients; the ACL refuses it
// to every client, loopback included.
var AppDenied = []string{
	"config", "replicaof", "slaveof", "shutdown", "debug", "acl", "module",
	"failover", "cluster", "save", "bgsave", "bgrewriteaof", "sync", "psync",
	"replconf", "migrate",
}

// AppAllowedACL are the ACL subcommands the app keeps: about its own user
// and the ACL categories, nothing about another user.
var AppAllowedACL = []string{"whoami", "cat", "genpass", "help"}

// AppRules are the ACL rules of the app's default user after its password
// rules: every key, every channel, every command but AppDenied.
func AppRules() []string {
	r := []string{"~*", "&*", "+@all"}
	for _, c := range AppDenied {
		r = append(r, "-"+c)
	}
	for _, c := range AppAllowedACL {
		r = append(r, "+acl|"+c)
	}
	return r
}

// FleetRules are the ACL rules of FleetUser after its password: everything.
func FleetRules() []string { return []string{"~*", "&*", "+@all"} }

// authFailed reports whether err is redis refusing credentials (a user
// that does not exist or a wrong password), as opposed to a network error.
func authFailed(err error) bool {
	if err == nil {
		return false
	}
	return redis.HasErrorPrefix(err, "WRONGPASS") || redis.HasErrorPrefix(err, "NOAUTH") ||
		strings.Contains(err.Error(), "invalid username-password pair") ||
		strings.Contains(err.Error(), "AUTH <password> called without any password")
}

// ErrAuth wraps errors of a member or sentinel refusing the credentials
// given.
var ErrAuth = errors.New("credentials refused")

// ApplyACL makes the redis member at addr serve the fleet's user and keep
// the app's default user out of the commands that take an instance over,
// live, without a restart and without closing any client connection: it
// logs in as FleetUser with fleet or, when that user does not exist yet
// (an addon created before the fleet credential), as the app's default
// user with one of app, then sets (idempotent ACL SETUSER):
//
//	ACL SETUSER cacheplane on >FLEET ~* &* +@all
//	ACL SETUSER default on resetpass >APP... <AppRules>
//	CONFIG SET masteruser cacheplane masterauth FLEET
//
// so replication, Sentinel and every later call of this package use the
// fleet's user. app are the passwords the default user accepts, exactly
// (the URL's first; a password rotation adds its next or old one): one
// ACL SETUSER replaces the set atomically, so a client never meets a
// member that accepts neither, and connections already authenticated
// stay so. It reports whether it had to log in as the app (the member
// was migrated now). The rules are those redis.conf says (agent/render),
// which the agent rewrites for the next start; nothing else changes.
// Errors never hold a password.
func ApplyACL(ctx context.Context, addr string, app []string, fleet string) (migrated bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if len(app) == 0 || fleet == "" {
		return false, fmt.Errorf("redis %s: apply ACL: both passwords are needed", addr)
	}
	for _, p := range app {
		if p == "" {
			return false, fmt.Errorf("redis %s: apply ACL: an app password is empty", addr)
		}
	}
	c := redis.NewClient(MemberOptions(addr, fleet))
	defer func() { c.Close() }()
	err = c.Ping(ctx).Err()
	if authFailed(err) {
		c.Close()
		for _, p := range app {
			o := MemberOptions(addr, p)
			o.Username = "default"
			c = redis.NewClient(o)
			if err = c.Ping(ctx).Err(); !authFailed(err) {
				break
			}
			c.Close()
		}
		if err != nil {
			if authFailed(err) {
				return false, fmt.Errorf("redis %s: neither the fleet's nor the app's credentials are accepted: %w", addr, ErrAuth)
			}
			return false, fmt.Errorf("redis %s: apply ACL: %w", addr, err)
		}
		migrated = true
	} else if err != nil {
		return false, fmt.Errorf("redis %s: apply ACL: %w", addr, err)
	}
	fleetUser := append([]any{"ACL", "SETUSER", FleetUser, "on", ">" + fleet}, anys(FleetRules())...)
	if err := c.Do(ctx, fleetUser...).Err(); err != nil {
		return migrated, fmt.Errorf("redis %s: ACL SETUSER %s: %w", addr, FleetUser, err)
	}
	appUser := []any{"ACL", "SETUSER", "default", "on", "resetpass"}
	for _, p := range app {
		appUser = append(appUser, ">"+p)
	}
	appUser = append(appUser, anys(AppRules())...)
	if err := c.Do(ctx, appUser...).Err(); err != nil {
		return migrated, fmt.Errorf("redis %s: ACL SETUSER default: %w", addr, err)
	}
	if migrated {
		// The default user may no longer run CONFIG: go on as the fleet.
		c.Close()
		c = redis.NewClient(MemberOptions(addr, fleet))
	}
	if err := c.ConfigSet(ctx, "masteruser", FleetUser).Err(); err != nil {
		return migrated, fmt.Errorf("redis %s: CONFIG SET masteruser: %w", addr, err)
	}
	if err := c.ConfigSet(ctx, "masterauth", fleet).Err(); err != nil {
		return migrated, fmt.Errorf("redis %s: CONFIG SET masterauth: %w", addr, err)
	}
	return migrated, nil
}

// ErrPasswords wraps a member whose default user does not hold exactly the
// passwords asked for (CheckAppPasswords).
var ErrPasswords = errors.New("the app's passwords differ")

// CheckAppPasswords checks, as FleetUser with fleet, that the default user
// of the redis member at addr accepts exactly the passwords want: ACL
// GETUSER lists a user's passwords as SHA-256 digests, compared with
// want's. The error says how many are missing and how many are extra,
// never a password nor a digest.
func CheckAppPasswords(ctx context.Context, addr, fleet string, want []string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	c := redis.NewClient(MemberOptions(addr, fleet))
	defer c.Close()
	have, err := userPasswords(ctx, c, "default")
	if err != nil {
		if authFailed(err) {
			err = ErrAuth
		}
		return fmt.Errorf("redis %s: ACL GETUSER default: %w", addr, err)
	}
	wantSet := map[string]bool{}
	for _, p := range want {
		sum := sha256.Sum256([]byte(p))
		wantSet[hex.EncodeToString(sum[:])] = true
	}
	missing, extra := 0, 0
	for d := range wantSet {
		if !have[d] {
			missing++
		}
	}
	for d := range have {
		if !wantSet[d] {
			extra++
		}
	}
	if missing > 0 || extra > 0 {
		return fmt.Errorf("redis %s: %w: the default user accepts %d password(s), %d of those wanted missing, %d more than wanted (its agent applies them live)",
			addr, ErrPasswords, len(have), missing, extra)
	}
	return nil
}

// userPasswords reads the SHA-256 digests of user's passwords (ACL
// GETUSER's "passwords", RESP2 or RESP3).
func userPasswords(ctx context.Context, c *redis.Client, user string) (map[string]bool, error) {
	v, err := c.Do(ctx, "ACL", "GETUSER", user).Result()
	if err != nil {
		return nil, err
	}
	var list any
	switch m := v.(type) {
	case []any:
		for i := 0; i+1 < len(m); i += 2 {
			if k, _ := m[i].(string); k == "passwords" {
				list = m[i+1]
			}
		}
	case map[any]any:
		list = m["passwords"]
	default:
		return nil, fmt.Errorf("unexpected answer %T", v)
	}
	out := map[string]bool{}
	items, _ := list.([]any)
	for _, it := range items {
		if s, ok := it.(string); ok {
			out[strings.ToLower(s)] = true
		}
	}
	return out, nil
}

// ApplySentinelAuth makes the sentinel at addr require the fleet
// credential and use it, live: it logs in as SentinelUser with fleet (which
// a sentinel without a password accepts too), then
//
//	SENTINEL CONFIG SET sentinel-user default, sentinel-pass FLEET
//	SENTINEL SET NAME auth-user cacheplane auth-pass FLEET
//	ACL SETUSER default on resetpass >FLEET   (requirepass)
//	SENTINEL FLUSHCONFIG                       (the password in its file)
//
// The sentinel answers every other client NOAUTH from then on. Idempotent;
// errors never hold the password.
func ApplySentinelAuth(ctx context.Context, addr, name, fleet string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if fleet == "" {
		return fmt.Errorf("sentinel %s: apply auth: no fleet credential", addr)
	}
	c := redis.NewClient(SentinelOptions(addr, fleet))
	defer c.Close()
	steps := []struct {
		what string
		args []any
	}{
		{"SENTINEL CONFIG SET sentinel-user", []any{"SENTINEL", "CONFIG", "SET", "sentinel-user", SentinelUser}},
		{"SENTINEL CONFIG SET sentinel-pass", []any{"SENTINEL", "CONFIG", "SET", "sentinel-pass", fleet}},
		{"SENTINEL SET auth-user", []any{"SENTINEL", "SET", name, "auth-user", FleetUser}},
		{"SENTINEL SET auth-pass", []any{"SENTINEL", "SET", name, "auth-pass", fleet}},
		{"ACL SETUSER default", []any{"ACL", "SETUSER", SentinelUser, "on", "resetpass", ">" + fleet}},
		{"SENTINEL FLUSHCONFIG", []any{"SENTINEL", "FLUSHCONFIG"}},
	}
	for _, s := range steps {
		if err := c.Do(ctx, s.args...).Err(); err != nil {
			if authFailed(err) {
				err = ErrAuth
			}
			return fmt.Errorf("sentinel %s: %s: %w", addr, s.what, err)
		}
	}
	return nil
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
