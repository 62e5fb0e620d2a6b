package agent

// The failover guard: fencing an isolated primary, and a bound on how far
// behind its primary a promoted replica may be (docs/failover.md).
//
// Redis replication is asynchronous: a write the primary acknowledged is
// lost when a replica that never received it is promoted. Two ways that
// happens, and what the guard does about each, every guardInterval, for
// every business redis member running on this host:
//
//   - The replica is behind when the primary fails. On the replica's host
//     the guard compares the replica's offset with its primary's
//     master_repl_offset (read after it): while the link is down or the
//     replica is more than Config.PromoteMaxLagBytes behind, the replica
//     gets replica-priority 0 and Sentinel never promotes it; once it is
//     back within the bound, replica-priority 100. When the primary cannot
//     be asked (it is dead, or cut off from this host) the priority stays
//     as it was: the replica holds what it had when the guard last saw it
//     within the bound, and the primary's fence bounds what came after.
//   - The primary is cut off from the fleet and keeps taking writes while
//     the others promote its replica (a partition). On the primary's host
//     the guard asks the addon's sentinels (from the host's own address,
//     so it is cut off when the host is): when fewer than a majority
//     answer for isolateAfter, after a majority answered once (sentinels
//     still starting, as when a starter becomes a business addon, are not
//     a partition), the primary is fenced — min-replicas-to-write
//     1, min-replicas-max-lag redisctl.FenceMaxLag — and refuses writes
//     (-NOREPLICAS) unless its replica still ACKs; the fence is lifted as
//     soon as a majority answers again. The fence is not on all the time:
//     then every restart, resize or upgrade of the replica would be a write
//     outage of the primary.
//
// Sentinel reads a replica's priority from INFO, every 10 s while the
// primary is up (every second while it is down or failing over): a change
// is seen by Sentinel up to 10 s later.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Failover guard figures.
const (
	// guardInterval is how often the guard looks at each business redis.
	guardInterval = 250 * time.Millisecond
	// guardTimeout bounds one look at one member (every call in it).
	guardTimeout = 600 * time.Millisecond
	// sentinelAskTimeout bounds one sentinel's PING.
	sentinelAskTimeout = 300 * time.Millisecond
	// isolateAfter is how long a primary's host must have reached fewer
	// than a majority of the addon's sentinels before the primary is
	// fenced: long enough not to fence on one slow answer, short against
	// the coordinator's host-down-after (5 s), after which it fails the
	// primary over.
	isolateAfter = time.Second
)

// replicaObs is what the guard saw of a replica it runs.
type replicaObs struct {
	LinkUp bool  // master_link_status:up
	Offset int64 // the replica's master_repl_offset
	// PrimaryKnown: its primary answered INFO replication (asked after
	// the replica), with PrimaryOffset and PrimaryMaster (role master).
	PrimaryKnown  bool
	PrimaryMaster bool
	PrimaryOffset int64
}

// promotability is the guard's decision for a replica.
type promotability int

const (
	keepPriority promotability = iota
	makePromotable
	makeUnpromotable
)

func (p promotability) String() string {
	switch p {
	case makePromotable:
		return "promotable"
	case makeUnpromotable:
		return "unpromotable"
	}
	return "keep"
}

// decideReplica says whether a replica may be promoted, given the bound
// (bytes) on how far behind its primary it may be, and why (pure).
func decideReplica(o replicaObs, bound int64) (promotability, string) {
	switch {
	case !o.PrimaryKnown:
		return keepPriority, "primary not reachable: keep what was decided when it was"
	case !o.PrimaryMaster:
		return keepPriority, "its primary is not a master (a failover under way)"
	case !o.LinkUp:
		return makeUnpromotable, "link to the primary down while the primary answers (resync or cut off)"
	}
	lag := o.PrimaryOffset - o.Offset
	if lag > bound {
		return makeUnpromotable, fmt.Sprintf("%d bytes behind its primary, bound %d", lag, bound)
	}
	return makePromotable, fmt.Sprintf("%d bytes behind its primary, within bound %d", max(lag, 0), bound)
}

// primaryObs is what the guard saw around a primary it runs.
type primaryObs struct {
	Sentinels int // the addon's sentinels
	Answered  int // of them, how many answered a PING from this host
	// MinorityFor is how long fewer than a majority have answered (0 when
	// a majority answers now).
	MinorityFor time.Duration
	// HadMajority: a majority of its sentinels answered this host at least
	// once since the member ran here. Until then the sentinels are still
	// starting (a starter becoming a business addon gets them after its
	// primary), and sentinels that never ran cannot fail it over.
	HadMajority bool
}

