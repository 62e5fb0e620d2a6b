package agent

// The job runner without redis or containerd: a fake exec and a fake
// report sender. Once per id, at most two at a time, withdrawal and stop
// cancel, records survive a restart, reports are retried, no goroutine is
// left. Plus the pure helpers.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	agentbackup "github.com/cacheplane/cacheplane/agent/backup"
	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// fakeJobs is an exec that blocks each job until released (or its ctx
// ends) and a sender that records reports, failing the first failN.
type fakeJobs struct {
	mu         sync.Mutex
	runs       map[string]int
	running    int
	maxRunning int
	release    map[string]chan api.JobReport
	causes     map[string]error
	reports    []api.JobReport
	sends      int
	failN      int
	failWith   error
}

func newFakeJobs() *fakeJobs {
	return &fakeJobs{runs: map[string]int{}, release: map[string]chan api.JobReport{}, causes: map[string]error{}}
}

func (f *fakeJobs) ch(id string) chan api.JobReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.release[id] == nil {
		f.release[id] = make(chan api.JobReport, 1)
	}
	return f.release[id]
}

func (f *fakeJobs) exec(ctx context.Context, job api.BackupJob) api.JobReport {
	ch := f.ch(job.ID)
	f.mu.Lock()
	f.runs[job.ID]++
	f.running++
	f.maxRunning = max(f.maxRunning, f.running)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.running--
		f.mu.Unlock()
	}()
	select {
	case rep := <-ch:
		return rep
	case <-ctx.Done():
		f.mu.Lock()
		f.causes[job.ID] = context.Cause(ctx)
		f.mu.Unlock()
		return api.JobReport{Error: ctx.Err().Error()}
	}
}

func (f *fakeJobs) send(ctx context.Context, r api.JobReport) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	if f.sends <= f.failN {
		return f.failWith
	}
	f.reports = append(f.reports, r)
	return nil
}

func (f *fakeJobs) state() (runs map[string]int, running, maxRunning int, reports []api.JobReport, sends int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	runs = map[string]int{}
	for k, v := range f.runs {
		runs[k] = v
	}
	return runs, f.running, f.maxRunning, append([]api.JobReport{}, f.reports...), f.sends
}

func (f *fakeJobs) reportsOf(id string) []api.JobReport {
	_, _, _, reps, _ := f.state()
	var out []api.JobReport
	for _, r := range reps {
		if r.JobID == id {
			out = append(out, r)
		}
	}
	return out
}

// startRunner runs a runner over dir until the returned stop is called;
// stop waits for loop to return.
func startRunner(t *testing.T, dir string, f *fakeJobs) (*jobRunner, func()) {
	t.Helper()
	r := newJobRunner(dir, "host-1", testutil.Logger(t), f.exec, f.send)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.loop(ctx)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return r, stop
}

func jobs(ids ...string) []api.BackupJob {
	out := make([]api.BackupJob, len(ids))
	for i, id := range ids {
		out[i] = api.BackupJob{ID: id, Kind: api.JobBackup, Backup: api.Backup{ID: "my-app-1-20261207"}, MemberID: "m1", Password: api.NewSecret("secret-password")}
	}
	return out
}

// noLeak waits until the goroutine count is back to before.
func noLeak(t *testing.T, before int) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, func() error {
		if n := goruntime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:goruntime.Stack(buf, true)])
		}
		return nil
	})
}

