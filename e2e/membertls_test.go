package e2e

// Member TLS (issue 13, part 1, last part): a business addon added with
// --member-tls under containerd. Its redis members and sentinels listen
// on TLS only: redis-cli --tls --cacert, go-redis and redis-py work
// through the URL, a plaintext connection to a member or sentinel port is refused,
// the replica is in sync over TLS, kill -9 of the primary fails over with
// no acknowledged write lost; the kernel entrypoint is refused without
// force TLS and, with it, forwards TLS clients to redis's TLS port. And the addon certificate's renewal (a short
// --addon-cert-ttl) under a TLS writer: no failed command, the new
// certificate served by the entrypoint, the redis members (reloaded live)
// and the sentinels (restarted one at a time), no redis or HAProxy
// restarted.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/redisctl"
)

var (
	mtlsCoordIP  = "127.0.44.1"
	mtlsHostIPs  = []string{"127.0.44.2", "127.0.44.3", "127.0.44.4", "127.0.44.5"}
	mtlsVIPPool  = "127.0.45.0/24"
	renewCoordIP = "127.0.46.1"
	renewHostIPs = []string{"127.0.46.2", "127.0.46.3", "127.0.46.4", "127.0.46.5"}
	renewVIPPool = "127.0.47.0/24"
)

// memberTLSConfig is the TLS a test client of the member at addr speaks:
// the one redisctl's table says (useMemberTLS states it), nil (plaintext)
// for any other address.
func memberTLSConfig(addr string) *tls.Config {
	if t := redisctl.TLSFor(addr); t != nil {
		return t.Config()
	}
	return nil
}

// addonCA is the CA from addons-ca (once the addon has its certificate),
// as a pool, its PEM and a file.
func addonCA(t testing.TB, f *bizFleet) (*x509.CertPool, string, string) {
	t.Helper()
	var caPEM string
	testutil.WaitFor(t, 30*time.Second, func() error {
		res := f.c.CLI("addons-ca", "--app", f.app)
		if res.Code != 0 {
			return fmt.Errorf("addons-ca: %s", res)
		}
		caPEM = res.Stdout
		return nil
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(caPEM)) {
		t.Fatalf("addons-ca printed no certificate: %q", caPEM)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, []byte(caPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	return pool, caPEM, file
}

// useMemberTLS makes this process's clients of the fleet's members (every
// address on hosts) speak TLS with the addon's CA and its id as the name,
// as the agents' and coordinators' do, until the test ends.
func useMemberTLS(t testing.TB, f *bizFleet, hosts []string) {
	t.Helper()
	_, caPEM, _ := addonCA(t, f)
	tt, err := redisctl.NewTLS(caPEM, f.id)
	if err != nil {
		t.Fatal(err)
	}
	owner := "e2e " + t.Name()
	redisctl.SetTLSSource(owner, func(addr string) *redisctl.TLS {
		if h, _, err := net.SplitHostPort(addr); err == nil && slices.Contains(hosts, h) {
			return tt
		}
		return nil
	})
	t.Cleanup(func() { redisctl.SetTLSSource(owner, nil) })
}

// plainRefused checks that a plaintext client at addr gets no answer.
func plainRefused(addr, user, password string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: password, DialTimeout: time.Second,
		ReadTimeout: time.Second, MaxRetries: -1, PoolSize: 1, DisableIdentity: true, Protocol: 2})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		return fmt.Errorf("plaintext PING to %s answered", addr)
	}
	return nil
}

