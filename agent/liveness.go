package agent

// A member's state is what it serves, not "its container runs".
//
// Every heartbeat looks at each running member from outside (look): is its
// process frozen (state T in /proc/<pid>/stat: SIGSTOP, a tracer), does it
// answer PING on its look connection within busyAfter? The look connection
// (redisctl.Looker) is a new connection to its own address (AUTH + PING)
// every freshLookEvery, when the kept one broke, when CONFIG GET shows bind
// or port moved, and before acting; in between, the connection that last
// answered. judgeLiveness, a pure function of that look and what earlier
// looks found, says:
//
//   - accepted, no answer within busyAfter (or -BUSY from a long script):
//     busy. Alive, never acted on: a slow command is not a death.
//   - frozen: busy for its first unresponsiveAfter, then unresponsive.
//   - its address refuses connections (a CONFIG SET bind or port moved it)
//     after it served once, or after startGrace: unresponsive.
//   - anything else: no opinion (deriveState decides: running, starting).
//
// An unresponsive member is acted on by the reconcile loop, after a fresh
// look says it still is: a drifted bind or port is first put back through a
// connection that still works (the probe client's); failing that, a
// business primary is failed over (SENTINEL FAILOVER) and its task killed
// with SIGKILL, so its connections reset and the restart path (safety.go:
// it comes back as a replica of the primary the sentinels name) brings it
// back with its rendered config; a replica, sentinel or haproxy is killed
// and restarted. A member whose data is the only copy (a starter, or a
// business primary whose failover Sentinel refused) is stopped with
// SIGCONT + SIGTERM instead, so redis saves its dataset on the way out.
//
// Identity: a serving redis is asked (CONFIG GET) for bind, port, dir and
// its announce address and port; a drift is put back with CONFIG SET by
// the reconcile loop and logged. A business replica following another
// primary than the one a majority of the sentinels name, for longer than
// replicaDriftFor, is pointed back at it (REPLICAOF).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/redisctl"
)

// Liveness figures.
const (
	// lookDialTimeout bounds the fresh connect to a member's own address.
	lookDialTimeout = 500 * time.Millisecond
	// busyAfter: a member that accepted the connection and has not
	// answered PING by then is busy. It bounds how long a heartbeat waits
	// for a busy member (heartbeats every 250 ms must not miss a 1 s
	// host-down-after).
	busyAfter = 500 * time.Millisecond
	// unresponsiveAfter: a member frozen, or refusing connections, this
	// long is acted on.
	unresponsiveAfter = time.Second
	// startGrace: a process that never served on its address is still
	// starting while it refuses connections for this long.
	startGrace = 30 * time.Second
	// replicaDriftFor: a business replica following another primary than
	// the sentinels' for this long is pointed back (Sentinel re-points
	// replicas itself within ~1 s of a failover; this is past it).
	replicaDriftFor = 5 * time.Second
	// replicaCheckEvery bounds how often a replica's master is compared
	// with the sentinels' answer.
	replicaCheckEvery = 5 * time.Second
	// identityRetry bounds how often a drift that could not be put back
	// (e.g. a protected config) is tried again.
	identityRetry = 10 * time.Second
	// stopGrace is the SIGTERM grace of a member stopped to keep its data
	// (a starter): redis saves its dataset before it exits.
	stopGrace = 30 * time.Second
	// freshLookEvery bounds the age of the connection a look answers from
	// (redisctl.Looker): between fresh connections a look is a PING on the
	// kept one (a HAProxy's accepted connect stands for it).
	freshLookEvery = 10 * time.Second
)

// liveObs is one look at a running member from outside.
type liveObs struct {
	// frozen: /proc/<pid>/stat says T or t (stopped or traced).
	frozen bool
	// answer is the fresh connection's (zero when frozen: not asked).
	answer redisctl.Answer
	// addr is the member's own address, for details.
	addr string
}

// liveTrack is what earlier looks at one process found.
type liveTrack struct {
	pid int
	// served: this process accepted (and for RESP members answered PING
	// on) its own address at least once.
	served       bool
	frozenSince  time.Time
	refusedSince time.Time
	// role and offset are the last redis role and offset it reported.
	role   string
	offset int64
}

