package sysstats

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// HostCollector fills one section of a HostReport. It returns an error
// instead of filling its section when it cannot measure; it must not touch
// other sections. ctx carries the gopsutil EnvMap of the Config.
type HostCollector interface {
	CollectHost(ctx context.Context, r *api.HostReport) error
}

// HostCollectorFunc adapts a function to HostCollector.
type HostCollectorFunc func(ctx context.Context, r *api.HostReport) error

// CollectHost calls f.
func (f HostCollectorFunc) CollectHost(ctx context.Context, r *api.HostReport) error {
	return f(ctx, r)
}

// MemberCollector fills one section of a MemberReport for target t, with
// the same rules as HostCollector.
type MemberCollector interface {
	CollectMember(ctx context.Context, t MemberTarget, r *api.MemberReport) error
}

// MemberCollectorFunc adapts a function to MemberCollector.
type MemberCollectorFunc func(ctx context.Context, t MemberTarget, r *api.MemberReport) error

// CollectMember calls f.
func (f MemberCollectorFunc) CollectMember(ctx context.Context, t MemberTarget, r *api.MemberReport) error {
	return f(ctx, t, r)
}

// MemberTarget says which member to measure. The agent's runtime knows all
// of it (the containerd task's cgroup path, pid and start time).
type MemberTarget struct {
	// CgroupPath is the member's cgroup relative to the hierarchy root,
	// e.g. "/<containerd namespace>/<container id>".
	CgroupPath string
	// DataDir holds dump.rdb and the append-only file(s); empty skips the
	// disk figure (sentinel, haproxy).
	DataDir string
	// PID and StartedAt identify the member's current run: when either
	// changes, "highest since restart" figures start again.
	PID       int
	StartedAt time.Time
}

func (t MemberTarget) run() Run { return Run{PID: t.PID, StartedAt: t.StartedAt} }

// Collector names, as they appear in CollectorError.Collector.
const (
	CollectorCPU    = "cpu"
	CollectorMemory = "memory"
	CollectorSwap   = "swap"
	CollectorLoad   = "load"
	CollectorDisk   = "disk"
)

type namedHost struct {
	name string
	c    HostCollector
}

type namedMember struct {
	name string
	c    MemberCollector
}

// HostOptions tunes NewHost.
type HostOptions struct {
	// DiskPath is a path on the filesystem whose size and free space are
	// reported (the agent's data root); empty leaves out the disk collector.
	DiskPath string
	// Logger receives one debug line per failing collector; nil discards.
	Logger *slog.Logger
}

// Host collects host figures. It is safe for concurrent use; collections
// are serialised because the CPU collector keeps the previous sample.
type Host struct {
	cfg        Config
	log        *slog.Logger
	mu         sync.Mutex
	collectors []namedHost
}

// NewHost returns a Host with the cpu, memory, swap, load and (when
// opts.DiskPath is set) disk collectors.
func NewHost(cfg Config, opts HostOptions) *Host {
	h := &Host{cfg: cfg.withDefaults(), log: orDiscard(opts.Logger)}
	h.Register(CollectorCPU, &hostCPUCollector{})
	h.Register(CollectorMemory, HostCollectorFunc(collectHostMemory))
	h.Register(CollectorSwap, HostCollectorFunc(collectHostSwap))
	h.Register(CollectorLoad, HostCollectorFunc(collectHostLoad))
	if opts.DiskPath != "" {
		h.Register(CollectorDisk, hostDiskCollector{path: opts.DiskPath})
	}
	return h
}

// Register adds c under name, replacing a collector of the same name.
// Collectors run in registration order.
func (h *Host) Register(name string, c HostCollector) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.collectors {
		if h.collectors[i].name == name {
			h.collectors[i].c = c
			return
		}
	}
	h.collectors = append(h.collectors, namedHost{name, c})
}

// Collect runs every collector and returns what they measured. It never
// fails as a whole: each failing collector adds a CollectorError.
func (h *Host) Collect(ctx context.Context) api.HostReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	ctx = h.cfg.Context(ctx)
	r := api.HostReport{CollectedAt: time.Now()}
	for _, n := range h.collectors {
		err := safely(func() error { return n.c.CollectHost(ctx, &r) })
		if err != nil {
			h.log.Debug("host collector failed", "collector", n.name, "err", err)
			r.Errors = append(r.Errors, api.CollectorError{Collector: n.name, Error: err.Error()})
		}
	}
	return r
}

// Member collects one member's figures and remembers, across collections,
// what "highest since restart" and CPU % need. Use one Member per member;
// it is safe for concurrent use.
type Member struct {
	cfg        Config
	log        *slog.Logger
	mu         sync.Mutex
	collectors []namedMember
}

// NewMember returns a Member with the cpu, memory, swap and disk collectors.
func NewMember(cfg Config, logger *slog.Logger) *Member {
	cfg = cfg.withDefaults()
	m := &Member{cfg: cfg, log: orDiscard(logger)}
	m.Register(CollectorCPU, &memberCPUCollector{root: cfg.CgroupRoot, now: time.Now})
	m.Register(CollectorMemory, &memberMemoryCollector{root: cfg.CgroupRoot})
	m.Register(CollectorSwap, &memberSwapCollector{root: cfg.CgroupRoot})
	m.Register(CollectorDisk, MemberCollectorFunc(collectMemberDisk))
	return m
}

// Register adds c under name, replacing a collector of the same name.
func (m *Member) Register(name string, c MemberCollector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.collectors {
		if m.collectors[i].name == name {
			m.collectors[i].c = c
			return
		}
	}
	m.collectors = append(m.collectors, namedMember{name, c})
}

// Collect measures t. It never fails as a whole: each failing collector
// adds a CollectorError and leaves its section nil.
func (m *Member) Collect(ctx context.Context, t MemberTarget) api.MemberReport {
	m.mu.Lock()
	defer m.mu.Unlock()
	ctx = m.cfg.Context(ctx)
	r := api.MemberReport{
		CollectedAt: time.Now(),
		CgroupPath:  t.CgroupPath,
		PID:         t.PID,
		StartedAt:   t.StartedAt,
	}
	if v, err := cgroupVersion(m.cfg.CgroupRoot); err == nil {
		r.CgroupVersion = v
	}
	for _, n := range m.collectors {
		err := safely(func() error { return n.c.CollectMember(ctx, t, &r) })
		if err != nil {
			m.log.Debug("member collector failed", "collector", n.name, "cgroup", t.CgroupPath, "err", err)
			r.Errors = append(r.Errors, api.CollectorError{Collector: n.name, Error: err.Error()})
		}
	}
	return r
}

// safely runs f, turning a panic into an error so that one broken
// collector cannot take the agent down.
func safely(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return f()
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
