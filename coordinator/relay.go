package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// figuresRelay copies the figures of every heartbeat the leader receives to
// the other coordinator members, so each keeps the same per-minute history
// and a new leader does not start from nothing. Best effort and bounded: a
// queue per peer, dropped when full; never through the Raft log.
type figuresRelay struct {
	store *Store
	self  string
	log   *slog.Logger
	hc    *http.Client

	mu     sync.Mutex
	queues map[string]chan api.HeartbeatRequest // peer http addr → queue
}

const relayQueue = 64

func newFiguresRelay(store *Store, self string, holder *identity.Holder, log *slog.Logger) *figuresRelay {
	return &figuresRelay{store: store, self: self, log: log,
		hc:     &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: holder.ClientConfig(), MaxIdleConnsPerHost: 2}},
		queues: map[string]chan api.HeartbeatRequest{}}
}

// send queues a heartbeat's figures for every other member.
func (r *figuresRelay) send(ctx context.Context, req api.HeartbeatRequest) {
	// Only what the history needs: no assignment data, no secrets.
	slim := api.HeartbeatRequest{HostID: req.HostID, Stats: req.Stats}
	for _, m := range req.Members {
		slim.Members = append(slim.Members, api.MemberStatus{MemberID: m.MemberID, AddonID: m.AddonID, Role: m.Role, Stats: m.Stats})
	}
	var peers []string
	r.store.FSM().Read(func(s *State, _ uint64) {
		for id, c := range s.Coordinators {
			if id != r.self && c.HTTPAddr != "" {
				peers = append(peers, c.HTTPAddr)
			}
		}
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range peers {
		q, ok := r.queues[p]
		if !ok {
			q = make(chan api.HeartbeatRequest, relayQueue)
			r.queues[p] = q
			go r.run(ctx, p, q)
		}
		select {
		case q <- slim:
		default: // peer slow or down: its history has a gap, nothing else
		}
	}
}

func (r *figuresRelay) run(ctx context.Context, peer string, q chan api.HeartbeatRequest) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-q:
			if err := r.post(ctx, peer, req); err != nil {
				r.log.Debug("figures relay", "peer", peer, "err", err)
			}
		}
	}
}

func (r *figuresRelay) post(ctx context.Context, peer string, req api.HeartbeatRequest) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode figures: %w", err)
	}
	hreq, err := r.store.peerRequest(ctx, http.MethodPost, peer, "/v1/internal/figures", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := r.hc.Do(hreq)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s answered %s", peer, resp.Status)
	}
	return nil
}

// handleFigures records figures relayed by the leader (peer API only,
// members only).
func (s *Server) handleFigures(w http.ResponseWriter, r *http.Request) {
	if c := callerOf(r); !c.plain && (c.admin || c.peer.Kind != identity.KindMember) {
		writeError(w, fmt.Errorf("%w: figures are relayed by coordinator members only", api.ErrForbidden))
		return
	}
	var req api.HeartbeatRequest
	if err := api.DecodeN(r.Body, &req, api.MaxHeartbeatBytes); err != nil {
		writeError(w, err)
		return
	}
	if err := req.Validate(); err != nil {
		writeError(w, err)
		return
	}
	s.stats.record(req, s.now())
	w.WriteHeader(http.StatusNoContent)
}
