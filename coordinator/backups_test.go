package coordinator

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/coordinator/operation"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// fakeAgent plays the agent of one host for backups: it heartbeats the
// members as running and answers the jobs its assignments list — a dump is
// a small tar.gz, sealed with the job's keyring and put into the job's
// store like the real runner does; a restore just reports. It is not the
// subject here (agent/backup is tested on its own).
type fakeAgent struct {
	t    *testing.T
	peer *api.Client
	host string

	mu          sync.Mutex
	members     []api.MemberStatus
	failBackups int               // fail the next n dump jobs
	hold        bool              // see jobs, run none
	seen        map[string]int    // job id -> times listed
	archives    map[string][]byte // backup id -> plaintext archive stored last
	handled     map[string]bool
	jobs        []api.BackupJob
}

func (a *fakeAgent) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		a.mu.Lock()
		members := append([]api.MemberStatus(nil), a.members...)
		a.mu.Unlock()
		_, _ = a.peer.Heartbeat(ctx, api.HeartbeatRequest{HostID: a.host, Members: members})
		if as, err := a.peer.Assignments(ctx, a.host, 0, 0); err == nil {
			for _, j := range as.Jobs {
				a.handle(ctx, j)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *fakeAgent) handle(ctx context.Context, j api.BackupJob) {
	a.mu.Lock()
	if a.seen != nil {
		a.seen[j.ID]++
	}
	if a.handled[j.ID] || a.hold {
		a.mu.Unlock()
		return
	}
	a.jobs = append(a.jobs, j)
	fail := j.Kind == api.JobBackup && a.failBackups > 0
	if fail {
		a.failBackups--
	}
	a.mu.Unlock()
	rep := api.JobReport{HostID: a.host, JobID: j.ID, BackupID: j.Backup.ID, Kind: j.Kind, OK: true, StartedAt: time.Now(), FinishedAt: time.Now()}
	switch {
	case fail:
		rep.OK, rep.Error = false, "BGSAVE failed: rdb_last_bgsave_status:err (disk full)"
	case j.Kind == api.JobBackup:
		if err := a.dump(ctx, j, &rep); err != nil {
			rep.OK, rep.Error = false, err.Error()
		}
	default:
		rep.Restored = 42
	}
	err := a.peer.ReportJob(ctx, rep)
	if err != nil && !errors.Is(err, api.ErrNotFound) {
		a.t.Logf("report job %s: %v (retried)", j.ID, err)
		return
	}
	a.mu.Lock()
	a.handled[j.ID] = true
	a.mu.Unlock()
}

func (a *fakeAgent) dump(ctx context.Context, j api.BackupJob, rep *api.JobReport) error {
	var cfg backupstore.Config
	var keys backupstore.Keyring
	if err := json.Unmarshal(j.Store, &cfg); err != nil {
		return err
	}
	if err := json.Unmarshal(j.Keys, &keys); err != nil {
		return err
	}
	st, err := backupstore.Open(cfg)
	if err != nil {
		return err
	}
	var archive bytes.Buffer
	gz := gzip.NewWriter(&archive)
	tw := tar.NewWriter(gz)
	body := []byte("REDIS0011 fake dump of " + j.MemberID + " for " + j.Backup.ID)
	if err := tw.WriteHeader(&tar.Header{Name: "dump.rdb", Mode: 0o600, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, _ = tw.Write(body)
	_ = tw.Close()
	_ = gz.Close()
	var sealed bytes.Buffer
	w, keyID, err := backupstore.Seal(&sealed, keys)
	if err != nil {
		return err
	}
	_, _ = w.Write(archive.Bytes())
	if err := w.Close(); err != nil {
		return err
	}
	n, err := st.Put(ctx, j.Backup.StoreKey, bytes.NewReader(sealed.Bytes()))
	if err != nil {
		return err
	}
	sum, asum := sha256.Sum256(sealed.Bytes()), sha256.Sum256(archive.Bytes())
	rep.SizeBytes, rep.Checksum, rep.KeyID, rep.Keys = n, hex.EncodeToString(sum[:]), keyID, 42
	rep.ArchiveBytes, rep.ArchiveChecksum = int64(archive.Len()), hex.EncodeToString(asum[:])
	rep.Verified = "verified: 42 keys, 10 sampled values match"
	a.mu.Lock()
	a.archives[j.Backup.ID] = archive.Bytes()
	a.mu.Unlock()
	return nil
}

// TestBackupsThroughTheEngine runs backups on a real coordinator (real
// engine, real schedule, real local store) with a test agent answering
// the jobs: a periodic backup whose first dump fails is retried by the
// schedule under the same id and ends done; a manual backup goes running
// → done with the reported figures; both download (verified first; a
// corrupt object is refused with 422 before any byte); a restore runs as
// an operation; every refusal is a 4xx an operator understands; nothing
// secret reaches the log.
func TestBackupsThroughTheEngine(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuf
	now := time.Now()
	cfg := DefaultConfig()
	cfg.ID = "c1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Socket = filepath.Join(dir, "admin.sock")
	cfg.RaftAddr = testutil.Addr(t, "127.0.0.51")
	cfg.HTTPAddr = testutil.Addr(t, "127.0.0.51")
	cfg.Bootstrap = true
	cfg.BackupStore = backupstore.Config{Kind: backupstore.KindLocal, Dir: filepath.Join(dir, "backups")}
	cfg.BackupKeysFile = filepath.Join(dir, "keys", "backup-keys.json")
	// Today's backup starts 3 s from now (seconds in the spec): a day's
	// backup is due only for addons that existed at its start time.
	at := now.UTC().Add(3 * time.Second)
	cfg.BackupSchedule = BackupScheduleConfig{Spec: fmt.Sprintf("%d %d %d * * *", at.Second(), at.Minute(), at.Hour()), TZ: "UTC",
		Window: Duration(time.Millisecond), PerHost: 2, RetryEvery: Duration(300 * time.Millisecond)}
	cfg.BackupCheckEvery = Duration(100 * time.Millisecond)
	log := slog.New(slog.NewJSONHandler(io.MultiWriter(&logs, testutil.Writer(t)), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Start(cfg, log, testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	peer := api.NewClient(cfg.Socket)
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Plans(ctx); return err })

	// The keys file was made, 0600, with one key.
	fi, err := os.Stat(cfg.BackupKeysFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("keys file: %v, %v", fi, err)
	}
	keys, created, err := LoadBackupKeys(cfg.BackupKeysFile, now)
	if err != nil || created || len(keys.Keys) != 1 {
		t.Fatalf("keys %v created %v: %v", keys, created, err)
	}

	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.52", MemoryMB: 2048}); err != nil {
		t.Fatal(err)
	}
	agent := &fakeAgent{t: t, peer: peer, host: "h1", failBackups: 1, archives: map[string][]byte{}, handled: map[string]bool{}}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() { defer close(agentDone); agent.run(agentCtx) }()
	defer func() { stopAgent(); <-agentDone }()

	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "bk-app", Type: "redis", Plan: "redis-starter-512"})
	if err != nil {
		t.Fatal(err)
	}
	id := res.Addon.ID
	var as, hp api.Assignment
	testutil.WaitFor(t, 10*time.Second, func() error {
		a, err := peer.Assignments(ctx, "h1", 0, 0)
		if err != nil || len(a.Assignments) != 2 {
			return fmt.Errorf("assignments %+v, %v", a, err)
		}
		as, hp = a.Assignments[0], a.Assignments[1]
		return nil
	})
	startRedis(t, as)
	startEntrypoint(t, hp)
	agent.mu.Lock()
	agent.members = []api.MemberStatus{
		{MemberID: as.MemberID, AddonID: id, Role: as.Role, State: api.MemberRunning, RedisRole: "master"},
		{MemberID: hp.MemberID, AddonID: id, Role: hp.Role, State: api.MemberRunning}}
	agent.mu.Unlock()

	// The periodic backup of today: its first dump fails, the schedule
	// retries it under the same id, and it ends done.
	dayID := backup.PeriodicID(id, at.Format(backup.DayLayout))
	backupOf := func(bid string) (api.Backup, []api.Backup) {
		t.Helper()
		list, err := admin.Backups(ctx, "bk-app")
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range list {
			if b.ID == bid {
				return b, list
			}
		}
		return api.Backup{}, list
	}
	var periodic api.Backup
	testutil.WaitFor(t, 30*time.Second, func() error {
		b, _ := backupOf(dayID)
		if b.Status != api.BackupDone {
			return fmt.Errorf("periodic backup %s: %s (%s), attempt %d", dayID, b.Status, b.Reason, b.Attempts)
		}
		periodic = b
		return nil
	})
	if periodic.Attempts != 2 || periodic.Seq != 1 || periodic.Kind != api.BackupPeriodic || periodic.MemberID != as.MemberID || periodic.HostID != "h1" ||
		periodic.Keys != 42 || !periodic.Good() || periodic.StoreKey != backup.StoreKey(periodic) {
		t.Fatalf("periodic backup %+v", periodic)
	}
	ops, err := admin.Operations(ctx, "bk-app", "")
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, o := range ops {
		if o.Kind == api.OpBackup && o.BackupID == dayID {
			states = append(states, string(o.State)+": "+o.Error)
		}
	}
	if len(states) != 2 || !strings.HasPrefix(states[0], "failed: dump failed on host h1: BGSAVE failed") || states[1] != "done: " {
		t.Fatalf("backup operations of %s: %q; want a failed one, then a done one", dayID, states)
	}

	// A manual backup: running, then done with the reported figures.
	mc, err := admin.BackupCreate(ctx, api.BackupCreateRequest{App: "bk-app", Pin: true})
	if err != nil {
		t.Fatal(err)
	}
	if mc.Backup.Kind != api.BackupManual || mc.Backup.Status != api.BackupRunning || mc.Backup.Seq != 2 || !mc.Backup.Pinned ||
		mc.Operation.Kind != api.OpBackup || mc.Operation.BackupID != mc.Backup.ID || !strings.Contains(mc.Message, "is being taken") {
		t.Fatalf("manual backup answer %+v", mc)
	}
	var manual api.Backup
	testutil.WaitFor(t, 20*time.Second, func() error {
		b, _ := backupOf(mc.Backup.ID)
		if b.Status != api.BackupDone {
			return fmt.Errorf("manual backup %s: %s (%s)", b.ID, b.Status, b.Reason)
		}
		manual = b
		return nil
	})
	agent.mu.Lock()
	stored := agent.archives[manual.ID]
	var job api.BackupJob
	for _, j := range agent.jobs {
		if j.Backup.ID == manual.ID {
			job = j
		}
	}
	agent.mu.Unlock()
	sum := sha256.Sum256(stored)
	if manual.Keys != 42 || manual.KeyID != keys.Current || manual.Verified != "verified: 42 keys, 10 sampled values match" || len(manual.Checksum) != 64 ||
		manual.ArchiveBytes != int64(len(stored)) || manual.ArchiveChecksum != hex.EncodeToString(sum[:]) || manual.FinishedAt.IsZero() {
		t.Fatalf("manual backup %+v", manual)
	}
	if job.Addr != "127.0.0.52:"+fmt.Sprint(as.Port) || !job.Password.Equal(as.FleetPassword) || job.MemberID != as.MemberID || job.Image == "" ||
		job.PlanMemoryMB != 512 || !strings.Contains(string(job.Store), cfg.BackupStore.Dir) || !strings.Contains(string(job.Keys), "AGE-SECRET-KEY-1") {
		t.Fatalf("the dump job %s", job)
	}
	op := operationOf(t, admin, mc.Operation.ID)
	wantSteps(t, op, map[string]string{
		operation.StepChooseMember: as.MemberID + " on host h1 (its only redis node)",
		operation.StepDump:         "dumped 42 keys",
		operation.StepRecord:       "verified: 42 keys",
	})
	if _, list := backupOf(""); len(list) != 2 || list[0].ID != manual.ID || list[1].ID != periodic.ID {
		t.Fatalf("backups, newest first: %+v", list)
	}

	// Downloads: the latest good one, then by id; the record comes along.
	download := func(bid string) ([]byte, api.Backup, error) {
		rc, b, err := admin.BackupDownload(ctx, "bk-app", bid)
		if err != nil {
			return nil, b, err
		}
		defer rc.Close()
		data, err := io.ReadAll(rc)
		return data, b, err
	}
	data, got, err := download("")
	if err != nil || !bytes.Equal(data, stored) || got.ID != manual.ID || got.ArchiveChecksum != manual.ArchiveChecksum {
		t.Fatalf("download latest: %d bytes, %+v, %v", len(data), got, err)
	}
	data, got, err = download(periodic.ID)
	agent.mu.Lock()
	want := agent.archives[periodic.ID]
	agent.mu.Unlock()
	if err != nil || !bytes.Equal(data, want) || got.ID != periodic.ID {
		t.Fatalf("download %s: %d bytes, %v", periodic.ID, len(data), err)
	}

	// A flipped byte in the store: refused before any byte is sent.
	path := filepath.Join(cfg.BackupStore.Dir, filepath.FromSlash(periodic.StoreKey))
	obj, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj[len(obj)/2] ^= 0x01
	if err := os.WriteFile(path, obj, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = download(periodic.ID)
	if api.HTTPStatus(err) != http.StatusUnprocessableEntity || !strings.HasPrefix(api.Message(err), "backup "+periodic.ID+" is corrupt: backup is corrupt or was not written with this key: ") ||
		!strings.HasSuffix(api.Message(err), "; it cannot be downloaded or restored") {
		t.Fatalf("download of a corrupt backup: %v (%d)", err, api.HTTPStatus(err))
	}

	// Refusals: 4xx, one line each.
	for _, tc := range []struct {
		name   string
		call   func() error
		status int
		want   string
	}{
		{"list: no app", func() error { _, err := admin.Backups(ctx, ""); return err }, 400, "app name is missing"},
		{"list: unknown app", func() error { _, err := admin.Backups(ctx, "nope-app"); return err }, 404, "app nope-app has no redis addon"},
		{"create: unknown app", func() error { _, err := admin.BackupCreate(ctx, api.BackupCreateRequest{App: "nope-app"}); return err }, 404, "app nope-app has no redis addon to back up"},
		{"create: malformed app", func() error { _, err := admin.BackupCreate(ctx, api.BackupCreateRequest{App: "Bad App"}); return err }, 400, "app name \"Bad App\" is malformed"},
		{"download: malformed id", func() error { _, _, err := download("../etc"); return err }, 400, "backup id \"../etc\" is malformed"},
		{"download: unknown id", func() error { _, _, err := download(id + "-20200101"); return err }, 404, "app bk-app has no backup " + id + "-20200101"},
		{"download: unknown app", func() error { _, _, err := admin.BackupDownload(ctx, "nope-app", ""); return err }, 404, "app nope-app has no redis addon"},
		{"restore: malformed id", func() error {
			_, err := admin.BackupRestore(ctx, "nope", api.BackupRestoreRequest{App: "bk-app", Confirm: "bk-app"})
			return err
		}, 400, "backup id \"nope\" is malformed"},
		{"restore: unknown backup", func() error {
			_, err := admin.BackupRestore(ctx, id+"-20200101", api.BackupRestoreRequest{App: "bk-app", Confirm: "bk-app"})
			return err
		}, 404, "no backup " + id + "-20200101 (see: cacheplane backups --app bk-app)"},
		{"restore: another app", func() error {
			_, err := admin.BackupRestore(ctx, manual.ID, api.BackupRestoreRequest{App: "other-app", Confirm: "other-app"})
			return err
		}, 404, "app other-app has no backup " + manual.ID + " (it is a backup of app bk-app)"},
		{"restore: no confirmation", func() error {
			_, err := admin.BackupRestore(ctx, manual.ID, api.BackupRestoreRequest{App: "bk-app"})
			return err
		}, 400, "type the app name to confirm: --confirm bk-app"},
		{"agent: malformed report", func() error {
			return peer.ReportJob(ctx, api.JobReport{HostID: "h1", JobID: "job-1", BackupID: manual.ID, Kind: api.JobBackup, OK: true})
		}, 400, "job id \"job-1\" is malformed"},
		{"agent: report of a finished job", func() error {
			return peer.ReportJob(ctx, api.JobReport{HostID: "h1", JobID: job.ID, BackupID: manual.ID, Kind: api.JobBackup, OK: false, Error: "late"})
		}, 404, "its operation ended"},
	} {
		err := tc.call()
		if api.HTTPStatus(err) != tc.status || !strings.Contains(api.Message(err), tc.want) || strings.Contains(api.Message(err), "\n") {
			t.Errorf("%s: %v (%d); want %d saying %q", tc.name, err, api.HTTPStatus(err), tc.status, tc.want)
		}
	}

	// A restore: an operation, the addon updating meanwhile, running after.
	rr, err := admin.BackupRestore(ctx, manual.ID, api.BackupRestoreRequest{App: "bk-app", Confirm: "bk-app"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.BackupCreate(ctx, api.BackupCreateRequest{App: "bk-app"}); api.HTTPStatus(err) != 409 {
		t.Errorf("a backup during a restore: %v; want 409", err)
	}
	testutil.WaitFor(t, 20*time.Second, func() error {
		if o := operationOf(t, admin, rr.Operation.ID); o.State != api.OpDone {
			return fmt.Errorf("restore %s", o.State)
		}
		return nil
	})
	wantSteps(t, operationOf(t, admin, rr.Operation.ID), map[string]string{operation.StepRestore: "42 keys restored from backup " + manual.ID + " into " + as.MemberID})
	if a, _ := admin.Addon(ctx, id); a.Status != api.AddonRunning {
		t.Fatalf("addon after the restore: %s", a.Status)
	}

	// Metrics.
	resp, err := insecureGet("https://" + cfg.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if v := families["cacheplane_backups_taken_total"].GetMetric()[0].GetCounter().GetValue(); v != 2 {
		t.Errorf("backups taken %v; want 2", v)
	}
	if v := families["cacheplane_backups_failed_total"].GetMetric()[0].GetCounter().GetValue(); v != 1 {
		t.Errorf("backups failed %v; want 1", v)
	}
	if m := families["cacheplane_backup_last_success_timestamp_seconds"].GetMetric(); len(m) != 1 || int64(m[0].GetGauge().GetValue()) != manual.FinishedAt.Unix() {
		t.Errorf("last success %v; want %d", m, manual.FinishedAt.Unix())
	}
	if families["cacheplane_backups_waiting"] == nil {
		t.Errorf("no backups_waiting gauge")
	}

	// Nothing secret in the log: not a key, not the password.
	for _, k := range keys.Keys {
		if strings.Contains(logs.String(), k) {
			t.Errorf("a backup key reached the log")
		}
	}
	if strings.Contains(logs.String(), as.Password.Reveal()) || strings.Contains(logs.String(), as.FleetPassword.Reveal()) {
		t.Errorf("the addon's password reached the log")
	}
	if !strings.Contains(logs.String(), `"msg":"audit"`) || !strings.Contains(logs.String(), `"call":"backups-download"`) || !strings.Contains(logs.String(), `"call":"backups-create"`) || !strings.Contains(logs.String(), `"call":"backups-restore"`) {
		t.Errorf("no audit line for the backup calls")
	}
}

// TestBackupResumesAfterRestart: the coordinator (the only one: its
// restart is a new leader working from the FSM alone) restarts while its
// agent runs a dump; the same job is listed again, never a second one, and
// its report finishes the same backup.
func TestBackupResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.ID = "c1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Socket = filepath.Join(dir, "admin.sock")
	cfg.RaftAddr = testutil.Addr(t, "127.0.0.53")
	cfg.HTTPAddr = testutil.Addr(t, "127.0.0.53")
	cfg.Bootstrap = true
	cfg.BackupSchedule.Spec = "0 0 1 1 *" // yearly: no periodic backup gets in the way
	c, err := Start(cfg, testutil.Logger(t), testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	peer := api.NewClient(cfg.Socket)
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Plans(ctx); return err })
	if _, err := peer.Register(ctx, api.Host{ID: "h1", Address: "127.0.0.54", MemoryMB: 2048}); err != nil {
		t.Fatal(err)
	}
	agent := &fakeAgent{t: t, peer: peer, host: "h1", hold: true, archives: map[string][]byte{}, handled: map[string]bool{}, seen: map[string]int{}}
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan struct{})
	go func() { defer close(agentDone); agent.run(agentCtx) }()
	defer func() { stopAgent(); <-agentDone }()
	res, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: "rs-app", Type: "redis", Plan: "redis-starter-256"})
	if err != nil {
		t.Fatal(err)
	}
	var as, hp api.Assignment
	testutil.WaitFor(t, 10*time.Second, func() error {
		a, err := peer.Assignments(ctx, "h1", 0, 0)
		if err != nil || len(a.Assignments) != 2 {
			return fmt.Errorf("assignments %+v, %v", a, err)
		}
		as, hp = a.Assignments[0], a.Assignments[1]
		return nil
	})
	startRedis(t, as)
	startEntrypoint(t, hp)
	agent.mu.Lock()
	agent.members = []api.MemberStatus{
		{MemberID: as.MemberID, AddonID: res.Addon.ID, Role: as.Role, State: api.MemberRunning, RedisRole: "master"},
		{MemberID: hp.MemberID, AddonID: res.Addon.ID, Role: hp.Role, State: api.MemberRunning}}
	agent.mu.Unlock()
	testutil.WaitFor(t, 15*time.Second, func() error {
		if a, err := admin.Addon(ctx, res.Addon.ID); err != nil || a.Status != api.AddonRunning {
			return fmt.Errorf("addon %s, %v", a.Status, err)
		}
		return nil
	})
	// A plan without daily backups is backed up by hand.
	mc, err := admin.BackupCreate(ctx, api.BackupCreateRequest{App: "rs-app"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mc.Message, "plan redis-starter-256 takes no daily backups") {
		t.Errorf("message %q", mc.Message)
	}
	jobs := func() []string {
		agent.mu.Lock()
		defer agent.mu.Unlock()
		var ids []string
		for id := range agent.seen {
			ids = append(ids, id)
		}
		return ids
	}
	testutil.WaitFor(t, 10*time.Second, func() error {
		if ids := jobs(); len(ids) != 1 {
			return fmt.Errorf("jobs seen %v", ids)
		}
		return nil
	})
	first := jobs()[0]

	// The coordinator restarts mid-dump.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err = Start(cfg, testutil.Logger(t), testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	testutil.WaitFor(t, 10*time.Second, func() error { _, err := admin.Plans(ctx); return err })
	agent.mu.Lock()
	agent.seen[first] = 0
	agent.mu.Unlock()
	testutil.WaitFor(t, 10*time.Second, func() error {
		agent.mu.Lock()
		defer agent.mu.Unlock()
		if agent.seen[first] < 3 {
			return fmt.Errorf("job %s listed %d times since the restart", first, agent.seen[first])
		}
		return nil
	})
	if ids := jobs(); len(ids) != 1 {
		t.Fatalf("jobs after the restart %v; want only %s", ids, first)
	}
	agent.mu.Lock()
	agent.hold = false
	agent.mu.Unlock()
	testutil.WaitFor(t, 15*time.Second, func() error {
		list, err := admin.Backups(ctx, "rs-app")
		if err != nil || len(list) != 1 || list[0].Status != api.BackupDone {
			return fmt.Errorf("backups %+v, %v", list, err)
		}
		return nil
	})
	wantSteps(t, operationOf(t, admin, mc.Operation.ID), map[string]string{operation.StepDump: "(job " + first + ")"})
	if ids := jobs(); len(ids) != 1 {
		t.Fatalf("jobs %v; want one dump for one backup", ids)
	}
}

// TestBackupConfig: defaults come from data_dir; errors are one line and
// never quote a secret; the keys file is made once, 0600, and refused
// when others may read it.
func TestBackupConfig(t *testing.T) {
	dir := t.TempDir()
	c := DefaultConfig()
	c.DataDir = filepath.Join(dir, "data")
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.BackupStore.Kind != backupstore.KindLocal || c.BackupStore.Dir != filepath.Join(dir, "data", "backups") ||
		c.BackupKeysFile != filepath.Join(dir, "data", "backup-keys.json") {
		t.Fatalf("defaults: store %v, keys %s", c.BackupStore, c.BackupKeysFile)
	}
	if s := c.BackupSchedule.Schedule(); s != backup.DefaultSchedule() {
		t.Fatalf("default schedule %+v", s)
	}
	for _, tc := range []struct {
		edit func(c *Config)
		want string
	}{
		{func(c *Config) { c.BackupStore = backupstore.Config{Kind: "ftp"} }, `config: backup_store: unknown kind "ftp": use "local" or "s3"`},
		{func(c *Config) {
			c.BackupStore = backupstore.Config{Kind: backupstore.KindS3, Endpoint: "127.0.0.1:8333", Bucket: "b", AccessKey: "ak", SecretKey: "s3cr3t-value"}
		}, `config: backup_store: bucket "b" is not a valid S3 bucket name`},
		{func(c *Config) { c.BackupSchedule.Spec = "every day" }, `config: backup_schedule: backup schedule "every day" is not a cron spec`},
		{func(c *Config) { c.BackupSchedule.TZ = "Mars/Olympus" }, `config: backup_schedule: backup schedule time zone "Mars/Olympus" is not an IANA zone name`},
		{func(c *Config) { c.BackupSchedule.Spec = "0 * * * *" }, "fires more than once a day"},
		{func(c *Config) { c.BackupJobTimeout = 0 }, "config: backup_job_timeout must be positive"},
	} {
		c := DefaultConfig()
		c.DataDir = filepath.Join(dir, "data")
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cr3t-value") || strings.Contains(err.Error(), "\n") {
			t.Errorf("validate: %v; want %q", err, tc.want)
		}
	}

	path := filepath.Join(dir, "k", "keys.json")
	k1, created, err := LoadBackupKeys(path, t0)
	if err != nil || !created || k1.Current != "k20261124" {
		t.Fatalf("first load: %v %v %v", k1, created, err)
	}
	k2, created, err := LoadBackupKeys(path, t0.Add(48*time.Hour))
	if err != nil || created || k2.Keys[k2.Current] != k1.Keys[k1.Current] {
		t.Fatalf("second load made another key: %v %v", created, err)
	}
	if s := fmt.Sprintf("%v %+v", k1, k1); strings.Contains(s, "AGE-SECRET-KEY") {
		t.Fatalf("the keyring prints its keys: %s", s)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadBackupKeys(path, t0); err == nil || !strings.Contains(err.Error(), "is readable by others (mode 0644)") {
		t.Fatalf("a world-readable keys file: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"current": "a", "keys": {"a": "AGE-SECRET-KEY-1NOTAKEY"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadBackupKeys(bad, t0); err == nil || strings.Contains(err.Error(), "NOTAKEY") || !strings.Contains(err.Error(), `key "a" is not an age X25519 secret key`) {
		t.Fatalf("a bad key: %v", err)
	}
}
