package backup

import (
	"fmt"
	"sort"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Candidate is an addon as the leader sees it when it looks for due
// backups.
type Candidate struct {
	AddonID string
	App     string
	// Backups says the addon's plan has backups; without, Due ignores it.
	Backups bool
	// CreatedAt is when the addon was made: a day's backup is due only
	// for an addon that existed at that day's start time (a new addon's
	// first periodic backup is the next scheduled one, not one at once in
	// the middle of its first load and its owner's first operations).
	// Zero: no bound.
	CreatedAt time.Time
	// Busy says another operation runs on the addon: its backup waits.
	Busy bool
	// HostID is where the dump would run (the replica's host, or the only
	// node of a starter); "" when no healthy member can take it on (a
	// business addon whose replica is unhealthy: the primary is never
	// dumped instead).
	HostID string
	// Why says why the dump cannot start now (which member is unhealthy,
	// which operation runs); Due has a default text when it is empty.
	Why string
}

// Start is a backup to start now: a new record, or the failed record of
// the day adopted for a retry (same ID, Attempts+1). The coordinator
// assigns Seq to a new record, picks the member on HostID and the key id,
// commits it as running, then creates the backup operation.
type Start struct {
	Backup api.Backup
}

// Wait is an addon whose backup is due but cannot start, and why.
type Wait struct {
	AddonID string
	ID      string // the id of the backup that waits
	Why     string
}

// Due reports, at now, which periodic backups to start and which due ones
// wait. For each candidate whose plan has backups, the backup of day
// s.Day(now) is due once now reaches its StartAt, until the end of that day
// in the schedule's zone (yesterday's missed backup is not taken today);
// an addon created after that StartAt has none that day (its first is the
// next day's); none starts if the day's record is done or running (a new leader adopts
// it); a failed one is retried under the same ID once its NextAttempt has
// passed. A busy addon, one with no host to dump on, or one whose host
// already runs s.PerHost dumps (running records of any kind, plus the starts
// of this call) waits, with the reason. Both lists are ordered by StartAt,
// then addon id. Deleted records are ignored.
func Due(now time.Time, s Schedule, addons []Candidate, backups []api.Backup) ([]Start, []Wait) {
	c, err := s.compile()
	if err != nil {
		var waits []Wait
		for _, a := range sortedCandidates(addons) {
			if a.Backups {
				waits = append(waits, Wait{AddonID: a.AddonID, Why: fmt.Sprintf("%v: %v", errInvalidSchedule, err)})
			}
		}
		return nil, waits
	}
	day := c.day(now)
	if day == "" || day != now.In(c.loc).Format(DayLayout) {
		return nil, nil // the last run was on an earlier day: missed days are not replayed
	}

	type due struct {
		Candidate
		id    string
		start time.Time
	}
	var dues []due
	for _, a := range addons {
		if !a.Backups {
			continue
		}
		start := c.startAt(a.AddonID, day)
		if start.IsZero() || now.Before(start) || a.CreatedAt.After(start) {
			continue
		}
		dues = append(dues, due{Candidate: a, id: PeriodicID(a.AddonID, day), start: start})
	}
	// Only the records of today's ids matter, and the running ones.
	byID := make(map[string]api.Backup, len(dues))
	for _, d := range dues {
		byID[d.id] = api.Backup{}
	}
	running := map[string]int{} // host → dumps running
	for i := range backups {
		b := &backups[i]
		if b.Deleted {
			continue
		}
		if _, ok := byID[b.ID]; ok {
			byID[b.ID] = *b
		}
		if b.Status == api.BackupRunning && b.HostID != "" {
			running[b.HostID]++
		}
	}
	sort.Slice(dues, func(i, j int) bool {
		if !dues[i].start.Equal(dues[j].start) {
			return dues[i].start.Before(dues[j].start)
		}
		return dues[i].AddonID < dues[j].AddonID
	})

	var starts []Start
	var waits []Wait
	for _, d := range dues {
		prev := byID[d.id]
		exists := prev.ID != ""
		if exists {
			if prev.Status != api.BackupError {
				continue // done or running: taken, or being taken, for this day
			}
			if now.Before(retryAt(prev, c.RetryEvery)) {
				continue
			}
		}
		wait := func(why string) {
			if d.Why != "" {
				why = d.Why
			}
			waits = append(waits, Wait{AddonID: d.AddonID, ID: d.id, Why: why})
		}
		switch {
		case d.Busy:
			wait("another operation runs on the addon")
			continue
		case d.HostID == "":
			wait("no healthy member to take the dump on")
			continue
		case running[d.HostID] >= c.PerHost:
			waits = append(waits, Wait{AddonID: d.AddonID, ID: d.id,
				Why: fmt.Sprintf("host %s already runs %d dumps (at most %d at a time)", d.HostID, running[d.HostID], c.PerHost)})
			continue
		}
		running[d.HostID]++
		b := api.Backup{
			ID: d.id, AddonID: d.AddonID, App: d.App, Kind: api.BackupPeriodic, Day: day,
			CreatedAt: now, Status: api.BackupRunning, Attempts: 1, HostID: d.HostID,
		}
		if exists {
			b.Seq, b.Attempts = prev.Seq, prev.Attempts+1
		}
		b.StoreKey = StoreKey(b)
		starts = append(starts, Start{Backup: b})
	}
	return starts, waits
}

// retryAt is when a failed periodic backup may be tried again: its
// NextAttempt, or RetryEvery after it finished when that is unset.
func retryAt(b api.Backup, every time.Duration) time.Time {
	if !b.NextAttempt.IsZero() {
		return b.NextAttempt
	}
	if b.FinishedAt.IsZero() {
		return time.Time{}
	}
	return b.FinishedAt.Add(every)
}

func sortedCandidates(addons []Candidate) []Candidate {
	out := append([]Candidate(nil), addons...)
	sort.Slice(out, func(i, j int) bool { return out[i].AddonID < out[j].AddonID })
	return out
}
