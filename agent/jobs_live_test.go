package agent_test

// Backup and restore jobs end to end on one agent: real containerd, a real
// redis member, the scratch server of the drill and the restore as a
// container, a real local backup store; the coordinator is the fake one of
// agent_test.go with the jobs endpoints added (jobsCoordinator).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	agentbackup "github.com/cacheplane/cacheplane/agent/backup"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/backup"
	"github.com/cacheplane/cacheplane/backupstore"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// jobsCoordinator wraps a fakeCoordinator: the assignments answers carry
// the jobs set here, POST /v1/agent/jobs records reports (the first
// refuseReports ones are answered 500, as a coordinator changing leader
// may), anything else goes to the fake.
type jobsCoordinator struct {
	f   *fakeCoordinator
	srv *httptest.Server

	mu            sync.Mutex
	jobs          map[string][]api.BackupJob
	reports       []api.JobReport
	refuseReports int
	refused       int
}

func newJobsCoordinator(t *testing.T, f *fakeCoordinator) *jobsCoordinator {
	j := &jobsCoordinator{f: f, jobs: map[string][]api.BackupJob{}}
	inner := f.srv.Config.Handler
	j.srv = newTLSServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/agent/jobs":
			if !hasClientCert(r) {
				writeErr(w, http.StatusUnauthorized, "unauthorized", "no client certificate")
				return
			}
			var rep api.JobReport
			if err := api.Decode(r.Body, &rep); err != nil {
				writeErr(w, http.StatusBadRequest, "invalid", err.Error())
				return
			}
			j.mu.Lock()
			defer j.mu.Unlock()
			if j.refused < j.refuseReports {
				j.refused++
				writeErr(w, http.StatusInternalServerError, "internal", "raft: leadership lost while committing log")
				return
			}
			j.reports = append(j.reports, rep)
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodGet && r.URL.Path == "/v1/agent/assignments":
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			if rec.Code != http.StatusOK {
				w.WriteHeader(rec.Code)
				_, _ = w.Write(rec.Body.Bytes())
				return
			}
			var out api.Assignments
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				writeErr(w, http.StatusInternalServerError, "internal", err.Error())
				return
			}
			j.mu.Lock()
			out.Jobs = append([]api.BackupJob(nil), j.jobs[out.HostID]...)
			j.mu.Unlock()
			writeJSON(w, out)
		default:
			inner.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(j.srv.Close)
	return j
}

func (j *jobsCoordinator) addr() string { return strings.TrimPrefix(j.srv.URL, "https://") }

// setJobs replaces host's jobs and wakes its blocking query.
func (j *jobsCoordinator) setJobs(host string, jobs ...api.BackupJob) {
	j.mu.Lock()
	j.jobs[host] = jobs
	j.mu.Unlock()
	j.f.mu.Lock()
	as := append([]api.Assignment(nil), j.f.assignments[host]...)
	j.f.mu.Unlock()
	j.f.assign(host, as...)
}

func (j *jobsCoordinator) reportsOf(id string) []api.JobReport {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []api.JobReport
	for _, r := range j.reports {
		if r.JobID == id {
			out = append(out, r)
		}
	}
	return out
}

// waitReports waits until job id was reported n times; it returns the last.
func (j *jobsCoordinator) waitReports(t *testing.T, id string, n int, timeout time.Duration) api.JobReport {
	t.Helper()
	var last api.JobReport
	testutil.WaitFor(t, timeout, func() error {
		reps := j.reportsOf(id)
		if len(reps) < n {
			return fmt.Errorf("%d reports of %s, want %d", len(reps), id, n)
		}
		last = reps[len(reps)-1]
		return nil
	})
	return last
}

func infoField(t *testing.T, c *redis.Client, section, field string) string {
	t.Helper()
	info, err := c.Info(ctxT(t), section).Result()
	if err != nil {
		t.Fatalf("INFO %s: %v", section, err)
	}
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return v
		}
	}
	t.Fatalf("INFO %s has no %s", section, field)
	return ""
}

