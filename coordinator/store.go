package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// Store wires the FSM into hashicorp/raft: bolt log and stable store, file
// snapshots, TCP transport. Only the first member bootstraps; others are
// added with Join. Raft itself can be stopped and started again in the same
// process (recover.go: a quorum-loss recovery), so it is read through r().
type Store struct {
	// sealMode is sealOn or sealOff as the last Apply found it (logged
	// when it changes).
	sealMode atomic.Int32

	cfg  Config
	log  *slog.Logger
	fsm  *FSM
	rc   *raft.Config
	hlog hclog.Logger
	bolt *raftboltdb.BoltStore
	// holder is the member certificate Raft's TLS uses; plainRaft: the
	// member runs Raft without TLS (a cluster made before identities,
	// until cluster-secure and a restart).
	holder    *identity.Holder
	plainRaft bool
	// preIdentities: the data dir was made by a release before daemon
	// identities (no identitiesMarker). Until this member has its
	// certificate it serves and speaks plain HTTP on the peer API too
	// (Unsecured).
	preIdentities bool

	// life serialises starting and stopping Raft (Close, recovery).
	life      sync.Mutex
	raftp     atomic.Pointer[raft.Raft]
	transport *raft.NetworkTransport
	// leaderCh outlives any one Raft instance: forwardLeadership copies
	// each instance's LeaderCh into it until that instance stops.
	leaderCh chan bool
	fwdStop  chan struct{}
	fwdDone  chan struct{}

	// applySeconds, when set, observes every Apply's latency.
	applySeconds *prometheus.HistogramVec

	// ready is true on the leader once its barrier has applied every earlier
	// entry; only then does it serve writes and consistent reads.
	ready atomic.Bool
	// readyIndex is the last log index when the leader became ready: every
	// entry up to it is applied (no-op and barrier entries never reach the
	// FSM, so the FSM's own index may stay below it).
	readyIndex atomic.Uint64
}

// identitiesMarker is the file a data dir made with daemon identities has.
const identitiesMarker = "identities"

// OpenStore opens (or creates) the member's Raft state in cfg.DataDir.
// Raft runs over TLS with the member certificate of holder; only a member
// with Raft state and no certificate (a cluster made before identities)
// runs it in plaintext, until cluster-secure gives it one and it restarts.
func OpenStore(cfg Config, log *slog.Logger, raftLogOutput io.Writer, holder *identity.Holder) (*Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	level := hclog.LevelFromString(cfg.LogLevel)
	if level == hclog.Info {
		level = hclog.Warn // raft's info lines are chatty; warnings and errors matter
	}
	hlog := hclog.New(&hclog.LoggerOptions{
		Name: "raft", JSONFormat: true, Output: raftLogOutput, Level: level,
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = time.Duration(cfg.HeartbeatTimeout)
	rc.ElectionTimeout = time.Duration(cfg.ElectionTimeout)
	rc.LeaderLeaseTimeout = time.Duration(cfg.LeaderLeaseTimeout)
	rc.SnapshotInterval = time.Duration(cfg.SnapshotInterval)
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	rc.Logger = hlog

	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hlog)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft.db: %w", err)
	}
	var keys StateKeyring
	created := false
	if cfg.StateKeysFile == "" {
		log.Warn("state_keys_file is not set: the Raft log and snapshots keep the addons' passwords in plaintext (docs/security.md)")
	} else if keys, created, err = LoadStateKeys(cfg.StateKeysFile, time.Now()); err != nil {
		_ = bolt.Close()
		return nil, fmt.Errorf("config: %w", err)
	}
	if created {
		log.Warn("state keys file created with a new key: copy it (mode 0600) to every other coordinator of this cluster before they start, and keep a copy apart: this member's Raft log cannot be read without it",
			"state_keys_file", cfg.StateKeysFile, "keys", keys)
	}
	s := &Store{cfg: cfg, log: log, fsm: NewFSM(log.With("component", "fsm")), rc: rc, hlog: hlog, bolt: bolt,
		leaderCh: make(chan bool, 1), holder: holder}
	s.fsm.keys = keys
	if err := keys.opensLatest(snaps); err != nil {
		_ = bolt.Close()
		return nil, err
	}

	existing, err := raft.HasExistingState(bolt, bolt, snaps)
	if err != nil {
		_ = bolt.Close()
		return nil, fmt.Errorf("check raft state: %w", err)
	}
	// A data dir made by this release says so (identitiesMarker): a member
	// killed before its first certificate was written still runs Raft over
	// TLS when it comes back.
	marker := filepath.Join(cfg.DataDir, identitiesMarker)
	if !existing {
		if err := os.WriteFile(marker, []byte("this data dir was made by a coordinator with daemon identities: Raft over TLS only\n"), 0o600); err != nil {
			_ = bolt.Close()
			return nil, fmt.Errorf("write %s: %w", marker, err)
		}
	}
	_, markErr := os.Stat(marker)
	s.preIdentities = markErr != nil
	s.plainRaft = existing && holder.Get() == nil && markErr != nil
	if s.plainRaft {
		log.Warn("Raft runs WITHOUT TLS: this member has Raft state but no member certificate (a cluster made before identities); run cacheplane cluster-secure, then restart each coordinator (docs/security.md)")
	}
	if err := s.startRaft(); err != nil {
		_ = bolt.Close()
		return nil, err
	}
	r := s.raft()
	if cfg.Bootstrap && !existing {
		log.Info("bootstrapping a new cluster", "id", cfg.ID, "raft_addr", cfg.RaftAddr)
		f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			ID: raft.ServerID(cfg.ID), Address: raft.ServerAddress(cfg.RaftAddr),
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			_ = s.Close()
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
	}
	return s, nil
}

