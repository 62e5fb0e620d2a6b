package coordinator

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestIdentityCommands: the CA, join tokens (checked and consumed by one
// entry), renewals and host removal, with a snapshot round trip.
func TestIdentityCommands(t *testing.T) {
	f := NewFSM(testutil.Logger(t))
	idx := uint64(0)
	apply := func(ct CommandType, cmd any) any {
		idx++
		return f.Apply(entry(t, idx, ct, cmd))
	}
	ca1, _ := identity.NewCA(t0)
	ca2, _ := identity.NewCA(t0)
	if got := apply(CmdCASet, CASetCmd{CA: ca1}).(identity.CA); got.CertPEM != ca1.CertPEM {
		t.Fatal("first CA not recorded")
	}
	if got := apply(CmdCASet, CASetCmd{CA: ca2}).(identity.CA); got.CertPEM != ca1.CertPEM {
		t.Fatal("a second CA replaced the first")
	}
	tok := func(id, kind, name string, ttl time.Duration) {
		t.Helper()
		if err, _ := apply(CmdTokenCreate, TokenCreateCmd{Token: JoinToken{ID: id, Kind: kind, Name: name, SecretHash: identity.HashSecret("s-" + id), Expires: t0.Add(ttl)}, At: t0}).(error); err != nil {
			t.Fatal(err)
		}
	}
	tok("t1", api.TokenAgent, "", time.Hour)
	tok("t2", api.TokenAgent, "h9", time.Hour)
	tok("t3", api.TokenAgent, "", time.Minute)
	tok("t4", api.TokenMember, "", time.Hour)
	if err, _ := apply(CmdTokenCreate, TokenCreateCmd{Token: JoinToken{ID: "t1"}, At: t0}).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("token id reused: %v", err)
	}
	use := func(id, secret, kind, name, serial string, at time.Time) error {
		err, _ := apply(CmdTokenUse, TokenUseCmd{ID: id, SecretHash: identity.HashSecret(secret), Kind: kind, Name: name, Serial: serial, NotAfter: at.Add(time.Hour), At: at}).(error)
		return err
	}
	for _, tc := range []struct {
		name                         string
		id, secret, kind, host, want string
		at                           time.Time
	}{
		{"unknown", "nope", "s-nope", api.TokenAgent, "h1", "unknown", t0},
		{"wrong secret", "t1", "s-t2", api.TokenAgent, "h1", "unknown", t0},
		{"other host's", "t2", "s-t2", api.TokenAgent, "h1", "is for h9, not h1", t0},
		{"expired", "t3", "s-t3", api.TokenAgent, "h1", "expired at", t0.Add(time.Minute)},
		{"member token for an agent", "t4", "s-t4", api.TokenAgent, "h1", "is for a member, not a agent", t0},
	} {
		if err := use(tc.id, tc.secret, tc.kind, tc.host, "aa", tc.at); !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want forbidden, %q", tc.name, err, tc.want)
		}
	}
	f.Read(func(st *State, _ uint64) {
		if len(st.HostCerts) != 0 || st.JoinTokens["t1"].Used || st.JoinTokens["t2"].Used {
			t.Fatal("a refused use changed the state")
		}
	})
	if err := use("t1", "s-t1", api.TokenAgent, "h1", "aa", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := use("t1", "s-t1", api.TokenAgent, "h2", "bb", t0.Add(2*time.Second)); !errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reuse: %v", err)
	}
	if err := use("t4", "s-t4", api.TokenMember, "c2", "cc", t0); err != nil {
		t.Fatal(err)
	}
	f.Read(func(st *State, _ uint64) {
		if st.HostCerts["h1"].Serial != "aa" || len(st.HostCerts) != 1 || !st.JoinTokens["t1"].Used || st.JoinTokens["t1"].UsedBy != "h1" {
			t.Fatalf("after use: %+v %+v", st.HostCerts, st.JoinTokens["t1"])
		}
	})
	if err, _ := apply(CmdCertRenew, CertRenewCmd{HostID: "h1", OldSerial: "zz", Serial: "dd"}).(error); !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("renew with a revoked serial: %v", err)
	}
	if err, _ := apply(CmdCertRenew, CertRenewCmd{HostID: "h1", OldSerial: "aa", Serial: "dd"}).(error); err != nil {
		t.Fatal(err)
	}
	apply(CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h1", Address: "127.0.0.1", MemoryMB: 1024, State: api.HostReady}})
	apply(CmdAddonCreate, testAddon("id-app", "id-app-1", ""))
	apply(CmdAddonPlaced, AddonPlacedCmd{AddonID: "id-app-1", Members: []api.Member{{ID: "id-app-1-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 30000}},
		Entrypoint: "127.0.0.1:30001", Operation: testAddon("id-app", "id-app-1", "").Operation})
	if err, _ := apply(CmdHostRemove, HostRemoveCmd{HostID: "h1"}).(error); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("remove a host with members: %v", err)
	}
	if err, _ := apply(CmdHostRemove, HostRemoveCmd{HostID: "h7"}).(error); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("remove an unknown host: %v", err)
	}
	assertRoundTrip(t, f)
	apply(CmdAddonDelete, AddonDeleteCmd{AddonID: "id-app-1", At: t0})
	if err, _ := apply(CmdHostRemove, HostRemoveCmd{HostID: "h1"}).(error); err != nil {
		t.Fatal(err)
	}
	f.Read(func(st *State, _ uint64) {
		if _, ok := st.HostCerts["h1"]; ok {
			t.Fatal("removed host's certificate still recorded")
		}
		if _, ok := st.Hosts["h1"]; ok {
			t.Fatal("removed host still recorded")
		}
	})
	// Tokens expired over a day ago are forgotten at the next creation.
	if err, _ := apply(CmdTokenCreate, TokenCreateCmd{Token: JoinToken{ID: "t5", Kind: api.TokenAgent, Expires: t0.Add(50 * time.Hour)}, At: t0.Add(48 * time.Hour)}).(error); err != nil {
		t.Fatal(err)
	}
	f.Read(func(st *State, _ uint64) {
		if len(st.JoinTokens) != 1 {
			t.Fatalf("tokens kept: %d", len(st.JoinTokens))
		}
	})
	assertRoundTrip(t, f)
}

