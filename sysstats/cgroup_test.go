package sysstats

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Fixtures:
//   - testdata/cgroupv1: real files copied from this project's dev machine
//     (Debian bookworm, kernel 6.x, cgroup v1 with swap accounting) after
//     running a process that read 30 MiB of a file and buffered 20 MiB under
//     a 128 MiB limit and a 192 MiB memsw limit; "noswap" is the same cgroup
//     with the memsw files removed, as on a kernel booted with swapaccount=0.
//   - testdata/cgroupv2: written by hand from the kernel's cgroup-v2.rst:
//     "redis-new" has every file of a ≥ 6.5 kernel, "redis-old" lacks
//     memory.peak and memory.swap.peak (< 5.19) and has no limits,
//     "redis-noswap" has no memory.swap.* files (no swap accounting).

const (
	v1Root = "testdata/cgroupv1"
	v2Root = "testdata/cgroupv2"
)

func TestDetectCgroupVersion(t *testing.T) {
	tests := []struct {
		root    string
		want    int
		wantErr bool
	}{
		{v1Root, 1, false},
		{v2Root, 2, false},
		{"testdata/proc", 0, true},
		{"testdata/does-not-exist", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.root, func(t *testing.T) {
			got, err := detectCgroupVersion(tt.root)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("detectCgroupVersion = %d, %v; want %d, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestCgroupDirStaysUnderRoot(t *testing.T) {
	tests := []struct {
		version          int
		controller, path string
		want             string
	}{
		{1, "memory", "/cacheplane/abc", "/r/memory/cacheplane/abc"},
		{1, "memory", "cacheplane/abc", "/r/memory/cacheplane/abc"},
		{1, "memory", "/../../etc", "/r/memory/etc"},
		{2, "memory", "/ns/id/../../../x", "/r/x"},
		{2, "", "/", "/r"},
	}
	for _, tt := range tests {
		if got := cgroupDir("/r", tt.version, tt.controller, tt.path); got != tt.want {
			t.Errorf("cgroupDir(v%d, %q, %q) = %q, want %q", tt.version, tt.controller, tt.path, got, tt.want)
		}
	}
}

func TestReadCgroupFixtures(t *testing.T) {
	tests := []struct {
		name    string
		root    string
		path    string
		cpuNs   uint64
		memory  cgroupMemory
		swap    cgroupSwap
		working uint64
	}{
		{
			name: "v1 real", root: v1Root, path: "/cacheplane/redis-a",
			cpuNs:   332390762,
			memory:  cgroupMemory{usage: 32669696, inactiveFile: 31457280, peak: 54325248, hasPeak: true, limit: 134217728},
			working: 32669696 - 31457280,
			// memsw.usage 32669696 − usage 32669696; memsw.max 54325248 −
			// max 54325248; memsw.limit 201326592 − limit 134217728.
			swap: cgroupSwap{accounted: true, current: 0, peak: 0, hasPeak: true, limit: 67108864},
		},
		{
			name: "v1 without swap accounting", root: v1Root, path: "cacheplane/noswap",
			cpuNs:   332390762,
			memory:  cgroupMemory{usage: 32669696, inactiveFile: 31457280, peak: 54325248, hasPeak: true, limit: 134217728},
			working: 1212416,
			swap:    cgroupSwap{},
		},
		{
			name: "v2 new kernel", root: v2Root, path: "/cacheplane/redis-new",
			cpuNs:   4821337000,
			memory:  cgroupMemory{usage: 79691776, inactiveFile: 16777216, peak: 104857600, hasPeak: true, limit: 268435456},
			working: 79691776 - 16777216,
			swap:    cgroupSwap{accounted: true, current: 8388608, peak: 12582912, hasPeak: true, limit: 134217728},
		},
		{
			name: "v2 old kernel, unlimited", root: v2Root, path: "/cacheplane/redis-old",
			cpuNs:   120000000,
			memory:  cgroupMemory{usage: 18874368, inactiveFile: 4194304, unlimited: true},
			working: 18874368 - 4194304,
			swap:    cgroupSwap{accounted: true, unlimited: true},
		},
		{
			name: "v2 without swap accounting", root: v2Root, path: "/cacheplane/redis-noswap",
			cpuNs:   1000000,
			memory:  cgroupMemory{usage: 1310720, peak: 1310720, hasPeak: true, limit: 67108864},
			working: 1310720,
			swap:    cgroupSwap{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns, err := readCgroupCPU(tt.root, tt.path)
			if err != nil || ns != tt.cpuNs {
				t.Errorf("cpu = %d, %v; want %d", ns, err, tt.cpuNs)
			}
			m, err := readCgroupMemory(tt.root, tt.path)
			if err != nil || m != tt.memory {
				t.Errorf("memory = %+v, %v; want %+v", m, err, tt.memory)
			}
			if got := m.workingSet(); got != tt.working {
				t.Errorf("working set = %d, want %d", got, tt.working)
			}
			s, err := readCgroupSwap(tt.root, tt.path)
			if err != nil || s != tt.swap {
				t.Errorf("swap = %+v, %v; want %+v", s, err, tt.swap)
			}
		})
	}
}

func TestReadCgroupMissing(t *testing.T) {
	for _, root := range []string{v1Root, v2Root} {
		if _, err := readCgroupCPU(root, "/cacheplane/gone"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s cpu: err = %v, want not-exist", root, err)
		}
		if _, err := readCgroupMemory(root, "/cacheplane/gone"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s memory: err = %v, want not-exist", root, err)
		}
		// Not "swap not accounted": the cgroup itself is gone.
		if _, err := readCgroupSwap(root, "/cacheplane/gone"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s swap: err = %v, want not-exist", root, err)
		}
	}
}

func TestReadLimit(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		content   string
		limit     uint64
		unlimited bool
		wantErr   bool
	}{
		{"max\n", 0, true, false},
		{"9223372036854771712\n", 0, true, false}, // v1, 4 KiB pages
		{"9223372036854710272\n", 0, true, false}, // v1, 64 KiB pages
		{"1073741824\n", 1073741824, false, false},
		{"0\n", 0, false, false},
		{"lots\n", 0, false, true},
	}
	for i, tt := range tests {
		f := filepath.Join(dir, "limit")
		if err := os.WriteFile(f, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		l, u, err := readLimit(f)
		if l != tt.limit || u != tt.unlimited || (err != nil) != tt.wantErr {
			t.Errorf("%d %q: got %d, %v, %v", i, tt.content, l, u, err)
		}
	}
}

func TestMemberFixtures(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		root    string
		path    string
		version int
		memory  api.MemberMemory
		swap    api.MemberSwap
	}{
		{
			name: "v1", root: v1Root, path: "/cacheplane/redis-a", version: 1,
			memory: api.MemberMemory{CurrentBytes: 1212416, UsageBytes: 32669696, HighestBytes: 54325248, HighestSource: SourceKernel,
				LimitBytes: 134217728, FreeBytes: 134217728 - 1212416},
			swap: api.MemberSwap{Accounted: true, HighestSource: SourceKernel, LimitBytes: 67108864, FreeBytes: 67108864},
		},
		{
			name: "v1 no swap accounting", root: v1Root, path: "/cacheplane/noswap", version: 1,
			memory: api.MemberMemory{CurrentBytes: 1212416, UsageBytes: 32669696, HighestBytes: 54325248, HighestSource: SourceKernel,
				LimitBytes: 134217728, FreeBytes: 134217728 - 1212416},
			swap: api.MemberSwap{},
		},
		{
			name: "v2 new", root: v2Root, path: "/cacheplane/redis-new", version: 2,
			memory: api.MemberMemory{CurrentBytes: 62914560, UsageBytes: 79691776, HighestBytes: 104857600, HighestSource: SourceKernel,
				LimitBytes: 268435456, FreeBytes: 268435456 - 62914560},
			swap: api.MemberSwap{Accounted: true, CurrentBytes: 8388608, HighestBytes: 12582912, HighestSource: SourceKernel,
				LimitBytes: 134217728, FreeBytes: 134217728 - 8388608},
		},
		{
			name: "v2 old", root: v2Root, path: "/cacheplane/redis-old", version: 2,
			memory: api.MemberMemory{CurrentBytes: 14680064, UsageBytes: 18874368, HighestBytes: 14680064, HighestSource: SourceTracked,
				Unlimited: true},
			swap: api.MemberSwap{Accounted: true, HighestSource: SourceTracked, Unlimited: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMember(Config{CgroupRoot: tt.root}, nil)
			r := m.Collect(context.Background(), MemberTarget{CgroupPath: tt.path, PID: 42, StartedAt: t0})
			if len(r.Errors) != 0 {
				t.Fatalf("errors: %+v", r.Errors)
			}
			if r.CgroupVersion != tt.version {
				t.Errorf("version = %d, want %d", r.CgroupVersion, tt.version)
			}
			if r.Memory == nil || *r.Memory != tt.memory {
				t.Errorf("memory = %+v\nwant     %+v", r.Memory, tt.memory)
			}
			if r.Swap == nil || *r.Swap != tt.swap {
				t.Errorf("swap = %+v\nwant   %+v", r.Swap, tt.swap)
			}
			if r.CPU == nil || r.CPU.UsageNanos == 0 {
				t.Errorf("cpu = %+v", r.CPU)
			}
			if r.Disk != nil {
				t.Errorf("disk without a data dir: %+v", r.Disk)
			}
		})
	}
}

// TestMemberHighestTracked drives the "old kernel" path, where highest is
// only what we saw, through a changing fixture and a restart.
func TestMemberHighestTracked(t *testing.T) {
	root := t.TempDir()
	copyTree(t, v2Root, root)
	dir := filepath.Join(root, "cacheplane", "redis-old")
	set := func(current uint64) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "memory.current"), []byte(uitoa(current)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const inactive = 4194304 // in the fixture's memory.stat
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	first := MemberTarget{CgroupPath: "/cacheplane/redis-old", PID: 1, StartedAt: t0}
	restarted := MemberTarget{CgroupPath: "/cacheplane/redis-old", PID: 2, StartedAt: t0.Add(time.Hour)}
	steps := []struct {
		target           MemberTarget
		current          uint64
		wantCur, wantMax uint64
	}{
		{first, inactive + 100, 100, 100},
		{first, inactive + 500, 500, 500},
		{first, inactive + 200, 200, 500},
		{restarted, inactive + 50, 50, 50},
		{restarted, inactive + 60, 60, 60},
		{restarted, inactive + 10, 10, 60},
	}
	m := NewMember(Config{CgroupRoot: root}, nil)
	for i, s := range steps {
		set(s.current)
		r := m.Collect(context.Background(), s.target)
		if r.Memory == nil {
			t.Fatalf("step %d: %+v", i, r.Errors)
		}
		if r.Memory.CurrentBytes != s.wantCur || r.Memory.HighestBytes != s.wantMax || r.Memory.HighestSource != SourceTracked {
			t.Fatalf("step %d: memory = %+v, want current %d highest %d (tracked)", i, r.Memory, s.wantCur, s.wantMax)
		}
		if r.Memory.HighestBytes < r.Memory.CurrentBytes {
			t.Fatalf("step %d: highest < current", i)
		}
	}
}

// TestMemberCollectorsFailAlone: a broken figure never blanks the others.
func TestMemberCollectorsFailAlone(t *testing.T) {
	ctx := context.Background()
	t.Run("missing cgroup keeps the disk figure", func(t *testing.T) {
		data := t.TempDir()
		if err := os.WriteFile(filepath.Join(data, "dump.rdb"), make([]byte, 123), 0o644); err != nil {
			t.Fatal(err)
		}
		r := NewMember(Config{CgroupRoot: v2Root}, nil).Collect(ctx, MemberTarget{CgroupPath: "/cacheplane/gone", DataDir: data})
		if r.Disk == nil || r.Disk.TotalBytes != 123 {
			t.Fatalf("disk = %+v", r.Disk)
		}
		if r.CPU != nil || r.Memory != nil || r.Swap != nil {
			t.Fatalf("sections filled for a missing cgroup: %+v", r)
		}
		assertErrored(t, r.Errors, CollectorCPU, CollectorMemory, CollectorSwap)
	})
	t.Run("missing data dir keeps the cgroup figures", func(t *testing.T) {
		r := NewMember(Config{CgroupRoot: v1Root}, nil).Collect(ctx, MemberTarget{CgroupPath: "/cacheplane/redis-a", DataDir: "/nonexistent/data"})
		if r.CPU == nil || r.Memory == nil || r.Swap == nil || r.Disk != nil {
			t.Fatalf("report = %+v", r)
		}
		assertErrored(t, r.Errors, CollectorDisk)
	})
	t.Run("a panicking collector is an error entry", func(t *testing.T) {
		m := NewMember(Config{CgroupRoot: v1Root}, nil)
		m.Register(CollectorMemory, MemberCollectorFunc(func(context.Context, MemberTarget, *api.MemberReport) error { panic("boom") }))
		r := m.Collect(ctx, MemberTarget{CgroupPath: "/cacheplane/redis-a"})
		if r.CPU == nil || r.Swap == nil || r.Memory != nil {
			t.Fatalf("report = %+v", r)
		}
		assertErrored(t, r.Errors, CollectorMemory)
		if !strings.Contains(r.Errors[0].Error, "boom") {
			t.Fatalf("error = %q", r.Errors[0].Error)
		}
	})
}

func TestMemberCPUPercent(t *testing.T) {
	root := t.TempDir()
	copyTree(t, v2Root, root)
	stat := filepath.Join(root, "cacheplane", "redis-new", "cpu.stat")
	setUsage := func(usec uint64) {
		t.Helper()
		if err := os.WriteFile(stat, []byte("usage_usec "+uitoa(usec)+"\nuser_usec 0\nsystem_usec 0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	now := start.Add(10 * time.Second)
	m := NewMember(Config{CgroupRoot: root}, nil)
	m.Register(CollectorCPU, &memberCPUCollector{root: root, now: func() time.Time { return now }})
	target := MemberTarget{CgroupPath: "/cacheplane/redis-new", PID: 7, StartedAt: start}
	steps := []struct {
		advance time.Duration
		usec    uint64
		target  MemberTarget
		want    float64
	}{
		{0, 5_000_000, target, 50},                // 5 s of CPU in the 10 s since start
		{2 * time.Second, 7_000_000, target, 100}, // 2 s in 2 s
		{4 * time.Second, 8_000_000, target, 25},  // 1 s in 4 s
		// restart: new run, usage restarts from 0; measured since the new start
		{time.Second, 1_000_000, MemberTarget{CgroupPath: target.CgroupPath, PID: 8, StartedAt: start.Add(16 * time.Second)}, 100},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		setUsage(s.usec)
		r := m.Collect(context.Background(), s.target)
		if r.CPU == nil || r.CPU.UsageNanos != s.usec*1000 || r.CPU.Percent != s.want {
			t.Fatalf("step %d: cpu = %+v (%v), want %d ns, %v%%", i, r.CPU, r.Errors, s.usec*1000, s.want)
		}
	}
}

func assertErrored(t *testing.T, errs []api.CollectorError, names ...string) {
	t.Helper()
	got := make([]string, 0, len(errs))
	for _, e := range errs {
		if e.Error == "" {
			t.Errorf("collector %s: empty error", e.Collector)
		}
		got = append(got, e.Collector)
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("failed collectors = %v, want %v (%+v)", got, names, errs)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func uitoa(v uint64) string { return strconv.FormatUint(v, 10) }
