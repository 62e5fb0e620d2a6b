package redisctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pub/Sub channels of a sentinel that WatchSwitchMaster follows.
const (
	// SwitchMasterChannel: a master's address changed (a failover ended,
	// or the sentinel learnt of one from its peers).
	SwitchMasterChannel = "+switch-master"
	// PromotingChannel: the sentinel leading a failover has sent SLAVEOF
	// NO ONE to the replica it chose (published by the leader only). The
	// failover is committed: the old master is being abandoned, and the
	// replica answers role:master within milliseconds, while the
	// +switch-master that follows waits for the sentinel's next INFO of
	// the replica (up to a second later).
	PromotingChannel = "+failover-state-wait-promotion"
)

// watchIdle is how long Next waits for a message before it checks the
// subscription with a PING: a sentinel whose host vanished without a reset
// is noticed within watchIdle + SentinelTimeout.
const watchIdle = time.Second

// SwitchMaster is one announcement: master Name moved (or, Promoting, is
// being moved) from From to To (host:port each).
type SwitchMaster struct {
	Name, From, To string
	// Promoting: a +failover-state-wait-promotion (To was sent SLAVEOF NO
	// ONE); false: +switch-master.
	Promoting bool
}

// ParsePromoting reads a +failover-state-wait-promotion payload, the
// promoted replica as Sentinel describes an instance:
// "slave <ip>:<port> <ip> <port> @ <master name> <master ip> <master port>".
func ParsePromoting(payload string) (SwitchMaster, error) {
	f := strings.Fields(payload)
	if len(f) != 8 || f[0] != "slave" || f[4] != "@" {
		return SwitchMaster{}, fmt.Errorf("%s %q: not a replica's description", PromotingChannel, payload)
	}
	for _, p := range []string{f[3], f[7]} {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return SwitchMaster{}, fmt.Errorf("%s %q: bad port %q", PromotingChannel, payload, p)
		}
	}
	return SwitchMaster{Name: f[5], From: net.JoinHostPort(f[6], f[7]), To: net.JoinHostPort(f[2], f[3]), Promoting: true}, nil
}

// ParseSwitchMaster reads a +switch-master payload:
// "<name> <old ip> <old port> <new ip> <new port>".
func ParseSwitchMaster(payload string) (SwitchMaster, error) {
	f := strings.Fields(payload)
	if len(f) != 5 {
		return SwitchMaster{}, fmt.Errorf("+switch-master %q: want 5 fields", payload)
	}
	for _, p := range []string{f[2], f[4]} {
		if n, err := strconv.Atoi(p); err != nil || n <= 0 || n > 65535 {
			return SwitchMaster{}, fmt.Errorf("+switch-master %q: bad port %q", payload, p)
		}
	}
	return SwitchMaster{Name: f[0], From: net.JoinHostPort(f[1], f[2]), To: net.JoinHostPort(f[3], f[4])}, nil
}

// SwitchWatch is a subscription to one sentinel's +switch-master and
// +failover-state-wait-promotion announcements, on a connection of its own. It does not reconnect: when
// Next fails, Close it and watch again (and ask the sentinels who the
// primary is, AskMajority: announcements made meanwhile are lost).
type SwitchWatch struct {
	addr   string
	c      *redis.Client
	ps     *redis.PubSub
	pinged bool
	stop   func() bool // unregisters the close on ctx's end
}

// WatchSwitchMaster connects to the sentinel at addr and subscribes to
// SwitchMasterChannel and PromotingChannel; it returns once the sentinel
// confirmed both (within SentinelTimeout). Closing ctx closes the watch.
func WatchSwitchMaster(ctx context.Context, addr, password string) (*SwitchWatch, error) {
	c := redis.NewClient(SentinelOptions(addr, password))
	channels := []string{SwitchMasterChannel, PromotingChannel}
	w := &SwitchWatch{addr: addr, c: c, ps: c.Subscribe(ctx, channels...)}
	cctx, cancel := context.WithTimeout(ctx, SentinelTimeout)
	defer cancel()
	var err error
	for i := 0; i < len(channels) && err == nil; i++ {
		var msg any
		if msg, err = w.ps.ReceiveTimeout(cctx, SentinelTimeout); err == nil {
			if s, ok := msg.(*redis.Subscription); !ok || s.Kind != "subscribe" || s.Channel != channels[i] {
				err = fmt.Errorf("unexpected answer %v", msg)
			}
		}
	}
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sentinel %s: SUBSCRIBE %s: %w", addr, strings.Join(channels, " "), err)
	}
	w.stop = context.AfterFunc(ctx, w.close)
	return w, nil
}

// Next waits for the next announcement (a promotion under way or a switch). While none comes it checks the
// connection every watchIdle with a PING answered within SentinelTimeout;
// a lost connection, a missing pong or ctx's end is an error.
func (w *SwitchWatch) Next(ctx context.Context) (SwitchMaster, error) {
	for {
		wait := watchIdle
		if w.pinged {
			wait = SentinelTimeout
		}
		msg, err := w.ps.ReceiveTimeout(ctx, wait)
		if err != nil {
			if ctx.Err() != nil {
				return SwitchMaster{}, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !w.pinged {
				pctx, cancel := context.WithTimeout(ctx, SentinelTimeout)
				err = w.ps.Ping(pctx)
				cancel()
				if err == nil {
					w.pinged = true
					continue
				}
			}
			if w.pinged && errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("no answer to PING within %s", SentinelTimeout)
			}
			return SwitchMaster{}, fmt.Errorf("sentinel %s: %s: %w", w.addr, SwitchMasterChannel, err)
		}
		switch m := msg.(type) {
		case *redis.Pong:
			w.pinged = false
		case *redis.Message:
			w.pinged = false
			var ev SwitchMaster
			var err error
			switch m.Channel {
			case SwitchMasterChannel:
				ev, err = ParseSwitchMaster(m.Payload)
			case PromotingChannel:
				ev, err = ParsePromoting(m.Payload)
			default:
				continue
			}
			if err != nil {
				return SwitchMaster{}, fmt.Errorf("sentinel %s: %w", w.addr, err)
			}
			return ev, nil
		default: // a (re)subscription confirmation
			w.pinged = false
		}
	}
}

// Addr is the sentinel's address.
func (w *SwitchWatch) Addr() string { return w.addr }

// Close ends the subscription and its connection (also done when the ctx
// given to WatchSwitchMaster ends).
func (w *SwitchWatch) Close() {
	if w.stop != nil {
		w.stop()
	}
	w.close()
}

func (w *SwitchWatch) close() {
	_ = w.ps.Close()
	_ = w.c.Close()
}
