package render

// A busy primary behind HAProxy, with the real binaries: the role check
// waits for it (timeout check = Sentinel's down-after) instead of marking it
// down and cutting its sessions, while a killed primary still goes down at
// once and a replica is never up.

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/cacheplane/cacheplane/api"
)

// serverStatus reads the status column (UP, DOWN, ...) of every server of
// backend from HAProxy's "show stat".
func serverStatus(t *testing.T, socket, backend string) (map[string]string, error) {
	t.Helper()
	sc, err := net.DialTimeout("unix", socket, time.Second)
	if err != nil {
		return nil, err
	}
	defer sc.Close()
	_ = sc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(sc, "show stat\n"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(sc)
	if err != nil {
		return nil, err
	}
	raw := string(b)
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(raw, "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("show stat: %w", err)
	}
	if len(rows) < 2 {
		return nil, fmt.Errorf("show stat: no rows in %q", raw)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	px, sv, st := col["pxname"], col["svname"], col["status"]
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) <= st || row[px] != backend || row[sv] == "BACKEND" {
			continue
		}
		out[row[sv]] = row[st]
	}
	return out, nil
}

// statusWatch polls the servers' status every 20 ms and records every
// change, so a test can tell whether a server was ever down or up.
type statusWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	seen []statusChange
	last map[string]string
}

type statusChange struct {
	at     time.Time
	server string
	status string
}

