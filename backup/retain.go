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
	byAddon := map[string][]api.Backup{}
	for _, b := range backups {
		if !b.Deleted {
			byAddon[b.AddonID] = append(byAddon[b.AddonID], b)
		}
	}
	addons := make([]string, 0, len(byAddon))
	for a := range byAddon {
		addons = append(addons, a)
	}
	sort.Strings(addons)
	var out []Verdict
	for _, a := range addons {
		bs := byAddon[a]
		sort.Slice(bs, func(i, j int) bool { return older(bs[i], bs[j]) })
		out = append(out, retainAddon(now, tz, bs)...)
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

// retainAddon judges one addon's backups, sorted oldest first.
func retainAddon(now time.Time, tz *time.Location, bs []api.Backup) []Verdict {
	newestGood := -1
	week := map[string]int{}  // ISO week → newest good backup aged 31–90 days
	month := map[string]int{} // month → newest good backup aged 91–180 days
	for i, b := range bs {
		if !b.Good() {
			continue
		}
		newestGood = i // sorted oldest first: the last good one wins
		switch age := ageDays(now, b.CreatedAt, tz); {
		case age > DailyDays && age <= WeeklyDays:
			week[weekOf(b.CreatedAt, tz)] = i
		case age > WeeklyDays && age <= MonthlyDays:
			month[monthOf(b.CreatedAt, tz)] = i
		}
	}
	out := make([]Verdict, len(bs))
	for i, b := range bs {
		keep, why := judge(now, tz, b, i, week, month)
		if !keep && i == newestGood {
			keep, why = true, "newest good backup"
		}
		out[i] = Verdict{ID: b.ID, Keep: keep, Reason: why}
	}
	return out
}

func judge(now time.Time, tz *time.Location, b api.Backup, i int, week, month map[string]int) (bool, string) {
	age := ageDays(now, b.CreatedAt, tz)
	switch {
	case b.Pinned:
		return true, "pinned"
	case b.Status == api.BackupRunning:
		return true, "running"
	case b.Status == api.BackupError && age > FailedDays:
		return false, fmt.Sprintf("failed, %s old (failed backups are kept %d days)", days(age), FailedDays)
	case b.Status == api.BackupError:
		return true, fmt.Sprintf("failed, %s old (kept %d days)", days(age), FailedDays)
	case age <= DailyDays || now.Sub(b.CreatedAt) < DailyDays*24*time.Hour:
		return true, "daily, " + days(age) + " old"
	case age > MonthlyDays:
		return false, "older than 6 months"
	case !b.Good():
		return false, fmt.Sprintf("%s, %s old, past the daily %d days", notGood(b), days(age), DailyDays)
	case age <= WeeklyDays:
		w := weekOf(b.CreatedAt, tz)
		if week[w] == i {
			return true, "weekly " + w
		}
		return false, "weekly " + w + " keeps a newer backup"
	default:
		m := monthOf(b.CreatedAt, tz)
		if month[m] == i {
			return true, "monthly " + m
		}
		return false, "monthly " + m + " keeps a newer backup"
	}
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
