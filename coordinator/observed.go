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

// record stores a heartbeat and wakes the controllers.
func (o *observed) record(req api.HeartbeatRequest, at time.Time) {
	o.mu.Lock()
	h := &hostObs{lastSeen: at, members: map[string]api.MemberStatus{}, stats: req.Stats, unknown: req.Unknown}
	for _, m := range req.Members {
		h.members[m.MemberID] = m
	}
	o.hosts[req.HostID] = h
	ch := o.changed
	o.changed = make(chan struct{})
	o.mu.Unlock()
	close(ch)
}

// Changed returns a channel closed at the next heartbeat.
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