func watchStatus(t *testing.T, socket, backend string) *statusWatch {
	w := &statusWatch{stop: make(chan struct{}), done: make(chan struct{}), last: map[string]string{}}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if st, err := serverStatus(t, socket, backend); err == nil {
				now := time.Now()
				w.mu.Lock()
				for sv, s := range st {
					if w.last[sv] != s {
						w.seen = append(w.seen, statusChange{now, sv, s})
						w.last[sv] = s
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(w.finish)
	return w
}

func (w *statusWatch) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// changes returns the recorded changes of server since t.
func (w *statusWatch) changes(server string, since time.Time) []statusChange {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []statusChange
	for _, c := range w.seen {
		if c.server == server && !c.at.Before(since) {
			out = append(out, c)
		}
	}
	return out
}

// ever reports whether server was ever seen with status.
func (w *statusWatch) ever(server, status string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.seen {
		if c.server == server && strings.HasPrefix(c.status, status) {
			return true
		}
	}
	return false
}

// TestRealHAProxyBusyPrimary: a primary in DEBUG SLEEP 3 stays UP in
// HAProxy and keeps its sessions (same CLIENT ID before and after, the
// command sent during the sleep completes after it), and so does one
// running a script past busy-reply-threshold (answering -BUSY); a killed
// primary is marked DOWN within ~0.5 s; the replica is never UP.
func TestRealHAProxyBusyPrimary(t *testing.T) {
	redisBin := needBinary(t, "redis-server")
	needBinary(t, "haproxy")
	ctx := context.Background()

	primary := startRedis(t, redisBin, RedisInput{BindAddr: "127.0.0.1", PlanMemoryMB: 16, Settings: api.DefaultSettings()})
	primaryEP := Endpoint{primary.in.BindAddr, primary.in.Port}
	replica := startRedis(t, redisBin, RedisInput{BindAddr: "127.0.0.2", PlanMemoryMB: 16,
		Settings: api.DefaultSettings(), ReplicaOf: primaryEP})
	waitFor(t, 10*time.Second, "replica in sync", func() error {
		if s := infoField(t, replica.client, "replication", "master_link_status"); s != "up" {
			return fmt.Errorf("master_link_status=%s", s)
		}
		return nil
	}, replica.proc, primary.proc)

	const name = "busy-test"
	entry := Endpoint{"127.0.0.3", freePort(t, "127.0.0.3")}
	socket := filepath.Join(t.TempDir(), "haproxy.sock")
	hp := startHAProxy(t, HAProxyInput{
		AddonID: name, Entrypoint: entry, SourceAddr: "127.0.0.3",
		Servers: []HAProxyServer{
			{Name: "primary", Addr: primaryEP.Addr, Port: primaryEP.Port},
			{Name: "replica", Addr: replica.in.BindAddr, Port: replica.in.Port},
		},
		Password: api.NewSecret(testFleet), StatsSocket: socket,
	})
	all := []*proc{primary.proc, replica.proc, hp}
	waitFor(t, 10*time.Second, "primary UP, replica DOWN", func() error {
		st, err := serverStatus(t, socket, "be_"+name)
		if err != nil {
			return err
		}
		if st["primary"] != "UP" || !strings.HasPrefix(st["replica"], "DOWN") {
			return fmt.Errorf("servers %v", st)
		}
		return nil
	}, all...)
	watch := watchStatus(t, socket, "be_"+name)

	// One connection through the entrypoint, kept for the whole test: its
	// CLIENT ID says whether HAProxy cut it.
	app := redis.NewClient(&redis.Options{
		Addr: entry.String(), Password: testPassword, MaxRetries: -1, PoolSize: 1,
		DialTimeout: time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		DisableIdentity: true, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = app.Close() })
	var idBefore int64
	waitFor(t, 10*time.Second, "entrypoint serves", func() error {
		var err error
		idBefore, err = app.ClientID(ctx).Result()
		return err
	}, all...)

	// DEBUG SLEEP needs a loopback client (enable-debug-command local):
	// this test's connection to 127.0.0.1 comes from 127.0.0.1.
	debug := fleetClient(t, primaryEP.String())
	debug.Options().ReadTimeout = 10 * time.Second
	if err := debug.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	busyFrom := time.Now()
	slept := make(chan error, 1)
	go func() { slept <- debug.Do(ctx, "DEBUG", "SLEEP", "3").Err() }()
	// A command sent through the entrypoint while the primary sleeps
	// completes after the sleep, on the same session.
	probe := redis.NewClient(&redis.Options{Addr: primaryEP.String(), Password: testPassword, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 100 * time.Millisecond, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { _ = probe.Close() })
	waitFor(t, 2*time.Second, "primary asleep (a PING gets no answer)", func() error {
		if err := probe.Ping(ctx).Err(); err == nil {
			return fmt.Errorf("the primary still answers")
		}
		return nil
	})
	setAt := time.Now()
	if err := app.Set(ctx, "during-sleep", "ok", 0).Err(); err != nil {
		t.Fatalf("SET through the entrypoint during DEBUG SLEEP 3: %v", err)
	}
	took := time.Since(setAt)
	if err := <-slept; err != nil {
		t.Fatalf("DEBUG SLEEP 3: %v (is enable-debug-command local rendered?)", err)
	}
	busyFor := time.Since(busyFrom)
	if busyFor < 2900*time.Millisecond {
		t.Fatalf("DEBUG SLEEP 3 returned after %v", busyFor)
	}
	idAfter, err := app.ClientID(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT ID after the sleep: %v", err)
	}
	if idAfter != idBefore {
		t.Errorf("the entrypoint session was cut: CLIENT ID %d before the sleep, %d after", idBefore, idAfter)
	}
	// One more check round after the sleep, then: never down.
	waitFor(t, 2*time.Second, "a check after the sleep", func() error {
		if st, _ := serverStatus(t, socket, "be_"+name); st["primary"] != "UP" {
			return fmt.Errorf("primary %s", st["primary"])
		}
		return nil
	}, all...)
	if ch := watch.changes("primary", busyFrom); len(ch) > 0 {
		t.Errorf("the busy primary changed state in HAProxy: %+v", ch)
	}
	t.Logf("DEBUG SLEEP 3: primary busy %v; SET through the entrypoint took %v on the same session (CLIENT ID %d), primary stayed UP",
		busyFor.Round(time.Millisecond), took.Round(time.Millisecond), idAfter)

	// A script past busy-reply-threshold (100 ms here, 5 s by default):
	// redis answers every command, INFO included, with -BUSY. The role
	// check takes that for the busy primary it is; the app's command gets
	// Redis's own -BUSY answer, on the same session.
	if err := debug.ConfigSet(ctx, "busy-reply-threshold", "100").Err(); err != nil {
		t.Fatal(err)
	}
	scriptFrom := time.Now()
	scripted := make(chan error, 1)
	go func() {
		scripted <- debug.Eval(ctx, `local t = redis.call('TIME'); local stop = t[1]*1000000 + t[2] + 1500000
			repeat t = redis.call('TIME') until t[1]*1000000 + t[2] >= stop
			return 1`, nil).Err()
	}()
	waitFor(t, 2*time.Second, "primary answers -BUSY", func() error {
		if err := probe.Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "BUSY") {
			return fmt.Errorf("PING: %v", err)
		}
		return nil
	})
	if err := app.Set(ctx, "during-script", "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "BUSY") {
		t.Errorf("SET through the entrypoint during a script past busy-reply-threshold: %v, want redis's -BUSY", err)
	}
	if err := <-scripted; err != nil {
		t.Fatalf("1.5 s script: %v", err)
	}
	scriptFor := time.Since(scriptFrom)
	if id, err := app.ClientID(ctx).Result(); err != nil || id != idBefore {
		t.Errorf("the entrypoint session was cut by a -BUSY script: CLIENT ID %d before, %d after (%v)", idBefore, id, err)
	}
	waitFor(t, 2*time.Second, "a check after the script", func() error {
		if st, _ := serverStatus(t, socket, "be_"+name); st["primary"] != "UP" {
			return fmt.Errorf("primary %s", st["primary"])
		}
		return nil
	}, all...)
	if ch := watch.changes("primary", busyFrom); len(ch) > 0 {
		t.Errorf("the primary answering -BUSY changed state in HAProxy: %+v", ch)
	}
	t.Logf("script past busy-reply-threshold (%v): primary stayed UP, the session answered -BUSY and was kept", scriptFor.Round(time.Millisecond))

	// A killed primary is refused at once: DOWN within ~0.5 s.
	killedAt := time.Now()
	primary.proc.kill(t)
	waitFor(t, 5*time.Second, "killed primary DOWN", func() error {
		if ch := watch.changes("primary", killedAt); len(ch) == 0 || !strings.HasPrefix(ch[0].status, "DOWN") {
			return fmt.Errorf("primary not seen DOWN yet (%+v)", ch)
		}
		return nil
	}, replica.proc, hp)
	down := watch.changes("primary", killedAt)[0].at.Sub(killedAt)
	t.Logf("kill -9 of the primary: DOWN in HAProxy after %v", down.Round(time.Millisecond))
	if down > time.Second {
		t.Errorf("killed primary marked DOWN after %v, want ~0.5 s", down)
	}
	if watch.ever("replica", "UP") {
		t.Error("the replica was UP at some point")
	}
}