// liveVerdict is judgeLiveness's answer.
type liveVerdict struct {
	// state is api.MemberBusy, api.MemberUnresponsive, or "" (no opinion:
	// deriveState decides).
	state  string
	detail string
	// act: unresponsive for unresponsiveAfter; the reconcile loop acts.
	act bool
	// probe: the member answered PING on a fresh connection; the full
	// probe (INFO, identity) may follow.
	probe bool
	// answered: the look itself got the answer a probe would ask for (a
	// TCP member accepted, a RESP member answered PING): the probe need
	// not ask again (status.go).
	answered bool
}

// judgeLiveness is the liveness rule, a pure function of one look (o), what
// earlier looks at the same process found (tr; a zero or other-pid track is
// a new process), the process start time and now. It returns the verdict
// and the updated track.
func judgeLiveness(o liveObs, tr liveTrack, pid int, startedAt, now time.Time) (liveVerdict, liveTrack) {
	if tr.pid != pid {
		tr = liveTrack{pid: pid}
	}
	if o.frozen {
		tr.refusedSince = time.Time{}
		if tr.frozenSince.IsZero() {
			tr.frozenSince = now
		}
		dur := now.Sub(tr.frozenSince)
		if dur >= unresponsiveAfter {
			return liveVerdict{state: api.MemberUnresponsive, act: true,
				detail: fmt.Sprintf("process frozen (state T: stopped or traced) for %s", round(dur))}, tr
		}
		return liveVerdict{state: api.MemberBusy,
			detail: fmt.Sprintf("process frozen (state T) for %s: not answering; restarted if still frozen after %s%s", round(dur), unresponsiveAfter, lastRole(tr))}, tr
	}
	tr.frozenSince = time.Time{}
	a := o.answer
	if !a.Accepted() {
		if tr.refusedSince.IsZero() {
			tr.refusedSince = now
		}
		if !tr.served && now.Sub(startedAt) < startGrace {
			return liveVerdict{}, tr // not listening yet: starting
		}
		dur := now.Sub(tr.refusedSince)
		return liveVerdict{state: api.MemberUnresponsive, act: dur >= unresponsiveAfter,
			detail: fmt.Sprintf("process alive but its address %s refuses connections for %s (%v)", o.addr, round(dur), a.ConnErr)}, tr
	}
	tr.refusedSince = time.Time{}
	switch a.Reply {
	case redisctl.ReplyNotAsked, redisctl.ReplyPong:
		tr.served = true
		return liveVerdict{probe: a.Reply == redisctl.ReplyPong, answered: true}, tr
	case redisctl.ReplySilent:
		tr.served = true // it listens: whatever it runs, it got this far
		return liveVerdict{state: api.MemberBusy,
			detail: fmt.Sprintf("busy: accepts connections on %s but did not answer within %s (a long command or script)%s", o.addr, busyAfter, lastRole(tr))}, tr
	case redisctl.ReplyBusy:
		tr.served = true
		return liveVerdict{state: api.MemberBusy,
			detail: fmt.Sprintf("busy: answers %q (a script or function past busy-reply-threshold)%s", a.Text, lastRole(tr))}, tr
	}
	return liveVerdict{}, tr // -LOADING, an auth error...: deriveState says starting or failed
}

func lastRole(tr liveTrack) string {
	if tr.role == "" {
		return ""
	}
	return "; last role " + tr.role
}

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }

// stopHow is how an unresponsive member is taken down.
type stopHow int

const (
	// stopKill: SIGKILL, at once; its connections reset.
	stopKill stopHow = iota
	// stopSave: SIGCONT then SIGTERM with stopGrace: redis saves its
	// dataset first (its data is the only copy).
	stopSave
)

