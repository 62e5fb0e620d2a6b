package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// inspectOnly is a runtime whose Inspect answers fresh (the rest is not
// this test's subject and panics if called).
type inspectOnly struct {
	runtime.Runtime
	fresh runtime.Status
	calls int
}

func (r *inspectOnly) Inspect(_ context.Context, id string) (runtime.Status, error) {
	r.calls++
	st := r.fresh
	st.ID = id
	return st, nil
}

// A container listed without a running process while its start was under
// way is looked at again once the start is over, so a start that finished
// after the list is never reported as an exit; one still starting is said
// to be, without a look.
func TestRecheckStopped(t *testing.T) {
	listed := &runtime.Status{ID: "m1", State: runtime.StateStopped, ExitCode: -1}
	for _, tc := range []struct {
		name         string
		starting     bool
		fresh        runtime.State
		wantState    runtime.State
		wantStarting bool
		wantCalls    int
	}{
		{name: "start finished since the list", fresh: runtime.StateRunning, wantState: runtime.StateRunning, wantCalls: 1},
		{name: "really stopped", fresh: runtime.StateStopped, wantState: runtime.StateStopped, wantCalls: 1},
		{name: "container gone since", fresh: runtime.StateMissing, wantState: runtime.StateMissing, wantCalls: 1},
		{name: "start still under way", starting: true, fresh: runtime.StateRunning, wantState: runtime.StateStopped, wantStarting: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := &inspectOnly{fresh: runtime.Status{State: tc.fresh, Pid: 42}}
			a := &Agent{rt: rt, starting: map[string]bool{}}
			if tc.starting {
				a.starting["m1"] = true
			}
			st, starting := a.recheckStopped(context.Background(), "m1", listed)
			if st.State != tc.wantState || starting != tc.wantStarting || rt.calls != tc.wantCalls {
				t.Fatalf("got state %s starting %v after %d inspects; want %s %v after %d",
					st.State, starting, rt.calls, tc.wantState, tc.wantStarting, tc.wantCalls)
			}
		})
	}
}

// A run the agent took down (its failure recorded with its pid) answers
// for nothing while the list still shows it; another run, or the same one
// long after (a kill that failed), does.
func TestTakenDown(t *testing.T) {
	now := time.Unix(1000, 0)
	f := failure{reason: "unresponsive: frozen; killed", pid: 42, at: now.Add(-100 * time.Millisecond)}
	running := func(pid int) *runtime.Status { return &runtime.Status{State: runtime.StateRunning, Pid: pid} }
	for _, tt := range []struct {
		name string
		f    failure
		st   *runtime.Status
		now  time.Time
		want bool
	}{
		{"the run taken down, still listed", f, running(42), now, true},
		{"a new run", f, running(43), now, false},
		{"no pid recorded (a failed start)", failure{reason: "start: x", at: now}, running(42), now, false},
		{"no failure", failure{}, running(42), now, false},
		{"not running", f, &runtime.Status{State: runtime.StateStopped}, now, false},
		{"runtime unknown", f, nil, now, false},
		{"long after: the kill failed", f, running(42), now.Add(takenDownFor), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := takenDown(tt.f, tt.st, tt.now); got != tt.want {
				t.Fatalf("takenDown = %v; want %v", got, tt.want)
			}
		})
	}
}

// readProcState reads the state from the start of the line only: a
// command name with parentheses and spaces, long lines, and this very
// process (running while it reads).
func TestReadProcState(t *testing.T) {
	dir := t.TempDir()
	long := "4242 (a) b (c)) T 1 " + strings.Repeat("123456789 ", 60) + "\n"
	path := filepath.Join(dir, "stat")
	if err := os.WriteFile(path, []byte(long), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := readProcState(path); err != nil || s != 'T' {
		t.Fatalf("readProcState(long line) = %q, %v; want 'T'", s, err)
	}
	// This thread, running while it reads its own line.
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	self := fmt.Sprintf("/proc/%d/task/%d/stat", os.Getpid(), syscall.Gettid())
	if s, err := readProcState(self); err != nil || s != 'R' {
		t.Fatalf("readProcState(%s) = %q, %v; want 'R'", self, s, err)
	}
	if _, err := readProcState(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("readProcState(missing) err = %v; want not exist", err)
	}
}

// procStat reads a process's state through its kept stat file, again and
// again, and fails once that process is gone.
func TestProcStatKept(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	p := newProcStat(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "stat"))
	defer p.close()
	want := func(w byte) error {
		if s, err := p.state(); err != nil || s != w {
			return fmt.Errorf("state %q, %v; want %q", s, err, w)
		}
		return nil
	}
	testutil.WaitFor(t, 5*time.Second, func() error { return want('S') })
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, func() error { return want('T') })
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if s, err := p.state(); err == nil {
		t.Fatalf("state of a process gone = %q; want an error", s)
	}
}
