package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

func TestJudgeLiveness(t *testing.T) {
	t0 := time.Unix(1000, 0)
	started := t0.Add(-time.Hour)
	const pid = 42
	refused := redisctl.Answer{ConnErr: errors.New("connect 127.0.0.31:6379: connection refused")}
	pong := redisctl.Answer{Reply: redisctl.ReplyPong}
	silent := redisctl.Answer{Reply: redisctl.ReplySilent}
	busy := redisctl.Answer{Reply: redisctl.ReplyBusy, Text: "-BUSY Redis is busy running a script."}
	loading := redisctl.Answer{Reply: redisctl.ReplyOther, Text: "-LOADING Redis is loading the dataset in memory"}
	tcpOnly := redisctl.Answer{Reply: redisctl.ReplyNotAsked}
	served := liveTrack{pid: pid, served: true, role: "master", offset: 7}
	tests := []struct {
		name      string
		obs       liveObs
		tr        liveTrack
		startedAt time.Time
		now       time.Time
		want      string // state
		act       bool
		probe     bool
		detail    string
	}{
		{"answers", liveObs{answer: pong}, served, started, t0, "", false, true, ""},
		{"tcp member accepts", liveObs{answer: tcpOnly}, liveTrack{}, started, t0, "", false, false, ""},
		{"silent: busy, keeps its role", liveObs{answer: silent}, served, started, t0, api.MemberBusy, false, false, "last role master"},
		{"-BUSY: busy", liveObs{answer: busy}, served, started, t0, api.MemberBusy, false, false, "busy-reply-threshold"},
		{"silent for an hour is still busy", liveObs{answer: silent}, liveTrack{pid: pid, served: true}, started, t0.Add(time.Hour), api.MemberBusy, false, false, ""},
		{"loading: no opinion", liveObs{answer: loading}, liveTrack{}, t0, t0, "", false, false, ""},
		{"frozen just now: busy", liveObs{frozen: true}, served, started, t0, api.MemberBusy, false, false, "frozen"},
		{"frozen 0.9 s: busy", liveObs{frozen: true}, liveTrack{pid: pid, served: true, frozenSince: t0.Add(-900 * time.Millisecond)}, started, t0, api.MemberBusy, false, false, "frozen"},
		{"frozen 1 s: unresponsive, acted on", liveObs{frozen: true}, liveTrack{pid: pid, served: true, frozenSince: t0.Add(-time.Second)}, started, t0, api.MemberUnresponsive, true, false, "frozen"},
		{"frozen another pid: starts over", liveObs{frozen: true}, liveTrack{pid: 41, frozenSince: t0.Add(-time.Minute)}, started, t0, api.MemberBusy, false, false, ""},
		{"refused after serving: unresponsive at once", liveObs{answer: refused, addr: "127.0.0.31:6379"}, served, started, t0, api.MemberUnresponsive, false, false, "refuses connections"},
		{"refused 1 s after serving: acted on", liveObs{answer: refused}, liveTrack{pid: pid, served: true, refusedSince: t0.Add(-time.Second)}, started, t0, api.MemberUnresponsive, true, false, "refuses"},
		{"refused, never served, just started: starting", liveObs{answer: refused}, liveTrack{}, t0.Add(-time.Second), t0, "", false, false, ""},
		{"refused, never served, past start grace", liveObs{answer: refused}, liveTrack{pid: pid, refusedSince: t0.Add(-2 * time.Second)}, t0.Add(-startGrace), t0, api.MemberUnresponsive, true, false, ""},
		{"a new process's refusal does not inherit the old one's", liveObs{answer: refused}, liveTrack{pid: 41, served: true, refusedSince: t0.Add(-time.Minute)}, t0.Add(-time.Second), t0, "", false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, tr := judgeLiveness(tt.obs, tt.tr, pid, tt.startedAt, tt.now)
			// Only an accepted connection (TCP) or a PONG (RESP) is the
			// answer a probe would ask for.
			wantAnswered := tt.name == "answers" || tt.name == "tcp member accepts"
			if v.answered != wantAnswered {
				t.Errorf("judgeLiveness answered = %v; want %v", v.answered, wantAnswered)
			}
			if v.state != tt.want || v.act != tt.act || v.probe != tt.probe || !strings.Contains(v.detail, tt.detail) {
				t.Fatalf("judgeLiveness = %+v; want state %q act %v probe %v detail ~%q", v, tt.want, tt.act, tt.probe, tt.detail)
			}
			if tr.pid != pid {
				t.Errorf("track kept pid %d, want %d", tr.pid, pid)
			}
			if tt.obs.frozen != !tr.frozenSince.IsZero() {
				t.Errorf("frozenSince %v with frozen %v", tr.frozenSince, tt.obs.frozen)
			}
			if tt.obs.answer.Accepted() && !tt.obs.frozen && !tr.refusedSince.IsZero() {
				t.Errorf("refusedSince kept after an accepted connection")
			}
		})
	}
}

