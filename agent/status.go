package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
	"github.com/cacheplane/cacheplane/sysstats"
)

// Probe timeouts: a member that does not answer within them is "starting"
// (or failed), never waited for.
const (
	probeDialTimeout = 500 * time.Millisecond
	probeTimeout     = 2 * time.Second
	// probeBufferSize is each probe connection's read and write buffer.
	probeBufferSize = 4 << 10
)

// prober keeps one small go-redis client per member, so a probe every
// heartbeat reuses its connection.
type prober struct {
	mu      sync.Mutex
	clients map[string]*probeClient
}

type probeClient struct {
	key string // addr + password
	c   *redis.Client
}

func newProber() *prober { return &prober{clients: map[string]*probeClient{}} }

// client returns the redis member's client for addr and password (the
// fleet credential; empty: no AUTH), replacing one made for another address
// or password.
func (p *prober) client(id, addr, password string) *redis.Client {
	return p.get(id, addr, password, redisctl.MemberOptions)
}

// sentinel is client for a sentinel (redisctl.SentinelOptions: its own
// user, the same fleet credential).
func (p *prober) sentinel(id, addr, password string) *redis.Client {
	return p.get(id, addr, password, redisctl.SentinelOptions)
}

func (p *prober) get(id, addr, password string, options func(addr, password string) *redis.Options) *redis.Client {
	key := addr + "|" + password // as in the client's options; compared, never logged
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc, ok := p.clients[id]; ok {
		if pc.key == key {
			return pc.c
		}
		_ = pc.c.Close()
	}
	o := options(addr, password)
	// A shorter dial bound than redisctl's, and two connections: probes,
	// metrics and live settings changes share the client.
	o.DialTimeout, o.PoolSize = probeDialTimeout, 2
	// Small buffers and no pipeline pool of its own: the replies are a few
	// lines (INFO, CONFIG GET), and go-redis's defaults (32 KiB per
	// buffer, plus a pipeline connection with 128 KiB buffers for
	// GetIdentity's pipeline) held ~0.3 MiB of heap per member.
	o.ReadBufferSize, o.WriteBufferSize = probeBufferSize, probeBufferSize
	o.PipelinePoolSize = -1
	c := redis.NewClient(o)
	p.clients[id] = &probeClient{key: key, c: c}
	return c
}

func (p *prober) close(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pc, ok := p.clients[id]; ok {
		_ = pc.c.Close()
		delete(p.clients, id)
	}
}

func (p *prober) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, pc := range p.clients {
		_ = pc.c.Close()
		delete(p.clients, id)
	}
}

// probeResult is what asking a member itself found.
type probeResult struct {
	err        error
	redisRole  string
	replOffset int64
	// identity is a serving redis's identity settings (CONFIG GET), read
	// with INFO replication when the look had its PONG.
	identity map[string]string
}

// probe asks the member whether it answers: redis PING (with AUTH) and
// INFO replication, sentinel PING, haproxy a TCP connect. answered says
// the liveness look of this heartbeat got that answer already on its own
// fresh connection (a PONG, an accepted connect): only what the look does
// not ask (a redis's INFO replication) is asked then.
func (a *Agent) probe(ctx context.Context, p memberPlan, answered bool) probeResult {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if answered && p.as.Role == api.RoleRedis {
		c := a.probes.client(p.as.MemberID, p.probe, p.as.FleetPassword.Reveal())
		repl, id, err := redisctl.ReplicationAndIdentity(ctx, c)
		if err != nil {
			a.probes.close(p.as.MemberID) // a pooled connection of an earlier process: dial afresh next time
			return probeResult{err: fmt.Errorf("%s: %w", p.probe, err)}
		}
		return probeResult{redisRole: repl.Role, replOffset: repl.Offset, identity: id}
	}
	if answered {
		return probeResult{}
	}
	switch p.as.Role {
	case api.RoleHAProxy:
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", p.probe)
		if err != nil {
			return probeResult{err: fmt.Errorf("connect %s: %w", p.probe, err)}
		}
		_ = c.Close()
		return probeResult{}
	case api.RoleSentinel:
		c := a.probes.sentinel(p.as.MemberID, p.probe, p.as.FleetPassword.Reveal())
		if err := c.Ping(ctx).Err(); err != nil {
			a.probes.close(p.as.MemberID) // next probe dials afresh, not on go-redis's 1 s redial backoff
			return probeResult{err: fmt.Errorf("ping %s: %w", p.probe, err)}
		}
		return probeResult{}
	}
	c := a.probes.client(p.as.MemberID, p.probe, p.as.FleetPassword.Reveal())
	if err := c.Ping(ctx).Err(); err != nil {
		// A member that does not answer yet is usually starting: dial afresh
		// next time rather than wait out go-redis's redial backoff (1 s after
		// two failed dials), so "running" is reported within a probe period.
		a.probes.close(p.as.MemberID)
		return probeResult{err: fmt.Errorf("ping %s: %w", p.probe, err)}
	}
	repl, err := redisctl.ClientReplication(ctx, c)
	if err != nil {
		return probeResult{err: fmt.Errorf("%s: %w", p.probe, err)}
	}
	return probeResult{redisRole: repl.Role, replOffset: repl.Offset}
}