// TestAgentJoinsOverTLS: a real coordinator; an agent's join with a token
// (the CA pinned by the token's hash) and what its certificate reaches.
func TestAgentJoinsOverTLS(t *testing.T) {
	_, cfg := startTestCoordinator(t, "127.0.0.58")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := api.NewClient(cfg.Socket)
	join := func(host, token string) (*api.Client, error) {
		tok, err := identity.ParseToken(token)
		if err != nil {
			return nil, err
		}
		key, csr, err := identity.NewKey(host)
		if err != nil {
			return nil, err
		}
		var ca *x509.Certificate
		first := api.NewTLSPeerClient(cfg.HTTPAddr, identity.FirstContactConfig(tok.CAHash, &ca))
		defer first.Close()
		got, err := first.JoinIdentity(ctx, api.JoinIdentityRequest{TokenID: tok.ID, Secret: tok.Secret, Kind: api.TokenAgent, Name: host, CSR: csr})
		if err != nil {
			return nil, err
		}
		cur, err := identity.Parse(key, got.Cert, got.CA)
		if err != nil {
			return nil, err
		}
		h := &identity.Holder{}
		h.Set(cur)
		cl := api.NewTLSPeerClient(cfg.HTTPAddr, h.ClientConfig())
		cl.RetryFor = 0
		t.Cleanup(cl.Close)
		return cl, nil
	}
	newToken := func(name string) string {
		res, err := admin.Token(ctx, api.TokenRequest{Kind: api.TokenAgent, Name: name, TTL: api.Duration(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return res.Token
	}
	t1 := newToken("")
	h1, err := join("h1", t1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := join("h2", t1); api.HTTPStatus(err) != http.StatusForbidden {
		t.Fatalf("token used twice: %v", err)
	}
	// A token naming another CA: the coordinator is not trusted.
	tok, _ := identity.ParseToken(newToken(""))
	tok.CAHash = "sha256:" + strings.Repeat("0", 64)
	if _, err := join("h3", tok.String()); err == nil || !strings.Contains(err.Error(), "not the one the join token names") {
		t.Fatalf("a coordinator with another CA was trusted: %v", err)
	}
	if _, err := h1.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.59", MemoryMB: 1024}); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h2"}); api.HTTPStatus(err) != http.StatusForbidden {
		t.Fatalf("heartbeat for another host: %v", err)
	}
	if _, err := h1.Addons(ctx, "", false); api.HTTPStatus(err) != http.StatusForbidden {
		t.Fatalf("admin route with an agent certificate: %v", err)
	}
	if _, err := admin.HostRemove(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h1"}); api.HTTPStatus(err) != http.StatusForbidden {
		t.Fatalf("heartbeat after hosts-remove: %v", err)
	}
}
