// Package runtimetest is the conformance suite every runtime.Runtime driver
// passes. It drives the interface only, with a real redis-server from the
// image api.ImageRedis7, and checks what the agent relies on: idempotent
// start, stop and destroy, exits reported as certain deaths (and not the
// ones the driver caused), live memory limits, stats, logs of a member that
// dies at start, and re-attach by a fresh driver instance without
// restarting the member.
//
// The suite needs redis-cli on the host to talk to the members, which bind
// free ports on 127.0.0.1 (drivers use host networking).
package runtimetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
)

// Image is the image the suite runs.
const Image = api.ImageRedis7

// Run runs the suite. newRuntime must return a new driver instance on every
// call. Calls with the same t must share state (namespace, log dir), as a
// restarted agent does; the harness removes that state when t ends. Each
// subtest calls it with its own t.
func Run(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Fatalf("redis-cli is needed on the host (apt-get install redis-tools): %v", err)
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime)
	}{
		{"EnsureImage", testEnsureImage},
		{"InvalidSpec", testInvalidSpec},
		{"StartIsIdempotent", testStartIsIdempotent},
		{"StopAndStartAgain", testStopAndStartAgain},
		{"ExitsReportsKillNotStop", testExits},
		{"UpdateResourcesAndStats", testResources},
		{"Destroy", testDestroy},
		{"ReattachAfterRestart", testReattach},
		{"ExitAtStartKeepsLogs", testExitAtStart},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newRuntime) })
	}
}

const (
	callTimeout = 60 * time.Second
	waitTimeout = 30 * time.Second
	stopGrace   = 10 * time.Second
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return c
}

// WaitFor polls fn until it returns nil, failing t after timeout with fn's
// last error.
func WaitFor(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// member is one redis member of a test.
type member struct {
	spec runtime.Spec
	port int
}

func newMember(t *testing.T, id string) member {
	port := freePort(t)
	dir := t.TempDir()
	return member{port: port, spec: runtime.Spec{
		ID:     id,
		Addon:  "addon-" + id,
		Member: id,
		Role:   string(api.RoleRedis),
		Image:  Image,
		Args: []string{"/usr/bin/redis-server",
			"--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", dir, "--save", "", "--appendonly", "no",
			"--protected-mode", "no", "--daemonize", "no"},
		DataDir:          dir,
		MemoryLimitBytes: 256 << 20,
		Labels:           map[string]string{"test": t.Name()},
		SpecHash:         "hash-1",
	}}
}

func redisCLI(port int, args ...string) (string, error) {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(c, "redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)...).CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("redis-cli %v: %w: %s", args, err, s)
	}
	return s, nil
}

func (m member) ping() error {
	out, err := redisCLI(m.port, "PING")
	if err != nil {
		return err
	}
	if out != "PONG" {
		return fmt.Errorf("PING on port %d: %q", m.port, out)
	}
	return nil
}

// info returns INFO server fields.
func (m member) info(t *testing.T) map[string]string {
	t.Helper()
	out, err := redisCLI(m.port, "INFO", "server")
	if err != nil {
		t.Fatal(err)
	}
	f := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			f[k] = v
		}
	}
	return f
}

func start(t *testing.T, rt runtime.Runtime, m member) runtime.Status {
	t.Helper()
	if err := rt.Start(ctx(t), m.spec); err != nil {
		t.Fatalf("start %s: %v", m.spec.ID, err)
	}
	WaitFor(t, waitTimeout, m.ping)
	st := inspect(t, rt, m.spec.ID)
	if st.State != runtime.StateRunning || st.Pid <= 0 {
		t.Fatalf("after start: %+v", st)
	}
	return st
}

func inspect(t *testing.T, rt runtime.Runtime, id string) runtime.Status {
	t.Helper()
	st, err := rt.Inspect(ctx(t), id)
	if err != nil {
		t.Fatalf("inspect %s: %v", id, err)
	}
	return st
}

func find(sts []runtime.Status, id string) (runtime.Status, bool) {
	for _, st := range sts {
		if st.ID == id {
			return st, true
		}
	}
	return runtime.Status{}, false
}

