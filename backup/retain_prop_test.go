package backup

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// checkRetain asserts the invariants of one Retain answer: one verdict per
// live backup, each with a reason; each addon's newest good backup kept; no
// backup younger than 30 days deleted, except failed ones past 7 days;
// pinned and running ones kept; nothing else older than 180 days kept; at
// most one weekly keep per ISO week and one monthly per month; and applying
// Retain again to what it kept keeps it all.
func checkRetain(t *testing.T, now time.Time, bs []api.Backup, vs []Verdict) {
	t.Helper()
	byID := map[string]api.Backup{}
	live := 0
	for _, b := range bs {
		byID[b.ID] = b
		if !b.Deleted {
			live++
		}
	}
	if len(vs) != live {
		t.Fatalf("%d verdicts for %d live backups", len(vs), live)
	}
	verdict := map[string]Verdict{}
	for _, v := range vs {
		b, ok := byID[v.ID]
		switch {
		case !ok || b.Deleted:
			t.Fatalf("verdict for %q, not a live backup", v.ID)
		case verdict[v.ID] != (Verdict{}):
			t.Fatalf("two verdicts for %s", v.ID)
		case v.Reason == "":
			t.Fatalf("verdict without a reason: %+v", v)
		}
		verdict[v.ID] = v
	}
	newest := map[string]api.Backup{}
	for _, b := range bs {
		if n, ok := newest[b.AddonID]; b.Good() && (!ok || older(n, b)) {
			newest[b.AddonID] = b
		}
	}
	for a, n := range newest {
		if v := verdict[n.ID]; !v.Keep {
			t.Fatalf("addon %s: newest good backup %s deleted: %s", a, n.ID, v.Reason)
		}
	}
	buckets := map[string]string{}
	var kept []api.Backup
	for _, b := range bs {
		if b.Deleted {
			continue
		}
		v := verdict[b.ID]
		age := ageDays(now, b.CreatedAt, paris)
		young := age <= DailyDays || now.Sub(b.CreatedAt) < 30*24*time.Hour
		switch {
		case b.Pinned || b.Status == api.BackupRunning:
			if !v.Keep {
				t.Fatalf("%s (pinned %v, %s) deleted: %s", b.ID, b.Pinned, b.Status, v.Reason)
			}
		case b.Status == api.BackupError:
			if v.Keep != (age <= FailedDays) {
				t.Fatalf("failed %s, %d days old: keep=%v (%s)", b.ID, age, v.Keep, v.Reason)
			}
		case young && !v.Keep:
			t.Fatalf("%s, %d days old (%s), deleted: %s", b.ID, age, now.Sub(b.CreatedAt), v.Reason)
		case age > MonthlyDays && v.Keep && newest[b.AddonID].ID != b.ID:
			t.Fatalf("%s, %d days old, kept: %s", b.ID, age, v.Reason)
		}
		if v.Keep && (strings.HasPrefix(v.Reason, "weekly ") || strings.HasPrefix(v.Reason, "monthly ")) {
			k := b.AddonID + " " + v.Reason
			if other, dup := buckets[k]; dup {
				t.Fatalf("%s and %s both kept as %q", other, b.ID, v.Reason)
			}
			buckets[k] = b.ID
		}
		if v.Keep {
			kept = append(kept, b)
		}
	}
	for _, v := range Retain(now, paris, kept) {
		if !v.Keep {
			t.Fatalf("not stable: %s kept, then deleted on a second pass: %s", v.ID, v.Reason)
		}
	}
}

