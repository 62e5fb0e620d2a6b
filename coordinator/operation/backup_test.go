package operation

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

var testLimits = BackupLimits{JobTimeout: 30 * time.Minute, ChooseWait: 10 * time.Minute, RetryEvery: 10 * time.Minute}

// backupOf is a running backup of addon id, periodic or manual.
func backupOf(id string, kind api.BackupKind) api.Backup {
	b := api.Backup{ID: id + "-20261207", AddonID: id, App: strings.TrimSuffix(id, "-1"), Kind: kind, Day: "2026-12-07", Seq: 3,
		CreatedAt: t0.Add(-time.Minute), Status: api.BackupRunning, Attempts: 1}
	if kind == api.BackupManual {
		b.ID, b.Day = id+"-m20261207T095900Z", ""
	}
	return b
}

// backupCase is one decision of a backup or restore operation.
type backupCase struct {
	name   string
	addon  string
	kind   api.BackupKind // of the record (default periodic)
	done   int            // steps done
	edit   func(f *fixture, v *View, op *api.Operation)
	want   Kind
	status api.AddonStatus
	detail string
	check  func(t *testing.T, d Decision)
}

// wantBackup checks the decision's effect is an UpdateBackup and returns
// its record.
func wantBackup(t *testing.T, d Decision) api.Backup {
	t.Helper()
	ub, ok := d.Effect.(UpdateBackup)
	if !ok {
		t.Fatalf("effect %T; want the backup record updated", d.Effect)
	}
	return ub.Backup
}

// wantFailedRecord checks the decision records the backup as failed with
// reason, retried by the schedule RetryEvery later when periodic.
func wantFailedRecord(t *testing.T, d Decision, reason string) {
	t.Helper()
	b := wantBackup(t, d)
	if b.Status != api.BackupError || !strings.Contains(b.Reason, reason) || !b.FinishedAt.Equal(t0) {
		t.Fatalf("record %+v; want error saying %q at %s", b, reason, t0)
	}
	switch {
	case b.Kind == api.BackupPeriodic && !b.NextAttempt.Equal(t0.Add(testLimits.RetryEvery)):
		t.Fatalf("periodic backup's next attempt %s; want %s", b.NextAttempt, t0.Add(testLimits.RetryEvery))
	case b.Kind == api.BackupManual && !b.NextAttempt.IsZero():
		t.Fatalf("manual backup with a next attempt %s", b.NextAttempt)
	}
}

func runBackupCases(t *testing.T, opKind api.OperationKind, tests []backupCase) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			kind := tc.kind
			if kind == "" {
				kind = api.BackupPeriodic
			}
			b := backupOf(tc.addon, kind)
			op := api.Operation{ID: "op-b", AddonID: tc.addon, Kind: opKind, State: api.OpRunning, BackupID: b.ID, CreatedAt: t0.Add(-time.Minute)}
			if opKind == api.OpBackup {
				op.Steps = BackupSteps()
			} else {
				op.Steps = RestoreSteps()
				b.Status, b.FinishedAt, b.Verified, b.KeyID, b.Checksum = api.BackupDone, t0.Add(-time.Hour), "verified: 10 keys", "k1", strings.Repeat("a", 64)
				a := f.addons[tc.addon]
				a.Status = api.AddonUpdating
				f.addons[tc.addon] = a
			}
			for i := 0; i < tc.done; i++ {
				op.Steps[i].State = api.OpDone
			}
			if tc.done < len(op.Steps) {
				op.Steps[tc.done].StartedAt = t0.Add(-time.Minute)
			}
			v := f.view(tc.addon)
			v.Backup, v.BackupKnown, v.BackupLimits = b, true, testLimits
			if tc.edit != nil {
				tc.edit(f, &v, &op)
				a, ok := f.addons[tc.addon]
				v.Addon, v.Exists = a, ok
			}
			d := Next(v, op)
			if d.Kind != tc.want || d.Status != tc.status {
				t.Fatalf("decision %v %q (status %q, effect %T); want %v (status %q)", d.Kind, d.Detail, d.Status, d.Effect, tc.want, tc.status)
			}
			wantIn(t, d.Detail, tc.detail)
			if d.Action != nil {
				t.Fatalf("action %v: backups and restores run as agent jobs, not engine actions", d.Action)
			}
			if tc.check != nil {
				tc.check(t, d)
			}
		})
	}
}

