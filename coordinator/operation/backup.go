package operation

import (
	"fmt"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Backups and restores run on the operation engine like every operation:
// one per addon at a time (a plan change, an upgrade, a settings change or
// a healing move waits or is refused while one runs), each step committed
// before the next, resumed by a new leader from the FSM alone.
//
// The work itself is a job for one agent (api.BackupJob): the engine
// records the job (StartJob: its id, drawn once per attempt, is in the FSM)
// and the job is listed in that host's assignments until the agent
// reports it (api.JobReport, recorded in the FSM too). A new leader sees
// the same job and waits for the same report: an attempt never dumps or
// restores twice. A job whose host goes down, or that reports nothing
// within BackupLimits.JobTimeout, fails its operation.
//
//   - backup: choose member (a business addon's replica, only while it is
//     a replica in sync with a serving primary — never the primary; a
//     starter's only redis node) → dump (the agent dumps, seals and stores
//     it, then restore-drills it in a scratch server, all in one job) →
//     record (status done, the figures, the drill's verdict). A failed
//     attempt leaves the record in error with the reason; the schedule
//     (backup.Due) retries a periodic one later that day under the same
//     backup id, as a new operation.
//   - restore: restore (a job on the primary's host: a scratch server loads
//     the backup, every key is copied into the primary; the replica
//     follows by replication) → mark running. The addon is updating
//     meanwhile. It cannot be cancelled (the data is being replaced); a
//     failed restore leaves the addon running with what was copied.

// Step names of backups and restores (recorded in the FSM: never rename
// one).
const (
	StepChooseMember = "choose member"
	StepDump         = "dump"
	StepRecord       = "record"
	StepRestore      = "restore"
)

// BackupSteps is the step list of a backup operation.
func BackupSteps() []api.Step { return steps(StepChooseMember, StepDump, StepRecord) }

// RestoreSteps is the step list of a restore operation.
func RestoreSteps() []api.Step { return steps(StepRestore, StepMarkRunning) }

// Job is a backup or restore job as the FSM records it: listed in HostID's
// assignments from CreatedAt until its agent reports it.
type Job struct {
	ID          string      `json:"id"`
	Kind        api.JobKind `json:"kind"`
	OperationID string      `json:"operation_id"`
	AddonID     string      `json:"addon_id"`
	BackupID    string      `json:"backup_id"`
	HostID      string      `json:"host_id"`
	MemberID    string      `json:"member_id"`
	CreatedAt   time.Time   `json:"created_at"`
	// Report is the agent's account, once it came.
	Report     *api.JobReport `json:"report,omitempty"`
	ReportedAt time.Time      `json:"reported_at,omitzero"`
}

// BackupLimits are the figures of backup and restore steps.
type BackupLimits struct {
	// JobTimeout: a job that has reported nothing this long after it was
	// listed fails its operation.
	JobTimeout time.Duration
	// ChooseWait: choose member (and a restore before its job) waits at
	// most this long for a member to serve as it must.
	ChooseWait time.Duration
	// RetryEvery sets a failed periodic backup's NextAttempt (the
	// schedule's retry interval).
	RetryEvery time.Duration
}

// DefaultBackupLimits are the production figures.
func DefaultBackupLimits() BackupLimits {
	return BackupLimits{JobTimeout: 30 * time.Minute, ChooseWait: 10 * time.Minute, RetryEvery: 10 * time.Minute}
}

// StartJob lists a new job on HostID's assignments; the engine draws its
// id and time and records it with the step, which keeps running.
type StartJob struct {
	Kind     api.JobKind
	HostID   string
	MemberID string
}

// UpdateBackup records the operation's backup record as given.
type UpdateBackup struct{ Backup api.Backup }

func (StartJob) effect()     {}
func (UpdateBackup) effect() {}

// DumpSource is the member a backup of v.Addon is taken on: a business
// addon's replica, only while it serves as a replica in sync with a
// serving primary (the primary is never dumped instead); a starter's only
// redis node, while it serves. Otherwise why says what is wrong, and
// hostDown that it is a down host (nothing worth waiting for).
func DumpSource(v View) (m api.Member, why string, hostDown bool) {
	a := v.Addon
	var redis []api.Member
	for _, m := range a.Members {
		if m.Role == api.RoleRedis {
			redis = append(redis, m)
		}
	}
	business := len(redis) > 1
	if v.PlanKnown {
		business = v.Plan.Kind == api.PlanBusiness
	}
	if len(redis) == 0 {
		return api.Member{}, "addon " + a.ID + " has no redis member", false
	}
	if !business {
		m := redis[0]
		if v.Hosts[m.HostID].State == api.HostDown {
			return api.Member{}, fmt.Sprintf("host %s of %s is down", m.HostID, m.ID), true
		}
		if o := v.Observed[m.ID]; !o.alive() {
			return api.Member{}, fmt.Sprintf("%s is not serving (%s)", m.ID, describe(o)), false
		}
		return m, "", false
	}
	prim, _ := Primary(a)
	var first string
	down := false
	for _, r := range redis {
		if r.ID == prim.ID {
			continue
		}
		var w string
		switch {
		case v.Hosts[r.HostID].State == api.HostDown:
			w, down = fmt.Sprintf("host %s of replica %s is down: not dumping the primary", r.HostID, r.ID), true
		default:
			if ns := notInSync(v, r.ID); ns != "" {
				w = fmt.Sprintf("replica %s is not in sync (%s): not dumping the primary", r.ID, ns)
			}
		}
		if w == "" {
			return r, "", false
		}
		if first == "" {
			first = w
		}
	}
	if first == "" {
		return api.Member{}, fmt.Sprintf("addon %s has no replica (only its primary %s): not dumping the primary", a.ID, prim.ID), false
	}
	return api.Member{}, first, down
}

// CheckBackup decides whether a manual backup of addon a may start now.
// Every plan may be backed up by hand (the plan's Backups flag only says
// whether the schedule takes daily ones).
func CheckBackup(a api.Addon, active api.Operation, busy bool) error {
	switch {
	case a.Status == api.AddonRemoving:
		return fmt.Errorf("%w: addon %s is being removed", api.ErrConflict, a.ID)
	case busy:
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress; a backup starts once it is done (cacheplane operations --addon %s)",
			api.ErrConflict, a.ID, active.ID, active.Kind, a.ID)
	case a.Status != api.AddonRunning:
		return fmt.Errorf("%w: addon %s is %s; backups are taken once it is running", api.ErrConflict, a.ID, a.Status)
	}
	return nil
}

