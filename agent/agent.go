package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/identity"
	"github.com/cacheplane/cacheplane/internal/sdnotify"
	"github.com/cacheplane/cacheplane/packaging"
	"github.com/cacheplane/cacheplane/sysstats"
)

// Timeouts of the agent's own calls.
const (
	registerTimeout  = 10 * time.Second
	heartbeatTimeout = 5 * time.Second
	// assignmentsSlack is added to the blocking query's wait for the
	// call's deadline.
	assignmentsSlack = 15 * time.Second
	// reconcileRetry is how soon a reconcile that could not finish (the
	// runtime did not answer, a member waits for its restart) runs again.
	reconcileRetry = time.Second
	// logLines is how many of a member's last log lines a failure carries.
	logLines = 10
	// healthyAfter: a member that ran this long before exiting starts its
	// restart backoff again from RestartDelay.
	healthyAfter = time.Minute
)

// Options are the agent's collaborators; the zero value uses the real ones.
type Options struct {
	// Logger; a JSON logger on stderr at cfg.LogLevel if nil.
	Logger *slog.Logger
	// Runtime runs the members; nil connects the containerd driver from
	// cfg (and Close closes it).
	Runtime runtime.Runtime
	// Stats is where host and member figures are read from; zero means
	// the host's own /proc and /sys.
	Stats sysstats.Config
	// Watchdog is systemd's (cmd/agent: sdnotify.NewWatchdog); nil
	// outside systemd. The heartbeat and alive loops ping it, so a stuck
	// loop stops the pings and systemd restarts the agent (never a member).
	Watchdog *sdnotify.Watchdog
}

// Agent is one host's agent. Run drives it until its context ends; members
// keep running when it stops.
type Agent struct {
	wd *sdnotify.Watchdog
	// attached is closed after the first reconcile pass: every running
	// member assigned here is re-attached (READY for systemd).
	attached     chan struct{}
	attachedOnce sync.Once
	cfg          Config
	log          *slog.Logger
	rt           runtime.Runtime
	ownRT        bool
	coord        *coordinators
	holder       *identity.Holder
	hostStats    *sysstats.Host
	statsCfg     sysstats.Config
	probes       *prober
	live         *liveness      // liveness.go
	fleet        *fleetAuth     // fleetauth.go: the fleet credential applied live
	routes       *routes        // route.go: the entrypoints' routers
	jobs         *jobRunner     // jobs.go: backup and restore jobs
	mtls         memberTLSState // membertls.go
	metrics      *agentMetrics

	reconcileNow chan struct{}
	heartbeatNow chan struct{}

	mu       sync.Mutex
	have     bool // an assignments answer has arrived
	index    uint64
	assigned map[string]api.Assignment
	failures map[string]*failure
	// starting holds the members whose (re)start is in progress: their
	// container may exist without a running task for a moment, which is
	// not a failure.
	starting    map[string]bool
	memberStats map[string]*memberStats // status.go
	lastHost    *api.HostReport         // status.go

	runOnce   sync.Once
	closeOnce sync.Once
}

// failure is why an assigned member is not running, as the agent saw it.
type failure struct {
	reason string
	lines  []string
	at     time.Time
	// attempts counts consecutive failed runs; the restart waits
	// RestartDelay × 2^(attempts-1).
	attempts    int
	nextRestart time.Time
	// pid is the run that died (0 when it never started), so the same
	// death is not counted twice.
	pid int
	// resolved: the member answered since; not reported any more, but
	// attempts is kept until it has run healthyAfter.
	resolved bool
	// assignment is the digest of the assignment that failed: a new one
	// is tried at once, without waiting for nextRestart.
	assignment string
}

// NewLogger returns the daemon's JSON logger at level.
func NewLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// New validates cfg, prepares the data dir and connects the runtime. It
// does not contact the coordinator: Run does.
func New(ctx context.Context, cfg Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = NewLogger(os.Stderr, cfg.LogLevel)
	}
	base := log.With("host", cfg.HostID)
	log = base.With("component", "agent")
	for _, d := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, "members"), filepath.Join(cfg.DataDir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("agent: data dir: %w", err)
		}
	}
	holder := &identity.Holder{}
	a := &Agent{
		wd:           opts.Watchdog,
		attached:     make(chan struct{}),
		cfg:          cfg,
		log:          log,
		rt:           opts.Runtime,
		holder:       holder,
		coord:        newCoordinators(cfg.Coordinators, holder, base.With("component", "coordinator-client")),
		statsCfg:     opts.Stats,
		hostStats:    sysstats.NewHost(opts.Stats, sysstats.HostOptions{DiskPath: cfg.DataDir, Logger: base.With("component", "sysstats")}),
		probes:       newProber(),
		live:         newLiveness(),
		fleet:        newFleetAuth(),
		routes:       newRoutes(),
		reconcileNow: make(chan struct{}, 1),
		heartbeatNow: make(chan struct{}, 1),
		assigned:     map[string]api.Assignment{},
		failures:     map[string]*failure{},
		starting:     map[string]bool{},
		memberStats:  map[string]*memberStats{},
	}
	a.metrics = newAgentMetrics(a)
	a.jobs = newJobRunner(filepath.Join(cfg.DataDir, jobsDirName), cfg.HostID, base.With("component", "jobs"), a.runJob, a.coord.reportJob)
	a.jobs.before = a.cleanScratch
	if a.rt == nil {
		rt, err := runtime.NewContainerd(ctx, runtime.Config{
			Socket:    cfg.ContainerdSocket,
			Namespace: cfg.Namespace,
			ImageDir:  cfg.ImageDir,
			LogDir:    filepath.Join(cfg.DataDir, "logs"),
			Logger:    base,
		})
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.rt, a.ownRT = rt, true
	}
	return a, nil
}

