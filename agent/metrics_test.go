package agent_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// scrapeResult is one GET /metrics, parsed.
type scrapeResult struct {
	body     []byte
	families map[string]*dto.MetricFamily
	took     time.Duration
}

// scrape fetches and parses the agent's /metrics with the Prometheus text
// parser; it fails the test on anything but a well-formed 200.
func scrape(t *testing.T, a *agent.Agent) scrapeResult {
	t.Helper()
	var addr string
	testutil.WaitFor(t, 10*time.Second, func() error {
		if addr = a.MetricsAddr(); addr == "" {
			return errors.New("/metrics not listening yet")
		}
		return nil
	})
	cl := &http.Client{Timeout: 10 * time.Second}
	start := time.Now()
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	took := time.Since(start)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v\n%s", resp.Status, err, body)
	}
	// The zero TextParser panics in this version of prometheus/common.
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return scrapeResult{body: body, families: mfs, took: took}
}

// value returns the value of the series of name whose labels include want.
func (s scrapeResult) value(name string, want ...string) (float64, error) {
	mf, ok := s.families[name]
	if !ok {
		return 0, fmt.Errorf("no %s", name)
	}
	var found []float64
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			found = append(found, m.Gauge.GetValue())
		case m.Counter != nil:
			found = append(found, m.Counter.GetValue())
		case m.Untyped != nil:
			found = append(found, m.Untyped.GetValue())
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%s%v: %d series", name, want, len(found))
	}
	return found[0], nil
}

// must is value for a series that has to be there.
func (s scrapeResult) must(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	v, err := s.value(name, want...)
	if err != nil {
		t.Fatalf("%v\n%s", err, s.body)
	}
	return v
}

