package agent

// The agent's Prometheus endpoint: GET /metrics on Config.MetricsAddr.
//
// Host and member figures are not measured at scrape time: they come from
// the last report the heartbeat loop built (sysstats through cgroups and
// gopsutil), so a scrape costs no cgroup or /proc reads and never shifts
// the heartbeat's CPU % windows. Only when that report is stale (no
// heartbeat loop yet, e.g. while the coordinator is unreachable at start)
// does a scrape build one itself. Redis figures are read at scrape time
// with one INFO per running redis member, concurrently, each bounded by
// metricsInfoTimeout: a slow or hung member leaves out its own redis
// series (cacheplane_agent_redis_info_success 0) and delays nothing else.
//
// Every series carries host="<host id>"; member series carry addon,
// member and role; redis series carry addon and member.
//
// Host:
//
//	cacheplane_agent_host_cpu_usage_ratio           busy CPU time over all CPUs between the last two collections, 0–1
//	cacheplane_agent_host_cpus                      CPUs
//	cacheplane_agent_host_memory_{total,used,free,available}_bytes
//	cacheplane_agent_host_swap_{total,used,free}_bytes
//	cacheplane_agent_host_load{1,5,15}
//	cacheplane_agent_host_disk_{total,free}_bytes   filesystem of the data dir
//	cacheplane_agent_host_collector_success{collector}
//	cacheplane_agent_report_age_seconds             age of the figures served
//
// Member (addon, member, role):
//
//	cacheplane_agent_member_up                      1 when running (process up and answering)
//	cacheplane_agent_member_state{state}            1 for the member's state
//	cacheplane_agent_member_restarts_total          new runs (pid/start time) seen by this agent process
//	cacheplane_agent_member_cpu_seconds_total       cgroup CPU time
//	cacheplane_agent_member_memory_current_bytes    working set (usage − inactive file cache)
//	cacheplane_agent_member_memory_usage_bytes      the cgroup's raw charge, page cache included
//	cacheplane_agent_member_memory_highest_bytes    highest since the member (re)started
//	cacheplane_agent_member_memory_limit_bytes      absent when unlimited
//	cacheplane_agent_member_swap_current_bytes      when the kernel accounts swap
//	cacheplane_agent_member_swap_highest_bytes
//	cacheplane_agent_member_disk_bytes              RDB + AOF files (redis)
//
// Redis, from INFO (addon, member):
//
//	cacheplane_agent_redis_info_success
//	cacheplane_agent_redis_connected_clients
//	cacheplane_agent_redis_instantaneous_ops_per_second
//	cacheplane_agent_redis_commands_processed_total
//	cacheplane_agent_redis_used_memory_bytes
//	cacheplane_agent_redis_keys                     sum of keys= over the dbN lines
//	cacheplane_agent_redis_evicted_keys_total
//	cacheplane_agent_redis_is_primary
//	cacheplane_agent_redis_connected_replicas       on a primary
//	cacheplane_agent_redis_replica_lag_bytes{replica}  on a primary: master_repl_offset − the replica's offset
//	cacheplane_agent_redis_master_link_up           on a replica
//
// Plus the Go runtime's and the agent process's own figures (go_*,
// process_*).

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/sysstats"
)

const (
	// metricsInfoTimeout bounds one redis INFO during a scrape.
	metricsInfoTimeout = 1500 * time.Millisecond
	// metricsReportTimeout bounds a report built by a scrape itself.
	metricsReportTimeout = 2 * time.Second
	// metricsMinFresh: a cached report younger than
	// max(3 heartbeat intervals, this) is served as is.
	metricsMinFresh = 5 * time.Second
	// metricsMaxInFlight scrapes at once; more get 503.
	metricsMaxInFlight = 4
)

// memberStates are the states cacheplane_agent_member_state enumerates.
var memberStates = []string{api.MemberPending, api.MemberStarting, api.MemberRunning, api.MemberFailed, api.MemberStopped}

// hostCollectors are the host collectors whose success is reported.
var hostCollectors = []string{sysstats.CollectorCPU, sysstats.CollectorMemory, sysstats.CollectorSwap, sysstats.CollectorLoad, sysstats.CollectorDisk}

// agentMetrics holds the last report and the registry serving it.
type agentMetrics struct {
	a       *Agent
	reg     *prometheus.Registry
	handler http.Handler
	d       metricDescs

	mu       sync.Mutex
	last     api.HeartbeatRequest
	lastAt   time.Time
	runs     map[string]sysstats.Run // last run seen per member
	restarts map[string]uint64
	addr     string // where /metrics listens; "" until it does
}

