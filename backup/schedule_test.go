package backup

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

func TestScheduleValidate(t *testing.T) {
	cases := []struct {
		name string
		s    Schedule
		want string // "" = valid
	}{
		{"defaults", DefaultSchedule(), ""},
		{"zero value takes the defaults", Schedule{}, ""},
		{"descriptor", Schedule{Spec: "@daily"}, ""},
		{"weekly", Schedule{Spec: "0 1 * * 1"}, ""},
		{"late with a short window", Schedule{Spec: "30 23 * * *", Window: 20 * time.Minute}, ""},
		{"other zone", Schedule{TZ: "America/New_York"}, ""},
		{"not a spec", Schedule{Spec: "daily at one"}, `backup schedule "daily at one" is not a cron spec`},
		{"hour out of range", Schedule{Spec: "0 25 * * *"}, "is not a cron spec"},
		{"six fields: seconds first", Schedule{Spec: "30 0 1 * * *"}, ""},
		{"seven fields", Schedule{Spec: "0 0 1 * * * *"}, "is not a cron spec"},
		{"unknown zone", Schedule{TZ: "Europe/Pariss"}, `time zone "Europe/Pariss" is not an IANA zone name`},
		{"zone in the spec", Schedule{Spec: "CRON_TZ=UTC 0 1 * * *"}, "put the time zone in tz"},
		{"every", Schedule{Spec: "@every 1h"}, "@every is not a daily schedule"},
		{"hourly", Schedule{Spec: "0 * * * *"}, "fires more than once a day"},
		{"twice a day", Schedule{Spec: "0 1,13 * * *"}, "fires more than once a day in Europe/Paris (2026-01-01 01:00 and 13:00)"},
		{"in the hour DST skips", Schedule{Spec: "30 2 * * *"}, "02:30 does not exist on 2026-03-29 in Europe/Paris"},
		{"window past midnight", Schedule{Spec: "30 23 * * *"}, "backup window 2h0m0s after the run at 2026-01-01 23:30 Europe/Paris ends after midnight"},
		{"never", Schedule{Spec: "0 1 30 2 *"}, "never fires"},
		{"negative window", Schedule{Window: -time.Minute}, "backup window -1m0s"},
		{"window over a day", Schedule{Spec: "0 0 * * *", Window: 25 * time.Hour}, "backup window 25h0m0s"},
		{"negative per host", Schedule{PerHost: -1}, "backups per host -1"},
		{"negative retry", Schedule{RetryEvery: -time.Second}, "backup retry interval -1s"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.s.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Validate = %v, want an error saying %q", err, c.want)
			}
		})
	}
}

func TestDay(t *testing.T) {
	at := func(y int, m time.Month, d, h, mi, s int) time.Time { return time.Date(y, m, d, h, mi, s, 0, paris) }
	cases := []struct {
		name string
		s    Schedule
		now  time.Time
		want string
	}{
		{"before the run: yesterday", Schedule{}, at(2026, 12, 7, 0, 59, 59), "2026-12-06"},
		{"at the run", Schedule{}, at(2026, 12, 7, 1, 0, 0), "2026-12-07"},
		{"late evening", Schedule{}, at(2026, 12, 7, 23, 59, 59), "2026-12-07"},
		{"new year", Schedule{}, at(2027, 1, 1, 0, 30, 0), "2026-12-31"},
		{"UTC clock, Paris day", Schedule{}, time.Date(2026, 7, 1, 23, 30, 0, 0, time.UTC), "2026-07-02"}, // 01:30 CEST on the 2nd
		{"spring forward, after", Schedule{}, at(2026, 3, 29, 4, 0, 0), "2026-03-29"},
		{"fall back, repeated hour", Schedule{}, time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC), "2026-10-25"}, // 02:30 CET, second time
		{"weekly on Mondays, a Wednesday", Schedule{Spec: "0 1 * * 1"}, at(2026, 12, 9, 12, 0, 0), "2026-12-07"},
		{"other zone", Schedule{TZ: "America/New_York"}, time.Date(2026, 12, 7, 5, 30, 0, 0, time.UTC), "2026-12-06"}, // 00:30 in New York, before its 01:00
		{"invalid", Schedule{Spec: "nope"}, at(2026, 12, 7, 12, 0, 0), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.s.Day(c.now); got != c.want {
				t.Fatalf("Day(%v) = %q, want %q", c.now, got, c.want)
			}
		})
	}
}

