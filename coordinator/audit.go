package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// The audit log: one JSON line per admin write received on this member's
// socket, naming the local user who made it. The uid comes from the kernel
// (SO_PEERCRED of the socket's connection), not from anything the client
// says. Reads are not logged; request bodies are not logged (they are
// validated and applied, and an audit line must never carry a secret).

// peerCred is what the kernel says about the process at the other end of
// an admin socket connection.
type peerCred struct {
	UID, GID uint32
	PID      int32
	Known    bool
}

type peerCredKey struct{}

// withPeerCred is the admin server's ConnContext: it reads SO_PEERCRED once
// per connection.
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerCredKey{}, readPeerCred(c))
}

func readPeerCred(c net.Conn) peerCred {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peerCred{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peerCred{}
	}
	var cred peerCred
	_ = raw.Control(func(fd uintptr) {
		u, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
		if err == nil {
			cred = peerCred{UID: u.Uid, GID: u.Gid, PID: u.Pid, Known: true}
		}
	})
	return cred
}

// auditLog writes the audit lines of one member to a 0600 file.
type auditLog struct {
	mu  sync.Mutex
	f   *os.File
	log *slog.Logger
}

// openAuditLog opens (appending) path, creating it 0600.
func openAuditLog(path string) (*auditLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log mode: %w", err)
	}
	a := &auditLog{f: f}
	a.log = slog.New(slog.NewJSONHandler(a, nil))
	return a, nil
}

// Write serialises whole lines (slog writes each record in one call).
func (a *auditLog) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Write(p)
}

// Close closes the file.
func (a *auditLog) Close() error { return a.f.Close() }

// wrap logs every request that is not a read once it is answered: who
// (uid, gid, pid from SO_PEERCRED), what (method, path, query), the answer
// (status) and how long it took.
func (a *auditLog) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		cred, _ := r.Context().Value(peerCredKey{}).(peerCred)
		attrs := []slog.Attr{
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("status", sw.status), slog.Duration("took", time.Since(start)),
		}
		if r.URL.RawQuery != "" {
			attrs = append(attrs, slog.String("query", r.URL.RawQuery))
		}
		if cred.Known {
			attrs = append(attrs, slog.Int("uid", int(cred.UID)), slog.Int("gid", int(cred.GID)), slog.Int("pid", int(cred.PID)))
		} else {
			attrs = append(attrs, slog.String("uid", "unknown"))
		}
		a.log.LogAttrs(r.Context(), slog.LevelInfo, "admin write", attrs...)
	})
}

// statusWriter remembers the status code; it passes Flush on (downloads
// stream).
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(p)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
