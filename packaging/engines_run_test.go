package packaging_test

// These tests run every engine version's images for real, under containerd
// (it must be running, as `make deps` leaves it): each server and sentinel
// reports its catalog version, and replication between every ordered pair
// of versions behaves as engines.CanReplicate says — valkey 8.0.1 syncs
// from redis 7.0.15, redis 7.0.15 cannot sync from any 8.x.

import (
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
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/agent/runtime/runtimetest"
	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/engines"
	"github.com/cacheplane/cacheplane/packaging"
)

var (
	imagesOnce sync.Once
	imagesDir  string
	imagesErr  error
)

// engineImages returns a directory holding every image of the catalog:
// $CACHEPLANE_IMAGES or <repo>/.dev/images when their index lists them all
// (make deps builds them), else a build into a temporary directory with
// the Debian cache $CACHEPLANE_DEBIAN_CACHE or <repo>/.dev/debian.
func engineImages(t *testing.T) string {
	t.Helper()
	imagesOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			imagesErr = err
			return
		}
		repo := filepath.Dir(wd)
		candidates := []string{os.Getenv("CACHEPLANE_IMAGES"), filepath.Join(repo, ".dev", "images")}
		for _, d := range candidates {
			if d == "" {
				continue
			}
			ix, err := packaging.ReadIndex(d)
			if err != nil {
				continue
			}
			all := true
			for _, img := range packaging.DefaultImages() {
				if _, ok := ix.Lookup(img.Ref); !ok {
					all = false
				}
			}
			if all {
				imagesDir = d
				return
			}
		}
		cache := os.Getenv("CACHEPLANE_DEBIAN_CACHE")
		if cache == "" {
			cache = filepath.Join(repo, ".dev", "debian")
		}
		imagesDir, imagesErr = os.MkdirTemp("", "cacheplane-engine-images-")
		if imagesErr != nil {
			return
		}
		_, imagesErr = packaging.WriteImages(context.Background(), imagesDir, packaging.DefaultImages(), packaging.Options{DebianDir: cache})
	})
	if imagesErr != nil {
		t.Fatalf("engine images: %v", imagesErr)
	}
	return imagesDir
}

// newRuntime connects to the machine's containerd in a namespace of the
// test's own, purged at the end.
func newRuntime(t *testing.T) *runtime.Containerd {
	t.Helper()
	c, err := net.DialTimeout("unix", runtime.DefaultSocket, 2*time.Second)
	if err != nil {
		t.Fatalf("containerd is not running at %s (%v): `make deps` starts it", runtime.DefaultSocket, err)
	}
	c.Close()
	name := strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	cfg := runtime.Config{
		Namespace: fmt.Sprintf("cptest-%d-%s", os.Getpid(), name),
		ImageDir:  engineImages(t),
		LogDir:    filepath.Join(t.TempDir(), "logs"),
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := runtime.NewContainerd(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := d.Purge(ctx); err != nil {
			t.Errorf("purge namespace %s: %v", cfg.Namespace, err)
		}
		d.Close()
	})
	return d
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
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

// serverArgv is how the agent starts a server of ev (agent/member.go).
func serverArgv(ev api.EngineVersion, args ...string) []string {
	bin := "/usr/bin/redis-server"
	if ev.Engine == api.EngineValkey {
		bin = "/usr/bin/valkey-server"
	}
	return append([]string{bin}, args...)
}

// sentinelArgv is how the agent starts a sentinel of ev.
func sentinelArgv(ev api.EngineVersion, conf string) []string {
	if ev.Engine == api.EngineValkey {
		return []string{"/usr/bin/valkey-server", conf, "--sentinel"}
	}
	return []string{"/usr/bin/redis-sentinel", conf}
}

// info reads one INFO section of the server on port as a map.
func info(ctx context.Context, port int, section string) (map[string]string, error) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), MaxRetries: -1, DialTimeout: time.Second, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			m[k] = v
		}
	}
	return m, nil
}

// versionOf is the engine version a server reports: valkey_version for
// Valkey (whose redis_version stays 7.2.4 for clients), else redis_version.
func versionOf(m map[string]string) string {
	if v := m["valkey_version"]; v != "" {
		return v
	}
	return m["redis_version"]
}