func TestJobRunnerOnceAtMostTwo(t *testing.T) {
	before := goruntime.NumGoroutine()
	f := newFakeJobs()
	dir := t.TempDir()
	r, stop := startRunner(t, dir, f)
	list := jobs("a", "b", "c")
	for range 5 {
		r.offer(list)
	}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if runs, running, _, _, _ := f.state(); running != 2 || runs["a"] != 1 || runs["b"] != 1 {
			return fmt.Errorf("runs %v, %d running", runs, running)
		}
		return nil
	})
	r.offer(list)
	if runs, _, _, _, _ := f.state(); runs["c"] != 0 {
		t.Fatalf("c started beside a and b: %v", runs)
	}
	f.ch("a") <- api.JobReport{OK: true, SizeBytes: 42}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if runs, _, _, _, _ := f.state(); runs["c"] != 1 {
			return fmt.Errorf("c not started once a ended: %v", runs)
		}
		return nil
	})
	f.ch("b") <- api.JobReport{Error: "dump failed"}
	f.ch("c") <- api.JobReport{OK: true}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if _, _, _, reps, _ := f.state(); len(reps) != 3 {
			return fmt.Errorf("%d reports", len(reps))
		}
		return nil
	})
	for range 3 { // still listed: neither run nor reported again
		r.offer(list)
	}
	stop()
	runs, _, maxRunning, reps, _ := f.state()
	if runs["a"] != 1 || runs["b"] != 1 || runs["c"] != 1 || maxRunning != 2 || len(reps) != 3 {
		t.Fatalf("runs %v, at most %d at a time, %d reports", runs, maxRunning, len(reps))
	}
	a := f.reportsOf("a")[0]
	if !a.OK || a.SizeBytes != 42 || a.HostID != "host-1" || a.JobID != "a" || a.BackupID != "my-app-1-20261207" || a.Kind != api.JobBackup || a.StartedAt.IsZero() || a.FinishedAt.Before(a.StartedAt) {
		t.Fatalf("report of a: %+v", a)
	}
	if b := f.reportsOf("b")[0]; b.OK || b.Error != "dump failed" {
		t.Fatalf("report of b: %+v", b)
	}
	for _, id := range []string{"a", "b", "c"} {
		data, err := os.ReadFile(filepath.Join(dir, id+".json"))
		if err != nil || !strings.Contains(string(data), `"state":"done"`) || strings.Contains(string(data), "secret-password") {
			t.Fatalf("record of %s: %s, %v", id, data, err)
		}
	}
	noLeak(t, before)
}