func testEnsureImage(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	if err := rt.EnsureImage(ctx(t), Image); err != nil {
		t.Fatalf("ensure %s: %v", Image, err)
	}
	if err := rt.EnsureImage(ctx(t), Image); err != nil {
		t.Fatalf("ensure %s again: %v", Image, err)
	}
	const missing = "cacheplane.local/no-such-image:0"
	err := rt.EnsureImage(ctx(t), missing)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("ensure %s: err = %v, want an error naming it", missing, err)
	}
	if !errors.Is(err, runtime.ErrImageNotFound) {
		t.Errorf("ensure %s: err = %v, want ErrImageNotFound", missing, err)
	}
}

func testInvalidSpec(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	m := newMember(t, "bad-spec")
	for name, mutate := range map[string]func(*runtime.Spec){
		"no args":  func(s *runtime.Spec) { s.Args = nil },
		"no image": func(s *runtime.Spec) { s.Image = "" },
		"bad id":   func(s *runtime.Spec) { s.ID = "has/slash" },
	} {
		s := m.spec
		mutate(&s)
		if err := rt.Start(ctx(t), s); !errors.Is(err, runtime.ErrInvalidSpec) {
			t.Errorf("%s: err = %v, want ErrInvalidSpec", name, err)
		}
	}
}

func testStartIsIdempotent(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	m := newMember(t, "idem")
	st := start(t, rt, m)
	if st.Addon != m.spec.Addon || st.Member != m.spec.Member || st.Role != m.spec.Role ||
		st.SpecHash != m.spec.SpecHash || st.Labels["test"] != t.Name() || st.StartedAt.IsZero() {
		t.Errorf("status does not carry the spec's labels: %+v", st)
	}
	runID := m.info(t)["run_id"]
	if err := rt.Start(ctx(t), m.spec); err != nil {
		t.Fatalf("start again: %v", err)
	}
	again := inspect(t, rt, m.spec.ID)
	if again.Pid != st.Pid || !again.StartedAt.Equal(st.StartedAt) {
		t.Fatalf("start again restarted the member: pid %d -> %d, started %s -> %s", st.Pid, again.Pid, st.StartedAt, again.StartedAt)
	}
	if got := m.info(t)["run_id"]; got != runID {
		t.Fatalf("redis run_id changed on an idempotent start: %s -> %s", runID, got)
	}
	sts, err := rt.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := find(sts, m.spec.ID); !ok || l.Pid != st.Pid || l.State != runtime.StateRunning {
		t.Fatalf("list: %+v (found %v), want pid %d running", l, ok, st.Pid)
	}
	// A new spec hash replaces the member.
	m.spec.SpecHash = "hash-2"
	if err := rt.Start(ctx(t), m.spec); err != nil {
		t.Fatalf("start with new hash: %v", err)
	}
	WaitFor(t, waitTimeout, m.ping)
	repl := inspect(t, rt, m.spec.ID)
	if repl.Pid == st.Pid || repl.SpecHash != "hash-2" || repl.State != runtime.StateRunning {
		t.Fatalf("start with a new spec hash did not replace the member: %+v", repl)
	}
	if got := m.info(t)["run_id"]; got == runID {
		t.Fatal("redis run_id unchanged after a replace")
	}
}

func testStopAndStartAgain(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	m := newMember(t, "stopstart")
	st := start(t, rt, m)
	if err := rt.Stop(ctx(t), m.spec.ID, stopGrace); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopped := inspect(t, rt, m.spec.ID)
	if stopped.State != runtime.StateStopped || stopped.ExitCode != 0 {
		t.Fatalf("after stop (SIGTERM, redis exits 0): %+v", stopped)
	}
	if err := m.ping(); err == nil {
		t.Fatal("redis still answers after stop")
	}
	if err := rt.Stop(ctx(t), m.spec.ID, stopGrace); err != nil {
		t.Fatalf("stop a stopped member: %v", err)
	}
	if err := rt.Stop(ctx(t), "never-existed", stopGrace); err != nil {
		t.Fatalf("stop a missing member: %v", err)
	}
	again := start(t, rt, m)
	if again.Pid == st.Pid {
		t.Fatalf("start after stop kept pid %d", st.Pid)
	}
}

// nextExit returns the next exit reported, failing after the timeout.
func nextExit(t *testing.T, rt runtime.Runtime) runtime.Exit {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	select {
	case e, ok := <-rt.Exits():
		if !ok {
			t.Fatal("exits channel closed")
		}
		return e
	case <-timer.C:
		t.Fatalf("no exit reported within %s", waitTimeout)
	}
	return runtime.Exit{}
}

