package coordinator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
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
