package runtime_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/agent/runtime/runtimetest"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/packaging"
)

// imageDir holds the images built once for the whole test binary.
var imageDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Getenv(helperEnv) != "" {
			return m.Run() // the helper agent uses the parent's images
		}
		dir, err := os.MkdirTemp("", "cacheplane-runtime-images-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		start := time.Now()
		ix, err := packaging.WriteDir(dir, packaging.DefaultImages(), packaging.OptionalImage, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "build test images:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "built %d images in %s\n", len(ix.Images), time.Since(start).Round(time.Millisecond))
		imageDir = dir
		return m.Run()
	}())
}

// requireContainerd fails (never skips) when containerd does not answer.
func requireContainerd(t *testing.T) {
	t.Helper()
	c, err := net.DialTimeout("unix", runtime.DefaultSocket, 2*time.Second)
	if err != nil {
		t.Fatalf("containerd is not running at %s (%v): start it with `containerd >/tmp/containerd.log 2>&1 &` (make setup does)", runtime.DefaultSocket, err)
	}
	c.Close()
}

// harness gives every test its own containerd namespace and log dir, and
// purges them when the test ends.
type harness struct {
	socket string // "" = runtime.DefaultSocket
	mu     sync.Mutex
	ns     map[*testing.T]*nsState
	n      int
}

type nsState struct {
	cfg runtime.Config
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func (h *harness) config(t *testing.T) runtime.Config {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st, ok := h.ns[t]; ok {
		return st.cfg
	}
	h.n++
	name := strings.ToLower(unsafeChars.ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	cfg := runtime.Config{
		Socket:    h.socket,
		Namespace: fmt.Sprintf("cptest-%d-%d-%s", os.Getpid(), h.n, strings.Trim(name, "-.")),
		ImageDir:  imageDir,
		LogDir:    filepath.Join(t.TempDir(), "logs"),
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	h.ns[t] = &nsState{cfg: cfg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cfg := cfg
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
		d, err := runtime.NewContainerd(ctx, cfg)
		if err != nil {
			t.Errorf("cleanup of namespace %s: %v", cfg.Namespace, err)
			return
		}
		defer d.Close()
		if err := d.Purge(ctx); err != nil {
			t.Errorf("cleanup of namespace %s: %v", cfg.Namespace, err)
		}
		h.mu.Lock()
		delete(h.ns, t)
		h.mu.Unlock()
	})
	return cfg
}

func (h *harness) newRuntime(t *testing.T) *runtime.Containerd {
	t.Helper()
	if h.socket == "" {
		requireContainerd(t)
	}
	cfg := h.config(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := runtime.NewContainerd(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() }) // before the purge: cleanups run last-in first-out
	return d
}

// testWriter sends log output to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestContainerdConformance(t *testing.T) {
	requireContainerd(t)
	h := &harness{ns: map[*testing.T]*nsState{}}
	runtimetest.Run(t, func(t *testing.T) runtime.Runtime { return h.newRuntime(t) })
}

func TestNewContainerdExplainsMissingDaemon(t *testing.T) {
	_, err := runtime.NewContainerd(context.Background(), runtime.Config{
		Socket:    filepath.Join(t.TempDir(), "no.sock"),
		Namespace: "unused",
		LogDir:    t.TempDir(),
	})
	if err == nil || !strings.Contains(err.Error(), "is containerd running?") {
		t.Fatalf("err = %v, want a hint to start containerd", err)
	}
}

// The agent is killed with SIGKILL (no Close, nothing flushed) while its
// member runs; a new driver re-attaches without restarting redis.
const helperEnv = "CACHEPLANE_RUNTIME_HELPER"

type helperConfig struct {
	Config runtime.Config
	Spec   runtime.Spec
}

// TestHelperAgentProcess is the "agent" TestReattachAfterAgentKill9 runs
// as a child process; without the environment variable it does nothing.
func TestHelperAgentProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		return
	}
	var hc helperConfig
	if err := json.Unmarshal([]byte(raw), &hc); err != nil {
		t.Fatal(err)
	}
	hc.Config.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := runtime.NewContainerd(ctx, hc.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, hc.Spec); err != nil {
		t.Fatal(err)
	}
	st, err := d.Inspect(ctx, hc.Spec.ID)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY %d\n", st.Pid)
	<-ctx.Done() // killed long before
}