// unresponsiveAction is the rule for an unresponsive member (pure):
// whether to ask the sentinels for a failover first, and how to stop it.
// primary says the sentinels (or, when they cannot be asked, its last
// role) make it the primary; failoverErr is the failover request's
// outcome when one was made.
func unresponsiveAction(role api.Role, business, primary bool, failoverErr error) (failover bool, how stopHow) {
	if role != api.RoleRedis {
		return false, stopKill
	}
	if !business {
		return false, stopSave // a starter: its data is the only copy
	}
	if !primary {
		return false, stopKill // a replica resyncs from the primary
	}
	if failoverErr != nil {
		return true, stopSave // no replica took over: keep the data
	}
	return true, stopKill
}

// replicaOfDrift is the replicaof rule (pure): the primary a business
// replica must follow when it follows another one than sentinelPrimary,
// the address a majority of the sentinels name. A master (role) is not
// this rule's business, nor is a member the sentinels name themselves.
func replicaOfDrift(r redisctl.Replication, sentinelPrimary, self string) (string, bool) {
	if r.Role != redisctl.RoleReplica || sentinelPrimary == "" || sentinelPrimary == self {
		return "", false
	}
	if r.Master() == sentinelPrimary {
		return "", false
	}
	return sentinelPrimary, true
}

// parseProcStat returns the state letter of a /proc/<pid>/stat line: the
// field after the command name in parentheses (which may hold spaces and
// parentheses itself).
func parseProcStat(b []byte) (byte, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("unexpected stat line %q", b)
	}
	return b[i+2], nil
}

// ---------------------------------------------------------------------------
// The agent's side: state, the look, and the actions.

// liveness is the agent's per-member liveness bookkeeping.
type liveness struct {
	mu    sync.Mutex
	track map[string]liveTrack
	// act holds the members the reconcile loop must act on: pid → reason.
	act map[string]liveAct
	// identity: members whose identity drifted (or must be compared with
	// the sentinels); the reconcile loop checks them.
	identity map[string]bool
	// nextIdentity: no identity attempt on the member before it.
	nextIdentity map[string]time.Time
	// nextReplicaCheck: when a business replica's master is next compared
	// with the sentinels' primary.
	nextReplicaCheck map[string]time.Time
	// replicaDrift: since when a replica follows another primary than the
	// sentinels' (and which one they name).
	replicaDrift map[string]driftMark
	// lookers: each member's look connection (redisctl.Looker), for the
	// process, address and password it was made for.
	lookers map[string]*memberLooker
}

type memberLooker struct {
	pid  int
	l    *redisctl.Looker
	stat *procStat
}

func (e *memberLooker) close() {
	e.l.Close()
	e.stat.close()
}

// procStat is a process's /proc/<pid>/stat kept open: its state letter is
// one pread away (procfs makes the line again at each read from offset 0),
// and the descriptor names that process only — once it is gone, a read
// fails (ESRCH), even if its pid was given to another.
type procStat struct {
	mu   sync.Mutex
	path string
	fd   int // -1: not open
}

func newProcStat(path string) *procStat { return &procStat{path: path, fd: -1} }

// state reads the state letter, opening the file on first use.
func (p *procStat) state() (byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		fd, err := syscall.Open(p.path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return 0, &os.PathError{Op: "open", Path: p.path, Err: err}
		}
		p.fd = fd
	}
	var buf [128]byte // the state follows the command name: within 64 bytes
	n, err := syscall.Pread(p.fd, buf[:], 0)
	if err != nil {
		return 0, &os.PathError{Op: "read", Path: p.path, Err: err}
	}
	return parseProcStat(buf[:max(n, 0)])
}

func (p *procStat) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd >= 0 {
		_ = syscall.Close(p.fd)
		p.fd = -1
	}
}

type liveAct struct {
	pid    int
	reason string
}

type driftMark struct {
	want  string
	since time.Time
}

func newLiveness() *liveness {
	return &liveness{
		track: map[string]liveTrack{}, act: map[string]liveAct{}, identity: map[string]bool{},
		nextIdentity: map[string]time.Time{}, nextReplicaCheck: map[string]time.Time{}, replicaDrift: map[string]driftMark{},
		lookers: map[string]*memberLooker{},
	}
}

