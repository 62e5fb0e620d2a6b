package agent

// TestAccessLive: a real HAProxy rendered as the agent renders it, in
// front of a real redis: TLS beside plaintext on the same port, a renewed
// certificate swapped in (new handshakes see the new serial, HAProxy keeps
// running, the spec hash is unchanged), force TLS on and off, internet
// access opening and closing the public address — all live under a TLS
// client that sees no failed command.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

const (
	alHost   = "127.0.0.176" // the haproxy's host
	alPublic = "127.0.0.177" // its public address
	alRedis  = "127.0.0.175"
)

func TestAccessLive(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	redisAddr := rlRedis(t, alRedis, render.Endpoint{})
	now := time.Now()
	ca, err := identity.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := ca.Cert()
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	issue := func() (string, api.Secret) {
		cert, key, err := ca.IssueServer(identity.ServerRequest{Name: "acc-live", IPs: []string{alHost, alPublic},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return cert, api.NewSecret(key)
	}
	serialOf := func(certPEM string) string {
		c, err := identity.ParseCertPEM([]byte(certPEM))
		if err != nil {
			t.Fatal(err)
		}
		return c.SerialNumber.String()
	}

	a := &Agent{cfg: Config{Address: alHost, PublicAddress: alPublic, DataDir: t.TempDir()}}
	port := testutil.FreePort(t, alHost)
	as := api.Assignment{MemberID: "hp-acc", AddonID: "acc-live", Role: api.RoleHAProxy, Address: alHost, Port: port,
		Password: api.NewSecret(rlApp), FleetPassword: api.NewSecret(rlPass), MaxConn: 100, Servers: []string{redisAddr}}
	as.TLSCert, as.TLSKey = issue()
	p, err := a.planMember(as)
	if err != nil {
		t.Fatal(err)
	}
	rlAccess(t, p)
	hap := rlStart(t, "haproxy", "haproxy", "-db", "-f", rlWrite(t, p.dir, haproxyConfName, p.conf))
	// apply is what the agent's update pass does for a new assignment,
	// checking that HAProxy is not restarted.
	apply := func(as api.Assignment) {
		t.Helper()
		q, err := a.planMember(as)
		if err != nil {
			t.Fatal(err)
		}
		if q.spec.SpecHash != p.spec.SpecHash {
			t.Fatalf("the spec hash changed: HAProxy would restart")
		}
		testutil.WaitFor(t, 10*time.Second, func() error { return a.syncAccess(ctx, q) })
		select {
		case <-hap.done:
			t.Fatalf("haproxy exited:\n%s", hap.output())
		default:
		}
	}
	apply(as) // internet access off: the public frontend closes

	entry := net.JoinHostPort(alHost, strconv.Itoa(port))
	public := net.JoinHostPort(alPublic, strconv.Itoa(port))
	opts := func(addr string, withTLS bool) *redis.Options {
		o := &redis.Options{Addr: addr, Username: "default", Password: rlApp, MaxRetries: -1, DialTimeout: time.Second}
		if withTLS {
			o.TLSConfig = &tls.Config{RootCAs: pool, ServerName: alHost, MinVersion: tls.VersionTLS12}
			if addr == public {
				o.TLSConfig.ServerName = alPublic
			}
		}
		return o
	}
	ping := func(o *redis.Options) error {
		c := redis.NewClient(o)
		defer c.Close()
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		return c.Ping(cctx).Err()
	}
	served := func() string {
		c, err := tls.Dial("tcp", entry, &tls.Config{RootCAs: pool, ServerName: alHost})
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	testutil.WaitFor(t, 10*time.Second, func() error { return ping(opts(entry, false)) })
	if err := ping(opts(entry, true)); err != nil {
		t.Fatalf("TLS beside plaintext: %v", err)
	}
	if got := served(); got != serialOf(as.TLSCert) {
		t.Fatalf("served serial %s, want the assigned one", got)
	}
	if c, err := net.DialTimeout("tcp", public, time.Second); err == nil {
		c.Close()
		t.Fatalf("the public address accepts connections with internet access off")
	}

	// A TLS writer runs through every switch below.
	var acked, failed atomic.Int64
	stop, done := make(chan struct{}), make(chan struct{})
	w := redis.NewClient(opts(entry, true))
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			err := w.Set(cctx, fmt.Sprintf("acc:%d", i), i, 0).Err()
			ccancel()
			if err != nil {
				failed.Add(1)
				time.Sleep(5 * time.Millisecond)
			} else {
				acked.Add(1)
			}
		}
	}()
	waitAcks := func() {
		t.Helper()
		from := acked.Load()
		testutil.WaitFor(t, 10*time.Second, func() error {
			if acked.Load() < from+100 {
				return fmt.Errorf("%d writes acknowledged", acked.Load()-from)
			}
			return nil
		})
	}
	waitAcks()

	// Renewal: a new certificate is swapped in; new handshakes see it.
	as.TLSCert, as.TLSKey = issue()
	apply(as)
	if got := served(); got != serialOf(as.TLSCert) {
		t.Errorf("after renewal, served serial %s, want the new one", got)
	}
	waitAcks()

	// Force TLS: plaintext refused, TLS served; then off again.
	as.Settings.ForceTLS = true
	apply(as)
	if err := ping(opts(entry, false)); err == nil {
		t.Errorf("plaintext accepted with force TLS on")
	}
	if err := ping(opts(entry, true)); err != nil {
		t.Errorf("TLS with force TLS on: %v", err)
	}
	waitAcks()

	// Internet access: the public address opens (TLS for that address),
	// and closes again.
	as.Settings.InternetAccess = true
	apply(as)
	if err := ping(opts(public, true)); err != nil {
		t.Errorf("public address with internet access on: %v", err)
	}
	if err := ping(opts(public, false)); err == nil {
		t.Errorf("plaintext accepted on the public address with force TLS on")
	}
	as.Settings.ForceTLS, as.Settings.InternetAccess = false, false
	apply(as)
	if c, err := net.DialTimeout("tcp", public, time.Second); err == nil {
		c.Close()
		t.Errorf("the public address accepts connections after internet access off")
	}
	if err := ping(opts(entry, false)); err != nil {
		t.Errorf("plaintext after force TLS off: %v", err)
	}
	waitAcks()
	close(stop)
	<-done
	_ = w.Close()
	if failed.Load() != 0 {
		t.Errorf("the TLS writer saw %d failed commands (%d acknowledged)", failed.Load(), acked.Load())
	}
	t.Logf("TLS writer: %d acknowledged, %d failed, through a renewal, force TLS on/off and internet access on/off", acked.Load(), failed.Load())
}
