//go:build scale && bench

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Scale knobs (environment): CACHEPLANE_SCALE_HOSTS, a comma list of fleet
// sizes run one after the other (default 1000); CACHEPLANE_SCALE_ADDONS_PER_HOST
// (default 10: 100,000 addons at 10,000 hosts) or CACHEPLANE_SCALE_ADDONS
// (that many at every size); CACHEPLANE_SCALE_BUSINESS,
// business addons among them (default 20: what a host loss heals);
// CACHEPLANE_SCALE_HEARTBEAT, each simulated agent's heartbeat and liveness
// interval (default 5s); CACHEPLANE_SCALE_MEASURE, the steady phase
// (default 30s); CACHEPLANE_SCALE_HTTP2=0, agents on HTTP/1.1 (simHTTP2);
// CACHEPLANE_SCALE_RAFT=HEARTBEAT/ELECTION/LEASE (e.g. 2s/2s/1s), the
// coordinators' Raft timeouts (config heartbeat_timeout, election_timeout,
// leader_lease_timeout; default 500ms/500ms/250ms); CACHEPLANE_SCALE_SIMS,
// the simulator processes (default: by open files, simProcs);
// CACHEPLANE_SCALE_SIM_NICE, their niceness (default 0, simNice);
// CACHEPLANE_SCALE_LOG_LEVEL, the coordinators' (default warn);
// CACHEPLANE_SCALE_KEEP=DIR, where to copy the logs of every size.
const (
	scaleStart = "<!-- bench:scale:start -->"
	scaleEnd   = "<!-- bench:scale:end -->"
	scalePlan  = "redis-starter-256"
	scaleHA    = "redis-business-256"
	// Simulated hosts live on 127.77.0.0/16 (one address each: its own
	// source address, so 10,000 agents do not share one ephemeral port range).
	scaleNet = "127.77."
)

// scaleResult is one fleet size's figures.
type scaleResult struct {
	Hosts, Addons, Business int
	Heartbeat               time.Duration

	TokensPerSec, JoinsPerSec, RegistersPerSec float64
	PlaceSecs                                  float64
	AddonsRunning                              int

	HBCount, HBErrors int
	HBP50, HBP99      time.Duration
	HBBytes           int
	Watches           int

	LeaderCPU, FollowerCPU float64 // % of one core, steady phase
	LeaderRSS, FollowerRSS int64   // bytes, end of steady phase

	AdminWrites        int
	AdminRate          float64
	AdminP50, AdminP99 time.Duration
	AdminErrors        int
	HostLossToReplace  time.Duration
	HostLossNote       string
	// A second host lost right after the admin writes, with the
	// provisions they started queued (QueuedProvisions active then).
	HostLossQueued     time.Duration
	HostLossQueuedNote string
	QueuedProvisions   int
	// Open files per agent (its watch and heartbeat connections) in the
	// leader and in this process (the simulator), steady phase.
	LeaderFDs, SimFDs    int
	SnapshotBytes        int64
	RestoreCatchUp       time.Duration
	Failover             time.Duration
	FailoverHeartbeatsOK time.Duration
	// StepDowns counts leaders that lost their quorum lease under the
	// load (before the failover measured on purpose).
	StepDowns int
	Notes     []string
}

func TestScale(t *testing.T) {
	var sizes []int
	for _, f := range strings.Split(envString("CACHEPLANE_SCALE_HOSTS", "1000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 10 || n > 60000 {
			t.Fatalf("CACHEPLANE_SCALE_HOSTS: %q: want sizes between 10 and 60000", f)
		}
		sizes = append(sizes, n)
	}
	perHost := envInt(t, "CACHEPLANE_SCALE_ADDONS_PER_HOST", 10)
	total := 0 // CACHEPLANE_SCALE_ADDONS: the same number of addons at every size instead
	if os.Getenv("CACHEPLANE_SCALE_ADDONS") != "" {
		total = envInt(t, "CACHEPLANE_SCALE_ADDONS", 1)
	}
	business := envInt(t, "CACHEPLANE_SCALE_BUSINESS", 20)
	hb := envDuration(t, "CACHEPLANE_SCALE_HEARTBEAT", 5*time.Second)
	measure := envDuration(t, "CACHEPLANE_SCALE_MEASURE", 30*time.Second)
	noFile := liftNoFile(t) // the coordinators inherit it: 10,000 agents hold 20,000 connections to the leader
	Build(t)
	var results []scaleResult
	for _, n := range sizes {
		perAgent := 2 // HTTP/1.1: the watch and the heartbeat
		if simHTTP2 {
			perAgent = 1
		}
		if need := uint64(perAgent*n + 2000); need > noFile {
			t.Logf("hosts=%d: skipped: needs about %d open files in this process and in the leader, the limit is %d", n, need, noFile)
			results = append(results, scaleResult{Hosts: n, Notes: []string{fmt.Sprintf("not run: about %d open files needed (%d connections per agent), the limit here is %d", need, perAgent, noFile)}})
			continue
		}
		t.Run(fmt.Sprintf("hosts=%d", n), func(t *testing.T) {
			addons := n * perHost
			if total > 0 {
				addons = total
			}
			results = append(results, runScale(t, n, addons, min(business, addons), hb, measure))
		})
	}
	section := scaleSection(results, measure)
	path := writeBenchSection(t, scaleStart, scaleEnd, section)
	t.Logf("wrote %s:\n%s", path, section)
}

