//go:build bench

package e2e

// make bench: what TLS costs at the entrypoint (issue 13, part 1). One
// business addon; redis-benchmark direct to the primary (plaintext, the
// baseline), through the entrypoint in plaintext, and through the
// entrypoint with --tls (HAProxy terminates TLS), interleaved in the same
// run.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/internal/testutil"
)

const (
	tbStart = "<!-- bench:tls:start -->"
	tbEnd   = "<!-- bench:tls:end -->"
)

func TestBenchTLS(t *testing.T) {
	f := startBusiness(t, "bench-tls", bizOpts{CoordIP: tlsCoordIP, HostIPs: tlsHostIPs, VIPPool: tlsVIPPool})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	var caPEM string
	testutil.WaitFor(t, 30*time.Second, func() error {
		res := f.c.CLI("addons-ca", "--app", f.app)
		if res.Code != 0 {
			return fmt.Errorf("addons-ca: %s", res)
		}
		caPEM = res.Stdout
		return nil
	})
	if err := os.WriteFile(caFile, []byte(caPEM), 0o600); err != nil {
		t.Fatal(err)
	}
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

	n1 := envInt(t, "CACHEPLANE_BENCH_N", 200000)
	direct := f.memberAddr(f.primary())
	type run struct {
		target   string
		pipeline int
		set, get float64
	}
	var runs []run
	targets := []string{"direct", "entrypoint", "entrypoint TLS"}
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
				default:
					set, get = redisBenchmark(t, ep, f.opt.Password, p, n, "--tls", "--cacert", caFile)
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
	p("Set-up: 1 coordinator, 4 agents on 127.0.0.251–254 under containerd, one `redis-business-256` addon (VIP from 127.0.7.0/24); " +
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
	p("\nTLS / plaintext through the entrypoint: **%.2f×** unpipelined, **%.2f×** with -P 16. Connections are long-lived here "+
		"(50 clients, one handshake each): the figure is the cost of encryption and of the internal hop, not of handshakes; "+
		"redis-benchmark's own encryption runs on the same two cores.\n\n%s\n",
		(t1s+t1g)/(e1s+e1g), (t16s+t16g)/(e16s+e16g), tbEnd)
	path := writeBenchSection(t, tbStart, tbEnd, b.String())
	t.Logf("wrote %s:\n%s", path, b.String())
}
