// Package sdnotifytest is the service manager's side of sd_notify for tests:
// a unixgram socket a test listens on, named to the process under test as
// NOTIFY_SOCKET, and reads with deadlines. It owns nothing a daemon runs.
package sdnotifytest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Socket is a listening NOTIFY_SOCKET.
type Socket struct {
	Path string
	conn *net.UnixConn
}

// Listen opens a socket in a short-named temporary directory (a unix
// socket path must stay under 108 bytes), closed and removed at cleanup.
func Listen(t testing.TB) *Socket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", path, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Socket{Path: path, conn: conn}
}

// Env is the NOTIFY_SOCKET assignment for a child's environment.
func (s *Socket) Env() string { return "NOTIFY_SOCKET=" + s.Path }

// Next returns the next datagram, or an error once timeout passes.
func (s *Socket) Next(timeout time.Duration) (string, error) {
	if err := s.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", fmt.Errorf("notify socket deadline: %w", err)
	}
	buf := make([]byte, 4096)
	n, err := s.conn.Read(buf)
	if err != nil {
		return "", fmt.Errorf("read notify socket: %w", err)
	}
	return string(buf[:n]), nil
}

// WaitFor reads datagrams until one has a line equal to want (such as
// "READY=1") and returns that datagram, or fails once timeout passes. Other
// datagrams read on the way are returned in seen.
func (s *Socket) WaitFor(want string, timeout time.Duration) (msg string, seen []string, err error) {
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return "", seen, fmt.Errorf("no %s within %s (got %q)", want, timeout, seen)
		}
		m, err := s.Next(left)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return "", seen, fmt.Errorf("no %s within %s (got %q)", want, timeout, seen)
			}
			return "", seen, err
		}
		if HasLine(m, want) {
			return m, seen, nil
		}
		seen = append(seen, m)
	}
}

// Drain discards datagrams already queued, so a later read sees only new ones.
func (s *Socket) Drain() {
	for {
		if _, err := s.Next(time.Millisecond); err != nil {
			return
		}
	}
}

// HasLine reports whether the sd_notify message msg has the line line.
func HasLine(msg, line string) bool {
	for _, l := range strings.Split(msg, "\n") {
		if l == line {
			return true
		}
	}
	return false
}
