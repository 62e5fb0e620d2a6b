package coordinator

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/dashboard"
)

// Free memory is what the plan still allows, not the container's limit:
// a fresh 256 MB plan using 1 MB has 255 MB free (issue 16: addons-stats
// showed ~576 MB, the container limit minus used).
func TestPlanFreeBytes(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		plan int
		used uint64
		want uint64
	}{
		{256, 1 * mb, 255 * mb},
		{256, 0, 256 * mb},
		{256, 256 * mb, 0},
		{256, 300 * mb, 0}, // over the plan (fork, buffers): none left, never negative
		{1024, 512 * mb, 512 * mb},
		{0, 10, 0},
	} {
		if got := planFreeBytes(tc.plan, tc.used); got != tc.want {
			t.Errorf("planFreeBytes(%d MB, %d) = %d, want %d", tc.plan, tc.used, got, tc.want)
		}
	}
	f := &api.MemberFigures{MemoryBytes: 1 * mb, MemoryFreeBytes: 576 * mb, MemoryLimitBytes: 577 * mb}
	plan := api.Plan{Name: "redis-starter-256", MemoryMB: 256}
	if got := withPlanFree(f, api.RoleRedis, plan); got.MemoryFreeBytes != 255*mb || f.MemoryFreeBytes != 576*mb {
		t.Errorf("redis member: free %d (input changed to %d)", got.MemoryFreeBytes, f.MemoryFreeBytes)
	}
	if got := withPlanFree(f, api.RoleSentinel, plan); got.MemoryFreeBytes != 576*mb {
		t.Errorf("a sentinel keeps its container's figure: %d", got.MemoryFreeBytes)
	}
}

// The /metrics rows: per redis member, used and plan minus used.
func TestMemoryFiguresPerPlan(t *testing.T) {
	const mb = 1 << 20
	h := newStatsHistory()
	at := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	h.record(api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{
		{MemberID: "r1", Stats: &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: 6 * mb, FreeBytes: 570 * mb, LimitBytes: 576 * mb}}},
		{MemberID: "s1", Stats: &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: 2 * mb}}},
	}}, at)
	rows := memoryFigures([]addonPlan{{
		addon: api.Addon{ID: "app-1001", App: "app", Members: []api.Member{{ID: "r1", Role: api.RoleRedis}, {ID: "s1", Role: api.RoleSentinel}, {ID: "r2", Role: api.RoleRedis}}},
		plan:  api.Plan{MemoryMB: 256},
	}}, h)
	want := memoryRow{addon: "app-1001", app: "app", member: "r1", used: 6 * mb, free: 250 * mb}
	if len(rows) != 1 || rows[0] != want {
		t.Fatalf("rows = %+v, want [%+v]", rows, want)
	}
}

// The dashboard's rings: one point per bucket, bounded, windows cut by time.
func TestFigRing(t *testing.T) {
	r := figRing{res: 5 * time.Second, max: 4}
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	r.add(dashboard.Point{At: base, CPU: 1, Memory: 10})
	r.add(dashboard.Point{At: base.Add(2 * time.Second), CPU: 2, Memory: 5, Disk: 7})
	if len(r.pts) != 1 || r.pts[0].CPU != 2 || r.pts[0].Memory != 10 || r.pts[0].Disk != 7 {
		t.Fatalf("folded bucket = %+v", r.pts)
	}
	for i := 1; i <= 20; i++ {
		r.add(dashboard.Point{At: base.Add(time.Duration(i) * 5 * time.Second), Memory: uint64(i)})
		if len(r.pts) >= 2*r.max {
			t.Fatalf("ring grew to %d points", len(r.pts))
		}
	}
	all := r.since(time.Time{})
	if len(all) != 4 || all[3].Memory != 20 || all[0].Memory != 17 {
		t.Fatalf("since(0) = %+v", all)
	}
	if got := r.since(base.Add(95 * time.Second)); len(got) != 2 {
		t.Fatalf("since(95s) = %+v", got)
	}
	// A late sample never reorders the ring.
	r.add(dashboard.Point{At: base, Memory: 99})
	if pts := r.since(time.Time{}); pts[len(pts)-1].Memory != 99 || !pts[len(pts)-1].At.Equal(base.Add(100*time.Second)) {
		t.Fatalf("late sample: %+v", pts)
	}
}

func TestStatsHistoryDashboardSeries(t *testing.T) {
	h := newStatsHistory()
	base := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 30; i++ {
		h.record(api.HeartbeatRequest{HostID: "h1",
			Stats:   &api.HostReport{CPU: &api.HostCPU{Percent: 50}, Memory: &api.HostMemory{UsedBytes: uint64(1000 + i)}},
			Members: []api.MemberStatus{{MemberID: "m1", Stats: &api.MemberReport{Memory: &api.MemberMemory{CurrentBytes: uint64(100 + i)}, Disk: &api.DataSize{TotalBytes: 42}}}},
		}, base.Add(time.Duration(i)*time.Second))
	}
	fine := h.memberPoints("m1", base, true)
	if len(fine) != 6 || fine[5].Memory != 129 || fine[0].Disk != 42 {
		t.Fatalf("fine = %+v", fine)
	}
	if coarse := h.memberPoints("m1", base, false); len(coarse) != 1 || coarse[0].Memory != 129 {
		t.Fatalf("coarse = %+v", coarse)
	}
	hp := h.hostPoints("h1", base, true)
	if len(hp["h1"]) != 6 || hp["h1"][0].CPU != 50 || hp["h1"][5].Memory != 1029 {
		t.Fatalf("host = %+v", hp)
	}
	if len(h.hostPoints("h2", base, true)) != 0 {
		t.Fatal("unknown host has points")
	}
}

// Writes and URL reveals through the dashboard are audited with the
// session's id; plain reads are not; no line carries the password.
func TestDashboardAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	audit, err := openAuditLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer audit.Close()
	const pw = "pw-never-in-the-audit-log"
	apiMux := http.NewServeMux()
	apiMux.HandleFunc("POST /v1/settings", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusAccepted) })
	apiMux.HandleFunc("GET /v1/env", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"url":"redis://default:` + pw + `@x"}`))
	})
	apiMux.HandleFunc("GET /v1/addons", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`[]`)) })
	auth := dashboard.NewAuth(nil)
	srv := httptest.NewServer(dashboard.Handler(dashboard.Config{Auth: auth, API: audit.wrapDashboard(apiMux)}))
	defer srv.Close()
	tok, _, err := auth.IssueToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cookie, sess, err := auth.Login(tok)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ method, path string }{{"POST", "/api/v1/settings"}, {"GET", "/api/v1/env?app=shop"}, {"GET", "/api/v1/addons"}} {
		req, _ := http.NewRequest(r.method, srv.URL+r.path, strings.NewReader(`{}`))
		req.AddCookie(&http.Cookie{Name: dashboard.CookieName, Value: cookie})
		req.Header.Set(dashboard.CSRFHeader, sess.CSRF)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %s", r.method, r.path, resp.Status)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit lines:\n%s\nwant the write and the reveal", b)
	}
	who := `"who":"dashboard session ` + sess.ID + `"`
	for i, want := range []string{`"msg":"admin write","method":"POST","path":"/v1/settings","status":202`, `"msg":"url revealed","method":"GET","path":"/v1/env","status":200`} {
		if !strings.Contains(lines[i], want) || !strings.Contains(lines[i], who) {
			t.Errorf("audit line %d = %s; want %s and %s", i, lines[i], want, who)
		}
	}
	if strings.Contains(string(b), pw) {
		t.Error("the audit log holds the password")
	}
}
