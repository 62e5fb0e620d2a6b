package api

import "time"

// The figures an agent measures (package sysstats fills them) and sends in
// its heartbeat: the one type of each, from the collector to the
// coordinator's history, the CLI and the dashboard.

// HostReport is one collection of host figures. A section is nil when its
// collector failed; the failure is listed in Errors.
type HostReport struct {
	CollectedAt time.Time        `json:"collected_at"`
	CPU         *HostCPU         `json:"cpu,omitempty"`
	Memory      *HostMemory      `json:"memory,omitempty"`
	Swap        *HostSwap        `json:"swap,omitempty"`
	Load        *HostLoad        `json:"load,omitempty"`
	Disk        *HostDisk        `json:"disk,omitempty"`
	Errors      []CollectorError `json:"errors,omitempty"`
}

// HostCPU is the host's CPU use across all CPUs.
type HostCPU struct {
	// Percent is busy time over all CPUs between the previous collection
	// and this one, 0–100. The first collection covers the time since boot.
	Percent float64 `json:"percent"`
	// CPUs is the number of CPUs listed in /proc/stat.
	CPUs int `json:"cpus"`
}

// HostMemory is /proc/meminfo as gopsutil reads it.
type HostMemory struct {
	TotalBytes uint64 `json:"total_bytes"`
	// UsedBytes is total − free − buffers − cached (gopsutil's definition).
	UsedBytes uint64 `json:"used_bytes"`
	FreeBytes uint64 `json:"free_bytes"`
	// AvailableBytes is MemAvailable: what can be given to new work
	// without swapping.
	AvailableBytes uint64 `json:"available_bytes"`
}

// HostSwap is the host's swap space, from /proc/meminfo.
type HostSwap struct {
	TotalBytes uint64 `json:"total_bytes"`
	UsedBytes  uint64 `json:"used_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
}

// HostLoad is the 1, 5 and 15 minute load averages.
type HostLoad struct {
	Load1  float64 `json:"load1"`
	Load5  float64 `json:"load5"`
	Load15 float64 `json:"load15"`
}

// HostDisk is the filesystem holding Path (the agent's data root).
type HostDisk struct {
	Path       string `json:"path"`
	TotalBytes uint64 `json:"total_bytes"`
	// FreeBytes is what an unprivileged writer can still use (f_bavail).
	FreeBytes uint64 `json:"free_bytes"`
	UsedBytes uint64 `json:"used_bytes"`
}

// MemberReport is one collection of a member's figures. A section is nil
// when its collector failed (or, for Disk, when no data dir was given).
type MemberReport struct {
	CollectedAt   time.Time        `json:"collected_at"`
	CgroupPath    string           `json:"cgroup_path"`
	CgroupVersion int              `json:"cgroup_version,omitempty"`
	PID           int              `json:"pid,omitempty"`
	StartedAt     time.Time        `json:"started_at,omitzero"`
	CPU           *MemberCPU       `json:"cpu,omitempty"`
	Memory        *MemberMemory    `json:"memory,omitempty"`
	Swap          *MemberSwap      `json:"swap,omitempty"`
	Disk          *DataSize        `json:"disk,omitempty"`
	Errors        []CollectorError `json:"errors,omitempty"`
}

// MemberCPU is a member's CPU use.
type MemberCPU struct {
	// UsageNanos is the CPU time used since the cgroup was created.
	UsageNanos uint64 `json:"usage_nanos"`
	// Percent is CPU time over wall time since the previous collection of
	// this run, where 100 is one CPU fully busy (docker stats' convention);
	// the first collection covers the time since StartedAt, or is 0 when
	// the start time is unknown.
	Percent float64 `json:"percent"`
}

// MemberMemory is a member's memory.
type MemberMemory struct {
	// CurrentBytes is the working set: usage minus inactive file cache (see
	// the package comment).
	CurrentBytes uint64 `json:"current_bytes"`
	// UsageBytes is the kernel's raw charge, page cache included.
	UsageBytes uint64 `json:"usage_bytes"`
	// HighestBytes is the highest memory of the member's current run: the
	// maximum of every CurrentBytes and kernel high-water mark seen since the
	// member (re)started. The kernel's mark counts page cache, so it can be
	// above the highest working set.
	HighestBytes  uint64 `json:"highest_bytes"`
	HighestSource string `json:"highest_source"` // sysstats.SourceKernel or SourceTracked
	// LimitBytes is the cgroup's memory limit; 0 with Unlimited set when
	// there is none.
	LimitBytes uint64 `json:"limit_bytes"`
	Unlimited  bool   `json:"unlimited"`
	// FreeBytes is LimitBytes − CurrentBytes (0 when Unlimited: the host's
	// available memory is then what bounds the member).
	FreeBytes uint64 `json:"free_bytes"`
}

// MemberSwap is a member's swap.
type MemberSwap struct {
	// Accounted is false when the kernel does not account swap per cgroup
	// (v1 without memsw files, i.e. swapaccount=0; v2 without
	// memory.swap.current). All figures are then 0.
	Accounted     bool   `json:"accounted"`
	CurrentBytes  uint64 `json:"current_bytes"`
	HighestBytes  uint64 `json:"highest_bytes"`
	HighestSource string `json:"highest_source,omitempty"`
	// LimitBytes is how much swap the member may use; 0 with Unlimited set
	// when there is no limit.
	LimitBytes uint64 `json:"limit_bytes"`
	Unlimited  bool   `json:"unlimited"`
	// FreeBytes is LimitBytes − CurrentBytes (0 when Unlimited: the host's
	// free swap then bounds the member).
	FreeBytes uint64 `json:"free_bytes"`
}

// DataSize is the on-disk size of a member's database files (apparent
// sizes, not allocated blocks).
type DataSize struct {
	Dir      string `json:"dir"`
	RDBBytes uint64 `json:"rdb_bytes"`
	// AOFBytes sums the append-only directory (Redis ≥ 7) or file (< 7).
	AOFBytes   uint64 `json:"aof_bytes"`
	TotalBytes uint64 `json:"total_bytes"`
}

// CollectorError is one collector's failure in a report.
type CollectorError struct {
	Collector string `json:"collector"`
	Error     string `json:"error"`
}
