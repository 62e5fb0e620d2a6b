package backup

import (
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// leader plays the coordinator's leader against Due with an injected clock:
// at each tick it commits Due's starts as running records (assigning Seq),
// and ends each dump dumpTime after it started, done or failed as outcome
// says.
type leader struct {
	t        *testing.T
	s        Schedule
	addons   []Candidate
	records  map[string]api.Backup
	started  []api.Backup // every start, in order
	waits    []Wait       // the last tick's waits
	seq      int
	dumpTime time.Duration
	outcome  func(b api.Backup) error // nil: every dump succeeds
}

func newLeader(t *testing.T, s Schedule, addons ...Candidate) *leader {
	return &leader{t: t, s: s, addons: addons, records: map[string]api.Backup{}, dumpTime: 4 * time.Minute}
}

func (l *leader) list() []api.Backup {
	out := make([]api.Backup, 0, len(l.records))
	for _, b := range l.records {
		out = append(out, b)
	}
	return out
}

func (l *leader) tick(now time.Time) []Start {
	l.t.Helper()
	// Dumps that ran their time end first.
	for id, b := range l.records {
		if b.Status == api.BackupRunning && !now.Before(b.CreatedAt.Add(l.dumpTime)) {
			var err error
			if l.outcome != nil {
				err = l.outcome(b)
			}
			if err != nil {
				l.records[id] = l.s.Failed(b, now, err.Error())
				continue
			}
			b.Status, b.FinishedAt = api.BackupDone, now
			l.records[id] = b
		}
	}
	starts, waits := Due(now, l.s, l.addons, l.list())
	l.waits = waits
	for _, st := range starts {
		b := st.Backup
		if prev, ok := l.records[b.ID]; ok && prev.Status != api.BackupError {
			l.t.Fatalf("%v: Due started %s again while it is %s", now, b.ID, prev.Status)
		}
		if b.Seq == 0 {
			l.seq++
			b.Seq = l.seq
		}
		if err := Validate(b); err != nil {
			l.t.Fatalf("%v: Due started an invalid record: %v", now, err)
		}
		l.records[b.ID] = b
		l.started = append(l.started, b)
	}
	return starts
}

func (l *leader) run(from, to time.Time, step time.Duration) {
	for now := from; now.Before(to); now = now.Add(step) {
		l.tick(now)
	}
}

// One backup per addon per day, at its StartAt (01:00 Paris plus the
// addon's offset), through both DST changes of 2026.
func TestOneBackupPerAddonPerDayAcrossDST(t *testing.T) {
	addons := []Candidate{
		{AddonID: "my-app-3030", App: "my-app", Backups: true, HostID: "h1"},
		{AddonID: "shop-1234", App: "shop", Backups: true, HostID: "h2"},
		{AddonID: "blog-9999", App: "blog", Backups: true, HostID: "h1"},
		{AddonID: "nobackup-1000", App: "nobackup", Backups: false, HostID: "h1"},
	}
	for _, period := range []struct{ from, to string }{{"2026-03-26", "2026-04-01"}, {"2026-10-22", "2026-10-28"}} {
		t.Run(period.from, func(t *testing.T) {
			s := Schedule{}
			l := newLeader(t, s, addons...)
			from, _ := time.ParseInLocation(DayLayout, period.from, paris)
			to, _ := time.ParseInLocation(DayLayout, period.to, paris)
			l.run(from, to, time.Minute)

			var days []string
			for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
				days = append(days, d.Format(DayLayout))
			}
			if len(l.started) != 3*len(days) {
				t.Fatalf("%d starts over %d days for 3 addons, want %d: %v", len(l.started), len(days), 3*len(days), ids(l.started))
			}
			seen := map[string]bool{}
			for _, b := range l.started {
				if seen[b.ID] {
					t.Fatalf("%s started twice", b.ID)
				}
				seen[b.ID] = true
				want := s.StartAt(b.AddonID, b.Day)
				if b.ID != PeriodicID(b.AddonID, b.Day) || b.Attempts != 1 || b.Kind != api.BackupPeriodic {
					t.Fatalf("start %+v", b)
				}
				// Started at the first tick at or after StartAt.
				if d := b.CreatedAt.Sub(want); d < 0 || d >= time.Minute {
					t.Fatalf("%s started at %v, due at %v", b.ID, b.CreatedAt.In(paris), want.In(paris))
				}
				// StartAt is 01:00 Paris wall clock plus the offset.
				start, _ := time.ParseInLocation(DayLayout, b.Day, paris)
				run := time.Date(start.Year(), start.Month(), start.Day(), 1, 0, 0, 0, paris)
				if !want.Equal(run.Add(Offset(b.AddonID, DefaultWindow))) {
					t.Fatalf("%s due at %v, want 01:00 Paris + %s", b.ID, want.In(paris), Offset(b.AddonID, DefaultWindow))
				}
			}
			for _, d := range days {
				for _, a := range addons[:3] {
					if !seen[PeriodicID(a.AddonID, d)] {
						t.Fatalf("no backup of %s on %s", a.AddonID, d)
					}
				}
			}
			t.Logf("%d backups, e.g. %s at %s Paris", len(l.started), l.started[0].ID, l.started[0].CreatedAt.In(paris).Format("2006-01-02 15:04 MST"))
		})
	}
}