// settleInterval is how often the agent reports while a member is pending or
// starting: the coordinator's health gate hears of "running" within it
// instead of a whole heartbeat interval.
// settleFor bounds it for a member that keeps starting (a long load).
const (
	settleInterval = 100 * time.Millisecond
	settleFor      = 10 * time.Second
)

// heartbeatLoop reports every interval, at once when poked (after a
// reconcile or a member's exit), and every settleInterval while a member is
// on its way up.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	interval := time.Duration(a.cfg.HeartbeatInterval)
	t := time.NewTimer(interval)
	defer t.Stop()
	var failing time.Time // since when heartbeats fail; zero when they work
	var lastWarn time.Time
	wd := a.wd.Register("heartbeat", 0)
	defer wd.Stop()
	for {
		wd.Ping() // the loop turns, whether the coordinator answers or not
		settling, err := a.sendHeartbeat(ctx)
		switch {
		case ctx.Err() != nil:
		case err == nil && !failing.IsZero():
			a.log.Info("heartbeats work again", "failed_for", time.Since(failing).Round(time.Millisecond))
			failing = time.Time{}
		case err != nil:
			if failing.IsZero() {
				failing = time.Now()
			}
			if time.Since(lastWarn) > 30*time.Second {
				a.log.Warn("heartbeat failed", "err", err, "failing_for", time.Since(failing).Round(time.Millisecond))
				lastWarn = time.Now()
			}
		}
		next := interval
		if settling {
			next = min(interval, settleInterval)
		}
		// On the instants the routers and the alive loop tick on
		// (untilTick, route.go): the idle agent wakes once for all.
		t.Reset(untilTick(time.Now(), next, tickPhase))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.heartbeatNow:
		}
	}
}

// sendHeartbeat reports once. settling is true while a member is pending or
// starting.
func (a *Agent) sendHeartbeat(ctx context.Context) (settling bool, err error) {
	hctx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
	defer cancel()
	req := a.Report(hctx)
	a.metrics.observe(req, time.Now())
	settling = a.live.frozen() // liveness.go: act on a freeze ~1 s after it, not a heartbeat later
	for _, m := range req.Members {
		if m.State == api.MemberPending || (m.State == api.MemberStarting && time.Since(m.StartedAt) < settleFor) {
			settling = true
		}
		if m.State == api.MemberUnresponsive { // liveness.go: the reconcile loop acts on it
			settling = true
		}
	}
	_, err = a.coord.heartbeat(hctx, req)
	if err != nil && ctx.Err() == nil && errors.Is(err, api.ErrNotFound) {
		a.log.Warn("host unknown to the coordinator; registering again", "err", err)
		a.register(ctx)
	}
	return settling, err
}