// job is the operation's job, listed at t0-listedAgo.
func job(kind api.JobKind, host, member string, listedAgo time.Duration, rep *api.JobReport) func(f *fixture, v *View, op *api.Operation) {
	return func(f *fixture, v *View, op *api.Operation) {
		v.Job = Job{ID: "job-0123456789ab", Kind: kind, OperationID: op.ID, AddonID: op.AddonID, BackupID: op.BackupID,
			HostID: host, MemberID: member, CreatedAt: t0.Add(-listedAgo), Report: rep}
		v.JobKnown = true
		if v.Backup.MemberID == "" {
			v.Backup.MemberID, v.Backup.HostID = member, host
		}
	}
}

func chosen(member, host string) func(f *fixture, v *View, op *api.Operation) {
	return func(_ *fixture, v *View, _ *api.Operation) { v.Backup.MemberID, v.Backup.HostID = member, host }
}

func okReport(verified string) *api.JobReport {
	return &api.JobReport{HostID: "h2", JobID: "job-0123456789ab", BackupID: "b-1-20261207", Kind: api.JobBackup, OK: true,
		SizeBytes: 3 << 20, Checksum: strings.Repeat("c", 64), KeyID: "k1", Keys: 50000, Verified: verified,
		ArchiveBytes: 9 << 20, ArchiveChecksum: strings.Repeat("d", 64)}
}