// RestoreRequest is what the pre-flight check of a restore reads.
type RestoreRequest struct {
	App, BackupID, Confirm string
	Backup                 api.Backup
	BackupKnown            bool
	Addon                  api.Addon
	AddonKnown             bool
	Active                 api.Operation
	Busy                   bool
}

// CheckRestore decides whether backup r.BackupID may be restored into
// r.App's addon now. Each refusal is one line wrapping an api sentinel, in
// this order: an unknown backup, a backup of another app, a backup that is
// not good (running, failed, refused by its restore drill, deleted: which
// and why), a confirmation that is not the app's name, an app without an
// addon, another operation of the addon, an addon that is not running.
func CheckRestore(r RestoreRequest) error {
	b := r.Backup
	switch {
	case !r.BackupKnown:
		return fmt.Errorf("%w: no backup %s (see: cacheplane backups --app %s)", api.ErrNotFound, r.BackupID, r.App)
	case b.App != r.App:
		return fmt.Errorf("%w: app %s has no backup %s (it is a backup of app %s)", api.ErrNotFound, r.App, b.ID, b.App)
	case !b.Good():
		return fmt.Errorf("%w: %s; pick a good one (cacheplane backups --app %s)", api.ErrConflict, NotGood(b), r.App)
	case r.Confirm != r.App:
		return api.Invalidf("restoring replaces every key of app %s's addon by the backup's: type the app name to confirm: --confirm %s", r.App, r.App)
	case !r.AddonKnown:
		return fmt.Errorf("%w: app %s has no redis addon to restore into", api.ErrNotFound, r.App)
	case r.Busy:
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress; restore once it is done (cacheplane operations --addon %s)",
			api.ErrConflict, r.Addon.ID, r.Active.ID, r.Active.Kind, r.Addon.ID)
	case r.Addon.Status != api.AddonRunning:
		return fmt.Errorf("%w: addon %s is %s; a backup can be restored once it is running", api.ErrConflict, r.Addon.ID, r.Addon.Status)
	}
	return nil
}

// NotGood says why b cannot be restored ("" when it is good).
func NotGood(b api.Backup) string {
	switch {
	case b.Good():
		return ""
	case b.Deleted:
		return fmt.Sprintf("backup %s was deleted by retention on %s (%s)", b.ID, b.DeletedAt.UTC().Format("2006-01-02"), b.DeletedReason)
	case b.Status == api.BackupRunning:
		return fmt.Sprintf("backup %s is still running", b.ID)
	case b.Status == api.BackupError:
		return fmt.Sprintf("backup %s failed (%s)", b.ID, b.Reason)
	case b.Status != api.BackupDone:
		return fmt.Sprintf("backup %s is %s", b.ID, b.Status)
	}
	return fmt.Sprintf("backup %s is %s", b.ID, strings.TrimSuffix(b.Verified, "."))
}

