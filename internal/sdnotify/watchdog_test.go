package sdnotify

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

type recorder struct {
	mu   sync.Mutex
	sent []string
	err  error
}

func (r *recorder) notify(s string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return false, r.err
	}
	r.sent = append(r.sent, s)
	return true, nil
}

// TestWatchdogTick: at each step the clock is set, some loops ping, and the
// watchdog ticks; it must send WATCHDOG=1 exactly when no loop is stale.
func TestWatchdogTick(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at        time.Duration // since t0
		ping      []string
		stop      []string
		wantSent  bool
		wantStale []string
	}
	type loop struct {
		name   string
		within time.Duration
	}
	for _, tc := range []struct {
		name     string
		interval time.Duration
		loops    []loop
		steps    []step
	}{
		{name: "no loops: pings while the process lives", interval: 10 * time.Second,
			steps: []step{{at: 0, wantSent: true}, {at: time.Hour, wantSent: true}}},
		{name: "a fresh loop counts as pinged", interval: 10 * time.Second, loops: []loop{{"a", 0}},
			steps: []step{{at: 0, wantSent: true}, {at: 10 * time.Second, wantSent: true}}},
		{name: "one loop stuck past the interval stops the pings", interval: 10 * time.Second, loops: []loop{{"a", 0}, {"b", 0}},
			steps: []step{
				{at: 5 * time.Second, ping: []string{"a", "b"}, wantSent: true},
				{at: 12 * time.Second, ping: []string{"a"}, wantSent: true},           // b pinged 7 s ago
				{at: 16 * time.Second, ping: []string{"a"}, wantStale: []string{"b"}}, // 11 s
				{at: 30 * time.Second, wantStale: []string{"a", "b"}},                 // both
				{at: 31 * time.Second, ping: []string{"b"}, wantStale: []string{"a"}}, // a still stuck
				{at: 32 * time.Second, ping: []string{"a"}, wantSent: true},           // resumes
			}},
		{name: "a loop's own bound wider than the interval", interval: 10 * time.Second, loops: []loop{{"slow", 45 * time.Second}, {"fast", 0}},
			steps: []step{
				{at: 40 * time.Second, ping: []string{"fast"}, wantSent: true},
				{at: 45 * time.Second, ping: []string{"fast"}, wantSent: true},
				{at: 46 * time.Second, ping: []string{"fast"}, wantStale: []string{"slow"}},
			}},
		{name: "a stopped loop no longer counts", interval: 10 * time.Second, loops: []loop{{"leader", 0}, {"main", 0}},
			steps: []step{
				{at: 8 * time.Second, ping: []string{"main"}, stop: []string{"leader"}, wantSent: true},
				{at: 15 * time.Second, ping: []string{"main"}, wantSent: true},
				{at: 30 * time.Second, wantStale: []string{"main"}},
			}},
		{name: "disabled (no WatchdogSec): never sends", interval: 0, loops: []loop{{"a", 0}},
			steps: []step{{at: 0}, {at: time.Hour}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: t0}
			rec := &recorder{}
			w := newWatchdog(tc.interval, clock, rec.notify, nil)
			loops := map[string]*Loop{}
			for _, l := range tc.loops {
				loops[l.name] = w.Register(l.name, l.within)
			}
			for i, s := range tc.steps {
				clock.Set(t0.Add(s.at))
				for _, n := range s.ping {
					loops[n].Ping()
				}
				for _, n := range s.stop {
					loops[n].Stop()
				}
				before := len(rec.sent)
				sent, err := w.Tick()
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if sent != s.wantSent || (len(rec.sent) > before) != s.wantSent {
					t.Errorf("step %d (t0+%s): sent %v (%d new), want %v", i, s.at, sent, len(rec.sent)-before, s.wantSent)
				}
				if tc.interval > 0 {
					if got := w.Stale(clock.Now()); !slices.Equal(got, s.wantStale) {
						t.Errorf("step %d (t0+%s): stale %q, want %q", i, s.at, got, s.wantStale)
					}
				}
			}
			for _, m := range rec.sent {
				if m != "WATCHDOG=1" {
					t.Errorf("sent %q, want only WATCHDOG=1", m)
				}
			}
		})
	}
}

func TestWatchdogSendError(t *testing.T) {
	rec := &recorder{err: errors.New("connection refused")}
	w := newWatchdog(time.Second, &fakeClock{now: time.Unix(0, 0)}, rec.notify, nil)
	if sent, err := w.Tick(); sent || err == nil {
		t.Fatalf("Tick = %v, %v; want false and an error", sent, err)
	}
}

func TestNilWatchdogAndLoop(t *testing.T) {
	var w *Watchdog
	l := w.Register("x", 0)
	l.Ping()
	l.Stop()
	if w.Enabled() || w.Interval() != 0 || w.Stale(time.Now()) != nil {
		t.Fatal("nil watchdog must be disabled")
	}
	if sent, err := w.Tick(); sent || err != nil {
		t.Fatalf("nil Tick = %v, %v", sent, err)
	}
}

func TestSendMessages(t *testing.T) {
	for _, tc := range []struct {
		state, status, want string
	}{
		{"READY=1", "", "READY=1"},
		{"READY=1", "serving as leader", "READY=1\nSTATUS=serving as leader"},
		{"", "two\nlines", "STATUS=two lines"},
		{"STOPPING=1", "", "STOPPING=1"},
	} {
		rec := &recorder{}
		if err := send(rec.notify, tc.state, tc.status); err != nil {
			t.Fatal(err)
		}
		if len(rec.sent) != 1 || rec.sent[0] != tc.want {
			t.Errorf("send(%q, %q) sent %q, want %q", tc.state, tc.status, rec.sent, tc.want)
		}
	}
	rec := &recorder{}
	if err := send(rec.notify, "", ""); err != nil || len(rec.sent) != 0 {
		t.Errorf("empty send: %v %q", err, rec.sent)
	}
}