// startRaft opens the transport (TLS, or TCP for a member not secured
// yet) and starts Raft on the member's stores
// (restoring the newest snapshot into the FSM, then the log). Called with
// life held, or before the Store is shared.
func (s *Store) startRaft() error {
	addr, err := net.ResolveTCPAddr("tcp", s.cfg.RaftAddr)
	if err != nil {
		return fmt.Errorf("resolve raft address %s: %w", s.cfg.RaftAddr, err)
	}
	var transport *raft.NetworkTransport
	if s.plainRaft {
		transport, err = raft.NewTCPTransportWithLogger(s.cfg.RaftAddr, addr, 5, 5*time.Second, s.hlog)
	} else {
		var stream *tlsStream
		if stream, err = newTLSStream(s.cfg.RaftAddr, addr, s.holder); err == nil {
			transport = raft.NewNetworkTransportWithLogger(stream, 5, 5*time.Second, s.hlog)
		}
	}
	if err != nil {
		return fmt.Errorf("raft transport on %s: %w", s.cfg.RaftAddr, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, 3, s.hlog)
	if err != nil {
		transport.Close()
		return fmt.Errorf("snapshot store: %w", err)
	}
	r, err := raft.NewRaft(s.rc, s.fsm, s.bolt, s.bolt, snaps, transport)
	if err != nil {
		transport.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	s.transport = transport
	s.raftp.Store(r)
	s.fwdStop, s.fwdDone = make(chan struct{}), make(chan struct{})
	go s.forwardLeadership(r, s.fwdStop, s.fwdDone)
	return nil
}

// forwardLeadership copies r's leadership signals into s.leaderCh (the
// newest signal wins, as in Raft's own channel) until stop is closed.
func (s *Store) forwardLeadership(r *raft.Raft, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-stop:
			return
		case v := <-r.LeaderCh():
			select {
			case s.leaderCh <- v:
			default:
				select {
				case <-s.leaderCh:
				default:
				}
				s.leaderCh <- v // only this goroutine sends: room is certain
			}
		}
	}
}

// stopRaft shuts Raft down (closing its transport) and stops forwarding
// its leadership signals. Called with life held.
func (s *Store) stopRaft() error {
	s.ready.Store(false)
	var err error
	if r := s.raft(); r != nil {
		err = r.Shutdown().Error()
	}
	if s.fwdStop != nil {
		close(s.fwdStop)
		<-s.fwdDone
		s.fwdStop = nil
	}
	if s.transport != nil {
		_ = s.transport.Close()
	}
	return err
}

// raft is the running Raft instance (after a stop, the stopped one: every
// call answers ErrRaftShutdown).
func (s *Store) raft() *raft.Raft { return s.raftp.Load() }

