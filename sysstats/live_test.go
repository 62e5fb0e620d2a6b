package sysstats

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "CACHEPLANE_SYSSTATS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "hog" {
		hog()
		return
	}
	os.Exit(m.Run())
}

// hog is the child of TestLiveCgroupV1: it waits until it has been moved
// into the test cgroup, then touches 50 MiB, says "ready" and holds the
// memory until its stdin closes.
func hog() {
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		os.Exit(2)
	}
	buf := make([]byte, 50<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, in)
	runtime.KeepAlive(buf)
	os.Exit(0)
}

// TestLiveHost sanity-checks the figures of the machine running the tests.
func TestLiveHost(t *testing.T) {
	if _, err := os.Stat("/proc/meminfo"); err != nil {
		t.Skip("no /proc/meminfo: not Linux with procfs")
	}
	h := NewHost(DefaultConfig(), HostOptions{DiskPath: t.TempDir()})
	for i := range 2 {
		r := h.Collect(context.Background())
		t.Logf("collection %d: cpu %+v memory %+v swap %+v load %+v disk %+v", i, r.CPU, r.Memory, r.Swap, r.Load, r.Disk)
		if len(r.Errors) != 0 {
			t.Fatalf("errors: %+v", r.Errors)
		}
		if c := r.CPU; c.Percent < 0 || c.Percent > 100 || c.CPUs < 1 || c.CPUs < runtime.NumCPU() {
			t.Errorf("cpu out of range: %+v (NumCPU %d)", c, runtime.NumCPU())
		}
		m := r.Memory
		if m.TotalBytes < 64<<20 || m.FreeBytes > m.TotalBytes || m.AvailableBytes > m.TotalBytes ||
			m.UsedBytes > m.TotalBytes || m.AvailableBytes < m.FreeBytes {
			t.Errorf("memory out of range: %+v", m)
		}
		if s := r.Swap; s.FreeBytes > s.TotalBytes || s.UsedBytes+s.FreeBytes != s.TotalBytes {
			t.Errorf("swap out of range: %+v", s)
		}
		if l := r.Load; l.Load1 < 0 || l.Load5 < 0 || l.Load15 < 0 {
			t.Errorf("load out of range: %+v", l)
		}
		if d := r.Disk; d.TotalBytes == 0 || d.FreeBytes > d.TotalBytes || d.UsedBytes > d.TotalBytes {
			t.Errorf("disk out of range: %+v", d)
		}
	}
}