// looker returns member id's look connection and kept stat file for process
// pid (its stat file statPath) at addr with password, replacing (and
// closing) one made for another.
func (l *liveness) looker(id string, role api.Role, pid int, statPath, addr, password string) *memberLooker {
	l.mu.Lock()
	e := l.lookers[id]
	if e != nil && e.pid == pid && e.l.Addr == addr && e.l.Password == password {
		l.mu.Unlock()
		return e
	}
	n := &memberLooker{pid: pid, stat: newProcStat(statPath),
		l: redisctl.NewLooker(addr, password, role == api.RoleSentinel, role != api.RoleHAProxy, freshLookEvery)}
	l.lookers[id] = n
	l.mu.Unlock()
	if e != nil {
		e.close()
	}
	return n
}

// closeLookers closes every look connection (the agent's Close).
func (l *liveness) closeLookers() {
	l.mu.Lock()
	ls := l.lookers
	l.lookers = map[string]*memberLooker{}
	l.mu.Unlock()
	for _, e := range ls {
		e.close()
	}
}

// forget drops everything about member id (removed).
func (l *liveness) forget(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.lookers[id]; e != nil {
		go e.close() // not under l.mu: a look may hold it for busyAfter
		delete(l.lookers, id)
	}
	delete(l.track, id)
	delete(l.act, id)
	delete(l.identity, id)
	delete(l.nextIdentity, id)
	delete(l.nextReplicaCheck, id)
	delete(l.replicaDrift, id)
}

// noteRole records the redis role and offset a serving member reported.
func (l *liveness) noteRole(id string, pid int, role string, offset int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tr := l.track[id]
	if tr.pid != pid {
		return
	}
	tr.role, tr.offset = role, offset
	l.track[id] = tr
}

// frozen reports whether a member was seen frozen and not acted on yet:
// the heartbeat then reports every settleInterval, so the action comes
// about unresponsiveAfter after the freeze, not a heartbeat later.
func (l *liveness) frozen() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tr := range l.track {
		if !tr.frozenSince.IsZero() {
			return true
		}
	}
	return false
}

// lastKnown returns the last role and offset of member id's process pid.
func (l *liveness) lastKnown(id string, pid int) (string, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tr := l.track[id]
	if tr.pid != pid {
		return "", 0
	}
	return tr.role, tr.offset
}

// look observes member p's process st from outside (I/O: /proc and its
// look connection: a PING on the kept one, or a new one every
// freshLookEvery, when the kept one broke, or with mustFresh), judges it
// and records the verdict; when the member must be acted on it wakes the
// reconcile loop.
func (a *Agent) look(ctx context.Context, p memberPlan, st *runtime.Status, mustFresh bool) liveVerdict {
	o := liveObs{addr: p.probe}
	password := p.as.FleetPassword.Reveal()
	if p.as.Role == api.RoleHAProxy {
		password = "" // a TCP member: the connect only
	}
	e := a.live.looker(p.as.MemberID, p.as.Role, st.Pid, a.procStatPath(st.Pid), p.probe, password)
	if state, err := e.stat.state(); err == nil && (state == 'T' || state == 't') {
		o.frozen = true
	}
	if !o.frozen {
		o.answer, _ = e.l.Look(ctx, lookDialTimeout, busyAfter, mustFresh)
	}
	id := p.as.MemberID
	l := a.live
	l.mu.Lock()
	v, tr := judgeLiveness(o, l.track[id], st.Pid, st.StartedAt, time.Now())
	l.track[id] = tr
	was, pending := l.act[id]
	if v.act {
		l.act[id] = liveAct{pid: st.Pid, reason: v.detail}
	} else {
		delete(l.act, id)
	}
	l.mu.Unlock()
	if v.act && (!pending || was.pid != st.Pid) {
		a.log.Warn("member unresponsive: acting on it", "member", id, "addon", p.as.AddonID, "role", p.as.Role, "pid", st.Pid, "reason", v.detail)
		poke(a.reconcileNow)
	}
	return v
}

// procState reads the state letter of process pid.
func (a *Agent) procState(pid int) (byte, error) {
	if pid <= 0 {
		return 0, errors.New("no pid")
	}
	return readProcState(a.procStatPath(pid))
}

