package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/packaging"
)

// ---------------------------------------------------------------------------
// Images

var (
	imagesOnce sync.Once
	imagesDir  string
	imagesErr  error
)

// Images returns a directory of built member images: $CACHEPLANE_IMAGES,
// else <repo>/.dev/images when it holds an index, else a fresh build into a
// temporary directory (about 2 s).
func Images(t testing.TB) string {
	t.Helper()
	imagesOnce.Do(func() {
		if d := os.Getenv("CACHEPLANE_IMAGES"); d != "" {
			if _, err := packaging.ReadIndex(d); err == nil {
				imagesDir = d
				return
			}
		}
		if root, err := moduleRoot(); err == nil {
			d := filepath.Join(root, ".dev", "images")
			if _, err := packaging.ReadIndex(d); err == nil {
				imagesDir = d
				return
			}
		}
		d, err := os.MkdirTemp("", "cacheplane-e2e-images-")
		if err != nil {
			imagesErr = err
			return
		}
		_, imagesErr = packaging.WriteDir(d, packaging.DefaultImages(), packaging.OptionalImage, func(string, ...any) {})
		imagesDir = d
	})
	if imagesErr != nil {
		t.Fatalf("build images: %v", imagesErr)
	}
	return imagesDir
}

// ---------------------------------------------------------------------------
// Agent processes

// AgentOpts tunes StartAgent.
type AgentOpts struct {
	MemoryMB  int    // default 4096
	Zone      string // default none
	Heartbeat time.Duration
	ExtraArgs []string
	// Binary is the agent executable to run (another release's); default
	// this build's.
	Binary string
	// TokenFrom is the coordinator asked for the agent's join token
	// (hosts-token); default the c of StartAgent.
	TokenFrom *Coordinator
	// Token, when set, is the join token passed instead; NoToken passes
	// none.
	Token   string
	NoToken bool
	// NoWait returns once the process started (c then only gives the token).
	NoWait bool
}

// Agent is one cacheplane-agent process simulating host ID on IP, with its
// own data dir and containerd namespace. Members survive Kill (as on a real
// host when only the agent dies); KillHost kills the members too.
type Agent struct {
	t         testing.TB
	bin       string
	ID        string
	IP        string
	DataDir   string
	Namespace string
	LogPath   string
	args      []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	werr error
}

// StartAgent starts cacheplane-agent for host id on ip, registered with the
// coordinators at coordHTTP (peer API addresses). It waits until the host
// is ready in the coordinator's view when c is not nil. At the end of the
// test the agent is killed and its namespace purged (containers, images).
func StartAgent(t testing.TB, c *Coordinator, id, ip string, opts AgentOpts, coordHTTP ...string) *Agent {
	t.Helper()
	bins := Build(t)
	root := RootOf(t)
	images := Images(t)
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 4096
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = 500 * time.Millisecond
	}
	a := &Agent{
		t: t, bin: bins.Agent, ID: id, IP: ip,
		DataDir:   filepath.Join(root.Dir, "agent-"+id),
		Namespace: "cacheplane-e2e-" + randomHex(4) + "-" + id,
	}
	a.LogPath = filepath.Join(a.DataDir, "agent.log")
	if opts.Binary != "" {
		a.bin = opts.Binary
	}
	if err := os.MkdirAll(a.DataDir, 0o700); err != nil {
		t.Fatalf("agent dir: %v", err)
	}
	if len(coordHTTP) == 0 && c != nil {
		coordHTTP = []string{c.HTTPAddr}
	}
	tc := opts.TokenFrom
	if tc == nil {
		tc = c
	}
	token := opts.Token
	// Another release's agent (opts.Binary) predates join tokens.
	if token == "" && !opts.NoToken && opts.Binary == "" {
		if tc == nil {
			t.Fatalf("StartAgent %s: no coordinator to ask a join token of", id)
		}
		token = tc.Token("hosts-token", id)
	}
	a.args = []string{"--host-id", id, "--address", ip, "--memory-mb", fmt.Sprint(opts.MemoryMB),
		"--coordinator", strings.Join(coordHTTP, ","),
		"--data-dir", a.DataDir, "--namespace", a.Namespace, "--image-dir", images,
		"--heartbeat-interval", opts.Heartbeat.String(), "--restart-delay", "1s", "--log-level", "debug"}
	if token != "" {
		a.args = append(a.args, "--join-token", token)
	}
	if opts.Zone != "" {
		a.args = append(a.args, "--zone", opts.Zone)
	}
	a.args = append(a.args, opts.ExtraArgs...)
	t.Cleanup(func() {
		a.Kill()
		if t.Failed() {
			t.Logf("agent %s: last lines of %s:\n%s", a.ID, a.LogPath, tail(a.LogPath, 25))
		}
		a.purge()
	})
	a.start()
	if c != nil && !opts.NoWait {
		a.WaitReady(c)
	}
	return a
}

func (a *Agent) start() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	logf, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		a.t.Fatalf("agent %s: log: %v", a.ID, err)
	}
	shown := append([]string(nil), a.args...)
	for i := range shown {
		if i > 0 && shown[i-1] == "--join-token" {
			shown[i] = "(join token)"
		}
	}
	fmt.Fprintf(logf, "=== harness: start %s %s at %s\n", a.bin, strings.Join(shown, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(a.bin, a.args...)
	cmd.Env = hermeticEnv(nil)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		a.t.Fatalf("agent %s: start: %v", a.ID, err)
	}
	done := make(chan struct{})
	a.cmd, a.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		a.mu.Lock()
		a.werr = err
		a.mu.Unlock()
		close(done)
	}()
}

