package identity_test

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/identity"
)

var now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func newCA(t *testing.T) identity.CA {
	t.Helper()
	ca, err := identity.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca identity.CA, kind, name string, from, to time.Time) *identity.Current {
	t.Helper()
	key, csr, err := identity.NewKey(name)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := identity.NewSerial()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(identity.Request{CSRPEM: csr, Kind: kind, Name: name, Serial: serial, NotBefore: from, NotAfter: to})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := identity.Parse(key, cert, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if identity.SerialOf(cur.Leaf) != serial {
		t.Fatalf("serial %s, want %s", identity.SerialOf(cur.Leaf), serial)
	}
	return cur
}

func TestCASignsAndVerifies(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	h, _ := ca.Hash()
	if !strings.HasPrefix(h, "sha256:") || len(h) != len("sha256:")+64 {
		t.Fatalf("hash %q", h)
	}
	if strings.Contains(ca.String(), "PRIVATE") || strings.Contains(ca.String(), ca.KeyPEM[30:60]) {
		t.Fatal("CA.String shows the key")
	}
	agent := issue(t, ca, identity.KindAgent, "h1", now.Add(-time.Minute), now.Add(time.Hour))
	member := issue(t, ca, identity.KindMember, "c1", now.Add(-time.Minute), now.Add(time.Hour))
	foreign := issue(t, other, identity.KindMember, "c1", now.Add(-time.Minute), now.Add(time.Hour))
	expired := issue(t, ca, identity.KindAgent, "h1", now.Add(-2*time.Hour), now.Add(-time.Hour))
	pool := agent.Pool
	chain := func(c *identity.Current) []*x509.Certificate { return []*x509.Certificate{c.Leaf} }
	for _, tc := range []struct {
		name string
		cert *identity.Current
		want string
		ok   bool
		peer identity.Peer
	}{
		{"agent as agent", agent, identity.KindAgent, true, identity.Peer{Kind: "agent", Name: "h1"}},
		{"agent as either", agent, "", true, identity.Peer{Kind: "agent", Name: "h1"}},
		{"agent where a member is required", agent, identity.KindMember, false, identity.Peer{}},
		{"member as member", member, identity.KindMember, true, identity.Peer{Kind: "member", Name: "c1"}},
		{"another CA's member", foreign, identity.KindMember, false, identity.Peer{}},
		{"expired", expired, "", false, identity.Peer{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := identity.Verify(pool, chain(tc.cert), tc.want, now)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify = %+v, %v; want ok=%v", p, err, tc.ok)
			}
			if tc.ok && (p.Kind != tc.peer.Kind || p.Name != tc.peer.Name || p.Serial != identity.SerialOf(tc.cert.Leaf)) {
				t.Fatalf("peer %+v, want %+v", p, tc.peer)
			}
		})
	}
	if _, err := identity.Verify(nil, chain(agent), "", now); err == nil {
		t.Fatal("verified without a CA")
	}
	// The CSR's subject is ignored: the name is the coordinator's.
	key, csr, _ := identity.NewKey("someone-else")
	cert, err := ca.Sign(identity.Request{CSRPEM: csr, Kind: identity.KindAgent, Name: "h2", Serial: "1f", NotBefore: now, NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := identity.Parse(key, cert, ca.CertPEM)
	if err != nil || cur.Peer.Name != "h2" {
		t.Fatalf("signed for %+v, %v", cur, err)
	}
	for _, bad := range []identity.Request{
		{CSRPEM: csr, Kind: "admin", Name: "h2", Serial: "1", NotBefore: now, NotAfter: now.Add(time.Hour)},
		{CSRPEM: csr, Kind: identity.KindAgent, Name: "", Serial: "1", NotBefore: now, NotAfter: now.Add(time.Hour)},
		{CSRPEM: "garbage", Kind: identity.KindAgent, Name: "h2", Serial: "1", NotBefore: now, NotAfter: now.Add(time.Hour)},
		{CSRPEM: csr, Kind: identity.KindAgent, Name: "h2", Serial: "zz", NotBefore: now, NotAfter: now.Add(time.Hour)},
	} {
		if _, err := ca.Sign(bad); err == nil {
			t.Errorf("Sign(%+v) accepted", bad)
		}
	}
}

func TestToken(t *testing.T) {
	ca := newCA(t)
	h, _ := ca.Hash()
	tok, err := identity.NewToken(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := identity.ParseToken(" " + tok.String() + "\n")
	if err != nil || got != tok {
		t.Fatalf("ParseToken(String()) = %+v, %v; want %+v", got, err, tok)
	}
	if h1, h2 := identity.HashSecret(tok.Secret), identity.HashSecret(tok.Secret); h1 == tok.Secret || h1 != h2 || strings.Contains(h1, tok.Secret) {
		t.Fatal("HashSecret")
	}
	s := tok.String()
	for _, bad := range []string{"", "cpj1", "cpj2" + s[4:], s[:len(s)-1], strings.Replace(s, ".", "-", 1), s + ".x", strings.ToUpper(s[:4]) + s[4:]} {
		if _, err := identity.ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func TestAuthorize(t *testing.T) {
	agent := identity.Peer{Kind: identity.KindAgent, Name: "h1", Serial: "1"}
	member := identity.Peer{Kind: identity.KindMember, Name: "c2", Serial: "2"}
	none := identity.Peer{}
	for _, tc := range []struct {
		peer         identity.Peer
		method, path string
		want         error
	}{
		{none, "POST", "/v1/join", nil},
		{none, "GET", "/metrics", nil},
		{none, "GET", "/v1/agent/assignments", identity.ErrUnauthenticated},
		{none, "POST", "/v1/agent/heartbeat", identity.ErrUnauthenticated},
		{none, "GET", "/v1/hosts", identity.ErrUnauthenticated},
		{none, "GET", "/v1/env", identity.ErrUnauthenticated},
		{none, "POST", "/v1/cluster/members", identity.ErrUnauthenticated},
		{agent, "GET", "/v1/agent/assignments", nil},
		{agent, "POST", "/v1/agent/register", nil},
		{agent, "POST", "/v1/agent/heartbeat", nil},
		{agent, "POST", "/v1/agent/alive", nil},
		{agent, "POST", "/v1/agent/jobs", nil},
		{agent, "POST", "/v1/agent/renew", nil},
		{agent, "POST", "/v1/join", nil},
		{agent, "GET", "/v1/agent/register", identity.ErrForbidden},
		{agent, "GET", "/v1/env", identity.ErrForbidden},
		{agent, "GET", "/v1/hosts", identity.ErrForbidden},
		{agent, "POST", "/v1/addons", identity.ErrForbidden},
		{agent, "POST", "/v1/tokens", identity.ErrForbidden},
		{agent, "DELETE", "/v1/hosts/h2", identity.ErrForbidden},
		{agent, "POST", "/v1/cluster/members", identity.ErrForbidden},
		{agent, "POST", "/v1/internal/figures", identity.ErrForbidden},
		{agent, "GET", "/v1/backups/x/download", identity.ErrForbidden},
		{member, "GET", "/v1/env", nil},
		{member, "POST", "/v1/cluster/members", nil},
		{member, "POST", "/v1/internal/figures", nil},
		{member, "GET", "/v1/agent/assignments", nil},
		{identity.Peer{Kind: "admin", Name: "x"}, "GET", "/v1/env", identity.ErrForbidden},
	} {
		err := identity.Authorize(tc.peer, tc.method, tc.path)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("Authorize(%s, %s %s) = %v; want %v", tc.peer, tc.method, tc.path, err, tc.want)
		}
	}
	for _, tc := range []struct {
		peer identity.Peer
		host string
		ok   bool
	}{
		{agent, "h1", true}, {agent, "h2", false}, {member, "h2", true}, {none, "h2", true},
	} {
		if err := identity.CheckHost(tc.peer, tc.host); (err == nil) != tc.ok {
			t.Errorf("CheckHost(%s, %s) = %v; want ok=%v", tc.peer, tc.host, err, tc.ok)
		}
	}
}

func TestAuthorizePlain(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		forwarded    bool
		ok           bool
	}{
		{"GET", "/v1/internal/protocol", false, true},
		{"POST", "/v1/internal/figures", false, true},
		{"GET", "/metrics", false, true},
		{"POST", "/v1/agent/register", false, true},
		{"POST", "/v1/agent/heartbeat", false, true},
		{"POST", "/v1/agent/alive", false, true},
		{"POST", "/v1/agent/jobs", false, true},
		{"GET", "/v1/agent/assignments", false, true},
		{"POST", "/v1/agent/renew", false, false},
		{"GET", "/v1/agent/register", false, false},
		{"POST", "/v1/internal/protocol", false, false},
		{"GET", "/v1/hosts", false, false},
		{"POST", "/v1/addons", false, false},
		{"POST", "/v1/tokens", false, false},
		{"POST", "/v1/cluster/secure", false, false},
		{"POST", "/v1/cluster/members", false, false},
		{"POST", "/v1/join", false, false},
		{"GET", "/v1/backups/x/download", false, false},
		{"GET", "/v1/hosts", true, true},
		{"POST", "/v1/cluster/secure", true, true},
		{"POST", "/v1/addons", true, true},
	} {
		err := identity.AuthorizePlain(tc.method, tc.path, tc.forwarded)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, identity.ErrUnauthenticated)) {
			t.Errorf("AuthorizePlain(%s %s, forwarded %v) = %v; want ok=%v", tc.method, tc.path, tc.forwarded, err, tc.ok)
		}
	}
}

func TestRenewDue(t *testing.T) {
	from := now
	to := now.Add(30 * time.Hour)
	for _, tc := range []struct {
		at   time.Time
		want bool
	}{
		{from, false}, {from.Add(19 * time.Hour), false}, {from.Add(20 * time.Hour), true}, {to, true}, {to.Add(time.Hour), true},
	} {
		if got := identity.RenewDue(from, to, tc.at); got != tc.want {
			t.Errorf("RenewDue at +%s = %v, want %v", tc.at.Sub(from), got, tc.want)
		}
	}
}

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identity")
	if _, _, _, err := identity.Load(dir); !errors.Is(err, identity.ErrNoIdentity) {
		t.Fatalf("Load of nothing = %v", err)
	}
	ca := newCA(t)
	if err := identity.Save(dir, "k", "c", ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	k, c, a, err := identity.Load(dir)
	if err != nil || k != "k" || c != "c" || a != ca.CertPEM {
		t.Fatalf("Load = %q %q, %v", k, c, err)
	}
	for _, f := range []string{"", identity.KeyFile, identity.CertFile, identity.CAFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if f == "" {
			want = 0o700
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %s, want %s", filepath.Join(dir, f), st.Mode().Perm(), want)
		}
	}
}