// HandOff asks another voter to lead when this member leads, and waits up
// to within for the transfer (hashicorp/raft's leadership transfer: the
// most up-to-date follower is told to start an election at once). Without
// another voter, or when this member does not lead, it does nothing.
func (s *Store) HandOff(within time.Duration) error {
	r := s.raft()
	if r == nil || r.State() != raft.Leader {
		return nil
	}
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("hand off: configuration: %w", err)
	}
	others := 0
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage == raft.Voter && string(srv.ID) != s.cfg.ID {
			others++
		}
	}
	if others == 0 {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- r.LeadershipTransfer().Error() }()
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("hand off: %w", err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("hand off: no other voter took over within %s", within)
	}
}

// Close shuts Raft down (the member stays in the configuration).
func (s *Store) Close() error {
	s.life.Lock()
	defer s.life.Unlock()
	err := s.stopRaft()
	_ = s.bolt.Close()
	return err
}

// FSM exposes the state machine for reads.
func (s *Store) FSM() *FSM { return s.fsm }

// IsLeader is true on a leader that has caught up with its log.
func (s *Store) IsLeader() bool {
	return s.raft().State() == raft.Leader && s.ready.Load()
}

// Leader returns the current leader's id and peer HTTP address, if known.
func (s *Store) Leader() (id string, httpAddr string) {
	_, lid := s.raft().LeaderWithID()
	if lid == "" {
		return "", ""
	}
	s.fsm.Read(func(st *State, _ uint64) {
		httpAddr = st.Coordinators[string(lid)].HTTPAddr
	})
	return string(lid), httpAddr
}

// Apply proposes a command and waits for it to be applied. A business error
// from the FSM is returned as is; a Raft failure wraps ErrNotLeader. A
// command some member of the cluster cannot apply (its release is older
// than the command's protocol level) is never proposed: the answer is a
// *MixedReleasesError (409).
func (s *Store) Apply(ctx context.Context, t CommandType, payload any) (any, error) {
	if err := s.Supports(t); err != nil {
		return nil, err
	}
	data, err := Encode(t, payload)
	if err != nil {
		return nil, err
	}
	if ok, why := s.sealing(); ok {
		if data, err = s.fsm.keys.sealEntry(data); err != nil {
			return nil, fmt.Errorf("apply %s: seal: %w", t, err)
		}
		if s.sealMode.Swap(sealOn) != sealOn {
			s.log.Info("Raft entries are sealed with the state keys", "keys", s.fsm.keys)
		}
	} else if s.sealMode.Swap(sealOff) != sealOff {
		s.log.Warn("Raft entries are written unsealed (the addons' passwords in plaintext at rest) until every coordinator applies sealed entries and holds the same state keys", "why", why)
	}
	timeout := time.Duration(s.cfg.ApplyTimeout)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, ctx.Err()
	}
	start := time.Now()
	f := s.raft().Apply(data, timeout)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: gave up waiting (%v); the write may still be applied", api.ErrNoLeader, t, ctx.Err())
	}
	if s.applySeconds != nil {
		s.applySeconds.WithLabelValues(t.String()).Observe(time.Since(start).Seconds())
	}
	if err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrRaftShutdown):
			return nil, fmt.Errorf("%w: %s: %v", api.ErrNotLeader, t, err)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, fmt.Errorf("%w: %s: raft did not accept the write in time: %v", api.ErrNoLeader, t, err)
		}
		return nil, fmt.Errorf("apply %s: %w", t, err)
	}
	if err, ok := f.Response().(error); ok {
		return nil, err
	}
	return f.Response(), nil
}

// ConsistentRead returns once this leader's FSM reflects every entry
// committed before the call (read index, then leadership check).
func (s *Store) ConsistentRead(ctx context.Context) error {
	if !s.IsLeader() {
		return fmt.Errorf("%w: consistent read", api.ErrNotLeader)
	}
	readIndex := s.raft().CommitIndex()
	if err := s.raft().VerifyLeader().Error(); err != nil {
		return fmt.Errorf("%w: verify leadership: %v", api.ErrNotLeader, err)
	}
	applied := func() bool { return s.fsm.Index() >= readIndex || readIndex <= s.readyIndex.Load() }
	for !applied() {
		ch := s.fsm.Changed()
		if applied() {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("consistent read: %w", ctx.Err())
		}
	}
	return nil
}