// Report is what the agent's next heartbeat carries: every assigned member
// (every member in the runtime before the first assignments arrive) with
// its state, the host's figures and the members nobody assigned.
func (a *Agent) Report(ctx context.Context) api.HeartbeatRequest {
	a.mu.Lock()
	have := a.have
	assigned := make([]api.Assignment, 0, len(a.assigned))
	for _, as := range a.assigned {
		assigned = append(assigned, as)
	}
	a.mu.Unlock()

	req := api.HeartbeatRequest{HostID: a.cfg.HostID, Members: []api.MemberStatus{}}
	sts, listErr := a.rt.List(ctx)
	sts = withoutScratch(sts) // jobs.go: a drill's server is not a member
	inRuntime := map[string]runtime.Status{}
	for _, st := range sts {
		inRuntime[st.ID] = st
	}
	if !have {
		for _, st := range sts {
			assigned = append(assigned, api.Assignment{MemberID: st.ID, AddonID: st.Addon, Role: api.Role(st.Role)})
		}
	} else {
		isAssigned := map[string]bool{}
		for _, as := range assigned {
			isAssigned[as.MemberID] = true
		}
		for _, st := range sts {
			if !isAssigned[st.ID] {
				req.Unknown = append(req.Unknown, st.ID)
			}
		}
		sort.Strings(req.Unknown)
	}
	sort.Slice(assigned, func(i, j int) bool { return assigned[i].MemberID < assigned[j].MemberID })

	out := make([]api.MemberStatus, len(assigned))
	var wg sync.WaitGroup
	for i, as := range assigned {
		var stp *runtime.Status
		if st, ok := inRuntime[as.MemberID]; ok {
			stp = &st
		} else if listErr == nil {
			stp = &runtime.Status{ID: as.MemberID, State: runtime.StateMissing}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = a.memberStatus(ctx, as, have, stp, listErr)
		}()
	}
	wg.Wait()
	req.Members = out

	req.Stats = a.hostFigures(ctx)
	return req
}

// memberStatus derives one member's state. st is its container (nil when
// the runtime could not be asked: listErr).
func (a *Agent) memberStatus(ctx context.Context, as api.Assignment, have bool, st *runtime.Status, listErr error) api.MemberStatus {
	ms := api.MemberStatus{MemberID: as.MemberID, AddonID: as.AddonID, Role: as.Role}
	startingNow := false
	if have && st != nil && st.State == runtime.StateStopped {
		st, startingNow = a.recheckStopped(ctx, as.MemberID, st)
	}
	if st != nil {
		ms.SpecHash = st.SpecHash
		if st.State == runtime.StateRunning {
			ms.Pid = st.Pid
			ms.StartedAt = st.StartedAt
		}
	}
	if !have { // no assignment yet to probe with: report the runtime's view
		switch {
		case st == nil:
			ms.State, ms.Detail = api.MemberPending, "runtime unavailable: "+errString(listErr)
		case st.State == runtime.StateRunning:
			ms.State = api.MemberStarting
			ms.Detail = "waiting for the coordinator's assignments"
		default:
			ms.State, ms.Detail = api.MemberFailed, exitReason(st.ExitCode, st.ExitedAt)
		}
		return ms
	}

	a.mu.Lock()
	var f failure
	if fp := a.failures[as.MemberID]; fp != nil && !fp.resolved {
		f = *fp
	}
	inStart := a.starting[as.MemberID] || startingNow
	a.mu.Unlock()
	if state, detail, ok := stoppedStatus(as, st); ok { // stopped.go
		ms.State, ms.Detail = state, detail
		return ms
	}
	if inStart && (st == nil || st.State != runtime.StateRunning) {
		ms.State, ms.Detail = api.MemberStarting, "being started (image, container, task)"
		return ms
	}

	p, planErr := a.cachedPlan(as)
	var pr probeResult
	probed := false
	var lv liveVerdict // liveness.go: what the member serves
	if planErr == nil && (st == nil || st.State == runtime.StateRunning) {
		if st != nil && !inStart && st.SpecHash == p.spec.SpecHash { // (another hash: being replaced)
			lv = a.look(ctx, p, st, false)
		}
		if lv.state == "" {
			pr, probed = a.probe(ctx, p, lv.answered), true
		} else { // busy, frozen or refusing: a probe would only wait
			pr, probed = probeResult{err: errors.New(lv.detail)}, true
		}
	}
	if takenDown(f, st, time.Now()) {
		// The run the failure was recorded for (taken down by the agent:
		// liveness.go) still shows in the list while it exits; a frozen
		// process killed a moment ago can even accept a connection from
		// its listen backlog. It answers for nothing.
		pr, probed = probeResult{err: errors.New("the run taken down is exiting")}, true
	}
	ms.State, ms.Detail = deriveState(st, f, probed, pr.err)
	if st != nil && st.State == runtime.StateStopped && f.reason == "" {
		lines, _ := a.rt.LastLogLines(as.MemberID, logLines)
		ms.Detail = failureDetail(exitReason(st.ExitCode, st.ExitedAt), scrub(lines, as.Password, as.FleetPassword))
	}
	if planErr != nil && f.reason == "" {
		ms.State, ms.Detail = api.MemberFailed, "render config: "+planErr.Error()
	}
	if st == nil && ms.State != api.MemberRunning {
		ms.Detail = strings.TrimPrefix(ms.Detail+"; runtime unavailable: "+errString(listErr), "; ")
	}
	if r := a.heldReason(as.MemberID); r != "" && ms.State != api.MemberRunning { // safety.go
		ms.State, ms.Detail = api.MemberPending, r
	}
	if ms.State == api.MemberRunning {
		ms.RedisRole, ms.ReplOffset = pr.redisRole, pr.replOffset
		a.mu.Lock()
		if fp := a.failures[as.MemberID]; fp != nil && !takenDown(*fp, st, time.Now()) {
			fp.resolved = true
		}
		a.mu.Unlock()
	}
	if lv.state != "" && st != nil && st.State == runtime.StateRunning { // liveness.go
		ms.State, ms.Detail = lv.state, lv.detail
		if lv.state == api.MemberBusy { // alive: its last known role stands
			ms.RedisRole, ms.ReplOffset = a.live.lastKnown(as.MemberID, st.Pid)
		}
	}
	if ms.State == api.MemberRunning && lv.probe && as.Role == api.RoleRedis {
		a.live.noteRole(as.MemberID, st.Pid, pr.redisRole, pr.replOffset)
		note, listenMoved := a.checkIdentity(p, pr.redisRole, pr.identity)
		if note != "" {
			ms.Detail = note
		}
		if listenMoved {
			// The look answered on its kept connection; a moved bind or
			// port is seen on a new one (liveness.go).
			if lv = a.look(ctx, p, st, true); lv.state != "" {
				ms.State, ms.Detail = lv.state, lv.detail
			}
		}
	}
	if st != nil && st.State == runtime.StateRunning {
		ms.Stats = a.memberFigures(ctx, as, p, st)
	}
	return ms
}