// TestLiveCgroupV1 creates a real v1 memory and cpuacct cgroup, runs a
// child that holds 50 MiB in it, and checks that Member reads what the
// kernel's files say.
func TestLiveCgroupV1(t *testing.T) {
	const root = "/sys/fs/cgroup"
	if v, err := detectCgroupVersion(root); err != nil || v != 1 {
		t.Skipf("host cgroups are not v1 (%d, %v)", v, err)
	}
	if os.Geteuid() != 0 {
		t.Skip("creating cgroups needs root")
	}
	name := fmt.Sprintf("cacheplane-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	memDir := filepath.Join(root, "memory", name)
	cpuDir := filepath.Join(root, v1CPUController(root), name)
	for _, d := range []string{memDir, cpuDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Skipf("cannot create cgroup %s: %v", d, err)
		}
		t.Cleanup(func() {
			// rmdir fails with EBUSY until the kernel has seen the last task go.
			waitFor(t, 10*time.Second, func() error {
				err := syscall.Rmdir(d)
				if err == nil || errors.Is(err, os.ErrNotExist) {
					return nil
				}
				return err
			})
		})
	}
	const limit = 256 << 20
	writeFile(t, filepath.Join(memDir, "memory.limit_in_bytes"), fmt.Sprint(limit))

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=hog")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	exited := false
	stop := func() {
		if exited {
			return
		}
		exited = true
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v", err)
		}
	}
	t.Cleanup(func() {
		if !exited {
			_ = cmd.Process.Kill()
			stop()
		}
	})
	pid := cmd.Process.Pid
	writeFile(t, filepath.Join(memDir, "cgroup.procs"), fmt.Sprint(pid))
	writeFile(t, filepath.Join(cpuDir, "cgroup.procs"), fmt.Sprint(pid))
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("child said %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child not ready after 30s")
	}
	waitFor(t, 10*time.Second, func() error {
		if u := kernelUint(t, memDir, "memory.usage_in_bytes"); u < 50<<20 {
			return fmt.Errorf("cgroup usage %d < 50 MiB", u)
		}
		return nil
	})

	m := NewMember(Config{}, nil)
	target := MemberTarget{CgroupPath: "/" + name, PID: pid, StartedAt: started}
	usage0, peak0, cpu0 := kernelUint(t, memDir, "memory.usage_in_bytes"), kernelUint(t, memDir, "memory.max_usage_in_bytes"), kernelUint(t, cpuDir, "cpuacct.usage")
	r := m.Collect(context.Background(), target)
	usage1, peak1, cpu1 := kernelUint(t, memDir, "memory.usage_in_bytes"), kernelUint(t, memDir, "memory.max_usage_in_bytes"), kernelUint(t, cpuDir, "cpuacct.usage")
	t.Logf("report: cpu %+v memory %+v swap %+v errors %v", r.CPU, r.Memory, r.Swap, r.Errors)
	t.Logf("kernel: usage %d..%d peak %d..%d cpuacct %d..%d", usage0, usage1, peak0, peak1, cpu0, cpu1)
	if len(r.Errors) != 0 || r.CgroupVersion != 1 {
		t.Fatalf("errors %+v, version %d", r.Errors, r.CgroupVersion)
	}
	mem := r.Memory
	if !between(mem.UsageBytes, usage0, usage1) {
		t.Errorf("usage %d not within the kernel's %d..%d", mem.UsageBytes, usage0, usage1)
	}
	if mem.CurrentBytes < 50<<20 || mem.CurrentBytes > mem.UsageBytes {
		t.Errorf("current %d: want ≥ 50 MiB (the child's anonymous memory) and ≤ usage %d", mem.CurrentBytes, mem.UsageBytes)
	}
	if mem.HighestBytes < mem.CurrentBytes || !between(mem.HighestBytes, peak0, peak1) || mem.HighestSource != SourceKernel {
		t.Errorf("highest %d (%s): want ≥ current %d and the kernel's max_usage %d..%d", mem.HighestBytes, mem.HighestSource, mem.CurrentBytes, peak0, peak1)
	}
	if mem.LimitBytes != limit || mem.Unlimited || mem.FreeBytes != limit-mem.CurrentBytes {
		t.Errorf("limit/free = %d/%d unlimited %v, want %d/%d", mem.LimitBytes, mem.FreeBytes, mem.Unlimited, limit, limit-mem.CurrentBytes)
	}
	if r.CPU.UsageNanos == 0 || !between(r.CPU.UsageNanos, cpu0, cpu1) || r.CPU.Percent <= 0 {
		t.Errorf("cpu %+v not within the kernel's %d..%d", r.CPU, cpu0, cpu1)
	}
	_, memswErr := os.Stat(filepath.Join(memDir, "memory.memsw.usage_in_bytes"))
	if r.Swap.Accounted != (memswErr == nil) || r.Swap.HighestBytes < r.Swap.CurrentBytes {
		t.Errorf("swap %+v (memsw files: %v)", r.Swap, memswErr)
	}
	if r.Swap.Accounted && !r.Swap.Unlimited {
		t.Errorf("swap limited without a memsw limit: %+v", r.Swap)
	}

	// The child exits: current falls, highest of the same run does not.
	stop()
	waitFor(t, 10*time.Second, func() error {
		r2 := m.Collect(context.Background(), target)
		if r2.Memory == nil {
			return fmt.Errorf("%+v", r2.Errors)
		}
		if r2.Memory.HighestBytes < mem.HighestBytes {
			return fmt.Errorf("highest went down within a run: %d < %d", r2.Memory.HighestBytes, mem.HighestBytes)
		}
		if r2.Memory.CurrentBytes >= 50<<20 {
			return fmt.Errorf("current still %d after the child exited", r2.Memory.CurrentBytes)
		}
		return nil
	})
}

func between(v, a, b uint64) bool { return min(a, b) <= v && v <= max(a, b) }

func kernelUint(t *testing.T, dir, file string) uint64 {
	t.Helper()
	v, err := readUint(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// waitFor polls cond until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		<-tick.C
	}
}