// A dump that fails at 01:00 is retried RetryEvery later under the same ID,
// and the retry that succeeds is the day's only backup.
func TestFailureRetriedUnderTheSameID(t *testing.T) {
	s := Schedule{Window: time.Second, RetryEvery: 10 * time.Minute} // offset 0: due at 01:00 sharp
	l := newLeader(t, s, Candidate{AddonID: "my-app-3030", App: "my-app", Backups: true, HostID: "h1"})
	l.dumpTime = time.Minute
	l.outcome = func(b api.Backup) error {
		if b.Attempts == 1 {
			return fmt.Errorf("BGSAVE on my-app-3030-redis-1: MISCONF disk full")
		}
		return nil
	}
	at := func(h, m int) time.Time { return time.Date(2026, 12, 7, h, m, 0, 0, paris) }

	if st := l.tick(at(0, 59)); len(st) != 0 {
		t.Fatalf("started before 01:00: %+v", st)
	}
	st := l.tick(at(1, 0))
	if len(st) != 1 || st[0].Backup.ID != "my-app-3030-20261207" || st[0].Backup.Attempts != 1 {
		t.Fatalf("at 01:00: %+v", st)
	}
	// Fails at 01:01; not retried before 01:11.
	for m := 1; m < 11; m++ {
		if st := l.tick(at(1, m)); len(st) != 0 {
			t.Fatalf("retried at 01:%02d, before RetryEvery: %+v", m, st)
		}
	}
	failed := l.records["my-app-3030-20261207"]
	if failed.Status != api.BackupError || !strings.Contains(failed.Reason, "MISCONF") || !failed.NextAttempt.Equal(at(1, 11)) {
		t.Fatalf("failed record %+v", failed)
	}
	st = l.tick(at(1, 11))
	if len(st) != 1 {
		t.Fatalf("not retried at 01:11")
	}
	retry := st[0].Backup
	if retry.ID != failed.ID || retry.Attempts != 2 || retry.Seq != failed.Seq || !retry.CreatedAt.Equal(at(1, 11)) || retry.Reason != "" {
		t.Fatalf("retry %+v of %+v: same id and seq, attempt 2, new start time", retry, failed)
	}
	l.run(at(1, 12), at(23, 59), time.Minute)
	if got := l.records[failed.ID]; got.Status != api.BackupDone || len(l.started) != 2 || len(l.records) != 1 {
		t.Fatalf("after the retry: %+v, %d starts, %d records", got, len(l.started), len(l.records))
	}
}

// A new leader calls Due with the running record it inherited: nothing
// starts, at once or later that day; a done record is not taken again.
func TestLeaderChangeAdoptsTheRunningBackup(t *testing.T) {
	s := Schedule{}
	c := Candidate{AddonID: "my-app-3030", App: "my-app", Backups: true, HostID: "h1"}
	due := s.StartAt(c.AddonID, "2026-12-07")
	starts, _ := Due(due, s, []Candidate{c}, nil)
	if len(starts) != 1 {
		t.Fatalf("at StartAt: %+v", starts)
	}
	running := starts[0].Backup
	running.Seq = 1
	for _, later := range []time.Duration{0, time.Second, 30 * time.Minute, 6 * time.Hour} {
		if st, w := Due(due.Add(later), s, []Candidate{c}, []api.Backup{running}); len(st) != 0 || len(w) != 0 {
			t.Fatalf("new leader %s later: starts %+v waits %+v", later, st, w)
		}
	}
	done := running
	done.Status = api.BackupDone
	if st, _ := Due(due.Add(time.Hour), s, []Candidate{c}, []api.Backup{done}); len(st) != 0 {
		t.Fatalf("done backup taken again: %+v", st)
	}
}

