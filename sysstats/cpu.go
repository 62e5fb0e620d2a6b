package sysstats

import (
	"math"
	"time"

	"github.com/shirou/gopsutil/v3/cpu"
)

// CPUTimes is one sample of the host's cumulative CPU time in seconds, as
// the first line of /proc/stat gives it. Guest and GuestNice are already
// included in User and Nice by the kernel.
type CPUTimes struct {
	User      float64 `json:"user"`
	Nice      float64 `json:"nice"`
	System    float64 `json:"system"`
	Idle      float64 `json:"idle"`
	Iowait    float64 `json:"iowait"`
	IRQ       float64 `json:"irq"`
	SoftIRQ   float64 `json:"softirq"`
	Steal     float64 `json:"steal"`
	Guest     float64 `json:"guest"`
	GuestNice float64 `json:"guest_nice"`
}

func cpuTimesFrom(t cpu.TimesStat) CPUTimes {
	return CPUTimes{
		User: t.User, Nice: t.Nice, System: t.System, Idle: t.Idle, Iowait: t.Iowait,
		IRQ: t.Irq, SoftIRQ: t.Softirq, Steal: t.Steal, Guest: t.Guest, GuestNice: t.GuestNice,
	}
}

// total is all accounted time, without counting guest time twice.
func (t CPUTimes) total() float64 {
	return t.User + t.Nice + t.System + t.Idle + t.Iowait + t.IRQ + t.SoftIRQ + t.Steal
}

// idle is time no task wanted the CPU (waiting for I/O counts as idle).
func (t CPUTimes) idle() float64 { return t.Idle + t.Iowait }

// CPUPercent is the host's busy share between two samples, 0–100: the
// growth of non-idle time over the growth of total time. It is 0 when time
// did not advance or went backwards (a counter reset, samples swapped).
func CPUPercent(prev, cur CPUTimes) float64 {
	dTotal := cur.total() - prev.total()
	dBusy := (cur.total() - cur.idle()) - (prev.total() - prev.idle())
	if dTotal <= 0 || dBusy <= 0 {
		return 0
	}
	return math.Min(100, dBusy/dTotal*100)
}

// CgroupCPUSample is a cgroup's cumulative CPU time at an instant.
type CgroupCPUSample struct {
	UsageNanos uint64
	At         time.Time
}

// CgroupCPUPercent is CPU time over wall time between two samples of one
// cgroup, where 100 means one CPU fully busy (a member using two CPUs
// reports 200, as docker stats does). It is 0 when wall time did not
// advance or usage went backwards (the cgroup was recreated).
func CgroupCPUPercent(prev, cur CgroupCPUSample) float64 {
	wall := cur.At.Sub(prev.At)
	if wall <= 0 || cur.UsageNanos <= prev.UsageNanos {
		return 0
	}
	return float64(cur.UsageNanos-prev.UsageNanos) / float64(wall.Nanoseconds()) * 100
}