// A freeze is acted on once it has lasted unresponsiveAfter, over
// successive looks; a thaw starts the count over.
func TestJudgeLivenessOverTime(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var tr liveTrack
	var v liveVerdict
	step := func(frozen bool, at time.Duration) {
		v, tr = judgeLiveness(liveObs{frozen: frozen, answer: redisctl.Answer{Reply: redisctl.ReplyPong}}, tr, 7, t0.Add(-time.Hour), t0.Add(at))
	}
	step(false, 0)
	step(true, 100*time.Millisecond)
	step(true, 600*time.Millisecond)
	if v.act {
		t.Fatal("acted after 0.5 s frozen")
	}
	step(false, 700*time.Millisecond) // SIGCONT
	step(true, 800*time.Millisecond)
	step(true, 1700*time.Millisecond)
	if v.act {
		t.Fatal("acted on 0.9 s frozen (the count did not start over after the thaw)")
	}
	step(true, 1800*time.Millisecond)
	if !v.act || v.state != api.MemberUnresponsive {
		t.Fatalf("not acted on after 1 s frozen: %+v", v)
	}
}

func TestUnresponsiveAction(t *testing.T) {
	refused := errors.New("NOGOODSLAVE")
	tests := []struct {
		name         string
		role         api.Role
		business     bool
		primary      bool
		failoverErr  error
		wantFailover bool
		how          stopHow
	}{
		{"business primary: failover, then kill", api.RoleRedis, true, true, nil, true, stopKill},
		{"business primary, failover refused: keep its data", api.RoleRedis, true, true, refused, true, stopSave},
		{"business replica: kill", api.RoleRedis, true, false, nil, false, stopKill},
		{"starter: its data is the only copy", api.RoleRedis, false, true, nil, false, stopSave},
		{"sentinel: kill", api.RoleSentinel, false, false, nil, false, stopKill},
		{"haproxy: kill", api.RoleHAProxy, false, false, nil, false, stopKill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, how := unresponsiveAction(tt.role, tt.business, tt.primary, tt.failoverErr)
			if f != tt.wantFailover || how != tt.how {
				t.Fatalf("unresponsiveAction = failover %v, %v; want %v, %v", f, how, tt.wantFailover, tt.how)
			}
		})
	}
}

func TestReplicaOfDrift(t *testing.T) {
	const self, p1, p2 = "127.0.0.12:7000", "127.0.0.11:7000", "127.0.0.13:7000"
	replicaOf := func(addr string) redisctl.Replication {
		r := redisctl.Replication{Role: redisctl.RoleReplica}
		if addr != "" {
			h, port, _ := strings.Cut(addr, ":")
			r.MasterHost = h
			r.MasterPort = atoi(port)
		}
		return r
	}
	tests := []struct {
		name      string
		r         redisctl.Replication
		sentinels string
		want      string
		drift     bool
	}{
		{"follows the sentinels' primary", replicaOf(p1), p1, "", false},
		{"follows another", replicaOf(p2), p1, p1, true},
		{"no master at all", replicaOf(""), p1, p1, true},
		{"a master is not this rule's", redisctl.Replication{Role: redisctl.RoleMaster}, p1, "", false},
		{"sentinels unknown", replicaOf(p2), "", "", false},
		{"sentinels name the member itself", replicaOf(p2), self, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, drift := replicaOfDrift(tt.r, tt.sentinels, self)
			if got != tt.want || drift != tt.drift {
				t.Fatalf("replicaOfDrift = %q, %v; want %q, %v", got, drift, tt.want, tt.drift)
			}
		})
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		line string
		want byte
		ok   bool
	}{
		{"1234 (redis-server) S 1 1234 1234 0 -1 4194560 ...", 'S', true},
		{"1234 (redis-server) T 1 1234 ...", 'T', true},
		{"99 (weird) name)) R 1 ...", 'R', true},
		{"99 (a b) t 1", 't', true},
		{"garbage", 0, false},
		{"1 (x)", 0, false},
	}
	for _, tt := range tests {
		got, err := parseProcStat([]byte(tt.line))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseProcStat(%q) = %q, %v; want %q (ok %v)", tt.line, got, err, tt.want, tt.ok)
		}
	}
}
