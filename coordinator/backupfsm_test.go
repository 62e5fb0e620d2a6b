package coordinator

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// backupFSM is an FSM with a running starter "bk-app-1" (app bk-app) on h1.
type backupFSM struct {
	t   *testing.T
	f   *FSM
	idx uint64
}

func newBackupFSM(t *testing.T) *backupFSM {
	b := &backupFSM{t: t, f: NewFSM(testutil.Logger(t))}
	b.apply(CmdCatalogSet, CatalogSetCmd{Plans: api.DefaultPlans(), Engines: api.DefaultEngines()})
	b.apply(CmdHostUpsert, HostUpsertCmd{Host: api.Host{ID: "h1", Address: "127.0.0.11", MemoryMB: 4096, State: api.HostReady}})
	create := testAddon("bk-app", "bk-app-1", "")
	create.Addon.Plan = "redis-starter-512"
	b.apply(CmdAddonCreate, create)
	prov := create.Operation
	prov.State = api.OpRunning
	b.apply(CmdAddonPlaced, AddonPlacedCmd{AddonID: "bk-app-1", Entrypoint: "127.0.0.11:20001", Operation: prov,
		Members: []api.Member{{ID: "bk-app-1-redis-0", Role: api.RoleRedis, HostID: "h1", Port: 20000, RedisRole: "primary"}}})
	prov.State = api.OpDone
	b.apply(CmdOperationUpdate, OperationUpdateCmd{Operation: prov, AddonStatus: api.AddonRunning})
	return b
}

func (b *backupFSM) apply(ct CommandType, cmd any) any {
	b.t.Helper()
	b.idx++
	return b.f.Apply(entry(b.t, b.idx, ct, cmd))
}

// refused applies cmd and checks it is refused with want saying msg, and
// that the state did not change.
func (b *backupFSM) refused(ct CommandType, cmd any, want error, msg string) {
	b.t.Helper()
	before := stateJSON(b.t, b.f)
	err, _ := b.apply(ct, cmd).(error)
	if !errors.Is(err, want) || !strings.Contains(api.Message(err), msg) {
		b.t.Fatalf("%s = %v; want %v saying %q", ct, err, want, msg)
	}
	if after := stateJSON(b.t, b.f); !bytes.Equal(before, after) {
		b.t.Fatalf("a refused %s changed the state", ct)
	}
}

func (b *backupFSM) read(fn func(s *State)) {
	b.f.Read(func(s *State, _ uint64) { fn(s) })
}

// createCmd is the command that starts backup id (periodic for a day
// id, manual for an m... id) with operation opID.
func createCmd(id, opID string, at time.Time) BackupCreateCmd {
	b := api.Backup{ID: id, AddonID: "bk-app-1", App: "bk-app", Kind: api.BackupManual, CreatedAt: at, Status: api.BackupRunning, Attempts: 1}
	if !strings.Contains(id, "-m") {
		b.Kind, b.Day = api.BackupPeriodic, id[len("bk-app-1-"):len("bk-app-1-")+4]+"-"+id[len(id)-4:len(id)-2]+"-"+id[len(id)-2:]
	}
	op := api.Operation{ID: opID, AddonID: "bk-app-1", App: "bk-app", Kind: api.OpBackup, State: api.OpPending, Steps: operation.BackupSteps(),
		BackupID: id, CreatedAt: at, UpdatedAt: at}
	return BackupCreateCmd{Backup: b, Operation: op, At: at}
}

// finish ends op (done or failed) with the backup record b.
func (b *backupFSM) finish(op api.Operation, rec api.Backup, state api.OperationState) {
	b.t.Helper()
	op.State = state
	for i := range op.Steps {
		op.Steps[i].State = api.OpDone
	}
	if err, _ := b.apply(CmdBackupUpdate, BackupUpdateCmd{Backup: rec, Operation: op}).(error); err != nil {
		b.t.Fatal(err)
	}
}