// modeOf is the server mode: Valkey 8 renamed redis_mode to server_mode.
func modeOf(m map[string]string) string {
	if v := m["server_mode"]; v != "" {
		return v
	}
	return m["redis_mode"]
}

type server struct {
	ev   api.EngineVersion
	id   string
	port int
}

// startServer starts a server of ev (no persistence) and waits until it
// answers.
func startServer(t *testing.T, d *runtime.Containerd, ev api.EngineVersion, id string, extra ...string) server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := server{ev: ev, id: id, port: freePort(t)}
	dir := t.TempDir()
	args := append([]string{"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--dir", dir, "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--repl-diskless-load", "disabled", "--repl-diskless-sync-delay", "0"}, extra...)
	start := time.Now()
	if err := d.Start(ctx, runtime.Spec{ID: id, Role: string(api.RoleRedis), Image: ev.Images[api.RoleRedis], DataDir: dir, SpecHash: "1",
		Args: serverArgv(ev, args...)}); err != nil {
		t.Fatalf("start %s (%s): %v", id, ev.Images[api.RoleRedis], err)
	}
	runtimetest.WaitFor(t, 30*time.Second, func() error {
		_, err := info(ctx, s.port, "server")
		if err != nil {
			lines, _ := d.LastLogLines(id, 5)
			return fmt.Errorf("%s: %w; log %q", id, err, lines)
		}
		return nil
	})
	t.Logf("%s (%s) answers %s after start", id, ev.Images[api.RoleRedis], time.Since(start).Round(time.Millisecond))
	return s
}

func key(ev api.EngineVersion) string { return ev.Key() }

func TestEngineImagesRunTheirVersion(t *testing.T) {
	d := newRuntime(t)
	for _, ev := range api.DefaultEngines() {
		t.Run(key(ev), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srv := startServer(t, d, ev, "srv-"+key(ev))
			m, err := info(ctx, srv.port, "server")
			if err != nil {
				t.Fatal(err)
			}
			if got := versionOf(m); got != ev.Version {
				t.Fatalf("server of %s reports version %q", ev.Key(), got)
			}
			if modeOf(m) != "standalone" {
				t.Errorf("server mode %q", modeOf(m))
			}

			// The sentinel role: the image of the catalog, the argv of the agent.
			port, dir := freePort(t), t.TempDir()
			conf := filepath.Join(dir, "sentinel.conf")
			if err := os.WriteFile(conf, []byte(fmt.Sprintf("bind 127.0.0.1\nport %d\nsentinel monitor m1 127.0.0.1 %d 1\n", port, srv.port)), 0o644); err != nil {
				t.Fatal(err)
			}
			id := "sen-" + key(ev)
			if err := d.Start(ctx, runtime.Spec{ID: id, Role: string(api.RoleSentinel), Image: ev.Images[api.RoleSentinel], DataDir: dir, SpecHash: "1",
				Args: sentinelArgv(ev, conf)}); err != nil {
				t.Fatal(err)
			}
			runtimetest.WaitFor(t, 30*time.Second, func() error {
				m, err := info(ctx, port, "server")
				if err != nil {
					lines, _ := d.LastLogLines(id, 5)
					return fmt.Errorf("%w; log %q", err, lines)
				}
				if modeOf(m) != "sentinel" || versionOf(m) != ev.Version {
					return fmt.Errorf("sentinel of %s: mode %q, version %q", ev.Key(), modeOf(m), versionOf(m))
				}
				s, err := info(ctx, port, "sentinel")
				if err != nil {
					return err
				}
				if !strings.Contains(s["master0"], "status=ok") {
					return fmt.Errorf("sentinel does not see its master: %q", s["master0"])
				}
				return nil
			})
		})
	}
}

