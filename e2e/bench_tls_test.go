//go:build bench

package e2e

// make bench: what TLS costs at the entrypoint (issue 13, part 1). One
// business addon; redis-benchmark direct to the primary (plaintext, the
// baseline), through the entrypoint in plaintext, and through the
// entrypoint with --tls (HAProxy terminates TLS), interleaved in the same
// run; and a second addon with member TLS (redis on TLS only, HAProxy
// re-encrypting): direct with --tls, through the entrypoint in plaintext
// and with --tls.

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

const (
	tbStart = "<!-- bench:tls:start -->"
	tbEnd   = "<!-- bench:tls:end -->"
)

func TestBenchTLS(t *testing.T) {
	f := startBusiness(t, "bench-tls", bizOpts{CoordIP: tlsCoordIP, HostIPs: tlsHostIPs, VIPPool: tlsVIPPool})
	_, _, caFile := addonCA(t, f) // membertls_test.go
	ep := f.mustAddon().Entrypoint
	// The assigned certificate replaces the placeholder live: wait for it.
	testutil.WaitFor(t, 30*time.Second, func() error {
		out, err := exec.Command("redis-cli", "--tls", "--cacert", caFile, "-h", strings.Split(ep, ":")[0], "-p", strings.Split(ep, ":")[1],
			"--user", "default", "--pass", f.opt.Password, "--no-auth-warning", "PING").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "PONG" {
			return fmt.Errorf("TLS PING: %v %q", err, strings.ReplaceAll(string(out), f.opt.Password, "<password>"))
		}
		return nil
	})

	// A second addon on the same fleet with member TLS: its members speak
	// TLS only, HAProxy re-encrypts to them.
	if res := f.c.CLI("addons-add", "--app", "bench-mtls", "redis", "redis-business-256", "--member-tls"); res.Code != 0 {
		t.Fatalf("addons-add --member-tls: %s", res)
	}
	ma := WaitForAddonStatus(t, f.c, "bench-mtls", api.AddonRunning, 90*time.Second)
	mopt, err := redis.ParseURL(RedisURL(t, f.c, "bench-mtls"))
	if err != nil {
		t.Fatal(err)
	}
	var mdirect string
	testutil.WaitFor(t, 60*time.Second, func() error {
		a, err := f.c.Client().Addon(context.Background(), ma.ID)
		if err != nil {
			return err
		}
		for _, m := range membersOf(a, api.RoleRedis) {
			if m.RedisRole == "primary" {
				mdirect = f.memberAddr(m)
			}
		}
		if mdirect == "" {
			return fmt.Errorf("no primary yet")
		}
		out, err := exec.Command("redis-cli", "--tls", "--cacert", caFile, "-u", tlsURL(RedisURL(t, f.c, "bench-mtls")), "--no-auth-warning", "PING").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "PONG" {
			return fmt.Errorf("member TLS addon: TLS PING: %v %q", err, strings.ReplaceAll(string(out), mopt.Password, "<password>"))
		}
		return nil
	})
	mep := ma.Entrypoint

	n1 := envInt(t, "CACHEPLANE_BENCH_N", 200000)
	direct := f.memberAddr(f.primary())
	type run struct {
		target   string
		pipeline int
		set, get float64
	}
	var runs []run
	targets := []string{"direct", "entrypoint", "entrypoint TLS", "member TLS: direct TLS", "member TLS: entrypoint", "member TLS: entrypoint TLS"}
	tlsArgs := []string{"--tls", "--cacert", caFile}
	for _, p := range []int{1, 16} {
		n := n1
		if p == 16 {
			n = n1 * 8
		}
		for round := 0; round < 2; round++ {
			for _, target := range targets {
				var set, get float64
				switch target {
				case "direct":
					set, get = redisBenchmark(t, direct, f.opt.Password, p, n)
				case "entrypoint":
					set, get = redisBenchmark(t, ep, f.opt.Password, p, n)
				case "entrypoint TLS":
					set, get = redisBenchmark(t, ep, f.opt.Password, p, n, tlsArgs...)
				case "member TLS: direct TLS":
					set, get = redisBenchmark(t, mdirect, mopt.Password, p, n, tlsArgs...)
				case "member TLS: entrypoint":
					set, get = redisBenchmark(t, mep, mopt.Password, p, n)
				default:
					set, get = redisBenchmark(t, mep, mopt.Password, p, n, tlsArgs...)
				}
				t.Logf("%s P%d: SET %.0f/s GET %.0f/s", target, p, set, get)
				runs = append(runs, run{target, p, set, get})
			}
		}
	}
	mean := func(target string, pl int) (set, get float64) {
		k := 0
		for _, r := range runs {
			if r.target == target && r.pipeline == pl {
				set += r.set
				get += r.get
				k++
			}
		}
		return set / float64(k), get / float64(k)
	}

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("%s\n## TLS at the entrypoint: throughput against plaintext\n\n", tbStart)
	p("Measured %s on %s.  \n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	p("Commit %s.  \n", gitCommit())
	p("Command: `make bench` (this section is `TestBenchTLS` in `e2e/bench_tls_test.go`).\n\n")
	p("Set-up: 1 coordinator, 4 agents on 127.0.0.251–254 under containerd, two `redis-business-256` addons, the second with member TLS (VIPs from 127.0.7.0/24); " +
		"everything, clients included, on this one machine. The entrypoint tells a TLS ClientHello from plaintext on its one port " +
		"and HAProxy terminates TLS (ECDSA P-256 certificate from the cluster CA, TLS 1.3 negotiated by redis-benchmark) on an internal unix socket, " +
		"then the same backend (docs/security.md).\n\n")
	p("### Throughput (redis-benchmark -t set,get -c 50, %d requests unpipelined, %d with -P 16; two interleaved rounds, mean)\n\n", n1, n1*8)
	p("| target | P1 SET/s | P1 GET/s | P1 ratio to direct | P16 SET/s | P16 GET/s | P16 ratio to direct |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	d1s, d1g := mean("direct", 1)
	d16s, d16g := mean("direct", 16)
	for _, target := range targets {
		s1, g1 := mean(target, 1)
		s16, g16 := mean(target, 16)
		p("| %s | %.0f | %.0f | %.2f× | %.0f | %.0f | %.2f× |\n", target, s1, g1, (s1+g1)/(d1s+d1g), s16, g16, (s16+g16)/(d16s+d16g))
	}
	e1s, e1g := mean("entrypoint", 1)
	e16s, e16g := mean("entrypoint", 16)
	t1s, t1g := mean("entrypoint TLS", 1)
	t16s, t16g := mean("entrypoint TLS", 16)
	m1s, m1g := mean("member TLS: entrypoint TLS", 1)
	m16s, m16g := mean("member TLS: entrypoint TLS", 16)
	md1s, md1g := mean("member TLS: direct TLS", 1)
	md16s, md16g := mean("member TLS: direct TLS", 16)
	memberNote := fmt.Sprintf("Member TLS (a second addon, `addons-add --member-tls`, on the same fleet): redis listens on TLS only and HAProxy "+
		"re-encrypts (terminates the app's TLS, or takes plaintext, then TLS to the primary). TLS end to end through the entrypoint "+
		"runs at **%.2f×** of plaintext through the entrypoint unpipelined, **%.2f×** with -P 16; TLS direct to the primary (what a "+
		"pass-through could at best approach, less its extra hop) at %.2f× and %.2f× of plaintext direct.\n\n",
		(m1s+m1g)/(e1s+e1g), (m16s+m16g)/(e16s+e16g), (md1s+md1g)/(d1s+d1g), (md16s+md16g)/(d16s+d16g))
	p("\nTLS / plaintext through the entrypoint: **%.2f×** unpipelined, **%.2f×** with -P 16. Connections are long-lived here "+
		"(50 clients, one handshake each): the figure is the cost of encryption and of the internal hop, not of handshakes; "+
		"redis-benchmark's own encryption runs on the same two cores.\n\n%s%s\n",
		(t1s+t1g)/(e1s+e1g), (t16s+t16g)/(e16s+e16g), memberNote, tbEnd)
	path := writeBenchSection(t, tbStart, tbEnd, b.String())
	t.Logf("wrote %s:\n%s", path, b.String())
}
