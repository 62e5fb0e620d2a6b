package coordinator

import (
	"fmt"
	"sort"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
)

// Backups in the FSM: the records (State.Backups), the jobs of running
// backup and restore operations (State.Jobs) and each app's last Seq
// (State.BackupSeqs). The leader picks ids and times; these only check
// what the state alone decides.

// applyBackupCreate records a backup with its operation (BackupCreateCmd).
func (f *FSM) applyBackupCreate(c BackupCreateCmd) any {
	b, op := c.Backup, c.Operation
	a, ok := f.state.Addons[b.AddonID]
	if !ok || a.App != b.App {
		return fmt.Errorf("%w: app %s has no addon %s", api.ErrNotFound, b.App, b.AddonID)
	}
	if op.Kind != api.OpBackup || op.BackupID != b.ID || op.AddonID != b.AddonID {
		return api.Invalidf("backup %s needs a backup operation of addon %s naming it", b.ID, b.AddonID)
	}
	prev, exists := f.state.Backups[b.ID]
	retry := exists && prev.Status == api.BackupError && prev.Kind == api.BackupPeriodic && b.Attempts > prev.Attempts && !prev.Deleted
	if exists && !retry {
		return BackupCreated{Backup: prev, Operation: f.latestBackupOp(b.ID), Existing: true}
	}
	if a.Status == api.AddonRemoving {
		return fmt.Errorf("%w: addon %s is being removed", api.ErrConflict, a.ID)
	}
	if o, busy := f.activeOperation(a.ID); busy {
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress", api.ErrConflict, a.ID, o.ID, o.Kind)
	}
	if a.Status != api.AddonRunning {
		return fmt.Errorf("%w: addon %s is %s; backups are taken once it is running", api.ErrConflict, a.ID, a.Status)
	}
	if _, ok := f.state.Operations[op.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, op.ID)
	}
	b.Status, b.Reason, b.FinishedAt, b.NextAttempt = api.BackupRunning, "", time.Time{}, time.Time{}
	b.Deleted, b.DeletedAt, b.DeletedReason = false, time.Time{}, ""
	b.SizeBytes, b.Checksum, b.KeyID, b.Keys, b.Verified, b.ArchiveBytes, b.ArchiveChecksum = 0, "", "", 0, "", 0, ""
	if retry {
		b.Seq, b.Pinned = prev.Seq, prev.Pinned
	} else {
		b.Seq = f.state.BackupSeqs[b.App] + 1
	}
	if b.Attempts < 1 {
		b.Attempts = 1
	}
	if b.CreatedAt.IsZero() {
		b.CreatedAt = c.At
	}
	b.StoreKey = backup.StoreKey(b)
	if err := backup.Validate(b); err != nil {
		return err
	}
	if !retry {
		f.state.BackupSeqs[b.App] = b.Seq
	}
	f.state.Backups[b.ID] = b
	f.state.putOp(op)
	return BackupCreated{Backup: b, Operation: op}
}

// latestBackupOp is the newest backup operation of backup id (zero when
// none).
func (f *FSM) latestBackupOp(id string) api.Operation {
	var out api.Operation
	for _, o := range f.state.Operations {
		if o.Kind == api.OpBackup && o.BackupID == id && (out.ID == "" || o.CreatedAt.After(out.CreatedAt)) {
			out = o
		}
	}
	out.Steps = append([]api.Step(nil), out.Steps...)
	return out
}

// applyBackupUpdate records a backup or restore step's change to the
// backup record, with the step (BackupUpdateCmd).
func (f *FSM) applyBackupUpdate(c BackupUpdateCmd) any {
	prev, ok := f.state.Backups[c.Backup.ID]
	if !ok {
		return fmt.Errorf("%w: no backup %s", api.ErrNotFound, c.Backup.ID)
	}
	if err := f.checkStep(c.Operation); err != nil {
		return err
	}
	if c.Operation.BackupID != prev.ID {
		return api.Invalidf("operation %s does not work on backup %s", c.Operation.ID, prev.ID)
	}
	b := c.Backup
	b.ID, b.AddonID, b.App, b.Kind, b.Day, b.Seq, b.StoreKey, b.Pinned = prev.ID, prev.AddonID, prev.App, prev.Kind, prev.Day, prev.Seq, prev.StoreKey, prev.Pinned
	b.Deleted, b.DeletedAt, b.DeletedReason = prev.Deleted, prev.DeletedAt, prev.DeletedReason
	if c.Operation.Kind == api.OpRestore {
		b = prev // a restore never changes the record it restores
	}
	f.state.Backups[b.ID] = b
	f.state.putOp(c.Operation)
	if c.AddonStatus != "" {
		if a, ok := f.state.Addons[c.Operation.AddonID]; ok {
			a.Status = c.AddonStatus
			a.UpdatedAt = c.Operation.UpdatedAt
			f.state.Addons[a.ID] = a
		}
	}
	return nil
}

