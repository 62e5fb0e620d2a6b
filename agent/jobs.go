package agent

// The backup job runner: the jobs the coordinator lists in this host's
// assignments (api.Assignments.Jobs), each run once, at most maxJobs at a
// time, and reported until a coordinator accepts the report. See DESIGN.md,
// "Backup jobs".

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	agentbackup "github.com/cacheplane/cacheplane/agent/backup"
	"github.com/cacheplane/cacheplane/agent/render"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backupstore"
)

// Job figures.
const (
	// maxJobs is how many jobs run at a time on one host (the
	// coordinator bounds dumps per host too; this is the agent's own
	// bound, whatever it is sent).
	maxJobs = 2
	// jobTimeout bounds one job, dump and drill or restore included.
	jobTimeout = 6 * time.Hour
	// reportTimeout bounds one ReportJob call; reports are retried with
	// backoff from reportBackoff to maxReportBackoff.
	reportTimeout    = 10 * time.Second
	reportBackoff    = 100 * time.Millisecond
	maxReportBackoff = 5 * time.Second
	// jobRecordKeep is how long the record of a finished job stays in
	// <data>/jobs/ once the job is no longer listed (a job id is never
	// listed again after the coordinator recorded its report).
	jobRecordKeep = 7 * 24 * time.Hour
	// maxJobError bounds a report's error line.
	maxJobError = 400
)

// scratchPorts is where scratch servers take their port: outside the
// members' range (scheduler.DefaultPortRange, 20000-29999) and below
// Linux's ephemeral ports (32768-60999).
var scratchPorts = agentbackup.PortRange{First: 30000, Last: 30999}

// Directories of the data dir.
const (
	jobsDirName    = "jobs"    // <data>/jobs/<job>.json: one record per job started
	scratchDirName = "scratch" // <data>/scratch/backup-*: a drill's or restore's unpacked dump
)

// Why a job ended early (its context's cause).
var (
	errWithdrawn = errors.New("cancelled: the job left the assignments")
	errStopping  = errors.New("interrupted: the agent stopped during the job")
)

// jobState is one job the runner knows: running, or done with its report.
type jobState struct {
	running bool
	cancel  context.CancelCauseFunc // while running

	done     bool
	report   api.JobReport
	finished time.Time // when it ended (for pruning)
	// reporting: a reporter goroutine runs; reported: a coordinator
	// accepted the report (or refused it for good).
	reporting, reported bool
}

// jobRunner runs the jobs of the assignments. exec does the work (the
// agent's runJob; tests pass their own), send reports one job once. All of
// its goroutines end before loop returns.
type jobRunner struct {
	dir    string // <data>/jobs
	host   string
	max    int
	exec   func(ctx context.Context, job api.BackupJob) api.JobReport
	send   func(ctx context.Context, r api.JobReport) error
	before func(ctx context.Context) // once, before the first job runs
	log    *slog.Logger

	wake chan struct{}

	mu     sync.Mutex
	have   bool // a list has been offered
	listed []api.BackupJob
	jobs   map[string]*jobState
}

func newJobRunner(dir, host string, log *slog.Logger, exec func(context.Context, api.BackupJob) api.JobReport, send func(context.Context, api.JobReport) error) *jobRunner {
	return &jobRunner{
		dir: dir, host: host, max: maxJobs, exec: exec, send: send, log: log,
		wake: make(chan struct{}, 1),
		jobs: map[string]*jobState{},
	}
}

// offer hands the runner the jobs of an assignments answer (all of them:
// a job missing from the list is withdrawn).
func (r *jobRunner) offer(jobs []api.BackupJob) {
	r.mu.Lock()
	r.have = true
	r.listed = jobs
	r.mu.Unlock()
	poke(r.wake)
}

// loop reads the records of earlier runs, then schedules on every offer
// and every job's end until ctx ends; it returns once every job and
// reporter goroutine has.
func (r *jobRunner) loop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait() // the jobs' contexts are ctx's children
	if err := r.load(); err != nil {
		r.log.Warn("job records", "err", err)
	}
	prepared := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		if !prepared && r.pending() {
			if r.before != nil {
				r.before(ctx)
			}
			prepared = true
		}
		r.schedule(ctx, &wg)
	}
}

