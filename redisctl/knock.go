package redisctl

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// ReplyKind is how a member answered Knock's PING.
type ReplyKind int

// Reply kinds.
const (
	// ReplyNotAsked: Knock only connected (a TCP service, e.g. HAProxy).
	ReplyNotAsked ReplyKind = iota
	// ReplyPong: +PONG (after +OK when authenticating).
	ReplyPong
	// ReplyBusy: -BUSY, redis is running a script or function past its
	// busy-reply-threshold (lua-time-limit, 5 s by default).
	ReplyBusy
	// ReplySilent: the connection was accepted (by the kernel, at least)
	// but nothing came back within the bound: a long command (DEBUG
	// SLEEP, a big DEL or KEYS, a script under busy-reply-threshold) or a
	// frozen process.
	ReplySilent
	// ReplyOther: another answer or a closed connection (-LOADING, an
	// authentication error, EOF); Answer.Text says what.
	ReplyOther
)

func (k ReplyKind) String() string {
	switch k {
	case ReplyNotAsked:
		return "not asked"
	case ReplyPong:
		return "pong"
	case ReplyBusy:
		return "busy"
	case ReplySilent:
		return "silent"
	}
	return "other"
}

// Answer is what a fresh connection to a member's own address found.
type Answer struct {
	// ConnErr is the connect's error; nil when the address accepted it.
	ConnErr error
	Reply   ReplyKind
	// Text is the answer for ReplyOther (a reply line or a read error);
	// it never holds the password.
	Text string
}

// Accepted reports whether the address accepted the connection.
func (a Answer) Accepted() bool { return a.ConnErr == nil }

// Knock opens a new connection to addr (never a pooled one: the question
// is whether the member accepts connections on its own address now) within
// dialTimeout and, when ping is set, sends AUTH FleetUser password (if
// password is not empty) and PING and waits up to replyWithin for the
// answers. A member whose bind or
// port was moved refuses; a busy or frozen one accepts (the kernel
// completes the handshake from the listen backlog) and stays silent, or
// answers -BUSY during a long script.
func Knock(ctx context.Context, addr, password string, ping bool, dialTimeout, replyWithin time.Duration) Answer {
	return knock(ctx, addr, FleetUser, password, ping, dialTimeout, replyWithin)
}

// KnockSentinel is Knock for a sentinel: it logs in as SentinelUser with
// password (the fleet credential, the sentinels' requirepass).
func KnockSentinel(ctx context.Context, addr, password string, ping bool, dialTimeout, replyWithin time.Duration) Answer {
	return knock(ctx, addr, SentinelUser, password, ping, dialTimeout, replyWithin)
}

func knock(ctx context.Context, addr, user, password string, ping bool, dialTimeout, replyWithin time.Duration) Answer {
	a, c, _ := dialLook(ctx, addr, user, password, ping, dialTimeout, replyWithin)
	if c != nil {
		_ = c.Close()
	}
	return a
}

// dialLook is Knock's connection: it returns the answer and, when the
// connection is left in step (accepted and, if ping, answered +PONG), the
// connection and its reader for more looks; the caller closes it.
func dialLook(ctx context.Context, addr, user, password string, ping bool, dialTimeout, replyWithin time.Duration) (Answer, net.Conn, *bufio.Reader) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return Answer{ConnErr: fmt.Errorf("connect %s: %w", addr, err)}, nil, nil
	}
	// Closed with a reset (SO_LINGER 0): a graceful close would cost a FIN
	// exchange and leave a TIME_WAIT socket on the host for each look.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	if !ping {
		return Answer{}, c, nil
	}
	_ = c.SetDeadline(replyDeadline(ctx, replyWithin))
	var conn net.Conn = c
	if t := TLSFor(addr); t != nil {
		// Member TLS: the handshake is redis's own work (a frozen member
		// accepts the connection and never answers it: silent).
		tc := tls.Client(c, t.Config())
		if err := tc.Handshake(); err != nil {
			_ = c.Close()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return Answer{Reply: ReplySilent}, nil, nil
			}
			return Answer{Reply: ReplyOther, Text: "TLS handshake: " + err.Error()}, nil, nil
		}
		conn = tc
	}
	var req strings.Builder
	want := 1
	if password != "" {
		req.WriteString(resp("AUTH", user, password))
		want = 2
	}
	req.WriteString(pingCmd)
	r := bufio.NewReaderSize(conn, lookBufferSize)
	a := exchange(conn, r, req.String(), want, password)
	if a.Reply != ReplyPong {
		_ = conn.Close()
		return a, nil, nil
	}
	return a, conn, r
}

// pingCmd is PING in RESP.
const pingCmd = "*1\r\n$4\r\nPING\r\n"

