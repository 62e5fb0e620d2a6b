package redisctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sort"
	"sync"
)

// Member TLS (an addon created with member TLS, api.Settings.MemberTLS):
// its redis members and sentinels listen on TLS only (port 0, tls-port),
// so every client the fleet makes of them must speak TLS. MemberOptions,
// SentinelOptions and Knock are the one place that builds those clients:
// they look the address up in the process's TLS table and speak TLS to an
// address found there. The callers (agent and coordinator) never build a
// tls.Config themselves: whoever knows an addon's members (the agent from
// its assignments, the coordinator from its state) states the table once
// per change with SetTLS (the agent) or a source (SetTLSSource: the
// coordinator answers from its state).

// TLS is how the fleet's clients reach a member that speaks TLS: the
// cluster CA that signed the addon's certificate, and the name checked in
// it. Redis does not verify host names (its replication and sentinel links
// check the chain only); go-redis does, so ServerName is a name the
// addon's certificate carries: the addon id (coordinator/addoncert.go puts
// it in every addon certificate as a DNS name).
type TLS struct {
	CA         *x509.CertPool
	ServerName string
}

// NewTLS is the TLS of an addon whose certificates caPEM signs.
func NewTLS(caPEM, serverName string) (*TLS, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		return nil, fmt.Errorf("member TLS: no CA certificate in the PEM given")
	}
	if serverName == "" {
		return nil, fmt.Errorf("member TLS: server name is missing")
	}
	return &TLS{CA: pool, ServerName: serverName}, nil
}

// Config is a fresh client tls.Config (TLS 1.2 at least).
func (t *TLS) Config() *tls.Config {
	return &tls.Config{RootCAs: t.CA, ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
}

// tlsTable holds, per owner (an agent's host id, a coordinator's id), a
// source answering which addresses speak TLS: an owner replaces its own
// source whole, so several agents and coordinators in one process (the
// tests) do not undo each other.
var tlsTable = struct {
	sync.RWMutex
	by map[string]func(addr string) *TLS
}{by: map[string]func(addr string) *TLS{}}

// SetTLSSource makes source owner's answer for TLSFor; nil drops it. The
// source must be safe for concurrent use and quick (it is asked each time
// a client is built).
func SetTLSSource(owner string, source func(addr string) *TLS) {
	tlsTable.Lock()
	defer tlsTable.Unlock()
	if source == nil {
		delete(tlsTable.by, owner)
		return
	}
	tlsTable.by[owner] = source
}

// SetTLS makes owner's answer the fixed table addrs (address → TLS); nil
// or empty drops it.
func SetTLS(owner string, addrs map[string]*TLS) {
	if len(addrs) == 0 {
		SetTLSSource(owner, nil)
		return
	}
	cp := make(map[string]*TLS, len(addrs))
	for a, t := range addrs {
		cp[a] = t
	}
	SetTLSSource(owner, func(addr string) *TLS { return cp[addr] })
}

// TLSFor is the TLS of the member at addr; nil when it speaks plaintext.
// Owners are asked in name order, so the answer does not depend on map
// order when two owners disagree.
func TLSFor(addr string) *TLS {
	tlsTable.RLock()
	owners := make([]string, 0, len(tlsTable.by))
	for o := range tlsTable.by {
		owners = append(owners, o)
	}
	sources := make([]func(string) *TLS, 0, len(owners))
	sort.Strings(owners)
	for _, o := range owners {
		sources = append(sources, tlsTable.by[o])
	}
	tlsTable.RUnlock()
	for _, src := range sources {
		if t := src(addr); t != nil {
			return t
		}
	}
	return nil
}

// DialTLS wraps dial (a go-redis Options.Dialer) so that it speaks TLS
// with cfg; cfg nil returns dial itself. go-redis applies its TLSConfig
// only with its own dialer: a caller giving its own (e.g. to dial from the
// host's address) wraps it with this.
func DialTLS(dial func(ctx context.Context, network, addr string) (net.Conn, error), cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if cfg == nil {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		c := tls.Client(raw, cfg)
		if err := c.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		return c, nil
	}
}