func TestBackupSteps(t *testing.T) {
	obs := func(id string, o Observed) func(f *fixture, v *View, op *api.Operation) {
		return func(f *fixture, _ *View, _ *api.Operation) { f.obs[id] = o }
	}
	runBackupCases(t, api.OpBackup, []backupCase{
		// choose member
		{name: "business: the replica in sync is dumped", addon: "b-1", want: Advance,
			detail: "b-1-redis-1 on host h2 (the replica, in sync with the primary b-1-redis-0)",
			check: func(t *testing.T, d Decision) {
				if b := wantBackup(t, d); b.MemberID != "b-1-redis-1" || b.HostID != "h2" || b.Status != api.BackupRunning {
					t.Fatalf("record %+v", b)
				}
			}},
		{name: "business: a replica behind waits, the primary is not dumped instead", addon: "b-1", want: Wait,
			edit: func(f *fixture, _ *View, _ *api.Operation) {
				p := f.obs["b-1-redis-0"]
				p.Offset = 5 << 20
				f.obs["b-1-redis-0"] = p
			},
			detail: "replica b-1-redis-1 is not in sync (b-1-redis-1 is 5242880 bytes behind the primary): not dumping the primary"},
		{name: "business: a replica still syncing waits", addon: "b-1", want: Wait,
			edit:   obs("b-1-redis-1", Observed{Seen: true, State: api.MemberStarting}),
			detail: "replica b-1-redis-1 is not in sync (b-1-redis-1 is not a replica yet (starting)): not dumping the primary"},
		{name: "business: the primary not serving waits (a replica of nobody is not in sync)", addon: "b-1", want: Wait,
			edit:   obs("b-1-redis-0", Observed{Seen: true, State: api.MemberFailed}),
			detail: "the primary b-1-redis-0 is not serving (failed)"},
		{name: "business: the replica's host is down: failed at once (healing must not wait)", addon: "b-1", want: Fail,
			edit:   func(f *fixture, _ *View, _ *api.Operation) { downHost(f, "h2") },
			detail: "host h2 of replica b-1-redis-1 is down: not dumping the primary",
			check:  func(t *testing.T, d Decision) { wantFailedRecord(t, d, "host h2 of replica b-1-redis-1 is down") }},
		{name: "business: no replica at all", addon: "b-1", want: Wait,
			edit: func(f *fixture, _ *View, _ *api.Operation) {
				a := f.addons["b-1"]
				a.Members = append([]api.Member{a.Members[0]}, a.Members[2:]...)
				f.addons["b-1"] = a
			},
			detail: "addon b-1 has no replica (only its primary b-1-redis-0): not dumping the primary"},
		{name: "business: waited too long for a member", addon: "b-1", want: Fail,
			edit: func(f *fixture, _ *View, op *api.Operation) {
				f.obs["b-1-redis-1"] = Observed{Seen: true, State: api.MemberStarting}
				op.Steps[0].StartedAt = t0.Add(-11 * time.Minute)
			},
			detail: "no member to dump after 10m0s: replica b-1-redis-1 is not in sync",
			check:  func(t *testing.T, d Decision) { wantFailedRecord(t, d, "no member to dump after 10m0s") }},
		{name: "starter: its only node", addon: "s-1", kind: api.BackupManual, want: Advance, detail: "s-1-redis-0 on host h4 (its only redis node)",
			check: func(t *testing.T, d Decision) {
				if b := wantBackup(t, d); b.MemberID != "s-1-redis-0" || b.HostID != "h4" {
					t.Fatalf("record %+v", b)
				}
			}},
		{name: "starter: node not serving waits", addon: "s-1", want: Wait, edit: obs("s-1-redis-0", Observed{Seen: true, State: api.MemberStarting}),
			detail: "s-1-redis-0 is not serving (starting)"},
		{name: "starter: node not reported yet waits", addon: "s-1", want: Wait,
			edit: func(f *fixture, _ *View, _ *api.Operation) { delete(f.obs, "s-1-redis-0") }, detail: "s-1-redis-0 is not serving (not reported)"},
		{name: "starter: its host is down: manual backup failed, no retry time", addon: "s-1", kind: api.BackupManual, want: Fail,
			edit:   func(f *fixture, _ *View, _ *api.Operation) { downHost(f, "h4") },
			detail: "host h4 of s-1-redis-0 is down",
			check:  func(t *testing.T, d Decision) { wantFailedRecord(t, d, "host h4 of s-1-redis-0 is down") }},
		{name: "the addon is gone", addon: "b-1", want: Fail, edit: func(f *fixture, _ *View, _ *api.Operation) { delete(f.addons, "b-1") },
			detail: "the addon no longer exists", check: func(t *testing.T, d Decision) { wantFailedRecord(t, d, "the addon no longer exists") }},
		{name: "no record", addon: "b-1", want: Fail, edit: func(_ *fixture, v *View, _ *api.Operation) { v.BackupKnown = false },
			detail: "backup b-1-20261207 has no record"},

		// dump
		{name: "dump: the job is listed on the chosen member's host", addon: "b-1", done: 1, want: Wait, edit: chosen("b-1-redis-1", "h2"),
			detail: "dump of b-1-redis-1 listed for host h2's agent",
			check: func(t *testing.T, d Decision) {
				if sj, ok := d.Effect.(StartJob); !ok || sj != (StartJob{Kind: api.JobBackup, HostID: "h2", MemberID: "b-1-redis-1"}) {
					t.Fatalf("effect %#v; want the dump job on h2", d.Effect)
				}
			}},
		{name: "dump: resumed with its job listed: waits for the same job, no second one", addon: "b-1", done: 1, want: Wait,
			edit:   job(api.JobBackup, "h2", "b-1-redis-1", 5*time.Minute, nil),
			detail: "waiting for host h2's agent to dump b-1-redis-1 (job job-0123456789ab)",
			check: func(t *testing.T, d Decision) {
				if d.Effect != nil {
					t.Fatalf("effect %T: a listed job must not be listed again", d.Effect)
				}
			}},
		{name: "dump: the job's host went down", addon: "b-1", done: 1, want: Fail,
			edit: func(f *fixture, v *View, op *api.Operation) {
				job(api.JobBackup, "h2", "b-1-redis-1", time.Minute, nil)(f, v, op)
				downHost(f, "h2")
			},
			detail: "host h2 is down: job job-0123456789ab (dump b-1-redis-1) did not finish",
			check:  func(t *testing.T, d Decision) { wantFailedRecord(t, d, "host h2 is down") }},
		{name: "dump: silent for the job timeout", addon: "b-1", done: 1, want: Fail, edit: job(api.JobBackup, "h2", "b-1-redis-1", 30*time.Minute, nil),
			detail: "job job-0123456789ab (dump b-1-redis-1) on host h2 reported nothing for 30m0s",
			check:  func(t *testing.T, d Decision) { wantFailedRecord(t, d, "reported nothing for 30m0s") }},
		{name: "dump: the agent reports a failure", addon: "b-1", done: 1, want: Fail,
			edit:   job(api.JobBackup, "h2", "b-1-redis-1", time.Minute, &api.JobReport{OK: false, Error: "BGSAVE failed: rdb_last_bgsave_status:err\nmore"}),
			detail: "dump failed on host h2: BGSAVE failed: rdb_last_bgsave_status:err",
			check: func(t *testing.T, d Decision) {
				wantFailedRecord(t, d, "dump failed on host h2: BGSAVE failed: rdb_last_bgsave_status:err")
				if strings.Contains(wantBackup(t, d).Reason, "more") {
					t.Fatalf("the reason is not one line")
				}
			}},
		{name: "dump: reported done", addon: "b-1", done: 1, want: Advance, edit: job(api.JobBackup, "h2", "b-1-redis-1", time.Minute, okReport("verified: 50000 keys, 100 sampled values")),
			detail: "dumped 50000 keys: 3.0 MB stored (job job-0123456789ab)",
			check: func(t *testing.T, d Decision) {
				if d.Effect != nil {
					t.Fatalf("effect %T", d.Effect)
				}
			}},

		// record
		{name: "record: done with the figures and the drill's verdict", addon: "b-1", done: 2, want: Advance,
			edit:   job(api.JobBackup, "h2", "b-1-redis-1", time.Minute, okReport("verified: 50000 keys, 100 sampled values")),
			detail: "backup b-1-20261207 done: 50000 keys, 3.0 MB; verified: 50000 keys, 100 sampled values",
			check: func(t *testing.T, d Decision) {
				b := wantBackup(t, d)
				if b.Status != api.BackupDone || !b.Good() || b.SizeBytes != 3<<20 || b.Checksum != strings.Repeat("c", 64) || b.KeyID != "k1" ||
					b.Keys != 50000 || b.ArchiveBytes != 9<<20 || b.ArchiveChecksum != strings.Repeat("d", 64) || !b.FinishedAt.Equal(t0) || b.Reason != "" {
					t.Fatalf("record %+v", b)
				}
			}},
		{name: "record: not verified: done, but not a good backup", addon: "b-1", done: 2, want: Advance,
			edit:   job(api.JobBackup, "h2", "b-1-redis-1", time.Minute, okReport("not verified: 49000 keys loaded, 50000 at BGSAVE")),
			detail: "NOT verified by the restore drill, so not counted as a good backup: 49000 keys loaded, 50000 at BGSAVE",
			check: func(t *testing.T, d Decision) {
				if b := wantBackup(t, d); b.Status != api.BackupDone || b.Good() {
					t.Fatalf("record %+v: want done and not good", b)
				}
			}},
		{name: "record: a retried periodic backup is done: its retry time is cleared", addon: "b-1", done: 2, want: Advance,
			edit: func(f *fixture, v *View, op *api.Operation) {
				job(api.JobBackup, "h2", "b-1-redis-1", time.Minute, okReport("verified: 1 key"))(f, v, op)
				v.Backup.Attempts, v.Backup.NextAttempt = 2, t0.Add(-time.Minute)
			},
			detail: "done",
			check: func(t *testing.T, d Decision) {
				if b := wantBackup(t, d); !b.NextAttempt.IsZero() || b.Attempts != 2 {
					t.Fatalf("record %+v", b)
				}
			}},
		{name: "record: nothing reported to record", addon: "b-1", done: 2, want: Fail, detail: "no successful dump report to record"},

		// cancel
		{name: "cancelled: the record says failed", addon: "b-1", done: 1, want: Cancel,
			edit: func(f *fixture, v *View, op *api.Operation) {
				job(api.JobBackup, "h2", "b-1-redis-1", time.Minute, nil)(f, v, op)
				op.CancelRequested = true
			},
			detail: "cancelled by an operator; done: choose member; not done: dump, record; backup b-1-20261207 is recorded as failed",
			check:  func(t *testing.T, d Decision) { wantFailedRecord(t, d, "cancelled by an operator") }},
	})
}