// lookBufferSize is a look connection's read buffer: its replies are a
// line.
const lookBufferSize = 512

// replyDeadline is now + replyWithin, or ctx's deadline when earlier.
func replyDeadline(ctx context.Context, replyWithin time.Duration) time.Time {
	deadline := time.Now().Add(replyWithin)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	return deadline
}

// exchange writes req on conn and reads want reply lines (the last one
// PING's) from r within the deadline set on conn.
func exchange(conn net.Conn, r *bufio.Reader, req string, want int, password string) Answer {
	if _, err := conn.Write([]byte(req)); err != nil {
		return Answer{Reply: ReplyOther, Text: "write: " + scrubErr(err, password)}
	}
	for i := 0; i < want; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return Answer{Reply: ReplySilent}
			}
			return Answer{Reply: ReplyOther, Text: "read: " + scrubErr(err, password)}
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "-BUSY"):
			return Answer{Reply: ReplyBusy, Text: line}
		case i < want-1 && line == "+OK":
			continue // AUTH accepted
		case i == want-1 && line == "+PONG":
			return Answer{Reply: ReplyPong}
		default:
			if password != "" {
				line = strings.ReplaceAll(line, password, "<password>")
			}
			return Answer{Reply: ReplyOther, Text: line}
		}
	}
	return Answer{Reply: ReplyOther, Text: "no answer"}
}

// Looker looks at one member again and again (a process of it: a new
// process gets a new Looker) at a fraction of Knock's cost: the connection
// of a look that found the member answering is kept, and the next looks
// send PING on it (one write and one read, no connect, no AUTH) instead of
// opening a new one, until FreshEvery has passed since it was opened: then
// a look opens a new connection again (Knock), which is how a member whose
// bind or port moved (it still answers on old connections) or whose
// listener stopped accepting is seen. A kept connection that breaks (the
// process died or closed it: EOF, reset) is replaced by a new one in the
// same look, so the answer is a fresh connection's. One that does not
// answer within the bound (busy) or answers anything but +PONG or -BUSY is
// closed: the next look opens a new one. For a TCP member (ping false) an
// accepted connect answers for FreshEvery; the connection is not kept.
// Looks through one Looker take turns.
type Looker struct {
	Addr, User, Password string
	Ping                 bool
	// FreshEvery bounds the age of the connection a look answers from.
	FreshEvery time.Duration

	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	opened time.Time // of conn, or of the last accepted connect (!Ping)
}

// NewLooker is a Looker for a redis member (user FleetUser) or, with
// sentinel set, a sentinel (SentinelUser); ping false: a TCP member.
func NewLooker(addr, password string, sentinel, ping bool, freshEvery time.Duration) *Looker {
	user := FleetUser
	if sentinel {
		user = SentinelUser
	}
	return &Looker{Addr: addr, User: user, Password: password, Ping: ping, FreshEvery: freshEvery}
}

// Look is one look (see Looker) with Knock's bounds; with mustFresh set it
// opens a new connection whatever the kept one's age. fresh says the
// answer came from a new connection.
func (l *Looker) Look(ctx context.Context, dialTimeout, replyWithin time.Duration, mustFresh bool) (a Answer, fresh bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !mustFresh && !l.opened.IsZero() && now.Sub(l.opened) < l.FreshEvery {
		if !l.Ping {
			return Answer{}, false
		}
		if l.conn != nil {
			_ = l.conn.SetDeadline(replyDeadline(ctx, replyWithin))
			a := exchange(l.conn, l.r, pingCmd, 1, "")
			switch {
			case a.Reply == ReplyPong, a.Reply == ReplyBusy:
				return a, false // in step: the reply was read
			case a.Reply == ReplySilent:
				l.closeLocked() // its late reply would answer the next PING
				return a, false
			}
			// Broken (EOF, reset) or an unexpected reply: ask a new
			// connection now.
		}
	}
	l.closeLocked()
	a, c, r := dialLook(ctx, l.Addr, l.User, l.Password, l.Ping, dialTimeout, replyWithin)
	switch {
	case c != nil && l.Ping:
		l.conn, l.r, l.opened = c, r, now
	case c != nil:
		_ = c.Close()
		l.opened = now
	}
	return a, true
}

// Close closes the kept connection, if any; the next look opens a new one.
func (l *Looker) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked()
}

func (l *Looker) closeLocked() {
	if l.conn != nil {
		_ = l.conn.Close()
	}
	l.conn, l.r, l.opened = nil, nil, time.Time{}
}

// resp encodes one command as a RESP array of bulk strings.
func resp(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func scrubErr(err error, password string) string {
	s := err.Error()
	if password != "" {
		s = strings.ReplaceAll(s, password, "<password>")
	}
	return s
}