func newAgentMetrics(a *Agent) *agentMetrics {
	m := &agentMetrics{
		a:        a,
		reg:      prometheus.NewRegistry(),
		d:        newMetricDescs(),
		runs:     map[string]sysstats.Run{},
		restarts: map[string]uint64{},
	}
	r := prometheus.WrapRegistererWith(prometheus.Labels{"host": a.cfg.HostID}, m.reg)
	r.MustRegister(m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: metricsMaxInFlight,
	})
	return m
}

// observe keeps req as the figures to serve and counts members' new runs.
func (m *agentMetrics) observe(req api.HeartbeatRequest, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last, m.lastAt = req, at
	seen := make(map[string]bool, len(req.Members))
	for _, ms := range req.Members {
		seen[ms.MemberID] = true
		if ms.Pid == 0 {
			continue
		}
		run := sysstats.Run{PID: ms.Pid, StartedAt: ms.StartedAt}
		if prev, ok := m.runs[ms.MemberID]; ok && !prev.Same(run) {
			m.restarts[ms.MemberID]++
		}
		m.runs[ms.MemberID] = run
	}
	for id := range m.runs {
		if !seen[id] {
			delete(m.runs, id)
			delete(m.restarts, id)
		}
	}
}

// report returns the figures to serve: the cached report, or a new one when
// it is missing or stale.
func (m *agentMetrics) report() (api.HeartbeatRequest, map[string]uint64) {
	fresh := max(3*time.Duration(m.a.cfg.HeartbeatInterval), metricsMinFresh)
	m.mu.Lock()
	stale := m.lastAt.IsZero() || time.Since(m.lastAt) > fresh
	m.mu.Unlock()
	if stale {
		ctx, cancel := context.WithTimeout(context.Background(), metricsReportTimeout)
		req := m.a.Report(ctx)
		cancel()
		m.observe(req, time.Now())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	restarts := make(map[string]uint64, len(m.restarts))
	for k, v := range m.restarts {
		restarts[k] = v
	}
	return m.last, restarts
}

func (m *agentMetrics) setAddr(addr string) {
	m.mu.Lock()
	m.addr = addr
	m.mu.Unlock()
}

// MetricsAddr is the address /metrics listens on ("" while it does not).
func (a *Agent) MetricsAddr() string {
	a.metrics.mu.Lock()
	defer a.metrics.mu.Unlock()
	return a.metrics.addr
}

// MetricsHandler serves the agent's figures in Prometheus text format.
func (a *Agent) MetricsHandler() http.Handler { return a.metrics.handler }

// metricsLoop serves /metrics on cfg.MetricsAddr until ctx ends. A listener
// that cannot be opened is logged and leaves the agent running without it:
// members matter more than their figures.
func (a *Agent) metricsLoop(ctx context.Context) {
	if !a.cfg.MetricsEnabled() {
		return
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", a.cfg.MetricsAddr)
	if err != nil {
		a.log.Error("metrics listener failed; /metrics is off", "addr", a.cfg.MetricsAddr, "err", err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.handler)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	a.metrics.setAddr(l.Addr().String())
	a.log.Info("serving /metrics", "addr", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Warn("metrics server", "err", err)
		}
	case err := <-errc:
		a.log.Error("metrics server stopped; /metrics is off", "err", err)
	}
	a.metrics.setAddr("")
}

// ---------------------------------------------------------------------------
// Descriptions

type metricDescs struct {
	hostCPU, hostCPUs, hostMemTotal, hostMemUsed, hostMemFree, hostMemAvail     *prometheus.Desc
	hostSwapTotal, hostSwapUsed, hostSwapFree, hostLoad1, hostLoad5, hostLoad15 *prometheus.Desc
	hostDiskTotal, hostDiskFree, hostCollector, reportAge                       *prometheus.Desc

	memberUp, memberState, memberRestarts, memberCPU, memberMem, memberMemUsage *prometheus.Desc
	memberMemHigh, memberMemLimit, memberSwap, memberSwapHigh, memberDisk       *prometheus.Desc

	redisInfo, redisClients, redisOps, redisCmds, redisUsedMem, redisKeys, redisEvicted *prometheus.Desc
	redisPrimary, redisReplicas, redisLag, redisLinkUp                                  *prometheus.Desc
}

func newMetricDescs() metricDescs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("cacheplane_agent_"+name, help, labels, nil)
	}
	member := func(name, help string, labels ...string) *prometheus.Desc {
		return d("member_"+name, help, append([]string{"addon", "member", "role"}, labels...)...)
	}
	rd := func(name, help string, labels ...string) *prometheus.Desc {
		return d("redis_"+name, help, append([]string{"addon", "member"}, labels...)...)
	}
	return metricDescs{
		hostCPU:       d("host_cpu_usage_ratio", "Busy CPU time over all CPUs between the agent's last two collections, 0-1."),
		hostCPUs:      d("host_cpus", "CPUs of the host."),
		hostMemTotal:  d("host_memory_total_bytes", "Host memory."),
		hostMemUsed:   d("host_memory_used_bytes", "Host memory used: total - free - buffers - cached."),
		hostMemFree:   d("host_memory_free_bytes", "Host memory free (MemFree)."),
		hostMemAvail:  d("host_memory_available_bytes", "Host memory available to new work without swapping (MemAvailable)."),
		hostSwapTotal: d("host_swap_total_bytes", "Host swap space."),
		hostSwapUsed:  d("host_swap_used_bytes", "Host swap used."),
		hostSwapFree:  d("host_swap_free_bytes", "Host swap free."),
		hostLoad1:     d("host_load1", "1-minute load average."),
		hostLoad5:     d("host_load5", "5-minute load average."),
		hostLoad15:    d("host_load15", "15-minute load average."),
		hostDiskTotal: d("host_disk_total_bytes", "Size of the filesystem holding the agent's data dir."),
		hostDiskFree:  d("host_disk_free_bytes", "Space an unprivileged writer can still use on the filesystem holding the agent's data dir."),
		hostCollector: d("host_collector_success", "1 when the host collector worked in the last collection.", "collector"),
		reportAge:     d("report_age_seconds", "Age of the host and member figures served (they come from the last heartbeat's collection)."),

		memberUp:       member("up", "1 when the member is running: process up and answering."),
		memberState:    member("state", "1 for the member's current state.", "state"),
		memberRestarts: member("restarts_total", "New runs of the member (a new pid or start time) seen by this agent process."),
		memberCPU:      member("cpu_seconds_total", "CPU time used by the member's cgroup."),
		memberMem:      member("memory_current_bytes", "Member memory: the cgroup's usage minus inactive file cache (working set)."),
		memberMemUsage: member("memory_usage_bytes", "The member cgroup's raw memory charge, page cache included."),
		memberMemHigh:  member("memory_highest_bytes", "Highest member memory since the member (re)started (includes the kernel's high-water mark, which counts page cache)."),
		memberMemLimit: member("memory_limit_bytes", "The member cgroup's memory limit (absent when unlimited)."),
		memberSwap:     member("swap_current_bytes", "Swap used by the member (absent when the kernel does not account swap per cgroup)."),
		memberSwapHigh: member("swap_highest_bytes", "Highest swap of the member since it (re)started."),
		memberDisk:     member("disk_bytes", "On-disk size of the member's database files (RDB and AOF)."),

		redisInfo:     rd("info_success", "1 when INFO answered within the scrape's timeout."),
		redisClients:  rd("connected_clients", "Client connections (INFO connected_clients)."),
		redisOps:      rd("instantaneous_ops_per_second", "Commands per second (INFO instantaneous_ops_per_sec)."),
		redisCmds:     rd("commands_processed_total", "Commands processed since the server started (INFO total_commands_processed)."),
		redisUsedMem:  rd("used_memory_bytes", "Memory allocated by redis (INFO used_memory)."),
		redisKeys:     rd("keys", "Keys in all databases (sum of the keyspace's keys=)."),
		redisEvicted:  rd("evicted_keys_total", "Keys evicted for maxmemory since the server started (INFO evicted_keys)."),
		redisPrimary:  rd("is_primary", "1 when the server is a primary (role:master), 0 when a replica."),
		redisReplicas: rd("connected_replicas", "Replicas connected to this primary."),
		redisLag:      rd("replica_lag_bytes", "On a primary: master_repl_offset minus the replica's acknowledged offset.", "replica"),
		redisLinkUp:   rd("master_link_up", "On a replica: 1 when its link to the primary is up."),
	}
}

