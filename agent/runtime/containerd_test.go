package runtime_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/agent/runtime"
	"github.com/cacheplane/cacheplane/agent/runtime/runtimetest"
	"github.com/cacheplane/cacheplane/packaging"
)

// imageDir holds the images built once for the whole test binary.
var imageDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "cacheplane-runtime-images-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		var want []packaging.Image
		for _, img := range packaging.DefaultImages() {
			if img.Ref == runtimetest.Image {
				want = append(want, img)
			}
		}
		start := time.Now()
		if _, err := packaging.WriteDir(dir, want, nil, nil); err != nil {
			fmt.Fprintln(os.Stderr, "build test images:", err)
			return 1
		}
		fmt.Fprintf(os.Stderr, "built %s in %s\n", runtimetest.Image, time.Since(start).Round(time.Millisecond))
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
	mu sync.Mutex
	ns map[*testing.T]*nsState
	n  int
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
	requireContainerd(t)
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