func TestJobRunnerWithdrawStopRestart(t *testing.T) {
	before := goruntime.NumGoroutine()
	f := newFakeJobs()
	dir := t.TempDir()
	r, stop := startRunner(t, dir, f)
	r.offer(jobs("a", "b"))
	testutil.WaitFor(t, 5*time.Second, func() error {
		if _, running, _, _, _ := f.state(); running != 2 {
			return fmt.Errorf("%d running", running)
		}
		return nil
	})
	r.offer(jobs("b")) // a is withdrawn
	testutil.WaitFor(t, 5*time.Second, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !errors.Is(f.causes["a"], errWithdrawn) {
			return fmt.Errorf("a's cause: %v", f.causes["a"])
		}
		return nil
	})
	stop() // b is interrupted
	noLeak(t, before)
	if reps := f.reportsOf("a"); len(reps) != 0 {
		t.Fatalf("a withdrawn, yet reported: %+v", reps)
	}
	for id, want := range map[string]string{"a": errWithdrawn.Error(), "b": errStopping.Error()} {
		data, err := os.ReadFile(filepath.Join(dir, id+".json"))
		if err != nil || !strings.Contains(string(data), want) {
			t.Fatalf("record of %s: %s, %v", id, data, err)
		}
	}

	// A crash during job c: only its start is on disk.
	if err := newJobRunner(dir, "host-1", testutil.Logger(t), nil, nil).writeRecord("c", jobRecord{Job: jobs("c")[0].String(), State: recordStarted, StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// An old record of a job nobody lists any more.
	old := api.JobReport{JobID: "old", OK: true, FinishedAt: time.Now().Add(-jobRecordKeep - time.Hour)}
	if err := newJobRunner(dir, "host-1", testutil.Logger(t), nil, nil).writeRecord("old", jobRecord{State: recordDone, Report: &old}); err != nil {
		t.Fatal(err)
	}

	// The next agent: a, b, c listed again are reported, never run.
	f2 := newFakeJobs()
	r2, stop2 := startRunner(t, dir, f2)
	r2.offer(jobs("a", "b", "c", "d"))
	testutil.WaitFor(t, 5*time.Second, func() error {
		if runs, _, _, reps, _ := f2.state(); len(reps) != 3 || runs["d"] != 1 {
			return fmt.Errorf("%d reports, runs %v", len(reps), runs)
		}
		return nil
	})
	for id, want := range map[string]string{"a": errWithdrawn.Error(), "b": errStopping.Error(), "c": errStopping.Error()} {
		reps := f2.reportsOf(id)
		if len(reps) != 1 || reps[0].OK || reps[0].Error != want || reps[0].JobID != id {
			t.Errorf("reports of %s: %+v; want one with %q", id, reps, want)
		}
	}
	runs, _, _, _, _ := f2.state()
	if runs["a"]+runs["b"]+runs["c"] != 0 || runs["d"] != 1 {
		t.Fatalf("runs after the restart: %v; want d alone", runs)
	}
	if _, err := os.Stat(filepath.Join(dir, "old.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old record is still there: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "c.json")); err != nil || !strings.Contains(string(data), `"state":"done"`) {
		t.Fatalf("c's record was not rewritten: %s, %v", data, err)
	}
	f2.ch("d") <- api.JobReport{OK: true}
	testutil.WaitFor(t, 5*time.Second, func() error {
		if reps := f2.reportsOf("d"); len(reps) != 1 {
			return fmt.Errorf("%d reports of d", len(reps))
		}
		return nil
	})
	stop2()
	noLeak(t, before)
}

func TestJobRunnerReportRetries(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failN     int
		err       error
		wantSends int
		reported  int
	}{
		{"accepted at once", 0, nil, 1, 1},
		{"no leader, then accepted", 3, &api.RemoteError{Status: 503, Code: "no_leader", Message: "no leader"}, 4, 1},
		{"unreachable, then accepted", 2, errors.New("dial tcp: connection refused"), 3, 1},
		{"refused for good", 1, &api.RemoteError{Status: 400, Code: "invalid", Message: "no such job"}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goruntime.NumGoroutine()
			f := newFakeJobs()
			f.failN, f.failWith = tc.failN, tc.err
			r, stop := startRunner(t, t.TempDir(), f)
			r.offer(jobs("a"))
			f.ch("a") <- api.JobReport{OK: true}
			testutil.WaitFor(t, 10*time.Second, func() error {
				r.mu.Lock()
				defer r.mu.Unlock()
				if st := r.jobs["a"]; st == nil || !st.reported {
					return errors.New("not reported yet")
				}
				return nil
			})
			r.offer(jobs("a"))
			stop()
			if _, _, _, reps, sends := f.state(); sends != tc.wantSends || len(reps) != tc.reported {
				t.Fatalf("%d sends, %d reports accepted; want %d and %d", sends, len(reps), tc.wantSends, tc.reported)
			}
			noLeak(t, before)
		})
	}
}

func TestRecordName(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"job-1", "job-1.json"},
		{"my-app-3030-20261207.2", "my-app-3030-20261207.2.json"},
		{"../../etc/passwd", ""},
		{".hidden", ""},
		{"x-abc", ""}, // the digest names' own prefix
		{"a/b", ""},
		{strings.Repeat("a", 129), ""},
	} {
		got := recordName(tc.id)
		if tc.want != "" && got != tc.want {
			t.Errorf("recordName(%q) = %q; want %q", tc.id, got, tc.want)
		}
		if tc.want == "" && (!strings.HasPrefix(got, "x-") || !strings.HasSuffix(got, ".json") || strings.Contains(got, "/") || len(got) != len("x-")+40+len(".json")) {
			t.Errorf("recordName(%q) = %q; want a digest name", tc.id, got)
		}
	}
}