// TestReplicationBetweenVersions makes a replica of every version follow a
// primary of every other version and checks the outcome against
// engines.CanReplicate: a full sync completes (and the data arrives) iff
// the replica reads the primary's RDB format.
func TestReplicationBetweenVersions(t *testing.T) {
	d := newRuntime(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cat := api.DefaultEngines()
	primaries := map[string]server{}
	for _, ev := range cat {
		p := startServer(t, d, ev, "pri-"+key(ev))
		c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(p.port), Protocol: 2, DisableIdentity: true})
		// One key of each type, so the RDB holds each encoding.
		pipe := c.Pipeline()
		pipe.Set(ctx, "string", "from "+ev.Key(), 0)
		pipe.HSet(ctx, "hash", "f1", "v1", "f2", "v2")
		pipe.RPush(ctx, "list", "a", "b", "c")
		pipe.SAdd(ctx, "set", "x", "y")
		pipe.ZAdd(ctx, "zset", redis.Z{Score: 1, Member: "m1"}, redis.Z{Score: 2, Member: "m2"})
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: "stream", Values: map[string]any{"k": "v"}})
		for i := range 1000 {
			pipe.Set(ctx, fmt.Sprintf("k:%d", i), strings.Repeat("v", 100), 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatalf("fill %s: %v", ev.Key(), err)
		}
		c.Close()
		primaries[ev.Key()] = p
	}
	for _, pe := range cat {
		for _, re := range cat {
			if pe.Key() == re.Key() {
				continue
			}
			want := engines.CanReplicate(pe, re)
			t.Run(fmt.Sprintf("replica_%s_of_%s", re.Key(), pe.Key()), func(t *testing.T) {
				p := primaries[pe.Key()]
				id := fmt.Sprintf("rep-%s-of-%s", key(re), key(pe))
				r := startServer(t, d, re, id, "--replicaof", "127.0.0.1", strconv.Itoa(p.port))
				defer func() {
					if err := d.Destroy(ctx, id); err != nil {
						t.Errorf("destroy %s: %v", id, err)
					}
				}()
				start := time.Now()
				var synced, refused bool
				var last string
				for time.Since(start) < 30*time.Second && !synced && !refused {
					m, err := info(ctx, r.port, "replication")
					if err == nil && m["master_link_status"] == "up" {
						k, err := info(ctx, r.port, "keyspace")
						if err == nil && strings.HasPrefix(k["db0"], "keys=1006,") {
							synced = true
							break
						}
					}
					lines, _ := d.LastLogLines(id, 50)
					for _, l := range lines {
						if strings.Contains(l, "Can't handle RDB format version") || strings.Contains(l, "Failed trying to load the MASTER synchronization") {
							refused, last = true, l
						}
					}
					if st, err := d.Inspect(ctx, id); err == nil && st.State != runtime.StateRunning {
						refused, last = true, fmt.Sprintf("replica exited (%d): %q", st.ExitCode, lines)
					}
					time.Sleep(50 * time.Millisecond) // poll interval
				}
				switch {
				case synced && want:
					t.Logf("synced in %s", time.Since(start).Round(time.Millisecond))
				case refused && !want:
					t.Logf("refused as expected: %s", last)
				case synced:
					t.Errorf("synced, but engines.CanReplicate(%s, %s) says it cannot", pe.Key(), re.Key())
				case refused:
					t.Errorf("full sync failed, but engines.CanReplicate(%s, %s) says it works: %s", pe.Key(), re.Key(), last)
				default:
					lines, _ := d.LastLogLines(id, 20)
					t.Errorf("neither synced nor refused after 30 s (want sync: %v); log %q", want, lines)
				}
			})
		}
	}
}

// TestVersionThroughOwnLoader runs each Debian-built image's binary out of
// the unpacked tree with the image's own loader and libraries — what
// WriteImages checks at build — and also shows trixie's binary cannot run
// on the host's older glibc, which is why the image carries its own.
func TestVersionThroughOwnLoader(t *testing.T) {
	engineImages(t) // builds and unpacks them when missing
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	cache := os.Getenv("CACHEPLANE_DEBIAN_CACHE")
	if cache == "" {
		cache = filepath.Join(filepath.Dir(wd), ".dev", "debian")
	}
	for _, img := range packaging.DefaultImages() {
		if img.Debian == nil {
			continue
		}
		img.Root = filepath.Join(cache, "roots", img.Name)
		if _, err := os.Stat(img.Root); err != nil {
			t.Fatalf("%s is not unpacked in %s (make images): %v", img.Ref, cache, err)
		}
		if err := packaging.CheckVersion(context.Background(), img); err != nil {
			t.Errorf("%s: %v", img.Ref, err)
		}
		if !img.Debian.OwnLibraries {
			continue
		}
		out, err := exec.Command(filepath.Join(img.Root, img.Binaries[0]), "--version").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "GLIBC_") {
			t.Errorf("%s on the host's libraries: %v %s (expected a glibc version error)", img.Ref, err, out)
		}
	}
}