// procStatPath is process pid's stat file.
func (a *Agent) procStatPath(pid int) string {
	root := a.statsCfg.ProcRoot
	if root == "" {
		root = "/proc"
	}
	return filepath.Join(root, strconv.Itoa(pid), "stat")
}

// readProcState reads the state letter from a /proc/<pid>/stat file with
// three system calls (every member, every heartbeat): open, one read of
// the line's start — the state follows the command name, at most 16
// bytes, so it is within the first 64 — and close; os.ReadFile would add
// a stat, a second read and the poller's registration attempt.
func readProcState(path string) (byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	var buf [128]byte
	n, err := syscall.Read(fd, buf[:])
	if err != nil {
		return 0, &os.PathError{Op: "read", Path: path, Err: err}
	}
	return parseProcStat(buf[:max(n, 0)])
}

// identityOf is what member p's redis must answer to CONFIG GET.
func (a *Agent) identityOf(p memberPlan) redisctl.Identity {
	addr := p.as.Address
	if addr == "" {
		addr = a.cfg.Address
	}
	return redisctl.Identity{Bind: addr, Port: p.as.Port, Dir: p.dir, AnnounceIP: addr}
}

// checkIdentity compares a serving redis's identity settings (got, read by
// the heartbeat's probe; nil: not read) with its plan and, on a drift
// or when a business replica's master is due for a comparison with the
// sentinels, flags the member and wakes the reconcile loop. It returns a
// note for the report ("" when nothing drifted) and whether bind or port
// drifted (the member may refuse new connections on its address: the
// caller looks through a new one at once).
func (a *Agent) checkIdentity(p memberPlan, role string, got map[string]string) (note string, listenMoved bool) {
	id := p.as.MemberID
	flag := false
	if got != nil {
		if drifts := redisctl.IdentityDrift(a.identityOf(p), got); len(drifts) > 0 {
			names := make([]string, len(drifts))
			for i, d := range drifts {
				names[i] = d.String()
				listenMoved = listenMoved || d.Name == redisctl.ParamBind || d.Name == redisctl.ParamPort
			}
			note = "settings drifted, being put back: " + strings.Join(names, ", ")
			flag = true
		}
	}
	now := time.Now()
	l := a.live
	l.mu.Lock()
	if isBusinessRedis(p.as) && role == redisctl.RoleReplica && !now.Before(l.nextReplicaCheck[id]) {
		l.nextReplicaCheck[id] = now.Add(replicaCheckEvery)
		flag = true
	}
	if flag && now.Before(l.nextIdentity[id]) {
		flag = false // a restore failed a moment ago
	}
	if flag && !l.identity[id] {
		l.identity[id] = true
		l.mu.Unlock()
		poke(a.reconcileNow)
		return note, listenMoved
	}
	l.mu.Unlock()
	return note, listenMoved
}