func TestRestoreSteps(t *testing.T) {
	runBackupCases(t, api.OpRestore, []backupCase{
		{name: "the job is listed on the primary's host", addon: "b-1", want: Wait,
			detail: "restore of backup b-1-20261207 into the primary b-1-redis-0 listed for host h1's agent",
			check: func(t *testing.T, d Decision) {
				if sj, ok := d.Effect.(StartJob); !ok || sj != (StartJob{Kind: api.JobRestore, HostID: "h1", MemberID: "b-1-redis-0"}) {
					t.Fatalf("effect %#v; want the restore job on the primary's host", d.Effect)
				}
			}},
		{name: "starter: into its only node", addon: "s-1", want: Wait, detail: "into the primary s-1-redis-0 listed for host h4's agent"},
		{name: "the primary does not serve as the primary: waits", addon: "b-1", want: Wait,
			edit: func(f *fixture, _ *View, _ *api.Operation) {
				f.obs["b-1-redis-0"] = Observed{Seen: true, State: api.MemberRunning, RedisRole: "slave"}
			},
			detail: "waiting to restore: the primary b-1-redis-0 is not serving as the primary (running as slave)"},
		{name: "the primary's host is down for too long: failed, nothing restored", addon: "b-1", want: Fail, status: api.AddonRunning,
			edit: func(f *fixture, _ *View, op *api.Operation) {
				downHost(f, "h1")
				op.Steps[0].StartedAt = t0.Add(-10 * time.Minute)
			},
			detail: "nothing was restored: after 10m0s, host h1 of the primary b-1-redis-0 is down"},
		{name: "the backup was deleted meanwhile: failed, the addon runs", addon: "b-1", want: Fail, status: api.AddonRunning,
			edit: func(_ *fixture, v *View, _ *api.Operation) {
				v.Backup.Deleted, v.Backup.DeletedAt, v.Backup.DeletedReason = true, t0, "older than 6 months"
			},
			detail: "backup b-1-20261207 was deleted by retention on 2026-12-07 (older than 6 months): nothing was restored"},
		{name: "resumed: waits for its job", addon: "b-1", want: Wait, edit: job(api.JobRestore, "h1", "b-1-redis-0", time.Minute, nil),
			detail: "waiting for host h1's agent to restore backup b-1-20261207 into b-1-redis-0 (job job-0123456789ab)"},
		{name: "the job's host goes down: failed, the addon runs with what was copied", addon: "b-1", want: Fail, status: api.AddonRunning,
			edit: func(f *fixture, v *View, op *api.Operation) {
				job(api.JobRestore, "h1", "b-1-redis-0", time.Minute, nil)(f, v, op)
				downHost(f, "h1")
			},
			detail: "host h1 is down: job job-0123456789ab (restore backup b-1-20261207 into b-1-redis-0) did not finish; the addon may hold part of the backup: restore again"},
		{name: "the agent reports a failure", addon: "b-1", want: Fail, status: api.AddonRunning,
			edit:   job(api.JobRestore, "h1", "b-1-redis-0", time.Minute, &api.JobReport{OK: false, Error: "backup b-1-20261207 is corrupt: checksum mismatch"}),
			detail: "restore of backup b-1-20261207 failed on host h1: backup b-1-20261207 is corrupt: checksum mismatch; the addon's data was not touched"},
		{name: "the agent reports a failure after the flush", addon: "b-1", want: Fail, status: api.AddonRunning,
			edit:   job(api.JobRestore, "h1", "b-1-redis-0", time.Minute, &api.JobReport{OK: false, Flushed: true, Restored: 1200, Error: "copy keys: RESTORE: connection reset"}),
			detail: "restore of backup b-1-20261207 failed on host h1 after 1200 keys: copy keys: RESTORE: connection reset; the addon holds part of the backup: restore again"},
		{name: "restored", addon: "b-1", want: Advance,
			edit:   job(api.JobRestore, "h1", "b-1-redis-0", time.Minute, &api.JobReport{OK: true, Restored: 50000}),
			detail: "50000 keys restored from backup b-1-20261207 into b-1-redis-0"},
		{name: "mark running", addon: "b-1", done: 1, want: Advance, status: api.AddonRunning},
		{name: "the addon is gone", addon: "b-1", want: Fail, edit: func(f *fixture, _ *View, _ *api.Operation) { delete(f.addons, "b-1") },
			detail: "the addon no longer exists"},
	})
}

