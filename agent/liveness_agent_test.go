package agent_test

// Liveness with a real agent, containerd and real members: a frozen member
// is reported unresponsive and restarted with its data, a member whose bind
// moved comes back on its own address, drifted announce settings are put
// back, and a busy member is reported busy and left alone.

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

// stateLog records every state the fake coordinator's last heartbeat showed
// for one member, polled every 20 ms (heartbeats come every 200 ms).
type stateLog struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen []seenState
}

type seenState struct {
	at time.Time
	m  api.MemberStatus
}

func watchStates(t *testing.T, coord *fakeCoordinator, host, id string) *stateLog {
	l := &stateLog{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if m, _, err := coord.member(host, id); err == nil {
				l.mu.Lock()
				if n := len(l.seen); n == 0 || l.seen[n-1].m.State != m.State || l.seen[n-1].m.Pid != m.Pid || kind(l.seen[n-1].m.Detail) != kind(m.Detail) {
					l.seen = append(l.seen, seenState{time.Now(), m})
				}
				l.mu.Unlock()
			}
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(l.finish)
	return l
}

func (l *stateLog) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// first returns the first record with state since t.
func (l *stateLog) first(state string, since time.Time) (seenState, bool) {
	return l.firstWhere(since, func(m api.MemberStatus) bool { return m.State == state })
}

// firstWhere returns the first record since t that ok accepts.
func (l *stateLog) firstWhere(since time.Time, ok func(api.MemberStatus) bool) (seenState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.seen {
		if ok(s.m) && !s.at.Before(since) {
			return s, true
		}
	}
	return seenState{}, false
}

func (l *stateLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, s := range l.seen {
		fmt.Fprintf(&b, "%s %s pid %d role %q: %s\n", s.at.Format("15:04:05.000"), s.m.State, s.m.Pid, s.m.RedisRole, firstLine(s.m.Detail))
	}
	return b.String()
}

// kind is the start of a detail, without its changing figures.
func kind(detail string) string {
	if len(detail) > 20 {
		return detail[:20]
	}
	return detail
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// waitSeen waits until the log shows state since t and returns it.
func (l *stateLog) waitSeen(t *testing.T, state string, since time.Time, timeout time.Duration) seenState {
	t.Helper()
	var got seenState
	testutil.WaitFor(t, timeout, func() error {
		s, ok := l.first(state, since)
		if !ok {
			return fmt.Errorf("no %s report yet; seen:\n%s", state, l)
		}
		got = s
		return nil
	})
	return got
}

// haSet is a redis, a sentinel watching it and an entrypoint haproxy in
// front of it, on one host (as TestSentinelAndHAProxy).
func haSet(t *testing.T, h *host) (r, s, p api.Assignment) {
	r = h.starter(t, "r1")
	r.AddonID = "my-app-live"
	primary := net.JoinHostPort(r.Address, strconv.Itoa(r.Port))
	s = api.Assignment{
		MemberID: "s1", AddonID: r.AddonID, App: r.App, Role: api.RoleSentinel,
		Address: hostIP, Port: testutil.FreePort(t, hostIP), Engine: api.EngineRedis, Version: r.Version,
		Image: api.ImageSentinel7, Password: api.NewSecret(password), FleetPassword: api.NewSecret(fleetPassword), MasterName: r.AddonID, Primary: primary,
	}
	hp := testutil.FreePort(t, hostIP)
	p = api.Assignment{
		MemberID: "p1", AddonID: r.AddonID, App: r.App, Role: api.RoleHAProxy,
		Address: hostIP, Port: hp, Engine: api.EngineRedis, Version: r.Version, Image: api.ImageHAProxy,
		Password: api.NewSecret(password), FleetPassword: api.NewSecret(fleetPassword), Entrypoint: net.JoinHostPort(hostIP, strconv.Itoa(hp)), Servers: []string{primary}, MaxConn: 100,
	}
	return r, s, p
}

// A SIGSTOPped member is reported busy at first, unresponsive once frozen
// for ~1 s, then taken down and restarted: a redis keeps its data (a
// starter is stopped with SIGTERM after SIGCONT, so it saves first), a
// sentinel and a haproxy are killed and come back.
func TestFrozenMemberRestarted(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.start(t)
	r, s, p := haSet(t, h)
	coord.assign(h.id, r, s, p)
	before := map[string]api.MemberStatus{}
	logs := map[string]*stateLog{}
	for _, id := range []string{"r1", "s1", "p1"} {
		before[id] = coord.waitMember(t, h.id, id, 30*time.Second, isState(api.MemberRunning))
		logs[id] = watchStates(t, coord, h.id, id)
	}
	c := redisClient(t, r)
	// Written, never saved by hand: the stop must save it.
	if err := c.Set(ctxT(t), "frozen-key", "kept", 0).Err(); err != nil {
		t.Fatal(err)
	}

	frozenAt := time.Now()
	for _, id := range []string{"r1", "s1", "p1"} {
		if err := syscall.Kill(before[id].Pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %s (pid %d): %v", id, before[id].Pid, err)
		}
	}
	for _, id := range []string{"r1", "s1", "p1"} {
		u := logs[id].waitSeen(t, api.MemberUnresponsive, frozenAt, 10*time.Second)
		if !strings.Contains(u.m.Detail, "frozen") {
			t.Errorf("%s unresponsive detail %q: want it to say frozen", id, u.m.Detail)
		}
		back := coord.waitMember(t, h.id, id, 30*time.Second, func(m api.MemberStatus) error {
			if m.State != api.MemberRunning || m.Pid == before[id].Pid {
				return fmt.Errorf("want running with a new pid (was %d)", before[id].Pid)
			}
			return nil
		})
		backAt, _ := logs[id].firstWhere(u.at, func(m api.MemberStatus) bool {
			return m.State == api.MemberRunning && m.Pid == back.Pid
		})
		t.Logf("%s frozen (SIGSTOP) at %s: unresponsive reported after %v, running again (pid %d -> %d) after %v",
			id, frozenAt.Format("15:04:05.000"), u.at.Sub(frozenAt).Round(time.Millisecond), before[id].Pid, back.Pid,
			backAt.at.Sub(frozenAt).Round(time.Millisecond))
		if d := u.at.Sub(frozenAt); d > 5*time.Second {
			t.Errorf("%s reported unresponsive %v after the freeze, want within a few seconds", id, d)
		}
		if f, ok := logs[id].first(api.MemberFailed, u.at); !ok || !strings.Contains(f.m.Detail, "unresponsive") {
			t.Errorf("%s: no failed report saying why it was restarted; seen:\n%s", id, logs[id])
		}
	}
	if v, err := c.Get(ctxT(t), "frozen-key").Result(); err != nil || v != "kept" {
		t.Fatalf("key after the frozen redis came back: %q, %v", v, err)
	}
	// The sentinel monitors the primary again; the entrypoint routes.
	sc := redis.NewClient(&redis.Options{Addr: net.JoinHostPort(hostIP, strconv.Itoa(s.Port)), Password: fleetPassword, MaxRetries: -1, DisableIdentity: true})
	defer sc.Close()
	testutil.WaitFor(t, 10*time.Second, func() error {
		return sc.Do(ctxT(t), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", r.AddonID).Err()
	})
	via := redisClient(t, api.Assignment{Address: hostIP, Port: p.Port, Password: api.NewSecret(password)})
	testutil.WaitFor(t, 10*time.Second, func() error { return via.Set(ctxT(t), "after", "restart", 0).Err() })
}

// CONFIG SET bind moves a redis off its address: it serves on its own
// address again. With a connection left to it (the agent's kept look and
// probe connections) the bind is put back in place, same process; when
// every client connection was killed too, it is reported unresponsive
// (refuses connections) and restarted, back with its rendered config.
func TestBindDriftPutBack(t *testing.T) {
	for _, killClients := range []bool{false, true} {
		name := "in place"
		if killClients {
			name = "restarted"
		}
		t.Run(name, func(t *testing.T) {
			coord := newFakeCoordinator(t)
			h := newHost(t, coord)
			h.start(t)
			as := h.starter(t, "m1")
			coord.assign(h.id, as)
			m := coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))
			log := watchStates(t, coord, h.id, "m1")
			c := redisClient(t, as)
			if err := c.Set(ctxT(t), "bind-key", "kept", 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := c.ConfigSet(ctxT(t), "bind", "127.0.0.99").Err(); err != nil {
				t.Fatal(err)
			}
			movedAt := time.Now()
			if killClients {
				// Every other client connection (the agent's probe client)
				// goes; this one is closed after.
				if err := c.Do(ctxT(t), "CLIENT", "KILL", "TYPE", "normal").Err(); err != nil {
					t.Fatal(err)
				}
				_ = c.Close()
				c = redisClient(t, as)
			}
			// Its connections cut, the member is looked at afresh and
			// refuses: reported unresponsive, then restarted. In place, the
			// agent's kept connections still reach it and its identity check
			// (CONFIG GET) puts the bind back, usually before any fresh
			// look was refused: no report is needed for that.
			var u seenState
			if killClients {
				u = log.waitSeen(t, api.MemberUnresponsive, movedAt, 10*time.Second)
				if !strings.Contains(u.m.Detail, "refuses connections") {
					t.Errorf("unresponsive detail %q: want it to say the address refuses connections", u.m.Detail)
				}
			}
			testutil.WaitFor(t, 30*time.Second, func() error {
				if err := c.Ping(ctxT(t)).Err(); err != nil {
					return err
				}
				if b := configGet(t, c, "bind"); b != hostIP {
					return fmt.Errorf("bind %q", b)
				}
				return nil
			})
			backAt := time.Now()
			back := coord.waitMember(t, h.id, "m1", 10*time.Second, isState(api.MemberRunning))
			restarted := back.Pid != m.Pid
			t.Logf("bind moved at %s: back on %s after %v (restarted: %v; unresponsive reported: %v)",
				movedAt.Format("15:04:05.000"), hostIP, backAt.Sub(movedAt).Round(time.Millisecond), restarted, !u.at.IsZero())
			if restarted != killClients {
				t.Errorf("restarted = %v, want %v; states:\n%s", restarted, killClients, log)
			}
			if v, err := c.Get(ctxT(t), "bind-key").Result(); err != nil || v != "kept" {
				t.Fatalf("key after the bind drift: %q, %v", v, err)
			}
		})
	}
}

// Announce settings changed with CONFIG SET are put back by the agent,
// without a restart; on a replica, its primary learns the restored
// address (the replica's link is re-made).
func TestAnnounceDriftRestored(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.start(t)
	primary := h.starter(t, "p")
	replica := h.starter(t, "r")
	replica.AddonID = primary.AddonID
	replica.ReplicaOf = net.JoinHostPort(primary.Address, strconv.Itoa(primary.Port))
	coord.assign(h.id, primary, replica)
	pm := coord.waitMember(t, h.id, "p", 30*time.Second, isState(api.MemberRunning))
	rm := coord.waitMember(t, h.id, "r", 30*time.Second, isState(api.MemberRunning))
	pc, rc := redisClient(t, primary), redisClient(t, replica)
	replicaSeenAs := func() string {
		info, err := pc.Info(ctxT(t), "replication").Result()
		if err != nil {
			return err.Error()
		}
		for _, l := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(l, "slave0:"); ok {
				return v
			}
		}
		return "no replica"
	}
	want := "ip=" + hostIP + ",port=" + strconv.Itoa(replica.Port) + ","
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := replicaSeenAs(); !strings.HasPrefix(s, want) {
			return fmt.Errorf("primary sees its replica as %q", s)
		}
		return nil
	})

	for _, tc := range []struct {
		c            *redis.Client
		param, value string
	}{
		{pc, "replica-announce-ip", "10.1.2.3"},
		{rc, "replica-announce-ip", "10.1.2.3"},
		{rc, "replica-announce-port", "1234"},
	} {
		orig := configGet(t, tc.c, tc.param)
		if err := tc.c.ConfigSet(ctxT(t), tc.param, tc.value).Err(); err != nil {
			t.Fatal(err)
		}
		at := time.Now()
		testutil.WaitFor(t, 10*time.Second, func() error {
			if v := configGet(t, tc.c, tc.param); v != orig {
				return fmt.Errorf("%s is %q, want %q back", tc.param, v, orig)
			}
			return nil
		})
		t.Logf("%s %s drifted to %s: restored after %v", tc.c.Options().Addr, tc.param, tc.value, time.Since(at).Round(time.Millisecond))
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if s := replicaSeenAs(); !strings.HasPrefix(s, want) {
			return fmt.Errorf("primary sees its replica as %q, want %s…", s, want)
		}
		return nil
	})
	for id, was := range map[string]api.MemberStatus{"p": pm, "r": rm} {
		if m, _, _ := coord.member(h.id, id); m.Pid != was.Pid || m.State != api.MemberRunning {
			t.Errorf("%s: %s pid %d (was %d): a drift must not restart it", id, m.State, m.Pid, was.Pid)
		}
	}
}