// keepIdentity runs in the reconcile loop for a running redis member the
// heartbeat flagged: it puts drifted identity settings back with CONFIG SET
// (after an announce change, the replica's link is re-made so its primary
// and the sentinels learn the address) and points a business replica that
// follows another primary than the sentinels' back at theirs. It returns a
// retry delay while a replica's drift waits for replicaDriftFor.
func (a *Agent) keepIdentity(ctx context.Context, p memberPlan) time.Duration {
	id := p.as.MemberID
	l := a.live
	l.mu.Lock()
	due := l.identity[id]
	delete(l.identity, id)
	l.mu.Unlock()
	if !due {
		return 0
	}
	log := a.log.With("member", id, "addon", p.as.AddonID)
	ctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	c := a.probes.client(id, p.probe, p.as.FleetPassword.Reveal())
	failed := func(what string, err error) time.Duration {
		log.Warn("identity check", "step", what, "err", err)
		l.mu.Lock()
		l.nextIdentity[id] = time.Now().Add(identityRetry)
		l.mu.Unlock()
		return 0
	}
	got, err := redisctl.GetIdentity(ctx, c)
	if err != nil {
		return failed("config get", err)
	}
	repl, err := redisctl.ClientReplication(ctx, c)
	if err != nil {
		return failed("info replication", err)
	}
	if drifts := redisctl.IdentityDrift(a.identityOf(p), got); len(drifts) > 0 {
		done, err := redisctl.RestoreIdentity(ctx, c, drifts)
		for _, d := range done {
			log.Warn("identity setting restored", "param", d.Name, "was", d.Got, "now", d.Want)
		}
		if err != nil {
			return failed("config set", err)
		}
		if redisctl.AnnounceDrifted(done) && repl.Role == redisctl.RoleReplica {
			// The primary (and through it the sentinels) learns a
			// replica's announce address only when it connects.
			if err := redisctl.ResetMasterLink(ctx, c); err != nil {
				return failed("reset master link", err)
			}
			log.Info("replica link re-made so its primary learns the restored announce address")
		}
	}
	if !isBusinessRedis(p.as) || repl.Role != redisctl.RoleReplica {
		l.mu.Lock()
		delete(l.replicaDrift, id)
		l.mu.Unlock()
		return 0
	}
	primary, votes, err := redisctl.AskMajority(ctx, p.as.Sentinels, p.as.FleetPassword.Reveal(), p.as.MasterName)
	if err != nil {
		log.Debug("replicaof check: sentinels", "err", err)
		return 0
	}
	want, drift := replicaOfDrift(repl, primary, p.probe)
	now := time.Now()
	l.mu.Lock()
	mark, ok := l.replicaDrift[id]
	if !drift {
		delete(l.replicaDrift, id)
		l.mu.Unlock()
		return 0
	}
	if !ok || mark.want != want {
		mark = driftMark{want: want, since: now}
		l.replicaDrift[id] = mark
	}
	wait := replicaDriftFor - now.Sub(mark.since)
	if wait > 0 {
		l.identity[id] = true // look again when the wait is over
		l.mu.Unlock()
		return wait
	}
	delete(l.replicaDrift, id)
	l.mu.Unlock()
	if err := redisctl.ClientReplicaOf(ctx, c, want); err != nil {
		return failed("replicaof", err)
	}
	log.Warn("replica pointed back at the primary the sentinels name", "was_following", repl.Master(), "primary", want,
		"sentinels_agreeing", votes, "drifted_for", round(now.Sub(mark.since)))
	return 0
}