// liftNoFile raises the open-files limit as far as allowed (the hard
// limit too when the process may) and returns it: each simulated agent
// holds two connections (its watch, its heartbeat) in this process and in
// the leader, so the limit bounds the fleet one machine can simulate.
func liftNoFile(t *testing.T) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	old := lim
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}); err == nil {
		lim = syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	} else {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("setrlimit: %v", err)
		}
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	t.Logf("open files limit %d (coordinators inherit it)", lim.Cur)
	return lim.Cur
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a duration like 5s", name, v)
	}
	return d
}

// ---------------------------------------------------------------------------
// Simulated agents

// simAgent is one host: its certificate, its address (also its source
// address), the assignments it was last given, and the entrypoints it
// answers PING on (what a provision waits for).
type simAgent struct {
	id, addr string
	num      int // its host number (hostAddr, simHostID)
	hc       *http.Client
	targets  []string // coordinators' peer addresses, the last that answered first

	mu       sync.Mutex
	cur      int
	assigned []api.Assignment
	index    uint64
	pinged   map[string]bool // entrypoints listened on
	started  time.Time
	stopped  atomic.Bool
	running  atomic.Bool // its loops started
}

func hostAddr(i int) string { return fmt.Sprintf("%s%d.%d", scaleNet, 1+i/250, 1+i%250) }

// simHTTP2: the simulated agents speak HTTP/2 as the agent's client does
// (api.NewTLSPeerClient: the watch and the heartbeats on one connection);
// CACHEPLANE_SCALE_HTTP2=0 makes them speak HTTP/1.1 (two connections per
// agent), to compare.
var simHTTP2 = os.Getenv("CACHEPLANE_SCALE_HTTP2") != "0"

func newSimTransport(local string, cfg *tls.Config) *http.Transport {
	tr := &http.Transport{
		DialContext: (&net.Dialer{Timeout: 5 * time.Second,
			LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext,
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 20 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     5 * time.Minute,
		ForceAttemptHTTP2:   simHTTP2,
	}
	if simHTTP2 {
		tr.HTTP2 = &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 5 * time.Second}
	}
	return tr
}

// call sends one agent API request to the coordinator that answered last,
// then to the others (any member forwards agent calls to the leader).
func (a *simAgent) call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	a.mu.Lock()
	first := a.cur
	a.mu.Unlock()
	var last error
	for k := range a.targets {
		i := (first + k) % len(a.targets)
		req, err := http.NewRequestWithContext(ctx, method, "https://"+a.targets[i]+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := a.hc.Do(req)
		if err != nil {
			last = err
			if ctx.Err() != nil {
				return last
			}
			continue
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			last = err
			continue
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			last = fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
			continue
		}
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(data))
		}
		a.mu.Lock()
		a.cur = i
		a.mu.Unlock()
		if out != nil && len(data) > 0 {
			return json.Unmarshal(data, out)
		}
		return nil
	}
	return last
}