func (d *metricDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		d.hostCPU, d.hostCPUs, d.hostMemTotal, d.hostMemUsed, d.hostMemFree, d.hostMemAvail,
		d.hostSwapTotal, d.hostSwapUsed, d.hostSwapFree, d.hostLoad1, d.hostLoad5, d.hostLoad15,
		d.hostDiskTotal, d.hostDiskFree, d.hostCollector, d.reportAge,
		d.memberUp, d.memberState, d.memberRestarts, d.memberCPU, d.memberMem, d.memberMemUsage,
		d.memberMemHigh, d.memberMemLimit, d.memberSwap, d.memberSwapHigh, d.memberDisk,
		d.redisInfo, d.redisClients, d.redisOps, d.redisCmds, d.redisUsedMem, d.redisKeys, d.redisEvicted,
		d.redisPrimary, d.redisReplicas, d.redisLag, d.redisLinkUp,
	}
}

// Describe implements prometheus.Collector.
func (m *agentMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range m.d.all() {
		ch <- d
	}
}

// ---------------------------------------------------------------------------
// Collection

// Collect implements prometheus.Collector.
func (m *agentMetrics) Collect(ch chan<- prometheus.Metric) {
	req, restarts := m.report()
	d := &m.d
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}

	if hr := req.Stats; hr != nil {
		if !hr.CollectedAt.IsZero() {
			gauge(d.reportAge, max(0, time.Since(hr.CollectedAt).Seconds()))
		}
		failed := map[string]bool{}
		for _, e := range hr.Errors {
			failed[e.Collector] = true
		}
		for _, c := range hostCollectors {
			if c == sysstats.CollectorDisk && hr.Disk == nil && !failed[c] {
				continue // no disk collector configured
			}
			gauge(d.hostCollector, b2f(!failed[c]), c)
		}
		if c := hr.CPU; c != nil {
			gauge(d.hostCPU, c.Percent/100)
			gauge(d.hostCPUs, float64(c.CPUs))
		}
		if mm := hr.Memory; mm != nil {
			gauge(d.hostMemTotal, float64(mm.TotalBytes))
			gauge(d.hostMemUsed, float64(mm.UsedBytes))
			gauge(d.hostMemFree, float64(mm.FreeBytes))
			gauge(d.hostMemAvail, float64(mm.AvailableBytes))
		}
		if s := hr.Swap; s != nil {
			gauge(d.hostSwapTotal, float64(s.TotalBytes))
			gauge(d.hostSwapUsed, float64(s.UsedBytes))
			gauge(d.hostSwapFree, float64(s.FreeBytes))
		}
		if l := hr.Load; l != nil {
			gauge(d.hostLoad1, l.Load1)
			gauge(d.hostLoad5, l.Load5)
			gauge(d.hostLoad15, l.Load15)
		}
		if dk := hr.Disk; dk != nil {
			gauge(d.hostDiskTotal, float64(dk.TotalBytes))
			gauge(d.hostDiskFree, float64(dk.FreeBytes))
		}
	}

	var redisMembers []api.MemberStatus
	for _, ms := range req.Members {
		l := []string{ms.AddonID, ms.MemberID, string(ms.Role)}
		gauge(d.memberUp, b2f(ms.State == api.MemberRunning), l...)
		for _, s := range memberStates {
			gauge(d.memberState, b2f(ms.State == s), append(l, s)...)
		}
		counter(d.memberRestarts, float64(restarts[ms.MemberID]), l...)
		if mr := ms.Stats; mr != nil {
			if c := mr.CPU; c != nil {
				counter(d.memberCPU, float64(c.UsageNanos)/1e9, l...)
			}
			if mm := mr.Memory; mm != nil {
				gauge(d.memberMem, float64(mm.CurrentBytes), l...)
				gauge(d.memberMemUsage, float64(mm.UsageBytes), l...)
				gauge(d.memberMemHigh, float64(mm.HighestBytes), l...)
				if !mm.Unlimited {
					gauge(d.memberMemLimit, float64(mm.LimitBytes), l...)
				}
			}
			if s := mr.Swap; s != nil && s.Accounted {
				gauge(d.memberSwap, float64(s.CurrentBytes), l...)
				gauge(d.memberSwapHigh, float64(s.HighestBytes), l...)
			}
			if dk := mr.Disk; dk != nil {
				gauge(d.memberDisk, float64(dk.TotalBytes), l...)
			}
		}
		if ms.Role == api.RoleRedis && ms.State == api.MemberRunning {
			redisMembers = append(redisMembers, ms)
		}
	}

	infos := m.redisInfos(redisMembers)
	for i, ms := range redisMembers {
		l := []string{ms.AddonID, ms.MemberID}
		ri := infos[i]
		gauge(d.redisInfo, b2f(ri != nil), l...)
		if ri == nil {
			continue
		}
		gauge(d.redisClients, ri.connectedClients, l...)
		gauge(d.redisOps, ri.opsPerSec, l...)
		counter(d.redisCmds, ri.commandsProcessed, l...)
		gauge(d.redisUsedMem, ri.usedMemory, l...)
		gauge(d.redisKeys, ri.keys, l...)
		counter(d.redisEvicted, ri.evictedKeys, l...)
		primary := ri.role == "master"
		gauge(d.redisPrimary, b2f(primary), l...)
		if primary {
			gauge(d.redisReplicas, ri.connectedReplicas, l...)
			for _, r := range ri.replicas {
				gauge(d.redisLag, float64(max(0, ri.masterReplOffset-r.offset)), append(l, r.addr)...)
			}
		} else {
			gauge(d.redisLinkUp, b2f(ri.masterLinkUp), l...)
		}
	}
}