// recheckStopped looks again at a container the list showed without a
// running process, when no start of it is under way now: a start that was
// under way when the list was made (its container exists before its task
// runs) has finished since, and reporting the stale view would be a failure
// that never was. A start still under way is reported as such by the
// caller (starting); only a container still without a process after this
// second look is a failure.
func (a *Agent) recheckStopped(ctx context.Context, id string, st *runtime.Status) (_ *runtime.Status, starting bool) {
	a.mu.Lock()
	inStart := a.starting[id]
	a.mu.Unlock()
	if inStart {
		return st, true
	}
	fresh, err := a.rt.Inspect(ctx, id)
	if err != nil {
		return st, false
	}
	return &fresh, false
}

// takenDown says whether failure f was recorded, less than takenDownFor
// before now, for the very run st shows (pure): the agent took that
// process down (or saw it die) and the list still shows it, so nothing it
// answers clears the failure. Past the bound (a kill that failed), an
// answer counts again.
func takenDown(f failure, st *runtime.Status, now time.Time) bool {
	return f.reason != "" && f.pid != 0 && st != nil && st.State == runtime.StateRunning && st.Pid == f.pid &&
		now.Sub(f.at) < takenDownFor
}

// takenDownFor bounds takenDown: a process killed exits within it.
const takenDownFor = 10 * time.Second

