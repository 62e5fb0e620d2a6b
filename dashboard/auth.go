package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Token lifetimes accepted by IssueToken.
const (
	MinTTL     = time.Minute
	MaxTTL     = 7 * 24 * time.Hour
	DefaultTTL = 12 * time.Hour
	// maxLive bounds the tokens and sessions kept (expired ones are pruned
	// first): a flood of ui-token calls cannot grow memory without bound.
	maxLive = 1024
)

// ErrBadToken means a login token is unknown, used or expired.
var ErrBadToken = errors.New("unknown, used or expired login token")

// Session is one logged-in browser. ID names it in the audit log; the
// cookie value that proves it is known only to the browser (Auth keeps its
// hash).
type Session struct {
	ID      string
	CSRF    string
	Expires time.Time
}

// Auth keeps login tokens and sessions in memory, by the SHA-256 of their
// secret value: neither a token nor a cookie can be read back from it.
type Auth struct {
	now func() time.Time

	mu       sync.Mutex
	tokens   map[[32]byte]time.Time
	sessions map[[32]byte]Session
}

// NewAuth returns an empty Auth reading time from now (time.Now if nil).
func NewAuth(now func() time.Time) *Auth {
	if now == nil {
		now = time.Now
	}
	return &Auth{now: now, tokens: map[[32]byte]time.Time{}, sessions: map[[32]byte]Session{}}
}

func secret(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func hash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// IssueToken makes a one-time login token valid for ttl; the session it
// opens ends at the same time.
func (a *Auth) IssueToken(ttl time.Duration) (string, time.Time, error) {
	if ttl < MinTTL || ttl > MaxTTL {
		return "", time.Time{}, fmt.Errorf("ttl %s: must be between %s and %s", ttl, MinTTL, MaxTTL)
	}
	tok, err := secret(32)
	if err != nil {
		return "", time.Time{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.pruneLocked(now)
	if len(a.tokens) >= maxLive {
		return "", time.Time{}, fmt.Errorf("%d login tokens are unused: wait until some expire", len(a.tokens))
	}
	exp := now.Add(ttl)
	a.tokens[hash(tok)] = exp
	return tok, exp, nil
}

// Login consumes token and opens a session; it returns the cookie value.
func (a *Auth) Login(token string) (string, Session, error) {
	cookie, err := secret(32)
	if err != nil {
		return "", Session{}, err
	}
	csrf, err := secret(24)
	if err != nil {
		return "", Session{}, err
	}
	id := make([]byte, 6)
	if _, err := rand.Read(id); err != nil {
		return "", Session{}, fmt.Errorf("random: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	a.pruneLocked(now)
	h := hash(token)
	exp, ok := a.tokens[h]
	if !ok || !now.Before(exp) {
		return "", Session{}, ErrBadToken
	}
	delete(a.tokens, h)
	if len(a.sessions) >= maxLive {
		return "", Session{}, fmt.Errorf("%d sessions are open: log some out first", len(a.sessions))
	}
	s := Session{ID: hex.EncodeToString(id), CSRF: csrf, Expires: exp}
	a.sessions[hash(cookie)] = s
	return cookie, s, nil
}

// Session returns the live session of a cookie value.
func (a *Auth) Session(cookie string) (Session, bool) {
	if cookie == "" {
		return Session{}, false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	h := hash(cookie)
	s, ok := a.sessions[h]
	if !ok {
		return Session{}, false
	}
	if !a.now().Before(s.Expires) {
		delete(a.sessions, h)
		return Session{}, false
	}
	return s, true
}

// remaining is how long s has left.
func (a *Auth) remaining(s Session) time.Duration { return s.Expires.Sub(a.now()) }

// Logout ends the session of a cookie value.
func (a *Auth) Logout(cookie string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sessions, hash(cookie))
}

func (a *Auth) pruneLocked(now time.Time) {
	for h, exp := range a.tokens {
		if !now.Before(exp) {
			delete(a.tokens, h)
		}
	}
	for h, s := range a.sessions {
		if !now.Before(s.Expires) {
			delete(a.sessions, h)
		}
	}
}