func TestBackupCommands(t *testing.T) {
	b := newBackupFSM(t)
	const day = "bk-app-1-20261207"
	c := createCmd(day, "op-b1", t0)

	// Refusals change nothing.
	wrongApp := c
	wrongApp.Backup.App = "other-app"
	b.refused(CmdBackupCreate, wrongApp, api.ErrNotFound, "app other-app has no addon bk-app-1")
	noOp := c
	noOp.Operation.Kind = api.OpPlanChange
	b.refused(CmdBackupCreate, noOp, api.ErrInvalid, "needs a backup operation")
	badDay := c
	badDay.Backup.Day = "2026-12-08"
	b.refused(CmdBackupCreate, badDay, api.ErrInvalid, "its id must be bk-app-1-20261208")

	res, ok := b.apply(CmdBackupCreate, c).(BackupCreated)
	if !ok || res.Existing || res.Backup.Seq != 1 || res.Backup.StoreKey != "bk-app-1/"+day+".tar.gz.age" || res.Backup.Status != api.BackupRunning {
		t.Fatalf("create = %+v", res)
	}
	assertRoundTrip(t, b.f)

	// One operation per addon: a settings change, a plan change, another
	// backup wait for it (a backup leaves the addon running).
	b.refused(CmdAddonSettings, AddonSettingsCmd{AddonID: "bk-app-1", Settings: api.Settings{Persistence: api.PersistenceAOF},
		Operation: api.Operation{ID: "op-s", AddonID: "bk-app-1", Kind: api.OpSettingsChange}, At: t0}, api.ErrConflict, "has operation op-b1 (backup) in progress")
	b.refused(CmdAddonPlanChange, AddonPlanChangeCmd{AddonID: "bk-app-1", App: "bk-app", Plan: "redis-starter-1024",
		Operation: api.Operation{ID: "op-p", AddonID: "bk-app-1", Kind: api.OpPlanChange}, At: t0}, api.ErrConflict, "has operation op-b1 (backup) in progress")
	b.refused(CmdBackupCreate, createCmd("bk-app-1-m20261207T100000Z", "op-b2", t0), api.ErrConflict, "has operation op-b1 (backup) in progress")

	// Asked again (a new leader's Due, a double click): answered with the
	// record and its operation, nothing changes.
	before := stateJSON(t, b.f)
	again := createCmd(day, "op-other", t0.Add(time.Second))
	if r, ok := b.apply(CmdBackupCreate, again).(BackupCreated); !ok || !r.Existing || r.Operation.ID != "op-b1" || r.Backup.Seq != 1 {
		t.Fatalf("create again = %+v", r)
	}
	if !bytes.Equal(before, stateJSON(t, b.f)) {
		t.Fatalf("asking again changed the state")
	}

	// The step records the member; then the job; the report.
	op := c.Operation
	op.State = api.OpRunning
	op.Steps[0].State = api.OpDone
	rec := res.Backup
	rec.MemberID, rec.HostID = "bk-app-1-redis-0", "h1"
	rec.Seq, rec.StoreKey = 99, "elsewhere" // identity cannot change
	if err, _ := b.apply(CmdBackupUpdate, BackupUpdateCmd{Backup: rec, Operation: op}).(error); err != nil {
		t.Fatal(err)
	}
	b.read(func(s *State) {
		if got := s.Backups[day]; got.MemberID != "bk-app-1-redis-0" || got.Seq != 1 || got.StoreKey != res.Backup.StoreKey {
			t.Fatalf("record after update %+v", got)
		}
	})
	j := operation.Job{ID: "job-000000000001", Kind: api.JobBackup, OperationID: "op-b1", AddonID: "bk-app-1", BackupID: day, HostID: "h1",
		MemberID: "bk-app-1-redis-0", CreatedAt: t0}
	if err, _ := b.apply(CmdJobStart, JobStartCmd{Job: j, Operation: op}).(error); err != nil {
		t.Fatal(err)
	}
	second := j
	second.ID = "job-000000000002"
	b.refused(CmdJobStart, JobStartCmd{Job: second, Operation: op}, api.ErrConflict, "operation op-b1 already waits for job job-000000000001")
	b.read(func(s *State) {
		if jobs := (&backupEnv{}).jobsFor(s, "h1"); len(jobs) != 1 || jobs[0].ID != j.ID || jobs[0].Addr != "127.0.0.11:20000" ||
			jobs[0].Password.Reveal() != strings.Repeat("f", 64) || jobs[0].Backup.ID != day || jobs[0].PlanMemoryMB != 512 || jobs[0].Image == "" {
			t.Fatalf("jobs of h1 = %+v", jobs)
		}
	})
	assertRoundTrip(t, b.f)

	rep := api.JobReport{HostID: "h1", JobID: j.ID, BackupID: day, Kind: api.JobBackup, OK: true, SizeBytes: 100, Checksum: strings.Repeat("a", 64), KeyID: "k1"}
	wrongHost := rep
	wrongHost.HostID = "h2"
	b.refused(CmdJobReport, JobReportCmd{Report: wrongHost, At: t0}, api.ErrConflict, "job job-000000000001 was listed for host h1, not h2")
	wrongBackup := rep
	wrongBackup.BackupID = "bk-app-1-20261206"
	b.refused(CmdJobReport, JobReportCmd{Report: wrongBackup, At: t0}, api.ErrInvalid, "is the backup job of backup "+day)
	unknown := rep
	unknown.JobID = "job-00000000000f"
	b.refused(CmdJobReport, JobReportCmd{Report: unknown, At: t0}, api.ErrNotFound, "no job job-00000000000f")
	if err, _ := b.apply(CmdJobReport, JobReportCmd{Report: rep, At: t0}).(error); err != nil {
		t.Fatal(err)
	}
	// Reported again (the agent did not hear the answer): the first stands.
	late := rep
	late.SizeBytes = 1
	if err, _ := b.apply(CmdJobReport, JobReportCmd{Report: late, At: t0.Add(time.Second)}).(error); err != nil {
		t.Fatal(err)
	}
	b.read(func(s *State) {
		if got := s.Jobs[j.ID]; got.Report == nil || got.Report.SizeBytes != 100 || !got.ReportedAt.Equal(t0) {
			t.Fatalf("job %+v", got)
		}
		if jobs := (&backupEnv{}).jobsFor(s, "h1"); len(jobs) != 0 {
			t.Fatalf("a reported job is still listed: %+v", jobs)
		}
	})
	assertRoundTrip(t, b.f)

	// The attempt fails: the operation ends, its job is dropped.
	rec.Status, rec.Reason, rec.FinishedAt, rec.NextAttempt = api.BackupError, "dump failed", t0, t0.Add(10*time.Minute)
	b.finish(op, rec, api.OpFailed)
	b.read(func(s *State) {
		if len(s.Jobs) != 0 || s.Backups[day].Status != api.BackupError {
			t.Fatalf("jobs %+v, record %+v", s.Jobs, s.Backups[day])
		}
	})
	b.refused(CmdJobReport, JobReportCmd{Report: rep, At: t0}, api.ErrNotFound, "its operation ended")

	// The schedule retries it: same id, same Seq, a new operation.
	retry := createCmd(day, "op-b3", t0.Add(11*time.Minute))
	retry.Backup.Attempts = 2
	if r, ok := b.apply(CmdBackupCreate, retry).(BackupCreated); !ok || r.Existing || r.Backup.Seq != 1 || r.Backup.Attempts != 2 ||
		r.Backup.Status != api.BackupRunning || r.Backup.Reason != "" || !r.Backup.NextAttempt.IsZero() || !r.Backup.CreatedAt.Equal(t0.Add(11*time.Minute)) {
		t.Fatalf("retry = %+v", r)
	}
	done := retry.Backup
	done.Seq, done.StoreKey = 1, res.Backup.StoreKey
	done.Status, done.FinishedAt, done.SizeBytes, done.Checksum, done.KeyID, done.Verified = api.BackupDone, t0.Add(12*time.Minute), 100, strings.Repeat("a", 64), "k1", "verified: 1 key"
	b.finish(retry.Operation, done, api.OpDone)
	// A done backup is not retried.
	retry2 := createCmd(day, "op-b4", t0.Add(30*time.Minute))
	retry2.Backup.Attempts = 3
	if r, _ := b.apply(CmdBackupCreate, retry2).(BackupCreated); !r.Existing || r.Backup.Status != api.BackupDone {
		t.Fatalf("retry of a done backup = %+v", r)
	}

	// Seq: per app, +1 each, never reused once records are forgotten.
	m := createCmd("bk-app-1-m20261207T110000Z", "op-m1", t0.Add(time.Hour))
	m.Backup.Pinned = true
	r := b.apply(CmdBackupCreate, m).(BackupCreated)
	if r.Backup.Seq != 2 || !r.Backup.Pinned {
		t.Fatalf("manual = %+v", r.Backup)
	}
	mrec := r.Backup
	mrec.Status = api.BackupError
	b.finish(m.Operation, mrec, api.OpFailed)
	if n := b.apply(CmdBackupsDeleted, BackupsDeletedCmd{Deleted: []BackupDeletion{{ID: m.Backup.ID, Reason: "failed, 8 days old"}, {ID: "bk-app-1-20200101"}}, At: t0}); n != 1 {
		t.Fatalf("deleted %v; want 1 (unknown ids are skipped)", n)
	}
	if n := b.apply(CmdBackupsForget, BackupsForgetCmd{IDs: []string{m.Backup.ID, day}}); n != 1 {
		t.Fatalf("forgot %v; want only the deleted record", n)
	}
	m2 := createCmd("bk-app-1-m20261207T120000Z", "op-m2", t0.Add(2*time.Hour))
	if r := b.apply(CmdBackupCreate, m2).(BackupCreated); r.Backup.Seq != 3 {
		t.Fatalf("seq after a forgotten record = %d; want 3", r.Backup.Seq)
	}
	b.read(func(s *State) {
		if got := s.backupsOf("bk-app"); len(got) != 2 || got[0].ID != m2.Backup.ID || got[1].ID != day {
			t.Fatalf("backups of bk-app (newest first) = %+v", got)
		}
	})
	assertRoundTrip(t, b.f)

	// A removal supersedes a running backup: its record fails.
	rmOp := api.Operation{ID: "op-rm", AddonID: "bk-app-1", App: "bk-app", Kind: api.OpRemove, State: api.OpPending, Steps: operation.RemoveSteps(), CreatedAt: t0}
	b.apply(CmdAddonRemove, AddonRemoveCmd{AddonID: "bk-app-1", App: "bk-app", Operation: rmOp, At: t0.Add(3 * time.Hour)})
	b.read(func(s *State) {
		if got := s.Backups[m2.Backup.ID]; got.Status != api.BackupError || got.Reason != "the addon is being removed" {
			t.Fatalf("backup after removal %+v", got)
		}
	})
	assertRoundTrip(t, b.f)
}

