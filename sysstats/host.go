package sysstats

import (
	"context"
	"errors"
	"fmt"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/cacheplane/cacheplane/api"
)

// hostCPUCollector keeps the previous sample so that each collection
// reports the CPU % since the one before.
type hostCPUCollector struct {
	prev CPUTimes // zero before the first collection: "since boot"
}

func (c *hostCPUCollector) CollectHost(ctx context.Context, r *api.HostReport) error {
	all, err := cpu.TimesWithContext(ctx, false)
	if err != nil {
		return fmt.Errorf("cpu times: %w", err)
	}
	if len(all) == 0 {
		return errors.New("cpu times: no aggregate cpu line in stat")
	}
	per, err := cpu.TimesWithContext(ctx, true)
	if err != nil {
		return fmt.Errorf("per-cpu times: %w", err)
	}
	cur := cpuTimesFrom(all[0])
	r.CPU = &api.HostCPU{Percent: CPUPercent(c.prev, cur), CPUs: len(per)}
	c.prev = cur
	return nil
}

// readMeminfo wraps mem.VirtualMemoryWithContext, which ignores a failure
// to read meminfo and returns zeros: a MemTotal of 0 is taken as that
// failure.
func readMeminfo(ctx context.Context) (*mem.VirtualMemoryStat, error) {
	v, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("meminfo: %w", err)
	}
	if v.Total == 0 {
		return nil, errors.New("meminfo: missing or unreadable (no MemTotal)")
	}
	return v, nil
}

func collectHostMemory(ctx context.Context, r *api.HostReport) error {
	v, err := readMeminfo(ctx)
	if err != nil {
		return err
	}
	r.Memory = &api.HostMemory{
		TotalBytes:     v.Total,
		UsedBytes:      v.Used,
		FreeBytes:      v.Free,
		AvailableBytes: v.Available,
	}
	return nil
}

// collectHostSwap reads SwapTotal and SwapFree from meminfo through
// mem.VirtualMemory. gopsutil's mem.SwapMemory takes its totals from
// sysinfo(2), which ignores the configured ProcRoot.
func collectHostSwap(ctx context.Context, r *api.HostReport) error {
	v, err := readMeminfo(ctx)
	if err != nil {
		return err
	}
	used := uint64(0)
	if v.SwapTotal > v.SwapFree {
		used = v.SwapTotal - v.SwapFree
	}
	r.Swap = &api.HostSwap{TotalBytes: v.SwapTotal, UsedBytes: used, FreeBytes: v.SwapFree}
	return nil
}

// collectHostLoad reads <ProcRoot>/loadavg. (When that file cannot be read
// gopsutil falls back to sysinfo(2), i.e. to the running kernel.)
func collectHostLoad(ctx context.Context, r *api.HostReport) error {
	a, err := load.AvgWithContext(ctx)
	if err != nil {
		return fmt.Errorf("loadavg: %w", err)
	}
	r.Load = &api.HostLoad{Load1: a.Load1, Load5: a.Load5, Load15: a.Load15}
	return nil
}

// hostDiskCollector statfs(2)s path; roots do not apply, the path is
// the agent's own.
type hostDiskCollector struct{ path string }

func (c hostDiskCollector) CollectHost(ctx context.Context, r *api.HostReport) error {
	u, err := disk.UsageWithContext(ctx, c.path)
	if err != nil {
		return fmt.Errorf("statfs %s: %w", c.path, err)
	}
	r.Disk = &api.HostDisk{Path: c.path, TotalBytes: u.Total, FreeBytes: u.Free, UsedBytes: u.Used}
	return nil
}
