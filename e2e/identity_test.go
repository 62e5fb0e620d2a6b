package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestIdentity: daemon identities (issue 13, part 3) with real processes.
// Agents join with single-use tokens and are refused without one, with an
// expired, used or other host's token; an agent's certificate reaches only
// its own host's agent routes; a removed host's certificate is refused;
// certificates renew without a restart; the peer and Raft ports refuse a
// caller without a certificate of the cluster.
func TestIdentity(t *testing.T) {
	c := StartCoordinator(t, "c1", IP1, CoordinatorOpts{Bootstrap: true, ExtraArgs: []string{"--agent-cert-ttl", "12s"}})
	WaitForLeader(t, startTimeout, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// --- h1 joins with its token; its identity is on disk, 0600.
	tok1 := c.Token("hosts-token", "")
	h1 := StartAgent(t, c, "h1", "127.0.0.31", AgentOpts{Token: tok1})
	dir := filepath.Join(h1.DataDir, "identity")
	for _, f := range []string{identity.KeyFile, identity.CertFile, identity.CAFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("h1 identity: %v", err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %s, want 0600", f, st.Mode().Perm())
		}
	}

	refused := func(a *Agent, want string) {
		t.Helper()
		err := a.WaitExit(startTimeout)
		var ee interface{ ExitCode() int }
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("agent %s: exit %v, want a failure", a.ID, err)
		}
		if log := tail(a.LogPath, 40); !strings.Contains(log, want) {
			t.Fatalf("agent %s: log does not say %q:\n%s", a.ID, want, log)
		}
	}
	// --- no token, a used token, a token of another host, an expired one.
	refused(StartAgent(t, c, "h2", "127.0.0.32", AgentOpts{NoToken: true, NoWait: true}), "has no certificate yet")
	refused(StartAgent(t, c, "h3", "127.0.0.33", AgentOpts{Token: tok1, NoWait: true}), "was already used")
	refused(StartAgent(t, c, "h4", "127.0.0.34", AgentOpts{Token: c.Token("hosts-token", "h9"), NoWait: true}), "is for h9, not h4")
	res := c.CLI("hosts-token", "h5", "--ttl", "1s", "--json")
	if res.Code != 0 {
		t.Fatalf("hosts-token --ttl 1s: %s", res)
	}
	var short api.TokenResponse
	res.JSON(t, &short)
	testutil.WaitFor(t, 5*time.Second, func() error {
		if time.Now().Before(short.Expires.Add(100 * time.Millisecond)) {
			return errors.New("token not expired yet")
		}
		return nil
	})
	refused(StartAgent(t, c, "h5", "127.0.0.35", AgentOpts{Token: short.Token, NoWait: true}), "expired at")

	// --- h1's certificate: its own host only, no admin route.
	cur := loadIdentity(t, dir)
	holder := &identity.Holder{}
	holder.Set(cur)
	cl := api.NewTLSPeerClient(c.HTTPAddr, holder.ClientConfig())
	cl.RetryFor = 0
	defer cl.Close()
	if _, err := cl.Assignments(ctx, "h1", 0, 0); err != nil {
		t.Fatalf("h1 reads its own assignments: %v", err)
	}
	forbidden := func(what string, err error, want string) {
		t.Helper()
		if api.HTTPStatus(err) != http.StatusForbidden || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s with h1's certificate: %v, want 403 saying %q", what, err, want)
		}
	}
	_, err := cl.Assignments(ctx, "h7", 0, 0)
	forbidden("assignments of h7", err, "host h1's, not host h7's")
	_, err = cl.Register(ctx, api.Host{ID: "h7", Address: "127.0.0.37", MemoryMB: 1024})
	forbidden("register h7", err, "host h1's, not host h7's")
	_, err = cl.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h7"})
	forbidden("heartbeat of h7", err, "host h1's, not host h7's")
	_, err = cl.Hosts(ctx)
	forbidden("hosts (admin)", err, "reaches only the agent routes")
	_, err = cl.Env(ctx, "some-app")
	forbidden("env (admin)", err, "reaches only the agent routes")
	_, err = cl.Token(ctx, api.TokenRequest{Kind: api.TokenAgent, TTL: api.Duration(time.Hour)})
	forbidden("hosts-token (admin)", err, "reaches only the agent routes")
	_, err = cl.AddonCreate(ctx, api.AddonCreateRequest{App: "evil", Type: "redis", Plan: "redis-starter-256"})
	forbidden("addons-add (admin)", err, "reaches only the agent routes")

	// --- the peer port without mTLS: TLS without a certificate, plain HTTP.
	noCert := &identity.Holder{}
	noCert.Set(&identity.Current{Pool: cur.Pool, CA: cur.CA})
	anon := api.NewTLSPeerClient(c.HTTPAddr, noCert.ClientConfig())
	anon.RetryFor = 0
	defer anon.Close()
	if _, err := anon.Hosts(ctx); api.HTTPStatus(err) != http.StatusUnauthorized {
		t.Fatalf("hosts without a client certificate: %v, want 401", err)
	}
	if _, err := anon.Assignments(ctx, "h1", 0, 0); api.HTTPStatus(err) != http.StatusUnauthorized {
		t.Fatalf("assignments without a client certificate: %v, want 401", err)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + c.HTTPAddr + "/v1/hosts")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(body), "h1") {
			t.Fatalf("plain HTTP to the peer port: %s %s", resp.Status, body)
		}
	}

	// --- the Raft port: plain TCP, TLS without a certificate, and a member
	// certificate of another CA are all refused.
	raftRefuses(t, c.RaftAddr, nil)
	raftRefuses(t, c.RaftAddr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	raftRefuses(t, c.RaftAddr, foreignMember(t))

	// --- renewal without a restart: h1's serial changes, h1 stays ready
	// and its agent keeps running.
	pid := h1.Pid()
	first := identity.SerialOf(cur.Leaf)
	testutil.WaitFor(t, 30*time.Second, func() error {
		if s := identity.SerialOf(loadIdentity(t, dir).Leaf); s == first {
			return errors.New("h1's certificate not renewed yet")
		}
		return nil
	})
	WaitForHostState(t, c, "h1", api.HostReady, 5*time.Second)
	if h1.Pid() != pid || !h1.Running() {
		t.Fatalf("h1's agent restarted or stopped during renewal")
	}
	// The old certificate is revoked by the renewal.
	if _, err := cl.Assignments(ctx, "h1", 0, 0); api.HTTPStatus(err) != http.StatusForbidden {
		t.Fatalf("the replaced certificate still works: %v", err)
	}

	// --- hosts-remove revokes: the current certificate can no longer
	// heartbeat.
	h1.Kill()
	holder.Set(loadIdentity(t, dir))
	cl2 := api.NewTLSPeerClient(c.HTTPAddr, holder.ClientConfig())
	cl2.RetryFor = 0
	defer cl2.Close()
	if _, err := cl2.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h1"}); err != nil {
		t.Fatalf("h1 heartbeat before removal: %v", err)
	}
	if res := c.CLI("hosts-remove", "h1"); res.Code != 0 {
		t.Fatalf("hosts-remove h1: %s", res)
	}
	_, err = cl2.Heartbeat(ctx, api.HeartbeatRequest{HostID: "h1"})
	forbidden("heartbeat after hosts-remove", err, "not part of this fleet")
	_, err = cl2.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.31", MemoryMB: 1024})
	forbidden("register after hosts-remove", err, "not part of this fleet")
}

