package coordinator

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	dto "github.com/prometheus/client_model/go"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// fsmWriter applies commands straight to an FSM (the backups controller
// without Raft).
type fsmWriter struct {
	f   *FSM
	mu  sync.Mutex
	idx uint64
}

func (w *fsmWriter) FSM() *FSM { return w.f }

func (w *fsmWriter) Apply(_ context.Context, t CommandType, payload any) (any, error) {
	data, err := Encode(t, payload)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.idx++
	idx := w.idx
	w.mu.Unlock()
	res := w.f.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: data})
	if err, ok := res.(error); ok {
		return nil, err
	}
	return res, nil
}

// TestBackupsController drives the leader's schedule and retention with a
// clock of its own and a real local store: the day's backup starts once
// (a second look adopts it), waits while the member does not serve, and
// retention deletes the stored objects it drops, records the deletions
// with their reasons, and forgets them 30 days later.
func TestBackupsController(t *testing.T) {
	b := newBackupFSM(t)
	w := &fsmWriter{f: b.f, idx: 1000}
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.BackupStore = backupstore.Config{Kind: backupstore.KindLocal, Dir: filepath.Join(dir, "backups")}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	keys, _, err := LoadBackupKeys(cfg.BackupKeysFile, t0)
	if err != nil {
		t.Fatal(err)
	}
	env, err := newBackupEnv(cfg, keys, newBackupMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	now := time.Date(2026, 12, 7, 3, 30, 0, 0, paris) // after the whole 01:00 + 2h window
	obs := newObserved()
	c := &backupsController{store: w, obs: obs, env: env, log: testutil.Logger(t), now: func() time.Time { return now }, every: time.Second}
	ctx := context.Background()

	// Not reported yet: the day's backup waits, nothing starts.
	c.due(ctx)
	if got := testGauge(t, env.metrics); got != 1 {
		t.Fatalf("waiting %v; want 1", got)
	}
	b.read(func(s *State) {
		if len(s.Backups) != 0 {
			t.Fatalf("a backup started without a member to dump: %+v", s.Backups)
		}
	})
	obs.record(api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{{MemberID: "bk-app-1-redis-0", AddonID: "bk-app-1",
		Role: api.RoleRedis, State: api.MemberRunning, RedisRole: "master"}}}, now)
	c.due(ctx)
	c.due(ctx) // a second look adopts the running one
	dayID := backup.PeriodicID("bk-app-1", "2026-12-07")
	var op api.Operation
	b.read(func(s *State) {
		bk, ok := s.Backups[dayID]
		if !ok || len(s.Backups) != 1 || bk.HostID != "h1" || bk.Kind != api.BackupPeriodic || bk.Status != api.BackupRunning || bk.Seq != 1 {
			t.Fatalf("backups after due: %+v", s.Backups)
		}
		op, _ = s.activeOperation("bk-app-1")
	})
	if op.Kind != api.OpBackup || op.BackupID != dayID || testGauge(t, env.metrics) != 0 {
		t.Fatalf("operation %+v", op)
	}
	finishBackup := func(op api.Operation, rec api.Backup, at time.Time) {
		t.Helper()
		rec.Status, rec.FinishedAt, rec.Verified = api.BackupDone, at, "verified: 1 key"
		rec.SizeBytes, rec.Checksum, rec.KeyID = 10, strings.Repeat("a", 64), keys.Current
		b.finish(op, rec, api.OpDone)
	}
	var rec api.Backup
	b.read(func(s *State) { rec = s.Backups[dayID] })
	finishBackup(op, rec, now)

	// Two hundred days of manual backups, each with its stored object.
	st, err := env.Store()
	if err != nil {
		t.Fatal(err)
	}
	for d := 1; d <= 200; d++ {
		at := now.AddDate(0, 0, -d).UTC()
		cmd := createCmd(backup.ManualID("bk-app-1", at), "op-old-"+at.Format("20060102"), at)
		res, err := w.Apply(ctx, CmdBackupCreate, cmd)
		if err != nil {
			t.Fatalf("day -%d: %v", d, err)
		}
		rec := res.(BackupCreated).Backup
		finishBackup(cmd.Operation, rec, at)
		if _, err := st.Put(ctx, rec.StoreKey, bytes.NewReader([]byte("sealed"))); err != nil {
			t.Fatal(err)
		}
	}
	var all []api.Backup
	b.read(func(s *State) {
		for _, x := range s.Backups {
			all = append(all, x)
		}
	})
	verdicts := backup.Retain(now, paris, all)
	var wantGone []string
	for _, v := range verdicts {
		if !v.Keep {
			wantGone = append(wantGone, v.ID)
		}
	}
	sort.Strings(wantGone)
	if len(wantGone) < 150 {
		t.Fatalf("retention drops only %d of 201 backups", len(wantGone))
	}

	c.retain(ctx)
	var gone []string
	b.read(func(s *State) {
		for id, x := range s.Backups {
			if x.Deleted {
				gone = append(gone, id)
				if x.DeletedReason == "" || !x.DeletedAt.Equal(now.UTC()) {
					t.Fatalf("deleted record %+v", x)
				}
			}
		}
	})
	sort.Strings(gone)
	if strings.Join(gone, ",") != strings.Join(wantGone, ",") {
		t.Fatalf("deleted %d backups; retention said %d", len(gone), len(wantGone))
	}
	for _, id := range wantGone {
		var key string
		b.read(func(s *State) { key = s.Backups[id].StoreKey })
		if _, err := st.Stat(ctx, key); !errors.Is(err, backupstore.ErrNotFound) {
			t.Fatalf("object of deleted backup %s: %v", id, err)
		}
	}
	objs, err := st.List(ctx, "bk-app-1/")
	if err != nil || len(objs) != 200-len(wantGone) { // the day's backup has no object here
		t.Fatalf("objects left %d (%v); want %d", len(objs), err, 200-len(wantGone))
	}

	// The same day again: nothing more; 31 days later the deleted
	// records are forgotten (and the next day's retention has run).
	before := stateJSON(t, b.f)
	c.retain(ctx)
	if !bytes.Equal(before, stateJSON(t, b.f)) {
		t.Fatalf("retention ran twice in one day")
	}
	now = now.AddDate(0, 0, 31)
	c.retain(ctx)
	b.read(func(s *State) {
		for _, id := range wantGone {
			if _, ok := s.Backups[id]; ok {
				t.Fatalf("record %s deleted 31 days ago is still there", id)
			}
		}
		if _, ok := s.Backups[dayID]; !ok {
			t.Fatalf("the newest backup was dropped")
		}
	})
}

func testGauge(t *testing.T, m *backupMetrics) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.waiting.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetGauge().GetValue()
}
