package agent_test

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/identity"
)

// The tests' cluster CA: the fake coordinators show a member certificate
// of it, each test host's agent holds an agent certificate of it.
var (
	pkiOnce   sync.Once
	pkiCA     identity.CA
	pkiServer *identity.Holder
	pkiErr    error
)

func testPKI(t *testing.T) (identity.CA, *identity.Holder) {
	t.Helper()
	pkiOnce.Do(func() {
		if pkiCA, pkiErr = identity.NewCA(time.Now()); pkiErr != nil {
			return
		}
		var cur *identity.Current
		if cur, pkiErr = signed(pkiCA, identity.KindMember, "fake-coordinator"); pkiErr != nil {
			return
		}
		pkiServer = &identity.Holder{}
		pkiServer.Set(cur)
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiCA, pkiServer
}

func signed(ca identity.CA, kind, name string) (*identity.Current, error) {
	key, csr, err := identity.NewKey(name)
	if err != nil {
		return nil, err
	}
	serial, err := identity.NewSerial()
	if err != nil {
		return nil, err
	}
	cert, err := ca.Sign(identity.Request{CSRPEM: csr, Kind: kind, Name: name, Serial: serial,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	return identity.Parse(key, cert, ca.CertPEM)
}

// newTLSServer serves h over TLS with the fake coordinator's certificate,
// asking for a client certificate.
func newTLSServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	_, server := testPKI(t)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = server.ServerConfig(false)
	srv.StartTLS()
	return srv
}

// hasClientCert reports whether the request came with a verified client
// certificate (the fake's stand-in for the coordinator's checks).
func hasClientCert(r *http.Request) bool { return r.TLS != nil && len(r.TLS.PeerCertificates) > 0 }

// giveIdentity writes host's agent identity into dataDir, as a join would.
func giveIdentity(t *testing.T, dataDir, host string) {
	t.Helper()
	ca, _ := testPKI(t)
	key, csr, err := identity.NewKey(host)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := identity.NewSerial()
	cert, err := ca.Sign(identity.Request{CSRPEM: csr, Kind: identity.KindAgent, Name: host, Serial: serial,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.Save(filepath.Join(dataDir, "identity"), key, cert, ca.CertPEM); err != nil {
		t.Fatal(err)
	}
}
