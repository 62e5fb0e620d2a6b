package coordinator

import (
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// observed is the leader's in-memory view of what agents report: last
// heartbeat per host and the latest status of every member. It is not in
// the Raft log (high churn); a new leader rebuilds it from the next
// heartbeats, and treats every host as seen at the moment it took over.
type observed struct {
	mu      sync.Mutex
	hosts   map[string]*hostObs
	changed chan struct{}
}

type hostObs struct {
	lastSeen time.Time
	members  map[string]api.MemberStatus
	stats    *api.HostReport
	unknown  []string
}

func newObserved() *observed {
	return &observed{hosts: map[string]*hostObs{}, changed: make(chan struct{})}
}

// alive records a host's liveness signal: it moves lastSeen only (no
// wake-up: nothing to decide on a host that is as it was).
func (o *observed) alive(hostID string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if h, ok := o.hosts[hostID]; ok {
		if at.After(h.lastSeen) {
			h.lastSeen = at
		}
		return
	}
	o.hosts[hostID] = &hostObs{lastSeen: at, members: map[string]api.MemberStatus{}}
}

// record stores a heartbeat and wakes the controllers when it says
// something new about a member (wakesUp). Figures and replication offsets
// move at every heartbeat: the controllers' periodic passes read them (at
// fleet size a pass per heartbeat was most of the leader's CPU).
func (o *observed) record(req api.HeartbeatRequest, at time.Time) {
	o.mu.Lock()
	h := &hostObs{lastSeen: at, members: map[string]api.MemberStatus{}, stats: req.Stats, unknown: req.Unknown}
	for _, m := range req.Members {
		h.members[m.MemberID] = m
	}
	prev := o.hosts[req.HostID]
	o.hosts[req.HostID] = h
	if !wakesUp(prev, h) {
		o.mu.Unlock()
		return
	}
	ch := o.changed
	o.changed = make(chan struct{})
	o.mu.Unlock()
	close(ch)
}

// wakesUp reports whether a host's new heartbeat differs from its last
// one in what decisions wait on: its members, their states, details,
// processes, roles and applied specs, the unknown members.
func wakesUp(prev, cur *hostObs) bool {
	if prev == nil || len(prev.members) != len(cur.members) || len(prev.unknown) != len(cur.unknown) {
		return true
	}
	for id, m := range cur.members {
		p, ok := prev.members[id]
		if !ok || p.State != m.State || p.Detail != m.Detail || p.Pid != m.Pid || !p.StartedAt.Equal(m.StartedAt) ||
			p.RedisRole != m.RedisRole || p.SpecHash != m.SpecHash {
			return true
		}
	}
	for i := range cur.unknown {
		if prev.unknown[i] != cur.unknown[i] {
			return true
		}
	}
	return false
}

// Changed returns a channel closed at the next heartbeat that says
// something new (record).
func (o *observed) Changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// lastSeen is the host's last heartbeat, zero if none since leadership.
func (o *observed) lastSeen(hostID string) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	if h, ok := o.hosts[hostID]; ok {
		return h.lastSeen
	}
	return time.Time{}
}

// member returns the latest status of a member on a host.
func (o *observed) member(hostID, memberID string) (api.MemberStatus, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.hosts[hostID]
	if !ok {
		return api.MemberStatus{}, false
	}
	m, ok := h.members[memberID]
	return m, ok
}

// reset forgets everything (on losing leadership).
func (o *observed) reset() {
	o.mu.Lock()
	o.hosts = map[string]*hostObs{}
	o.mu.Unlock()
}

// forget drops a removed host.
func (o *observed) forget(hostID string) {
	o.mu.Lock()
	delete(o.hosts, hostID)
	o.mu.Unlock()
}
