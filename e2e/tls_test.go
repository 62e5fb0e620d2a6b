package e2e

// TLS for apps, force TLS and internet access (issue 13, parts 1 and 2),
// on a business addon under containerd: TLS beside plaintext on the same
// entrypoint, force TLS switched on and off live under a TLS client (no
// failed command), redis-cli --tls --cacert, go-redis, node-redis /
// ioredis and redis-py through the rediss:// URL with the CA from
// addons-ca, plaintext refused, the primary-kill failover through TLS, and internet access
// opening and closing the entrypoint on the HAProxy hosts' public
// addresses while the private entrypoint stays where it is.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

var (
	tlsCoordIP   = "127.0.0.250"
	tlsHostIPs   = []string{"127.0.0.251", "127.0.0.252", "127.0.0.253", "127.0.0.254"}
	tlsPublicIPs = []string{"127.0.0.245", "127.0.0.246", "127.0.0.247", "127.0.0.248"}
	tlsVIPPool   = "127.0.7.0/24"
)

// tlsOptions are go-redis options for url (rediss://) verifying with ca.
func tlsOptions(t testing.TB, url string, ca *x509.CertPool) *redis.Options {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("parse the TLS URL: %v", err)
	}
	if opt.TLSConfig == nil {
		t.Fatalf("a rediss:// URL parsed without TLS")
	}
	opt.TLSConfig.RootCAs = ca
	return opt
}

