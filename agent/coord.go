package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// clientRetryFor bounds the api.Client's own retries on "no leader" (a
// leader election); the agent's loops retry on their own schedule.
const clientRetryFor = 5 * time.Second

// coordinators calls the first reachable coordinator member. Any member
// forwards agent calls to the leader, so following the leader needs
// nothing here; a member that cannot be reached is skipped for the next
// one, and the last one that answered is tried first next time.
type coordinators struct {
	addrs  []string
	log    *slog.Logger
	holder *identity.Holder

	mu      sync.Mutex
	cur     int
	clients []*api.Client
}

// newCoordinators calls the members over mutual TLS with the holder's
// certificate.
func newCoordinators(addrs []string, holder *identity.Holder, log *slog.Logger) *coordinators {
	c := &coordinators{addrs: addrs, log: log, holder: holder}
	c.clients = c.dial()
	return c
}

func (c *coordinators) dial() []*api.Client {
	var out []*api.Client
	for _, a := range c.addrs {
		cl := api.NewTLSPeerClient(a, c.holder.ClientConfig())
		cl.RetryFor = clientRetryFor
		out = append(out, cl)
	}
	return out
}

// reconnect drops every connection (made with a certificate no longer in
// use): the next calls open new ones.
func (c *coordinators) reconnect() {
	next := c.dial()
	c.mu.Lock()
	old := c.clients
	c.clients = next
	c.mu.Unlock()
	for _, cl := range old {
		cl.Close()
	}
}

// call runs fn against each member in turn, starting with the last one that
// answered, until one answers (even with an error of its own).
func (c *coordinators) call(ctx context.Context, fn func(*api.Client) error) error {
	c.mu.Lock()
	start, clients := c.cur, c.clients
	c.mu.Unlock()
	var err error
	for i := range clients {
		n := (start + i) % len(clients)
		err = fn(clients[n])
		if !unreachable(ctx, err) {
			if n != start {
				c.mu.Lock()
				c.cur = n
				c.mu.Unlock()
				c.log.Info("coordinator member switched", "coordinator", c.addrs[n])
			}
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		c.log.Debug("coordinator member unreachable", "coordinator", c.addrs[n], "err", err)
	}
	return err
}

// unreachable reports whether err means the member did not answer (so the
// next one should be tried): anything but an answer from a server, unless
// the caller gave up.
func unreachable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	var re *api.RemoteError
	if errors.As(err, &re) {
		// 503 after the client's own retries: this member has no
		// leader; another one may.
		return errors.Is(err, api.ErrNoLeader) || errors.Is(err, api.ErrNotLeader)
	}
	return true
}

func (c *coordinators) register(ctx context.Context, h api.Host) (api.Host, error) {
	var out api.Host
	err := c.call(ctx, func(cl *api.Client) error {
		var err error
		out, err = cl.Register(ctx, h)
		return err
	})
	return out, err
}

func (c *coordinators) heartbeat(ctx context.Context, req api.HeartbeatRequest) (api.HeartbeatResponse, error) {
	var out api.HeartbeatResponse
	err := c.call(ctx, func(cl *api.Client) error {
		var err error
		out, err = cl.Heartbeat(ctx, req)
		return err
	})
	return out, err
}

func (c *coordinators) assignments(ctx context.Context, host string, index uint64, wait time.Duration) (api.Assignments, error) {
	var out api.Assignments
	err := c.call(ctx, func(cl *api.Client) error {
		var err error
		out, err = cl.Assignments(ctx, host, index, wait)
		return err
	})
	return out, err
}

func (c *coordinators) reportJob(ctx context.Context, r api.JobReport) error {
	return c.call(ctx, func(cl *api.Client) error { return cl.ReportJob(ctx, r) })
}