func TestReattachAfterAgentKill9(t *testing.T) {
	requireContainerd(t)
	h := &harness{ns: map[*testing.T]*nsState{}}
	cfg := h.config(t)
	port := freePort(t)
	dir := t.TempDir()
	spec := runtime.Spec{
		ID: "kill9", Addon: "a1", Member: "m1", Role: "redis", Image: runtimetest.Image,
		Args: []string{"/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", dir, "--save", "", "--appendonly", "no", "--protected-mode", "no"},
		DataDir: dir, MemoryLimitBytes: 256 << 20, SpecHash: "h1",
	}
	hcCfg := cfg
	hcCfg.Logger = nil
	raw, err := json.Marshal(helperConfig{Config: hcCfg, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAgentProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var pid int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "READY %d", &pid); err == nil {
			break
		}
	}
	if pid == 0 {
		t.Fatalf("helper agent did not start the member (%v)", sc.Err())
	}
	var runID string
	runtimetest.WaitFor(t, 30*time.Second, func() (err error) {
		runID, err = redisInfo(port, "run_id")
		return err
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("helper agent exited cleanly; want killed")
	}

	d := h.newRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sts, err := d.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].ID != spec.ID || sts[0].State != runtime.StateRunning || sts[0].Pid != pid ||
		sts[0].Addon != "a1" || sts[0].Member != "m1" || sts[0].SpecHash != "h1" {
		t.Fatalf("after the agent's kill -9, list = %+v; want %s running as pid %d", sts, spec.ID, pid)
	}
	start := time.Now()
	if err := d.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Logf("re-attach (Start of a running member) took %s", time.Since(start))
	if st, err := d.Inspect(ctx, spec.ID); err != nil || st.Pid != pid {
		t.Fatalf("after re-attach: %+v, %v; want pid %d", st, err, pid)
	}
	if got, err := redisInfo(port, "run_id"); err != nil || got != runID {
		t.Fatalf("redis restarted: run_id %s -> %s (%v)", runID, got, err)
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

func redisInfo(port int, field string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "INFO", "server").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("redis-cli INFO: %w: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && k == field {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO has no %s: %s", field, out)
}

// privateContainerd runs a containerd of the test's own (state, root and
// socket in temporary directories), so the test can crash and restart it
// without disturbing the machine's daemon. It returns the socket and a
// function that SIGKILLs the daemon (shims and tasks survive) and starts it
// again.
func privateContainerd(t *testing.T) (socket string, crashAndRestart func()) {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatalf("containerd binary not found: %v", err)
	}
	// Short paths: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "cptcd-")
	if err != nil {
		t.Fatal(err)
	}
	socket = filepath.Join(dir, "c.sock")
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte("version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(bin, "--config", config, "--address", socket,
			"--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		runtimetest.WaitFor(t, 30*time.Second, func() error {
			c, err := net.DialTimeout("unix", socket, time.Second)
			if err != nil {
				return fmt.Errorf("private containerd does not answer: %w", err)
			}
			return c.Close()
		})
	}
	kill := func() {
		_ = cmd.Process.Signal(syscall.SIGKILL) // the daemon only, not the group: shims must survive
		_ = cmd.Wait()
	}
	start()
	t.Cleanup(func() {
		kill()
		logf.Close()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("remove %s: %v", dir, err)
		}
	})
	return socket, func() { kill(); start() }
}