// Runtime is the runtime the agent drives.
func (a *Agent) Runtime() runtime.Runtime { return a.rt }

// memberDir is where member id's config and data live.
func (a *Agent) memberDir(id string) string {
	return filepath.Join(a.cfg.DataDir, "members", id)
}

// Run registers the host, then watches assignments, reconciles, heartbeats
// and follows member exits until ctx ends. It returns nil then; members keep
// running. Run may be called once.
func (a *Agent) Run(ctx context.Context) error {
	ran := false
	a.runOnce.Do(func() { ran = true })
	if !ran {
		return errors.New("agent: Run called twice")
	}
	a.log.Info("agent starting", "address", a.cfg.Address, "memory_mb", a.cfg.MemoryMB,
		"labels", a.cfg.labelList(), "coordinators", a.cfg.Coordinators, "namespace", a.cfg.Namespace, "data_dir", a.cfg.DataDir)
	if a.cfg.ClusterToken != "" || a.cfg.ClusterTokenFile != "" {
		a.log.Warn("cluster_token is ignored: the agent authenticates with its certificate (join_token on its first start)")
	}
	if err := a.ensureIdentity(ctx); err != nil {
		a.log.Error("cannot join the fleet", "err", err)
		return err
	}
	var wg sync.WaitGroup
	loop := func(name string, f func(context.Context)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx)
			a.log.Debug("loop stopped", "loop", name)
		}()
	}
	// Exits are drained from the start: a full channel holds up the
	// runtime's watcher.
	loop("exits", a.exitsLoop)
	loop("metrics", a.metricsLoop)
	if a.register(ctx) {
		loop("heartbeat", a.heartbeatLoop)
		loop("renew", a.renewLoop)
		loop("alive", a.aliveLoop)
		loop("ready", func(ctx context.Context) {
			select {
			case <-ctx.Done():
			case <-a.attached:
				if err := sdnotify.Ready("registered as " + a.cfg.HostID + "; members re-attached"); err != nil {
					a.log.Warn("cannot tell systemd the agent is ready", "err", err)
				}
			}
		})
		loop("assignments", a.watchLoop)
		loop("jobs", a.jobs.loop)
		// Import missing images before the first reconcile, so the first
		// member placed on a fresh host does not pay for it.
		a.preloadImages(ctx)
		loop("reconcile", a.reconcileLoop)
		loop("failover-guard", a.guardLoop)
	}
	<-ctx.Done()
	wg.Wait()
	a.log.Info("agent stopped; members keep running")
	return nil
}

// Close releases the runtime (if the agent connected it) and the probes'
// connections. It never stops a member. Call it after Run returned.
func (a *Agent) Close() error {
	var err error
	a.closeOnce.Do(func() {
		a.probes.closeAll()
		a.live.closeLookers()
		a.forgetMemberTLS() // membertls.go
		if a.ownRT {
			err = a.rt.Close()
		}
	})
	return err
}

// host is what the agent registers.
func (a *Agent) host() api.Host {
	return api.Host{ID: a.cfg.HostID, Address: a.cfg.Address, PublicAddress: a.cfg.PublicAddress, MemoryMB: a.cfg.MemoryMB, Labels: a.cfg.Labels}
}

