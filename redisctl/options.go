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
// password empty means no AUTH.
func MemberOptions(addr, password string) *redis.Options {
	return &redis.Options{
		Addr:                     addr,
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
}

// SentinelOptions are the options of a short-lived client of a sentinel:
// as MemberOptions, without a password, every timeout SentinelTimeout.
func SentinelOptions(addr string) *redis.Options {
	o := MemberOptions(addr, "")
	o.DialTimeout, o.ReadTimeout, o.WriteTimeout = SentinelTimeout, SentinelTimeout, SentinelTimeout
	return o
}