// decideFence says whether a primary must be fenced (pure): when a
// majority of its sentinels, once reached, has been out of reach from its
// host for isolateAfter. A majority answering lifts the fence.
func decideFence(o primaryObs) (bool, string) {
	if o.Sentinels == 0 {
		return false, "no sentinels"
	}
	if o.Answered*2 > o.Sentinels {
		return false, fmt.Sprintf("%d of %d sentinels reachable", o.Answered, o.Sentinels)
	}
	if !o.HadMajority {
		return false, fmt.Sprintf("%d of %d sentinels reachable, a majority never yet (starting)", o.Answered, o.Sentinels)
	}
	if o.MinorityFor < isolateAfter {
		return false, fmt.Sprintf("%d of %d sentinels reachable for %s (fence after %s)", o.Answered, o.Sentinels, o.MinorityFor, isolateAfter)
	}
	return true, fmt.Sprintf("%d of %d sentinels reachable for %s: isolated", o.Answered, o.Sentinels, o.MinorityFor.Round(time.Millisecond))
}

// guardState is the guard's per-member memory.
type guardState struct {
	mu sync.Mutex
	// minoritySince: since when a primary's host reached fewer than a
	// majority of its sentinels.
	minoritySince map[string]time.Time
	// majoritySeen: members whose host reached a majority of their
	// sentinels at least once (primaryObs.HadMajority).
	majoritySeen map[string]bool
	// last decision logged per member (logged on change only).
	last map[string]string
	// clients are kept from one look to the next (a dial and an AUTH per
	// member, primary and sentinel every 250 ms would be most of the
	// guard's cost), by member id + address; used marks those asked for
	// since the last sweep, the others are closed.
	clients map[string]*redis.Client
	used    map[string]bool
}

// client returns the guard's client of addr for member id, made by mk
// the first time; a new credential (a digest of it is part of the key)
// gets a new client.
func (g *guardState) client(id, addr, password string, mk func() *redis.Options) *redis.Client {
	sum := sha256.Sum256([]byte(password))
	key := id + "|" + addr + "|" + hex.EncodeToString(sum[:8])
	g.mu.Lock()
	defer g.mu.Unlock()
	g.used[key] = true
	if c, ok := g.clients[key]; ok {
		return c
	}
	c := redis.NewClient(mk())
	g.clients[key] = c
	return c
}

// sweep closes the clients not asked for since the last sweep.
func (g *guardState) sweep() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, c := range g.clients {
		if !g.used[k] {
			_ = c.Close()
			delete(g.clients, k)
		}
	}
	g.used = map[string]bool{}
}

// closeAll closes every client (the loop's end).
func (g *guardState) closeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, c := range g.clients {
		_ = c.Close()
		delete(g.clients, k)
	}
}

var guards sync.Map // *Agent → *guardState

func (a *Agent) guard() *guardState {
	if g, ok := guards.Load(a); ok {
		return g.(*guardState)
	}
	g, _ := guards.LoadOrStore(a, &guardState{minoritySince: map[string]time.Time{}, majoritySeen: map[string]bool{}, last: map[string]string{},
		clients: map[string]*redis.Client{}, used: map[string]bool{}})
	return g.(*guardState)
}

// noteDecision logs a decision when it changed for member id.
func (a *Agent) noteDecision(id, what, why string) {
	g := a.guard()
	g.mu.Lock()
	changed := g.last[id] != what
	g.last[id] = what
	g.mu.Unlock()
	if !changed {
		return
	}
	if what == "fenced" || what == makeUnpromotable.String() {
		a.log.Warn("failover guard", "member", id, "decision", what, "why", why)
		return
	}
	a.log.Info("failover guard", "member", id, "decision", what, "why", why)
}

// guardLoop runs the guard every guardInterval until ctx ends.
func (a *Agent) guardLoop(ctx context.Context) {
	t := time.NewTicker(guardInterval)
	defer t.Stop()
	defer a.guard().closeAll()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		var members []api.Assignment
		for _, as := range a.assigned {
			if isBusinessRedis(as) && !as.Stopped && !as.FleetPassword.IsZero() {
				members = append(members, as)
			}
		}
		a.mu.Unlock()
		var wg sync.WaitGroup
		for _, as := range members {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.guardMember(ctx, as)
			}()
		}
		wg.Wait()
		a.guardForget(members)
		a.guard().sweep()
	}
}

// guardForget drops the memory of members no longer assigned.
func (a *Agent) guardForget(members []api.Assignment) {
	keep := map[string]bool{}
	for _, as := range members {
		keep[as.MemberID] = true
	}
	g := a.guard()
	g.mu.Lock()
	defer g.mu.Unlock()
	for id := range g.last {
		if !keep[id] {
			delete(g.last, id)
		}
	}
	for id := range g.minoritySince {
		if !keep[id] {
			delete(g.minoritySince, id)
		}
	}
	for id := range g.majoritySeen {
		if !keep[id] {
			delete(g.majoritySeen, id)
		}
	}
}