// backupOp decides the steps of a backup operation.
func backupOp(v View, op api.Operation, step api.Step) Decision {
	if !v.BackupKnown {
		return fail("backup " + op.BackupID + " has no record")
	}
	b := v.Backup
	failed := func(reason string) Decision {
		return Decision{Kind: Fail, Detail: reason, Effect: UpdateBackup{Backup: failedBackup(v, b, reason)}}
	}
	if !v.Exists {
		return failed("the addon no longer exists")
	}
	switch step.Name {
	case StepChooseMember:
		m, why, down := DumpSource(v)
		if why == "" {
			nb := b
			nb.MemberID, nb.HostID = m.ID, m.HostID
			what := "its only redis node"
			if prim, _ := Primary(v.Addon); prim.ID != m.ID {
				what = "the replica, in sync with the primary " + prim.ID
			}
			return Decision{Kind: Advance, Detail: fmt.Sprintf("%s on host %s (%s)", m.ID, m.HostID, what), Effect: UpdateBackup{Backup: nb}}
		}
		if down {
			return failed(why)
		}
		if waited(v, step) >= v.BackupLimits.ChooseWait && v.BackupLimits.ChooseWait > 0 {
			return failed(fmt.Sprintf("no member to dump after %s: %s", v.BackupLimits.ChooseWait, why))
		}
		return wait(why)
	case StepDump:
		if b.MemberID == "" || b.HostID == "" {
			return failed("no member was chosen to dump")
		}
		if !v.JobKnown {
			return Decision{Kind: Wait, Detail: fmt.Sprintf("dump of %s listed for host %s's agent", b.MemberID, b.HostID),
				Effect: StartJob{Kind: api.JobBackup, HostID: b.HostID, MemberID: b.MemberID}}
		}
		rep, d, done := jobOutcome(v, "dump "+b.MemberID)
		switch {
		case !done && d.Kind == Fail:
			return failed(d.Detail)
		case !done:
			return d
		}
		if !rep.OK {
			return failed("dump failed on host " + v.Job.HostID + ": " + oneLine(rep.Error))
		}
		return advance(fmt.Sprintf("dumped %d keys: %s stored (job %s)", rep.Keys, size(rep.SizeBytes), v.Job.ID))
	case StepRecord:
		if !v.JobKnown || v.Job.Report == nil || !v.Job.Report.OK {
			return failed("no successful dump report to record")
		}
		rep := v.Job.Report
		nb := b
		nb.Status, nb.Reason, nb.FinishedAt, nb.NextAttempt = api.BackupDone, "", v.Now, time.Time{}
		nb.SizeBytes, nb.Checksum, nb.KeyID, nb.Keys = rep.SizeBytes, rep.Checksum, rep.KeyID, rep.Keys
		nb.ArchiveBytes, nb.ArchiveChecksum, nb.Verified = rep.ArchiveBytes, rep.ArchiveChecksum, oneLine(rep.Verified)
		detail := fmt.Sprintf("backup %s done: %d keys, %s", b.ID, nb.Keys, size(nb.SizeBytes))
		switch {
		case strings.HasPrefix(nb.Verified, "not verified"):
			detail += "; NOT verified by the restore drill, so not counted as a good backup: " + strings.TrimPrefix(nb.Verified, api.NotVerifiedPrefix)
		case nb.Verified != "":
			detail += "; " + nb.Verified
		default:
			detail += "; no restore drill reported"
		}
		return Decision{Kind: Advance, Detail: detail, Effect: UpdateBackup{Backup: nb}}
	}
	return failed("unknown step " + step.Name)
}

// failedBackup is b after a failed attempt at v.Now: error, the reason, and
// for a periodic backup the time the schedule may retry it.
func failedBackup(v View, b api.Backup, reason string) api.Backup {
	b.Status, b.Reason, b.FinishedAt = api.BackupError, oneLine(reason), v.Now
	b.NextAttempt = time.Time{}
	if b.Kind == api.BackupPeriodic && v.BackupLimits.RetryEvery > 0 {
		b.NextAttempt = v.Now.Add(v.BackupLimits.RetryEvery)
	}
	return b
}

