package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// fakeSentinel answers the two commands the gate sends: GET-MASTER-ADDR-BY-NAME
// with master (empty: a nil reply) and FAILOVER with failover ("" = +OK, else
// the error text). Anything else gets +OK.
type fakeSentinel struct {
	ln net.Listener

	mu        sync.Mutex
	master    string
	failover  string
	failovers int
}

func newFakeSentinel(t *testing.T, master string) *fakeSentinel {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSentinel{ln: ln, master: master}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *fakeSentinel) addr() string { return s.ln.Addr().String() }

func (s *fakeSentinel) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		args, err := readCommand(r)
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.Join(args, " "))
		s.mu.Lock()
		var reply string
		switch {
		case strings.HasPrefix(cmd, "SENTINEL GET-MASTER-ADDR-BY-NAME"):
			if s.master == "" {
				reply = "*-1\r\n"
			} else {
				h, p, _ := net.SplitHostPort(s.master)
				reply = fmt.Sprintf("*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(h), h, len(p), p)
			}
		case strings.HasPrefix(cmd, "SENTINEL FAILOVER"):
			s.failovers++
			if s.failover == "" {
				reply = "+OK\r\n"
			} else {
				reply = "-" + s.failover + "\r\n"
			}
		case strings.HasPrefix(cmd, "HELLO"):
			reply = "-ERR unknown command 'HELLO'\r\n" // as Redis 5: the client stays on RESP2
		default:
			reply = "+OK\r\n"
		}
		s.mu.Unlock()
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

// readCommand reads one RESP array of bulk strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "*")))
	if err != nil {
		return nil, err
	}
	args := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if _, err := r.ReadString('\n'); err != nil { // $len
			return nil, err
		}
		v, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		args = append(args, strings.TrimRight(v, "\r\n"))
	}
	return args, nil
}

func (s *fakeSentinel) set(master, failover string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.master, s.failover = master, failover
}

func (s *fakeSentinel) failoverCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failovers
}

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestAskSentinelsMajority(t *testing.T) {
	a, b := "10.0.0.1:6379", "10.0.0.2:6379"
	ctx := context.Background()
	s1, s2, s3 := newFakeSentinel(t, a), newFakeSentinel(t, a), newFakeSentinel(t, b)
	got, n, err := redisctl.AskMajority(ctx, []string{s1.addr(), s2.addr(), s3.addr()}, fleetPassword, "m")
	if err != nil || got != a || n != 2 {
		t.Fatalf("AskMajority = %s, %d, %v; want %s by 2", got, n, err, a)
	}
	// One for each, one unreachable: no majority.
	s2.set(b, "")
	s3.set("", "")
	_, _, err = redisctl.AskMajority(ctx, []string{s1.addr(), s2.addr(), deadAddr(t)}, fleetPassword, "m")
	if err == nil || !strings.Contains(err.Error(), "no majority of 3 sentinels") || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("split answers: err = %v", err)
	}
}

// gateAgent is an Agent with just what gateStart needs.
func gateAgent(t *testing.T) *Agent {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Address = "127.0.0.1"
	return &Agent{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), heartbeatNow: make(chan struct{}, 1)}
}

const gatePassword = "Zq9vX2bT7mK4pL8sR1nW6yE3uA0cD5fGhJkQwErTyUiOpAsDfGhJkLzXcVbNm_-1"

// fleetPassword is the addon's fleet credential (redisctl.FleetUser).
const fleetPassword = "Fl9vX2bT7mK4pL8sR1nW6yE3uA0cD5fGhJkQwErTyUiOpAsDfGhJkLzXcVbNm_-2"

