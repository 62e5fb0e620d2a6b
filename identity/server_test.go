package identity_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/identity"
)

// TestIssueServer: an addon's server certificate verifies for each of its
// names and addresses against the CA, not for another address, pairs with
// its key, and is no peer of the cluster (PeerOf refuses its kind).
func TestIssueServer(t *testing.T) {
	ca := newCA(t)
	certPEM, keyPEM, err := ca.IssueServer(identity.ServerRequest{Name: "my-app-3030", DNSNames: []string{"my-app-3030"},
		IPs: []string{"127.0.0.20", "127.0.0.113"}, NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM)); err != nil {
		t.Fatalf("key pair: %v", err)
	}
	leaf, err := identity.ParseCertPEM([]byte(certPEM))
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := ca.Cert()
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"127.0.0.20", true}, {"127.0.0.113", true}, {"my-app-3030", true}, {"127.0.0.21", false}, {"other", false}} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.name, CurrentTime: now.Add(time.Hour)})
		if (err == nil) != tc.ok {
			t.Errorf("verify for %s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if _, err := identity.PeerOf(leaf); err == nil {
		t.Error("an addon certificate is taken as a peer of the cluster")
	}
	for _, bad := range []identity.ServerRequest{
		{Name: "", NotBefore: now, NotAfter: now.Add(time.Hour)},
		{Name: "a", IPs: []string{"not-an-ip"}, NotBefore: now, NotAfter: now.Add(time.Hour)},
		{Name: "a", NotBefore: now, NotAfter: now},
	} {
		if _, _, err := ca.IssueServer(bad); err == nil {
			t.Errorf("%+v: issued", bad)
		}
	}
}