// TestBackupResumes walks a backup the way the engine does, with a new
// leader (a fresh decision from the recorded state alone) at every point:
// each step is done once and in order, and the dump job is listed once.
func TestBackupResumes(t *testing.T) {
	f := newFixture()
	b := backupOf("b-1", api.BackupPeriodic)
	op := api.Operation{ID: "op-b", AddonID: "b-1", Kind: api.OpBackup, State: api.OpRunning, Steps: BackupSteps(), BackupID: b.ID}
	var j *Job
	jobs := 0
	for i := 0; i < 12 && op.CurrentStep() < len(op.Steps); i++ {
		v := f.view("b-1")
		v.Backup, v.BackupKnown, v.BackupLimits = b, true, testLimits
		if j != nil {
			v.Job, v.JobKnown = *j, true
		}
		d := Next(v, op)
		switch eff := d.Effect.(type) {
		case StartJob:
			jobs++
			j = &Job{ID: "job-1", Kind: eff.Kind, OperationID: op.ID, HostID: eff.HostID, MemberID: eff.MemberID, CreatedAt: t0}
		case UpdateBackup:
			b = eff.Backup
		}
		switch d.Kind {
		case Advance:
			op.Steps[op.CurrentStep()].State = api.OpDone
		case Wait:
			if j != nil && j.Report == nil && d.Effect == nil {
				j.Report = okReport("verified: 50000 keys") // the agent reports
			}
		default:
			t.Fatalf("step %q: %v %q", op.Steps[op.CurrentStep()].Name, d.Kind, d.Detail)
		}
	}
	if op.CurrentStep() != len(op.Steps) || jobs != 1 {
		t.Fatalf("steps %+v, %d jobs listed; want all done with one job", op.Steps, jobs)
	}
	if b.Status != api.BackupDone || b.MemberID != "b-1-redis-1" || !b.Good() {
		t.Fatalf("record %+v", b)
	}
}