// A redis in DEBUG SLEEP 3 (and one running a script past its
// busy-reply-threshold, answering -BUSY) is reported busy with its role,
// never unresponsive, and keeps its process.
func TestBusyMemberLeftAlone(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.start(t)
	as := h.starter(t, "m1")
	coord.assign(h.id, as)
	m := coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))
	log := watchStates(t, coord, h.id, "m1")
	slow := redis.NewClient(&redis.Options{
		Addr: net.JoinHostPort(as.Address, strconv.Itoa(as.Port)), Username: redisctl.FleetUser, Password: as.FleetPassword.Reveal(),
		DialTimeout: time.Second, ReadTimeout: 10 * time.Second, MaxRetries: -1, DisableIdentity: true,
	})
	defer slow.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// DEBUG is allowed from loopback clients (enable-debug-command local):
	// this test connects to 127.0.0.31 from 127.0.0.1.
	start := time.Now()
	if err := slow.Do(ctx, "DEBUG", "SLEEP", "3").Err(); err != nil {
		t.Fatalf("DEBUG SLEEP 3: %v", err)
	}
	slept := time.Since(start)
	coord.waitMember(t, h.id, "m1", 10*time.Second, isState(api.MemberRunning))
	// A script past busy-reply-threshold answers -BUSY: busy too.
	if err := slow.ConfigSet(ctx, "busy-reply-threshold", "100").Err(); err != nil {
		t.Fatal(err)
	}
	scriptAt := time.Now()
	if err := slow.Eval(ctx, `local t = redis.call('TIME'); local stop = t[1]*1000000 + t[2] + 2000000
		repeat t = redis.call('TIME') until t[1]*1000000 + t[2] >= stop
		return 1`, nil).Err(); err != nil {
		t.Fatalf("2 s script: %v", err)
	}
	coord.waitMember(t, h.id, "m1", 10*time.Second, isState(api.MemberRunning))

	b, ok := log.first(api.MemberBusy, start)
	if !ok {
		t.Fatalf("never reported busy during DEBUG SLEEP 3; seen:\n%s", log)
	}
	if b.m.RedisRole != "master" || b.m.Pid != m.Pid {
		t.Errorf("busy report %+v: want the last known role (master) and the same pid", b.m)
	}
	if sb, ok := log.first(api.MemberBusy, scriptAt); !ok || !strings.Contains(sb.m.Detail, "BUSY") {
		t.Errorf("the -BUSY script was not reported busy with its answer; seen:\n%s", log)
	}
	if u, ok := log.first(api.MemberUnresponsive, start); ok {
		t.Errorf("a busy member was reported unresponsive: %+v", u.m)
	}
	if f, ok := log.first(api.MemberFailed, start); ok {
		t.Errorf("a busy member was reported failed: %+v", f.m)
	}
	after, _, _ := coord.member(h.id, "m1")
	if after.Pid != m.Pid {
		t.Fatalf("pid %d -> %d: a busy member was restarted", m.Pid, after.Pid)
	}
	t.Logf("DEBUG SLEEP 3 took %v: reported busy %v after it began (role %s), same pid %d; states:\n%s",
		slept.Round(time.Millisecond), b.at.Sub(start).Round(time.Millisecond), b.m.RedisRole, after.Pid, log)
}
