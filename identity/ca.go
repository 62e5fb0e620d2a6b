package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Kinds of certificate: its subject's OrganizationalUnit.
const (
	// KindAgent is an agent's: the common name is its host id.
	KindAgent = "agent"
	// KindMember is a coordinator member's: the common name is its member id.
	KindMember = "member"
)

// CALifetime is how long a cluster CA is valid.
const CALifetime = 10 * 365 * 24 * time.Hour

// CA is the cluster CA: its certificate and its private key, PEM. It lives
// in the coordinators' FSM only; the key never leaves them.
type CA struct {
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

// String never shows the key.
func (c CA) String() string {
	h, _ := c.Hash()
	return "cluster CA " + h
}

// LogValue keeps the key out of structured logs.
func (c CA) LogValue() any { return c.String() }

// NewCA makes a CA valid from now (less a minute of clock skew).
func NewCA(now time.Time) (CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return CA{}, fmt.Errorf("CA key: %w", err)
	}
	serial, err := newSerialInt()
	if err != nil {
		return CA{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "cacheplane cluster CA", Organization: []string{"cacheplane"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return CA{}, fmt.Errorf("CA certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return CA{}, fmt.Errorf("CA key: %w", err)
	}
	return CA{
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		KeyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})),
	}, nil
}

// Cert parses the CA certificate.
func (c CA) Cert() (*x509.Certificate, error) { return ParseCertPEM([]byte(c.CertPEM)) }

// Hash is the CA certificate's "sha256:<hex>" (of its DER).
func (c CA) Hash() (string, error) {
	cert, err := c.Cert()
	if err != nil {
		return "", err
	}
	return HashCert(cert.Raw), nil
}

// HashCert is "sha256:<hex>" of a certificate's DER.
func HashCert(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseCertPEM parses the first certificate of a PEM text.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no certificate in the PEM text")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return c, nil
		}
	}
}

func (c CA) key() (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode([]byte(c.KeyPEM))
	if b == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	k, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, errors.New("CA key: cannot parse it")
	}
	return k, nil
}

// Request is what Sign issues: a certificate of Kind for Name, with Serial,
// valid from NotBefore to NotAfter, for the public key of CSR (PEM; its
// subject is ignored).
type Request struct {
	CSRPEM    string
	Kind      string
	Name      string
	Serial    string // hex, from NewSerial
	NotBefore time.Time
	NotAfter  time.Time
}

// Sign issues a certificate (PEM).
func (c CA) Sign(r Request) (string, error) {
	if r.Kind != KindAgent && r.Kind != KindMember {
		return "", fmt.Errorf("certificate kind %q: want %s or %s", r.Kind, KindAgent, KindMember)
	}
	if r.Name == "" {
		return "", errors.New("certificate name is empty")
	}
	csr, err := ParseCSR(r.CSRPEM)
	if err != nil {
		return "", err
	}
	serial, ok := new(big.Int).SetString(r.Serial, 16)
	if !ok || serial.Sign() <= 0 {
		return "", fmt.Errorf("certificate serial %q is not a positive hex number", r.Serial)
	}
	caCert, err := c.Cert()
	if err != nil {
		return "", err
	}
	key, err := c.key()
	if err != nil {
		return "", err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if r.Kind == KindMember {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: r.Name, OrganizationalUnit: []string{r.Kind}, Organization: []string{"cacheplane"}},
		NotBefore:    r.NotBefore,
		NotAfter:     r.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, csr.PublicKey, key)
	if err != nil {
		return "", fmt.Errorf("sign %s certificate for %s: %w", r.Kind, r.Name, err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

// ParseCSR parses and checks a PEM certificate request.
func ParseCSR(csrPEM string) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("certificate request: no CERTIFICATE REQUEST PEM block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: bad signature: %w", err)
	}
	return csr, nil
}

// NewKey makes a private key and a certificate request for it (PEM both).
func NewKey(name string) (keyPEM, csrPEM string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return "", "", fmt.Errorf("certificate request: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func newSerialInt() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// NewSerial is a random certificate serial, hex.
func NewSerial() (string, error) {
	n, err := newSerialInt()
	if err != nil {
		return "", err
	}
	return n.Text(16), nil
}

// SerialOf is a certificate's serial as NewSerial writes it.
func SerialOf(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// Peer is who a certificate names. The zero Peer is a caller without a
// certificate.
type Peer struct {
	Kind   string
	Name   string
	Serial string
}

func (p Peer) String() string {
	if p.Kind == "" {
		return "a caller without a certificate"
	}
	return p.Kind + " " + p.Name
}

// PeerOf reads kind, name and serial from a verified certificate.
func PeerOf(c *x509.Certificate) (Peer, error) {
	if len(c.Subject.OrganizationalUnit) != 1 {
		return Peer{}, errors.New("certificate names no kind")
	}
	p := Peer{Kind: c.Subject.OrganizationalUnit[0], Name: c.Subject.CommonName, Serial: SerialOf(c)}
	if (p.Kind != KindAgent && p.Kind != KindMember) || p.Name == "" || strings.ContainsAny(p.Name, " /") {
		return Peer{}, fmt.Errorf("certificate of kind %q for %q is not one of this cluster's", p.Kind, p.Name)
	}
	return p, nil
}

// Verify checks that chain[0] is signed by a CA of pool, valid at now, and
// of kind want ("" = either); it returns whom it names.
func Verify(pool *x509.CertPool, chain []*x509.Certificate, want string, now time.Time) (Peer, error) {
	if len(chain) == 0 {
		return Peer{}, errors.New("no certificate presented")
	}
	if pool == nil {
		return Peer{}, errors.New("no cluster CA known yet")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return Peer{}, fmt.Errorf("certificate not signed by this cluster's CA (or expired): %w", err)
	}
	p, err := PeerOf(chain[0])
	if err != nil {
		return Peer{}, err
	}
	if want != "" && p.Kind != want {
		return Peer{}, fmt.Errorf("a %s certificate (%s) where a %s one is required", p.Kind, p.Name, want)
	}
	return p, nil
}

// RenewDue reports whether a certificate valid from notBefore to notAfter
// should be renewed at now: once two thirds of its life have passed.
func RenewDue(notBefore, notAfter, now time.Time) bool {
	return !now.Before(RenewAt(notBefore, notAfter))
}

// RenewAt is when a certificate valid from notBefore to notAfter is due
// for renewal: two thirds into its life.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
}