// A crash of containerd is not a member's death: tasks keep running, no
// exit is reported (task.Wait would report 255 here), and the driver's
// watcher resumes so the next real death is reported.
func TestExitsAcrossContainerdRestart(t *testing.T) {
	socket, crashAndRestart := privateContainerd(t)
	h := &harness{socket: socket, ns: map[*testing.T]*nsState{}}
	d := h.newRuntime(t)
	port := freePort(t)
	dir := t.TempDir()
	spec := runtime.Spec{
		ID: "survivor", Addon: "a1", Member: "m1", Role: "redis", Image: runtimetest.Image,
		Args: []string{"/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
			"--dir", dir, "--save", "", "--appendonly", "no", "--protected-mode", "no"},
		DataDir: dir, SpecHash: "h1",
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := d.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	st, err := d.Inspect(ctx, spec.ID)
	if err != nil || st.State != runtime.StateRunning {
		t.Fatalf("inspect: %+v, %v", st, err)
	}
	var runID string
	runtimetest.WaitFor(t, 30*time.Second, func() (err error) {
		runID, err = redisInfo(port, "run_id")
		return err
	})

	crashAndRestart()

	runtimetest.WaitFor(t, 30*time.Second, func() error {
		got, err := d.Inspect(ctx, spec.ID)
		if err != nil {
			return err
		}
		if got.State != runtime.StateRunning || got.Pid != st.Pid {
			return fmt.Errorf("after containerd restart: %+v, want running pid %d", got, st.Pid)
		}
		return nil
	})
	if got, err := redisInfo(port, "run_id"); err != nil || got != runID {
		t.Fatalf("redis restarted with containerd: run_id %s -> %s (%v)", runID, got, err)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case e := <-d.Exits():
		if e.ID != spec.ID || e.Pid != st.Pid || e.ExitCode != 137 {
			t.Fatalf("first exit reported %+v; want only the kill of %s pid %d (137)", e, spec.ID, st.Pid)
		}
	case <-timer.C:
		t.Fatal("the kill after containerd's restart was not reported")
	}
}

// Close stops the driver's goroutines (the exit watcher and its event
// stream) and closes Exits; it leaves members alone (the suite checks that).
func TestCloseLeaksNoGoroutines(t *testing.T) {
	requireContainerd(t)
	h := &harness{ns: map[*testing.T]*nsState{}}
	cfg := h.config(t)
	before := goruntime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		d, err := runtime.NewContainerd(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.List(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, ok := <-d.Exits(); ok {
			t.Fatal("Exits not closed by Close")
		}
		if err := d.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	runtimetest.WaitFor(t, 10*time.Second, func() error {
		if n := goruntime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:goruntime.Stack(buf, true)])
		}
		return nil
	})
}

// The sentinel and haproxy images run: redis-sentinel keeps its name (the
// Debian binary switches on argv[0]) and haproxy proxies to a redis member.
func TestSentinelAndHAProxyImagesRun(t *testing.T) {
	requireContainerd(t)
	h := &harness{ns: map[*testing.T]*nsState{}}
	d := h.newRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	redisPort, sentinelPort, proxyPort := freePort(t), freePort(t), freePort(t)
	redisDir, sentinelDir, proxyDir := t.TempDir(), t.TempDir(), t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(sentinelDir, "sentinel.conf"), fmt.Sprintf(
		"bind 127.0.0.1\nport %d\nsentinel monitor m1 127.0.0.1 %d 1\n", sentinelPort, redisPort))
	write(filepath.Join(proxyDir, "haproxy.cfg"), fmt.Sprintf(`global
    maxconn 100
defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend redis
    bind 127.0.0.1:%d
    default_backend primary
backend primary
    server r1 127.0.0.1:%d
`, proxyPort, redisPort))
	specs := []runtime.Spec{
		{ID: "redis", Role: "redis", Image: api.ImageRedis7, DataDir: redisDir, SpecHash: "1",
			Args: []string{"/usr/bin/redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(redisPort),
				"--dir", redisDir, "--save", "", "--protected-mode", "no"}},
		{ID: "sentinel", Role: "sentinel", Image: api.ImageSentinel7, DataDir: sentinelDir, SpecHash: "1",
			Args: []string{"/usr/bin/redis-sentinel", filepath.Join(sentinelDir, "sentinel.conf")}},
		{ID: "haproxy", Role: "haproxy", Image: api.ImageHAProxy, DataDir: proxyDir, SpecHash: "1",
			Args: []string{"/usr/sbin/haproxy", "-db", "-f", filepath.Join(proxyDir, "haproxy.cfg")}},
	}
	for _, s := range specs {
		if err := d.Start(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	runtimetest.WaitFor(t, 30*time.Second, func() error {
		mode, err := redisInfo(sentinelPort, "redis_mode")
		if err != nil {
			return err
		}
		if mode != "sentinel" {
			return fmt.Errorf("redis_mode %q on the sentinel port, want sentinel", mode)
		}
		return nil
	})
	runtimetest.WaitFor(t, 30*time.Second, func() error {
		mode, err := redisInfo(proxyPort, "redis_mode") // through haproxy
		if err != nil {
			return err
		}
		if mode != "standalone" {
			return fmt.Errorf("redis_mode %q through haproxy, want standalone", mode)
		}
		return nil
	})
	for _, s := range specs {
		if st, err := d.Inspect(ctx, s.ID); err != nil || st.State != runtime.StateRunning {
			lines, _ := d.LastLogLines(s.ID, 20)
			t.Fatalf("%s: %+v, %v; log: %q", s.ID, st, err, lines)
		}
	}
}