// deriveState is the state rule, a pure function of what the runtime says
// (st; nil = unknown), the failure the agent recorded (zero: none) and the
// probe (probed, probeErr):
//
//   - process running and answering: running;
//   - process running, not answering: starting, or failed while a recorded
//     failure (an exit, a failed start) has not been cleared by an answer;
//   - no process (exited, or no container) with a recorded failure: failed
//     with its reason and last log lines;
//   - an exited container without a recorded failure: failed (the caller
//     fills the exit status and log lines);
//   - no container and no failure: pending (not started yet);
//   - runtime unknown: running if the member answers, else pending.
func deriveState(st *runtime.Status, f failure, probed bool, probeErr error) (string, string) {
	failed := f.reason != ""
	switch {
	case st == nil || st.State == runtime.StateRunning:
		if probed && probeErr == nil {
			return api.MemberRunning, ""
		}
		why := "not answering yet"
		if probeErr != nil {
			why += ": " + probeErr.Error()
		}
		if failed {
			return api.MemberFailed, failureDetail(f.reason, f.lines) + "\nrestarted, " + why
		}
		if st == nil {
			return api.MemberPending, why
		}
		return api.MemberStarting, why
	case failed:
		d := failureDetail(f.reason, f.lines)
		if !f.nextRestart.IsZero() {
			d += "\nnext attempt at " + f.nextRestart.UTC().Format(time.RFC3339)
		}
		return api.MemberFailed, d
	case st.State == runtime.StateStopped:
		return api.MemberFailed, "exited"
	default:
		return api.MemberPending, "not started yet"
	}
}

// failureDetail is a reason followed by the member's last log lines.
func failureDetail(reason string, lines []string) string {
	if len(lines) == 0 {
		return reason
	}
	return reason + "\nlast log lines:\n" + strings.Join(lines, "\n")
}

// memberStats is what the heartbeat keeps per member: its figures'
// collector and last figures, and its plan for the assignment it was last
// made from.
type memberStats struct {
	collector *sysstats.Member
	last      *api.MemberReport

	planned bool
	planFor api.Assignment
	plan    memberPlan
	planErr error
}

// memberLocked returns member id's entry, made on first use (a.mu held).
func (a *Agent) memberLocked(id string) *memberStats {
	m := a.memberStats[id]
	if m == nil {
		m = &memberStats{collector: sysstats.NewMember(a.statsCfg, nil)}
		a.memberStats[id] = m
	}
	return m
}

// cachedPlan is planMember(as), made again only when the assignment
// changed: rendering every member's config on every heartbeat cost more
// than the rest of a look at an idle member.
func (a *Agent) cachedPlan(as api.Assignment) (memberPlan, error) {
	a.mu.Lock()
	m := a.memberLocked(as.MemberID)
	if m.planned && reflect.DeepEqual(m.planFor, as) {
		p, err := m.plan, m.planErr
		a.mu.Unlock()
		return p, err
	}
	a.mu.Unlock()
	p, err := a.planMember(as)
	a.mu.Lock()
	m.planned, m.planFor, m.plan, m.planErr = true, as, p, err
	a.mu.Unlock()
	return p, err
}

// memberFigures are a running member's figures (cgroup of its containerd
// task, data dir size for redis): collected at most every stats_interval
// (and at once for a new run of the member); the heartbeats in between
// carry the last ones, so liveness costs no cgroup or data dir reads.
func (a *Agent) memberFigures(ctx context.Context, as api.Assignment, p memberPlan, st *runtime.Status) *api.MemberReport {
	a.mu.Lock()
	m := a.memberLocked(as.MemberID)
	last := m.last
	a.mu.Unlock()
	if last != nil && last.PID == st.Pid && last.StartedAt.Equal(st.StartedAt) &&
		time.Since(last.CollectedAt) < time.Duration(a.cfg.StatsInterval) {
		return last
	}
	t := sysstats.MemberTarget{
		// containerd's default cgroup path: /<namespace>/<container id>.
		CgroupPath: "/" + a.cfg.Namespace + "/" + as.MemberID,
		PID:        st.Pid,
		StartedAt:  st.StartedAt,
	}
	if as.Role == api.RoleRedis {
		t.DataDir = p.dir
	}
	r := m.collector.Collect(ctx, t)
	a.mu.Lock()
	m.last = &r
	a.mu.Unlock()
	return &r
}

// hostFigures are the host's figures, collected at most every
// stats_interval.
func (a *Agent) hostFigures(ctx context.Context) *api.HostReport {
	a.mu.Lock()
	last := a.lastHost
	a.mu.Unlock()
	if last != nil && time.Since(last.CollectedAt) < time.Duration(a.cfg.StatsInterval) {
		return last
	}
	r := a.hostStats.Collect(ctx)
	a.mu.Lock()
	a.lastHost = &r
	a.mu.Unlock()
	return &r
}

func errString(err error) string {
	if err == nil {
		return "unknown"
	}
	return err.Error()
}
