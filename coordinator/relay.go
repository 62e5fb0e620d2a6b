package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
)

// figuresRelay copies the figures of every heartbeat the leader receives to
// the other coordinator members, so each keeps the same per-minute history
// and a new leader does not start from nothing. Best effort and bounded:
// what queued since the last send (at most relayQueue heartbeats, the rest
// dropped), never through the Raft log. Every relayEvery the queue is
// encoded once (a JSON array) and the same body goes to each peer, by a
// worker per peer that holds at most one body waiting (a slow or down
// peer gets a gap, and holds up no other). One request per heartbeat cost
// the leader a TLS request each (at 1,000 hosts, 400 a second to two
// followers), and an encoding per peer twice the encoding (at 100,000
// addons, ~25 MB of figures a second). A member of an older release
// answers a batch 400; it then gets one request per heartbeat for
// relaySingleFor.
type figuresRelay struct {
	store *Store
	self  string
	log   *slog.Logger
	hc    *http.Client

	mu      sync.Mutex
	started bool
	pending []api.HeartbeatRequest
	peers   map[string]chan relayBatch // peer http addr → its worker's queue
}

// relayBatch is what one interval queued: encoded once, and the
// heartbeats themselves for a peer that takes no batches.
type relayBatch struct {
	body []byte
	reqs []api.HeartbeatRequest
}

const (
	// relayQueue bounds what waits for the next send: relayEvery of
	// heartbeats at 10,000 hosts every 5 s is 2,000.
	relayQueue = 4096
	// relayEvery is the shortest time between two requests to a peer.
	relayEvery = time.Second
	// relaySingleFor: how long a peer that refused a batch gets single
	// heartbeats before a batch is tried again.
	relaySingleFor = time.Minute
	// maxRelayBatchBytes bounds a relayed batch's body.
	maxRelayBatchBytes = 256 << 20
)

func newFiguresRelay(store *Store, self string, holder *identity.Holder, log *slog.Logger) *figuresRelay {
	return &figuresRelay{store: store, self: self, log: log,
		hc:    &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: holder.ClientConfig(), MaxIdleConnsPerHost: 2}},
		peers: map[string]chan relayBatch{}}
}

// send queues a heartbeat's figures for the other members.
func (r *figuresRelay) send(ctx context.Context, req api.HeartbeatRequest) {
	// Only what the history needs: no assignment data, no secrets.
	slim := api.HeartbeatRequest{HostID: req.HostID, Stats: req.Stats}
	for _, m := range req.Members {
		slim.Members = append(slim.Members, api.MemberStatus{MemberID: m.MemberID, AddonID: m.AddonID, Role: m.Role, Stats: m.Stats})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		r.started = true
		go r.run(ctx)
	}
	if len(r.pending) < relayQueue { // else: a gap in the peers' history, nothing else
		r.pending = append(r.pending, slim)
	}
}

// run sends what queued every relayEvery, encoded once, to every other
// member of the moment.
func (r *figuresRelay) run(ctx context.Context) {
	t := time.NewTicker(relayEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		reqs := r.pending
		r.pending = nil
		r.mu.Unlock()
		if len(reqs) == 0 {
			continue
		}
		var peers []string
		r.store.FSM().Read(func(s *State, _ uint64) {
			for id, c := range s.Coordinators {
				if id != r.self && c.HTTPAddr != "" {
					peers = append(peers, c.HTTPAddr)
				}
			}
		})
		if len(peers) == 0 {
			continue
		}
		body, err := json.Marshal(reqs)
		if err != nil {
			r.log.Warn("figures relay: encode", "err", err)
			continue
		}
		b := relayBatch{body: body, reqs: reqs}
		r.mu.Lock()
		for _, p := range peers {
			q, ok := r.peers[p]
			if !ok {
				q = make(chan relayBatch, 1)
				r.peers[p] = q
				go r.peer(ctx, p, q)
			}
			select {
			case q <- b:
			default: // the peer is still busy with an earlier batch: a gap
			}
		}
		r.mu.Unlock()
	}
}

// peer posts the batches queued for one member.
func (r *figuresRelay) peer(ctx context.Context, peer string, q chan relayBatch) {
	var singlesUntil time.Time // a peer of an older release: no batches until then
	for {
		var b relayBatch
		select {
		case <-ctx.Done():
			return
		case b = <-q:
		}
		if time.Now().Before(singlesUntil) {
			for _, req := range b.reqs {
				body, err := json.Marshal(req)
				if err == nil {
					err = r.post(ctx, peer, body)
				}
				if err != nil {
					r.log.Debug("figures relay", "peer", peer, "err", err)
				}
			}
			continue
		}
		if err := r.post(ctx, peer, b.body); err != nil {
			var refused *relayRefused
			if errors.As(err, &refused) && refused.code == http.StatusBadRequest {
				singlesUntil = time.Now().Add(relaySingleFor)
				r.log.Info("figures relay: the peer takes no batches (older release); one request per heartbeat", "peer", peer, "for", relaySingleFor)
			} else {
				r.log.Debug("figures relay", "peer", peer, "err", err)
			}
		}
	}
}

// relayRefused is a peer's answer other than 2xx.
type relayRefused struct {
	peer string
	code int
	text string
}

func (e *relayRefused) Error() string { return fmt.Sprintf("%s answered %s", e.peer, e.text) }

// post sends one heartbeat's figures, or a batch of them (an array),
// encoded.
func (r *figuresRelay) post(ctx context.Context, peer string, body []byte) error {
	hreq, err := r.store.peerRequest(ctx, http.MethodPost, peer, "/v1/internal/figures", bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := r.hc.Do(hreq)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return &relayRefused{peer: peer, code: resp.StatusCode, text: resp.Status}
	}
	return nil
}

// handleFigures records figures relayed by the leader (peer API only,
// members only): one heartbeat's (an object, as older releases send) or a
// batch (an array).
func (s *Server) handleFigures(w http.ResponseWriter, r *http.Request) {
	if c := callerOf(r); !c.plain && (c.admin || c.peer.Kind != identity.KindMember) {
		writeError(w, fmt.Errorf("%w: figures are relayed by coordinator members only", api.ErrForbidden))
		return
	}
	br := bufio.NewReader(r.Body)
	var reqs []api.HeartbeatRequest
	if first, _ := peekNonSpace(br); first == '[' {
		if err := decodeFigures(br, &reqs, maxRelayBatchBytes); err != nil {
			writeError(w, err)
			return
		}
	} else {
		var req api.HeartbeatRequest
		if err := decodeFigures(br, &req, api.MaxHeartbeatBytes); err != nil {
			writeError(w, err)
			return
		}
		reqs = append(reqs, req)
	}
	for i, req := range reqs {
		if err := req.Validate(); err != nil {
			writeError(w, fmt.Errorf("heartbeat %d of %d: %w", i+1, len(reqs), err))
			return
		}
	}
	now := s.now()
	for _, req := range reqs {
		s.stats.record(req, now)
	}
	w.WriteHeader(http.StatusNoContent)
}

// peekNonSpace is the first byte of r that is not JSON white space, left
// unread.
func peekNonSpace(r *bufio.Reader) (byte, error) {
	for {
		b, err := r.Peek(1)
		if err != nil {
			return 0, err
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			_, _ = r.ReadByte()
			continue
		}
		return b[0], nil
	}
}
