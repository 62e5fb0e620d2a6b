package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// hostsController marks hosts down. Two signals, two speeds:
//
//   - Lost: the agent's liveness signal (every 250 ms) has stopped for
//     suspectAfter (1 s) and none of the host's members accepts a TCP
//     connection (probeTimeout each). A member that is busy still accepts
//     (the kernel does), so a busy primary never looks lost; a dead process
//     refuses and a vanished host times out. The host is marked down at
//     once, so its primaries fail over and its VIPs move within about two
//     seconds of the loss, without waiting for Sentinel.
//   - Silent: no signal for downAfter (5 s) while its members may still
//     answer (an agent cut off from the coordinators, or restarting). Marked
//     down for placement and healing, but not lost: its primaries are not
//     failed over blindly (a failover of a serving primary loses the writes
//     it takes meanwhile); healing moves them with a zero-loss switchover.
//
// A heartbeat from a down host marks it ready again (in the heartbeat
// handler). A new leader counts every host as seen at the moment it took
// over, so a leader change never flaps the fleet. And when more than half
// of the hosts fall silent at once, none is marked down (silenceStorm):
// the likelier cause is the coordinator's own reach, not the hosts.
type hostsController struct {
	store        *Store
	obs          *observed
	log          *slog.Logger
	now          func() time.Time
	downAfter    time.Duration
	suspectAfter time.Duration
	// probe reports whether any of addrs accepts a connection.
	probe func(ctx context.Context, addrs []string) bool

	mu        sync.Mutex
	lastProbe map[string]time.Time
	answering map[string]bool // host → its members answered the last probe
}

// Probe figures.
const (
	probeTimeout = 300 * time.Millisecond
	probeEvery   = 500 * time.Millisecond
)

func (c *hostsController) Name() string { return "hosts" }

// hostVerdict is the pure rule: given how long the host has been silent
// and whether its members answered a probe (probed = a probe ran), mark it
// down now ("" = not yet), with why.
//
// lost is true when the probe found nothing answering (the host is gone:
// its primaries may be failed over at once); a host down for silence
// alone may still serve its clients.
func hostVerdict(silence, suspectAfter, downAfter time.Duration, hasMembers, probed, answering bool) (down, probe, lost bool, why string) {
	switch {
	case silence >= downAfter:
		lost = probed && !answering
		return true, false, lost, fmt.Sprintf("no heartbeat for %s", silence.Round(time.Millisecond))
	case suspectAfter <= 0 || silence < suspectAfter || !hasMembers:
		return false, false, false, ""
	case !probed:
		return false, true, false, ""
	case !answering:
		return true, false, true, fmt.Sprintf("lost: no liveness signal for %s and none of its members accepts a connection", silence.Round(time.Millisecond))
	}
	return false, false, false, ""
}

// silenceStorm is the pure rule that holds marking hosts down: more than
// half of the hosts not already down (at least stormMinHosts of them)
// silent at once. Hosts fail one by one or a rack at a time; a fleet going
// quiet together is the coordinator cut off from it, or its agents still
// reconnecting after a leader change (at 10,000 hosts the new leader
// marked 13,904 host records down while their agents' requests queued on
// it) — and marking them down would fail over and move serving members of
// every addon on the word of the one party that cannot see. Healing
// resumes by itself when enough hosts are heard again; an operator can
// still drain a host.
func silenceStorm(silent, up int) bool {
	return up >= stormMinHosts && 2*silent > up
}

// stormMinHosts: below it every silent host is judged alone (two hosts, one
// silent, is not a storm).
const stormMinHosts = 3

