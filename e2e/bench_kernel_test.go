//go:build bench

package e2e

// make bench: the kernel entrypoint (issue 17). One business addon:
// redis-benchmark direct to the primary and through its URL in haproxy
// mode and in kernel mode (switched live between runs), interleaved in the
// same run; then process
// kills of the primary timed through the URL in kernel mode, and again
// after a live switch to haproxy mode.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

const (
	kbStart = "<!-- bench:kernel:start -->"
	kbEnd   = "<!-- bench:kernel:end -->"
)

// goalKernelRatio is issue 17's: kernel mode at ≥ 0.9× direct.
const goalKernelRatio = 0.9

func TestBenchKernel(t *testing.T) {
	kills := envInt(t, "CACHEPLANE_BENCH_KERNEL_KILLS", 10)
	hosts := []string{"h1", "h2", "h3", "h4"}
	dropKernelTables(t, hosts...)
	t.Cleanup(func() { dropKernelTables(t, hosts...) })
	f := startBusiness(t, "bench-kern", bizOpts{
		CoordIP: "127.0.0.95", HostIPs: []string{"127.0.0.96", "127.0.0.97", "127.0.0.98", "127.0.0.99"}, VIPPool: "127.0.4.0/24",
		CoordArgs: []string{"--entrypoint-mode", "kernel"},
	})
	f.waitKernelForward(10 * time.Second)

	n1 := envInt(t, "CACHEPLANE_BENCH_N", 200000)
	direct := f.memberAddr(f.primary())
	ep := f.mustAddon().Entrypoint
	mode := api.EntrypointKernel
	// setMode switches the addon's entrypoint live and waits until a new
	// client is (kernel) or is not (haproxy) forwarded by the kernel.
	setMode := func(m string) {
		if m == mode {
			return
		}
		settingsChange(t, f.c, f.app, "--entrypoint", m)
		mode = m
		if m == api.EntrypointKernel {
			f.waitKernelForward(10 * time.Second)
			return
		}
		testutil.WaitFor(t, 10*time.Second, func() error {
			seen, local, err := f.clientAddr()
			if err == nil && seen == local {
				err = fmt.Errorf("still forwarded by the kernel")
			}
			return err
		})
	}
	type run struct {
		target   string
		pipeline int
		set, get float64
	}
	var runs []run
	for _, p := range []int{1, 16} {
		n := n1
		if p == 16 {
			n = n1 * 8
		}
		for round := 0; round < 2; round++ {
			for _, target := range []string{"direct", "haproxy", "kernel"} {
				addr := ep
				switch target {
				case "direct":
					addr = direct
				case "haproxy":
					setMode(api.EntrypointHAProxy)
				case "kernel":
					setMode(api.EntrypointKernel)
				}
				set, get := redisBenchmark(t, addr, f.opt.Password, p, n)
				t.Logf("%s P%d: SET %.0f/s GET %.0f/s", target, p, set, get)
				runs = append(runs, run{target, p, set, get})
			}
		}
	}

	setMode(api.EntrypointKernel)
	var kernelKills, hapKills []foKill
	for i := 0; i < kills; i++ {
		kernelKills = append(kernelKills, benchKill(t, f, fmt.Sprintf("k%d:", i), faultProcess))
		f.waitKernelForward(10 * time.Second)
	}
	settingsChange(t, f.c, f.app, "--entrypoint", "haproxy")
	for i := 0; i < kills; i++ {
		hapKills = append(hapKills, benchKill(t, f, fmt.Sprintf("h%d:", i), faultProcess))
	}

	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("%s\n## Kernel entrypoint: throughput and failover against HAProxy\n\n", kbStart)
	p("Measured %s on %s.  \n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	p("Commit %s.  \n", gitCommit())
	p("Command: `make bench` (this section is `TestBenchKernel` in `e2e/bench_kernel_test.go`; `CACHEPLANE_BENCH_KERNEL_KILLS` kills per mode, default 10).\n\n")
	p("Set-up: the business fleet of the section above (1 coordinator, 4 agents on 127.0.0.96–99, one `redis-business-256` addon, VIP from 127.0.4.0/24) " +
		"made with `--entrypoint-mode kernel`; everything, clients included, on this one machine (the DNAT is in the OUTPUT hook).\n\n")
	p("### Throughput (redis-benchmark -t set,get -c 50, %d requests unpipelined, %d with -P 16; two interleaved rounds, mean)\n\n", n1, n1*8)
	p("| target | P1 SET/s | P1 GET/s | P1 ratio to direct | P16 SET/s | P16 GET/s | P16 ratio to direct |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
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
	d1s, d1g := mean("direct", 1)
	d16s, d16g := mean("direct", 16)
	for _, target := range []string{"direct", "haproxy", "kernel"} {
		s1, g1 := mean(target, 1)
		s16, g16 := mean(target, 16)
		p("| %s | %.0f | %.0f | %.2f× | %.0f | %.0f | %.2f× |\n", target, s1, g1, (s1+g1)/(d1s+d1g), s16, g16, (s16+g16)/(d16s+d16g))
	}
	k1s, k1g := mean("kernel", 1)
	k16s, k16g := mean("kernel", 16)
	r1, r16 := (k1s+k1g)/(d1s+d1g), (k16s+k16g)/(d16s+d16g)
	verdict := "met"
	if r1 < goalKernelRatio || r16 < goalKernelRatio {
		verdict = "**not met**"
	}
	p("\nGoal: kernel ≥ %.1f× direct at both pipelines (%s: %.2f× and %.2f×). The same URL throughout: the addon is switched live between "+
		"`kernel` and `haproxy` for each run (`addons-settings --entrypoint`), in the order direct, haproxy, kernel, twice per pipeline.\n\n", goalKernelRatio, verdict, r1, r16)
	p("### Primary's redis process killed, first write through the URL (probe: go-redis, no retries, 100 ms dial / 200 ms I/O timeouts)\n\n")
	p("| mode | kills | median | min | max | goal | failed probe writes | acknowledged | lost | two primaries |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	row := func(name string, ks []foKill) {
		med, lo, hi, failed, lost, acked := killStats(ks)
		v := "met"
		if med > 200*time.Millisecond {
			v = "**not met**"
		}
		two := 0
		for _, k := range ks {
			if k.twoPrimaries {
				two++
			}
		}
		p("| %s | %d | %s | %s | %s | ≤ 0.20 s (%s) | %d | %d | %d | %d |\n", name, len(ks), secs(med), secs(lo), secs(hi), v, failed, acked, lost, two)
	}
	row("kernel", kernelKills)
	row("haproxy (after a live switch)", hapKills)
	p("\n%s\n", kbEnd)
	path := writeBenchSection(t, kbStart, kbEnd, b.String())
	t.Logf("wrote %s:\n%s", path, b.String())
}
