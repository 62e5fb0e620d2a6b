package sysstats

import "time"

// Run identifies one run of a member: its main process and when it
// started. A restart gives a new Run (new pid, new start time, or both).
type Run struct {
	PID       int
	StartedAt time.Time
}

// Same reports whether r and o are the same run. Times are compared with
// time.Equal, so a start time that went through JSON is still the same.
func (r Run) Same(o Run) bool { return r.PID == o.PID && r.StartedAt.Equal(o.StartedAt) }

// Tracker keeps the highest value seen during the current run of a member.
// It starts again when, and only when, the run changes. The zero Tracker is
// ready to use; it is not safe for concurrent use.
type Tracker struct {
	run     Run
	highest uint64
	seen    bool
}

// Observe records v as seen during run and returns the highest value seen
// during run so far. A run different from the previous observation's
// discards what was kept.
func (t *Tracker) Observe(run Run, v uint64) uint64 {
	if !t.seen || !t.run.Same(run) {
		t.run, t.highest, t.seen = run, v, true
		return v
	}
	t.highest = max(t.highest, v)
	return t.highest
}

// Highest returns the highest value of the current run and whether any
// value was observed.
func (t *Tracker) Highest() (uint64, bool) { return t.highest, t.seen }
