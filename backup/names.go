package backup

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cacheplane/cacheplane/api"
)

// DayLayout is the layout of api.Backup.Day and of the day arguments here.
const DayLayout = "2006-01-02"

// StoreSuffix ends every store key: a gzipped tar, age-encrypted.
const StoreSuffix = ".tar.gz.age"

// PeriodicID is the id of addonID's periodic backup of day ("2026-12-07"):
// my-app-3030-20261207. It is the same whoever asks and however often, so a
// retry or a new leader finds the record instead of making a second one.
func PeriodicID(addonID, day string) string {
	return addonID + "-" + strings.ReplaceAll(day, "-", "")
}

// ManualID is the id of a manual backup of addonID asked for at now, to the
// second in UTC: my-app-3030-m20261207T101500Z. Two manual backups of one
// addon asked for within the same second get the same id; the coordinator
// answers the second with the first (a double click is one backup).
func ManualID(addonID string, now time.Time) string {
	return addonID + "-m" + now.UTC().Format("20060102T150405Z")
}

// StoreKey is where b's object lives in the backup store:
// <addon id>/<id>.tar.gz.age. It is only meaningful for a record that passes
// Validate (ids never hold a '/' or "..").
func StoreKey(b api.Backup) string {
	return b.AddonID + "/" + b.ID + StoreSuffix
}

// DownloadName is the file name `backups-download` writes:
// <YYYYMMDDhhmmss>_<app>_<n>.tar.gz, with b.CreatedAt in UTC and n = b.Seq
// (the download is decrypted, hence no .age).
func DownloadName(b api.Backup) string {
	return b.CreatedAt.UTC().Format("20060102150405") + "_" + b.App + "_" + strconv.Itoa(b.Seq) + ".tar.gz"
}

// Validate checks the names of a record before the coordinator commits it:
// a valid addon id and app name, an id of the right form for its kind
// (periodic: PeriodicID of its Day; manual: <addon id>-m..., no Day), a
// positive Seq, a store key, if set, equal to StoreKey, and only manual
// backups pinned. Errors wrap api.ErrInvalid.
func Validate(b api.Backup) error {
	if err := api.ValidateAddonID(b.AddonID); err != nil {
		return fmt.Errorf("backup %q: %w", b.ID, err)
	}
	if err := api.ValidateAppName(b.App); err != nil {
		return fmt.Errorf("backup %q: %w", b.ID, err)
	}
	if err := api.ValidateBackupID(b.ID); err != nil {
		return err
	}
	switch b.Kind {
	case api.BackupPeriodic:
		if _, err := time.Parse(DayLayout, b.Day); err != nil {
			return api.Invalidf("periodic backup %q: day %q is not YYYY-MM-DD", b.ID, b.Day)
		}
		if want := PeriodicID(b.AddonID, b.Day); b.ID != want {
			return api.Invalidf("periodic backup %q of addon %s for %s: its id must be %s", b.ID, b.AddonID, b.Day, want)
		}
		if b.Pinned {
			return api.Invalidf("backup %q: only manual backups can be pinned", b.ID)
		}
	case api.BackupManual:
		if b.Day != "" {
			return api.Invalidf("manual backup %q has a day (%s): only periodic backups are for a day", b.ID, b.Day)
		}
		if !strings.HasPrefix(b.ID, b.AddonID+"-m") {
			return api.Invalidf("manual backup %q: its id must be %s-mYYYYMMDDThhmmssZ", b.ID, b.AddonID)
		}
	default:
		return api.Invalidf("backup %q: kind %q is neither %q nor %q", b.ID, b.Kind, api.BackupPeriodic, api.BackupManual)
	}
	if b.Seq < 1 {
		return api.Invalidf("backup %q: seq %d, want 1 or more", b.ID, b.Seq)
	}
	if b.StoreKey != "" && b.StoreKey != StoreKey(b) {
		return api.Invalidf("backup %q: store key %q, want %q", b.ID, b.StoreKey, StoreKey(b))
	}
	return nil
}
