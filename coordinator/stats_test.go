package coordinator

import (
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
	"github.com/cacheplane/cacheplane/coordinator/operation"
)

func TestStatsHistoryFoldsMinutesAndBounds(t *testing.T) {
	h := newStatsHistory()
	beat := func(at time.Time, mem uint64, cpu float64) {
		h.record(api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{{MemberID: "m1", Stats: &api.MemberReport{
			CPU: &api.MemberCPU{Percent: cpu}, Memory: &api.MemberMemory{CurrentBytes: mem, HighestBytes: mem * 2},
		}}}}, at)
	}
	base := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	beat(base, 100, 1)
	beat(base.Add(20*time.Second), 300, 2) // same minute: highest memory kept, last CPU
	beat(base.Add(40*time.Second), 200, 3)
	beat(base.Add(time.Minute), 50, 4)
	latest, pts := h.member("m1", base)
	if latest == nil || latest.MemoryBytes != 50 || latest.MemoryHighestBytes != 100 {
		t.Fatalf("latest = %+v", latest)
	}
	if len(pts) != 2 || pts[0].MemoryBytes != 300 || pts[0].CPUPercent != 3 || pts[1].MemoryBytes != 50 {
		t.Fatalf("points = %+v", pts)
	}
	for i := 0; i < historyPoints+10; i++ {
		beat(base.Add(time.Duration(i+2)*time.Minute), uint64(i), 0)
	}
	if _, pts := h.member("m1", time.Time{}); len(pts) != historyPoints {
		t.Fatalf("history holds %d points; want at most %d", len(pts), historyPoints)
	}
	h.drop("m1")
	if l, _ := h.member("m1", time.Time{}); l != nil {
		t.Fatal("forgotten member still has figures")
	}
	// A heartbeat without figures leaves the history alone.
	h.record(api.HeartbeatRequest{HostID: "h1", Members: []api.MemberStatus{{MemberID: "m2"}}}, base)
	if l, _ := h.member("m2", time.Time{}); l != nil {
		t.Fatal("figures invented for a member that sent none")
	}
}

func TestAllocateVIP(t *testing.T) {
	for _, tt := range []struct {
		pool string
		used []string
		want string
		err  bool
	}{
		{"127.0.1.0/24", nil, "127.0.1.1", false},
		{"127.0.1.0/24", []string{"127.0.1.1:20000", "127.0.0.11:20001", "bad"}, "127.0.1.2", false},
		{"10.0.9.8/30", []string{"10.0.9.9:1", "10.0.9.10:1", "10.0.9.11:1"}, "", true},
		{"nope", nil, "", true},
	} {
		got, err := operation.AllocateVIP(tt.pool, tt.used)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("operation.AllocateVIP(%s, %v) = %q, %v; want %q (error %v)", tt.pool, tt.used, got, err, tt.want, tt.err)
		}
	}
}