func TestPerHostBound(t *testing.T) {
	s := Schedule{Window: time.Second, PerHost: 2}
	now := time.Date(2026, 12, 7, 1, 0, 0, 0, paris)
	var addons []Candidate
	for i := 0; i < 5; i++ {
		addons = append(addons, Candidate{AddonID: fmt.Sprintf("app%d-1000", i), App: fmt.Sprintf("app%d", i), Backups: true, HostID: "h1"})
	}
	addons = append(addons, Candidate{AddonID: "other-1000", App: "other", Backups: true, HostID: "h2"})
	manual := api.Backup{ID: ManualID("zzz-1000", now.Add(-time.Minute)), AddonID: "zzz-1000", Kind: api.BackupManual, Status: api.BackupRunning, HostID: "h1"}

	starts, waits := Due(now, s, addons, []api.Backup{manual})
	if got := startIDs(starts); !reflect.DeepEqual(got, []string{"app0-1000-20261207", "other-1000-20261207"}) {
		t.Fatalf("starts %v: h1 runs a manual dump, so one more there, and h2's", got)
	}
	if len(waits) != 4 {
		t.Fatalf("waits %+v", waits)
	}
	for _, w := range waits {
		if w.Why != "host h1 already runs 2 dumps (at most 2 at a time)" {
			t.Fatalf("wait %+v", w)
		}
	}
	// The manual dump ends: two more on h1, one still waits.
	manual.Status = api.BackupDone
	var backups []api.Backup
	for _, st := range starts {
		backups = append(backups, st.Backup)
	}
	backups = append(backups, manual)
	later := now.Add(time.Minute)
	starts, waits = Due(later, s, addons, backups)
	if got := startIDs(starts); !reflect.DeepEqual(got, []string{"app1-1000-20261207"}) || len(waits) != 3 {
		t.Fatalf("after the manual dump: starts %v waits %+v (app0 still runs on h1)", got, waits)
	}
}

func TestWaitsSayWhy(t *testing.T) {
	s := Schedule{Window: time.Second}
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, paris)
	addons := []Candidate{
		{AddonID: "busy-1000", App: "busy", Backups: true, Busy: true, HostID: "h1"},
		{AddonID: "busy-2000", App: "busy", Backups: true, Busy: true, HostID: "h1", Why: "upgrade op-42 runs"},
		{AddonID: "sick-1000", App: "sick", Backups: true, Why: "replica sick-1000-redis-1 is not in sync; the primary is never dumped"},
		{AddonID: "nohost-1000", App: "nohost", Backups: true},
		{AddonID: "plain-1000", App: "plain", Backups: false},
		{AddonID: "fine-1000", App: "fine", Backups: true, HostID: "h2"},
	}
	starts, waits := Due(now, s, addons, nil)
	if got := startIDs(starts); !reflect.DeepEqual(got, []string{"fine-1000-20261207"}) {
		t.Fatalf("starts %v", got)
	}
	want := []Wait{
		{AddonID: "busy-1000", ID: "busy-1000-20261207", Why: "another operation runs on the addon"},
		{AddonID: "busy-2000", ID: "busy-2000-20261207", Why: "upgrade op-42 runs"},
		{AddonID: "nohost-1000", ID: "nohost-1000-20261207", Why: "no healthy member to take the dump on"},
		{AddonID: "sick-1000", ID: "sick-1000-20261207", Why: "replica sick-1000-redis-1 is not in sync; the primary is never dumped"},
	}
	if !reflect.DeepEqual(waits, want) {
		t.Fatalf("waits\n got %+v\nwant %+v", waits, want)
	}
	// An addon created after its start time today has no backup today:
	// its first is tomorrow's.
	late := Candidate{AddonID: "late-1000", App: "late", Backups: true, HostID: "h2", CreatedAt: now.Add(-time.Minute)}
	early := late
	early.AddonID, early.CreatedAt = "early-1000", time.Date(2026, 12, 7, 0, 30, 0, 0, paris)
	if starts, waits := Due(now, s, []Candidate{late, early}, nil); len(waits) != 0 || !reflect.DeepEqual(startIDs(starts), []string{"early-1000-20261207"}) {
		t.Fatalf("created before 01:00 and at 08:59: starts %v waits %v; want only the one created before its start time", startIDs(starts), waits)
	}
	if starts, _ := Due(time.Date(2026, 12, 8, 9, 0, 0, 0, paris), s, []Candidate{late}, nil); !reflect.DeepEqual(startIDs(starts), []string{"late-1000-20261208"}) {
		t.Fatalf("the next day: starts %v", startIDs(starts))
	}
	// The busy addon's operation ends: its backup starts the same day.
	addons[0].Busy = false
	if starts, _ := Due(now.Add(3*time.Hour), s, addons, []api.Backup{starts[0].Backup}); len(starts) != 1 || starts[0].Backup.AddonID != "busy-1000" {
		t.Fatalf("after the operation: %+v", starts)
	}
}

