package sdnotify_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/internal/sdnotify"
	"github.com/cacheplane/cacheplane/internal/sdnotify/sdnotifytest"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestNotifySocket speaks to a real unixgram NOTIFY_SOCKET, as systemd
// listens on one.
func TestNotifySocket(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	if err := sdnotify.Ready("admin socket listening"); err != nil {
		t.Fatal(err)
	}
	msg, _, err := sock.WaitFor("READY=1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !sdnotifytest.HasLine(msg, "STATUS=admin socket listening") {
		t.Errorf("READY without its status: %q", msg)
	}
	if err := sdnotify.Stopping(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sock.WaitFor("STOPPING=1", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestNoNotifySocketIsNoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	t.Setenv("WATCHDOG_USEC", "")
	os.Unsetenv("WATCHDOG_USEC")
	if err := sdnotify.Ready(""); err != nil {
		t.Fatal(err)
	}
	w, err := sdnotify.NewWatchdog(testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if w.Enabled() {
		t.Fatal("watchdog enabled without WATCHDOG_USEC")
	}
	w.Run(context.Background()) // returns at once when disabled
}

func TestNotifySocketGone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", t.TempDir()+"/none.sock")
	if err := sdnotify.Ready(""); err == nil {
		t.Fatal("Ready to a missing socket: no error")
	}
}

// TestWatchdogOverSocket: with WatchdogSec=300ms WATCHDOG=1 arrives about
// every 150 ms while both loops ping; once one loop stops pinging, none
// arrives; when it pings again, they resume.
func TestWatchdogOverSocket(t *testing.T) {
	const interval = 300 * time.Millisecond
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	w, err := sdnotify.NewWatchdog(testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if w.Interval() != interval {
		t.Fatalf("interval %s, want %s", w.Interval(), interval)
	}
	main, other := w.Register("main", 0), w.Register("other", 0)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.Run(ctx) }()
	stuck := make(chan struct{})
	go func() { // "other": pings until told it is stuck
		defer wg.Done()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-stuck:
				return
			case <-tk.C:
				other.Ping()
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()
	// Healthy: several pings arrive.
	for i := 0; i < 3; i++ {
		main.Ping()
		if _, _, err := sock.WaitFor("WATCHDOG=1", 2*time.Second); err != nil {
			t.Fatalf("healthy ping %d: %v", i, err)
		}
	}
	// "other" gets stuck: within its bound plus a tick no ping may follow.
	close(stuck)
	testutil.WaitFor(t, 2*time.Second, func() error {
		main.Ping()
		if s := w.Stale(time.Now()); len(s) != 1 || s[0] != "other" {
			return fmt.Errorf("stale %q, want [other]", s)
		}
		return nil
	})
	sock.Drain()
	main.Ping()
	if m, err := sock.Next(3 * interval); err == nil {
		t.Fatalf("got %q while a loop is stuck", m)
	}
	// It recovers: pings resume.
	other.Ping()
	main.Ping()
	if _, _, err := sock.WaitFor("WATCHDOG=1", 2*time.Second); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}