// A running starter redis is on /metrics: host figures, member figures from
// the cgroup, redis figures from INFO (keys match what was written); the
// exposition parses, passes promtool's lint and holds no password.
func TestMetrics(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.cfg.MetricsAddr = hostIP + ":0"
	h.start(t)
	as := h.starter(t, "m1")
	coord.assign(h.id, as)
	c := redisClient(t, as)
	coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))

	// n keys: n-1 in database 0, one in database 3 (keys sums them all).
	const n = 1000
	pipe := c.Pipeline()
	for i := range n - 1 {
		pipe.Set(ctxT(t), "key:"+strconv.Itoa(i), i, 0)
	}
	if _, err := pipe.Exec(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	db3 := redis.NewClient(&redis.Options{Addr: c.Options().Addr, Password: as.Password.Reveal(), DB: 3, MaxRetries: -1, DisableIdentity: true})
	defer db3.Close()
	if err := db3.Set(ctxT(t), "in-db-3", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}

	m1 := []string{"member", "m1"}
	var s scrapeResult
	testutil.WaitFor(t, 20*time.Second, func() error {
		s = scrape(t, h.agent)
		if v, err := s.value("cacheplane_agent_member_memory_current_bytes", m1...); err != nil || v <= 0 {
			return fmt.Errorf("memory current %v (%v)", v, err)
		}
		if v, err := s.value("cacheplane_agent_redis_keys", m1...); err != nil || v != n {
			return fmt.Errorf("redis keys %v (%v), want %d", v, err, n)
		}
		return nil
	})
	for _, tc := range []struct {
		name   string
		labels []string
		ok     func(float64) bool
		want   string
	}{
		{"cacheplane_agent_member_up", []string{"member", "m1", "addon", as.AddonID, "role", "redis"}, eq(1), "1"},
		{"cacheplane_agent_member_state", []string{"member", "m1", "state", "running"}, eq(1), "1"},
		{"cacheplane_agent_member_state", []string{"member", "m1", "state", "failed"}, eq(0), "0"},
		{"cacheplane_agent_member_restarts_total", m1, eq(0), "0"},
		{"cacheplane_agent_member_cpu_seconds_total", m1, gt(0), "> 0"},
		{"cacheplane_agent_member_memory_highest_bytes", m1, gt(0), "> 0"},
		{"cacheplane_agent_member_memory_limit_bytes", m1, gt(float64(as.PlanMemoryMB << 20)), "> plan memory"},
		{"cacheplane_agent_member_disk_bytes", m1, func(v float64) bool { return v >= 0 }, ">= 0"},
		{"cacheplane_agent_redis_info_success", m1, eq(1), "1"},
		{"cacheplane_agent_redis_is_primary", m1, eq(1), "1"},
		{"cacheplane_agent_redis_connected_replicas", m1, eq(0), "0"},
		{"cacheplane_agent_redis_connected_clients", m1, gt(0), "> 0"},
		{"cacheplane_agent_redis_used_memory_bytes", m1, gt(0), "> 0"},
		{"cacheplane_agent_redis_commands_processed_total", m1, gt(n), "> n"},
		{"cacheplane_agent_redis_evicted_keys_total", m1, eq(0), "0"},
		{"cacheplane_agent_redis_instantaneous_ops_per_second", m1, func(v float64) bool { return v >= 0 }, ">= 0"},
		{"cacheplane_agent_host_memory_total_bytes", []string{"host", h.id}, gt(64 << 20), "> 64 MiB"},
		{"cacheplane_agent_host_memory_free_bytes", nil, gt(0), "> 0"},
		{"cacheplane_agent_host_cpus", nil, gt(0), "> 0"},
		{"cacheplane_agent_host_cpu_usage_ratio", nil, func(v float64) bool { return v >= 0 && v <= 1 }, "0-1"},
		{"cacheplane_agent_host_load1", nil, func(v float64) bool { return v >= 0 }, ">= 0"},
		{"cacheplane_agent_host_disk_free_bytes", nil, gt(0), "> 0"},
		{"cacheplane_agent_host_swap_total_bytes", nil, func(v float64) bool { return v >= 0 }, ">= 0"},
		{"cacheplane_agent_host_collector_success", []string{"collector", "memory"}, eq(1), "1"},
		{"cacheplane_agent_report_age_seconds", nil, func(v float64) bool { return v >= 0 && v < 10 }, "0-10 s"},
		{"process_resident_memory_bytes", nil, gt(0), "> 0"},
	} {
		v := s.must(t, tc.name, tc.labels...)
		if !tc.ok(v) {
			t.Errorf("%s%v = %v, want %s", tc.name, tc.labels, v, tc.want)
		}
	}
	if bytes.Contains(s.body, []byte(password)) {
		t.Fatal("/metrics holds the password")
	}

	// promtool check metrics runs this linter (promtool itself comes with
	// Debian's 96 MB prometheus package, not installed by make deps).
	problems, err := promlint.New(bytes.NewReader(s.body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "cacheplane_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		} else {
			t.Logf("promlint (not ours): %s: %s", p.Metric, p.Text)
		}
	}
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func gt(min float64) func(float64) bool  { return func(v float64) bool { return v > min } }

// A redis that hangs (SIGSTOP) does not hold up a scrape: its INFO times
// out on its own while the other member's figures are served.
func TestMetricsSlowMember(t *testing.T) {
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.cfg.MetricsAddr = hostIP + ":0"
	h.start(t)
	slow, fine := h.starter(t, "slow"), h.starter(t, "fine")
	coord.assign(h.id, slow, fine)
	st := coord.waitMember(t, h.id, "slow", 30*time.Second, isState(api.MemberRunning))
	coord.waitMember(t, h.id, "fine", 30*time.Second, isState(api.MemberRunning))
	if err := redisClient(t, fine).Set(ctxT(t), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(st.Pid, syscall.SIGCONT) })

	for range 3 {
		s := scrape(t, h.agent)
		if s.took > 4*time.Second {
			t.Errorf("scrape took %s with a hung member", s.took)
		}
		if v := s.must(t, "cacheplane_agent_redis_keys", "member", "fine"); v != 1 {
			t.Errorf("fine member's keys = %v", v)
		}
		// The hung member is either still reported running (INFO timed
		// out), no longer running (no redis series at all), or restarted
		// by the agent as frozen (a new process answers: the old one gone).
		if v, err := s.value("cacheplane_agent_redis_info_success", "member", "slow"); err == nil && v != 0 && syscall.Kill(st.Pid, 0) == nil {
			t.Errorf("INFO of a stopped redis succeeded")
		}
		t.Logf("scrape with a hung member: %s", s.took.Round(time.Millisecond))
	}
}

