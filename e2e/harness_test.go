package e2e

// The harness: build the real binaries once per test run, start coordinator
// processes on loopback addresses, run the real CLI, keep data dirs of
// failed tests. Waits go through the api package only (WaitForX) and poll
// with deadlines; nothing sleeps to synchronise.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// Loopback addresses of the coordinators of a 3-member cluster. Any
// 127.0.0.0/8 address works on Linux without set-up.
const (
	IP1 = "127.0.0.21"
	IP2 = "127.0.0.22"
	IP3 = "127.0.0.23"
)

// Timeouts shared by the tests. Binaries built with -race are several times
// slower, so waits are generous; assertions about speed use their own bounds.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 20 * time.Second
	cliTimeout   = 60 * time.Second
)

// ---------------------------------------------------------------------------
// Binaries

// Binaries are the paths of the built executables.
type Binaries struct {
	Coordinator string // cacheplane-coordinator
	CLI         string // cacheplane
	Agent       string // cacheplane-agent
}

var (
	buildOnce sync.Once
	built     Binaries
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildTags are the build tags of every binary, as the Makefile's GOTAGS
// (no_dynamic_plugins: no plugin package in the binaries; footprint in
// docs/benchmarks.md).
const buildTags = "no_dynamic_plugins"

// Build builds cmd/coordinator and cmd/cacheplane once per test run, with
// -race when this test binary has it.
func Build(t testing.TB) Binaries {
	t.Helper()
	buildOnce.Do(func() {
		start := time.Now()
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		if binDir, err = os.MkdirTemp("", "cacheplane-e2e-bin-"); err != nil {
			buildErr = err
			return
		}
		built = Binaries{
			Coordinator: filepath.Join(binDir, "cacheplane-coordinator"),
			CLI:         filepath.Join(binDir, "cacheplane"),
			Agent:       filepath.Join(binDir, "cacheplane-agent"),
		}
		for _, b := range []struct{ out, pkg string }{
			{built.Coordinator, "./cmd/coordinator"},
			{built.CLI, "./cmd/cacheplane"},
			{built.Agent, "./cmd/agent"},
		} {
			args := []string{"build", "-tags", buildTags}
			if raceEnabled {
				args = append(args, "-race")
			}
			args = append(args, "-o", b.out, b.pkg)
			cmd := exec.Command("go", args...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
				return
			}
		}
		t.Logf("built binaries (race=%v) in %s", raceEnabled, time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return built
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the cacheplane module")
	}
	return filepath.Dir(mod), nil
}

// ---------------------------------------------------------------------------
// Per-test root: data dirs, sockets. Kept when the test fails.

// Root is one test's temporary tree: <dir>/<id>/ data dirs, <dir>/sock/.
type Root struct {
	Dir       string
	SocketDir string
}

var (
	rootsMu sync.Mutex
	roots   = map[testing.TB]*Root{}
)

// RootOf returns t's root, creating it on first use. When t fails, the
// tree is moved to e2e/testdata/failed-<TestName>-<time> and its path
// logged; otherwise it is removed. Its cleanup runs after every process of
// the test is killed (cleanups registered later run first).
func RootOf(t testing.TB) *Root {
	t.Helper()
	rootsMu.Lock()
	defer rootsMu.Unlock()
	if r, ok := roots[t]; ok {
		return r
	}
	dir, err := os.MkdirTemp("", "cacheplane-e2e-")
	if err != nil {
		t.Fatalf("temp root: %v", err)
	}
	r := &Root{Dir: dir, SocketDir: filepath.Join(dir, "sock")}
	if err := os.MkdirAll(r.SocketDir, 0o700); err != nil {
		t.Fatalf("socket dir: %v", err)
	}
	roots[t] = r
	t.Cleanup(func() {
		rootsMu.Lock()
		delete(roots, t)
		rootsMu.Unlock()
		if !t.Failed() {
			_ = os.RemoveAll(dir)
			return
		}
		keep := keptPath(t.Name())
		if err := os.MkdirAll(filepath.Dir(keep), 0o755); err == nil {
			if err := os.Rename(dir, keep); err == nil {
				t.Logf("test failed: data dirs and logs kept in %s", keep)
				return
			}
		}
		t.Logf("test failed: data dirs and logs kept in %s", dir)
	})
	return r
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func keptPath(testName string) string {
	name := unsafeName.ReplaceAllString(testName, "_")
	base := "testdata"
	if root, err := moduleRoot(); err == nil {
		base = filepath.Join(root, "e2e", "testdata")
	}
	return filepath.Join(base, fmt.Sprintf("failed-%s-%s", name, time.Now().Format("20060102-150405.000")))
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// ---------------------------------------------------------------------------
// Coordinator processes

// CoordinatorOpts tunes StartCoordinator.
type CoordinatorOpts struct {
	// Bootstrap forms a new 1-member cluster (the first member only).
	Bootstrap bool
	// LogLevel of the daemon; default info.
	LogLevel string
	// NoWait returns as soon as the process is started, without waiting for
	// its admin socket to answer.
	NoWait bool
	// ExtraArgs are appended to serve's flags (e.g. --host-down-after 1s).
	ExtraArgs []string
	// Binary is the coordinator executable to run (another release's);
	// default this build's.
	Binary string
}

// Coordinator is one cacheplane-coordinator process. Its ports and dirs
// stay the same across Restart.
type Coordinator struct {
	t        testing.TB
	bin      string
	ID       string
	IP       string
	DataDir  string
	Socket   string
	RaftAddr string
	HTTPAddr string
	LogPath  string
	args     []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current process has exited
	werr error         // its Wait error
}

// StartCoordinator starts `cacheplane-coordinator serve` for member id on
// ip, with free ports, data dir <root>/<id>, socket <root>/sock/<id>.sock,
// stdout and stderr appended to <data dir>/coordinator.log. It waits for
// the admin socket to answer (unless opts.NoWait). The process is killed
// when the test ends.
func StartCoordinator(t testing.TB, id, ip string, opts CoordinatorOpts) *Coordinator {
	t.Helper()
	bins := Build(t)
	root := RootOf(t)
	c := &Coordinator{
		t: t, bin: bins.Coordinator, ID: id, IP: ip,
		DataDir: filepath.Join(root.Dir, id),
		Socket:  filepath.Join(root.SocketDir, id+".sock"),
	}
	ports := freePorts(t, ip, 2)
	c.RaftAddr = fmt.Sprintf("%s:%d", ip, ports[0])
	c.HTTPAddr = fmt.Sprintf("%s:%d", ip, ports[1])
	c.LogPath = filepath.Join(c.DataDir, "coordinator.log")
	if opts.Binary != "" {
		c.bin = opts.Binary
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		t.Fatalf("data dir: %v", err)
	}
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	c.args = []string{"serve",
		"--id", id, "--data-dir", c.DataDir,
		"--raft-addr", c.RaftAddr, "--http-addr", c.HTTPAddr,
		"--socket", c.Socket,
		"--log-level", level,
	}
	if opts.Bootstrap {
		c.args = append(c.args, "--bootstrap")
	}
	c.args = append(c.args, opts.ExtraArgs...)
	t.Cleanup(func() {
		c.Kill()
		if t.Failed() {
			t.Logf("%s: last lines of %s:\n%s", c.ID, c.LogPath, tail(c.LogPath, 25))
		}
	})
	c.start()
	if !opts.NoWait {
		c.WaitReady()
	}
	return c
}

var (
	portsMu   sync.Mutex
	usedPorts = map[int]bool{}
)

// freePorts returns n distinct ports free on ip, never one this test
// process handed out before (testutil.FreePort alone may return the same
// port twice in a row, once its listener is closed).
func freePorts(t testing.TB, ip string, n int) []int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	var (
		out []int
		lns []net.Listener
	)
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for tries := 0; len(out) < n; tries++ {
		if tries > 100 {
			t.Fatalf("no %d free ports on %s", n, ip)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("free port on %s: %v", ip, err)
		}
		lns = append(lns, l)
		p := l.Addr().(*net.TCPAddr).Port
		if usedPorts[p] {
			continue
		}
		usedPorts[p] = true
		out = append(out, p)
	}
	return out
}

func (c *Coordinator) start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running() {
		c.t.Fatalf("%s: start: already running", c.ID)
	}
	logf, err := os.OpenFile(c.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatalf("%s: log file: %v", c.ID, err)
	}
	fmt.Fprintf(logf, "=== harness: start %s %s at %s\n", c.bin, strings.Join(c.args, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(c.bin, c.args...)
	cmd.Env = hermeticEnv(nil)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group; die with the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("%s: start: %v", c.ID, err)
	}
	done := make(chan struct{})
	c.cmd, c.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		c.mu.Lock()
		c.werr = err
		c.mu.Unlock()
		close(done)
	}()
}

func (c *Coordinator) running() bool {
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Running reports whether the process is alive.
func (c *Coordinator) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running()
}

// Pid is the current process id (0 when none was started).
func (c *Coordinator) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// WaitReady waits until the admin socket answers /v1/cluster. It fails the
// test at once, with the log's tail, if the process exits meanwhile.
func (c *Coordinator) WaitReady() {
	c.t.Helper()
	cl := c.Client()
	testutil.WaitFor(c.t, startTimeout, func() error {
		if !c.Running() {
			c.t.Fatalf("%s exited while starting (%v); log tail:\n%s", c.ID, c.exitErr(), tail(c.LogPath, 25))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := cl.Cluster(ctx)
		return err
	})
}

func (c *Coordinator) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.werr
}

// Kill sends SIGKILL to the process and waits for it to exit. No-op when it
// is not running.
func (c *Coordinator) Kill() {
	c.mu.Lock()
	cmd, done, alive := c.cmd, c.done, c.running()
	c.mu.Unlock()
	if !alive {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop sends SIGTERM and waits for a clean exit (status 0). A process that
// does not exit within stopTimeout is killed and the test fails.
func (c *Coordinator) Stop() {
	c.t.Helper()
	c.mu.Lock()
	cmd, done, alive := c.cmd, c.done, c.running()
	c.mu.Unlock()
	if !alive {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		// SIGQUIT makes the Go runtime dump every goroutine into the log.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			c.Kill()
		}
		c.t.Fatalf("%s did not exit within %s of SIGTERM; goroutines dumped (SIGQUIT) into %s "+
			"(seen so far: Coordinator.Close waiting for a leader controller stuck in Store.Apply after Raft was shut down)",
			c.ID, stopTimeout, c.LogPath)
	}
	if err := c.exitErr(); err != nil {
		c.t.Fatalf("%s: unclean exit after SIGTERM: %v; log tail:\n%s", c.ID, err, tail(c.LogPath, 25))
	}
}

// Restart starts the process again with the same dirs, ports and flags,
// and waits for its admin socket. The process must not be running.
func (c *Coordinator) Restart() {
	c.t.Helper()
	c.start()
	c.WaitReady()
}

// Replace stops the process (SIGTERM, clean exit) and starts bin instead
// on the same data dir, addresses and flags (plus extraArgs), then waits
// for its admin socket: a member upgraded (or downgraded) in place.
func (c *Coordinator) Replace(bin string, extraArgs ...string) {
	c.t.Helper()
	c.Stop()
	c.mu.Lock()
	c.bin = bin
	c.args = append(c.args, extraArgs...)
	c.mu.Unlock()
	c.Restart()
}

// Join runs `cacheplane join <peer's http addr> --token T` on this
// member's socket, with a member join token from peer's socket.
func (c *Coordinator) Join(peer *Coordinator) CLIResult {
	c.t.Helper()
	return c.CLI("join", peer.HTTPAddr, "--token", peer.Token("members-token", c.ID))
}

// Token runs `cacheplane <cmd> [name]` (hosts-token, members-token) on
// this member's socket and returns the token.
func (c *Coordinator) Token(cmd, name string) string {
	c.t.Helper()
	args := []string{cmd}
	if name != "" {
		args = append(args, name)
	}
	res := c.CLI(args...)
	if res.Code != 0 {
		c.t.Fatalf("%s on %s: %s", cmd, c.ID, res)
	}
	return strings.TrimSpace(res.Stdout)
}

// Client returns an api.Client on the admin socket. RetryFor is short: the
// tests decide themselves how long to insist.
func (c *Coordinator) Client() *api.Client {
	cl := api.NewClient(c.Socket)
	cl.RetryFor = 2 * time.Second
	return cl
}

// CLI runs the cacheplane binary against this member's admin socket.
func (c *Coordinator) CLI(args ...string) CLIResult {
	c.t.Helper()
	return CLI(c.t, c.Socket, args...)
}

func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------------
// CLI

// CLIResult is what one CLI run printed and how it exited.
type CLIResult struct {
	Args     []string
	Stdout   string
	Stderr   string
	Code     int
	Duration time.Duration
}

func (r CLIResult) String() string {
	return fmt.Sprintf("cacheplane %s: exit %d after %s\nstdout: %s\nstderr: %s",
		strings.Join(r.Args, " "), r.Code, r.Duration.Round(time.Millisecond), r.Stdout, r.Stderr)
}

// JSON decodes stdout into v, failing the test when it cannot.
func (r CLIResult) JSON(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.Stdout), v); err != nil {
		t.Fatalf("decode JSON of %s: %v", r, err)
	}
}

// CLI runs the real cacheplane binary with --socket socket (when not empty)
// and args, and returns its output and exit code.
func CLI(t testing.TB, socket string, args ...string) CLIResult {
	t.Helper()
	if socket != "" {
		args = append([]string{"--socket", socket}, args...)
	}
	return CLIEnv(t, nil, args...)
}

// CLIEnv runs the real cacheplane binary with extra environment variables
// (on top of a hermetic environment without CACHEPLANE_*).
func CLIEnv(t testing.TB, env map[string]string, args ...string) CLIResult {
	t.Helper()
	bins := Build(t)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.CLI, args...)
	cmd.Env = hermeticEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := CLIResult{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), Duration: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("run cacheplane %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("cacheplane %s did not finish within %s", strings.Join(args, " "), cliTimeout)
	}
	return res
}

// hermeticEnv is the test's environment without CACHEPLANE_* variables,
// plus extra.
func hermeticEnv(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CACHEPLANE_") {
			env = append(env, kv)
		}
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	return env
}

