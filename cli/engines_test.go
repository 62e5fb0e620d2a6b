package cli

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator"
	"github.com/cacheplane/cacheplane/internal/testutil"
)

// TestEnginesCommand runs `engines` against a real single-member
// coordinator (its catalog is api.DefaultEngines).
func TestEnginesCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := coordinator.DefaultConfig()
	cfg.ID = "c1"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Socket = filepath.Join(dir, "admin.sock")
	cfg.RaftAddr = testutil.Addr(t, "127.0.0.1")
	cfg.HTTPAddr = testutil.Addr(t, "127.0.0.1")
	cfg.Bootstrap = true
	c, err := coordinator.Start(cfg, testutil.Logger(t), testutil.Writer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	testutil.WaitFor(t, 10*time.Second, func() error {
		e, err := api.NewClient(cfg.Socket).Engines(context.Background())
		if err == nil && len(e) == 0 {
			err = errors.New("empty catalog")
		}
		return err
	})

	run := func(args ...string) (string, error) {
		root := NewRoot("cacheplane")
		var out strings.Builder
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--socket", cfg.Socket}, args...))
		err := root.ExecuteContext(context.Background())
		return out.String(), err
	}

	out, err := run("engines")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("engines:\n%s", out)
	for _, want := range []string{
		"redis-8.0.2 (major, rolling), valkey-8.0.1 (switch, rolling)",
		"valkey-8.1.1 (minor, rolling)",
		api.ImageRedis7 + ", sentinel " + api.ImageSentinel7,
		api.ImageValkey81,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("engines output lacks %q", want)
		}
	}

	out, err = run("engines", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var cat api.EngineCatalog
	if err := json.Unmarshal([]byte(out), &cat); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(cat.Engines) != 4 || len(cat.Paths) != 12 {
		t.Fatalf("--json: %d engines, %d paths; want 4 and 12", len(cat.Engines), len(cat.Paths))
	}

	out, err = run("engines", "--from", "redis-7.0.15")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("engines --from redis-7.0.15:\n%s", out)
	if !strings.Contains(out, "upgrade to valkey-8.0.1 first") || strings.Count(out, "redis-7.0.15") < 3 {
		t.Errorf("--from output:\n%s", out)
	}

	if _, err := run("engines", "--from", "redis-6.0.0"); !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "the catalog has redis-7.0.15") {
		t.Errorf("unknown --from: %v", err)
	}
}
