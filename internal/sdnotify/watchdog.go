package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Clock is the watchdog's time source; tests pass a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Watchdog sends WATCHDOG=1 to systemd every Interval()/2 while every
// registered loop has pinged recently enough, and nothing once one has not:
// WatchdogSec= then runs out and systemd restarts the daemon (SIGABRT, then
// Restart=on-failure). With no loop registered it pings while the process
// lives.
//
// A nil *Watchdog and a nil *Loop are valid and do nothing, so a daemon can
// call them without checking whether it runs under systemd.
type Watchdog struct {
	interval time.Duration
	clock    Clock
	notify   notifyFunc
	log      *slog.Logger

	mu    sync.Mutex
	loops []*Loop
	stale []string // as last reported, to log changes only
}

// Loop is one main loop watched by a Watchdog.
type Loop struct {
	w      *Watchdog
	name   string
	within time.Duration
	last   time.Time // guarded by w.mu
}

// NewWatchdog returns the daemon's watchdog: its interval is systemd's
// WatchdogSec= (WATCHDOG_USEC, for this process's pid). Without it the
// watchdog is disabled: Run returns at once, pings are recorded, nothing is
// sent. log may be nil.
func NewWatchdog(log *slog.Logger) (*Watchdog, error) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return nil, fmt.Errorf("watchdog: %w", err)
	}
	return newWatchdog(interval, realClock{}, sdNotify, log), nil
}

func newWatchdog(interval time.Duration, clock Clock, notify notifyFunc, log *slog.Logger) *Watchdog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watchdog{interval: interval, clock: clock, notify: notify, log: log.With("component", "watchdog")}
}

// Enabled reports whether systemd expects watchdog pings.
func (w *Watchdog) Enabled() bool { return w != nil && w.interval > 0 }

// Interval is systemd's WatchdogSec=, 0 when disabled.
func (w *Watchdog) Interval() time.Duration {
	if w == nil {
		return 0
	}
	return w.interval
}

// Register adds a loop that must Ping at least once every within (0: the
// watchdog's interval). Its clock starts now. A loop that ends for good
// (a leader-only controller on losing leadership, shutdown) calls Stop.
func (w *Watchdog) Register(name string, within time.Duration) *Loop {
	if w == nil {
		return nil
	}
	l := &Loop{w: w, name: name, within: within}
	w.mu.Lock()
	l.last = w.clock.Now()
	w.loops = append(w.loops, l)
	w.mu.Unlock()
	return l
}

// Ping records that the loop made progress.
func (l *Loop) Ping() {
	if l == nil {
		return
	}
	now := l.w.clock.Now()
	l.w.mu.Lock()
	l.last = now
	l.w.mu.Unlock()
}

// Stop removes the loop from the watchdog.
func (l *Loop) Stop() {
	if l == nil {
		return
	}
	l.w.mu.Lock()
	l.w.loops = slices.DeleteFunc(l.w.loops, func(x *Loop) bool { return x == l })
	l.w.mu.Unlock()
}

// Stale returns the names of the loops that have not pinged within their
// bound at now, sorted; empty when all are well.
func (w *Watchdog) Stale(now time.Time) []string {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.staleLocked(now)
}

func (w *Watchdog) staleLocked(now time.Time) []string {
	var stale []string
	for _, l := range w.loops {
		within := l.within
		if within <= 0 {
			within = w.interval
		}
		if now.Sub(l.last) > within {
			stale = append(stale, l.name)
		}
	}
	slices.Sort(stale)
	return stale
}

// Tick checks the loops at the clock's now and sends WATCHDOG=1 when none
// is stale. It reports whether it sent. Run calls it; tests call it with a
// fake clock.
func (w *Watchdog) Tick() (bool, error) {
	if !w.Enabled() {
		return false, nil
	}
	now := w.clock.Now()
	w.mu.Lock()
	stale := w.staleLocked(now)
	changed := !slices.Equal(stale, w.stale)
	w.stale = stale
	w.mu.Unlock()
	if len(stale) > 0 {
		if changed {
			w.log.Error("main loop stuck: watchdog pings stop, systemd restarts the daemon when WatchdogSec runs out",
				"loops", stale, "watchdog_sec", w.interval.String())
		}
		return false, nil
	}
	if changed {
		w.log.Info("every main loop pings again: watchdog pings resume")
	}
	if _, err := w.notify(daemon.SdNotifyWatchdog); err != nil {
		return false, fmt.Errorf("sd_notify WATCHDOG=1: %w", err)
	}
	return true, nil
}

// Run ticks every Interval()/2 until ctx ends; it returns at once when the
// watchdog is disabled. A failed send is logged, not fatal: systemd restarts
// the daemon if pings really stop arriving.
func (w *Watchdog) Run(ctx context.Context) {
	if !w.Enabled() {
		return
	}
	t := time.NewTicker(w.interval / 2)
	defer t.Stop()
	for {
		if _, err := w.Tick(); err != nil {
			w.log.Warn("watchdog ping failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