// Barrier waits until every entry of earlier terms is applied.
func (s *Store) Barrier(timeout time.Duration) error {
	return s.raft().Barrier(timeout).Error()
}

// AddVoter adds a coordinator to the cluster. Idempotent: the same id and
// address is a no-op; a clash on id or address is removed first.
func (s *Store) AddVoter(ctx context.Context, req api.JoinRequest) error {
	if own := s.StateKeyCheck(); own != "" && req.StateKey != own {
		theirs := req.StateKey
		if theirs == "" {
			theirs = "no state keys"
		}
		return fmt.Errorf("%w: %s holds %s, this cluster seals its log with state key %s: start %s with the same state_keys_file as the other coordinators (copy it, mode 0600), then join again",
			api.ErrConflict, req.ID, theirs, own, req.ID)
	}
	cf := s.raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	present := false
	for _, srv := range cf.Configuration().Servers {
		sameID, sameAddr := srv.ID == raft.ServerID(req.ID), srv.Address == raft.ServerAddress(req.RaftAddr)
		if sameID && sameAddr {
			present = true
			continue
		}
		if sameID || sameAddr {
			s.log.Info("removing clashing member before join", "id", srv.ID, "addr", srv.Address)
			if err := s.raft().RemoveServer(srv.ID, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("%w: remove clashing member %s: %v", api.ErrNotLeader, srv.ID, err)
			}
		}
	}
	if !present {
		if err := s.raft().AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), 0, 10*time.Second).Error(); err != nil {
			return fmt.Errorf("%w: add voter %s: %v", api.ErrNotLeader, req.ID, err)
		}
	}
	_, err := s.Apply(ctx, CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: api.CoordinatorMember{
		ID: req.ID, RaftAddr: req.RaftAddr, HTTPAddr: req.HTTPAddr, Protocol: req.Protocol, Release: req.Release,
	}})
	return err
}

// RemoveServer removes a coordinator from the cluster. Removing the leader
// itself makes it step down once the change commits.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	cf := s.raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	found := false
	for _, srv := range cf.Configuration().Servers {
		if srv.ID == raft.ServerID(id) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: coordinator %s is not a member of the cluster", api.ErrNotFound, id)
	}
	if len(cf.Configuration().Servers) == 1 {
		return fmt.Errorf("%w: %s is the last member; a cluster cannot remove its last member", api.ErrConflict, id)
	}
	if _, err := s.Apply(ctx, CmdCoordinatorRemove, CoordinatorRemoveCmd{ID: id}); err != nil {
		return err
	}
	if err := s.raft().RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		return fmt.Errorf("%w: remove %s: %v", api.ErrNotLeader, id, err)
	}
	return nil
}

// Status describes the cluster as this member sees it.
func (s *Store) Status() (api.ClusterStatus, error) {
	cf := s.raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		return api.ClusterStatus{}, fmt.Errorf("read configuration: %w", err)
	}
	_, lid := s.raft().LeaderWithID()
	st := api.ClusterStatus{LeaderID: string(lid), ServedBy: s.cfg.ID, ServedState: s.raft().State().String()}
	s.fsm.Read(func(state *State, idx uint64) {
		st.AppliedIdx = idx
		for _, srv := range cf.Configuration().Servers {
			m := api.CoordinatorMember{
				ID: string(srv.ID), RaftAddr: string(srv.Address),
				Suffrage: srv.Suffrage.String(), Leader: srv.ID == lid,
			}
			lv := memberLevel(state, m.ID, s.cfg.ID)
			m.HTTPAddr, m.Protocol, m.Release = lv.HTTPAddr, lv.Protocol, lv.Release
			st.Members = append(st.Members, m)
		}
	})
	return st, nil
}

// LeaderCh reports leadership gains and losses.
func (s *Store) LeaderCh() <-chan bool { return s.leaderCh }

// setReady is called by the leader loop after its barrier (true) and on
// losing leadership (false).
func (s *Store) setReady(v bool) {
	if v {
		s.readyIndex.Store(s.raft().LastIndex())
	}
	s.ready.Store(v)
}

// isRaftLeader is the raw Raft state, before the barrier.
func (s *Store) isRaftLeader() bool { return s.raft().State() == raft.Leader }

// timeSince is time.Since, a variable for tests.
var timeSince = time.Since