func (c *hostsController) Run(ctx context.Context) {
	c.obs.reset()
	c.mu.Lock()
	c.lastProbe, c.answering = map[string]time.Time{}, map[string]bool{}
	c.mu.Unlock()
	since := c.now()
	tick := time.NewTicker(max(min(c.downAfter/10, 100*time.Millisecond), 20*time.Millisecond))
	defer tick.Stop()
	var hosts []hostTick // reused: read every tick
	storm := false       // silenceStorm held the last tick
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// Every tick reads each host's id, state and whether it runs
		// members (the host index) — not every member's address (at
		// 10,000 hosts that was a fifth of the leader's CPU; addresses
		// only for a probe), nor a sorted copy of every host record (4 %
		// of the leader at 3,000 hosts under admin writes): a host's
		// record is read only to mark it down.
		hosts = hosts[:0]
		c.store.FSM().Read(func(s *State, _ uint64) {
			for id, h := range s.Hosts {
				hosts = append(hosts, hostTick{id: id, down: h.State == api.HostDown, hasMembers: len(s.hosts.hostAddons[id]) > 0})
			}
		})
		now := c.now()
		// Silence first, for every host not down: a storm holds them all.
		quiet := c.downAfter
		if c.suspectAfter > 0 && c.suspectAfter < quiet {
			quiet = c.suspectAfter
		}
		up, silent := 0, 0
		for i := range hosts {
			t := &hosts[i]
			if t.down {
				continue
			}
			t.last = c.obs.lastSeen(t.id)
			if t.last.Before(since) {
				t.last = since
			}
			up++
			// Half the threshold: hosts cut off together fell silent
			// within a liveness period of each other, and the first to
			// cross the threshold must not be judged alone.
			if now.Sub(t.last) >= quiet/2 {
				silent++
			}
		}
		if silenceStorm(silent, up) {
			if !storm {
				c.log.Warn("most hosts are silent at once: marking none down until they are heard again (the coordinator's own reach is the likelier cause)", "silent", silent, "hosts", up)
			}
			storm = true
			continue
		}
		if storm {
			c.log.Info("hosts heard again: judging silent hosts one by one", "silent", silent, "hosts", up)
			storm = false
		}
		var toProbe []string
		for _, t := range hosts {
			if t.down {
				continue
			}
			last := t.last
			c.mu.Lock()
			lp := c.lastProbe[t.id]
			probed := lp.After(last) && now.Sub(lp) < probeEvery
			answering := c.answering[t.id]
			c.mu.Unlock()
			down, probe, lost, why := hostVerdict(now.Sub(last), c.suspectAfter, c.downAfter, t.hasMembers, probed, answering)
			if probe {
				toProbe = append(toProbe, t.id)
				continue
			}
			if !down {
				continue
			}
			var (
				h  api.Host
				ok bool
			)
			c.store.FSM().Read(func(s *State, _ uint64) { h, ok = s.Hosts[t.id] })
			if !ok || h.State == api.HostDown {
				continue // removed or marked down since the tick's read
			}
			h.State, h.Lost = api.HostDown, lost
			h.DownSince = now.UTC()
			if _, err := c.store.Apply(ctx, CmdHostUpsert, HostUpsertCmd{Host: h}); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("cannot mark host down", "host", h.ID, "err", err)
				}
				continue
			}
			c.log.Warn("host is down", "host", h.ID, "why", why)
		}
		c.probeHosts(ctx, toProbe, c.memberAddrs(toProbe))
	}
}

// hostTick is what a tick of the hosts controller reads of each host.
type hostTick struct {
	id               string
	down, hasMembers bool
	last             time.Time // last heard, or the leader's start
}

// memberAddrs are the members' addresses on each of hosts.
func (c *hostsController) memberAddrs(hosts []string) map[string][]string {
	addrs := map[string][]string{}
	if len(hosts) == 0 {
		return addrs
	}
	c.store.FSM().Read(func(s *State, _ uint64) {
		for _, h := range hosts {
			for id := range s.hosts.hostAddons[h] {
				for _, m := range s.Addons[id].Members {
					if m.HostID == h {
						addrs[h] = append(addrs[h], memberAddr(s, m))
					}
				}
			}
		}
	})
	return addrs
}

// probeHosts probes each host's members at once (in parallel) and records
// the outcome; the next tick decides.
func (c *hostsController) probeHosts(ctx context.Context, hosts []string, addrs map[string][]string) {
	if len(hosts) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			ok := c.probe(pctx, addrs[h])
			cancel()
			c.mu.Lock()
			c.lastProbe[h], c.answering[h] = c.now(), ok
			c.mu.Unlock()
			if ok {
				c.log.Info("host silent but its members accept connections; not lost", "host", h)
			}
		}()
	}
	wg.Wait()
}

// probeTCP reports whether any of addrs accepts a TCP connection within
// ctx. Accepting is the kernel's work: a busy server accepts, a dead
// process refuses, a lost host does not answer.
func probeTCP(ctx context.Context, addrs []string) bool {
	ok := make(chan bool, len(addrs))
	for _, a := range addrs {
		go func() {
			var d net.Dialer
			conn, err := d.DialContext(ctx, "tcp", a)
			if err == nil {
				_ = conn.Close()
			}
			ok <- err == nil
		}()
	}
	up := false
	for range addrs {
		up = <-ok || up
	}
	return up
}