// redisInfos asks every member for INFO at once; a member that does not
// answer within metricsInfoTimeout gets nil.
func (m *agentMetrics) redisInfos(members []api.MemberStatus) []*redisInfo {
	out := make([]*redisInfo, len(members))
	m.a.mu.Lock()
	assigned := make([]api.Assignment, len(members))
	ok := make([]bool, len(members))
	for i, ms := range members {
		assigned[i], ok[i] = m.a.assigned[ms.MemberID]
	}
	m.a.mu.Unlock()
	var wg sync.WaitGroup
	for i := range members {
		if !ok[i] {
			continue
		}
		p, err := m.a.planMember(assigned[i])
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), metricsInfoTimeout)
			defer cancel()
			c := m.a.probes.client(p.as.MemberID, p.probe, p.as.FleetPassword.Reveal())
			info, err := c.Info(ctx).Result()
			if err != nil {
				m.a.log.Debug("metrics: INFO failed", "member", p.as.MemberID, "err", err)
				return
			}
			ri := parseRedisInfo(info)
			out[i] = &ri
		}()
	}
	wg.Wait()
	return out
}

// redisInfo is what the metrics take from INFO.
type redisInfo struct {
	connectedClients, opsPerSec, commandsProcessed float64
	usedMemory, keys, evictedKeys                  float64
	role                                           string
	connectedReplicas                              float64
	masterReplOffset                               int64
	replicas                                       []replicaOffset
	masterLinkUp                                   bool
}

