package backup

// Helpers of the tests with real processes: redis-server processes on
// loopback "hosts" (127.0.0.95-98), each in its own process group and
// killed when its test ends, and one containerd namespace for the whole
// test binary (scratch containers), purged at the end. Every wait polls
// with a deadline. Run them under flock /tmp/cacheplane-e2e.lock.

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/internal/testutil"
	"github.com/cacheplane/cacheplane/packaging"
	"github.com/cacheplane/cacheplane/redisctl"
)

const testPassword = "pw_backup-test-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"

// Loopback "hosts".
const (
	ipPrimary = "127.0.0.95"
	ipReplica = "127.0.0.96"
	ipCheck   = "127.0.0.97"
	ipScratch = "127.0.0.98"
)

var scratchPorts = PortRange{First: 30000, Last: 39999}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.purge()
	os.Exit(code)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// redisProc is a redis-server started by a test.
type redisProc struct {
	addr, dir string
	cmd       *exec.Cmd
	out       *syncBuffer
	done      chan struct{}
}

func (p *redisProc) ep() redisctl.Endpoint {
	return redisctl.Endpoint{Addr: p.addr, Password: testPassword}
}

// startRedis starts a redis-server on ip (a free port) serving dir (a new
// one when ""), with the test password when auth, as a replica of
// replicaOf when not empty, plus extra config lines; it waits until the
// server answers and has loaded its data.
func startRedis(t *testing.T, ip, dir, replicaOf string, auth bool, extra ...string) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is not installed (make deps installs it): %v", err)
	}
	if dir == "" {
		dir = t.TempDir()
	}
	port := testutil.FreePort(t, ip)
	p := &redisProc{addr: net.JoinHostPort(ip, strconv.Itoa(port)), dir: dir, out: &syncBuffer{}, done: make(chan struct{})}
	lines := []string{
		"bind " + ip, "port " + strconv.Itoa(port), "protected-mode no", "bind-source-addr " + ip,
		"daemonize no", `logfile ""`, "dir " + dir, "databases 5",
		"replica-announce-ip " + ip, "repl-diskless-sync yes", "repl-diskless-sync-delay 0",
	}
	pw := ""
	if auth {
		pw = testPassword
		// The fleet's user, as the agent logs in (redisctl.MemberOptions).
		lines = append(lines, "user "+redisctl.FleetUser+" on >"+testPassword+" ~* &* +@all",
			"masteruser "+redisctl.FleetUser, "masterauth "+testPassword)
	}
	if replicaOf != "" {
		h, pp, _ := net.SplitHostPort(replicaOf)
		lines = append(lines, "replicaof "+h+" "+pp)
	}
	lines = append(lines, extra...)
	conf := filepath.Join(t.TempDir(), "redis.conf")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, conf)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("redis %s did not exit after SIGKILL", p.addr)
		}
		if t.Failed() {
			t.Logf("redis %s output:\n%s", p.addr, strings.ReplaceAll(p.out.String(), testPassword, "<password>"))
		}
	})
	testutil.WaitFor(t, 60*time.Second, func() error {
		select {
		case <-p.done:
			t.Fatalf("redis %s exited:\n%s", p.addr, p.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return redisctl.WaitLoaded(ctx, redisctl.Endpoint{Addr: p.addr, Password: pw})
	})
	return p
}

// client is a test's client of db of p (generous timeouts for bulk work).
func client(t *testing.T, addr, password string, db int) *redis.Client {
	t.Helper()
	o := redisctl.MemberOptions(addr, password)
	o.DB, o.PoolSize, o.ReadTimeout, o.WriteTimeout = db, 2, 30*time.Second, 30*time.Second
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// waitKeyspace waits until the keyspace of ep is want.
func waitKeyspace(t *testing.T, ep redisctl.Endpoint, want redisctl.Keyspace) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, func() error {
		k, err := redisctl.ReadKeyspace(context.Background(), ep)
		if err != nil || fmt.Sprint(k) != fmt.Sprint(want) {
			return fmt.Errorf("keyspace of %s: %v, %v; want %v", ep.Addr, k, err, want)
		}
		return nil
	})
}

// sharedRuntime is one containerd namespace for the test binary.
type sharedRuntime struct {
	once   sync.Once
	rt     *runtime.Containerd
	err    error
	log    *syncBuffer
	logDir string
	done   chan struct{}
}

var shared = &sharedRuntime{}

// imagesDir is $CACHEPLANE_IMAGES, else <repo>/.dev/images, built there
// (as `make images` does) when missing.
func imagesDir() (string, error) {
	dir := os.Getenv("CACHEPLANE_IMAGES")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(wd, "..", "..", ".dev", "images")
	}
	if _, err := packaging.ReadIndex(dir); err == nil {
		return dir, nil
	}
	_, err := packaging.WriteDir(dir, packaging.DefaultImages(), packaging.OptionalImage, nil)
	return dir, err
}

// runtimeFor returns the shared containerd runtime, failing (never
// skipping) when containerd does not answer.
func runtimeFor(t *testing.T) *runtime.Containerd {
	t.Helper()
	shared.once.Do(func() {
		if c, err := net.DialTimeout("unix", runtime.DefaultSocket, 2*time.Second); err != nil {
			shared.err = fmt.Errorf("containerd is not running at %s (%v): start it with scripts/ensure-containerd.sh (make containerd)", runtime.DefaultSocket, err)
			return
		} else {
			c.Close()
		}
		images, err := imagesDir()
		if err != nil {
			shared.err = fmt.Errorf("images: %w (build them with `make images`)", err)
			return
		}
		logDir, err := os.MkdirTemp("", "cacheplane-backup-test-logs-")
		if err != nil {
			shared.err = err
			return
		}
		shared.log, shared.logDir = &syncBuffer{}, logDir
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		shared.rt, shared.err = runtime.NewContainerd(ctx, runtime.Config{
			Namespace: fmt.Sprintf("cptest-backup-%d", os.Getpid()),
			ImageDir:  images, LogDir: logDir,
			Logger: slog.New(slog.NewTextHandler(shared.log, nil)),
		})
		if shared.err == nil {
			// Exits must be drained (the driver's watcher waits on it).
			shared.done = make(chan struct{})
			go func() {
				defer close(shared.done)
				for range shared.rt.Exits() {
				}
			}()
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.rt
}

func (s *sharedRuntime) purge() {
	if s.rt == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.rt.Purge(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "purge the test namespace:", err)
	}
	_ = s.rt.Close()
	<-s.done
	_ = os.RemoveAll(s.logDir)
}

// scratch is a RuntimeScratch of the redis 7 image on ipScratch.
func scratch(t *testing.T, image, binary string) *RuntimeScratch {
	return &RuntimeScratch{
		Runtime: runtimeFor(t), Image: image, Binary: binary,
		Host: ipScratch, Ports: scratchPorts, MemoryLimitBytes: 1 << 30, LoadTimeout: 5 * time.Minute,
	}
}

func redis7Scratch(t *testing.T) *RuntimeScratch {
	return scratch(t, api.ImageRedis7, "/usr/bin/redis-server")
}

// noScratchLeft fails when a scratch container is left in the runtime.
func noScratchLeft(t *testing.T) {
	t.Helper()
	sts, err := runtimeFor(t).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Role == RoleScratch {
			t.Errorf("scratch container left: %+v", st)
		}
	}
}
