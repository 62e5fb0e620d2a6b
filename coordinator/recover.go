package coordinator

// Quorum-loss recovery. A cluster that lost the majority of its members has
// no leader and can never elect one: every write and consistent read is
// refused "no leader". hashicorp/raft's RecoverCluster rewrites a member's
// configuration, but only while its Raft is stopped. Here the surviving
// member does it in its own process, asked over its admin socket (which
// answers without a leader): it stops Raft, runs RecoverCluster with a
// configuration of itself alone, starts Raft again on the same files and
// leads at once. One command, no stopping of the daemon, no file to edit.
//
// Refused, with the reason: while this member sees a leader or is one; while
// it heard from a leader less than recoverQuiet ago (an election may be
// under way: it waits that out first); while any other member of the
// configuration answers on its Raft or peer address (a member that answers
// may be part of a majority this member cannot reach — recovering would fork
// the cluster — or a second survivor, to be wiped and re-joined instead);
// and without --confirm naming the member itself (the answer is then the
// plan: what is kept, what is dropped).
//
// What is kept: every entry of this member's log. RecoverCluster applies the
// whole log, so an entry this member had received but the old majority had
// not yet committed (its client was told "no leader" or timed out) becomes
// committed too. An entry the old majority committed that never reached
// this member is lost: with 1 survivor of 3, the 2 dead members could have
// committed an entry without it. The survivor with the highest last index
// is the one to recover.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cacheplane/cacheplane/api"
)

// recoverQuiet is how long a member must have heard from no leader before
// it recovers: several election timeouts, at least 2 s.
func recoverQuiet(cfg Config) time.Duration {
	q := 5 * time.Duration(cfg.ElectionTimeout)
	if q < 2*time.Second {
		q = 2 * time.Second
	}
	return q
}

// recoverLeadWithin bounds the wait for the recovered member to lead.
const recoverLeadWithin = 30 * time.Second

// recoveryPlan is what a recovery would do, once every check passed.
type recoveryPlan struct {
	dropped     []api.CoordinatorMember
	lastIndex   uint64
	lastContact time.Time
}

// aliveFunc reports whether something accepts connections on addr.
type aliveFunc func(ctx context.Context, addr string) bool

// dialAlive is a TCP connect within 1 s: a dead process refuses at once,
// a lost host does not answer.
func dialAlive(ctx context.Context, addr string) bool {
	if addr == "" {
		return false
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// planRecovery checks that this member may recover the cluster alone and
// says what it would drop.
func (s *Store) planRecovery(ctx context.Context, quiet time.Duration, alive aliveFunc) (recoveryPlan, error) {
	var plan recoveryPlan
	for {
		r := s.raft()
		if r.State() == raft.Leader {
			return plan, fmt.Errorf("%w: %s leads a cluster that has its majority: nothing to recover (to drop a dead member: cacheplane leave ID)", api.ErrConflict, s.cfg.ID)
		}
		plan.lastContact = r.LastContact()
		since := time.Since(plan.lastContact)
		// A leader heard from within a heartbeat timeout is alive; one
		// heard from longer ago may have just died: wait and see.
		if _, lid := r.LeaderWithID(); lid != "" && (since < time.Duration(s.cfg.HeartbeatTimeout) || since >= quiet) {
			return plan, fmt.Errorf("%w: the cluster has a leader (%s, heard from %s ago): nothing to recover (to drop a dead member: cacheplane leave ID)",
				api.ErrConflict, lid, since.Round(time.Millisecond))
		}
		if plan.lastContact.IsZero() || since >= quiet {
			break
		}
		t := time.NewTimer(quiet - since)
		select {
		case <-ctx.Done():
			t.Stop()
			return plan, fmt.Errorf("waiting for the cluster to stay without a leader: %w", ctx.Err())
		case <-t.C:
		}
	}
	r := s.raft()
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return plan, fmt.Errorf("read configuration: %w", err)
	}
	self := false
	s.fsm.Read(func(st *State, _ uint64) {
		for _, srv := range cf.Configuration().Servers {
			if srv.ID == raft.ServerID(s.cfg.ID) {
				self = true
				continue
			}
			plan.dropped = append(plan.dropped, api.CoordinatorMember{ID: string(srv.ID), RaftAddr: string(srv.Address),
				HTTPAddr: st.Coordinators[string(srv.ID)].HTTPAddr, Suffrage: srv.Suffrage.String()})
		}
	})
	if !self {
		return plan, fmt.Errorf("%w: %s is not in its own Raft configuration (it was removed, or never joined): it cannot recover the cluster", api.ErrConflict, s.cfg.ID)
	}
	if len(plan.dropped) == 0 {
		return plan, fmt.Errorf("%w: %s is the only member of its configuration and has no leader yet: wait for it to elect itself", api.ErrConflict, s.cfg.ID)
	}
	sort.Slice(plan.dropped, func(i, j int) bool { return plan.dropped[i].ID < plan.dropped[j].ID })

	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		answers []string
	)
	for _, m := range plan.dropped {
		for _, addr := range []string{m.RaftAddr, m.HTTPAddr} {
			wg.Add(1)
			go func(id, addr string) {
				defer wg.Done()
				if alive(ctx, addr) {
					mu.Lock()
					answers = append(answers, id+" at "+addr)
					mu.Unlock()
				}
			}(m.ID, addr)
		}
	}
	wg.Wait()
	if len(answers) > 0 {
		sort.Strings(answers)
		return plan, fmt.Errorf("%w: %s answers: a member that is alive may be part of a majority %s cannot reach (recovering now would split the cluster in two) or be a second survivor. Stop it first; to keep a survivor's entries, recover the survivor whose log is longest and re-join the others with an empty data dir",
			api.ErrConflict, strings.Join(answers, ", "), s.cfg.ID)
	}
	plan.lastIndex = r.LastIndex()
	return plan, nil
}