// Running reports whether the agent process is alive.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Pid is the agent's process id.
func (a *Agent) Pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// WaitReady waits until the coordinator lists the host as ready.
func (a *Agent) WaitReady(c *Coordinator) {
	a.t.Helper()
	WaitForHostState(a.t, c, a.ID, api.HostReady, startTimeout)
}

// WaitExit waits until the agent process exits by itself and returns its
// exit error (nil for status 0); the test fails if it runs on past timeout.
func (a *Agent) WaitExit(timeout time.Duration) error {
	a.t.Helper()
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		a.t.Fatalf("agent %s still runs after %s; log tail:\n%s", a.ID, timeout, tail(a.LogPath, 25))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.werr
}

// Kill sends SIGKILL to the agent only; its members keep running.
func (a *Agent) Kill() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil || !a.Running() {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts the agent again with the same flags.
func (a *Agent) Restart() {
	a.t.Helper()
	if a.Running() {
		a.t.Fatalf("agent %s: restart while running", a.ID)
	}
	a.start()
}

// KillHost simulates the loss of the whole host: SIGKILL to the agent and
// to every member process of its namespace.
func (a *Agent) KillHost() {
	a.t.Helper()
	a.Kill()
	rt := a.runtime()
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sts, err := rt.List(ctx)
	if err != nil {
		a.t.Fatalf("agent %s: list members: %v", a.ID, err)
	}
	for _, st := range sts {
		if st.State == runtime.StateRunning && st.Pid > 0 {
			_ = syscall.Kill(st.Pid, syscall.SIGKILL)
		}
	}
	testutil.WaitFor(a.t, 10*time.Second, func() error {
		sts, err := rt.List(ctx)
		if err != nil {
			return err
		}
		for _, st := range sts {
			if st.State == runtime.StateRunning {
				return fmt.Errorf("member %s still running", st.ID)
			}
		}
		return nil
	})
}

// Members lists the containers of the agent's namespace.
func (a *Agent) Members() []runtime.Status {
	a.t.Helper()
	rt := a.runtime()
	defer rt.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sts, err := rt.List(ctx)
	if err != nil {
		a.t.Fatalf("agent %s: list members: %v", a.ID, err)
	}
	return sts
}

func (a *Agent) runtime() *runtime.Containerd {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt, err := runtime.NewContainerd(ctx, runtime.Config{Namespace: a.Namespace, ImageDir: Images(a.t), LogDir: filepath.Join(a.DataDir, "logs")})
	if err != nil {
		a.t.Fatalf("agent %s: containerd: %v", a.ID, err)
	}
	return rt
}

// purge destroys everything in the agent's namespace.
func (a *Agent) purge() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rt, err := runtime.NewContainerd(ctx, runtime.Config{Namespace: a.Namespace, LogDir: filepath.Join(a.DataDir, "logs")})
	if err != nil {
		a.t.Logf("agent %s: purge: %v", a.ID, err)
		return
	}
	defer rt.Close()
	if err := rt.Purge(ctx); err != nil {
		a.t.Logf("agent %s: purge: %v", a.ID, err)
	}
}

// WaitForHostState polls the coordinator until host id is in state.
func WaitForHostState(t testing.TB, c *Coordinator, id string, state api.HostState, timeout time.Duration) {
	t.Helper()
	cl := c.Client()
	testutil.WaitFor(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		hs, err := cl.Hosts(ctx)
		if err != nil {
			return err
		}
		for _, h := range hs {
			if h.ID == id {
				if h.State != state {
					return fmt.Errorf("host %s is %s, want %s", id, h.State, state)
				}
				return nil
			}
		}
		return fmt.Errorf("host %s not registered", id)
	})
}

// WaitForAddonStatus polls until the app's addon has status.
func WaitForAddonStatus(t testing.TB, c *Coordinator, app string, status api.AddonStatus, timeout time.Duration) api.Addon {
	t.Helper()
	cl := c.Client()
	var got api.Addon
	testutil.WaitFor(t, timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		as, err := cl.Addons(ctx, app, false)
		if err != nil {
			return err
		}
		if len(as) != 1 {
			return fmt.Errorf("app %s has %d addons", app, len(as))
		}
		got = as[0]
		if got.Status != status {
			ops, _ := cl.Operations(ctx, app, "")
			detail := ""
			if n := len(ops); n > 0 {
				o := ops[n-1]
				if i := o.CurrentStep(); i < len(o.Steps) {
					detail = fmt.Sprintf(" (operation %s at %q: %s)", o.ID, o.Steps[i].Name, o.Steps[i].Detail)
				}
				if o.Error != "" {
					detail += " error: " + o.Error
				}
			}
			return fmt.Errorf("addon %s is %s, want %s%s", got.ID, got.Status, status, detail)
		}
		return nil
	})
	return got
}

// RedisURL returns the app's REDIS_URL from the coordinator.
func RedisURL(t testing.TB, c *Coordinator, app string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	env, err := c.Client().Env(ctx, app)
	if err != nil {
		t.Fatalf("env --app %s: %v", app, err)
	}
	for _, v := range env.Vars {
		if v.Name == "REDIS_URL" {
			return v.Value
		}
	}
	t.Fatalf("env --app %s has no REDIS_URL", app)
	return ""
}