// Random sets: random ages up to 400 days (and a few from a clock an hour
// ahead), failures, refused drills, manual and pinned backups, deleted
// records, several addons.
func TestRetainPropertiesRandomSets(t *testing.T) {
	rng := rand.New(rand.NewSource(20261207))
	for iter := 0; iter < 3000; iter++ {
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, paris).Add(time.Duration(rng.Int63n(int64(700 * 24 * time.Hour))))
		var bs []api.Backup
		for a := 0; a < 1+rng.Intn(3); a++ {
			addon := fmt.Sprintf("app%d-1000", a)
			for i := 0; i < rng.Intn(80); i++ {
				b := api.Backup{
					ID: fmt.Sprintf("%s-%d", addon, i), AddonID: addon, Kind: api.BackupPeriodic, Status: api.BackupDone,
					CreatedAt: now.Add(time.Hour - time.Duration(rng.Int63n(int64(400*24*time.Hour)))),
				}
				switch r := rng.Intn(100); {
				case r < 12:
					b.Status = api.BackupError
				case r < 16:
					b.Status = api.BackupRunning
				case r < 24:
					b.Verified = "not verified: key count differs"
				case r < 60:
					b.Verified = "verified: 100 keys"
				}
				if rng.Intn(5) == 0 {
					b.Kind = api.BackupManual
					b.Pinned = rng.Intn(3) == 0
				}
				b.Deleted = rng.Intn(20) == 0
				if rng.Intn(10) == 0 && len(bs) > 0 {
					b.CreatedAt = bs[len(bs)-1].CreatedAt // ties are broken by id
				}
				bs = append(bs, b)
			}
		}
		rng.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
		vs := Retain(now, paris, bs)
		checkRetain(t, now, bs, vs)
		if !sort.SliceIsSorted(vs, func(i, j int) bool {
			a, b := byIDOf(bs, vs[i].ID), byIDOf(bs, vs[j].ID)
			return a.AddonID < b.AddonID || a.AddonID == b.AddonID && older(a, b)
		}) {
			t.Fatalf("verdicts not ordered by addon, CreatedAt, id")
		}
	}
}

func byIDOf(bs []api.Backup, id string) api.Backup {
	for _, b := range bs {
		if b.ID == id {
			return b
		}
	}
	return api.Backup{}
}

// 400 days as the leader lives them, with random failures (retried the
// same day, or not), refused drills, manual and pinned backups, and
// retention applied daily at a random hour to the survivors: the
// invariants hold every day, and every ISO week aged 31–90 days that had a
// good backup in that age range still has one.
func TestRetainPropertiesDailyWithFailures(t *testing.T) {
	s := Schedule{}
	for seed := int64(1); seed <= 6; seed++ {
		rng := rand.New(rand.NewSource(seed))
		const addon = "my-app-3030"
		first := time.Date(2026, 1, 1, 0, 0, 0, 0, paris)
		var alive []api.Backup
		everGood := map[string]time.Time{} // ISO week → a good backup's creation time, ever
		for n := 1; n <= 400; n++ {
			dayStart := first.AddDate(0, 0, n-1)
			day := dayStart.Format(DayLayout)
			b := api.Backup{ID: PeriodicID(addon, day), AddonID: addon, Kind: api.BackupPeriodic, Day: day, Seq: n,
				CreatedAt: s.StartAt(addon, day), Status: api.BackupDone}
			switch r := rng.Intn(100); {
			case r < 15:
				b.Status = api.BackupError // failed all day
			case r < 20:
				b.Verified = "not verified: sample keys differ"
			case r < 30:
				b.Attempts, b.CreatedAt = 2, b.CreatedAt.Add(s.RetryEvery+DefaultRetryEvery) // a retry succeeded
			}
			alive = append(alive, b)
			if b.Good() {
				everGood[weekOf(b.CreatedAt, paris)] = b.CreatedAt
			}
			if rng.Intn(8) == 0 {
				at := dayStart.Add(time.Duration(8+rng.Intn(12)) * time.Hour)
				alive = append(alive, api.Backup{ID: ManualID(addon, at), AddonID: addon, Kind: api.BackupManual, CreatedAt: at,
					Status: api.BackupDone, Pinned: rng.Intn(4) == 0})
			}
			now := dayStart.Add(time.Duration(2+rng.Intn(22))*time.Hour + time.Duration(rng.Intn(60))*time.Minute)
			vs := Retain(now, paris, alive)
			checkRetain(t, now, alive, vs)
			keep := map[string]bool{}
			for _, v := range vs {
				keep[v.ID] = v.Keep
			}
			next := alive[:0]
			for _, b := range alive {
				if keep[b.ID] {
					next = append(next, b)
				}
			}
			alive = next
			// Weekly coverage.
			have := map[string]bool{}
			for _, b := range alive {
				if age := ageDays(now, b.CreatedAt, paris); b.Good() && age > DailyDays && age <= WeeklyDays {
					have[weekOf(b.CreatedAt, paris)] = true
				}
			}
			for w, at := range everGood {
				if age := ageDays(now, at, paris); age > DailyDays && age <= WeeklyDays && !have[w] {
					t.Fatalf("seed %d day %d: week %s had a good backup %d days old, none left", seed, n, w, age)
				}
			}
		}
		t.Logf("seed %d: %d backups left after 400 days", seed, len(alive))
	}
}
