package sysstats

import (
	"math"
	"testing"
	"time"
)

func TestCPUPercent(t *testing.T) {
	base := CPUTimes{User: 100, System: 50, Idle: 800, Iowait: 50}
	tests := []struct {
		name      string
		prev, cur CPUTimes
		want      float64
	}{
		{"since boot from zero", CPUTimes{}, base, 15},
		{"no time passed", base, base, 0},
		{"all idle", base, add(base, CPUTimes{Idle: 10}), 0},
		{"iowait counts as idle", base, add(base, CPUTimes{Iowait: 10}), 0},
		{"fully busy", base, add(base, CPUTimes{User: 6, System: 4}), 100},
		{"half busy", base, add(base, CPUTimes{User: 5, Idle: 5}), 50},
		{"irq softirq steal nice are busy", base, add(base, CPUTimes{Nice: 1, IRQ: 1, SoftIRQ: 1, Steal: 1, Idle: 4}), 50},
		{"guest is inside user, not counted twice", base, add(base, CPUTimes{User: 5, Guest: 5, Idle: 5}), 50},
		{"guest nice is inside nice", base, add(base, CPUTimes{Nice: 5, GuestNice: 5, Idle: 15}), 25},
		{"counters went backwards", add(base, CPUTimes{User: 10}), base, 0},
		{"swapped samples", add(base, CPUTimes{User: 5, Idle: 5}), base, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CPUPercent(tt.prev, tt.cur)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Fatalf("CPUPercent = %v, want %v", got, tt.want)
			}
		})
	}
}

func add(a, b CPUTimes) CPUTimes {
	return CPUTimes{
		User: a.User + b.User, Nice: a.Nice + b.Nice, System: a.System + b.System,
		Idle: a.Idle + b.Idle, Iowait: a.Iowait + b.Iowait, IRQ: a.IRQ + b.IRQ,
		SoftIRQ: a.SoftIRQ + b.SoftIRQ, Steal: a.Steal + b.Steal,
		Guest: a.Guest + b.Guest, GuestNice: a.GuestNice + b.GuestNice,
	}
}

func TestCgroupCPUPercent(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := func(ns uint64, d time.Duration) CgroupCPUSample {
		return CgroupCPUSample{UsageNanos: ns, At: t0.Add(d)}
	}
	tests := []struct {
		name      string
		prev, cur CgroupCPUSample
		want      float64
	}{
		{"idle", s(1e9, 0), s(1e9, time.Second), 0},
		{"one cpu busy", s(1e9, 0), s(2e9, time.Second), 100},
		{"two cpus busy", s(0, 0), s(4e9, 2*time.Second), 200},
		{"quarter cpu", s(0, 0), s(250e6, time.Second), 25},
		{"no wall time", s(0, 0), s(1e9, 0), 0},
		{"wall time backwards", s(0, time.Second), s(1e9, 0), 0},
		{"usage reset (new cgroup)", s(5e9, 0), s(1e9, time.Second), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CgroupCPUPercent(tt.prev, tt.cur)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Fatalf("CgroupCPUPercent = %v, want %v", got, tt.want)
			}
		})
	}
}