func testExits(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	stopped, killed := newMember(t, "exit-stopped"), newMember(t, "exit-killed")
	start(t, rt, stopped)
	st := start(t, rt, killed)
	// A stop the agent asks for is no death: the first exit reported must
	// be the kill that follows it.
	if err := rt.Stop(ctx(t), stopped.spec.ID, stopGrace); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", st.Pid, err)
	}
	e := nextExit(t, rt)
	if e.ID != killed.spec.ID || e.Pid != st.Pid {
		t.Fatalf("exit %+v, want %s pid %d", e, killed.spec.ID, st.Pid)
	}
	if e.ExitCode != 137 || e.At.IsZero() {
		t.Errorf("exit %+v, want code 137 (SIGKILL) and a time", e)
	}
	after := inspect(t, rt, killed.spec.ID)
	if after.State != runtime.StateStopped || after.ExitCode != 137 {
		t.Errorf("inspect after kill: %+v", after)
	}
	// It starts again and its next death is reported too.
	st = start(t, rt, killed)
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := nextExit(t, rt); e.ID != killed.spec.ID || e.Pid != st.Pid {
		t.Fatalf("second exit %+v, want %s pid %d", e, killed.spec.ID, st.Pid)
	}
}

func testResources(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	m := newMember(t, "resources")
	start(t, rt, m)
	var s runtime.Stats
	WaitFor(t, waitTimeout, func() error {
		var err error
		s, err = rt.Stats(ctx(t), m.spec.ID)
		if err != nil {
			return err
		}
		if s.MemoryBytes == 0 || s.CPUUsageNanos == 0 || s.At.IsZero() {
			return fmt.Errorf("stats not filled in: %+v", s)
		}
		return nil
	})
	if s.MemoryLimitBytes != uint64(m.spec.MemoryLimitBytes) {
		t.Errorf("memory limit %d, want %d", s.MemoryLimitBytes, m.spec.MemoryLimitBytes)
	}
	if s.SwapLimitBytes != uint64(m.spec.MemoryLimitBytes) {
		t.Errorf("memory+swap limit %d, want %d (no swap)", s.SwapLimitBytes, m.spec.MemoryLimitBytes)
	}
	t.Logf("stats: %+v", s)

	const raised = 300 << 20
	if err := rt.UpdateResources(ctx(t), m.spec.ID, raised); err != nil {
		t.Fatalf("update: %v", err)
	}
	s, err := rt.Stats(ctx(t), m.spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.MemoryLimitBytes != raised || s.SwapLimitBytes != raised {
		t.Fatalf("after update: limit %d, memory+swap %d, want %d", s.MemoryLimitBytes, s.SwapLimitBytes, raised)
	}
	// Lowering works too, and the stored spec keeps the last value.
	const lowered = 200 << 20
	if err := rt.UpdateResources(ctx(t), m.spec.ID, lowered); err != nil {
		t.Fatalf("update down: %v", err)
	}
	if s, err := rt.Stats(ctx(t), m.spec.ID); err != nil || s.MemoryLimitBytes != lowered {
		t.Fatalf("after lowering: %+v, %v", s, err)
	}
	if st := inspect(t, rt, m.spec.ID); st.MemoryLimitBytes != lowered {
		t.Fatalf("stored limit %d, want %d", st.MemoryLimitBytes, lowered)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	rt2 := newRuntime(t)
	if st := inspect(t, rt2, m.spec.ID); st.MemoryLimitBytes != lowered {
		t.Fatalf("stored limit seen by a new driver %d, want %d", st.MemoryLimitBytes, lowered)
	}
	if err := m.ping(); err != nil {
		t.Fatal(err)
	}
	if err := rt2.UpdateResources(ctx(t), "never-existed", raised); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("update a missing member: err = %v, want ErrNotFound", err)
	}
	if _, err := rt2.Stats(ctx(t), "never-existed"); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("stats of a missing member: err = %v, want ErrNotFound", err)
	}
}