// pending reports whether a listed job is neither running nor done.
func (r *jobRunner) pending() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.listed {
		if r.jobs[j.ID] == nil {
			return true
		}
	}
	return false
}

// schedule acts on the last offer: cancels running jobs no longer listed,
// starts listed jobs never started while there is room (in list order),
// reports done ones not reported yet, and forgets old records.
func (r *jobRunner) schedule(ctx context.Context, wg *sync.WaitGroup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.have {
		return
	}
	listed := make(map[string]bool, len(r.listed))
	for _, j := range r.listed {
		listed[j.ID] = true
	}
	running := 0
	for id, st := range r.jobs {
		switch {
		case st.running && !listed[id]:
			st.cancel(errWithdrawn)
		case st.running:
			running++
		case st.done && !listed[id] && time.Since(st.finished) > jobRecordKeep && !st.reporting:
			delete(r.jobs, id)
			if err := os.Remove(r.recordPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
				r.log.Warn("remove job record", "job", id, "err", err)
			}
		}
	}
	for _, j := range r.listed {
		st := r.jobs[j.ID]
		switch {
		case st == nil && running < r.max:
			r.startLocked(ctx, wg, j)
			running++
		case st != nil && st.done && !st.reported && !st.reporting:
			r.reportLocked(ctx, wg, j.ID, st)
		}
	}
}

// startLocked runs job in a goroutine under a context cancelled when ctx
// ends or the job is withdrawn.
func (r *jobRunner) startLocked(ctx context.Context, wg *sync.WaitGroup, job api.BackupJob) {
	jctx, cancel := context.WithCancelCause(ctx)
	st := &jobState{running: true, cancel: cancel}
	r.jobs[job.ID] = st
	started := time.Now()
	log := r.log.With("job", job.ID, "kind", job.Kind, "backup", job.Backup.ID, "member", job.MemberID)
	if err := r.writeRecord(job.ID, jobRecord{Job: job.String(), State: recordStarted, StartedAt: started}); err != nil {
		log.Warn("job record", "err", err) // a restart may run it again
	}
	log.Info("job started")
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel(nil)
		rep := r.exec(jctx, job)
		if !rep.OK && jctx.Err() != nil {
			cause := context.Cause(jctx)
			if !errors.Is(cause, errWithdrawn) {
				cause = errStopping
			}
			rep.Error = cause.Error()
		}
		rep.HostID, rep.JobID, rep.BackupID, rep.Kind = r.host, job.ID, job.Backup.ID, job.Kind
		rep.StartedAt, rep.FinishedAt = started, time.Now()
		if err := r.writeRecord(job.ID, jobRecord{Job: job.String(), State: recordDone, StartedAt: started, Report: &rep}); err != nil {
			log.Warn("job record", "err", err)
		}
		log.Info("job finished", "ok", rep.OK, "error", rep.Error, "verified", rep.Verified,
			"took", rep.FinishedAt.Sub(started).Round(time.Millisecond).String())
		r.mu.Lock()
		st.running, st.cancel, st.done, st.report, st.finished = false, nil, true, rep, rep.FinishedAt
		r.mu.Unlock()
		poke(r.wake) // a slot is free; the report goes out
	}()
}

// reportLocked sends st's report in a goroutine, retried with backoff until
// a coordinator accepts it, refuses it for good (invalid, conflict), the
// job is no longer listed or ctx ends.
func (r *jobRunner) reportLocked(ctx context.Context, wg *sync.WaitGroup, id string, st *jobState) {
	st.reporting = true
	rep := st.report
	wg.Add(1)
	go func() {
		defer wg.Done()
		backoff := reportBackoff
		for {
			rctx, cancel := context.WithTimeout(ctx, reportTimeout)
			err := r.send(rctx, rep)
			cancel()
			final := err == nil || errors.Is(err, api.ErrInvalid) || errors.Is(err, api.ErrConflict)
			switch {
			case err == nil:
				r.log.Info("job reported", "job", id, "ok", rep.OK)
			case final:
				r.log.Warn("job report refused", "job", id, "err", err)
			case ctx.Err() == nil && !r.isListed(id):
				r.log.Warn("job report not accepted and the job is withdrawn; giving up", "job", id, "err", err)
				final = true
			}
			if final || ctx.Err() != nil {
				r.mu.Lock()
				st.reporting, st.reported = false, final
				r.mu.Unlock()
				return
			}
			r.log.Warn("job report failed; retrying", "job", id, "err", err, "backoff", backoff)
			if !sleep(ctx, backoff) {
				r.mu.Lock()
				st.reporting = false
				r.mu.Unlock()
				return
			}
			backoff = min(backoff*2, maxReportBackoff)
		}
	}()
}

