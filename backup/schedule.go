package backup

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // the schedule's zone must not depend on the host's zoneinfo

	"github.com/robfig/cron/v3"

	"github.com/cacheplane/cacheplane/api"
)

// Defaults of Schedule: daily at 01:00 Europe/Paris, starts spread over
// two hours, two dumps at a time per host, a failed dump retried every ten
// minutes.
const (
	DefaultSpec       = "0 1 * * *"
	DefaultTZ         = "Europe/Paris"
	DefaultWindow     = 2 * time.Hour
	DefaultPerHost    = 2
	DefaultRetryEvery = 10 * time.Minute
)

// Schedule is when periodic backups are taken. A zero field takes its
// default (DefaultSchedule).
type Schedule struct {
	// Spec is a standard five-field cron spec (minute hour day-of-month
	// month day-of-week, or a descriptor such as @daily), read in TZ. It
	// must fire at most once per calendar day.
	Spec string `json:"spec,omitempty"`
	// TZ is the IANA time zone of Spec and of the calendar days of
	// backups and retention.
	TZ string `json:"tz,omitempty"`
	// Window is the elapsed time over which the addons' start times are
	// spread after each run (each addon at a fixed offset in [0, Window)).
	// The last start must fall before the end of the run's day.
	Window time.Duration `json:"window,omitempty"`
	// PerHost is the most dumps (periodic and manual) running at a time on
	// one host.
	PerHost int `json:"per_host,omitempty"`
	// RetryEvery is how long after a failure a periodic backup is tried
	// again (the same day only).
	RetryEvery time.Duration `json:"retry_every,omitempty"`
}

// DefaultSchedule is the schedule with every default.
func DefaultSchedule() Schedule {
	return Schedule{Spec: DefaultSpec, TZ: DefaultTZ, Window: DefaultWindow, PerHost: DefaultPerHost, RetryEvery: DefaultRetryEvery}
}

// withDefaults fills the zero fields.
func (s Schedule) withDefaults() Schedule {
	d := DefaultSchedule()
	if strings.TrimSpace(s.Spec) == "" {
		s.Spec = d.Spec
	}
	if s.TZ == "" {
		s.TZ = d.TZ
	}
	if s.Window == 0 {
		s.Window = d.Window
	}
	if s.PerHost == 0 {
		s.PerHost = d.PerHost
	}
	if s.RetryEvery == 0 {
		s.RetryEvery = d.RetryEvery
	}
	return s
}

// compiled is a parsed schedule.
type compiled struct {
	Schedule
	loc  *time.Location
	cron cron.Schedule
}

// lookBack bounds how many days Day searches back for a run: a yearly spec
// fires once in 366 days.
const lookBack = 370

// specParser reads the standard five fields, or six with seconds first.
var specParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func (s Schedule) compile() (compiled, error) {
	s = s.withDefaults()
	c := compiled{Schedule: s}
	spec := strings.TrimSpace(s.Spec)
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return c, fmt.Errorf("backup schedule %q: put the time zone in tz (%q), not in the spec", s.Spec, s.TZ)
	}
	if strings.HasPrefix(spec, "@every") {
		return c, fmt.Errorf("backup schedule %q: @every is not a daily schedule; use a cron spec such as %q (01:00 every day)", s.Spec, DefaultSpec)
	}
	loc, err := time.LoadLocation(s.TZ)
	if err != nil {
		return c, fmt.Errorf("backup schedule time zone %q is not an IANA zone name such as %q: %w", s.TZ, DefaultTZ, err)
	}
	c.loc = loc
	sched, err := specParser.Parse("CRON_TZ=" + s.TZ + " " + spec)
	if err != nil {
		return c, fmt.Errorf("backup schedule %q is not a cron spec ([second] minute hour day-of-month month day-of-week, e.g. %q for 01:00 daily): %w", s.Spec, DefaultSpec, err)
	}
	c.cron = sched
	return c, nil
}

// Location is the schedule's time zone, the one Retain counts days in.
func (s Schedule) Location() (*time.Location, error) {
	c, err := s.compile()
	if err != nil {
		return nil, err
	}
	return c.loc, nil
}

// Validate checks the schedule the way an operator needs to hear it: a cron
// spec the standard parser reads, a known time zone, a spec that fires and
// fires at most once per calendar day, a window that ends within the run's
// day, and positive bounds. The zero fields take their defaults first.
func (s Schedule) Validate() error {
	c, err := s.compile()
	if err != nil {
		return err
	}
	s = c.Schedule
	switch {
	case s.Window < 0 || s.Window > 24*time.Hour:
		return fmt.Errorf("backup window %s: want a positive duration up to 24h (default %s)", s.Window, DefaultWindow)
	case s.PerHost < 0:
		return fmt.Errorf("backups per host %d: want 1 or more (default %d)", s.PerHost, DefaultPerHost)
	case s.RetryEvery < 0:
		return fmt.Errorf("backup retry interval %s: want a positive duration (default %s)", s.RetryEvery, DefaultRetryEvery)
	}
	// Walk a year and a bit from a fixed day: a cron spec repeats yearly at
	// most (no year field), so what holds here holds always.
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, c.loc)
	until := from.AddDate(1, 0, 8)
	last := time.Time{}
	runs := 0
	for r := c.cron.Next(from.Add(-time.Second)); !r.IsZero() && r.Before(until); r = c.cron.Next(r) {
		runs++
		// The same wall-clock time twice in a day is the hour a DST change
		// repeats: the first run is the day's.
		if !last.IsZero() && sameDay(last, r, c.loc) && last.In(c.loc).Format("15:04:05") != r.In(c.loc).Format("15:04:05") {
			return fmt.Errorf("backup schedule %q fires more than once a day in %s (%s and %s): backups are daily, use one time of day such as %q",
				s.Spec, s.TZ, last.In(c.loc).Format("2006-01-02 15:04"), r.In(c.loc).Format("15:04"), DefaultSpec)
		}
		if end := endOfDay(r, c.loc); r.Add(s.Window).After(end) {
			return fmt.Errorf("backup window %s after the run at %s %s ends after midnight: a day's backups must start within that day; shorten the window or run earlier",
				s.Window, r.In(c.loc).Format("2006-01-02 15:04"), s.TZ)
		}
		last = r
	}
	if runs == 0 {
		return fmt.Errorf("backup schedule %q never fires (no such day in a year)", s.Spec)
	}
	return c.checkDST(from, until)
}

