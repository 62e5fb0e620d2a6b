package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestHandleFiguresBatchAndSingle: a member records a relayed batch (the
// leader's one request per interval) and a single heartbeat (what a leader
// of an older release sends); a batch with a bad heartbeat is refused
// whole with 400 (which is also what an older member answers a batch:
// the relay then sends singles); an agent may not relay.
func TestHandleFiguresBatchAndSingle(t *testing.T) {
	s := &Server{stats: newStatsHistory(), now: time.Now}
	member := context.WithValue(context.Background(), callerKey{}, caller{peer: identity.Peer{Kind: identity.KindMember, Name: "c1"}})
	agent := context.WithValue(context.Background(), callerKey{}, caller{peer: identity.Peer{Kind: identity.KindAgent, Name: "h1"}})
	beat := func(host, member string, mb uint64) string {
		return string(mustJSON(t, api.HeartbeatRequest{HostID: host, Members: []api.MemberStatus{{MemberID: member, AddonID: "a1", Role: api.RoleRedis,
			Stats: &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: mb << 20}}}}}))
	}
	post := func(ctx context.Context, body string) int {
		w := httptest.NewRecorder()
		s.handleFigures(w, httptest.NewRequest(http.MethodPost, "/v1/internal/figures", strings.NewReader(body)).WithContext(ctx))
		return w.Code
	}
	memory := func(id string) int {
		if f, _ := s.stats.member(id, time.Time{}); f != nil {
			return int(f.MemoryBytes >> 20)
		}
		return -1
	}
	if code := post(member, " \n["+beat("h1", "m1", 7)+","+beat("h2", "m2", 9)+"]"); code != http.StatusNoContent {
		t.Fatalf("batch: %d", code)
	}
	if memory("m1") != 7 || memory("m2") != 9 {
		t.Fatalf("batch recorded m1 %d MiB, m2 %d MiB; want 7 and 9", memory("m1"), memory("m2"))
	}
	if code := post(member, beat("h3", "m3", 5)); code != http.StatusNoContent || memory("m3") != 5 {
		t.Fatalf("single: %d, m3 %d MiB", code, memory("m3"))
	}
	if code := post(member, "["+beat("h4", "m4", 3)+`,{"members":[]}]`); code != http.StatusBadRequest || memory("m4") != -1 {
		t.Fatalf("batch with a heartbeat without a host: %d, m4 %d MiB; want 400 and nothing recorded", code, memory("m4"))
	}
	if code := post(agent, beat("h5", "m5", 1)); code != http.StatusForbidden {
		t.Fatalf("an agent relaying: %d; want 403", code)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRelayEncodesOnceForEveryPeer: what queued goes to every other member
// in one request an interval, the same body to each; a member that answers
// a batch 400 (an older release) then gets one request per heartbeat.
func TestRelayEncodesOnceForEveryPeer(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{} // peer → bodies received
	serve := func(name string, takesBatches bool) *httptest.Server {
		return httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			got[name] = append(got[name], string(b))
			mu.Unlock()
			if !takesBatches && strings.HasPrefix(string(b), "[") {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}))
	}
	newer, older := serve("newer", true), serve("older", false)
	defer newer.Close()
	defer older.Close()
	f := NewFSM(testutil.Logger(t))
	for i, c := range []api.CoordinatorMember{{ID: "c1", HTTPAddr: "127.0.0.1:1"},
		{ID: "c2", HTTPAddr: newer.Listener.Addr().String()}, {ID: "c3", HTTPAddr: older.Listener.Addr().String()}} {
		f.Apply(entry(t, uint64(i+1), CmdCoordinatorUpsert, CoordinatorUpsertCmd{Member: c}))
	}
	r := &figuresRelay{store: &Store{fsm: f}, self: "c1", log: testutil.Logger(t), peers: map[string]chan relayBatch{},
		hc: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	beat := func(host string) api.HeartbeatRequest {
		return api.HeartbeatRequest{HostID: host, Members: []api.MemberStatus{{MemberID: host + "-m", AddonID: "a1", Role: api.RoleRedis, State: api.MemberRunning,
			Stats: &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: 7 << 20}}}}}
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			done := ok()
			mu.Unlock()
			if done {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: received %v", what, got)
			}
		}
	}
	r.send(ctx, beat("h1"))
	r.send(ctx, beat("h2"))
	waitFor("the first batch at both", func() bool { return len(got["newer"]) == 1 && len(got["older"]) == 1 })
	mu.Lock()
	if got["newer"][0] != got["older"][0] {
		t.Fatalf("the peers got different bodies:\n%s\n%s", got["newer"][0], got["older"][0])
	}
	var batch []api.HeartbeatRequest
	if err := json.Unmarshal([]byte(got["newer"][0]), &batch); err != nil || len(batch) != 2 || batch[0].HostID != "h1" || batch[1].Members[0].State != "" {
		t.Fatalf("batch %s (%v): want h1 and h2, figures only", got["newer"][0], err)
	}
	mu.Unlock()
	r.send(ctx, beat("h3"))
	r.send(ctx, beat("h4"))
	waitFor("a batch to the newer, singles to the older", func() bool { return len(got["newer"]) == 2 && len(got["older"]) == 3 })
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(got["older"][1], `{"host_id":"h3"`) || !strings.HasPrefix(got["older"][2], `{"host_id":"h4"`) {
		t.Fatalf("the older release got %v; want h3's and h4's heartbeats one by one", got["older"][1:])
	}
}