// applyJobStart records a job with the step that lists it (JobStartCmd).
func (f *FSM) applyJobStart(c JobStartCmd) any {
	j := c.Job
	if err := f.checkStep(c.Operation); err != nil {
		return err
	}
	if j.ID == "" || j.OperationID != c.Operation.ID || j.BackupID != c.Operation.BackupID || j.AddonID != c.Operation.AddonID {
		return api.Invalidf("job %q does not belong to operation %s", j.ID, c.Operation.ID)
	}
	if _, ok := f.state.Jobs[j.ID]; ok {
		return fmt.Errorf("%w: job %s", errIDTaken, j.ID)
	}
	for _, o := range f.state.Jobs {
		if o.OperationID == j.OperationID && o.Report == nil {
			return fmt.Errorf("%w: operation %s already waits for job %s", api.ErrConflict, j.OperationID, o.ID)
		}
	}
	j.Report = nil
	f.state.Jobs[j.ID] = j
	f.state.putOp(c.Operation)
	return nil
}

// applyJobReport records an agent's report (JobReportCmd); the first
// report of a job is the one kept.
func (f *FSM) applyJobReport(c JobReportCmd) any {
	r := c.Report
	j, ok := f.state.Jobs[r.JobID]
	switch {
	case !ok:
		return fmt.Errorf("%w: no job %s: its operation ended (or it was never listed); nothing to report", api.ErrNotFound, r.JobID)
	case j.HostID != r.HostID:
		return fmt.Errorf("%w: job %s was listed for host %s, not %s", api.ErrConflict, j.ID, j.HostID, r.HostID)
	case j.BackupID != r.BackupID || j.Kind != r.Kind:
		return api.Invalidf("job %s is the %s job of backup %s, not the %s job of backup %s", j.ID, j.Kind, j.BackupID, r.Kind, r.BackupID)
	case j.Report != nil:
		return nil // reported again: the first report stands
	}
	j.Report, j.ReportedAt = &r, c.At
	f.state.Jobs[j.ID] = j
	return nil
}

// applyBackupsDeleted marks the backups retention deleted.
func (f *FSM) applyBackupsDeleted(c BackupsDeletedCmd) any {
	n := 0
	for _, d := range c.Deleted {
		b, ok := f.state.Backups[d.ID]
		if !ok || b.Deleted || b.Status == api.BackupRunning {
			continue
		}
		b.Deleted, b.DeletedAt, b.DeletedReason = true, c.At, d.Reason
		f.state.Backups[b.ID] = b
		n++
	}
	return n
}

// applyBackupsForget drops the records of deleted backups.
func (f *FSM) applyBackupsForget(c BackupsForgetCmd) any {
	n := 0
	for _, id := range c.IDs {
		if b, ok := f.state.Backups[id]; ok && b.Deleted {
			delete(f.state.Backups, id)
			n++
		}
	}
	return n
}

// applyRestoreCreate starts a restore (RestoreCreateCmd).
func (f *FSM) applyRestoreCreate(c RestoreCreateCmd) any {
	a, ok := f.state.Addons[c.AddonID]
	if !ok || (c.App != "" && a.App != c.App) {
		return fmt.Errorf("%w: app %s has no addon %s", api.ErrNotFound, c.App, c.AddonID)
	}
	b, ok := f.state.Backups[c.BackupID]
	switch {
	case !ok:
		return fmt.Errorf("%w: no backup %s", api.ErrNotFound, c.BackupID)
	case b.App != a.App:
		return fmt.Errorf("%w: app %s has no backup %s", api.ErrNotFound, a.App, b.ID)
	case !b.Good():
		return fmt.Errorf("%w: backup %s cannot be restored (%s)", api.ErrConflict, b.ID, b.Status)
	}
	if o, busy := f.activeOperation(a.ID); busy {
		return fmt.Errorf("%w: addon %s has operation %s (%s) in progress", api.ErrConflict, a.ID, o.ID, o.Kind)
	}
	if a.Status != api.AddonRunning {
		return fmt.Errorf("%w: addon %s is %s; a backup can be restored once it is running", api.ErrConflict, a.ID, a.Status)
	}
	op := c.Operation
	if op.Kind != api.OpRestore || op.BackupID != b.ID || op.AddonID != a.ID {
		return api.Invalidf("a restore needs a restore operation of addon %s naming backup %s", a.ID, b.ID)
	}
	if _, ok := f.state.Operations[op.ID]; ok {
		return fmt.Errorf("%w: operation %s", errIDTaken, op.ID)
	}
	a.Status = api.AddonUpdating
	a.UpdatedAt = c.At
	f.state.Addons[a.ID] = a
	f.state.putOp(op)
	return op
}

// backupsOf lists app's backup records, newest first (CreatedAt, then id).
func (s *State) backupsOf(app string) []api.Backup {
	var out []api.Backup
	for _, b := range s.Backups {
		if b.App == app {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out
}