// The figures follow the member's run, as the dashboard promises: writing
// 50 MB raises memory current and highest, which agree with the cgroup's
// own files within 5 %; BGSAVE grows the on-disk size; deleting the values
// lowers current but not highest; after the process is killed and the agent
// restarts it, highest starts again.
func TestMemberFiguresFollowTheRun(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.usage_in_bytes"); err != nil {
		t.Skip("the cgroup v1 memory hierarchy is not at /sys/fs/cgroup/memory (the cgroup v2 readers are tested on fixtures in sysstats)")
	}
	coord := newFakeCoordinator(t)
	h := newHost(t, coord)
	h.cfg.MetricsAddr = hostIP + ":0"
	h.start(t)
	as := h.starter(t, "m1")
	as.PlanMemoryMB = 256
	coord.assign(h.id, as)
	c := redisClient(t, as)
	first := coord.waitMember(t, h.id, "m1", 30*time.Second, isState(api.MemberRunning))
	m1 := []string{"member", "m1"}
	memDir := filepath.Join("/sys/fs/cgroup/memory", h.cfg.Namespace, "m1")
	cpuDir := filepath.Join("/sys/fs/cgroup/cpuacct", h.cfg.Namespace, "m1")

	s := scrape(t, h.agent)
	cur0 := s.must(t, "cacheplane_agent_member_memory_current_bytes", m1...)
	disk0 := s.must(t, "cacheplane_agent_member_disk_bytes", m1...)
	t.Logf("idle: current %s, highest %s, disk %s", mib(cur0), mib(s.must(t, "cacheplane_agent_member_memory_highest_bytes", m1...)), mib(disk0))

	// 50 values of 1 MiB, random so that the RDB cannot compress them.
	const values, size = 50, 1 << 20
	const grown = 45 << 20
	for i := range values {
		b := make([]byte, size)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if err := c.Set(ctxT(t), "big:"+strconv.Itoa(i), b, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var cur, high float64
	testutil.WaitFor(t, 20*time.Second, func() error {
		s = scrape(t, h.agent)
		cur = s.must(t, "cacheplane_agent_member_memory_current_bytes", m1...)
		high = s.must(t, "cacheplane_agent_member_memory_highest_bytes", m1...)
		if cur < cur0+grown || high < cur {
			return fmt.Errorf("after writing 50 MiB: current %s, highest %s (idle current %s)", mib(cur), mib(high), mib(cur0))
		}
		return nil
	})
	t.Logf("after writing 50 MiB: current %s, highest %s", mib(cur), mib(high))

	// The figures agree with the cgroup's files. Both are read at slightly
	// different instants, so the comparison is retried.
	testutil.WaitFor(t, 20*time.Second, func() error {
		usage := kernelUint(t, memDir, "memory.usage_in_bytes")
		ws := usage - min(usage, statValue(t, memDir, "total_inactive_file"))
		limit := kernelUint(t, memDir, "memory.limit_in_bytes")
		cpu := float64(kernelUint(t, cpuDir, "cpuacct.usage")) / 1e9
		s := scrape(t, h.agent)
		checks := []struct {
			name       string
			got, files float64
		}{
			{"memory current (working set)", s.must(t, "cacheplane_agent_member_memory_current_bytes", m1...), float64(ws)},
			{"memory usage", s.must(t, "cacheplane_agent_member_memory_usage_bytes", m1...), float64(usage)},
			{"memory limit", s.must(t, "cacheplane_agent_member_memory_limit_bytes", m1...), float64(limit)},
			{"cpu seconds", s.must(t, "cacheplane_agent_member_cpu_seconds_total", m1...), cpu},
		}
		var errs []error
		for _, ck := range checks {
			if math.Abs(ck.got-ck.files) > 0.05*ck.files {
				errs = append(errs, fmt.Errorf("%s: reported %.0f, cgroup files %.0f (more than 5%% apart)", ck.name, ck.got, ck.files))
			}
		}
		return errors.Join(errs...)
	})

	// BGSAVE writes the 50 MiB to disk.
	bgsave(t, c)
	testutil.WaitFor(t, 20*time.Second, func() error {
		if d := scrape(t, h.agent).must(t, "cacheplane_agent_member_disk_bytes", m1...); d < disk0+grown {
			return fmt.Errorf("on-disk size %s after BGSAVE (before %s)", mib(d), mib(disk0))
		}
		return nil
	})

	// Deleting the values: current falls, highest stays.
	for i := range values {
		if err := c.Del(ctxT(t), "big:"+strconv.Itoa(i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var curDel, highDel float64
	testutil.WaitFor(t, 30*time.Second, func() error {
		// jemalloc returns freed pages lazily; MEMORY PURGE asks now.
		if err := c.Do(ctxT(t), "MEMORY", "PURGE").Err(); err != nil {
			return err
		}
		s = scrape(t, h.agent)
		curDel = s.must(t, "cacheplane_agent_member_memory_current_bytes", m1...)
		highDel = s.must(t, "cacheplane_agent_member_memory_highest_bytes", m1...)
		if curDel > cur-grown+(5<<20) {
			return fmt.Errorf("after deleting: current %s, was %s", mib(curDel), mib(cur))
		}
		return nil
	})
	if highDel < high {
		t.Fatalf("highest fell from %s to %s without a restart", mib(high), mib(highDel))
	}
	t.Logf("after deleting: current %s, highest %s", mib(curDel), mib(highDel))
	// An empty dump, so the restarted process does not load 50 MiB again.
	bgsave(t, c)

	// kill -9: the agent restarts the member after restart_delay; highest
	// starts again from the new run's figures.
	if err := syscall.Kill(first.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	again := coord.waitMember(t, h.id, "m1", 30*time.Second, func(m api.MemberStatus) error {
		if m.State != api.MemberRunning || m.Pid == first.Pid {
			return errors.New("want running with a new pid")
		}
		return nil
	})
	testutil.WaitFor(t, 20*time.Second, func() error {
		s = scrape(t, h.agent)
		if r := s.must(t, "cacheplane_agent_member_restarts_total", m1...); r != 1 {
			return fmt.Errorf("restarts %v, want 1", r)
		}
		if up := s.must(t, "cacheplane_agent_member_up", m1...); up != 1 {
			return fmt.Errorf("up %v", up)
		}
		return nil
	})
	curR := s.must(t, "cacheplane_agent_member_memory_current_bytes", m1...)
	highR := s.must(t, "cacheplane_agent_member_memory_highest_bytes", m1...)
	t.Logf("after the restart (pid %d -> %d): current %s, highest %s", first.Pid, again.Pid, mib(curR), mib(highR))
	if highR >= highDel-grown || highR < curR {
		t.Fatalf("highest after the restart %s (current %s), before %s: did not start again", mib(highR), mib(curR), mib(highDel))
	}
	// The heartbeat (what addons-stats shows) says the same.
	hb := coord.waitMember(t, h.id, "m1", 10*time.Second, func(m api.MemberStatus) error {
		if m.Pid != again.Pid {
			return errors.New("old run")
		}
		return nil
	})
	var hh uint64
	if hb.Stats != nil && hb.Stats.Memory != nil {
		hh = hb.Stats.Memory.HighestBytes
	}
	if hh == 0 || float64(hh) >= float64(highDel-grown) {
		t.Fatalf("heartbeat's highest after the restart: %d (before %s)", hh, mib(highDel))
	}
}

// bgsave runs BGSAVE and waits until it finished successfully.
func bgsave(t *testing.T, c *redis.Client) {
	t.Helper()
	saves := func() (int, string, error) {
		info, err := c.Info(ctxT(t), "persistence").Result()
		if err != nil {
			return 0, "", err
		}
		n, status, inProgress := -1, "", ""
		for _, line := range strings.Split(info, "\r\n") {
			k, v, _ := strings.Cut(line, ":")
			switch k {
			case "rdb_saves":
				n, _ = strconv.Atoi(v)
			case "rdb_last_bgsave_status":
				status = v
			case "rdb_bgsave_in_progress":
				inProgress = v
			}
		}
		if n < 0 {
			return 0, "", errors.New("INFO persistence has no rdb_saves")
		}
		if inProgress != "0" {
			return n, status, errors.New("a BGSAVE is in progress")
		}
		return n, status, nil
	}
	var before int
	testutil.WaitFor(t, 20*time.Second, func() (err error) {
		before, _, err = saves()
		return err
	})
	if err := c.BgSave(ctxT(t)).Err(); err != nil {
		t.Fatalf("BGSAVE: %v", err)
	}
	testutil.WaitFor(t, 30*time.Second, func() error {
		n, status, err := saves()
		if err != nil {
			return err
		}
		if n <= before {
			return errors.New("BGSAVE not done yet")
		}
		if status != "ok" {
			t.Fatalf("BGSAVE failed: rdb_last_bgsave_status %s", status)
		}
		return nil
	})
}

func mib(v float64) string { return fmt.Sprintf("%.1f MiB", v/(1<<20)) }

func kernelUint(t *testing.T, dir, file string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// statValue reads one key of a cgroup v1 memory.stat.
func statValue(t *testing.T, dir, key string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s/memory.stat has no %s", dir, key)
	return 0
}

// metrics_addr: ":port" takes the host's address when it is a loopback
// address (dev mode: one agent per 127.0.0.x, no collision), else
// 127.0.0.1; "" and "off" disable; a host name or a bad port is refused.
func TestMetricsAddrConfig(t *testing.T) {
	tests := []struct {
		address, metrics, want string
		enabled, bad           bool
	}{
		{address: "127.0.0.12", metrics: ":9412", want: "127.0.0.12:9412", enabled: true},
		{address: "10.1.2.3", metrics: ":9412", want: "127.0.0.1:9412", enabled: true},
		{address: "::1", metrics: ":9412", want: "[::1]:9412", enabled: true},
		{address: "10.1.2.3", metrics: "10.1.2.3:9500", want: "10.1.2.3:9500", enabled: true},
		{address: "127.0.0.12", metrics: "127.0.0.12:0", want: "127.0.0.12:0", enabled: true},
		{address: "127.0.0.12", metrics: "off", want: "off"},
		{address: "127.0.0.12", metrics: "", want: ""},
		{address: "127.0.0.12", metrics: "9412", bad: true},
		{address: "127.0.0.12", metrics: "localhost:9412", bad: true},
		{address: "127.0.0.12", metrics: ":http", bad: true},
		{address: "127.0.0.12", metrics: ":70000", bad: true},
	}
	if d := agent.DefaultConfig(); d.MetricsAddr != ":9412" {
		t.Fatalf("default metrics_addr %q, want :9412", d.MetricsAddr)
	}
	for _, tt := range tests {
		t.Run(tt.address+" "+tt.metrics, func(t *testing.T) {
			c := agent.DefaultConfig()
			c.HostID, c.Address, c.MetricsAddr, c.MemoryMB = "h1", tt.address, tt.metrics, 1024
			err := c.Validate()
			if tt.bad {
				if err == nil {
					t.Fatalf("metrics_addr %q accepted as %q", tt.metrics, c.MetricsAddr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MetricsAddr != tt.want || c.MetricsEnabled() != tt.enabled {
				t.Fatalf("metrics_addr %q -> %q (enabled %v), want %q (enabled %v)", tt.metrics, c.MetricsAddr, c.MetricsEnabled(), tt.want, tt.enabled)
			}
		})
	}
}
