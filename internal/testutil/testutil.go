// Package testutil holds helpers shared by tests: polling with a deadline
// instead of sleeping, free ports on loopback addresses, and slog loggers
// that write to t.Log.
package testutil

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"
)

// WaitFor polls fn until it returns nil or timeout passes, then fails the
// test with fn's last error.
func WaitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := Poll(timeout, fn); err != nil {
		t.Fatalf("condition not met within %s: %v", timeout, err)
	}
}

// Poll polls fn until it returns nil or timeout passes; it returns the last
// error. The interval grows from 5 ms to 100 ms.
func Poll(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	interval := 5 * time.Millisecond
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(interval) // polling interval, not synchronisation
		if interval < 100*time.Millisecond {
			interval *= 2
		}
	}
}

// FreePort returns a TCP port free on host at the time of the call.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr returns host:FreePort(host).
func Addr(t testing.TB, host string) string {
	return fmt.Sprintf("%s:%d", host, FreePort(t, host))
}

// Logger returns a slog logger writing to t.Log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Writer returns an io.Writer that writes to t.Log until the test ends.
func Writer(t testing.TB) io.Writer {
	w := &tWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return w
}

type tWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(p))
	}
	return len(p), nil
}