// actOnLiveness runs in the reconcile loop for a running member: when the
// heartbeat found it unresponsive long enough, it looks again and, if it
// still is, acts (see the file comment). done is true when the member was
// taken down (the caller returns retry).
func (a *Agent) actOnLiveness(ctx context.Context, p memberPlan, st *runtime.Status) (retry time.Duration, done bool) {
	id := p.as.MemberID
	l := a.live
	l.mu.Lock()
	act, ok := l.act[id]
	if ok && act.pid != st.Pid {
		delete(l.act, id)
		ok = false
	}
	l.mu.Unlock()
	if !ok {
		return 0, false
	}
	log := a.log.With("member", id, "addon", p.as.AddonID, "role", p.as.Role, "pid", st.Pid)

	// Observe, then act: a fresh look.
	if v := a.look(ctx, p, st, true); !v.act {
		log.Info("member serves again; nothing to do", "state", orRunning(v.state))
		return 0, false
	}
	// A moved bind or port, put back through a connection that still
	// works, needs no restart.
	if p.as.Role == api.RoleRedis {
		if state, _ := a.procState(st.Pid); state != 'T' && state != 't' && a.restoreListen(ctx, p, log) {
			l.mu.Lock()
			delete(l.act, id)
			l.mu.Unlock()
			return 0, false
		}
	}

	business := isBusinessRedis(p.as)
	primary := false
	if business {
		lastRole, _ := a.live.lastKnown(id, st.Pid)
		sctx, cancel := context.WithTimeout(ctx, 2*redisctl.SentinelTimeout)
		master, _, err := redisctl.AskMajority(sctx, p.as.Sentinels, p.as.FleetPassword.Reveal(), p.as.MasterName)
		cancel()
		primary = (err == nil && master == p.probe) || (err != nil && lastRole == redisctl.RoleMaster)
	}
	var failoverErr error
	if wantFailover, _ := unresponsiveAction(p.as.Role, business, primary, nil); wantFailover {
		failoverErr = a.askFailover(ctx, p.as)
		if failoverErr != nil {
			log.Warn("unresponsive primary: failover refused", "err", failoverErr)
		} else {
			log.Warn("unresponsive primary: failover requested", "reason", act.reason)
		}
	}
	_, how := unresponsiveAction(p.as.Role, business, primary, failoverErr)

	reason := "unresponsive: " + act.reason
	if how == stopKill {
		reason += "; killed (SIGKILL) by the agent"
	} else {
		reason += "; stopped by the agent (SIGTERM: its data is the only copy, saved first)"
	}
	record := func() time.Duration {
		lines, _ := a.rt.LastLogLines(id, logLines)
		a.mu.Lock()
		defer a.mu.Unlock()
		as, assigned := a.assigned[id]
		if !assigned {
			as = p.as
		}
		a.recordFailureLocked(as, reason, lines, st.Pid)
		return time.Until(a.failures[id].nextRestart)
	}
	l.mu.Lock()
	delete(l.act, id)
	delete(l.track, id)
	l.mu.Unlock()
	// The failure is recorded before a SIGKILL (the runtime's exit report
	// then finds the death recorded and keeps this reason), after a save
	// stop (SIGCONT lets the process answer for a moment, which would
	// clear a failure recorded before).
	var next time.Duration
	if how == stopKill {
		next = record()
	}
	err := a.takeDown(ctx, id, how)
	if how == stopSave {
		next = record()
	}
	poke(a.heartbeatNow)
	if err != nil {
		log.Warn("take down unresponsive member", "err", err)
		return reconcileRetry, true
	}
	log.Warn("unresponsive member taken down; the restart path brings it back", "how", map[stopHow]string{stopKill: "SIGKILL", stopSave: "SIGTERM"}[how],
		"failover", primary && failoverErr == nil, "restart_in", next.Round(time.Millisecond))
	return max(next, 0) + time.Millisecond, true
}

func orRunning(s string) string {
	if s == "" {
		return api.MemberRunning
	}
	return s
}

// restoreListen puts back a drifted bind or port through the probe
// client's connection, if one still works, and reports whether the
// member's address accepts connections again.
func (a *Agent) restoreListen(ctx context.Context, p memberPlan, log *slog.Logger) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c := a.probes.client(p.as.MemberID, p.probe, p.as.FleetPassword.Reveal())
	got, err := redisctl.GetIdentity(ctx, c)
	if err != nil {
		return false // no connection left: restart it
	}
	var listen []redisctl.Drift
	for _, d := range redisctl.IdentityDrift(a.identityOf(p), got) {
		if d.Name == redisctl.ParamBind || d.Name == redisctl.ParamPort {
			listen = append(listen, d)
		}
	}
	if len(listen) == 0 {
		return false
	}
	done, err := redisctl.RestoreIdentity(ctx, c, listen)
	for _, d := range done {
		log.Warn("identity setting restored", "param", d.Name, "was", d.Got, "now", d.Want)
	}
	if err != nil {
		return false
	}
	return redisctl.Knock(ctx, p.probe, "", false, lookDialTimeout, 0).Accepted()
}

// takeDown stops an unresponsive member's process: SIGKILL (the runtime
// reports the death; the failure is recorded already), or SIGCONT (a frozen
// process must run to save) and a stop with stopGrace.
func (a *Agent) takeDown(ctx context.Context, id string, how stopHow) error {
	sig, canSignal := a.rt.(runtime.Signaler)
	if how == stopKill {
		if canSignal {
			return sig.Signal(ctx, id, syscall.SIGKILL)
		}
		return a.rt.Stop(ctx, id, 0)
	}
	if canSignal {
		if err := sig.Signal(ctx, id, syscall.SIGCONT); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return err
		}
	}
	return a.rt.Stop(ctx, id, stopGrace)
}