// recoverAlone stops Raft, rewrites this member's configuration to itself
// alone with raft.RecoverCluster (the newest snapshot and every entry of
// the log applied to the FSM, written as a new snapshot carrying the
// configuration; the log compacted) and starts Raft again on the same files. A failed
// RecoverCluster leaves the files as they were and Raft restarted on them.
func (s *Store) recoverAlone() error {
	s.life.Lock()
	defer s.life.Unlock()
	old := s.transport
	if err := s.stopRaft(); err != nil {
		s.log.Warn("stopping raft for the recovery", "err", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, 3, s.hlog)
	var rerr error
	if err != nil {
		rerr = fmt.Errorf("snapshot store: %w", err)
	} else {
		conf := raft.Configuration{Servers: []raft.Server{{
			ID: raft.ServerID(s.cfg.ID), Address: raft.ServerAddress(s.cfg.RaftAddr), Suffrage: raft.Voter,
		}}}
		// The live FSM, configured as Raft's own (its keys open sealed
		// entries): it is rebuilt from the snapshot and the log, which
		// stale reads see as a follower catching up, and restored once
		// more when Raft starts. The transport only encodes addresses into
		// the snapshot's metadata.
		rerr = raft.RecoverCluster(s.rc, s.fsm, s.bolt, s.bolt, snaps, old, conf)
		if rerr != nil {
			rerr = fmt.Errorf("raft recovery: %w", rerr)
		}
	}
	if err := s.startRaft(); err != nil {
		return errors.Join(rerr, fmt.Errorf("start raft again: %w (restart cacheplane-coordinator)", err))
	}
	return rerr
}

// handleRecover serves POST /v1/cluster/recover, on the admin socket only:
// the plan without confirm, the recovery with it.
func (s *Server) handleRecover(w http.ResponseWriter, r *http.Request) {
	if cred, _ := r.Context().Value(peerCredKey{}).(peerCred); !cred.Known {
		writeError(w, fmt.Errorf("%w: a recovery is asked on the coordinator's admin socket only (cacheplane members-recover on its host)", api.ErrUnauthorized))
		return
	}
	var req api.RecoverRequest
	if err := api.Decode(r.Body, &req); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), recoverQuiet(s.cfg)+recoverLeadWithin+10*time.Second)
	defer cancel()
	plan, err := s.store.planRecovery(ctx, recoverQuiet(s.cfg), dialAlive)
	if err != nil {
		writeError(w, err)
		return
	}
	id := s.cfg.ID
	resp := api.RecoverResponse{Member: id, Dropped: plan.dropped, LastIndex: plan.lastIndex}
	if !plan.lastContact.IsZero() {
		resp.LastContact = plan.lastContact.UTC().Format(time.RFC3339)
	}
	ids := make([]string, len(plan.dropped))
	for i, m := range plan.dropped {
		ids[i] = m.ID
	}
	dropped := strings.Join(ids, ", ")
	if req.Confirm == "" {
		resp.Message = fmt.Sprintf("%s would become a one-member cluster from its own state and lead it: every entry of its log (up to index %d) is kept; "+
			"%s (not answering) would be dropped. An entry the old majority committed that never reached %s is lost. "+
			"Only if %s are gone for good: started again with their data, they would form a second cluster. Run again with --confirm %s to go ahead.",
			id, plan.lastIndex, dropped, id, dropped, id)
		writeJSON(w, http.StatusOK, resp)
		return
	}
	if req.Confirm != id {
		writeError(w, api.Invalidf("--confirm %q is not this member's id: the recovery makes %s a one-member cluster and drops %s; pass --confirm %s to go ahead", req.Confirm, id, dropped, id))
		return
	}
	s.log.Warn("recovering the cluster from this member alone (quorum lost)", "dropped", ids, "last_index", plan.lastIndex,
		"last_contact", resp.LastContact)
	if err := s.store.recoverAlone(); err != nil {
		writeError(w, err)
		return
	}
	// Done whether or not the caller still listens: finish the job.
	ctx, cancel = context.WithTimeout(context.WithoutCancel(r.Context()), recoverLeadWithin+10*time.Second)
	defer cancel()
	if err := waitLeading(ctx, s.store); err != nil {
		writeError(w, fmt.Errorf("%w: %s recovered its configuration but does not lead yet (%v): see its log", api.ErrNoLeader, id, err))
		return
	}
	// The dropped members' records go too: each may join again later,
	// with an empty data dir, under the same id or another.
	for _, m := range plan.dropped {
		if _, err := s.store.Apply(ctx, CmdCoordinatorRemove, CoordinatorRemoveCmd{ID: m.ID}); err != nil {
			writeError(w, fmt.Errorf("recovered, but forgetting %s's record failed: %w", m.ID, err))
			return
		}
	}
	s.log.Warn("cluster recovered: this member leads alone", "dropped", ids)
	resp.Recovered = true
	resp.Message = fmt.Sprintf("%s leads a one-member cluster; its log up to index %d is kept; dropped %s. "+
		"To add members back: on each, stop cacheplane-coordinator, empty its data dir, start it and run cacheplane join %s.",
		id, plan.lastIndex, dropped, s.cfg.HTTPAddr)
	writeJSON(w, http.StatusOK, resp)
}

// waitLeading polls until store leads and its barrier has passed.
func waitLeading(ctx context.Context, store *Store) error {
	ctx, cancel := context.WithTimeout(ctx, recoverLeadWithin)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !store.IsLeader() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
