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
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cacheplane/cacheplane/api"
)

// Store wires the FSM into hashicorp/raft: bolt log and stable store, file
// snapshots, TCP transport. Only the first member bootstraps; others are
// added with Join.
type Store struct {
	cfg       Config
	log       *slog.Logger
	fsm       *FSM
	raft      *raft.Raft
	transport *raft.NetworkTransport
	bolt      *raftboltdb.BoltStore

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

// OpenStore opens (or creates) the member's Raft state in cfg.DataDir.
func OpenStore(cfg Config, log *slog.Logger, raftLogOutput io.Writer) (*Store, error) {
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

	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("resolve raft address %s: %w", cfg.RaftAddr, err)
	}
	transport, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, addr, 5, 5*time.Second, hlog)
	if err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", cfg.RaftAddr, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, hlog)
	if err != nil {
		transport.Close()
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		transport.Close()
		return nil, fmt.Errorf("open raft.db: %w", err)
	}
	s := &Store{cfg: cfg, log: log, fsm: NewFSM(log.With("component", "fsm")), transport: transport, bolt: bolt}

	existing, err := raft.HasExistingState(bolt, bolt, snaps)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("check raft state: %w", err)
	}
	r, err := raft.NewRaft(rc, s.fsm, bolt, bolt, snaps, transport)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
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

func (s *Store) closeStores() {
	_ = s.transport.Close()
	_ = s.bolt.Close()
}

// Close shuts Raft down (the member stays in the configuration).
func (s *Store) Close() error {
	s.ready.Store(false)
	var err error
	if s.raft != nil {
		err = s.raft.Shutdown().Error()
	}
	s.closeStores()
	return err
}

// FSM exposes the state machine for reads.
func (s *Store) FSM() *FSM { return s.fsm }

// IsLeader is true on a leader that has caught up with its log.
func (s *Store) IsLeader() bool {
	return s.raft.State() == raft.Leader && s.ready.Load()
}

// Leader returns the current leader's id and peer HTTP address, if known.
func (s *Store) Leader() (id string, httpAddr string) {
	_, lid := s.raft.LeaderWithID()
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
	timeout := time.Duration(s.cfg.ApplyTimeout)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, ctx.Err()
	}
	start := time.Now()
	f := s.raft.Apply(data, timeout)
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
	readIndex := s.raft.CommitIndex()
	if err := s.raft.VerifyLeader().Error(); err != nil {
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
	return s.raft.Barrier(timeout).Error()
}

// AddVoter adds a coordinator to the cluster. Idempotent: the same id and
// address is a no-op; a clash on id or address is removed first.
func (s *Store) AddVoter(ctx context.Context, req api.JoinRequest) error {
	cf := s.raft.GetConfiguration()
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
			if err := s.raft.RemoveServer(srv.ID, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("%w: remove clashing member %s: %v", api.ErrNotLeader, srv.ID, err)
			}
		}
	}
	if !present {
		if err := s.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), 0, 10*time.Second).Error(); err != nil {
			return fmt.Errorf("%w: add voter %s: %v", api.ErrNotLeader, req.ID, err)
		}
	}
	_, err := s.Apply(ctx, CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: api.CoordinatorMember{
		ID: req.ID, RaftAddr: req.RaftAddr, HTTPAddr: req.HTTPAddr,
	}})
	return err
}

// RemoveServer removes a coordinator from the cluster. Removing the leader
// itself makes it step down once the change commits.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	cf := s.raft.GetConfiguration()
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
	if err := s.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		return fmt.Errorf("%w: remove %s: %v", api.ErrNotLeader, id, err)
	}
	return nil
}

// Status describes the cluster as this member sees it.
func (s *Store) Status() (api.ClusterStatus, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return api.ClusterStatus{}, fmt.Errorf("read configuration: %w", err)
	}
	_, lid := s.raft.LeaderWithID()
	st := api.ClusterStatus{LeaderID: string(lid), ServedBy: s.cfg.ID, ServedState: s.raft.State().String()}
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
func (s *Store) LeaderCh() <-chan bool { return s.raft.LeaderCh() }

// setReady is called by the leader loop after its barrier (true) and on
// losing leadership (false).
func (s *Store) setReady(v bool) {
	if v {
		s.readyIndex.Store(s.raft.LastIndex())
	}
	s.ready.Store(v)
}

// isRaftLeader is the raw Raft state, before the barrier.
func (s *Store) isRaftLeader() bool { return s.raft.State() == raft.Leader }

// timeSince is time.Since, a variable for tests.
var timeSince = time.Since