// ---------------------------------------------------------------------------
// Clusters and WaitForX (through the public api only)

// StartCluster starts n coordinators c1..cn on IP1, IP2, IP3 (then
// 127.0.0.24, 127.0.0.25) and forms the cluster through the CLI; see
// StartClusterOn.
func StartCluster(t testing.TB, n int) []*Coordinator {
	t.Helper()
	ips := []string{IP1, IP2, IP3, "127.0.0.24", "127.0.0.25"}
	if n < 1 || n > len(ips) {
		t.Fatalf("StartCluster: %d members: use 1 to %d", n, len(ips))
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%d", i+1)
	}
	return StartClusterOn(t, ids, ips[:n])
}

// StartClusterOn starts one coordinator per id on the matching ip, the
// first bootstrapped, and forms the cluster through the CLI: `cacheplane
// --socket <sN> join <first member's http addr>`. It returns once every
// member sees len(ids) voters and a leader.
func StartClusterOn(t testing.TB, ids, ips []string) []*Coordinator {
	t.Helper()
	if len(ids) == 0 || len(ids) != len(ips) {
		t.Fatalf("StartClusterOn: %d ids for %d ips", len(ids), len(ips))
	}
	cs := make([]*Coordinator, len(ids))
	cs[0] = StartCoordinator(t, ids[0], ips[0], CoordinatorOpts{Bootstrap: true})
	WaitForLeader(t, startTimeout, cs[:1]...)
	for i := 1; i < len(ids); i++ {
		cs[i] = StartCoordinator(t, ids[i], ips[i], CoordinatorOpts{})
	}
	for i := 1; i < len(ids); i++ {
		res := cs[i].Join(cs[0])
		if res.Code != 0 {
			t.Fatalf("join %s to %s through the CLI failed: %s", cs[i].ID, cs[0].ID, res)
		}
	}
	WaitForVoters(t, startTimeout, len(ids), cs...)
	return cs
}