// guardMember looks at one business redis member and acts.
func (a *Agent) guardMember(ctx context.Context, as api.Assignment) {
	ctx, cancel := context.WithTimeout(ctx, guardTimeout)
	defer cancel()
	pw := as.FleetPassword.Reveal()
	self := net.JoinHostPort(as.Address, strconv.Itoa(as.Port))
	g := a.guard()
	c := g.client(as.MemberID, self, pw, func() *redis.Options { return redisctl.MemberOptions(self, pw) })
	repl, err := redisctl.ClientReplication(ctx, c)
	if err != nil {
		return // not running or not answering: liveness is someone else's
	}
	if repl.IsMaster() {
		a.guardPrimary(ctx, as, c)
		return
	}
	a.clearMinority(as.MemberID)
	o := replicaObs{LinkUp: repl.LinkStatus == "up", Offset: repl.Offset}
	var pc *redis.Client
	if primary := repl.Master(); primary != "" {
		pc = g.client(as.MemberID, primary, pw, func() *redis.Options { return redisctl.MemberOptions(primary, pw) })
		if pr, err := redisctl.ClientReplication(ctx, pc); err == nil {
			o.PrimaryKnown, o.PrimaryMaster, o.PrimaryOffset = true, pr.IsMaster(), pr.Offset
		}
	}
	d, why := decideReplica(o, a.promoteBound())
	switch d {
	case makePromotable:
		// Fence-independent: the priority only.
		if err := setParam(ctx, c, redisctl.PriorityParam(true)); err != nil {
			a.log.Warn("failover guard: cannot make the replica promotable", "member", as.MemberID, "err", err)
			return
		}
	case makeUnpromotable:
		if err := setParam(ctx, c, redisctl.PriorityParam(false)); err != nil {
			a.log.Warn("failover guard: cannot make the replica unpromotable", "member", as.MemberID, "err", err)
			return
		}
	default:
		return
	}
	a.noteDecision(as.MemberID, d.String(), why)
}

// guardPrimary fences or unfences the primary behind c.
func (a *Agent) guardPrimary(ctx context.Context, as api.Assignment, c *redis.Client) {
	answered := a.sentinelsReachable(ctx, as)
	o := primaryObs{Sentinels: len(as.Sentinels), Answered: answered}
	now := time.Now()
	g := a.guard()
	g.mu.Lock()
	if answered*2 > len(as.Sentinels) {
		delete(g.minoritySince, as.MemberID)
		g.majoritySeen[as.MemberID] = true
	} else {
		since, ok := g.minoritySince[as.MemberID]
		if !ok {
			since = now
			g.minoritySince[as.MemberID] = now
		}
		o.MinorityFor = now.Sub(since)
	}
	o.HadMajority = g.majoritySeen[as.MemberID]
	g.mu.Unlock()
	fence, why := decideFence(o)
	for _, p := range redisctl.FenceParams(fence) {
		if err := setParam(ctx, c, p); err != nil {
			a.log.Warn("failover guard: cannot set the primary's fence", "member", as.MemberID, "fence", fence, "err", err)
			return
		}
	}
	what := "unfenced"
	if fence {
		what = "fenced"
	}
	a.noteDecision(as.MemberID, what, why)
}

func (a *Agent) clearMinority(id string) {
	g := a.guard()
	g.mu.Lock()
	delete(g.minoritySince, id)
	g.mu.Unlock()
}

// sentinelsReachable PINGs the addon's sentinels from this host's address
// (so a partition of the host cuts these connections too) and counts the
// answers.
func (a *Agent) sentinelsReachable(ctx context.Context, as api.Assignment) int {
	var (
		mu sync.Mutex
		n  int
		wg sync.WaitGroup
	)
	for _, s := range as.Sentinels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, sentinelAskTimeout)
			defer cancel()
			sc := a.guard().client(as.MemberID, "sentinel "+s, as.FleetPassword.Reveal(), func() *redis.Options {
				opt := redisctl.SentinelOptions(s, as.FleetPassword.Reveal())
				opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = sentinelAskTimeout, sentinelAskTimeout, sentinelAskTimeout
				// Its own dialer: go-redis then leaves TLS (member TLS) to it.
				opt.Dialer = redisctl.DialTLS(fromAddress(as.Address, sentinelAskTimeout), opt.TLSConfig)
				return opt
			})
			if sc.Ping(ctx).Err() == nil {
				mu.Lock()
				n++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return n
}

// fromAddress dials from ip (the host's address), falling back to the
// kernel's choice when ip cannot be bound.
func fromAddress(ip string, timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		if p := net.ParseIP(ip); p != nil {
			d.LocalAddr = &net.TCPAddr{IP: p}
		}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil && errors.Is(err, syscall.EADDRNOTAVAIL) {
			d.LocalAddr = nil
			return d.DialContext(ctx, network, addr)
		}
		return conn, err
	}
}

// setParam sets a CONFIG parameter when CONFIG GET says it differs.
func setParam(ctx context.Context, c *redis.Client, p redisctl.Param) error {
	got, err := c.ConfigGet(ctx, p.Name).Result()
	if err != nil {
		return fmt.Errorf("CONFIG GET %s: %w", p.Name, err)
	}
	if got[p.Name] == p.Value {
		return nil
	}
	if err := c.ConfigSet(ctx, p.Name, p.Value).Err(); err != nil {
		return fmt.Errorf("CONFIG SET %s %s: %w", p.Name, p.Value, err)
	}
	return nil
}

// promoteBound is the configured bound on a promoted replica's lag.
func (a *Agent) promoteBound() int64 {
	if a.cfg.PromoteMaxLagBytes > 0 {
		return a.cfg.PromoteMaxLagBytes
	}
	return redisctl.DefaultPromoteMaxLagBytes
}
