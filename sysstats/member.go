package sysstats

import (
	"context"
	"fmt"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// memberCPUCollector reads the cgroup's CPU time and keeps the previous
// sample of the current run for CPU %.
type memberCPUCollector struct {
	root string
	now  func() time.Time
	run  Run
	prev CgroupCPUSample
	seen bool
}

func (c *memberCPUCollector) CollectMember(_ context.Context, t MemberTarget, r *api.MemberReport) error {
	usage, err := readCgroupCPU(c.root, t.CgroupPath)
	if err != nil {
		return fmt.Errorf("cgroup %s cpu: %w", t.CgroupPath, err)
	}
	cur := CgroupCPUSample{UsageNanos: usage, At: c.now()}
	if !c.seen || !c.run.Same(t.run()) {
		// First sample of this run: measure since the start when known.
		c.run, c.seen = t.run(), true
		c.prev = CgroupCPUSample{At: t.StartedAt}
		if t.StartedAt.IsZero() {
			c.prev = cur
		}
	}
	r.CPU = &api.MemberCPU{UsageNanos: usage, Percent: CgroupCPUPercent(c.prev, cur)}
	c.prev = cur
	return nil
}

type memberMemoryCollector struct {
	root    string
	highest Tracker
}

func (c *memberMemoryCollector) CollectMember(_ context.Context, t MemberTarget, r *api.MemberReport) error {
	m, err := readCgroupMemory(c.root, t.CgroupPath)
	if err != nil {
		return fmt.Errorf("cgroup %s memory: %w", t.CgroupPath, err)
	}
	cur := m.workingSet()
	seen, src := cur, SourceTracked
	if m.hasPeak {
		seen, src = max(cur, m.peak), SourceKernel
	}
	out := &api.MemberMemory{
		CurrentBytes:  cur,
		UsageBytes:    m.usage,
		HighestBytes:  c.highest.Observe(t.run(), seen),
		HighestSource: src,
		LimitBytes:    m.limit,
		Unlimited:     m.unlimited,
	}
	if !m.unlimited {
		out.FreeBytes = sub0(m.limit, cur)
	}
	r.Memory = out
	return nil
}

type memberSwapCollector struct {
	root    string
	highest Tracker
}

func (c *memberSwapCollector) CollectMember(_ context.Context, t MemberTarget, r *api.MemberReport) error {
	s, err := readCgroupSwap(c.root, t.CgroupPath)
	if err != nil {
		return fmt.Errorf("cgroup %s swap: %w", t.CgroupPath, err)
	}
	if !s.accounted {
		r.Swap = &api.MemberSwap{}
		return nil
	}
	seen, src := s.current, SourceTracked
	if s.hasPeak {
		seen, src = max(s.current, s.peak), SourceKernel
	}
	out := &api.MemberSwap{
		Accounted:     true,
		CurrentBytes:  s.current,
		HighestBytes:  c.highest.Observe(t.run(), seen),
		HighestSource: src,
		LimitBytes:    s.limit,
		Unlimited:     s.unlimited,
	}
	if !s.unlimited {
		out.FreeBytes = sub0(s.limit, s.current)
	}
	r.Swap = out
	return nil
}

func collectMemberDisk(_ context.Context, t MemberTarget, r *api.MemberReport) error {
	if t.DataDir == "" {
		return nil
	}
	d, err := DataDirSize(t.DataDir)
	if err != nil {
		return err
	}
	r.Disk = &d
	return nil
}