// WaitForLeader waits until every given member that is running reports the
// same leader, that leader reports itself Leader and is one of the running
// members, and returns it.
func WaitForLeader(t testing.TB, timeout time.Duration, cs ...*Coordinator) *Coordinator {
	t.Helper()
	var leader *Coordinator
	testutil.WaitFor(t, timeout, func() error {
		var err error
		leader, err = findLeader(cs)
		return err
	})
	return leader
}

func findLeader(cs []*Coordinator) (*Coordinator, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	leaderID := ""
	byID := map[string]*Coordinator{}
	for _, c := range cs {
		if !c.Running() {
			continue
		}
		byID[c.ID] = c
		st, err := c.Client().Cluster(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.ID, err)
		}
		if st.LeaderID == "" {
			return nil, fmt.Errorf("%s sees no leader", c.ID)
		}
		if leaderID != "" && st.LeaderID != leaderID {
			return nil, fmt.Errorf("members disagree on the leader: %s and %s", leaderID, st.LeaderID)
		}
		leaderID = st.LeaderID
	}
	l, ok := byID[leaderID]
	if !ok {
		return nil, fmt.Errorf("leader %q is not a running member", leaderID)
	}
	st, err := l.Client().Cluster(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.ID, err)
	}
	if st.ServedState != "Leader" {
		return nil, fmt.Errorf("%s is named leader but is %s", l.ID, st.ServedState)
	}
	return l, nil
}