// checkDST refuses a spec whose time of day does not exist on a day the
// zone's clocks jump forward (02:30 on the last Sunday of March in Paris):
// cron skips that day, which would have no backup.
func (c compiled) checkDST(from, until time.Time) error {
	spec, ok := c.cron.(*cron.SpecSchedule)
	if !ok {
		return nil
	}
	for d := from; d.Before(until); d = d.AddDate(0, 0, 1) {
		_, off0 := d.Zone()
		_, off1 := endOfDay(d, c.loc).Zone()
		if off0 == off1 {
			continue
		}
		y, m, day := d.Date()
		for h := 0; h < 24; h++ {
			for mi := 0; mi < 60; mi++ {
				if spec.Hour&(1<<uint(h)) == 0 || spec.Minute&(1<<uint(mi)) == 0 {
					continue
				}
				if t := time.Date(y, m, day, h, mi, 0, 0, c.loc); t.Hour() != h || t.Minute() != mi {
					return fmt.Errorf("backup schedule %q: %02d:%02d does not exist on %s in %s (the clocks jump forward), so that day would have no backup; choose a time outside the change, such as %q",
						c.Spec, h, mi, d.Format(DayLayout), c.TZ, DefaultSpec)
				}
			}
		}
	}
	return nil
}

// Day is the calendar day (in TZ, "2026-12-07") whose run is the latest at
// or before now; "" when the schedule is invalid or has not fired within a
// year. Between midnight and 01:00 it is yesterday, with the default spec.
func (s Schedule) Day(now time.Time) string {
	c, err := s.compile()
	if err != nil {
		return ""
	}
	return c.day(now)
}

func (c compiled) day(now time.Time) string {
	local := now.In(c.loc)
	y, m, d := local.Date()
	for k := 0; k <= lookBack; k++ {
		start := time.Date(y, m, d-k, 0, 0, 0, 0, c.loc)
		r, ok := c.run(start)
		if ok && !r.After(now) {
			return start.Format(DayLayout)
		}
	}
	return ""
}

// run is the first run on the calendar day that starts at dayStart.
func (c compiled) run(dayStart time.Time) (time.Time, bool) {
	r := c.cron.Next(dayStart.Add(-time.Second))
	return r, sameDay(r, dayStart, c.loc)
}

// StartAt is when addonID's backup of day starts: that day's cron time plus
// the addon's offset in [0, Window) (elapsed time, so across a DST change
// the wall clock may show an hour more or less than the offset). The zero
// time when the day is malformed, the schedule is invalid or does not run
// that day.
func (s Schedule) StartAt(addonID, day string) time.Time {
	c, err := s.compile()
	if err != nil {
		return time.Time{}
	}
	return c.startAt(addonID, day)
}

func (c compiled) startAt(addonID, day string) time.Time {
	start, err := time.ParseInLocation(DayLayout, day, c.loc)
	if err != nil {
		return time.Time{}
	}
	r, ok := c.run(start)
	if !ok {
		return time.Time{}
	}
	return r.Add(Offset(addonID, c.Window))
}

// Offset is addonID's place in a window: a fixed fraction of it, to the
// second, from a hash of the id — the same on every coordinator and every
// day, different from one addon to the next.
func Offset(addonID string, window time.Duration) time.Duration {
	secs := uint64(window / time.Second)
	if secs == 0 {
		return 0
	}
	h := sha256.Sum256([]byte(addonID))
	return time.Duration(binary.BigEndian.Uint64(h[:8])%secs) * time.Second
}

// Failed is b after a failed attempt that ended at now: status error, the
// reason, FinishedAt now and, for a periodic backup, NextAttempt RetryEvery
// later (Due retries it then, the same day only).
func (s Schedule) Failed(b api.Backup, now time.Time, reason string) api.Backup {
	s = s.withDefaults()
	b.Status, b.Reason, b.FinishedAt = api.BackupError, oneLine(reason), now
	b.NextAttempt = time.Time{}
	if b.Kind == api.BackupPeriodic {
		b.NextAttempt = now.Add(s.RetryEvery)
	}
	return b
}

// errInvalidSchedule is what Due reports for every addon while the schedule
// does not compile.
var errInvalidSchedule = errors.New("the backup schedule is invalid")

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	return s
}

// sameDay reports whether a and b fall on the same calendar day in loc.
func sameDay(a, b time.Time, loc *time.Location) bool {
	ay, am, ad := a.In(loc).Date()
	by, bm, bd := b.In(loc).Date()
	return ay == by && am == bm && ad == bd
}

// endOfDay is the midnight that ends t's calendar day in loc.
func endOfDay(t time.Time, loc *time.Location) time.Time {
	y, m, d := t.In(loc).Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, loc)
}
