package coordinator

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
)

// Blocking query bounds.
const (
	defaultWait = 30 * time.Second
	maxWait     = 60 * time.Second
)

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) error {
	var req api.RegisterRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := checkHost(r, req.Host.ID); err != nil {
		return err
	}
	h := req.Host
	now := s.now().UTC()
	var (
		old    api.Host
		exists bool
	)
	s.store.FSM().Read(func(st *State, _ uint64) { old, exists = st.Hosts[h.ID] })
	h.State = api.HostReady
	h.RegisteredAt = now
	if exists {
		h.RegisteredAt = old.RegisteredAt
		if old.State == api.HostDraining {
			h.State = api.HostDraining
		}
	}
	h.LastHeartbeat = now
	if !exists || !sameHost(old, h) {
		if _, err := s.store.Apply(r.Context(), CmdHostUpsert, HostUpsertCmd{Host: h}); err != nil {
			return err
		}
		s.log.Info("host registered", "host", h.ID, "address", h.Address, "memory_mb", h.MemoryMB, "state", h.State)
	}
	s.obs.record(api.HeartbeatRequest{HostID: h.ID}, s.now())
	writeJSON(w, http.StatusOK, h)
	return nil
}

// sameHost compares what registration may change (not heartbeat times).
func sameHost(a, b api.Host) bool {
	if a.Address != b.Address || a.AgentAddr != b.AgentAddr || a.PublicAddress != b.PublicAddress || a.MemoryMB != b.MemoryMB ||
		a.State != b.State || len(a.Labels) != len(b.Labels) {
		return false
	}
	for k, v := range a.Labels {
		if b.Labels[k] != v {
			return false
		}
	}
	return true
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) error {
	var req api.HeartbeatRequest
	if err := decodeFigures(r.Body, &req, api.MaxHeartbeatBytes); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := checkHost(r, req.HostID); err != nil {
		return err
	}
	var (
		h        api.Host
		ok       bool
		idx      uint64
		assigned map[string]bool
	)
	s.store.FSM().Read(func(st *State, i uint64) {
		h, ok = st.Hosts[req.HostID]
		idx = i
		assigned = assignedMembers(st, req.HostID)
	})
	if !ok {
		return fmt.Errorf("%w: host %s is not registered; register first", api.ErrNotFound, req.HostID)
	}
	// A report about a member this host was not given is not evidence of
	// anything (a stale agent, a member being removed): keep it out of the
	// observed state, say so in the log.
	kept := req.Members[:0:0]
	for _, m := range req.Members {
		if assigned[m.MemberID] {
			kept = append(kept, m)
			continue
		}
		s.log.Warn("heartbeat reports a member not assigned to its host; ignored", "host", req.HostID, "member", m.MemberID, "state", m.State)
	}
	req.Members = kept
	s.obs.record(req, s.now())
	s.stats.record(req, s.now())
	if s.relay != nil {
		s.relay.send(s.relayCtx, req)
	}
	if h.State == api.HostDown {
		h.State, h.Lost = api.HostReady, false
		h.DownSince = time.Time{}
		h.LastHeartbeat = s.now().UTC()
		if _, err := s.store.Apply(r.Context(), CmdHostUpsert, HostUpsertCmd{Host: h}); err != nil {
			return err
		}
		s.log.Info("host is back", "host", h.ID)
	}
	writeJSON(w, http.StatusOK, api.HeartbeatResponse{State: h.State, Index: idx})
	return nil
}

// handleAlive records an agent's liveness signal (leader only, in memory).
func (s *Server) handleAlive(w http.ResponseWriter, r *http.Request) error {
	var req api.AliveRequest
	if err := api.Decode(r.Body, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := checkHost(r, req.HostID); err != nil {
		return err
	}
	s.obs.alive(req.HostID, s.now())
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// handleAssignments is the agents' blocking query.
func (s *Server) handleAssignments(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	hostID := q.Get("host")
	if err := api.ValidateMemberID("host", hostID); err != nil {
		return err
	}
	if err := checkHost(r, hostID); err != nil {
		return err
	}
	var index uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return api.Invalidf("index %q is not a number", v)
		}
		index = n
	}
	wait := defaultWait
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return api.Invalidf("wait %q is not a duration like 30s", v)
		}
		wait = min(d, maxWait)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		// Only an entry that may change this host's assignments wakes the
		// query (hostindex.go): 10,000 agents are not answered for every
		// write anywhere in the fleet.
		mod, ch := s.store.FSM().HostChanged(hostID)
		var (
			out   api.Assignments
			known bool
		)
		s.store.FSM().Read(func(st *State, idx uint64) {
			_, known = st.Hosts[hostID]
			out = api.Assignments{HostID: hostID, Index: idx, Assignments: assignmentsFor(st, hostID)}
			if s.backups != nil {
				out.Jobs = s.backups.jobsFor(st, hostID)
			}
		})
		if !known {
			return fmt.Errorf("%w: host %s is not registered; register first", api.ErrNotFound, hostID)
		}
		// A new agent (index 0), or one whose index is behind a change of
		// its host, is answered at once; one whose index is ahead of this
		// member's log waits for the next change or the timeout.
		if index == 0 || (mod > index && out.Index > index) {
			writeJSON(w, http.StatusOK, out)
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			writeJSON(w, http.StatusOK, out)
			return nil
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
}