// replicaOffset is one slaveN line of a primary's INFO replication.
type replicaOffset struct {
	addr   string // ip:port
	offset int64
}

// parseRedisInfo reads the figures the metrics need from INFO's text.
// Unknown or malformed lines are skipped.
func parseRedisInfo(info string) redisInfo {
	var ri redisInfo
	num := func(v string) float64 {
		f, _ := strconv.ParseFloat(v, 64)
		return f
	}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "connected_clients":
			ri.connectedClients = num(v)
		case "instantaneous_ops_per_sec":
			ri.opsPerSec = num(v)
		case "total_commands_processed":
			ri.commandsProcessed = num(v)
		case "used_memory":
			ri.usedMemory = num(v)
		case "evicted_keys":
			ri.evictedKeys = num(v)
		case "role":
			ri.role = v
		case "connected_slaves":
			ri.connectedReplicas = num(v)
		case "master_repl_offset":
			ri.masterReplOffset, _ = strconv.ParseInt(v, 10, 64)
		case "master_link_status":
			ri.masterLinkUp = v == "up"
		default:
			switch {
			case strings.HasPrefix(k, "db") && isDigits(k[2:]):
				ri.keys += num(field(v, "keys"))
			case strings.HasPrefix(k, "slave") && isDigits(k[5:]):
				ip, port := field(v, "ip"), field(v, "port")
				off, err := strconv.ParseInt(field(v, "offset"), 10, 64)
				if ip != "" && port != "" && err == nil {
					ri.replicas = append(ri.replicas, replicaOffset{addr: net.JoinHostPort(ip, port), offset: off})
				}
			}
		}
	}
	return ri
}

// field returns the value of name in "a=1,b=2".
func field(s, name string) string {
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
