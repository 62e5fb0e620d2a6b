package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Files a daemon keeps in its identity directory (0700), each 0600.
const (
	KeyFile  = "key.pem"
	CertFile = "cert.pem"
	CAFile   = "ca.pem"
)

// Save writes key, certificate and CA into dir (created 0700), each file
// 0600, each replaced atomically.
func Save(dir, keyPEM, certPEM, caPEM string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("identity dir: %w", err)
	}
	for _, f := range []struct{ name, data string }{{KeyFile, keyPEM}, {CertFile, certPEM}, {CAFile, caPEM}} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, []byte(f.data), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
		if err := os.Chmod(tmp, 0o600); err != nil {
			return fmt.Errorf("chmod %s: %w", f.name, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// ErrNoIdentity means the directory holds no identity yet.
var ErrNoIdentity = errors.New("no identity yet")

// Load reads what Save wrote.
func Load(dir string) (keyPEM, certPEM, caPEM string, err error) {
	var out [3]string
	for i, name := range []string{KeyFile, CertFile, CAFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return "", "", "", fmt.Errorf("%w in %s", ErrNoIdentity, dir)
		}
		if err != nil {
			return "", "", "", fmt.Errorf("read identity: %w", err)
		}
		out[i] = string(b)
	}
	return out[0], out[1], out[2], nil
}

// Current is one identity in use: the key pair with the CA appended (the
// chain a peer is shown), the leaf, the CA pool, the CA's hash.
type Current struct {
	TLS    tls.Certificate
	Leaf   *x509.Certificate
	CA     *x509.Certificate
	Pool   *x509.CertPool
	CAHash string
	Peer   Peer
}

// Parse builds a Current from PEM texts.
func Parse(keyPEM, certPEM, caPEM string) (*Current, error) {
	kp, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		return nil, fmt.Errorf("identity: key and certificate do not go together: %w", err)
	}
	ca, err := ParseCertPEM([]byte(caPEM))
	if err != nil {
		return nil, fmt.Errorf("identity: CA: %w", err)
	}
	leaf, err := x509.ParseCertificate(kp.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("identity: certificate: %w", err)
	}
	kp.Leaf = leaf
	kp.Certificate = append(kp.Certificate[:1:1], ca.Raw)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	p, err := PeerOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &Current{TLS: kp, Leaf: leaf, CA: ca, Pool: pool, CAHash: HashCert(ca.Raw), Peer: p}, nil
}

// Holder keeps the identity in use; TLS configurations read it at every
// handshake, so a renewed certificate is used without a restart.
type Holder struct {
	cur atomic.Pointer[Current]
	// Now is the clock certificate checks use (time.Now when nil).
	Now func() time.Time
}

// Set replaces the identity.
func (h *Holder) Set(c *Current) { h.cur.Store(c) }

// Get is the identity in use, nil before the first Set.
func (h *Holder) Get() *Current { return h.cur.Load() }

func (h *Holder) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}