func (r *jobRunner) isListed(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.listed {
		if j.ID == id {
			return true
		}
	}
	return false
}

// Records: <data>/jobs/<name>.json, written (temp + rename, 0600) when a
// job starts and again when it ends. A restarted agent never runs a job it
// has a record of: a done one is reported again when listed, a started
// one (the agent died during it) is reported as interrupted.

const (
	recordStarted = "started"
	recordDone    = "done"
)

// jobRecord is a job's record on disk; it holds no secret.
type jobRecord struct {
	Job       string         `json:"job"` // api.BackupJob.String()
	State     string         `json:"state"`
	StartedAt time.Time      `json:"started_at"`
	Report    *api.JobReport `json:"report,omitempty"`
}

var plainJobID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// recordName is the record file's name for job id (pure): the id itself
// when it is a plain file name, else a digest of it.
func recordName(id string) string {
	if plainJobID.MatchString(id) && !strings.HasPrefix(id, "x-") {
		return id + ".json"
	}
	h := sha256.Sum256([]byte(id))
	return "x-" + hex.EncodeToString(h[:20]) + ".json"
}

func (r *jobRunner) recordPath(id string) string { return filepath.Join(r.dir, recordName(id)) }

func (r *jobRunner) writeRecord(id string, rec jobRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return err
	}
	return writeFileAtomic(r.recordPath(id), b)
}

// load reads the records of earlier runs into the runner: every job there
// counts as done (one that was still running is reported interrupted).
func (r *jobRunner) load() error {
	entries, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") { // writeFileAtomic's temporary file, left by a crash
			_ = os.Remove(filepath.Join(r.dir, name))
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(r.dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		rep, rewrite, err := recordReport(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if recordName(rep.JobID) != name {
			errs = append(errs, fmt.Errorf("%s: the record is of job %q", name, rep.JobID))
			continue
		}
		if rewrite {
			rec := jobRecord{State: recordDone, StartedAt: rep.StartedAt, Report: &rep}
			if err := writeFileAtomic(filepath.Join(r.dir, name), mustJSON(rec)); err != nil {
				errs = append(errs, err)
			}
		}
		r.jobs[rep.JobID] = &jobState{done: true, report: rep, finished: rep.FinishedAt}
	}
	return errors.Join(errs...)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v) // plain structs: never fails
	return b
}

// recordReport is the report a record stands for (pure): a done job's
// own, or, for a job that was still running, a failure saying it was
// interrupted (rewrite: the record should say so from now on).
func recordReport(b []byte) (rep api.JobReport, rewrite bool, err error) {
	var rec jobRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return rep, false, fmt.Errorf("unreadable job record: %w", err)
	}
	switch {
	case rec.State == recordDone && rec.Report != nil && rec.Report.JobID != "":
		return *rec.Report, false, nil
	case rec.State == recordStarted:
		id, kind, backupID, ok := parseJobString(rec.Job)
		if !ok {
			return rep, false, fmt.Errorf("job record names %q", rec.Job)
		}
		return api.JobReport{JobID: id, Kind: kind, BackupID: backupID, Error: errStopping.Error(),
			StartedAt: rec.StartedAt, FinishedAt: rec.StartedAt}, true, nil
	}
	return rep, false, fmt.Errorf("job record in state %q without a report", rec.State)
}

// parseJobString reads back api.BackupJob.String(): "<kind> job <id>
// (backup <backup id>, member <member id>)".
func parseJobString(s string) (id string, kind api.JobKind, backupID string, ok bool) {
	k, rest, ok1 := strings.Cut(s, " job ")
	id, rest, ok2 := strings.Cut(rest, " (backup ")
	backupID, _, ok3 := strings.Cut(rest, ", member ")
	if !ok1 || !ok2 || !ok3 || id == "" {
		return "", "", "", false
	}
	return id, api.JobKind(k), backupID, true
}