// TestJobStepsNeverStuck: a dump or a restore may take longer than the
// stuck bound (it fails at the job timeout instead); other backup steps
// are marked stuck as usual.
func TestJobStepsNeverStuck(t *testing.T) {
	l := DefaultLimits()
	op := api.Operation{Kind: api.OpBackup, Steps: BackupSteps()}
	op.Steps[0].StartedAt = t0.Add(-time.Hour)
	if Stuck(op, t0, l) == "" {
		t.Fatalf("choose member waiting an hour is not stuck")
	}
	op.Steps[0].State = api.OpDone
	op.Steps[1].StartedAt = t0.Add(-time.Hour)
	if s := Stuck(op, t0, l); s != "" {
		t.Fatalf("a dump running an hour is stuck: %s", s)
	}
	r := api.Operation{Kind: api.OpRestore, Steps: RestoreSteps()}
	r.Steps[0].StartedAt = t0.Add(-time.Hour)
	if s := Stuck(r, t0, l); s != "" {
		t.Fatalf("a restore running an hour is stuck: %s", s)
	}
	if err := Cancellable(api.Operation{ID: "op-r", Kind: api.OpRestore, State: api.OpRunning, BackupID: "b-1-20261207", AddonID: "b-1"}); !errors.Is(err, api.ErrConflict) ||
		!strings.Contains(err.Error(), "a restore cannot be cancelled (the data is being replaced)") {
		t.Fatalf("cancel a restore: %v", err)
	}
	if err := Cancellable(api.Operation{Kind: api.OpBackup, State: api.OpRunning}); err != nil {
		t.Fatalf("cancel a backup: %v", err)
	}
}

func TestCheckBackup(t *testing.T) {
	run := api.Addon{ID: "a-1", Status: api.AddonRunning}
	for _, tc := range []struct {
		name   string
		status api.AddonStatus
		busy   bool
		err    error
		want   string
	}{
		{name: "running", status: api.AddonRunning},
		{name: "another operation", status: api.AddonRunning, busy: true, err: api.ErrConflict,
			want: "addon a-1 has operation op-9 (plan-change) in progress; a backup starts once it is done (cacheplane operations --addon a-1)"},
		{name: "provisioning", status: api.AddonProvisioning, err: api.ErrConflict, want: "addon a-1 is provisioning; backups are taken once it is running"},
		{name: "removing", status: api.AddonRemoving, busy: true, err: api.ErrConflict, want: "addon a-1 is being removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := run
			a.Status = tc.status
			err := CheckBackup(a, api.Operation{ID: "op-9", Kind: api.OpPlanChange}, tc.busy)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.err) || api.Message(err) != tc.want {
				t.Fatalf("err %v; want %v %q", err, tc.err, tc.want)
			}
		})
	}
}

