package sysstats

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// v1Unlimited: cgroup v1 reports "no limit" as PAGE_COUNTER_MAX pages
// (9223372036854771712 with 4 KiB pages, a little less with 64 KiB pages).
// Anything at or above 4 EiB is taken as unlimited.
const v1Unlimited = uint64(1) << 62

// detectCgroupVersion returns 2 when root is a cgroup v2 (unified) mount,
// recognised by its cgroup.controllers file, and 1 when root holds v1
// controller directories (memory/, cpuacct/). A hybrid host (v1
// controllers plus an empty unified mount at root/unified) is v1.
func detectCgroupVersion(root string) (int, error) {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return 2, nil
	}
	for _, c := range []string{"memory", "cpuacct", "cpu,cpuacct"} {
		if fi, err := os.Stat(filepath.Join(root, c)); err == nil && fi.IsDir() {
			return 1, nil
		}
	}
	return 0, fmt.Errorf("no cgroup v1 or v2 hierarchy under %s", root)
}

// cgroupVersions caches detectCgroupVersion per root: a host's cgroup
// hierarchy does not change under a running agent, and the detection (up
// to four stats) ran for each file group of every member's collection.
var cgroupVersions sync.Map // root → version

// cgroupVersion is detectCgroupVersion(root), detected once per root.
func cgroupVersion(root string) (int, error) {
	if v, ok := cgroupVersions.Load(root); ok {
		return v.(int), nil
	}
	v, err := detectCgroupVersion(root)
	if err == nil {
		cgroupVersions.Store(root, v)
	}
	return v, err
}

// cgroupDir is where controller's files for cgroup path live. path is
// cleaned as an absolute path first, so ".." cannot leave root.
func cgroupDir(root string, version int, controller, path string) string {
	rel := filepath.Clean("/" + path)
	if version == 2 {
		return filepath.Join(root, rel)
	}
	return filepath.Join(root, controller, rel)
}

// v1CPUController names the v1 hierarchy holding cpuacct: its own mount,
// or the usual combined "cpu,cpuacct" one.
func v1CPUController(root string) string {
	for _, c := range []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"} {
		if fi, err := os.Stat(filepath.Join(root, c)); err == nil && fi.IsDir() {
			return c
		}
	}
	return "cpuacct"
}

// readCgroupCPU returns the cgroup's CPU time in nanoseconds: v1
// cpuacct.usage, v2 cpu.stat usage_usec × 1000.
func readCgroupCPU(root, path string) (uint64, error) {
	v, err := cgroupVersion(root)
	if err != nil {
		return 0, err
	}
	if v == 1 {
		return readUint(filepath.Join(cgroupDir(root, 1, v1CPUController(root), path), "cpuacct.usage"))
	}
	f := filepath.Join(cgroupDir(root, 2, "", path), "cpu.stat")
	kv, err := readKeyValues(f)
	if err != nil {
		return 0, err
	}
	usec, ok := kv["usage_usec"]
	if !ok {
		return 0, fmt.Errorf("%s: no usage_usec", f)
	}
	return usec * 1000, nil
}

// cgroupMemory is what the memory files say.
type cgroupMemory struct {
	usage        uint64 // v1 memory.usage_in_bytes, v2 memory.current
	inactiveFile uint64 // v1 total_inactive_file, v2 inactive_file
	peak         uint64 // v1 memory.max_usage_in_bytes, v2 memory.peak
	hasPeak      bool   // false on v2 kernels before 5.19
	limit        uint64
	unlimited    bool
}

// workingSet is usage minus inactive file cache, as docker stats and
// nerdctl compute it (and kubelet's container_memory_working_set_bytes).
func (m cgroupMemory) workingSet() uint64 {
	if m.inactiveFile < m.usage {
		return m.usage - m.inactiveFile
	}
	return m.usage
}

func readCgroupMemory(root, path string) (cgroupMemory, error) {
	var m cgroupMemory
	v, err := cgroupVersion(root)
	if err != nil {
		return m, err
	}
	dir := cgroupDir(root, v, "memory", path)
	stat, err := readKeyValues(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return m, err
	}
	if v == 1 {
		if m.usage, err = readUint(filepath.Join(dir, "memory.usage_in_bytes")); err != nil {
			return m, err
		}
		// total_* figures include child cgroups (use_hierarchy); a
		// container's cgroup usually has none, so both agree there.
		inactive, ok := stat["total_inactive_file"]
		if !ok {
			inactive = stat["inactive_file"]
		}
		m.inactiveFile = inactive
		if m.peak, err = readUint(filepath.Join(dir, "memory.max_usage_in_bytes")); err != nil {
			return m, err
		}
		m.hasPeak = true
		if m.limit, m.unlimited, err = readLimit(filepath.Join(dir, "memory.limit_in_bytes")); err != nil {
			return m, err
		}
		return m, nil
	}
	if m.usage, err = readUint(filepath.Join(dir, "memory.current")); err != nil {
		return m, err
	}
	m.inactiveFile = stat["inactive_file"]
	if m.peak, m.hasPeak, err = readOptionalUint(filepath.Join(dir, "memory.peak")); err != nil {
		return m, err
	}
	if m.limit, m.unlimited, err = readLimit(filepath.Join(dir, "memory.max")); err != nil {
		return m, err
	}
	return m, nil
}

