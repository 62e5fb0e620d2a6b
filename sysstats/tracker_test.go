package sysstats

import (
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	runA := Run{PID: 100, StartedAt: t0}
	runB := Run{PID: 200, StartedAt: t0.Add(time.Minute)}
	type obs struct {
		run  Run
		v    uint64
		want uint64
	}
	tests := []struct {
		name string
		obs  []obs
	}{
		{"first value is the highest", []obs{{runA, 7, 7}}},
		{"keeps the max within a run", []obs{{runA, 5, 5}, {runA, 9, 9}, {runA, 3, 9}, {runA, 9, 9}, {runA, 10, 10}}},
		{"resets on restart", []obs{{runA, 50, 50}, {runB, 10, 10}, {runB, 5, 10}}},
		{"resets on pid change only", []obs{{runA, 50, 50}, {Run{PID: 101, StartedAt: t0}, 1, 1}}},
		{"resets on start time change only", []obs{{runA, 50, 50}, {Run{PID: 100, StartedAt: t0.Add(time.Second)}, 2, 2}}},
		{"going back to an old run resets too", []obs{{runA, 50, 50}, {runB, 10, 10}, {runA, 1, 1}}},
		{"same instant in another location is the same run", []obs{
			{runA, 50, 50}, {Run{PID: 100, StartedAt: t0.In(time.FixedZone("CET", 3600))}, 1, 50},
		}},
		{"unknown run (zero) never resets", []obs{{Run{}, 50, 50}, {Run{}, 1, 50}}},
		{"zero value is a value", []obs{{runA, 0, 0}, {runA, 0, 0}, {runA, 4, 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr Tracker
			if _, seen := tr.Highest(); seen {
				t.Fatal("zero Tracker reports a value")
			}
			for i, o := range tt.obs {
				if got := tr.Observe(o.run, o.v); got != o.want {
					t.Fatalf("observation %d (%+v, %d): got %d, want %d", i, o.run, o.v, got, o.want)
				}
				if h, seen := tr.Highest(); !seen || h != o.want {
					t.Fatalf("observation %d: Highest() = %d, %v; want %d, true", i, h, seen, o.want)
				}
			}
		})
	}
}
