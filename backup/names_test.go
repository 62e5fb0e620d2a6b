package backup

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

var paris = mustLoad("Europe/Paris")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

func TestNames(t *testing.T) {
	// 10:15 in Paris in winter is 09:15 UTC: names are in UTC.
	created := time.Date(2026, 12, 7, 10, 15, 0, 0, paris)
	cases := []struct {
		name, got, want string
	}{
		{"periodic id", PeriodicID("my-app-3030", "2026-12-07"), "my-app-3030-20261207"},
		{"manual id in UTC", ManualID("my-app-3030", created), "my-app-3030-m20261207T091500Z"},
		{"store key", StoreKey(api.Backup{ID: "my-app-3030-20261207", AddonID: "my-app-3030"}), "my-app-3030/my-app-3030-20261207.tar.gz.age"},
		{"download name, UTC", DownloadName(api.Backup{App: "my-app", Seq: 12, CreatedAt: created}), "20261207091500_my-app_12.tar.gz"},
		{"download name, summer", DownloadName(api.Backup{App: "my-app", Seq: 1, CreatedAt: time.Date(2026, 7, 1, 1, 30, 5, 0, paris)}), "20260630233005_my-app_1.tar.gz"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Fatalf("got %q, want %q", c.got, c.want)
			}
		})
	}
}

func TestBackupIDsValidate(t *testing.T) {
	cases := []struct {
		id string
		ok bool
	}{
		{"my-app-3030-20261207", true},
		{"my-app-3030-m20261207T091500Z", true},
		{PeriodicID("b-1", "2026-01-02"), true},
		{"", false},
		{"my-app-3030", false},
		{"my-app-3030-2026120", false},
		{"my-app-3030-m20261207T0915Z", false},
		{"My-app-3030-20261207", false},
		{"my--app-3030-20261207", false},
		{"../etc-20261207", false},
		{"my-app/3030-20261207", false},
		{"-20261207", false},
		{strings.Repeat("a", 64) + "-20261207", false},
		{strings.Repeat("a", 63) + "-20261207", true},
	}
	for _, c := range cases {
		err := api.ValidateBackupID(c.id)
		if (err == nil) != c.ok {
			t.Errorf("ValidateBackupID(%q) = %v, want ok=%v", c.id, err, c.ok)
		}
		if err != nil && !errors.Is(err, api.ErrInvalid) {
			t.Errorf("ValidateBackupID(%q) = %v, not an ErrInvalid", c.id, err)
		}
	}
	for id, ok := range map[string]bool{"my-app-3030": true, "b-1": true, "": false, "a/b": false, "..": false, "a..b": false, "a-": false, "A-1": false} {
		if err := api.ValidateAddonID(id); (err == nil) != ok {
			t.Errorf("ValidateAddonID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestValidateRecord(t *testing.T) {
	good := api.Backup{ID: "my-app-3030-20261207", AddonID: "my-app-3030", App: "my-app", Kind: api.BackupPeriodic, Day: "2026-12-07", Seq: 3}
	manual := api.Backup{ID: ManualID("my-app-3030", time.Date(2026, 12, 7, 9, 15, 0, 0, time.UTC)), AddonID: "my-app-3030", App: "my-app", Kind: api.BackupManual, Seq: 4, Pinned: true}
	cases := []struct {
		name string
		edit func(*api.Backup)
		base api.Backup
		want string // "" = valid
	}{
		{"periodic", func(*api.Backup) {}, good, ""},
		{"periodic with its store key", func(b *api.Backup) { b.StoreKey = StoreKey(*b) }, good, ""},
		{"manual pinned", func(*api.Backup) {}, manual, ""},
		{"bad addon id", func(b *api.Backup) { b.AddonID = "My/App" }, good, "addon id"},
		{"bad app", func(b *api.Backup) { b.App = "x" }, good, "app name"},
		{"id of another day", func(b *api.Backup) { b.Day = "2026-12-08" }, good, "its id must be my-app-3030-20261208"},
		{"id of another addon", func(b *api.Backup) { b.AddonID = "my-app-3031" }, good, "its id must be"},
		{"malformed day", func(b *api.Backup) { b.Day = "07/12/2026" }, good, "not YYYY-MM-DD"},
		{"pinned periodic", func(b *api.Backup) { b.Pinned = true }, good, "only manual"},
		{"manual with a day", func(b *api.Backup) { b.Day = "2026-12-07" }, manual, "only periodic"},
		{"manual named periodic", func(b *api.Backup) { b.ID = good.ID }, manual, "-mYYYYMMDDThhmmssZ"},
		{"no kind", func(b *api.Backup) { b.Kind = "" }, good, "kind"},
		{"no seq", func(b *api.Backup) { b.Seq = 0 }, good, "seq 0"},
		{"foreign store key", func(b *api.Backup) { b.StoreKey = "other/x.tar.gz.age" }, good, "store key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.base
			c.edit(&b)
			err := Validate(b)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, api.ErrInvalid)):
				t.Fatalf("Validate = %v, want an ErrInvalid saying %q", err, c.want)
			}
		})
	}
}

func TestGood(t *testing.T) {
	cases := []struct {
		name string
		b    api.Backup
		want bool
	}{
		{"done, not drilled yet", api.Backup{Status: api.BackupDone}, true},
		{"done, verified", api.Backup{Status: api.BackupDone, Verified: "verified: 50000 keys"}, true},
		{"done, drill refused", api.Backup{Status: api.BackupDone, Verified: "not verified: 49990 keys, want 50000"}, false},
		{"done, deleted", api.Backup{Status: api.BackupDone, Deleted: true}, false},
		{"running", api.Backup{Status: api.BackupRunning}, false},
		{"error", api.Backup{Status: api.BackupError}, false},
	}
	for _, c := range cases {
		if got := c.b.Good(); got != c.want {
			t.Errorf("%s: Good() = %v, want %v", c.name, got, c.want)
		}
	}
}

// The wire names are snake_case and the ones other packages read.
func TestBackupJSON(t *testing.T) {
	b := api.Backup{ID: "x-1-20261207", AddonID: "x-1", App: "xyz", Kind: api.BackupPeriodic, Day: "2026-12-07", Seq: 1,
		CreatedAt: time.Unix(0, 0).UTC(), FinishedAt: time.Unix(3, 0).UTC(),
		Status: api.BackupError, Reason: "r", Attempts: 2, NextAttempt: time.Unix(1, 0).UTC(), MemberID: "m", HostID: "h",
		SizeBytes: 5, Checksum: "c", StoreKey: "k", KeyID: "key1", Keys: 9, Verified: "verified: ok", Pinned: true,
		Deleted: true, DeletedAt: time.Unix(2, 0).UTC(), DeletedReason: "older than 6 months"}
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "addon_id", "app", "kind", "day", "seq", "created_at", "finished_at", "status", "reason", "attempts",
		"next_attempt", "member_id", "host_id", "size_bytes", "checksum", "store_key", "key_id", "keys", "verified", "pinned",
		"deleted", "deleted_at", "deleted_reason"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing from %s", k, raw)
		}
	}
	var back api.Backup
	if err := json.Unmarshal(raw, &back); err != nil || back != b {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, back, b)
	}
}
