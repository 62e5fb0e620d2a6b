package backup

import (
	"fmt"
	"sort"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// Retention bounds, in calendar days of the schedule's zone.
const (
	DailyDays   = 30  // every backup up to this age
	WeeklyDays  = 90  // then the newest good of each ISO week up to this age
	MonthlyDays = 180 // then the newest good of each month up to this age; nothing older
	FailedDays  = 7   // a failed backup is kept this long
)

// Verdict is retention's answer for one backup.
type Verdict struct {
	ID     string
	Keep   bool
	Reason string
}

// Retain decides which backups to keep at now, counting calendar days in tz
// (the schedule's zone; UTC when nil). It answers one verdict per backup
// that is not already Deleted, ordered by addon, CreatedAt, then id; the
// rules are in the package comment. Each addon's backups are judged on
// their own.
func Retain(now time.Time, tz *time.Location, backups []api.Backup) []Verdict {
	if tz == nil {
		tz = time.UTC
	}
	byAddon := map[string][]*api.Backup{}
	for i := range backups {
		if b := &backups[i]; !b.Deleted {
			byAddon[b.AddonID] = append(byAddon[b.AddonID], b)
		}
	}
	addons := make([]string, 0, len(byAddon))
	for a := range byAddon {
		addons = append(addons, a)
	}
	sort.Strings(addons)
	out := make([]Verdict, 0, len(backups))
	for _, a := range addons {
		bs := byAddon[a]
		sort.Slice(bs, func(i, j int) bool { return older(*bs[i], *bs[j]) })
		out = retainAddon(out, now, tz, bs)
	}
	return out
}

// older orders backups by CreatedAt, then id.
func older(a, b api.Backup) bool {
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	return a.ID < b.ID
}

// judged is a backup with what retention needs to know of it.
type judged struct {
	*api.Backup
	age    int    // calendar days old in tz
	bucket string // its ISO week (ages 31–90) or month (91–180), else ""
}

// retainAddon appends the verdicts on one addon's backups, sorted oldest
// first.
func retainAddon(out []Verdict, now time.Time, tz *time.Location, bs []*api.Backup) []Verdict {
	js := make([]judged, len(bs))
	newestGood := -1
	winner := map[string]int{} // week or month → its newest good backup
	for i, b := range bs {
		j := judged{Backup: b, age: ageDays(now, b.CreatedAt, tz)}
		switch {
		case j.age > DailyDays && j.age <= WeeklyDays:
			j.bucket = weekOf(b.CreatedAt, tz)
		case j.age > WeeklyDays && j.age <= MonthlyDays:
			j.bucket = monthOf(b.CreatedAt, tz)
		}
		js[i] = j
		if b.Good() {
			newestGood = i // sorted oldest first: the last good one wins
			if j.bucket != "" {
				winner[j.bucket] = i
			}
		}
	}
	for i, j := range js {
		keep, why := judge(now, j, winner[j.bucket] == i)
		if !keep && i == newestGood {
			keep, why = true, "newest good backup"
		}
		out = append(out, Verdict{ID: j.ID, Keep: keep, Reason: why})
	}
	return out
}

// judge applies the rules to one backup; winner says it is the newest good
// backup of its week or month.
func judge(now time.Time, j judged, winner bool) (bool, string) {
	switch age := j.age; {
	case j.Pinned:
		return true, "pinned"
	case j.Status == api.BackupRunning:
		return true, "running"
	case j.Status == api.BackupError && age > FailedDays:
		return false, fmt.Sprintf("failed, %s old (failed backups are kept %d days)", days(age), FailedDays)
	case j.Status == api.BackupError:
		return true, fmt.Sprintf("failed, %s old (kept %d days)", days(age), FailedDays)
	case age <= DailyDays || now.Sub(j.CreatedAt) < DailyDays*24*time.Hour:
		return true, "daily, " + days(age) + " old"
	case age > MonthlyDays:
		return false, "older than 6 months"
	case !j.Good():
		return false, fmt.Sprintf("%s, %s old, past the daily %d days", notGood(*j.Backup), days(age), DailyDays)
	}
	kind := "weekly "
	if j.age > WeeklyDays {
		kind = "monthly "
	}
	if winner {
		return true, kind + j.bucket
	}
	return false, kind + j.bucket + " keeps a newer backup"
}

// notGood says why a backup that is past the daily range is not good.
func notGood(b api.Backup) string {
	if b.Status != api.BackupDone {
		return fmt.Sprintf("status %q", b.Status)
	}
	return "not verified"
}

// ageDays is how many calendar days (in tz) t is before now; 0 for today
// or a time after now.
func ageDays(now, t time.Time, tz *time.Location) int {
	ny, nm, nd := now.In(tz).Date()
	ty, tm, td := t.In(tz).Date()
	// Dates at noon UTC: whole days apart, whatever the zone's DST.
	n := time.Date(ny, nm, nd, 12, 0, 0, 0, time.UTC)
	c := time.Date(ty, tm, td, 12, 0, 0, 0, time.UTC)
	d := int(n.Sub(c).Hours() / 24)
	if d < 0 {
		return 0
	}
	return d
}

func days(n int) string {
	switch n {
	case 0:
		return "0 days"
	case 1:
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

// weekOf is t's ISO week in tz: "2026-W40".
func weekOf(t time.Time, tz *time.Location) string {
	y, w := t.In(tz).ISOWeek()
	return fmt.Sprintf("%04d-W%02d", y, w)
}

// monthOf is t's calendar month in tz: "2026-07".
func monthOf(t time.Time, tz *time.Location) string {
	return t.In(tz).Format("2006-01")
}

// Forget lists the ids of deleted records whose time in the FSM is over
// (api.DeletedBackupKept after DeletedAt), sorted.
func Forget(now time.Time, backups []api.Backup) []string {
	var ids []string
	for _, b := range backups {
		if b.Deleted && !now.Before(b.DeletedAt.Add(api.DeletedBackupKept)) {
			ids = append(ids, b.ID)
		}
	}
	sort.Strings(ids)
	return ids
}