// cgroupSwap is what the swap files say.
type cgroupSwap struct {
	accounted bool
	current   uint64
	peak      uint64 // v1: a lower bound, see readCgroupSwap
	hasPeak   bool
	limit     uint64
	unlimited bool
}

// readCgroupSwap reads a cgroup's swap.
//
// cgroup v1 only counts memory+swap (memsw): swap = memsw.usage − usage.
// v1 has no swap high-water mark, but memsw.max_usage − max_usage is a
// lower bound of it: when memory+swap peaked, swap was that peak minus the
// memory of that moment, which is at most the memory peak. The swap limit
// is memsw.limit − limit. Without swap accounting (swapaccount=0) the memsw
// files do not exist and accounted is false.
//
// cgroup v2: memory.swap.current, memory.swap.peak (kernels ≥ 6.5),
// memory.swap.max; no memory.swap.current means no swap accounting.
func readCgroupSwap(root, path string) (cgroupSwap, error) {
	var s cgroupSwap
	v, err := cgroupVersion(root)
	if err != nil {
		return s, err
	}
	dir := cgroupDir(root, v, "memory", path)
	// Missing swap files mean "not accounted" only in a cgroup that exists.
	if _, err := os.Stat(dir); err != nil {
		return s, err
	}
	if v == 2 {
		if s.current, s.accounted, err = readOptionalUint(filepath.Join(dir, "memory.swap.current")); err != nil || !s.accounted {
			return s, err
		}
		if s.peak, s.hasPeak, err = readOptionalUint(filepath.Join(dir, "memory.swap.peak")); err != nil {
			return s, err
		}
		s.limit, s.unlimited, err = readLimit(filepath.Join(dir, "memory.swap.max"))
		return s, err
	}
	memsw, ok, err := readOptionalUint(filepath.Join(dir, "memory.memsw.usage_in_bytes"))
	if err != nil || !ok {
		return s, err
	}
	s.accounted = true
	usage, err := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return s, err
	}
	s.current = sub0(memsw, usage)
	memswMax, err := readUint(filepath.Join(dir, "memory.memsw.max_usage_in_bytes"))
	if err != nil {
		return s, err
	}
	memMax, err := readUint(filepath.Join(dir, "memory.max_usage_in_bytes"))
	if err != nil {
		return s, err
	}
	s.peak, s.hasPeak = sub0(memswMax, memMax), true
	memswLimit, memswUnlimited, err := readLimit(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
	if err != nil {
		return s, err
	}
	memLimit, memUnlimited, err := readLimit(filepath.Join(dir, "memory.limit_in_bytes"))
	if err != nil {
		return s, err
	}
	switch {
	case memswUnlimited:
		s.unlimited = true
	case memUnlimited: // the kernel refuses memsw.limit < limit; kept for safety
		s.limit = memswLimit
	default:
		s.limit = sub0(memswLimit, memLimit)
	}
	return s, nil
}

// sub0 is a − b, or 0 when b ≥ a (two files read at different instants).
func sub0(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

func readUint(file string) (uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", file, err)
	}
	return v, nil
}

// readOptionalUint is readUint for files older kernels lack: a missing
// file gives ok false and no error.
func readOptionalUint(file string) (v uint64, ok bool, err error) {
	v, err = readUint(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	return v, err == nil, err
}

// readLimit reads a memory limit: "max" (v2) or a huge value (v1) is
// unlimited.
func readLimit(file string) (limit uint64, unlimited bool, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false, err
	}
	s := string(bytes.TrimSpace(b))
	if s == "max" {
		return 0, true, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", file, err)
	}
	if v >= v1Unlimited {
		return 0, true, nil
	}
	return v, false, nil
}

// readKeyValues parses "key value" lines (memory.stat, cpu.stat).
func readKeyValues(file string) (map[string]uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	kv := make(map[string]uint64)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", file, k, err)
		}
		kv[k] = n
	}
	return kv, sc.Err()
}