// The run of each day is 01:00 Paris wall clock, an hour apart in UTC on
// either side of each DST change; StartAt adds the addon's offset as
// elapsed time.
func TestStartAtAcrossDST(t *testing.T) {
	s := Schedule{}
	cases := []struct{ day, runUTC string }{
		{"2026-03-28", "2026-03-28T00:00:00Z"},
		{"2026-03-29", "2026-03-29T00:00:00Z"}, // 01:00 CET, the clocks jump at 02:00
		{"2026-03-30", "2026-03-29T23:00:00Z"}, // 01:00 CEST
		{"2026-10-24", "2026-10-23T23:00:00Z"},
		{"2026-10-25", "2026-10-24T23:00:00Z"}, // 01:00 CEST, the clocks go back at 03:00
		{"2026-10-26", "2026-10-26T00:00:00Z"}, // 01:00 CET
	}
	for _, id := range []string{"my-app-3030", "shop-1234", "b-1"} {
		off := Offset(id, DefaultWindow)
		for _, c := range cases {
			got := s.StartAt(id, c.day)
			if want := mustTime(c.runUTC).Add(off); !got.Equal(want) {
				t.Errorf("StartAt(%s, %s) = %v, want %v (run %s + offset %s)", id, c.day, got.UTC(), want, c.runUTC, off)
			}
			if local := got.Add(-off).In(paris); local.Hour() != 1 || local.Minute() != 0 {
				t.Errorf("run of %s is %v in Paris, want 01:00", c.day, local)
			}
		}
	}
	if got := s.StartAt("x-1", "2026-13-01"); !got.IsZero() {
		t.Errorf("StartAt of a malformed day = %v, want zero", got)
	}
	if got := (Schedule{Spec: "0 1 * * 1"}).StartAt("x-1", "2026-12-08"); !got.IsZero() {
		t.Errorf("StartAt of a Tuesday on a Monday schedule = %v, want zero", got)
	}
}

func TestOffsetSpreadAndStable(t *testing.T) {
	s := Schedule{}
	buckets := map[int]int{}
	for i := 0; i < 240; i++ {
		id := fmt.Sprintf("app%d-%d", i, 1000+i*7)
		off := Offset(id, DefaultWindow)
		if off < 0 || off >= DefaultWindow || off%time.Second != 0 {
			t.Fatalf("offset of %s = %s, want whole seconds in [0, 2h)", id, off)
		}
		if again := Offset(id, DefaultWindow); again != off {
			t.Fatalf("offset of %s moved: %s then %s", id, off, again)
		}
		// Same offset every day, across DST.
		for _, day := range []string{"2026-01-15", "2026-03-29", "2026-07-14", "2026-10-25"} {
			start, _ := time.ParseInLocation(DayLayout, day, paris)
			run := start.Add(time.Hour) // 01:00 exists and is one hour after midnight on these days
			if got := s.StartAt(id, day).Sub(run); got != off {
				t.Fatalf("%s on %s: offset %s, want %s", id, day, got, off)
			}
		}
		buckets[int(off/(10*time.Minute))]++
	}
	// 240 addons over twelve 10-minute slices: every slice is used and none
	// holds more than a third of the fleet.
	for b := 0; b < 12; b++ {
		if buckets[b] == 0 || buckets[b] > 80 {
			t.Fatalf("start times not spread over the window: %v", buckets)
		}
	}
	if got := Offset("x-1", 0); got != 0 {
		t.Fatalf("offset in an empty window = %s", got)
	}
}

func TestFailed(t *testing.T) {
	s := Schedule{RetryEvery: 15 * time.Minute}
	now := time.Date(2026, 12, 7, 0, 5, 0, 0, time.UTC)
	p := s.Failed(api.Backup{ID: "x-1-20261207", Kind: api.BackupPeriodic, Status: api.BackupRunning}, now, "BGSAVE failed: MISCONF\nsecond line")
	if p.Status != api.BackupError || p.Reason != "BGSAVE failed: MISCONF" || !p.FinishedAt.Equal(now) || !p.NextAttempt.Equal(now.Add(15*time.Minute)) {
		t.Fatalf("failed periodic backup %+v", p)
	}
	m := s.Failed(api.Backup{ID: "x-1-m20261207T000000Z", Kind: api.BackupManual, Status: api.BackupRunning}, now, "no space")
	if m.Status != api.BackupError || !m.NextAttempt.IsZero() {
		t.Fatalf("failed manual backup %+v: a manual backup is not retried", m)
	}
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}