// The leader was down all morning: the day's backup is taken when it comes
// back that day; yesterday's missed backup is never taken today.
func TestMissedDays(t *testing.T) {
	s := Schedule{}
	c := Candidate{AddonID: "my-app-3030", App: "my-app", Backups: true, HostID: "h1"}
	failedYesterday := s.Failed(api.Backup{ID: "my-app-3030-20261206", AddonID: c.AddonID, App: c.App, Kind: api.BackupPeriodic,
		Day: "2026-12-06", Seq: 1, Attempts: 3}, time.Date(2026, 12, 6, 22, 0, 0, 0, paris), "agent unreachable")
	cases := []struct {
		name    string
		now     time.Time
		backups []api.Backup
		want    []string
	}{
		{"after midnight, before today's run", time.Date(2026, 12, 7, 0, 30, 0, 0, paris), nil, nil},
		{"after midnight, yesterday failed", time.Date(2026, 12, 7, 0, 30, 0, 0, paris), []api.Backup{failedYesterday}, nil},
		{"back at 23:00", time.Date(2026, 12, 7, 23, 0, 0, 0, paris), []api.Backup{failedYesterday}, []string{"my-app-3030-20261207"}},
		{"back at 23:59:59", time.Date(2026, 12, 7, 23, 59, 59, 0, paris), nil, []string{"my-app-3030-20261207"}},
		{"yesterday late, retry due", time.Date(2026, 12, 6, 22, 10, 0, 0, paris), []api.Backup{failedYesterday}, []string{"my-app-3030-20261206"}},
	}
	for _, c2 := range cases {
		t.Run(c2.name, func(t *testing.T) {
			starts, waits := Due(c2.now, s, []Candidate{c}, c2.backups)
			if got := startIDs(starts); !reflect.DeepEqual(got, c2.want) || len(waits) != 0 {
				t.Fatalf("starts %v waits %+v, want %v", got, waits, c2.want)
			}
		})
	}
}

// A failed record without NextAttempt (written before Failed existed, or by
// hand) is retried RetryEvery after it finished.
func TestRetryWithoutNextAttempt(t *testing.T) {
	s := Schedule{Window: time.Second}
	c := Candidate{AddonID: "my-app-3030", App: "my-app", Backups: true, HostID: "h1"}
	fin := time.Date(2026, 12, 7, 2, 0, 0, 0, paris)
	b := api.Backup{ID: "my-app-3030-20261207", AddonID: c.AddonID, App: c.App, Kind: api.BackupPeriodic, Day: "2026-12-07",
		Seq: 4, Status: api.BackupError, FinishedAt: fin, Attempts: 1}
	if st, _ := Due(fin.Add(9*time.Minute), s, []Candidate{c}, []api.Backup{b}); len(st) != 0 {
		t.Fatalf("retried after 9m: %+v", st)
	}
	if st, _ := Due(fin.Add(10*time.Minute), s, []Candidate{c}, []api.Backup{b}); len(st) != 1 || st[0].Backup.Seq != 4 || st[0].Backup.Attempts != 2 {
		t.Fatalf("not retried after 10m: %+v", st)
	}
}

