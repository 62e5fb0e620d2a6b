package render

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/redisctl"
)

// TestRealMemberTLS: the member TLS lines are accepted by the installed
// redis-server, redis-sentinel and haproxy: a TLS-only primary and a
// replica in sync over TLS (tls-replication), a sentinel on TLS that
// reaches the primary over TLS, plaintext refused, and haproxy -c of
// servers with verified TLS.
func TestRealMemberTLS(t *testing.T) {
	redisBin, sentinelBin, haproxyBin := needBinary(t, "redis-server"), needBinary(t, "redis-sentinel"), needBinary(t, "haproxy")
	const addon = "my-app-3030"
	ca, err := identity.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueServer(identity.ServerRequest{Name: addon, DNSNames: []string{addon},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := &MemberTLS{CertFile: writeFile(t, dir, "tls.crt", cert), KeyFile: writeFile(t, dir, "tls.key", key),
		CAFile: writeFile(t, dir, "ca.crt", ca.CertPEM)}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(ca.CertPEM))
	client := func(addr, user, password string, withTLS bool) *redis.Client {
		o := &redis.Options{Addr: addr, Username: user, Password: password, MaxRetries: -1, DialTimeout: time.Second,
			ReadTimeout: 2 * time.Second, PoolSize: 1, DisableIdentity: true, Protocol: 2}
		if withTLS {
			o.TLSConfig = &tls.Config{RootCAs: pool, ServerName: addon, MinVersion: tls.VersionTLS12}
		}
		c := redis.NewClient(o)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ctx := context.Background()
	start := func(in RedisInput) (string, *proc) {
		in.DataDir, in.Port, in.TLS = t.TempDir(), freePort(t, in.BindAddr), files
		in.Password, in.FleetPassword, in.PlanMemoryMB, in.Settings = api.NewSecret(testPassword), api.NewSecret(testFleet), 64, api.DefaultSettings()
		conf, err := Redis(in)
		if err != nil {
			t.Fatal(err)
		}
		p := startProc(t, redisBin, writeFile(t, in.DataDir, "redis.conf", conf))
		addr := Endpoint{in.BindAddr, in.Port}.String()
		waitFor(t, 10*time.Second, "redis "+addr+" answers over TLS", func() error {
			return client(addr, redisctl.FleetUser, testFleet, true).Ping(ctx).Err()
		}, p)
		return addr, p
	}
	primary, pp := start(RedisInput{BindAddr: "127.0.0.11"})
	if err := client(primary, redisctl.FleetUser, testFleet, false).Ping(ctx).Err(); err == nil {
		t.Error("a plaintext client got an answer from a TLS-only redis")
	}
	h, port := strings.Split(primary, ":")[0], 0
	fmt.Sscanf(strings.Split(primary, ":")[1], "%d", &port)
	replica, rp := start(RedisInput{BindAddr: "127.0.0.12", ReplicaOf: Endpoint{h, port}})
	waitFor(t, 10*time.Second, "replica in sync over TLS", func() error {
		info, err := client(replica, redisctl.FleetUser, testFleet, true).Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return fmt.Errorf("replica link not up")
		}
		return nil
	}, pp, rp)

	sin := SentinelInput{BindAddr: "127.0.0.13", Port: freePort(t, "127.0.0.13"), DataDir: t.TempDir(), MasterName: addon,
		Primary: Endpoint{h, port}, Password: api.NewSecret(testFleet), TLS: files}
	conf, err := Sentinel(sin)
	if err != nil {
		t.Fatal(err)
	}
	sp := startProc(t, sentinelBin, writeFile(t, sin.DataDir, "sentinel.conf", conf))
	saddr := Endpoint{sin.BindAddr, sin.Port}.String()
	waitFor(t, 15*time.Second, "sentinel over TLS sees the primary and its replica", func() error {
		res, err := client(saddr, "", testFleet, true).Do(ctx, "SENTINEL", "MASTER", addon).Slice()
		if err != nil {
			return err
		}
		m := map[string]string{}
		for i := 0; i+1 < len(res); i += 2 {
			m[fmt.Sprint(res[i])] = fmt.Sprint(res[i+1])
		}
		if m["flags"] != "master" || m["num-slaves"] != "1" {
			return fmt.Errorf("sentinel: flags %q, %s replicas", m["flags"], m["num-slaves"])
		}
		return nil
	}, pp, rp, sp)
	if err := client(saddr, "", testFleet, false).Ping(ctx).Err(); err == nil {
		t.Error("a plaintext client got an answer from a TLS-only sentinel")
	}

	hin := haproxyInput()
	for i := range hin.Servers {
		hin.Servers[i].TLS = &HAProxyServerTLS{CAFile: files.CAFile, ServerName: addon}
	}
	hconf, err := HAProxy(hin)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(haproxyBin, "-c", "-f", writeFile(t, dir, "haproxy.cfg", hconf)).CombinedOutput()
	if err != nil || strings.Contains(string(out), "[ALERT]") {
		t.Fatalf("haproxy -c with member TLS servers: %v\n%s", err, out)
	}
}
