package coordinator

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// TestAuditLog: an admin write through the socket is logged with the
// caller's uid and pid as the kernel reports them (this test process),
// its path and its answer; reads are not logged; a request body is never
// in the line; the file is 0600.
func TestAuditLog(t *testing.T) {
	_, cfg := startTestCoordinator(t, "127.0.0.61")
	ctx := context.Background()
	admin := api.NewClient(cfg.Socket)
	if _, err := admin.Plans(ctx); err != nil {
		t.Fatal(err)
	}
	const marker = "audit-body-marker"
	_, err := admin.AddonCreate(ctx, api.AddonCreateRequest{App: marker, Type: "redis", Plan: "no-such-plan"})
	if err == nil {
		t.Fatal("addon with an unknown plan accepted")
	}

	path := filepath.Join(cfg.DataDir, "audit.log")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), marker) {
			t.Errorf("audit line carries the request body: %s", sc.Text())
		}
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 1 {
		t.Fatalf("%d audit lines, want 1 (the write; reads are not logged): %v", len(lines), lines)
	}
	l := lines[0]
	if l["method"] != "POST" || l["path"] != "/v1/addons" || l["status"] != float64(400) {
		t.Errorf("audit line %v; want POST /v1/addons answered 400", l)
	}
	if l["uid"] != float64(os.Getuid()) || l["pid"] != float64(os.Getpid()) {
		t.Errorf("audit line %v; want uid %d pid %d (SO_PEERCRED of this process)", l, os.Getuid(), os.Getpid())
	}
}
