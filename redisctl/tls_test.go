package redisctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestMemberOptionsTLS: MemberOptions and SentinelOptions speak TLS to an
// address in the table (the CA and the addon id as the name), plaintext to
// any other; an owner's entries go with it.
func TestMemberOptionsTLS(t *testing.T) {
	tt, err := NewTLS(testCAPEM(t), "my-app-3030")
	if err != nil {
		t.Fatal(err)
	}
	SetTLS("test-a", map[string]*TLS{"127.0.0.11:6379": tt, "127.0.0.13:26379": tt})
	t.Cleanup(func() { SetTLS("test-a", nil) })
	o := MemberOptions("127.0.0.11:6379", "pw")
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "my-app-3030" || o.TLSConfig.RootCAs == nil || o.TLSConfig.MinVersion == 0 {
		t.Fatalf("member options TLS: %+v", o.TLSConfig)
	}
	if o := SentinelOptions("127.0.0.13:26379", "pw"); o.TLSConfig == nil || o.Username != SentinelUser {
		t.Fatalf("sentinel options: TLS %v user %q", o.TLSConfig, o.Username)
	}
	if o := MemberOptions("127.0.0.12:6379", "pw"); o.TLSConfig != nil {
		t.Fatal("an address outside the table got TLS")
	}
	// Another owner's entries add to these; dropping one owner keeps the other's.
	SetTLSSource("test-b", func(addr string) *TLS {
		if addr == "127.0.0.12:6379" {
			return tt
		}
		return nil
	})
	if MemberOptions("127.0.0.12:6379", "pw").TLSConfig == nil || MemberOptions("127.0.0.11:6379", "pw").TLSConfig == nil {
		t.Fatal("two owners: an entry is missing")
	}
	SetTLSSource("test-b", nil)
	if MemberOptions("127.0.0.12:6379", "pw").TLSConfig != nil || MemberOptions("127.0.0.11:6379", "pw").TLSConfig == nil {
		t.Fatal("dropping owner test-b changed the wrong entries")
	}
	SetTLS("test-a", nil)
	if MemberOptions("127.0.0.11:6379", "pw").TLSConfig != nil {
		t.Fatal("entry kept after its owner dropped it")
	}
}

func TestNewTLSRefusesGarbage(t *testing.T) {
	if _, err := NewTLS("not a PEM", "x"); err == nil {
		t.Fatal("no error for a CA that is not PEM")
	}
	if _, err := NewTLS(testCAPEM(t), ""); err == nil {
		t.Fatal("no error without a server name")
	}
}

func TestDialTLSNil(t *testing.T) {
	called := false
	dial := DialTLS(func(context.Context, string, string) (net.Conn, error) { called = true; return nil, context.Canceled }, nil)
	_, _ = dial(context.Background(), "tcp", "x")
	if !called {
		t.Fatal("DialTLS(nil) did not return the dialer itself")
	}
}