// heartbeat is what a real agent sends: every assigned member running with
// its figures, and the host's figures.
func (a *simAgent) heartbeatRequest(now time.Time) api.HeartbeatRequest {
	a.mu.Lock()
	as := a.assigned
	a.mu.Unlock()
	req := api.HeartbeatRequest{HostID: a.id, Members: make([]api.MemberStatus, 0, len(as)),
		Stats: &api.HostReport{CollectedAt: now,
			CPU:    &api.HostCPU{Percent: 12.5, CPUs: 32},
			Memory: &api.HostMemory{TotalBytes: 64 << 30, UsedBytes: 20 << 30, FreeBytes: 30 << 30, AvailableBytes: 40 << 30},
			Swap:   &api.HostSwap{TotalBytes: 4 << 30, UsedBytes: 0, FreeBytes: 4 << 30},
			Load:   &api.HostLoad{Load1: 1.5, Load5: 1.2, Load15: 1.1},
			Disk:   &api.HostDisk{Path: "/var/lib/cacheplane", TotalBytes: 500 << 30, UsedBytes: 100 << 30, FreeBytes: 400 << 30}}}
	for _, m := range as {
		ms := api.MemberStatus{MemberID: m.MemberID, AddonID: m.AddonID, Role: m.Role, State: api.MemberRunning,
			Pid: 4242, StartedAt: a.started, SpecHash: "0123456789abcdef",
			Stats: &api.MemberReport{CollectedAt: now, CgroupPath: "/sys/fs/cgroup/cacheplane/" + m.MemberID, CgroupVersion: 2,
				PID: 4242, StartedAt: a.started,
				CPU:    &api.MemberCPU{UsageNanos: uint64(now.Sub(a.started)), Percent: 0.7},
				Memory: &api.MemberMemory{CurrentBytes: 30 << 20, UsageBytes: 32 << 20, HighestBytes: 40 << 20, HighestSource: "kernel", LimitBytes: 256 << 20, FreeBytes: 226 << 20},
				Swap:   &api.MemberSwap{Accounted: true, LimitBytes: 256 << 20, FreeBytes: 256 << 20},
				Disk:   &api.DataSize{Dir: "/var/lib/cacheplane/members/" + m.MemberID, RDBBytes: 12 << 20, TotalBytes: 12 << 20}}}
		if m.Role == api.RoleRedis {
			// One master per addon, as the agents of a new business addon
			// start it (its first redis member), the others replicas.
			ms.RedisRole = "slave"
			if m.ReplicaOf == "" && strings.HasSuffix(m.MemberID, "redis-0") {
				ms.RedisRole = "master"
			}
			ms.ReplOffset = 123456
		}
		req.Members = append(req.Members, ms)
	}
	return req
}

// pingServer answers PING (and +OK to anything else: AUTH, CLIENT
// SETINFO; HELLO is refused, so clients fall back to RESP2) on an
// entrypoint until a minute after its first client, what the provision's
// health gate needs of a member nobody else runs.
func pingServer(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return
	}
	var once sync.Once
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		once.Do(func() { time.AfterFunc(time.Minute, func() { ln.Close() }) })
		go func(c net.Conn) {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			for {
				args, err := readRESP(r)
				if err != nil {
					return
				}
				reply := "+OK\r\n"
				switch strings.ToUpper(args[0]) {
				case "PING":
					reply = "+PONG\r\n"
				case "HELLO":
					reply = "-ERR unknown command 'HELLO'\r\n"
				}
				if _, err := io.WriteString(c, reply); err != nil {
					return
				}
			}
		}(c)
	}
}