// restoreOp decides the steps of a restore operation.
func restoreOp(v View, op api.Operation, step api.Step) Decision {
	if !v.Exists {
		return fail("the addon no longer exists")
	}
	failed := func(reason string) Decision {
		return Decision{Kind: Fail, Status: api.AddonRunning, Detail: reason}
	}
	switch step.Name {
	case StepRestore:
		if !v.JobKnown {
			switch {
			case !v.BackupKnown:
				return failed(fmt.Sprintf("backup %s is gone: nothing was restored", op.BackupID))
			case !v.Backup.Good():
				return failed(NotGood(v.Backup) + ": nothing was restored")
			}
			prim, ok := Primary(v.Addon)
			var why string
			switch o := v.Observed[prim.ID]; {
			case !ok:
				why = "addon " + v.Addon.ID + " has no redis member"
			case v.Hosts[prim.HostID].State == api.HostDown:
				why = fmt.Sprintf("host %s of the primary %s is down", prim.HostID, prim.ID)
			case !o.alive() || (o.RedisRole != "" && o.RedisRole != "master"):
				why = fmt.Sprintf("the primary %s is not serving as the primary (%s)", prim.ID, describe(o))
			}
			if why != "" {
				if waited(v, step) >= v.BackupLimits.ChooseWait && v.BackupLimits.ChooseWait > 0 {
					return failed(fmt.Sprintf("nothing was restored: after %s, %s", v.BackupLimits.ChooseWait, why))
				}
				return wait("waiting to restore: " + why)
			}
			return Decision{Kind: Wait, Detail: fmt.Sprintf("restore of backup %s into the primary %s listed for host %s's agent", op.BackupID, prim.ID, prim.HostID),
				Effect: StartJob{Kind: api.JobRestore, HostID: prim.HostID, MemberID: prim.ID}}
		}
		rep, d, done := jobOutcome(v, "restore backup "+op.BackupID+" into "+v.Job.MemberID)
		if !done {
			if d.Kind == Fail {
				d.Status = api.AddonRunning
				d.Detail += "; the addon may hold part of the backup: restore again"
			}
			return d
		}
		if !rep.OK {
			if !rep.Flushed {
				return failed(fmt.Sprintf("restore of backup %s failed on host %s: %s; the addon's data was not touched",
					op.BackupID, v.Job.HostID, oneLine(rep.Error)))
			}
			return failed(fmt.Sprintf("restore of backup %s failed on host %s after %d keys: %s; the addon holds part of the backup: restore again",
				op.BackupID, v.Job.HostID, rep.Restored, oneLine(rep.Error)))
		}
		return advance(fmt.Sprintf("%d keys restored from backup %s into %s", rep.Restored, op.BackupID, v.Job.MemberID))
	case StepMarkRunning:
		return Decision{Kind: Advance, Status: api.AddonRunning}
	}
	return failed("unknown step " + step.Name)
}

// jobOutcome is the report of the operation's job when it came (done);
// else the decision while it runs: wait, or fail when its host is down or
// it has reported nothing within the job timeout.
func jobOutcome(v View, what string) (*api.JobReport, Decision, bool) {
	j := v.Job
	if j.Report != nil {
		return j.Report, Decision{}, true
	}
	switch {
	case v.Hosts[j.HostID].State == api.HostDown:
		return nil, fail(fmt.Sprintf("host %s is down: job %s (%s) did not finish", j.HostID, j.ID, what)), false
	case v.BackupLimits.JobTimeout > 0 && v.Now.Sub(j.CreatedAt) >= v.BackupLimits.JobTimeout:
		return nil, fail(fmt.Sprintf("job %s (%s) on host %s reported nothing for %s", j.ID, what, j.HostID, v.BackupLimits.JobTimeout)), false
	}
	return nil, wait(fmt.Sprintf("waiting for host %s's agent to %s (job %s)", j.HostID, what, j.ID)), false
}

// waited is how long the step has been current.
func waited(v View, step api.Step) time.Duration {
	if step.StartedAt.IsZero() {
		return 0
	}
	return v.Now.Sub(step.StartedAt)
}

// jobStep reports whether op's step waits for a job: bounded by the job
// timeout, it is never marked stuck (a large dump takes longer than the
// stuck bound).
func jobStep(op api.Operation, name string) bool {
	return (op.Kind == api.OpBackup && name == StepDump) || (op.Kind == api.OpRestore && name == StepRestore)
}

// size shows a byte count in a few characters.
func size(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", b)
}

// oneLine is the first line of s, trimmed and bounded.
func oneLine(s string) string {
	s = strings.TrimSpace(firstLine(strings.TrimSpace(s)))
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}