// servedSerial is the serial of the certificate the TLS server at addr
// presents, verified with pool for name.
func servedSerial(addr, name string, pool *x509.CertPool) (string, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 2 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

// runID is the redis at addr's run_id (a new one each process start).
func (f *bizFleet) runID(addr string) (string, error) {
	c := f.direct(addr)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "run_id:"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("no run_id in INFO server")
}

func TestMemberTLSBusiness(t *testing.T) {
	hosts := []string{"h1", "h2", "h3", "h4"}
	dropKernelTables(t, hosts...)
	t.Cleanup(func() { dropKernelTables(t, hosts...) }) // after the agents stop (cleanups run last in, first out)
	f := startBusiness(t, "mtls-biz", bizOpts{CoordIP: mtlsCoordIP, HostIPs: mtlsHostIPs, VIPPool: mtlsVIPPool, MemberTLS: true})
	a := f.mustAddon()
	if !a.Settings.MemberTLS {
		t.Fatalf("addon %s has no member TLS", a.ID)
	}
	password := f.opt.Password // the URL's (the addon as read here is redacted)
	pool, _, caFile := addonCA(t, f)
	// startBusiness waited healthy: INFO replication over TLS says the
	// replica's link is up and in sync, every sentinel answered over TLS.

	// The members listen on TLS only, and replicate over TLS.
	for _, m := range membersOf(a, api.RoleRedis) {
		addr := f.memberAddr(m)
		if err := plainRefused(addr, redisctl.FleetUser, f.fleet()); err != nil {
			t.Errorf("redis %s: %v", m.ID, err)
		}
		c := f.direct(addr)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		got, err := c.ConfigGet(ctx, "*").Result()
		cancel()
		c.Close()
		if err != nil {
			t.Fatalf("redis %s over TLS: CONFIG GET: %v", m.ID, err)
		}
		if got["port"] != "0" || got["tls-port"] == "0" || got["tls-replication"] != "yes" {
			t.Errorf("redis %s: port %s tls-port %s tls-replication %s", m.ID, got["port"], got["tls-port"], got["tls-replication"])
		}
	}
	for _, m := range membersOf(a, api.RoleSentinel) {
		if err := plainRefused(f.memberAddr(m), "", f.fleet()); err != nil {
			t.Errorf("sentinel %s: %v", m.ID, err)
		}
	}
	rep := membersOf(a, api.RoleRedis)[0]
	if rep.ID == f.primary().ID {
		rep = membersOf(a, api.RoleRedis)[1]
	}
	if ri, err := f.replInfo(f.memberAddr(rep)); err != nil || ri["master_link_status"] != "up" {
		t.Errorf("replica %s over TLS: link %q: %v", rep.ID, ri["master_link_status"], err)
	}

	// The app through the URL: TLS (rediss://, the CA) with redis-cli and
	// go-redis; plaintext too (force TLS is off): HAProxy re-encrypts.
	tlsOpt := tlsOptions(t, tlsURL(f.url), pool)
	if err := ping(tlsOpt); err != nil {
		t.Errorf("go-redis through the rediss:// URL: %v", err)
	}
	if err := ping(f.opt); err != nil {
		t.Errorf("plaintext through the entrypoint (re-encrypted to the members): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", "--tls", "--cacert", caFile, "-u", tlsURL(f.url), "--no-auth-warning", "PING").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "PONG" {
		t.Errorf("redis-cli --tls --cacert -u URL PING: %v: %q", err, scrub(string(out), password))
	}
	checkRedisPy(t, tlsURL(f.url), password, caFile)

	// kill -9 of the primary through TLS: failed over, no acknowledged
	// write lost, and healthy again (replica in sync over TLS).
	f.opt = tlsOpt
	if o := killPrimaryProcess(t, f, "mtls-kill:"); o.lost != 0 {
		t.Errorf("failover with member TLS: %s", o)
	}

	// The kernel entrypoint forwards to redis's TLS-only port: refused
	// without force TLS; with it, the URL says rediss:// and a TLS client
	// reaches redis itself (redis sees the client's own address), verified
	// for the VIP the addon's certificate names.
	if res := f.c.CLI("addons-settings", "--app", f.app, "--entrypoint", "kernel"); res.Code == 0 || !strings.Contains(res.String(), "needs force TLS") {
		t.Errorf("kernel entrypoint without force TLS on a member-TLS addon: %s", res)
	}
	f.settings(t, "--entrypoint", "kernel", "--force-tls", "on")
	kurl := RedisURL(t, f.c, f.app)
	if !strings.HasPrefix(kurl, "rediss://") {
		t.Fatalf("env in kernel mode with member TLS: scheme %q, want rediss://", strings.SplitN(kurl, ":", 2)[0])
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		seen, local, err := tlsClientAddr(a.Entrypoint, password, pool)
		if err == nil && seen != local {
			err = fmt.Errorf("redis sees %s, the client is %s: not forwarded by the kernel yet", seen, local)
		}
		return err
	})
	if err := plainRefused(a.Entrypoint, "default", password); err != nil {
		t.Errorf("kernel entrypoint with member TLS: %v", err)
	}
	if err := ping(tlsOptions(t, kurl, pool)); err != nil {
		t.Errorf("go-redis through the kernel entrypoint over TLS: %v", err)
	}
}

// tlsClientAddr opens a TLS connection to ep (verified for ep's address),
// logs in as the app and asks CLIENT INFO: the client address redis sees,
// and the connection's own local address.
func tlsClientAddr(ep, password string, pool *x509.CertPool) (seen, local string, err error) {
	host, _, _ := net.SplitHostPort(ep)
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", ep)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	return connClientAddr(c, password) // kernel_test.go
}

// TestMemberTLSRenewal: with --addon-cert-ttl 60s (renewed 20 s after
// each issuance), the addon's certificate is renewed while a client
// writes through the URL over TLS and the replica streams over TLS: no
// failed command, the entrypoint, both redis members and the sentinels
// serve a new certificate, no redis (run_id) or HAProxy (pid) restarted.
func TestMemberTLSRenewal(t *testing.T) {
	f := startBusiness(t, "mtls-renew", bizOpts{CoordIP: renewCoordIP, HostIPs: renewHostIPs, VIPPool: renewVIPPool, MemberTLS: true,
		CoordArgs: []string{"--addon-cert-ttl", "60s"}})
	a := f.mustAddon()
	pool, _, _ := addonCA(t, f)
	first, err := identity.ParseCertPEM([]byte(a.TLSCert))
	if err != nil {
		t.Fatalf("the addon's certificate: %v", err)
	}
	epHost, _, _ := net.SplitHostPort(a.Entrypoint)
	redisAddrs := map[string]string{}
	runIDs := map[string]string{}
	for _, m := range membersOf(a, api.RoleRedis) {
		redisAddrs[m.ID] = f.memberAddr(m)
		if runIDs[m.ID], err = f.runID(f.memberAddr(m)); err != nil {
			t.Fatalf("redis %s: %v", m.ID, err)
		}
	}
	hapPids := map[string]int{}
	for _, m := range membersOf(a, api.RoleHAProxy) {
		hapPids[m.ID] = f.pidOf(m.HostID, m.ID)
	}

	tlsOpt := tlsOptions(t, tlsURL(f.url), pool)
	w := startWriter(tlsOpt, "renew:")
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)

	// The renewal: a new certificate in the FSM, then served.
	var renewed string
	testutil.WaitFor(t, 90*time.Second, func() error {
		cur, err := f.addon()
		if err != nil {
			return err
		}
		c, err := identity.ParseCertPEM([]byte(cur.TLSCert))
		if err != nil {
			return err
		}
		if c.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return fmt.Errorf("certificate %s not renewed yet", first.SerialNumber.Text(16))
		}
		renewed = c.SerialNumber.Text(16)
		return nil
	})
	// Served: the entrypoint (HAProxy, set ssl cert) and each redis
	// (CONFIG SET tls-cert-file). A later renewal may have come meanwhile:
	// any serial but the first that the FSM has held will do.
	serves := func(what, addr, name string) {
		testutil.WaitFor(t, 30*time.Second, func() error {
			s, err := servedSerial(addr, name, pool)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			if s == first.SerialNumber.Text(16) {
				return fmt.Errorf("%s still serves the first certificate %s", what, s)
			}
			return nil
		})
	}
	serves("the entrypoint", a.Entrypoint, epHost)
	for id, addr := range redisAddrs {
		serves("redis "+id, addr, f.id)
	}
	// The sentinels cannot reload a certificate: their agents restart
	// them for it, one at a time (agent/membertls.go).
	for _, m := range membersOf(a, api.RoleSentinel) {
		serves("sentinel "+m.ID, f.memberAddr(m), f.id)
	}
	w.waitAcksAfter(t, time.Now(), 200, 20*time.Second)
	acks, failed, errs := w.finish()
	if failed != 0 {
		t.Errorf("certificate renewal under a TLS writer: %d failed commands %v (%d acknowledged)", failed, errs, len(acks))
	}
	t.Logf("renewal %s -> %s under a TLS writer: %d acknowledged, %d failed", first.SerialNumber.Text(16), renewed, len(acks), failed)

	// Nothing restarted: the same redis processes, the same HAProxys.
	for id, addr := range redisAddrs {
		if got, err := f.runID(addr); err != nil || got != runIDs[id] {
			t.Errorf("redis %s: run_id %s, was %s (%v): restarted", id, got, runIDs[id], err)
		}
	}
	for _, m := range membersOf(a, api.RoleHAProxy) {
		if got := f.pidOf(m.HostID, m.ID); got != hapPids[m.ID] {
			t.Errorf("haproxy %s: pid %d, was %d: restarted", m.ID, got, hapPids[m.ID])
		}
	}
	// Replication over TLS went on: healthy (replica in sync), and every
	// acknowledged write is on the replica, read over TLS.
	f.waitHealthy(60 * time.Second)
	for _, m := range membersOf(f.mustAddon(), api.RoleRedis) {
		if m.RedisRole == "primary" {
			continue
		}
		c := f.direct(f.memberAddr(m))
		if lost := missing(t, c, "renew:", acks); len(lost) != 0 {
			t.Errorf("%d acknowledged writes missing on replica %s after the renewal", len(lost), m.ID)
		}
		c.Close()
	}
}