// TestBackupAndRestoreJobs: a backup job dumps a starter member into a
// local store and drills it in a scratch container (verified, figures
// reported after a refused first report); a restore job puts the data
// back into the flushed member; a restarted agent reports both again and
// runs neither again; a restore of a corrupted object is refused before
// the member is touched. No scratch container or unpacked dump is left.
func TestBackupAndRestoreJobs(t *testing.T) {
	coord := newFakeCoordinator(t)
	jc := newJobsCoordinator(t, coord)
	jc.refuseReports = 1
	h := newHost(t, coord)
	h.cfg.Coordinators = []string{jc.addr()}
	h.start(t)
	as := h.starter(t, "m1")
	coord.assign(h.id, as)
	c := redisClient(t, as)
	testutil.WaitFor(t, 60*time.Second, func() error { return c.Ping(ctxT(t)).Err() })

	// 20,000 strings in db 0, a hash and a list in db 3.
	const n = 20000
	for i := 0; i < n; i += 1000 {
		pipe := c.Pipeline()
		for k := i; k < i+1000; k++ {
			pipe.Set(ctxT(t), "key:"+strconv.Itoa(k), "value-"+strconv.Itoa(k), 0)
		}
		if _, err := pipe.Exec(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	c3 := redis.NewClient(&redis.Options{Addr: c.Options().Addr, Password: as.Password.Reveal(), DB: 3, MaxRetries: -1, DisableIdentity: true})
	defer c3.Close()
	if err := c3.HSet(ctxT(t), "h", "f1", "v1", "f2", "v2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c3.RPush(ctxT(t), "l", "a", "b", "c").Err(); err != nil {
		t.Fatal(err)
	}
	const total = n + 2

	storeDir := t.TempDir()
	key, err := backupstore.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyring := backupstore.Keyring{Current: "k1", Keys: map[string]string{"k1": key}}
	storeJSON, _ := json.Marshal(backupstore.Config{Kind: backupstore.KindLocal, Dir: storeDir})
	keysJSON, _ := json.Marshal(keyring)
	b := api.Backup{ID: as.AddonID + "-20261207", AddonID: as.AddonID, App: as.App, Kind: api.BackupPeriodic, Day: "2026-12-07", Seq: 1}
	b.StoreKey = backup.StoreKey(b)
	addr := net.JoinHostPort(as.Address, strconv.Itoa(as.Port))
	bjob := api.BackupJob{ID: "job-1", Kind: api.JobBackup, Backup: b, MemberID: as.MemberID, Addr: addr, Password: as.FleetPassword,
		Engine: as.Engine, Version: as.Version, Image: as.Image, PlanMemoryMB: as.PlanMemoryMB, Store: storeJSON, Keys: keysJSON}
	saves := infoField(t, c, "persistence", "rdb_saves")

	start := time.Now()
	jc.setJobs(h.id, bjob)
	rep := jc.waitReports(t, "job-1", 1, 3*time.Minute)
	t.Logf("backup job reported after %s: %+v", time.Since(start).Round(time.Millisecond), rep)
	if !rep.OK || rep.Error != "" || rep.HostID != h.id || rep.BackupID != b.ID || rep.Kind != api.JobBackup || rep.Keys != total || rep.KeyID != "k1" ||
		!strings.HasPrefix(rep.Verified, api.VerifiedPrefix) || rep.ArchiveBytes <= 0 || len(rep.ArchiveChecksum) != 64 {
		t.Fatalf("backup report: %+v", rep)
	}
	jc.mu.Lock()
	refused := jc.refused
	jc.mu.Unlock()
	if refused != 1 {
		t.Fatalf("%d reports refused, want 1", refused)
	}
	if got := infoField(t, c, "persistence", "rdb_saves"); got == saves {
		t.Fatalf("rdb_saves still %s: no BGSAVE", got)
	}
	// The stored object is what the report says; its plaintext archive too.
	raw, err := os.ReadFile(filepath.Join(storeDir, filepath.FromSlash(b.StoreKey)))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if int64(len(raw)) != rep.SizeBytes || hex.EncodeToString(sum[:]) != rep.Checksum {
		t.Fatalf("stored object: %d bytes, sha %x; report %d, %s", len(raw), sum, rep.SizeBytes, rep.Checksum)
	}
	if bytes.Contains(raw, []byte("value-1234")) {
		t.Fatal("the stored object holds a value in clear")
	}
	st, err := backupstore.NewLocal(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	ah := sha256.New()
	nb, err := agentbackup.Fetch(ctxT(t), st, b.StoreKey, keyring, rep.KeyID, rep.Checksum, ah)
	if err != nil || nb != rep.ArchiveBytes || hex.EncodeToString(ah.Sum(nil)) != rep.ArchiveChecksum {
		t.Fatalf("archive: %d bytes, sha %x, %v; report %d, %s", nb, ah.Sum(nil), err, rep.ArchiveBytes, rep.ArchiveChecksum)
	}
	rec, err := os.ReadFile(filepath.Join(h.cfg.DataDir, "jobs", "job-1.json"))
	if err != nil || !strings.Contains(string(rec), `"state":"done"`) || strings.Contains(string(rec), as.Password.Reveal()) || strings.Contains(string(rec), as.FleetPassword.Reveal()) || strings.Contains(string(rec), key) {
		t.Fatalf("job record: %s, %v", rec, err)
	}
	noScratch(t, h)

	// Restore into the flushed member; job-1 stays listed and is not run
	// again.
	if err := c.FlushAll(ctxT(t)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctxT(t), "stray", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	b.KeyID, b.Checksum, b.SizeBytes, b.Status = rep.KeyID, rep.Checksum, rep.SizeBytes, api.BackupDone
	rjob := bjob
	rjob.ID, rjob.Kind, rjob.Backup = "job-2", api.JobRestore, b
	saves = infoField(t, c, "persistence", "rdb_saves")
	start = time.Now()
	jc.setJobs(h.id, bjob, rjob)
	rrep := jc.waitReports(t, "job-2", 1, 3*time.Minute)
	t.Logf("restore job reported after %s: %+v", time.Since(start).Round(time.Millisecond), rrep)
	if !rrep.OK || rrep.Restored != total || rrep.Kind != api.JobRestore {
		t.Fatalf("restore report: %+v", rrep)
	}
	if size, err := c.DBSize(ctxT(t)).Result(); err != nil || size != n {
		t.Fatalf("db 0 after the restore: %d keys, %v; want %d", size, err, n)
	}
	for _, k := range []int{0, 1234, n - 1} {
		if v, err := c.Get(ctxT(t), "key:"+strconv.Itoa(k)).Result(); err != nil || v != "value-"+strconv.Itoa(k) {
			t.Fatalf("key:%d after the restore: %q, %v", k, v, err)
		}
	}
	if v, err := c3.LRange(ctxT(t), "l", 0, -1).Result(); err != nil || strings.Join(v, ",") != "a,b,c" {
		t.Fatalf("list in db 3 after the restore: %v, %v", v, err)
	}
	if n, err := c.Exists(ctxT(t), "stray").Result(); err != nil || n != 0 {
		t.Fatalf("a key written before the restore survived it: %d, %v", n, err)
	}
	if len(jc.reportsOf("job-1")) != 1 || infoField(t, c, "persistence", "rdb_saves") != saves {
		t.Fatalf("job-1 ran or was reported again: %d reports", len(jc.reportsOf("job-1")))
	}
	noScratch(t, h)

	// A restarted agent reports both jobs again and runs neither: no
	// BGSAVE, and a key written now survives (a restore would flush it).
	if err := c.Set(ctxT(t), "after", "restart", 0).Err(); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h.start(t)
	rep2 := jc.waitReports(t, "job-1", 2, time.Minute)
	rrep2 := jc.waitReports(t, "job-2", 2, time.Minute)
	if !rep2.StartedAt.Equal(rep.StartedAt) || rep2.Checksum != rep.Checksum || !rrep2.StartedAt.Equal(rrep.StartedAt) || rrep2.Restored != total {
		t.Fatalf("reports after the restart differ: %+v / %+v", rep2, rrep2)
	}
	if v, err := c.Get(ctxT(t), "after").Result(); err != nil || v != "restart" || infoField(t, c, "persistence", "rdb_saves") != saves {
		t.Fatalf("a job ran again after the restart: after=%q (%v)", v, err)
	}

	// One flipped byte in the stored object: the restore is refused
	// before the member is touched.
	raw[len(raw)/2] ^= 0x01
	if err := os.WriteFile(filepath.Join(storeDir, filepath.FromSlash(b.StoreKey)), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	cjob := rjob
	cjob.ID = "job-3"
	jc.setJobs(h.id, cjob)
	crep := jc.waitReports(t, "job-3", 1, time.Minute)
	t.Logf("restore of a corrupt object: %+v", crep)
	if crep.OK || !strings.Contains(crep.Error, "corrupt") || strings.Contains(crep.Error, as.FleetPassword.Reveal()) {
		t.Fatalf("restore of a corrupt object: %+v", crep)
	}
	if v, err := c.Get(ctxT(t), "after").Result(); err != nil || v != "restart" {
		t.Fatalf("the member was touched by a refused restore: %q, %v", v, err)
	}
	noScratch(t, h)
}

// noScratch checks that no scratch container, unpacked dump or scratch
// log is left on h.
func noScratch(t *testing.T, h *host) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sts, err := h.agent.Runtime().List(ctx)
		if err != nil {
			return err
		}
		for _, st := range sts {
			if st.Role == agentbackup.RoleScratch {
				return fmt.Errorf("scratch container %s left", st.ID)
			}
		}
		for _, dir := range []string{"scratch", "logs"} {
			entries, err := os.ReadDir(filepath.Join(h.cfg.DataDir, dir))
			if err != nil && !os.IsNotExist(err) {
				return err
			}
			for _, e := range entries {
				if dir == "scratch" || strings.HasPrefix(e.Name(), agentbackup.ScratchIDPrefix) {
					return fmt.Errorf("%s/%s left", dir, e.Name())
				}
			}
		}
		return nil
	})
}