func TestCheckRestore(t *testing.T) {
	good := api.Backup{ID: "a-1-20261207", AddonID: "a-1", App: "app", Kind: api.BackupPeriodic, Status: api.BackupDone, Verified: "verified: 3 keys"}
	req := func() RestoreRequest {
		return RestoreRequest{App: "app", BackupID: good.ID, Confirm: "app", Backup: good, BackupKnown: true,
			Addon: api.Addon{ID: "a-1", App: "app", Status: api.AddonRunning}, AddonKnown: true}
	}
	for _, tc := range []struct {
		name string
		edit func(r *RestoreRequest)
		err  error
		want string
	}{
		{name: "ok"},
		{name: "not drilled yet counts as good", edit: func(r *RestoreRequest) { r.Backup.Verified = "" }},
		{name: "unknown backup", edit: func(r *RestoreRequest) { r.BackupKnown = false }, err: api.ErrNotFound,
			want: "no backup a-1-20261207 (see: cacheplane backups --app app)"},
		{name: "another app's backup", edit: func(r *RestoreRequest) { r.Backup.App = "other" }, err: api.ErrNotFound,
			want: "app app has no backup a-1-20261207 (it is a backup of app other)"},
		{name: "failed", edit: func(r *RestoreRequest) {
			r.Backup.Status, r.Backup.Reason = api.BackupError, "dump failed on host h2: disk full"
		}, err: api.ErrConflict,
			want: "backup a-1-20261207 failed (dump failed on host h2: disk full); pick a good one (cacheplane backups --app app)"},
		{name: "running", edit: func(r *RestoreRequest) { r.Backup.Status = api.BackupRunning }, err: api.ErrConflict, want: "backup a-1-20261207 is still running"},
		{name: "not verified", edit: func(r *RestoreRequest) { r.Backup.Verified = "not verified: 2 keys loaded, 3 at BGSAVE" }, err: api.ErrConflict,
			want: "backup a-1-20261207 is not verified: 2 keys loaded, 3 at BGSAVE; pick a good one"},
		{name: "deleted", edit: func(r *RestoreRequest) {
			r.Backup.Deleted, r.Backup.DeletedAt, r.Backup.DeletedReason = true, t0, "weekly 2026-W40 keeps a newer backup"
		}, err: api.ErrConflict, want: "backup a-1-20261207 was deleted by retention on 2026-12-07 (weekly 2026-W40 keeps a newer backup)"},
		{name: "no confirmation", edit: func(r *RestoreRequest) { r.Confirm = "" }, err: api.ErrInvalid,
			want: "type the app name to confirm: --confirm app"},
		{name: "wrong confirmation", edit: func(r *RestoreRequest) { r.Confirm = "ap" }, err: api.ErrInvalid, want: "--confirm app"},
		{name: "no addon", edit: func(r *RestoreRequest) { r.AddonKnown = false }, err: api.ErrNotFound, want: "app app has no redis addon to restore into"},
		{name: "busy", edit: func(r *RestoreRequest) { r.Busy, r.Active = true, api.Operation{ID: "op-7", Kind: api.OpBackup} }, err: api.ErrConflict,
			want: "addon a-1 has operation op-7 (backup) in progress; restore once it is done (cacheplane operations --addon a-1)"},
		{name: "not running", edit: func(r *RestoreRequest) { r.Addon.Status = api.AddonError }, err: api.ErrConflict,
			want: "addon a-1 is error; a backup can be restored once it is running"},
		{name: "an unknown backup is said before a wrong confirmation", edit: func(r *RestoreRequest) { r.BackupKnown, r.Confirm = false, "" }, err: api.ErrNotFound,
			want: "no backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := req()
			if tc.edit != nil {
				tc.edit(&r)
			}
			err := CheckRestore(r)
			if tc.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v; want %v", err, tc.err)
			}
			wantIn(t, api.Message(err), tc.want)
			if s := api.HTTPStatus(err); s < 400 || s >= 500 || strings.Contains(api.Message(err), "\n") {
				t.Fatalf("status %d / message %q: want one line and a 4xx", s, api.Message(err))
			}
		})
	}
}