// ping PINGs through opt on a fresh connection.
func ping(opt *redis.Options) error {
	o := *opt
	o.MaxRetries = -1
	c := redis.NewClient(&o)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// tlsURL is url with the rediss scheme.
func tlsURL(url string) string { return "rediss" + strings.TrimPrefix(url, "redis") }

func (f *bizFleet) settings(t *testing.T, args ...string) {
	t.Helper()
	// As an operator does: settings change once the addon is running (not
	// while the healing after a fault, or the last settings change, runs).
	WaitForAddonStatus(t, f.c, f.app, api.AddonRunning, 60*time.Second)
	res := f.c.CLI(append([]string{"addons-settings", "--app", f.app}, args...)...)
	if res.Code != 0 {
		t.Fatalf("addons-settings %v: %s", args, res)
	}
}

func TestTLSBusiness(t *testing.T) {
	f := startBusiness(t, "tls-biz", bizOpts{CoordIP: tlsCoordIP, HostIPs: tlsHostIPs, VIPPool: tlsVIPPool, PublicIPs: tlsPublicIPs})
	plainURL := f.url
	a := f.mustAddon()
	password := a.Password.Reveal()

	// The CA, from addons-ca once the addon has its certificate.
	pool, _, caFile := addonCA(t, f) // membertls_test.go
	tlsOpt := tlsOptions(t, tlsURL(plainURL), pool)

	// TLS beside plaintext before anything is forced (the addon's
	// certificate replaces the placeholder live: poll).
	testutil.WaitFor(t, 30*time.Second, func() error { return ping(tlsOpt) })
	if err := ping(f.opt); err != nil {
		t.Fatalf("plaintext beside TLS: %v", err)
	}

	// Force TLS on, live, under a TLS writer: no failed command; the URL
	// becomes rediss://, plaintext is refused.
	w := startWriter(tlsOpt, "tls-on:")
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
	f.settings(t, "--force-tls", "on")
	testutil.WaitFor(t, 30*time.Second, func() error {
		if err := ping(f.opt); err == nil {
			return fmt.Errorf("plaintext still accepted")
		}
		return nil
	})
	url := RedisURL(t, f.c, f.app)
	if !strings.HasPrefix(url, "rediss://") || url != tlsURL(plainURL) {
		t.Fatalf("env with force TLS: scheme %q, want rediss:// on the same entrypoint", strings.SplitN(url, ":", 2)[0])
	}
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
	acks, failed, errs := w.finish()
	if failed != 0 {
		t.Errorf("force TLS on under a TLS client: %d failed commands %v (%d acknowledged)", failed, errs, len(acks))
	}
	t.Logf("force TLS on under a TLS writer: %d acknowledged, %d failed", len(acks), failed)

	// The URL as is: go-redis (above), redis-cli --tls --cacert, node-redis
	// and ioredis (NODE_EXTRA_CA_CERTS); plaintext redis-cli refused.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", "--tls", "--cacert", caFile, "-u", url, "--no-auth-warning", "PING").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "PONG" {
		t.Errorf("redis-cli --tls --cacert -u URL PING: %v: %q", err, scrub(string(out), password))
	}
	out, _ = exec.CommandContext(ctx, "redis-cli", "-u", plainURL, "--no-auth-warning", "PING").CombinedOutput()
	if strings.TrimSpace(string(out)) == "PONG" {
		t.Errorf("plaintext redis-cli answered PONG with force TLS on")
	}
	checkNodeClientsEnv(t, url, password, map[string]string{"NODE_EXTRA_CA_CERTS": caFile})
	checkRedisPy(t, url, password, caFile) // redispy_test.go: ssl_ca_certs, through the URL

	// The primary-kill failover through TLS: no acknowledged write lost.
	f.opt = tlsOpt
	if o := killPrimaryProcess(t, f, "tls-kill:"); o.lost != 0 {
		t.Errorf("failover with TLS: %s", o)
	}

	// Force TLS off, live, under the TLS writer: no failed command;
	// plaintext accepted again, the URL back to redis://.
	w = startWriter(tlsOpt, "tls-off:")
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
	f.settings(t, "--force-tls", "off")
	testutil.WaitFor(t, 30*time.Second, func() error { return ping(tlsOptionsPlain(t, plainURL)) })
	if got := RedisURL(t, f.c, f.app); got != plainURL {
		t.Errorf("env after force TLS off: not the plaintext URL")
	}
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
	acks, failed, errs = w.finish()
	if failed != 0 {
		t.Errorf("force TLS off under a TLS client: %d failed commands %v (%d acknowledged)", failed, errs, len(acks))
	}

	// Internet access: the entrypoint's port on each HAProxy host's public
	// address is closed, opens (TLS verified for that address), closes
	// again; the private entrypoint never moves.
	var public []string
	_, port, _ := net.SplitHostPort(a.Entrypoint)
	for _, m := range membersOf(f.mustAddon(), api.RoleHAProxy) {
		for i, ip := range tlsHostIPs {
			if f.hostIP(m.HostID) == ip {
				public = append(public, net.JoinHostPort(tlsPublicIPs[i], port))
			}
		}
	}
	if len(public) != 2 {
		t.Fatalf("public addresses of the HAProxy hosts: %v", public)
	}
	publicOpt := func(addr string) *redis.Options {
		o := *tlsOpt
		o.Addr = addr
		o.TLSConfig = &tls.Config{RootCAs: pool, ServerName: strings.Split(addr, ":")[0], MinVersion: tls.VersionTLS12}
		return &o
	}
	closed := func(addr string) error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("%s accepts connections", addr)
		}
		return nil
	}
	for _, p := range public {
		if err := closed(p); err != nil {
			t.Errorf("internet access off: %v", err)
		}
	}
	f.settings(t, "--internet-access", "on")
	if res := f.c.CLI("addons-info", "--app", f.app); !strings.Contains(res.Stdout, "Warning: internet access is on without force TLS") {
		t.Errorf("addons-info does not warn about internet access without force TLS: %s", res)
	}
	for _, p := range public {
		testutil.WaitFor(t, 30*time.Second, func() error { return ping(publicOpt(p)) })
	}
	if got := f.mustAddon().Entrypoint; got != a.Entrypoint {
		t.Errorf("internet access moved the entrypoint: %s, was %s", got, a.Entrypoint)
	}
	if err := ping(tlsOpt); err != nil {
		t.Errorf("private entrypoint with internet access on: %v", err)
	}
	f.settings(t, "--internet-access", "off")
	for _, p := range public {
		testutil.WaitFor(t, 30*time.Second, func() error { return closed(p) })
	}
	if err := ping(tlsOpt); err != nil {
		t.Errorf("private entrypoint after internet access off: %v", err)
	}
}

// tlsOptionsPlain are go-redis options of a plaintext URL.
func tlsOptionsPlain(t testing.TB, url string) *redis.Options {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}