func TestRestoreCreate(t *testing.T) {
	b := newBackupFSM(t)
	const day = "bk-app-1-20261207"
	c := createCmd(day, "op-b1", t0)
	rec := b.apply(CmdBackupCreate, c).(BackupCreated).Backup
	restore := func(id, opID string) RestoreCreateCmd {
		return RestoreCreateCmd{AddonID: "bk-app-1", App: "bk-app", BackupID: id, At: t0,
			Operation: api.Operation{ID: opID, AddonID: "bk-app-1", App: "bk-app", Kind: api.OpRestore, State: api.OpPending,
				Steps: operation.RestoreSteps(), BackupID: id, CreatedAt: t0, UpdatedAt: t0}}
	}
	b.refused(CmdRestoreCreate, restore(day, "op-r"), api.ErrConflict, "backup bk-app-1-20261207 cannot be restored (running)")
	rec.Status, rec.Verified = api.BackupDone, "verified: 3 keys"
	b.finish(c.Operation, rec, api.OpDone)
	b.refused(CmdRestoreCreate, restore("bk-app-1-20261206", "op-r"), api.ErrNotFound, "no backup bk-app-1-20261206")
	wrongApp := restore(day, "op-r")
	wrongApp.App = "other"
	b.refused(CmdRestoreCreate, wrongApp, api.ErrNotFound, "app other has no addon bk-app-1")
	res := b.apply(CmdRestoreCreate, restore(day, "op-r"))
	if op, ok := res.(api.Operation); !ok || op.Kind != api.OpRestore {
		t.Fatalf("restore = %#v", res)
	}
	b.read(func(s *State) {
		if a := s.Addons["bk-app-1"]; a.Status != api.AddonUpdating {
			t.Fatalf("addon %s during a restore", a.Status)
		}
	})
	b.refused(CmdRestoreCreate, restore(day, "op-r2"), api.ErrConflict, "has operation op-r (restore) in progress")
	b.refused(CmdOperationCancel, OperationCancelCmd{OperationID: "op-r", At: t0}, api.ErrConflict, "a restore cannot be cancelled")
	assertRoundTrip(t, b.f)

	// A restore never changes the record it restores; it ends the addon
	// running.
	op := restore(day, "op-r").Operation
	op.State = api.OpDone
	for i := range op.Steps {
		op.Steps[i].State = api.OpDone
	}
	changed := rec
	changed.Status = api.BackupError
	if err, _ := b.apply(CmdBackupUpdate, BackupUpdateCmd{Backup: changed, Operation: op, AddonStatus: api.AddonRunning}).(error); err != nil {
		t.Fatal(err)
	}
	b.read(func(s *State) {
		if s.Backups[day].Status != api.BackupDone || s.Addons["bk-app-1"].Status != api.AddonRunning {
			t.Fatalf("after the restore: backup %s, addon %s", s.Backups[day].Status, s.Addons["bk-app-1"].Status)
		}
	})
	assertRoundTrip(t, b.f)
}
