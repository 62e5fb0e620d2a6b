package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerConfig is the TLS configuration of a coordinator's listener: it
// shows the holder's certificate (with the CA) and verifies a client
// certificate against the CA. With requireClient a client without one is
// refused in the handshake (Raft); without, it may come in and Authorize
// decides (the peer API: a newcomer joins without one).
func (h *Holder) ServerConfig(requireClient bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cur := h.Get()
			if cur == nil {
				return nil, errors.New("this coordinator has no certificate yet (not joined, or its cluster not secured: cacheplane cluster-secure)")
			}
			auth := tls.VerifyClientCertIfGiven
			if requireClient {
				auth = tls.RequireAndVerifyClientCert
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{cur.TLS},
				ClientCAs:    cur.Pool,
				ClientAuth:   auth,
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return nil
					}
					want := ""
					if requireClient {
						want = KindMember
					}
					_, err := Verify(cur.Pool, cs.PeerCertificates, want, h.now())
					return err
				},
			}, nil
		},
	}
}

// ClientConfig is the TLS configuration of a daemon calling a coordinator:
// it shows the holder's certificate and accepts a server whose certificate
// is a member's signed by the holder's CA (no host name check: the CA
// signs only the cluster's members).
func (h *Holder) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // VerifyConnection checks the chain against the cluster CA
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cur := h.Get()
			if cur == nil {
				return &tls.Certificate{}, nil
			}
			return &cur.TLS, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			cur := h.Get()
			if cur == nil {
				return errors.New("no cluster CA known yet")
			}
			if _, err := Verify(cur.Pool, cs.PeerCertificates, KindMember, h.now()); err != nil {
				return fmt.Errorf("coordinator certificate: %w", err)
			}
			return nil
		},
	}
}

// FirstContactConfig is the TLS configuration of a newcomer with only a
// join token: the server must show, beside its member certificate, the CA
// certificate whose hash the token carries, and its certificate must be
// signed by it. The CA found is stored into *ca.
func FirstContactConfig(caHash string, ca **x509.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // VerifyConnection pins the CA by the token's hash
		VerifyConnection: func(cs tls.ConnectionState) error {
			var found *x509.Certificate
			for _, c := range cs.PeerCertificates {
				if HashCert(c.Raw) == caHash {
					found = c
				}
			}
			if found == nil {
				return fmt.Errorf("the coordinator's CA is not the one the join token names (%s): wrong cluster, or someone in between", caHash)
			}
			pool := x509.NewCertPool()
			pool.AddCert(found)
			if _, err := Verify(pool, cs.PeerCertificates, KindMember, timeNow()); err != nil {
				return fmt.Errorf("coordinator certificate: %w", err)
			}
			*ca = found
			return nil
		},
	}
}