func TestRecordReport(t *testing.T) {
	start := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	job := api.BackupJob{ID: "j-1", Kind: api.JobRestore, Backup: api.Backup{ID: "my-app-1-20261207"}, MemberID: "my-app-1-r1"}
	for _, tc := range []struct {
		name    string
		rec     string
		want    api.JobReport
		rewrite bool
		err     string
	}{
		{"done", string(mustJSON(jobRecord{State: recordDone, Report: &api.JobReport{JobID: "j-1", OK: true, Restored: 7}})),
			api.JobReport{JobID: "j-1", OK: true, Restored: 7}, false, ""},
		{"started: interrupted", string(mustJSON(jobRecord{Job: job.String(), State: recordStarted, StartedAt: start})),
			api.JobReport{JobID: "j-1", Kind: api.JobRestore, BackupID: "my-app-1-20261207", Error: errStopping.Error(), StartedAt: start, FinishedAt: start}, true, ""},
		{"started, unreadable job", `{"job":"nonsense","state":"started"}`, api.JobReport{}, false, "names"},
		{"done without report", `{"state":"done"}`, api.JobReport{}, false, "without a report"},
		{"not JSON", `{`, api.JobReport{}, false, "unreadable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rewrite, err := recordReport([]byte(tc.rec))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil || rewrite != tc.rewrite || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %+v, %v, %v; want %+v, %v", got, rewrite, err, tc.want, tc.rewrite)
			}
		})
	}
}

func TestScratchHostAndBinary(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.31": "127.0.0.31", "127.0.0.1": "127.0.0.1", "10.0.0.5": "127.0.0.1",
		"192.168.1.20": "127.0.0.1", "::1": "127.0.0.1", "": "127.0.0.1",
	} {
		if got := scratchHost(in); got != want {
			t.Errorf("scratchHost(%q) = %q; want %q", in, got, want)
		}
	}
	for e, want := range map[api.Engine]string{api.EngineRedis: "/usr/bin/redis-server", api.EngineValkey: "/usr/bin/valkey-server", "memcached": ""} {
		got, err := serverBinary(e)
		if got != want || (err != nil) != (want == "") {
			t.Errorf("serverBinary(%q) = %q, %v; want %q", e, got, err, want)
		}
	}
	if scratchPorts.First <= 29999 || scratchPorts.Last >= 32768 {
		t.Errorf("scratch ports %v overlap the members' range or the ephemeral ports", scratchPorts)
	}
}

func TestJobLine(t *testing.T) {
	pw := "Zq9vX2bT7mK4pL8sR1nW6yE3uA0cD5fG"
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"plain", errors.New("dump x: BGSAVE failed"), "dump x: BGSAVE failed"},
		{"password", fmt.Errorf("auth %s refused", pw), "auth [REDACTED] refused"},
		{"two lines", errors.New("scratch exited; its last lines:\nline 1\nline 2"), "scratch exited; its last lines:"},
		{"long", errors.New(strings.Repeat("x", 1000)), strings.Repeat("x", maxJobError-3) + "..."},
	} {
		if got := jobLine(tc.err, pw, "", "AGE-SECRET-KEY-1ABC"); got != tc.want {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
	}
}

func TestWithoutScratch(t *testing.T) {
	sts := []runtime.Status{
		{ID: "m1", Role: "redis"},
		{ID: agentbackup.ScratchIDPrefix + "ab12", Role: agentbackup.RoleScratch},
		{ID: "m2", Role: agentbackup.RoleScratch}, // not ours: a member is never hidden by its role alone
		{ID: agentbackup.ScratchIDPrefix + "x", Role: "redis"},
	}
	got := withoutScratch(sts)
	var ids []string
	for _, st := range got {
		ids = append(ids, st.ID)
	}
	if strings.Join(ids, ",") != "m1,m2,"+agentbackup.ScratchIDPrefix+"x" || len(sts) != 4 {
		t.Fatalf("withoutScratch: %v (input now %d long)", ids, len(sts))
	}
}