func TestInvalidScheduleWaitsEveryAddon(t *testing.T) {
	s := Schedule{TZ: "Mars/Olympus"}
	starts, waits := Due(time.Now(), s, []Candidate{{AddonID: "b-1000", Backups: true, HostID: "h"}, {AddonID: "a-1000", Backups: true}, {AddonID: "c-1000"}}, nil)
	if len(starts) != 0 || len(waits) != 2 || waits[0].AddonID != "a-1000" || !strings.Contains(waits[0].Why, `the backup schedule is invalid: backup schedule time zone "Mars/Olympus"`) {
		t.Fatalf("starts %+v waits %+v", starts, waits)
	}
}

// Due's answer does not depend on the order of its inputs, and comes
// ordered by StartAt, then addon id.
func TestDueIsDeterministic(t *testing.T) {
	s := Schedule{PerHost: 3}
	var addons []Candidate
	var backups []api.Backup
	for i := 0; i < 40; i++ {
		addons = append(addons, Candidate{AddonID: fmt.Sprintf("app%02d-1000", i), App: fmt.Sprintf("app%02d", i), Backups: i%7 != 0, Busy: i%11 == 0, HostID: fmt.Sprintf("h%d", i%4)})
	}
	now := time.Date(2026, 12, 7, 2, 30, 0, 0, paris)
	for i := 0; i < 40; i += 5 {
		backups = append(backups, api.Backup{ID: PeriodicID(addons[i].AddonID, "2026-12-07"), AddonID: addons[i].AddonID, Kind: api.BackupPeriodic,
			Status: []api.BackupStatus{api.BackupRunning, api.BackupDone, api.BackupError}[i%3], HostID: addons[i].HostID, FinishedAt: now.Add(-time.Hour)})
	}
	wantStarts, wantWaits := Due(now, s, addons, backups)
	if len(wantStarts) == 0 || len(wantWaits) == 0 {
		t.Fatalf("fixture starts %d, waits %d: want both", len(wantStarts), len(wantWaits))
	}
	if !sort.SliceIsSorted(wantStarts, func(i, j int) bool {
		a, b := wantStarts[i].Backup, wantStarts[j].Backup
		sa, sb := s.StartAt(a.AddonID, a.Day), s.StartAt(b.AddonID, b.Day)
		return sa.Before(sb) || sa.Equal(sb) && a.AddonID < b.AddonID
	}) {
		t.Fatalf("starts not ordered by StartAt: %v", startIDs(wantStarts))
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20; i++ {
		rng.Shuffle(len(addons), func(i, j int) { addons[i], addons[j] = addons[j], addons[i] })
		rng.Shuffle(len(backups), func(i, j int) { backups[i], backups[j] = backups[j], backups[i] })
		st, w := Due(now, s, addons, backups)
		if !reflect.DeepEqual(st, wantStarts) || !reflect.DeepEqual(w, wantWaits) {
			t.Fatalf("shuffled inputs changed the answer")
		}
	}
}

func startIDs(starts []Start) []string {
	var out []string
	for _, s := range starts {
		out = append(out, s.Backup.ID)
	}
	return out
}

func ids(bs []api.Backup) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

// A fleet of 1,000 addons with 45 records each, as the leader would call
// Due every few seconds.
func BenchmarkDue(b *testing.B) {
	s := Schedule{}
	now := time.Date(2026, 12, 7, 2, 0, 0, 0, paris)
	var addons []Candidate
	var backups []api.Backup
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("app%d-1000", i)
		addons = append(addons, Candidate{AddonID: id, App: fmt.Sprintf("app%d", i), Backups: true, HostID: fmt.Sprintf("h%d", i%50)})
		for d := 1; d <= 45; d++ {
			day := now.AddDate(0, 0, -d).Format(DayLayout)
			backups = append(backups, api.Backup{ID: PeriodicID(id, day), AddonID: id, Kind: api.BackupPeriodic, Day: day, Status: api.BackupDone})
		}
	}
	b.ResetTimer()
	for range b.N {
		Due(now, s, addons, backups)
	}
}