func readRESP(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n <= 0 {
		return nil, fmt.Errorf("bad array %q", line)
	}
	out := make([]string, 0, n)
	for range n {
		h, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l, err := strconv.Atoi(strings.TrimRight(h, "\r\n")[1:])
		if err != nil {
			return nil, err
		}
		buf := make([]byte, l+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		out = append(out, string(buf[:l]))
	}
	return out, nil
}

// run is the agent's three loops: the assignments watch, the heartbeat
// (latency into lat), the liveness signal.
func (a *simAgent) run(ctx context.Context, hb time.Duration, lat *latencies, watches *atomic.Int64) {
	go func() {
		watches.Add(1)
		defer watches.Add(-1)
		backoff := 100 * time.Millisecond // as the agent's watch loop
		for ctx.Err() == nil {
			var out api.Assignments
			a.mu.Lock()
			q := url.Values{"host": {a.id}, "index": {strconv.FormatUint(a.index, 10)}, "wait": {"30s"}}
			a.mu.Unlock()
			if err := a.call(ctx, http.MethodGet, "/v1/agent/assignments?"+q.Encode(), nil, &out); err != nil {
				if !sleepCtx(ctx, backoff/2+rand.N(backoff/2)) {
					return
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			backoff = 100 * time.Millisecond
			a.mu.Lock()
			a.assigned, a.index = out.Assignments, out.Index
			var listen []string
			for _, m := range out.Assignments {
				if m.Role == api.RoleHAProxy {
					ep := net.JoinHostPort(m.Address, strconv.Itoa(m.Port))
					if !a.pinged[ep] {
						a.pinged[ep] = true
						listen = append(listen, ep)
					}
				}
			}
			a.mu.Unlock()
			for _, ep := range listen {
				go pingServer(ep)
			}
		}
	}()
	go func() {
		if !sleepCtx(ctx, time.Duration(rand.Int64N(int64(hb)))) {
			return
		}
		tk := time.NewTicker(hb)
		defer tk.Stop()
		for {
			if !a.stopped.Load() {
				_ = a.call(ctx, http.MethodPost, "/v1/agent/alive", api.AliveRequest{HostID: a.id}, nil)
				req := a.heartbeatRequest(time.Now())
				t0 := time.Now()
				err := a.call(ctx, http.MethodPost, "/v1/agent/heartbeat", req, nil)
				if ctx.Err() != nil {
					return
				}
				lat.add(time.Since(t0), err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
}

// latencies collects request latencies while recording is on.
type latencies struct {
	mu    sync.Mutex
	on    bool
	d     []time.Duration
	errs  int
	first error
}

func (l *latencies) add(d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.on {
		return
	}
	if err != nil {
		l.errs++
		if l.first == nil {
			l.first = err
		}
		return
	}
	l.d = append(l.d, d)
}

func (l *latencies) start() {
	l.mu.Lock()
	l.on, l.d, l.errs, l.first = true, nil, 0, nil
	l.mu.Unlock()
}

func (l *latencies) stop() (n, errs int, p50, p99 time.Duration, first error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.on = false
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	if len(l.d) == 0 {
		return 0, l.errs, 0, 0, l.first
	}
	pct := func(p float64) time.Duration { return l.d[min(len(l.d)-1, int(float64(len(l.d))*p))] }
	return len(l.d), l.errs, pct(0.5), pct(0.99), l.first
}

// ---------------------------------------------------------------------------
// One fleet size

func runScale(t *testing.T, hosts, addons, business int, hb, measure time.Duration) scaleResult {
	r := scaleResult{Hosts: hosts, Addons: addons, Business: business, Heartbeat: hb}
	// Liveness at the heartbeat's pace (not every 250 ms: 40,000 requests/s
	// at 10,000 hosts), so silence is judged over several intervals; the
	// members of simulated hosts answer no probe, so the probe is off.
	downAfter := 4 * hb
	level := envString("CACHEPLANE_SCALE_LOG_LEVEL", "warn")
	args := []string{"--host-down-after", downAfter.String(), "--host-suspect-after", "0", "--heal-after", "10s", "--log-level", level}
	if raftTimeouts != "" {
		args = append(args, "--config", raftConfig(t, raftTimeouts))
	}
	ids, ips := []string{"s1", "s2", "s3"}, []string{IP1, IP2, IP3}
	cs := make([]*Coordinator, 3)
	cs[0] = StartCoordinator(t, ids[0], ips[0], CoordinatorOpts{Bootstrap: true, ExtraArgs: args, LogLevel: level})
	WaitForLeader(t, startTimeout, cs[0])
	for i := 1; i < 3; i++ {
		cs[i] = StartCoordinator(t, ids[i], ips[i], CoordinatorOpts{ExtraArgs: args, LogLevel: level})
		if res := cs[i].Join(cs[0]); res.Code != 0 {
			t.Fatalf("join %s: %s", cs[i].ID, res)
		}
	}
	WaitForVoters(t, startTimeout, 3, cs...)
	leader := WaitForLeader(t, startTimeout, cs...)
	t.Logf("cluster up, leader %s", leader.ID)

	// One admin client per socket (a client per call would keep a
	// connection per call open).
	admin := []*api.Client{cs[0].Client(), cs[1].Client(), cs[2].Client()}

	// 1. A join token per host through the admin sockets.
	tokens := make([]api.TokenResponse, hosts)
	t0 := time.Now()
	parallel(t, hosts, 16, func(i int) error {
		cl := admin[i%3]
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var err error
		tokens[i], err = cl.Token(ctx, api.TokenRequest{Kind: api.TokenAgent, Name: simHostID(i), TTL: api.Duration(time.Hour)})
		return err
	})
	r.TokensPerSec = float64(hosts) / time.Since(t0).Seconds()
	t.Logf("%d tokens: %.0f/s", hosts, r.TokensPerSec)

	// 2. Each host joins (its own key, the token, a certificate) in its
	// simulator process; 3. registers, and starts heartbeating at once.
	peers := []string{cs[0].HTTPAddr, cs[1].HTTPAddr, cs[2].HTTPAddr}
	perAgent := 2
	if simHTTP2 {
		perAgent = 1
	}
	k := simProcs(t, hosts, addons, perAgent)
	fleet := startSimFleet(t, k, hosts, RootOf(t).Dir)
	t.Logf("%d simulator processes", k)
	workers := (32 + k - 1) / k // 32 requests at once in all, as in one process
	t0 = time.Now()
	if _, err := fleet.all(func(p *simProc) simReq {
		req := simReq{Op: "join", Hosts: p.hosts, Leader: leader.HTTPAddr, Peers: peers, Workers: workers}
		for _, i := range p.hosts {
			req.Tokens = append(req.Tokens, tokens[i].Token)
		}
		return req
	}); err != nil {
		t.Fatal(err)
	}
	r.JoinsPerSec = float64(hosts) / time.Since(t0).Seconds()
	t.Logf("%d joins (key, CSR, certificate): %.0f/s", hosts, r.JoinsPerSec)

	t0 = time.Now()
	if _, err := fleet.all(func(*simProc) simReq { return simReq{Op: "register", Workers: workers, HB: hb} }); err != nil {
		t.Fatal(err)
	}
	r.RegistersPerSec = float64(hosts) / time.Since(t0).Seconds()
	t.Logf("%d registrations: %.0f/s", hosts, r.RegistersPerSec)

	// 4. Place the addons (business ones first: a host loss heals them).
	t0 = time.Now()
	parallel(t, addons, 32, func(i int) error {
		plan := scalePlan
		if i < business {
			plan = scaleHA
		}
		cl := admin[i%3]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, err := cl.AddonCreate(ctx, api.AddonCreateRequest{App: fmt.Sprintf("scale-%06d", i), Type: api.AddonType, Plan: plan,
			RequestID: fmt.Sprintf("scale-%d-%06d", os.Getpid(), i)})
		return err
	})
	t.Logf("%d addons-add in %s", addons, time.Since(t0).Round(time.Second))
	deadline := time.Now().Add(time.Duration(addons/20+300) * time.Second)
	for {
		running, err := countRunning(admin[1], admin[2])
		if err == nil {
			r.AddonsRunning = running
			t.Logf("%d/%d addons running after %s", running, addons, time.Since(t0).Round(time.Second))
			if running >= addons {
				break
			}
		}
		if time.Now().After(deadline) {
			r.Notes = append(r.Notes, fmt.Sprintf("only %d of %d addons running after %s", r.AddonsRunning, addons, time.Since(t0).Round(time.Second)))
			break
		}
		time.Sleep(10 * time.Second)
	}
	r.PlaceSecs = time.Since(t0).Seconds()

	// 5. Steady phase: heartbeats, watches, CPU and RSS; admin writes on top
	// in its second half.
	leader = WaitForLeader(t, startTimeout, cs...)
	var follower *Coordinator
	for _, c := range cs {
		if c != leader {
			follower = c
			break
		}
	}
	r.Watches, _, r.HBBytes = fleet.status(t)
	fleet.latStart(t)
	cpu0 := cpuTimes(t, []*Coordinator{leader, follower})
	w0 := time.Now()
	time.Sleep(measure / 2)
	cpu1 := cpuTimes(t, []*Coordinator{leader, follower})
	el := time.Since(w0)
	_, r.SimFDs, _ = fleet.status(t) // every simulator process's open files
	r.LeaderFDs = openFiles(leader.Pid())
	r.LeaderCPU = 100 * (cpu1[leader.ID] - cpu0[leader.ID]).Seconds() / el.Seconds()
	r.FollowerCPU = 100 * (cpu1[follower.ID] - cpu0[follower.ID]).Seconds() / el.Seconds()
	// 6. Host loss (before the admin writes: the provisions they start
	// would queue ahead of the healing): a host holding a business
	// member goes silent.
	hbN, hbE, hbP50, hbP99, _ := fleet.latStop(t)
	healing := map[string]bool{} // addons with a replace operation under way
	if business > 0 {
		r.HostLossToReplace, r.HostLossNote = hostLoss(t, leader, fleet, healing)
		t.Logf("host loss → replace operations: %s %s", r.HostLossToReplace, r.HostLossNote)
		if strings.HasPrefix(r.HostLossNote, "(no") {
			r.Notes = append(r.Notes, "host loss: "+r.HostLossNote)
		}
	}
	r.AdminWrites, r.AdminErrors, r.AdminRate, r.AdminP50, r.AdminP99 = adminWrites(t, cs, 16, measure/2)
	// 6b. Another host lost now, with the provisions the admin writes
	// started still queued: healing must not wait behind them.
	if business > 0 {
		r.QueuedProvisions = activeProvisions(t, leader)
		r.HostLossQueued, r.HostLossQueuedNote = hostLoss(t, leader, fleet, healing)
		if strings.HasPrefix(r.HostLossQueuedNote, "(no") {
			r.Notes = append(r.Notes, "host loss with provisions queued: "+r.HostLossQueuedNote)
		}
		t.Logf("host loss with %d provisions queued → replace operations: %s %s (provisions still queued then: %d)",
			r.QueuedProvisions, r.HostLossQueued, r.HostLossQueuedNote, activeProvisions(t, leader))
	}
	r.HBCount, r.HBErrors, r.HBP50, r.HBP99 = hbN, hbE, hbP50, hbP99
	r.LeaderRSS, r.FollowerRSS = rss(t, leader), rss(t, follower)
	t.Logf("steady: leader %s CPU %.0f%% RSS %d MiB, follower CPU %.0f%% RSS %d MiB; heartbeats %d (errors %d) p50 %s p99 %s; admin writes %.0f/s p50 %s p99 %s",
		leader.ID, r.LeaderCPU, r.LeaderRSS>>20, r.FollowerCPU, r.FollowerRSS>>20, r.HBCount, r.HBErrors, r.HBP50, r.HBP99, r.AdminRate, r.AdminP50, r.AdminP99)

	// 7. Snapshot size, and a follower's restart (restore, catch up).
	r.SnapshotBytes = newestSnapshot(follower.DataDir)
	follower.Kill()
	t0 = time.Now()
	follower.Restart()
	WaitForApplied(t, 5*time.Minute, follower, LeaderAppliedIndex(t, leader))
	r.RestoreCatchUp = time.Since(t0)
	if s := newestSnapshot(follower.DataDir); s > r.SnapshotBytes {
		r.SnapshotBytes = s
	}
	t.Logf("snapshot %d bytes; follower restart to caught up: %s", r.SnapshotBytes, r.RestoreCatchUp)

	for _, c := range cs {
		if b, err := os.ReadFile(c.LogPath); err == nil {
			r.StepDowns += bytes.Count(b, []byte("failed to contact quorum of nodes, stepping down"))
		}
	}
	t.Logf("leaders that stepped down under load: %d", r.StepDowns)

	// 8. Leader failover at this size: kill -9, a new leader serving, then
	// heartbeats answered again.
	var rest []*Coordinator
	for _, c := range cs {
		if c != leader {
			rest = append(rest, c)
		}
	}
	fleet.latStart(t)
	leader.Kill()
	t0 = time.Now()
	WaitForLeader(t, 3*time.Minute, rest...)
	r.Failover = time.Since(t0)
	for time.Since(t0) < 3*time.Minute && fleet.latCount(t) <= hosts/20 {
		time.Sleep(200 * time.Millisecond)
	}
	r.FailoverHeartbeatsOK = time.Since(t0)
	fleet.latStop(t)
	t.Logf("leader failover: new leader in %s, 5%% of heartbeats answered again after %s", r.Failover, r.FailoverHeartbeatsOK)
	keepScaleLogs(t, hosts, cs)
	return r
}

// keepScaleLogs copies the coordinators' and simulators' logs into
// CACHEPLANE_SCALE_KEEP/hosts=N (unset: kept only when the test fails,
// with the data dirs).
func keepScaleLogs(t *testing.T, hosts int, cs []*Coordinator) {
	dir := os.Getenv("CACHEPLANE_SCALE_KEEP")
	if dir == "" {
		return
	}
	dst := filepath.Join(dir, fmt.Sprintf("hosts=%d", hosts))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Logf("keep logs: %v", err)
		return
	}
	files, _ := filepath.Glob(filepath.Join(RootOf(t).Dir, "simulator-*.log"))
	for _, c := range cs {
		files = append(files, c.LogPath)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, filepath.Base(filepath.Dir(f))+"-"+filepath.Base(f)), b, 0o644)
		}
		if err != nil {
			t.Logf("keep logs: %v", err)
		}
	}
	t.Logf("logs kept in %s", dst)
}

// raftTimeouts is CACHEPLANE_SCALE_RAFT ("" : the defaults).
var raftTimeouts = os.Getenv("CACHEPLANE_SCALE_RAFT")

// raftConfig writes a coordinator config file holding the Raft timeouts
// of spec (HEARTBEAT/ELECTION/LEASE) and returns its path.
func raftConfig(t *testing.T, spec string) string {
	parts := strings.Split(spec, "/")
	if len(parts) != 3 {
		t.Fatalf("CACHEPLANE_SCALE_RAFT=%q: want HEARTBEAT/ELECTION/LEASE, e.g. 2s/2s/1s", spec)
	}
	for _, p := range parts {
		if _, err := time.ParseDuration(p); err != nil {
			t.Fatalf("CACHEPLANE_SCALE_RAFT=%q: %v", spec, err)
		}
	}
	path := filepath.Join(t.TempDir(), "raft.json")
	body := fmt.Sprintf(`{"heartbeat_timeout": %q, "election_timeout": %q, "leader_lease_timeout": %q}`, parts[0], parts[1], parts[2])
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func simHostID(i int) string { return fmt.Sprintf("sim-%05d", i) }

// parallel runs f(0..n-1) on k workers (forEach: each call tried up to
// 8 times) and fails the test on an error that persists.
func parallel(t *testing.T, n, k int, f func(i int) error) {
	t.Helper()
	if err := forEach(n, k, f); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// countRunning counts running addons from a follower's own state.
func countRunning(cls ...*api.Client) (int, error) {
	var last error
	for _, c := range cls {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		list, err := c.Addons(ctx, "", true)
		cancel()
		if err != nil {
			last = err
			continue
		}
		n := 0
		for _, a := range list {
			if a.Status == api.AddonRunning {
				n++
			}
		}
		return n, nil
	}
	return 0, last
}

// adminWrites runs k clients of addons-add over every socket for d.
func adminWrites(t *testing.T, cs []*Coordinator, k int, d time.Duration) (n, errs int, rate float64, p50, p99 time.Duration) {
	var lat latencies
	lat.start()
	var seq atomic.Int64
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range k {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cl := cs[i%len(cs)].Client()
			cl.RetryFor = 0
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t0 := time.Now()
				_, err := cl.AddonCreate(ctx, api.AddonCreateRequest{App: fmt.Sprintf("adm-%d-%07d", os.Getpid(), seq.Add(1)), Type: api.AddonType, Plan: scalePlan})
				cancel()
				lat.add(time.Since(t0), err)
			}
		}(i)
	}
	wg.Wait()
	n, errs, p50, p99, first := lat.stop()
	if first != nil {
		t.Logf("admin writes: %d errors, first: %v", errs, first)
	}
	return n, errs, float64(n) / time.Since(start).Seconds(), p50, p99
}

// hostLoss silences the first host that runs a business addon's sentinel
// and no member of an addon in busy (agent gone: no heartbeat, no
// liveness) and measures until the leader lists a replace-member operation
// for a member of that host. It adds the host's business addons to busy:
// their replace operations never finish here (a simulated agent answers no
// sentinel), and an addon has one operation at a time.
func hostLoss(t *testing.T, leader *Coordinator, fleet *simFleet, busy map[string]bool) (time.Duration, string) {
	id, lost, healed := fleet.lose(t, busy)
	if id == "" {
		return 0, "(no host runs a business addon's member)"
	}
	members := map[string]bool{}
	for _, m := range lost {
		members[m] = true
	}
	for _, a := range healed {
		busy[a] = true
	}
	t0 := time.Now()
	// Only those addons' operations, twice a second: listing every
	// operation four times a second was a sixth of the leader's CPU.
	cl := leader.Client()
	for time.Since(t0) < 3*time.Minute {
		for _, id := range healed {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			ops, err := cl.Operations(ctx, "", id)
			cancel()
			if err != nil {
				continue
			}
			for _, o := range ops {
				if o.Kind == api.OpReplaceMember && members[o.Target] && o.CreatedAt.After(t0.Add(-time.Second)) {
					return time.Since(t0), fmt.Sprintf("(host %s silent; first replace %s of %s)", id, o.Target, o.AddonID)
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return time.Since(t0), "(no replace operation within 3 min)"
}

// activeProvisions counts the provision operations not finished (the
// leader's list).
func activeProvisions(t *testing.T, leader *Coordinator) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ops, err := leader.Client().Operations(ctx, "", "")
	if err != nil {
		t.Logf("operations: %v", err)
		return -1
	}
	n := 0
	for _, o := range ops {
		if o.Kind == api.OpProvision && !o.State.Finished() {
			n++
		}
	}
	return n
}

// openFiles is how many file descriptors process pid holds.
func openFiles(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// newestSnapshot is the size of the newest snapshot's state in dir.
func newestSnapshot(dir string) int64 {
	matches, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	var newest os.FileInfo
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err == nil && (newest == nil || fi.ModTime().After(newest.ModTime())) {
			newest = fi
		}
	}
	if newest == nil {
		return 0
	}
	return newest.Size()
}

// rss is the process's resident set size.
func rss(t *testing.T, c *Coordinator) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid()))
	if err != nil {
		t.Fatalf("%s: status: %v", c.ID, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func scaleSection(rs []scaleResult, measure time.Duration) string {
	var b strings.Builder
	fmt.Fprintln(&b, scaleStart)
	fmt.Fprintln(&b, "## Scale: one coordinator cluster, thousands of simulated agents")
	fmt.Fprintln(&b)
	fmt.Fprintf(&b, "Measured %s on %s.  \n", time.Now().UTC().Format("2006-01-02 15:04 MST"), machine())
	fmt.Fprintf(&b, "Commit %s, %s.  \n", gitCommit(), runtime.Version())
	proto := "HTTP/2 (the watch and the heartbeats on one connection, as the agent's client)"
	if !simHTTP2 {
		proto = "HTTP/1.1 (`CACHEPLANE_SCALE_HTTP2=0`: a connection for the watch, one for the heartbeats)"
	}
	fmt.Fprintf(&b, "Simulated agents speak %s.  \n", proto)
	if raftTimeouts != "" {
		fmt.Fprintf(&b, "Raft timeouts (heartbeat/election/leader lease): %s (`CACHEPLANE_SCALE_RAFT`; default 500ms/500ms/250ms).  \n", raftTimeouts)
	}
	fmt.Fprintln(&b, "Command: `make scale` (`go test -tags 'scale bench' -run '^TestScale$' -v ./e2e/`; sizes from `CACHEPLANE_SCALE_HOSTS`, e.g. `CACHEPLANE_SCALE_HOSTS=1000,3000 make scale`).")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| hosts | addons (business) | heartbeat every | tokens/s | joins/s | registers/s | placed in | heartbeat bytes | heartbeats p50 / p99 (errors) | watches open | leader CPU / RSS | follower CPU / RSS | admin writes/s p50 / p99 | host loss → replace | host loss → replace, provisions queued | open files: leader / simulator (per agent) | snapshot | follower restart → caught up | failover: leader / heartbeats back | leader step-downs under load |")
	fmt.Fprintln(&b, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rs {
		if r.Watches == 0 && r.HBCount == 0 {
			continue // not run: its note says why
		}
		fmt.Fprintf(&b, "| %d | %d/%d running (%d) | %s | %.0f | %.0f | %.0f | %.0f s | %d | %s / %s (%d of %d) | %d | %.0f%% / %d MiB | %.0f%% / %d MiB | %.0f: %s / %s (%d errors) | %s | %s with %d queued | %d / %d (%.2f / %.2f) | %.1f MiB | %s | %s / %s | %d |\n",
			r.Hosts, r.AddonsRunning, r.Addons, r.Business, r.Heartbeat, r.TokensPerSec, r.JoinsPerSec, r.RegistersPerSec, r.PlaceSecs,
			r.HBBytes, ms(r.HBP50), ms(r.HBP99), r.HBErrors, r.HBCount+r.HBErrors, r.Watches,
			r.LeaderCPU, r.LeaderRSS>>20, r.FollowerCPU, r.FollowerRSS>>20,
			r.AdminRate, ms(r.AdminP50), ms(r.AdminP99), r.AdminErrors,
			r.HostLossToReplace.Round(100*time.Millisecond), r.HostLossQueued.Round(100*time.Millisecond), r.QueuedProvisions,
			r.LeaderFDs, r.SimFDs, float64(r.LeaderFDs)/float64(r.Hosts), float64(r.SimFDs)/float64(r.Hosts), float64(r.SnapshotBytes)/(1<<20), r.RestoreCatchUp.Round(100*time.Millisecond),
			r.Failover.Round(100*time.Millisecond), r.FailoverHeartbeatsOK.Round(100*time.Millisecond), r.StepDowns)
	}
	fmt.Fprintln(&b)
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %d hosts: %s\n", r.Hosts, n)
		}
	}
	fmt.Fprintf(&b, "Steady phase %s: CPU and heartbeat latency over its first half (heartbeats, liveness and watches only), then a host loss, then admin writes (16 clients, `addons-add`) for the second half, then a second host loss with the provisions they started still queued (silence to the first replace operation listed: `--host-down-after` 4 heartbeats + `--heal-after` 10 s of it is by design); RSS at its end.\n", measure)
	fmt.Fprintln(&b, scaleEnd)
	return b.String()
}
