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

// SwitchMasterChannel is the Pub/Sub channel on which a sentinel announces
// that a master's address changed (a failover ended, or the sentinel
// learnt of one from its peers).
const SwitchMasterChannel = "+switch-master"

// watchIdle is how long Next waits for a message before it checks the
// subscription with a PING: a sentinel whose host vanished without a reset
// is noticed within watchIdle + SentinelTimeout.
const watchIdle = time.Second

// SwitchMaster is one +switch-master announcement: master Name moved from
// From to To (host:port each).
type SwitchMaster struct {
	Name, From, To string
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

// SwitchWatch is a subscription to one sentinel's +switch-master
// announcements, on a connection of its own. It does not reconnect: when
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
// SwitchMasterChannel; it returns once the sentinel confirmed the
// subscription (within SentinelTimeout). Closing ctx closes the watch.
func WatchSwitchMaster(ctx context.Context, addr string) (*SwitchWatch, error) {
	c := redis.NewClient(SentinelOptions(addr))
	w := &SwitchWatch{addr: addr, c: c, ps: c.Subscribe(ctx, SwitchMasterChannel)}
	cctx, cancel := context.WithTimeout(ctx, SentinelTimeout)
	defer cancel()
	msg, err := w.ps.ReceiveTimeout(cctx, SentinelTimeout)
	if err == nil {
		if s, ok := msg.(*redis.Subscription); !ok || s.Kind != "subscribe" || s.Channel != SwitchMasterChannel {
			err = fmt.Errorf("unexpected answer %v", msg)
		}
	}
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sentinel %s: SUBSCRIBE %s: %w", addr, SwitchMasterChannel, err)
	}
	w.stop = context.AfterFunc(ctx, w.close)
	return w, nil
}

// Next waits for the next announcement. While none comes it checks the
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
			if m.Channel != SwitchMasterChannel {
				continue
			}
			ev, err := ParseSwitchMaster(m.Payload)
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
