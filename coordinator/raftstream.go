package coordinator

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cacheplane/cacheplane/identity"
)

// tlsStream is Raft's stream layer over TLS 1.3, mutual: both ends show
// a member certificate signed by the cluster CA (identity.Holder), and a
// peer without one is refused in the handshake.
type tlsStream struct {
	ln        net.Listener
	advertise net.Addr
	holder    *identity.Holder
	client    *tls.Config
	server    *tls.Config
}

var _ raft.StreamLayer = (*tlsStream)(nil)

func newTLSStream(bind string, advertise net.Addr, holder *identity.Holder) (*tlsStream, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	return &tlsStream{ln: ln, advertise: advertise, holder: holder, client: holder.ClientConfig(), server: holder.ServerConfig(true)}, nil
}

// Accept returns the next connection; its handshake runs on its first read
// (by Raft's connection handler), so a slow or hostile client never holds
// up the accept loop.
func (s *tlsStream) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(c, s.server), nil
}

func (s *tlsStream) Close() error   { return s.ln.Close() }
func (s *tlsStream) Addr() net.Addr { return s.advertise }

// Dial connects to a member and completes the handshake within timeout.
func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: s.client}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft dial %s over TLS: %w", address, err)
	}
	return c, nil
}