func loadIdentity(t *testing.T, dir string) *identity.Current {
	t.Helper()
	k, c, ca, err := identity.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := identity.Parse(k, c, ca)
	if err != nil {
		t.Fatal(err)
	}
	return cur
}

// foreignMember is a client configuration with a member certificate of
// another CA.
func foreignMember(t *testing.T) *tls.Config {
	t.Helper()
	ca, err := identity.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, csr, err := identity.NewKey("c2")
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := identity.NewSerial()
	cert, err := ca.Sign(identity.Request{CSRPEM: csr, Kind: identity.KindMember, Name: "c2", Serial: serial,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := identity.Parse(key, cert, ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cur.TLS}}
}

// raftRefuses dials a Raft port (plain TCP when cfg is nil), sends what a
// Raft peer sends first (an AppendEntries type byte and some payload) and
// expects the connection closed without a Raft answer.
func raftRefuses(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial raft %s: %v", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var c net.Conn = conn
	if cfg != nil {
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return // refused in the handshake
		}
		c = tc
	}
	if _, err := c.Write(append([]byte{0}, []byte(`{"Term":99,"Leader":"evil"}`)...)); err != nil {
		return
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err == nil || n > 0 {
		t.Fatalf("raft port %s answered %q (tls=%v) to a caller without a valid member certificate", addr, buf[:n], cfg != nil)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("raft port %s kept a caller without a valid member certificate connected (tls=%v)", addr, cfg != nil)
	}
}