func TestGateStart(t *testing.T) {
	self := "127.0.0.1:20000"
	other := "127.0.0.2:20000"
	stopped := &runtime.Status{State: runtime.StateStopped, ExitCode: 137}
	tests := []struct {
		name     string
		master   []string // what each sentinel names ("dead": unreachable)
		failover string   // FAILOVER reply error ("" = OK)
		ranDump  bool     // a dump.rdb in the member dir
		st       *runtime.Status
		backoff  time.Duration
		// noGoodFor replaces noGoodReplicaFor (0: the default)
		noGoodFor time.Duration

		wantOK        bool
		wantReplicaOf string // in the rendered config; "" = none
		wantHeld      string // substring of the held reason; "" = not held
		wantFailover  bool
	}{
		{name: "first start keeps the assignment's view", master: []string{self, self, self}, st: nil,
			wantOK: true},
		{name: "restart as a replica of the primary the sentinels name", master: []string{other, other, self}, ranDump: true, st: stopped,
			wantOK: true, wantReplicaOf: "replicaof 127.0.0.2 20000"},
		{name: "a container that existed counts as having run", master: []string{other, other, other}, st: stopped,
			wantOK: true, wantReplicaOf: "replicaof 127.0.0.2 20000"},
		{name: "sentinels still name it: held, failover asked", master: []string{self, self, other}, ranDump: true, st: stopped,
			wantHeld: "2 of 3 sentinels still name this member the primary", wantFailover: true},
		{name: "in its restart delay: failover asked, failure still reported", master: []string{self, self, self}, st: stopped, backoff: time.Second,
			wantFailover: true},
		{name: "no majority reachable: held", master: []string{other, "dead", "dead"}, st: stopped,
			wantHeld: "no majority of 3 sentinels"},
		{name: "Sentinel sees no replica yet: held (a fresh addon's sentinels)", master: []string{self, self, self}, failover: "NOGOODSLAVE No suitable replica to promote", st: stopped,
			wantHeld: "NOGOODSLAVE", wantFailover: true},
		{name: "no replica for noGoodReplicaFor: starts as the primary on its data", master: []string{self, self, self}, failover: "NOGOODSLAVE No suitable replica to promote", st: stopped,
			noGoodFor: time.Nanosecond, wantOK: true, wantFailover: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := gateAgent(t)
			var addrs []string
			var fakes []*fakeSentinel
			for _, m := range tc.master {
				if m == "dead" {
					addrs = append(addrs, deadAddr(t))
					continue
				}
				s := newFakeSentinel(t, m)
				s.set(m, tc.failover)
				fakes = append(fakes, s)
				addrs = append(addrs, s.addr())
			}
			as := api.Assignment{MemberID: "app-1-redis-0", AddonID: "app-1", App: "app", Role: api.RoleRedis,
				Address: "127.0.0.1", Port: 20000, Engine: api.EngineRedis, Version: "7.0.15", Image: api.ImageRedis7,
				PlanMemoryMB: 64, Password: api.NewSecret(gatePassword), FleetPassword: api.NewSecret(fleetPassword), Sentinels: addrs, MasterName: "app-1"}
			p, err := a.planMember(as)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ranDump {
				if err := os.MkdirAll(p.dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(p.dir, render.RDBFileName), []byte("REDIS"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.noGoodFor > 0 {
				old := noGoodReplicaFor
				noGoodReplicaFor = tc.noGoodFor
				t.Cleanup(func() { noGoodReplicaFor = old })
			}
			d, ok := a.gateStart(context.Background(), &p, tc.st, tc.backoff)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v (retry %s, held %q), want %v", ok, d, a.heldReason(as.MemberID), tc.wantOK)
			}
			if !ok && d <= 0 {
				t.Errorf("held without a retry delay")
			}
			hasReplicaOf := strings.Contains(p.conf, "\nreplicaof ")
			if tc.wantReplicaOf == "" && hasReplicaOf {
				t.Errorf("config says replicaof; want a primary's config")
			}
			if tc.wantReplicaOf != "" && !strings.Contains(p.conf, "\n"+tc.wantReplicaOf+"\n") {
				t.Errorf("config lacks %q", tc.wantReplicaOf)
			}
			held := a.heldReason(as.MemberID)
			if (tc.wantHeld == "") != (held == "") || !strings.Contains(held, tc.wantHeld) {
				t.Errorf("held reason %q, want %q", held, tc.wantHeld)
			}
			if strings.Contains(held, gatePassword) {
				t.Errorf("held reason holds the password")
			}
			n := 0
			for _, s := range fakes {
				n += s.failoverCount()
			}
			if tc.wantFailover != (n > 0) {
				t.Errorf("%d failover requests, want any: %v", n, tc.wantFailover)
			}
		})
	}
}

func TestGateIgnoresOthers(t *testing.T) {
	a := gateAgent(t)
	// A starter redis (no sentinels) and a running business redis are never
	// held or changed: no sentinel is asked (none listens).
	for _, as := range []api.Assignment{
		{MemberID: "s-redis-0", AddonID: "s", Role: api.RoleRedis, Address: "127.0.0.1", Port: 20000, PlanMemoryMB: 64, Password: api.NewSecret(gatePassword), FleetPassword: api.NewSecret(fleetPassword)},
		{MemberID: "b-redis-0", AddonID: "b", Role: api.RoleRedis, Address: "127.0.0.1", Port: 20001, PlanMemoryMB: 64, Password: api.NewSecret(gatePassword), FleetPassword: api.NewSecret(fleetPassword),
			Sentinels: []string{deadAddr(t)}, MasterName: "b"},
	} {
		p, err := a.planMember(as)
		if err != nil {
			t.Fatal(err)
		}
		st := &runtime.Status{State: runtime.StateStopped}
		if len(as.Sentinels) > 0 {
			st.State = runtime.StateRunning
		}
		before := p.conf
		if _, ok := a.gateStart(context.Background(), &p, st, 0); !ok || p.conf != before {
			t.Errorf("%s: gate held or changed it", as.MemberID)
		}
	}
}