// ---------------------------------------------------------------------------
// The agent's side: what a job does.

// isScratch reports whether a runtime container is a backup scratch server
// (agentbackup.RuntimeScratch): never a member, never reconciled nor
// reported; the job that started it removes it.
func isScratch(st runtime.Status) bool {
	return st.Role == agentbackup.RoleScratch && strings.HasPrefix(st.ID, agentbackup.ScratchIDPrefix)
}

// withoutScratch returns sts without the scratch servers.
func withoutScratch(sts []runtime.Status) []runtime.Status {
	out := sts[:0:0]
	for _, st := range sts {
		if !isScratch(st) {
			out = append(out, st)
		}
	}
	return out
}

// scratchHost is the address scratch servers bind (pure): the agent's own
// address when it is a loopback address (test fleets give each host its
// own 127.0.0.x), else 127.0.0.1. Never the host's network address: a
// scratch server has no password.
func scratchHost(agentAddr string) string {
	if ip := net.ParseIP(agentAddr); ip != nil && ip.IsLoopback() && ip.To4() != nil {
		return agentAddr
	}
	return "127.0.0.1"
}

// serverBinary is the redis server of engine in its image (pure).
func serverBinary(e api.Engine) (string, error) {
	switch e {
	case api.EngineRedis:
		return "/usr/bin/redis-server", nil
	case api.EngineValkey:
		return "/usr/bin/valkey-server", nil
	}
	return "", fmt.Errorf("unknown engine %q", e)
}

// jobLine turns err into a report's error (pure): its first line, every
// secret replaced, at most maxJobError bytes.
func jobLine(err error, secrets ...string) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[REDACTED]")
		}
	}
	if len(s) > maxJobError {
		s = s[:maxJobError-3] + "..."
	}
	return s
}

// jobSecrets are the secrets a job carries, to keep them out of its report.
func jobSecrets(job api.BackupJob, sc backupstore.Config, k backupstore.Keyring) []string {
	out := []string{job.Password.Reveal(), sc.SecretKey.Reveal(), sc.AccessKey}
	for _, key := range k.Keys {
		out = append(out, key)
	}
	return out
}

// jobScratch is the scratch server config of job on this agent.
func (a *Agent) jobScratch(job api.BackupJob) (*agentbackup.RuntimeScratch, error) {
	bin, err := serverBinary(job.Engine)
	if err != nil {
		return nil, err
	}
	if job.Image == "" {
		return nil, errors.New("the job names no image")
	}
	return &agentbackup.RuntimeScratch{
		Runtime: a.rt, Image: job.Image, Binary: bin,
		Host: scratchHost(a.cfg.Address), Ports: scratchPorts,
		MemoryLimitBytes: render.ContainerMemoryLimitBytes(job.PlanMemoryMB),
	}, nil
}

// cleanScratch removes what a crash left of earlier drills and restores:
// scratch containers and unpacked dumps. The runner calls it before the
// first job it runs.
func (a *Agent) cleanScratch(ctx context.Context) {
	s := &agentbackup.RuntimeScratch{Runtime: a.rt}
	if err := s.Cleanup(ctx); err != nil {
		a.log.Warn("scratch cleanup", "err", err)
	}
	a.pruneScratchLogs(ctx)
	dir := filepath.Join(a.cfg.DataDir, scratchDirName)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("scratch cleanup", "err", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			a.log.Warn("scratch cleanup", "err", err)
		}
	}
}

// pruneScratchLogs removes the log files of scratch servers that are gone
// (the runtime logs every container into <data>/logs/<id>.log). The dir is
// read before the runtime is listed: a container is created before its
// log, so a log whose container is not listed after is of a dead one.
func (a *Agent) pruneScratchLogs(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dir := filepath.Join(a.cfg.DataDir, "logs")
	entries, err := os.ReadDir(dir)
	if err != nil {
		a.log.Warn("scratch logs", "err", err)
		return
	}
	sts, err := a.rt.List(ctx)
	if err != nil {
		a.log.Warn("scratch logs", "err", err)
		return
	}
	alive := map[string]bool{}
	for _, st := range sts {
		alive[st.ID] = true
	}
	for _, e := range entries {
		id, _, _ := strings.Cut(e.Name(), ".log")
		if strings.HasPrefix(id, agentbackup.ScratchIDPrefix) && !alive[id] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				a.log.Warn("scratch logs", "err", err)
			}
		}
	}
}

