package redisctl

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
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
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return Answer{ConnErr: fmt.Errorf("connect %s: %w", addr, err)}
	}
	// Closed with a reset (SO_LINGER 0): a look is one connection per
	// member and heartbeat, and a graceful close would cost a FIN exchange
	// and leave a TIME_WAIT socket on the host for each.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	defer c.Close()
	if !ping {
		return Answer{}
	}
	deadline := time.Now().Add(replyWithin)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	var conn net.Conn = c
	if t := TLSFor(addr); t != nil {
		// Member TLS: the handshake is redis's own work (a frozen member
		// accepts the connection and never answers it: silent).
		tc := tls.Client(c, t.Config())
		if err := tc.Handshake(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return Answer{Reply: ReplySilent}
			}
			return Answer{Reply: ReplyOther, Text: "TLS handshake: " + err.Error()}
		}
		conn = tc
	}
	var req strings.Builder
	want := 1
	if password != "" {
		req.WriteString(resp("AUTH", user, password))
		want = 2
	}
	req.WriteString(resp("PING"))
	if _, err := conn.Write([]byte(req.String())); err != nil {
		return Answer{Reply: ReplyOther, Text: "write: " + scrubErr(err, password)}
	}
	r := bufio.NewReader(conn)
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
