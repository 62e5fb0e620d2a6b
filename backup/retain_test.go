package backup

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// simDaily plays 400 days of one addon's daily backups from 2026-01-01
// (day 1), one a day at its StartAt (01:xx Paris), all good, with the
// leader applying Retain every day at 12:00 Paris to the backups that
// survived the day before. It returns the survivors, with their verdicts,
// after each day asked for.
func simDaily(t *testing.T, days ...int) map[int][]Verdict {
	t.Helper()
	s := Schedule{}
	const addon, app = "my-app-3030", "my-app"
	first := time.Date(2026, 1, 1, 0, 0, 0, 0, paris)
	want := map[int]bool{}
	last := 0
	for _, d := range days {
		want[d] = true
		last = max(last, d)
	}
	out := map[int][]Verdict{}
	var alive []api.Backup
	for n := 1; n <= last; n++ {
		day := first.AddDate(0, 0, n-1).Format(DayLayout)
		alive = append(alive, api.Backup{ID: PeriodicID(addon, day), AddonID: addon, App: app, Kind: api.BackupPeriodic, Day: day,
			Seq: n, CreatedAt: s.StartAt(addon, day), Status: api.BackupDone, Verified: "verified: 1000 keys"})
		noon := first.AddDate(0, 0, n-1).Add(12 * time.Hour)
		vs := Retain(noon, paris, alive)
		if len(vs) != len(alive) {
			t.Fatalf("day %d: %d verdicts for %d backups", n, len(vs), len(alive))
		}
		keep := map[string]bool{}
		var kept []Verdict
		for _, v := range vs {
			if v.Keep {
				keep[v.ID] = true
				kept = append(kept, v)
			}
		}
		next := alive[:0]
		for _, b := range alive {
			if keep[b.ID] {
				next = append(next, b)
			}
		}
		alive = next
		if want[n] {
			out[n] = kept
		}
	}
	return out
}

// The goldens were generated once with -update and reviewed against the
// rule written in their first lines (the rules of the package comment,
// worked out for that day by hand).
func TestRetainGolden400Days(t *testing.T) {
	cases := []struct {
		day  int
		rule string
	}{
		{35, `day 35 = 2026-02-04. Daily: ages 0-30 = 2026-01-05..2026-02-04 (31 backups).
Weekly: ages 31-34 = 2026-01-01..04 are all in ISO week 2026-W01: its newest, 01-04.
32 backups.`},
		{100, `day 100 = 2026-04-10. Daily: 2026-03-11..2026-04-10 (31).
Weekly (ages 31-90 = 01-10..03-10): the Sunday of each of 2026-W02..W10 (01-11 .. 03-08),
and for W11, of which only 03-09 and 03-10 are in range, 03-10 (10).
Monthly (ages 91-99 = 01-01..01-09): 2026-01's newest survivor in range, 01-04, W01's Sunday (1).
42 backups.`},
		{200, `day 200 = 2026-07-19. Daily: 2026-06-19..2026-07-19 (31).
Weekly (ages 31-90 = 04-20..06-18): the Sundays of 2026-W17..W24 (04-26 .. 06-14), and 06-18 for W25 (9).
Monthly (ages 91-180 = 01-20..04-19), newest survivor of each month in range; the weekly stage had
kept only Sundays, and a week that ends in the next month gave its slot to that month:
01-25, 02-22, 03-29, and 04-19 for April (4).
44 backups. DST (03-29) changes nothing: days are calendar days in Paris.`},
		{400, `day 400 = 2027-02-04. Daily: 2027-01-05..2027-02-04 (31).
Weekly (ages 31-90 = 2026-11-06..2027-01-04): 11-08 for W45 (in range from Friday 11-06),
the Sundays of W46..W53 (11-15 .. 2027-01-03), and 01-04 for 2027-W01 (10).
Monthly (ages 91-180 = 2026-08-08..2026-11-05): 08-30, 09-27, 10-25 (the Sunday of W43:
W44 ends on 11-01, so it held October's 10-26..31), 11-01 for November (4).
Nothing older (2026-08-07 and before: older than 6 months).
45 backups.`},
	}
	days := make([]int, len(cases))
	for i, c := range cases {
		days[i] = c.day
	}
	got := simDaily(t, days...)
	for _, c := range cases {
		t.Run(fmt.Sprint("day", c.day), func(t *testing.T) {
			var b strings.Builder
			for _, line := range strings.Split(c.rule, "\n") {
				b.WriteString("# " + line + "\n")
			}
			for _, v := range got[c.day] {
				fmt.Fprintf(&b, "%s\t%s\n", v.ID, v.Reason)
			}
			path := filepath.Join("testdata", fmt.Sprintf("retain_day%03d.golden", c.day))
			if *update {
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestRetainGolden400Days -update and review the diff)", err)
			}
			if b.String() != string(want) {
				t.Fatalf("survivors of day %d differ from %s:\n got:\n%s\nwant:\n%s", c.day, path, b.String(), want)
			}
		})
	}
}