func testDestroy(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	m := newMember(t, "destroy")
	start(t, rt, m)
	if err := rt.Destroy(ctx(t), m.spec.ID); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	if st := inspect(t, rt, m.spec.ID); st.State != runtime.StateMissing {
		t.Fatalf("after destroy: %+v", st)
	}
	if err := m.ping(); err == nil {
		t.Fatal("redis answers after destroy")
	}
	sts, err := rt.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := find(sts, m.spec.ID); ok {
		t.Fatalf("list after destroy still has %s", m.spec.ID)
	}
	if err := rt.Destroy(ctx(t), m.spec.ID); err != nil {
		t.Fatalf("destroy again: %v", err)
	}
	// A destroyed member starts afresh under the same id.
	start(t, rt, m)
	if err := rt.Stop(ctx(t), m.spec.ID, stopGrace); err != nil {
		t.Fatal(err)
	}
	if err := rt.Destroy(ctx(t), m.spec.ID); err != nil {
		t.Fatalf("destroy a stopped member: %v", err)
	}
	if st := inspect(t, rt, m.spec.ID); st.State != runtime.StateMissing {
		t.Fatalf("after destroy of a stopped member: %+v", st)
	}
}

func testReattach(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	m := newMember(t, "reattach")
	st := start(t, rt, m)
	info := m.info(t)
	// Agent shutdown: Close never stops the member.
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.ping(); err != nil {
		t.Fatalf("member died with the driver: %v", err)
	}
	rt2 := newRuntime(t)
	sts, err := rt2.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	got, ok := find(sts, m.spec.ID)
	if !ok {
		t.Fatalf("a new driver does not list %s: %+v", m.spec.ID, sts)
	}
	if got.State != runtime.StateRunning || got.Pid != st.Pid || !got.StartedAt.Equal(st.StartedAt) ||
		got.SpecHash != m.spec.SpecHash || got.Addon != m.spec.Addon || got.Role != m.spec.Role {
		t.Fatalf("recovered %+v, want running pid %d started %s with the spec's labels", got, st.Pid, st.StartedAt)
	}
	if err := rt2.Start(ctx(t), m.spec); err != nil {
		t.Fatalf("start on the new driver: %v", err)
	}
	if again := inspect(t, rt2, m.spec.ID); again.Pid != st.Pid {
		t.Fatalf("re-attach restarted the member: pid %d -> %d", st.Pid, again.Pid)
	}
	after := m.info(t)
	if after["run_id"] != info["run_id"] {
		t.Fatalf("redis restarted: run_id %s -> %s", info["run_id"], after["run_id"])
	}
	up0, _ := strconv.Atoi(info["uptime_in_seconds"])
	up1, _ := strconv.Atoi(after["uptime_in_seconds"])
	if up1 < up0 {
		t.Fatalf("uptime went back: %d -> %d", up0, up1)
	}
	// The new driver watches the recovered member.
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := nextExit(t, rt2); e.ID != m.spec.ID || e.Pid != st.Pid {
		t.Fatalf("exit %+v, want %s pid %d", e, m.spec.ID, st.Pid)
	}
}

func testExitAtStart(t *testing.T, newRuntime func(t *testing.T) runtime.Runtime) {
	rt := newRuntime(t)
	m := newMember(t, "badconfig")
	m.spec.Args = append(m.spec.Args, "--no-such-directive", "yes")
	if err := rt.Start(ctx(t), m.spec); err != nil {
		t.Fatalf("start: %v (a process that dies after start is not a start error)", err)
	}
	var st runtime.Status
	WaitFor(t, waitTimeout, func() error {
		var err error
		st, err = rt.Inspect(ctx(t), m.spec.ID)
		if err != nil {
			return err
		}
		if st.State != runtime.StateStopped {
			return fmt.Errorf("state %s, want stopped", st.State)
		}
		return nil
	})
	if st.ExitCode == 0 {
		t.Errorf("exit code 0 for a bad config: %+v", st)
	}
	// The shim copies the process's output into the log file on its own:
	// the exit can be seen a moment before the last lines are there.
	var lines []string
	WaitFor(t, waitTimeout, func() error {
		var err error
		if lines, err = rt.LastLogLines(m.spec.ID, 20); err != nil {
			return err
		}
		if !strings.Contains(strings.Join(lines, "\n"), "no-such-directive") {
			return fmt.Errorf("last log lines do not show redis's complaint: %q", lines)
		}
		return nil
	})
	t.Logf("log of the failed member: %q", lines)
	e := nextExit(t, rt)
	if e.ID != m.spec.ID || e.ExitCode != st.ExitCode {
		t.Fatalf("exit %+v, want %s code %d", e, m.spec.ID, st.ExitCode)
	}
	// Start again replaces the dead container (and fails the same way).
	if err := rt.Start(ctx(t), m.spec); err != nil {
		t.Fatalf("start again: %v", err)
	}
	if err := rt.Destroy(ctx(t), m.spec.ID); err != nil {
		t.Fatal(err)
	}
}
