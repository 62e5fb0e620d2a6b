package coordinator

// The peer API of a cluster made before daemon identities, until it is
// secured. Such a cluster's members and agents speak plain HTTP (with the
// cluster token when one is configured); the leader records a member's
// protocol level by asking it, and the cluster CA (cluster-secure) is a
// level-2 command. So a member upgraded in place on a data dir made before
// identities, as long as it has no member certificate, also serves plain
// HTTP on its peer port (the first byte tells a TLS ClientHello from a
// request) for what identity.AuthorizePlain allows, and calls the other
// members in plain HTTP. Once it has its certificate (cluster-secure), a
// plaintext connection is closed unanswered and it calls over mutual TLS
// only. A data dir made with identities never serves plaintext.

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Unsecured reports whether this member speaks plain HTTP on the peer API:
// its data dir was made before identities and it has no member
// certificate yet.
func (s *Store) Unsecured() bool { return s.preIdentities && s.holder.Get() == nil }

// peerRequest is a request to another member's peer API at addr: https,
// or, while this member is Unsecured, http with the cluster token.
func (s *Store) peerRequest(ctx context.Context, method, addr, path string, body io.Reader) (*http.Request, error) {
	plain := s.Unsecured()
	scheme := "https"
	if plain {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+addr+path, body)
	if err != nil {
		return nil, err
	}
	if plain && s.cfg.ClusterToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.ClusterToken)
	}
	return req, nil
}

// plainTokenOK checks a plaintext request's cluster token (any request
// when none is configured, as the releases before identities did).
func plainTokenOK(r *http.Request, token string) bool {
	if token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}

// peekTimeout bounds how long a new connection may take to send its first
// byte.
const peekTimeout = 10 * time.Second

// maxHandshakes bounds the TLS handshakes a peer listener runs at once.
// Thousands of agents reconnect together when a leader dies; with a
// goroutine each running its handshake, Raft's goroutines (heartbeats,
// votes, the new leader's lease) wait behind all of them in the scheduler's
// queue, long enough to miss their timeouts on a small machine. A bounded
// number running keeps that queue short; the others wait unscheduled.
// 16 per CPU leaves the CPUs busy when handshakes wait on the network.
var maxHandshakes = 16 * runtime.GOMAXPROCS(0)

// peerListener serves TLS and, while plain() holds, plain HTTP on one
// port: each accepted connection's first byte is read (in its own
// goroutine, so a silent client never holds up the others); 0x16 (a TLS
// handshake record) makes it a *tls.Conn for http.Server, its handshake
// done here with at most maxHandshakes at once; anything else a plain
// connection, or closed unanswered when plain() is false. TLS offers
// HTTP/2 (peerProtos).
type peerListener struct {
	ln    net.Listener
	conf  *tls.Config
	plain func() bool
	hs    chan struct{} // a slot per handshake under way

	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	mu      sync.Mutex
	peeking map[net.Conn]struct{} // closed by Close
}

func newPeerListener(ln net.Listener, conf *tls.Config, plain func() bool) *peerListener {
	l := &peerListener{ln: ln, conf: withHTTP2(conf), plain: plain, hs: make(chan struct{}, maxHandshakes),
		conns: make(chan net.Conn), done: make(chan struct{}),
		peeking: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *peerListener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				l.once.Do(func() { close(l.done) })
				return
			}
			// Out of file descriptors and the like: retry, as http.Server
			// does, rather than stop serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			t := time.NewTimer(backoff)
			select {
			case <-l.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			c.Close()
			return
		default:
		}
		l.peeking[c] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go l.classify(c)
	}
}

// classify reads the connection's first byte and hands it to Accept.
func (l *peerListener) classify(c net.Conn) {
	defer l.wg.Done()
	out := l.peek(c)
	l.mu.Lock()
	delete(l.peeking, c)
	l.mu.Unlock()
	if out == nil {
		c.Close()
		return
	}
	select {
	case l.conns <- out:
	case <-l.done:
		c.Close()
	}
}

// peek is the connection to serve, or nil to close it.
func (l *peerListener) peek(c net.Conn) net.Conn {
	_ = c.SetReadDeadline(time.Now().Add(peekTimeout))
	br := bufio.NewReaderSize(c, 16) // the smallest bufio allows
	first, err := br.Peek(1)
	if err != nil {
		return nil
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: c, r: br}
	switch {
	case first[0] == 0x16:
		tc := tls.Server(pc, l.conf)
		if !l.handshake(tc) {
			return nil
		}
		return tc
	case l.plain():
		return pc
	default:
		return nil // secured: plaintext gets nothing
	}
}

// handshake runs tc's handshake once a slot is free (http.Server's own
// call then returns at once), all within peekTimeout; false: close it.
func (l *peerListener) handshake(tc *tls.Conn) bool {
	deadline := time.Now().Add(peekTimeout)
	wait := time.NewTimer(peekTimeout)
	defer wait.Stop()
	select {
	case l.hs <- struct{}{}:
	case <-l.done:
		return false
	case <-wait.C:
		return false
	}
	defer func() { <-l.hs }()
	_ = tc.SetDeadline(deadline)
	if err := tc.Handshake(); err != nil {
		return false
	}
	_ = tc.SetDeadline(time.Time{})
	return true
}

// peerProtos are the protocols the TLS peer port offers (ALPN): HTTP/2
// first, so an agent's assignments watch and its heartbeats share one
// connection (http.Server serves h2 on the *tls.Conn it is given once it
// was negotiated); HTTP/1.1 for clients that offer nothing else. Plain
// connections (a cluster made before identities) stay HTTP/1.1.
var peerProtos = []string{"h2", "http/1.1"}

// withHTTP2 is conf offering peerProtos, also in the configuration its
// GetConfigForClient gives each handshake.
func withHTTP2(conf *tls.Config) *tls.Config {
	c := conf.Clone()
	c.NextProtos = peerProtos
	if get := conf.GetConfigForClient; get != nil {
		c.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
			cc, err := get(hi)
			if cc == nil || err != nil {
				return cc, err
			}
			cc = cc.Clone()
			cc.NextProtos = peerProtos
			return cc, nil
		}
	}
	return c
}

// Accept returns the next classified connection.
func (l *peerListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("peer listener: %w", net.ErrClosed)
	}
}

// Close stops accepting, closes the connections not classified yet and
// waits for the listener's goroutines.
func (l *peerListener) Close() error {
	l.mu.Lock()
	l.once.Do(func() { close(l.done) })
	for c := range l.peeking {
		c.Close()
	}
	l.mu.Unlock()
	err := l.ln.Close()
	l.wg.Wait()
	return err
}

func (l *peerListener) Addr() net.Addr { return l.ln.Addr() }

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