// runJob does job and says how it went (the runner fills the ids and
// times). Its error line never holds a secret of the job.
func (a *Agent) runJob(ctx context.Context, job api.BackupJob) api.JobReport {
	defer a.pruneScratchLogs(context.WithoutCancel(ctx))
	ctx, cancel := context.WithTimeout(ctx, jobTimeout)
	defer cancel()
	var (
		sc backupstore.Config
		k  backupstore.Keyring
	)
	fail := func(err error) api.JobReport {
		return api.JobReport{Error: jobLine(err, jobSecrets(job, sc, k)...)}
	}
	// Decode errors are not quoted: they could echo a piece of a secret.
	if err := json.Unmarshal(job.Store, &sc); err != nil {
		return fail(errors.New("the job's backup store configuration is not valid JSON"))
	}
	if err := json.Unmarshal(job.Keys, &k); err != nil {
		return fail(errors.New("the job's keyring is not valid JSON"))
	}
	if err := api.ValidateMemberID("member", job.MemberID); err != nil {
		return fail(err)
	}
	if job.Addr == "" || job.Backup.StoreKey == "" {
		return fail(errors.New("the job names no member address or no store key"))
	}
	st, err := backupstore.Open(sc)
	if err != nil {
		return fail(err)
	}
	scratch, err := a.jobScratch(job)
	if err != nil {
		return fail(err)
	}
	work := filepath.Join(a.cfg.DataDir, scratchDirName)
	if err := os.MkdirAll(work, 0o700); err != nil {
		return fail(fmt.Errorf("scratch dir: %w", err))
	}
	switch job.Kind {
	case api.JobBackup:
		res, err := agentbackup.Dump(ctx, agentbackup.DumpRequest{
			Addr: job.Addr, Password: job.Password.Reveal(), DataDir: a.memberDir(job.MemberID), AOF: job.AOF,
			Store: st, Key: job.Backup.StoreKey, Keyring: k,
		})
		if err != nil {
			return fail(err)
		}
		rep := api.JobReport{OK: true, SizeBytes: res.Size, Checksum: res.Checksum, KeyID: res.KeyID, Keys: res.Keys}
		v, sum, err := agentbackup.DrillSum(ctx, agentbackup.DrillRequest{
			Source:  agentbackup.Source{Store: st, Key: job.Backup.StoreKey, Keyring: k, KeyID: res.KeyID, Checksum: res.Checksum},
			Dump:    res,
			Scratch: scratch, WorkDir: work,
		})
		rep.ArchiveBytes, rep.ArchiveChecksum = sum.Bytes, sum.SHA256
		rep.Verified = v.Detail
		if err != nil && v.Detail == "" {
			// The drill did not finish (the dump is not at fault as far
			// as it knows): the backup stands, not verified.
			if ctx.Err() != nil {
				return fail(err) // cancelled: the runner says why
			}
			rep.Verified = api.NotVerifiedPrefix + "the drill did not finish: " + jobLine(err, jobSecrets(job, sc, k)...)
		}
		if err != nil {
			a.log.Warn("backup drill", "job", job.ID, "backup", job.Backup.ID, "err", jobLine(err, jobSecrets(job, sc, k)...))
		}
		return rep
	case api.JobRestore:
		cs, err := agentbackup.Restore(ctx, agentbackup.RestoreRequest{
			Source:  agentbackup.Source{Store: st, Key: job.Backup.StoreKey, Keyring: k, KeyID: job.Backup.KeyID, Checksum: job.Backup.Checksum},
			Scratch: scratch, WorkDir: work,
			Addr: job.Addr, Password: job.Password.Reveal(),
		})
		if err != nil {
			rep := fail(err)
			rep.Restored, rep.Flushed = cs.Total, cs.Flushed
			return rep
		}
		return api.JobReport{OK: true, Restored: cs.Total, Flushed: true}
	}
	return fail(fmt.Errorf("unknown job kind %q", job.Kind))
}