// register announces the host, retrying with backoff until a coordinator
// accepts it or ctx ends (false).
func (a *Agent) register(ctx context.Context) bool {
	backoff := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, registerTimeout)
		h, err := a.coord.register(rctx, a.host())
		cancel()
		if err == nil {
			a.log.Info("host registered", "state", h.State)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		a.log.Warn("register failed; retrying", "err", err, "backoff", backoff)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// watchLoop runs the blocking assignments query and hands every answer to
// the reconcile loop.
func (a *Agent) watchLoop(ctx context.Context) {
	backoff := 100 * time.Millisecond
	wait := time.Duration(a.cfg.AssignmentsWait)
	for ctx.Err() == nil {
		a.mu.Lock()
		index := a.index
		a.mu.Unlock()
		qctx, cancel := context.WithTimeout(ctx, wait+assignmentsSlack)
		out, err := a.coord.assignments(qctx, a.cfg.HostID, index, wait)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, api.ErrNotFound) { // the coordinator forgot this host
				a.log.Warn("host unknown to the coordinator; registering again", "err", err)
				if !a.register(ctx) {
					return
				}
				continue
			}
			a.log.Warn("assignments query failed; retrying", "err", err, "backoff", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		a.setAssignments(out)
	}
}

// setAssignments records an answer and wakes the reconcile loop.
func (a *Agent) setAssignments(out api.Assignments) {
	m := make(map[string]api.Assignment, len(out.Assignments))
	for _, as := range out.Assignments {
		m[as.MemberID] = as
	}
	a.mu.Lock()
	changed := !a.have || out.Index != a.index
	a.have = true
	if out.Index < a.index {
		// A coordinator restored from an older snapshot, or a new
		// cluster: start the index over rather than wait for it to pass
		// the old one.
		a.log.Warn("assignments index went back", "old", a.index, "new", out.Index)
	}
	a.index = out.Index
	a.assigned = m
	a.mu.Unlock()
	a.setMemberTLS(out.Assignments) // membertls.go: before any client of these members is made
	a.jobs.offer(out.Jobs)
	if changed {
		a.log.Debug("assignments", "index", out.Index, "members", len(m))
	}
	poke(a.reconcileNow)
}

// exitsLoop turns the runtime's exit reports into failures, reports them at
// once and schedules the restart.
func (a *Agent) exitsLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-a.rt.Exits():
			if !ok {
				return
			}
			lines := a.exitLogLines(ctx, e.ID)
			a.mu.Lock()
			as, assigned := a.assigned[e.ID]
			if assigned {
				a.recordFailureLocked(as, exitReason(e.ExitCode, e.At), lines, e.Pid)
			}
			a.mu.Unlock()
			a.log.Warn("member exited", "member", e.ID, "pid", e.Pid, "exit_code", e.ExitCode, "assigned", assigned)
			poke(a.heartbeatNow)
			poke(a.reconcileNow)
		}
	}
}

// exitLogWait bounds how long exitLogLines waits for a log to show.
const exitLogWait = 300 * time.Millisecond

// exitLogLines are the last lines member id wrote before it exited. A
// process that dies at its start (a bad config) may be reported exited a
// moment before the containerd shim has copied its complaint into the log
// file: an empty log is read again for up to exitLogWait, so the failure
// says why.
func (a *Agent) exitLogLines(ctx context.Context, id string) []string {
	deadline := time.Now().Add(exitLogWait)
	for {
		lines, _ := a.rt.LastLogLines(id, logLines)
		if len(lines) > 0 || time.Now().After(deadline) {
			return lines
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return lines
		case <-t.C:
		}
	}
}

// exitReason describes an exit status as a shell would.
func exitReason(code int, at time.Time) string {
	s := fmt.Sprintf("exited with code %d", code)
	if code > 128 && code < 128+65 {
		s = fmt.Sprintf("killed by signal %d (exit code %d)", code-128, code)
	} else if code < 0 {
		s = "exited (status unknown)"
	}
	if !at.IsZero() {
		s += " at " + at.UTC().Format(time.RFC3339)
	}
	return s
}

// recordFailureLocked notes that member as failed for reason. pid is the run
// that died (0: it never started); a death already recorded is ignored.
func (a *Agent) recordFailureLocked(as api.Assignment, reason string, lines []string, pid int) {
	f := a.failures[as.MemberID]
	now := time.Now()
	if f != nil && pid != 0 && f.pid == pid && !f.resolved {
		return
	}
	if f == nil {
		f = &failure{}
		a.failures[as.MemberID] = f
	}
	if f.resolved && now.Sub(f.at) > healthyAfter {
		f.attempts = 0
	}
	f.attempts++
	f.reason = reason
	f.lines = scrub(lines, as.Password, as.FleetPassword)
	f.at = now
	f.pid = pid
	f.resolved = false
	f.assignment = hashOf(as)
	delay := time.Duration(a.cfg.RestartDelay)
	for i := 1; i < f.attempts && delay < time.Duration(a.cfg.MaxRestartDelay); i++ {
		delay *= 2
	}
	f.nextRestart = now.Add(min(delay, time.Duration(a.cfg.MaxRestartDelay)))
}

// poke wakes a loop without blocking.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// preloadImages imports every image of the image directory that containerd
// does not have yet. A failure is logged: the member that needs the image
// reports it when it is assigned.
func (a *Agent) preloadImages(ctx context.Context) {
	if a.cfg.ImageDir == "" {
		return
	}
	ix, err := packaging.ReadIndex(a.cfg.ImageDir)
	if err != nil {
		a.log.Warn("no local images to preload", "dir", a.cfg.ImageDir, "err", err)
		return
	}
	start := time.Now()
	for _, e := range ix.Images {
		if ctx.Err() != nil {
			return
		}
		if err := a.rt.EnsureImage(ctx, e.Ref); err != nil {
			a.log.Warn("preload image", "ref", e.Ref, "err", err)
		}
	}
	a.log.Info("images ready", "count", len(ix.Images), "took", time.Since(start).Round(time.Millisecond).String())
}