// assignmentsFor lists the members hostID must run. Addons being removed
// are left out: their agents destroy the members.
func assignmentsFor(st *State, hostID string) []api.Assignment {
	host := st.Hosts[hostID]
	out := []api.Assignment{}
	for _, a := range st.addonsOn(hostID) {
		if !handsOut(st, a) {
			continue
		}
		plan, _ := api.FindPlan(st.Plans, a.Plan)
		primary, hasPrimary := operation.Primary(a)
		memberTLS := a.Settings.MemberTLS
		var servers, sentinels []string
		for _, m := range a.Members {
			switch m.Role {
			case api.RoleRedis:
				servers = append(servers, memberAddr(st, m))
			case api.RoleSentinel:
				sentinels = append(sentinels, memberAddr(st, m))
			}
		}
		for _, m := range a.Members {
			if m.HostID != hostID {
				continue
			}
			// An engine upgrade moves one member at a time to its
			// new version (the member's own, else the addon's).
			engine, version := a.MemberEngine(m)
			ev, _ := api.ResolveEngine(st.Engines, engine, version)
			as := api.Assignment{
				MemberID: m.ID, AddonID: a.ID, App: a.App, Role: m.Role,
				Address: host.Address, Port: m.Port, Engine: engine, Version: version,
				Image: ev.Images[m.Role], PlanMemoryMB: plan.MemoryMB, Password: a.Password, FleetPassword: a.FleetPassword, Settings: a.Settings,
				Stopped: m.Stopped, OtherPasswords: otherPasswords(a), SpecPassword: a.SpecPassword,
			}
			if memberTLS {
				// Every member: redis and sentinels serve with the
				// certificate; all verify with the CA; the agent's
				// clients speak TLS to every address named here
				// (agent/membertls.go), so the servers and sentinels are
				// named to every role.
				as.TLSCert, as.TLSKey, as.CACert = a.TLSCert, a.TLSKey, st.CA.CertPEM
				as.Servers, as.Sentinels = servers, sentinels
			}
			switch m.Role {
			case api.RoleRedis:
				if hasPrimary && primary.ID != m.ID {
					as.ReplicaOf = memberAddr(st, primary)
				}
				as.Sentinels = sentinels
				as.MasterName = a.ID
			case api.RoleSentinel:
				as.MasterName = a.ID
				if hasPrimary {
					as.Primary = memberAddr(st, primary)
				}
			case api.RoleHAProxy:
				// With a VIP both members bind it (the same haproxy.cfg, so
				// a move restarts nothing); the holder's agent enables the
				// clients' frontend, the other's disables it. Without one,
				// each binds its own address.
				as.Entrypoint = net.JoinHostPort(host.Address, strconv.Itoa(m.Port))
				if vip, ok := entrypointVIP(st, a); ok {
					as.Entrypoint = a.Entrypoint
					if m.Active {
						as.VIP = vip
					}
				}
				as.Servers = servers
				as.MaxConn = DefaultMaxConn
				// The addon's server certificate: the entrypoint
				// terminates TLS with it (addoncert.go).
				as.TLSCert, as.TLSKey = a.TLSCert, a.TLSKey
				// The agent routes only to the primary the sentinels agree on.
				as.Sentinels = sentinels
				as.MasterName = a.ID
			}
			out = append(out, as)
		}
	}
	return out
}

// handsOut says whether an addon's members are handed to their agents:
// not once it is being removed (its agents destroy the members), nor,
// with member TLS, before its certificate exists — the redis members and
// sentinels start only with it (they listen on TLS only), which the
// leader issues within a second of the placement (addoncert.go). Once
// issued a certificate is only ever replaced, so a running member is
// never withheld.
func handsOut(st *State, a api.Addon) bool {
	if a.Status == api.AddonRemoving {
		return false
	}
	return !a.Settings.MemberTLS || (a.TLSCert != "" && st.CA != nil)
}

// assignedMembers is the set of member ids assignmentsFor(st, hostID)
// lists, without building the assignments: a heartbeat checks its
// members against it (every heartbeat, so cheap at fleet size).
func assignedMembers(st *State, hostID string) map[string]bool {
	out := map[string]bool{}
	for id := range st.hosts.hostAddons[hostID] {
		a := st.Addons[id]
		if !handsOut(st, a) {
			continue
		}
		for _, m := range a.Members {
			if m.HostID == hostID {
				out[m.ID] = true
			}
		}
	}
	return out
}

// entrypointVIP returns the address of the addon's entrypoint when it is a
// VIP from the entrypoint pool (no host's own address).
func entrypointVIP(st *State, a api.Addon) (string, bool) {
	ep, _, err := net.SplitHostPort(a.Entrypoint)
	if err != nil || ep == "" || st.isHostAddress(ep) {
		return "", false
	}
	return ep, true
}

// DefaultMaxConn is the per-addon connection cap of the entrypoint.
const DefaultMaxConn = 2000

// memberAddr is the member's host:port.
func memberAddr(st *State, m api.Member) string {
	addr := m.Address
	if addr == "" {
		addr = st.Hosts[m.HostID].Address
	}
	return net.JoinHostPort(addr, strconv.Itoa(m.Port))
}
