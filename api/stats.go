package api

import "time"

// MemberFigures is the dashboard of one member (DESIGN.md §3): CPU, memory
// current / highest since restart / free, swap current / highest / free, the
// database's on-disk size.
type MemberFigures struct {
	At                 time.Time `json:"at"`
	CPUPercent         float64   `json:"cpu_percent"`
	MemoryBytes        uint64    `json:"memory_bytes"`
	MemoryHighestBytes uint64    `json:"memory_highest_bytes"`
	MemoryFreeBytes    uint64    `json:"memory_free_bytes"`
	MemoryLimitBytes   uint64    `json:"memory_limit_bytes"`
	SwapBytes          uint64    `json:"swap_bytes"`
	SwapHighestBytes   uint64    `json:"swap_highest_bytes"`
	SwapFreeBytes      uint64    `json:"swap_free_bytes"`
	DiskBytes          uint64    `json:"disk_bytes"`
}

// HostFigures are a host's figures.
type HostFigures struct {
	At               time.Time `json:"at"`
	CPUPercent       float64   `json:"cpu_percent"`
	MemoryTotalBytes uint64    `json:"memory_total_bytes"`
	MemoryUsedBytes  uint64    `json:"memory_used_bytes"`
	MemoryFreeBytes  uint64    `json:"memory_free_bytes"`
	SwapTotalBytes   uint64    `json:"swap_total_bytes"`
	SwapUsedBytes    uint64    `json:"swap_used_bytes"`
	SwapFreeBytes    uint64    `json:"swap_free_bytes"`
	Load1            float64   `json:"load1"`
	DiskFreeBytes    uint64    `json:"disk_free_bytes"`
}

// StatsPoint is one minute of a member's history.
type StatsPoint struct {
	At          time.Time `json:"at"`
	CPUPercent  float64   `json:"cpu_percent"`
	MemoryBytes uint64    `json:"memory_bytes"`
	SwapBytes   uint64    `json:"swap_bytes"`
}

// MemberStats is a member's latest figures and recent history.
type MemberStats struct {
	MemberID string         `json:"member_id"`
	Role     Role           `json:"role"`
	HostID   string         `json:"host_id"`
	State    string         `json:"state,omitempty"`
	Latest   *MemberFigures `json:"latest,omitempty"`
	History  []StatsPoint   `json:"history,omitempty"` // one point a minute, oldest first
}

// AddonStats answers addons-stats.
type AddonStats struct {
	AddonID string        `json:"addon_id"`
	App     string        `json:"app"`
	Plan    string        `json:"plan"`
	Members []MemberStats `json:"members"`
}

// HostView is a host with its figures and memory commitments.
type HostView struct {
	Host
	CommittedMB int          `json:"committed_mb"`
	FreeMB      int          `json:"free_mb"`
	Members     int          `json:"members"`
	Figures     *HostFigures `json:"figures,omitempty"`
}