// WaitForVoters waits until every running member sees exactly n voters and
// a leader.
func WaitForVoters(t testing.TB, timeout time.Duration, n int, cs ...*Coordinator) {
	t.Helper()
	testutil.WaitFor(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, c := range cs {
			if !c.Running() {
				continue
			}
			st, err := c.Client().Cluster(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", c.ID, err)
			}
			if v := voters(st); v != n {
				return fmt.Errorf("%s sees %d voters, want %d: %+v", c.ID, v, n, st.Members)
			}
			if st.LeaderID == "" {
				return fmt.Errorf("%s sees no leader", c.ID)
			}
		}
		return nil
	})
}

func voters(st api.ClusterStatus) int {
	n := 0
	for _, m := range st.Members {
		if m.Suffrage == "Voter" {
			n++
		}
	}
	return n
}

// WaitForApplied waits until c has applied index idx, and returns how long
// that took.
func WaitForApplied(t testing.TB, timeout time.Duration, c *Coordinator, idx uint64) time.Duration {
	t.Helper()
	start := time.Now()
	testutil.WaitFor(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := c.Client().Cluster(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", c.ID, err)
		}
		if st.AppliedIdx < idx {
			return fmt.Errorf("%s applied %d, want >= %d", c.ID, st.AppliedIdx, idx)
		}
		return nil
	})
	return time.Since(start)
}

// LeaderAppliedIndex returns the leader's applied index after a consistent
// read, i.e. an index that covers every write acknowledged so far.
func LeaderAppliedIndex(t testing.TB, cs ...*Coordinator) uint64 {
	t.Helper()
	var idx uint64
	testutil.WaitFor(t, startTimeout, func() error {
		l, err := findLeader(cs)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// A consistent read makes the leader wait until its FSM has caught
		// up with its commit index; the status read then names that index.
		if _, err := l.Client().Plans(ctx); err != nil {
			return fmt.Errorf("consistent read on %s: %w", l.ID, err)
		}
		st, err := l.Client().Cluster(ctx)
		if err != nil {
			return err
		}
		idx = st.AppliedIdx
		return nil
	})
	return idx
}
