package redisctl

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// startTLSRedis starts a redis-server listening on TLS only (member TLS:
// port 0, tls-port, tls-replication yes, tls-auth-clients no) with the
// test password, a replica of replicaOf when set.
func startTLSRedis(t *testing.T, ip, replicaOf, cert, key, ca string) string {
	t.Helper()
	bin := needBinary(t, "redis-server")
	port := testutil.FreePort(t, ip)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	dir := t.TempDir()
	for name, text := range map[string]string{"tls.crt": cert, "tls.key": key, "ca.crt": ca} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lines := []string{
		"bind " + ip, "port 0", "tls-port " + strconv.Itoa(port), "protected-mode no", "bind-source-addr " + ip,
		"tls-cert-file " + filepath.Join(dir, "tls.crt"), "tls-key-file " + filepath.Join(dir, "tls.key"),
		"tls-ca-cert-file " + filepath.Join(dir, "ca.crt"), "tls-auth-clients no", "tls-replication yes",
		"daemonize no", `logfile ""`, "dir " + dir, "replica-announce-ip " + ip, "repl-diskless-sync yes", "repl-diskless-sync-delay 0",
	}
	lines = append(lines, aclLines()...)
	if replicaOf != "" {
		h, p, _ := net.SplitHostPort(replicaOf)
		lines = append(lines, "replicaof "+h+" "+p)
	}
	p := startProc(t, "redis "+addr, bin, writeConf(t, dir, "redis.conf", lines...))
	testutil.WaitFor(t, 10*time.Second, func() error {
		p.alive(t)
		c, err := net.DialTimeout("tcp", addr, time.Second) // TLS: the caller registers the address after
		if err == nil {
			c.Close()
		}
		return err
	})
	return addr
}

// TestMemberTLSReal: against real TLS-only redis members, the fleet's
// clients (Ping, ClientReplication through MemberOptions, Knock) speak TLS
// to an address in the table, verifying the addon id the certificate
// carries; a replica replicates over TLS; a plaintext client gets nothing;
// a certificate for another name is refused.
func TestMemberTLSReal(t *testing.T) {
	ca, err := identity.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueServer(identity.ServerRequest{Name: "tls-app-1000", DNSNames: []string{"tls-app-1000"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	tt, err := NewTLS(ca.CertPEM, "tls-app-1000")
	if err != nil {
		t.Fatal(err)
	}
	ip1, ip2 := "127.0.0.61", "127.0.0.62"
	primary := startTLSRedis(t, ip1, "", cert, key, ca.CertPEM)
	owner := "test " + t.Name()
	table := map[string]*TLS{primary: tt}
	SetTLS(owner, table)
	t.Cleanup(func() { SetTLS(owner, nil) })
	replica := startTLSRedis(t, ip2, primary, cert, key, ca.CertPEM)
	table[replica] = tt
	SetTLS(owner, table)

	ctx := context.Background()
	if err := Ping(ctx, primary, testPassword); err != nil {
		t.Fatalf("Ping over TLS: %v", err)
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		c := redis.NewClient(MemberOptions(replica, testPassword))
		defer c.Close()
		r, err := ClientReplication(ctx, c)
		if err != nil {
			return err
		}
		if r.Role != RoleReplica || r.LinkStatus != "up" {
			return errf("replica: role %s link %q", r.Role, r.LinkStatus)
		}
		return nil
	})
	if a := Knock(ctx, primary, testPassword, true, time.Second, time.Second); a.Reply != ReplyPong {
		t.Errorf("Knock over TLS: %+v", a)
	}
	// Plaintext: refused (redis closes a connection that does not start a
	// TLS handshake).
	plain := MemberOptions(primary, testPassword)
	plain.TLSConfig = nil
	pc := redis.NewClient(plain)
	if err := pc.Ping(ctx).Err(); err == nil {
		t.Error("a plaintext client got an answer from a TLS-only member")
	}
	pc.Close()
	// Another name than the certificate's: refused by go-redis's check.
	other, err := NewTLS(ca.CertPEM, "another-addon-2000")
	if err != nil {
		t.Fatal(err)
	}
	table[primary] = other
	SetTLS(owner, table)
	if err := Ping(ctx, primary, testPassword); err == nil {
		t.Error("a certificate for another name was accepted")
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

func errf(format string, args ...any) error { return testErr(fmt.Sprintf(format, args...)) }
