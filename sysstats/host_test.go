package sysstats

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/cacheplane/cacheplane/api"
)

// testdata/proc holds /proc/{stat,meminfo,loadavg} copied from the dev
// machine (2 vCPU, 24 GiB, no swap); testdata/proc-swap is the same with
// SwapTotal and SwapFree edited to give swap something to report.

func TestHostFixtures(t *testing.T) {
	const kB = 1024
	h := NewHost(Config{ProcRoot: abs(t, "testdata/proc"), SysRoot: "/nonexistent"}, HostOptions{DiskPath: t.TempDir()})
	r := h.Collect(context.Background())
	if len(r.Errors) != 0 {
		t.Fatalf("errors: %+v", r.Errors)
	}
	// cpu  17142 0 9324 64243 1768 0 288 0 0 0: since boot, busy is
	// everything but idle (64243) and iowait (1768).
	wantCPU := 100 * float64(17142+9324+288) / float64(17142+9324+64243+1768+288)
	if r.CPU == nil || math.Abs(r.CPU.Percent-wantCPU) > 1e-9 || r.CPU.CPUs != 2 {
		t.Errorf("cpu = %+v, want %v%% over 2 CPUs", r.CPU, wantCPU)
	}
	wantMem := api.HostMemory{
		TotalBytes:     24683620 * kB,
		UsedBytes:      (24683620 - 23708912 - 12428 - (745216 + 121384)) * kB, // total − free − buffers − (cached + sreclaimable)
		FreeBytes:      23708912 * kB,
		AvailableBytes: 24311688 * kB,
	}
	if r.Memory == nil || *r.Memory != wantMem {
		t.Errorf("memory = %+v, want %+v", r.Memory, wantMem)
	}
	if r.Swap == nil || *r.Swap != (api.HostSwap{}) {
		t.Errorf("swap = %+v, want zeros", r.Swap)
	}
	if r.Load == nil || *r.Load != (api.HostLoad{Load1: 1.15, Load5: 0.92, Load15: 0.41}) {
		t.Errorf("load = %+v", r.Load)
	}
	if r.Disk == nil || r.Disk.TotalBytes == 0 {
		t.Errorf("disk = %+v", r.Disk)
	}

	// Same files again: no CPU time passed, so 0 %.
	r = h.Collect(context.Background())
	if r.CPU == nil || r.CPU.Percent != 0 {
		t.Errorf("second cpu = %+v, want 0%%", r.CPU)
	}

	t.Run("swap", func(t *testing.T) {
		r := NewHost(Config{ProcRoot: abs(t, "testdata/proc-swap")}, HostOptions{}).Collect(context.Background())
		want := api.HostSwap{TotalBytes: 2097148 * kB, FreeBytes: 1572860 * kB, UsedBytes: (2097148 - 1572860) * kB}
		if r.Swap == nil || *r.Swap != want {
			t.Fatalf("swap = %+v, want %+v", r.Swap, want)
		}
		if r.Disk != nil {
			t.Fatalf("disk without a path: %+v", r.Disk)
		}
	})
}

func TestHostCollectorsFailAlone(t *testing.T) {
	// A /proc with only stat and loadavg: memory and swap fail, the rest
	// is still reported.
	proc := t.TempDir()
	for _, f := range []string{"stat", "loadavg"} {
		b, err := os.ReadFile(filepath.Join("testdata/proc", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := NewHost(Config{ProcRoot: proc}, HostOptions{DiskPath: "/nonexistent/path"})
	h.Register("broken", HostCollectorFunc(func(context.Context, *api.HostReport) error { return errors.New("broken on purpose") }))
	r := h.Collect(context.Background())
	assertErrored(t, r.Errors, CollectorMemory, CollectorSwap, CollectorDisk, "broken")
	if r.CPU == nil || r.Load == nil || r.Memory != nil || r.Swap != nil || r.Disk != nil {
		t.Fatalf("report = %+v", r)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back api.HostReport
	if err := json.Unmarshal(b, &back); err != nil || back.CPU == nil || len(back.Errors) != 4 {
		t.Fatalf("json round trip: %s -> %+v, %v", b, back, err)
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("empty config: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
	if err := (Config{ProcRoot: "proc", CgroupRoot: "cg"}).Validate(); err == nil {
		t.Error("relative roots accepted")
	}
	if got := (Config{SysRoot: "/s"}).withDefaults(); got != (Config{ProcRoot: "/proc", SysRoot: "/s", CgroupRoot: "/sys/fs/cgroup"}) {
		t.Errorf("withDefaults = %+v", got)
	}
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
