package redisctl

import (
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Client figures.
const (
	// MemberDialTimeout bounds connecting to a redis member.
	MemberDialTimeout = time.Second
	// MemberIOTimeout bounds reading or writing one command to a member.
	MemberIOTimeout = time.Second
	// SentinelTimeout bounds connecting to a sentinel and each exchange
	// with it; a sentinel slower than that is counted as unreachable.
	SentinelTimeout = 500 * time.Millisecond
	// callTimeout bounds one call of this package to a member (which may
	// be several commands) when the caller's ctx has no sooner deadline.
	callTimeout = 2 * time.Second
)

// MemberOptions are the options of a short-lived client of a redis member:
// one connection, RESP2, no command retries and one dial attempt (callers
// retry on their next pass, not inside go-redis's backoff), explicit
// timeouts, no CLIENT SETINFO and no maintenance-notification handshake.
//
// password is the addon's fleet credential: the client logs in as
// FleetUser (AUTH cacheplane PASSWORD), here once for every caller, so no
// conversation of the fleet with a member uses the app's user, which may
// not run CONFIG, REPLICAOF, BGSAVE… (AppDenied). password empty means no
// AUTH (a scratch server of a restore, bound to loopback). A member of an
// addon with member TLS (addr in the TLS table, tls.go) is spoken to over
// TLS.
func MemberOptions(addr, password string) *redis.Options {
	user := ""
	if password != "" {
		user = FleetUser
	}
	o := &redis.Options{
		Addr:                     addr,
		Username:                 user,
		Password:                 password,
		Protocol:                 2,
		DialTimeout:              MemberDialTimeout,
		ReadTimeout:              MemberIOTimeout,
		WriteTimeout:             MemberIOTimeout,
		MaxRetries:               -1,
		DialerRetries:            1,
		PoolSize:                 1,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	if t := TLSFor(addr); t != nil { // member TLS (tls.go)
		o.TLSConfig = t.Config()
	}
	return o
}

// SentinelOptions are the options of a short-lived client of a sentinel:
// as MemberOptions, every timeout SentinelTimeout, logged in as
// SentinelUser with password, the addon's fleet credential (the sentinels'
// requirepass). password empty means no AUTH.
func SentinelOptions(addr, password string) *redis.Options {
	o := MemberOptions(addr, "")
	if password != "" {
		o.Username, o.Password = SentinelUser, password
	}
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = SentinelTimeout, SentinelTimeout, SentinelTimeout
	return o
}