func TestRetainTable(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, paris)
	ago := func(days int) time.Time { return now.AddDate(0, 0, -days).Add(-10 * time.Hour) } // 02:00 Paris, days ago
	done := func(id string, days int) api.Backup {
		return api.Backup{ID: id, AddonID: "a-1", Kind: api.BackupPeriodic, Status: api.BackupDone, CreatedAt: ago(days)}
	}
	with := func(b api.Backup, f func(*api.Backup)) api.Backup { f(&b); return b }
	cases := []struct {
		name    string
		backups []api.Backup
		want    []Verdict
	}{
		{"daily", []api.Backup{done("today", 0), done("d1", 1), done("d30", 30), done("new", 0)}, []Verdict{
			{"d30", true, "daily, 30 days old"}, {"d1", true, "daily, 1 day old"}, {"new", true, "daily, 0 days old"}, {"today", true, "daily, 0 days old"}}},
		{"weekly: newest of the ISO week", []api.Backup{done("mon", 42), done("wed", 40), done("sun", 36), done("d0", 0)}, []Verdict{
			// now is Monday 2026-12-07; 36-42 days ago is Sunday 11-01 back to Monday 10-26: 2026-W44.
			{"mon", false, "weekly 2026-W44 keeps a newer backup"}, {"wed", false, "weekly 2026-W44 keeps a newer backup"},
			{"sun", true, "weekly 2026-W44"}, {"d0", true, "daily, 0 days old"}}},
		{"monthly: newest of the month", []api.Backup{done("jul5", 155), done("jul26", 134), done("d0", 0)}, []Verdict{
			{"jul5", false, "monthly 2026-07 keeps a newer backup"}, {"jul26", true, "monthly 2026-07"}, {"d0", true, "daily, 0 days old"}}},
		{"older than 6 months", []api.Backup{done("old", 181), done("d0", 0)}, []Verdict{
			{"old", false, "older than 6 months"}, {"d0", true, "daily, 0 days old"}}},
		{"newest good backup is kept whatever its age", []api.Backup{done("old", 400), done("older", 401)}, []Verdict{
			{"older", false, "older than 6 months"}, {"old", true, "newest good backup"}}},
		{"a refused drill is not the newest good one", []api.Backup{done("good", 200), with(done("bad", 100), func(b *api.Backup) { b.Verified = "not verified: 10 keys, want 12" }), done("d0", 0)}, []Verdict{
			{"good", false, "older than 6 months"}, {"bad", false, `not verified, 100 days old, past the daily 30 days`}, {"d0", true, "daily, 0 days old"}}},
		{"... and alone, the older good one stays", []api.Backup{done("good", 200), with(done("bad", 100), func(b *api.Backup) { b.Verified = "not verified: 10 keys, want 12" })}, []Verdict{
			{"good", true, "newest good backup"}, {"bad", false, `not verified, 100 days old, past the daily 30 days`}}},
		{"failed backups are kept 7 days", []api.Backup{with(done("f7", 7), func(b *api.Backup) { b.Status = api.BackupError }), with(done("f8", 8), func(b *api.Backup) { b.Status = api.BackupError }), done("d0", 0)}, []Verdict{
			{"f8", false, "failed, 8 days old (failed backups are kept 7 days)"}, {"f7", true, "failed, 7 days old (kept 7 days)"}, {"d0", true, "daily, 0 days old"}}},
		{"pinned manual and running", []api.Backup{with(done("pin", 300), func(b *api.Backup) { b.Kind, b.Pinned = api.BackupManual, true }), with(done("run", 200), func(b *api.Backup) { b.Status = api.BackupRunning }), done("d0", 0)}, []Verdict{
			{"pin", true, "pinned"}, {"run", true, "running"}, {"d0", true, "daily, 0 days old"}}},
		{"manual follow the rules", []api.Backup{with(done("man", 36), func(b *api.Backup) { b.Kind = api.BackupManual }), done("per", 37), done("d0", 0)}, []Verdict{
			{"per", false, "weekly 2026-W44 keeps a newer backup"}, {"man", true, "weekly 2026-W44"}, {"d0", true, "daily, 0 days old"}}},
		{"deleted records get no verdict", []api.Backup{with(done("gone", 3), func(b *api.Backup) { b.Deleted = true }), done("d0", 0)}, []Verdict{
			{"d0", true, "daily, 0 days old"}}},
		{"addons apart", []api.Backup{with(done("b-old", 300), func(b *api.Backup) { b.AddonID = "b-1" }), done("a-old", 300), done("a-new", 1)}, []Verdict{
			{"a-old", false, "older than 6 months"}, {"a-new", true, "daily, 1 day old"}, {"b-old", true, "newest good backup"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Retain(now, paris, c.backups); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}

// Within 30×24 h a backup is kept even when the DST change makes it 31
// calendar days old.
func TestRetainThirtyDaysAcrossDST(t *testing.T) {
	created := time.Date(2026, 3, 1, 23, 30, 0, 0, paris)
	now := created.Add(30*24*time.Hour - time.Minute) // 2026-04-01 00:29 CEST: 31 calendar days later
	if a := ageDays(now, created, paris); a != 31 {
		t.Fatalf("fixture: age %d", a)
	}
	b := api.Backup{ID: "x", AddonID: "a-1", Status: api.BackupDone, CreatedAt: created}
	other := api.Backup{ID: "y", AddonID: "a-1", Status: api.BackupDone, CreatedAt: now}
	if v := Retain(now, paris, []api.Backup{b, other}); !v[0].Keep {
		t.Fatalf("verdict %+v", v[0])
	}
}

func TestForget(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	bs := []api.Backup{
		{ID: "b", Deleted: true, DeletedAt: now.Add(-api.DeletedBackupKept)},
		{ID: "a", Deleted: true, DeletedAt: now.Add(-api.DeletedBackupKept - time.Hour)},
		{ID: "c", Deleted: true, DeletedAt: now.Add(-api.DeletedBackupKept + time.Second)},
		{ID: "d", DeletedAt: now.Add(-365 * 24 * time.Hour)},
	}
	if got := Forget(now, bs); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("Forget = %v", got)
	}
}

// Retention over a fleet of 1,000 addons with 45 backups each.
func BenchmarkRetain(b *testing.B) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, paris)
	var backups []api.Backup
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("app%d-1000", i)
		for d := 0; d < 45; d++ {
			backups = append(backups, api.Backup{ID: fmt.Sprintf("%s-%d", id, d), AddonID: id, Status: api.BackupDone, CreatedAt: now.AddDate(0, 0, -d*4)})
		}
	}
	b.ResetTimer()
	for range b.N {
		Retain(now, paris, backups)
	}
}
