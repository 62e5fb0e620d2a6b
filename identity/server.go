package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"
)

// KindAddon is an addon's server certificate (its entrypoint's TLS): the
// common name is the addon id. It is a server certificate only, and
// PeerOf refuses its kind, so it never reaches the peer API as a client.
const KindAddon = "addon"

// ServerRequest is what IssueServer issues: a server certificate for an
// addon, valid from NotBefore to NotAfter, naming DNSNames and IPs.
type ServerRequest struct {
	Name      string // the addon id
	DNSNames  []string
	IPs       []string
	NotBefore time.Time
	NotAfter  time.Time
}

// IssueServer makes a new key and a server certificate for it signed by
// the CA (PEM both). The key is made here, on the coordinator that signs,
// and travels to the addon's entrypoint hosts only over their mutual TLS.
func (c CA) IssueServer(r ServerRequest) (certPEM, keyPEM string, err error) {
	if r.Name == "" {
		return "", "", errors.New("server certificate: name is empty")
	}
	if !r.NotAfter.After(r.NotBefore) {
		return "", "", fmt.Errorf("server certificate for %s: not after %s is not after not before %s", r.Name, r.NotAfter, r.NotBefore)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: r.Name, OrganizationalUnit: []string{KindAddon}, Organization: []string{"cacheplane"}},
		NotBefore:   r.NotBefore,
		NotAfter:    r.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    append([]string(nil), r.DNSNames...),
	}
	for _, s := range r.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return "", "", fmt.Errorf("server certificate for %s: %q is not an IP address", r.Name, s)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	if tmpl.SerialNumber, err = newSerialInt(); err != nil {
		return "", "", err
	}
	caCert, err := c.Cert()
	if err != nil {
		return "", "", err
	}
	caKey, err := c.key()
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("server key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", fmt.Errorf("sign server certificate for %s: %w", r.Name, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("server key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), nil
}
