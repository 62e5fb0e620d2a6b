package api

import (
	"regexp"
	"strings"
	"time"
)

// BackupStatus is the state of a backup.
type BackupStatus string

// Backup statuses.
const (
	BackupRunning BackupStatus = "running"
	BackupDone    BackupStatus = "done"
	BackupError   BackupStatus = "error"
)

// BackupKind says who asked for a backup.
type BackupKind string

// Backup kinds.
const (
	// BackupPeriodic is the daily backup the leader's schedule takes.
	BackupPeriodic BackupKind = "periodic"
	// BackupManual is a backup an operator asked for (backups-create).
	BackupManual BackupKind = "manual"
)

// Prefixes of Backup.Verified, written by the restore drill.
const (
	VerifiedPrefix    = "verified: "
	NotVerifiedPrefix = "not verified: "
)

// DeletedBackupKept is how long the record of a backup that retention
// deleted stays in the FSM (with Deleted, DeletedAt and DeletedReason) before
// the leader forgets it: long enough for `backups` to say why a backup an
// operator remembers is gone, short enough that the FSM does not grow with
// the age of the fleet. The stored object itself is deleted at once.
const DeletedBackupKept = 30 * 24 * time.Hour

// Backup is the record of one dump of an addon. Names (ID, StoreKey, the
// download name) are made by package backup; the coordinator assigns Seq and
// the times, the agent that runs the dump fills the figures.
type Backup struct {
	ID      string     `json:"id"`
	AddonID string     `json:"addon_id"`
	App     string     `json:"app"`
	Kind    BackupKind `json:"kind"`
	// Day is, for a periodic backup, the calendar day (in the schedule's
	// time zone, Europe/Paris by default) it is for, as "2026-12-07"; ""
	// for a manual one.
	Day string `json:"day,omitempty"`
	// Seq is the n of the download name: 1 for the app's first backup, +1
	// for each next one (assigned by the coordinator, never reused).
	Seq int `json:"seq"`
	// CreatedAt is when the attempt that made the dump started (a retry of
	// a failed periodic backup moves it); FinishedAt when it ended.
	CreatedAt  time.Time    `json:"created_at"`
	FinishedAt time.Time    `json:"finished_at,omitempty"`
	Status     BackupStatus `json:"status"`
	// Reason is why the backup failed (one line), or, while it runs, what
	// it waits for.
	Reason string `json:"reason,omitempty"`
	// Attempts counts the attempts made for this ID (a failed periodic
	// backup is retried the same day under the same ID); NextAttempt is
	// when the next retry may start.
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	MemberID    string    `json:"member_id,omitempty"`
	HostID      string    `json:"host_id,omitempty"`
	SizeBytes   int64     `json:"size_bytes"`
	// Checksum is the SHA-256 (hex) of the stored object, as stored
	// (compressed and encrypted).
	Checksum string `json:"checksum,omitempty"`
	StoreKey string `json:"store_key,omitempty"`
	// KeyID names the encryption key the object was encrypted with.
	KeyID string `json:"key_id,omitempty"`
	// Keys is the member's key count at BGSAVE time.
	Keys int64 `json:"keys"`
	// Verified is the restore drill's outcome: "" (not yet),
	// "verified: ..." or "not verified: why".
	Verified string `json:"verified,omitempty"`
	// Pinned keeps a manual backup whatever its age.
	Pinned bool `json:"pinned,omitempty"`
	// Deleted says retention deleted the stored object; the record stays
	// DeletedBackupKept after DeletedAt, with the reason.
	Deleted       bool      `json:"deleted,omitempty"`
	DeletedAt     time.Time `json:"deleted_at,omitempty"`
	DeletedReason string    `json:"deleted_reason,omitempty"`
}

// Good reports whether b can be restored as far as we know: done, not
// refused by the restore drill (a backup not drilled yet counts as good) and
// not deleted.
func (b Backup) Good() bool {
	return b.Status == BackupDone && !strings.HasPrefix(b.Verified, "not verified") && !b.Deleted
}

// Backup ids are <addon id>-<YYYYMMDD> (periodic) or
// <addon id>-m<YYYYMMDD>T<hhmmss>Z (manual); an addon id is lowercase
// letters, digits and single hyphens, starting with a letter.
var (
	addonIDRe  = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)
	backupIDRe = regexp.MustCompile(`^([a-z][a-z0-9]*(?:-[a-z0-9]+)*)-(?:[0-9]{8}|m[0-9]{8}T[0-9]{6}Z)$`)
)

// MaxAddonIDLen bounds an addon id (an app name is at most 48 characters,
// the id adds "-<n>").
const MaxAddonIDLen = 63

// ValidateAddonID checks an addon id as it appears in backup ids and store
// keys: up to 63 lowercase letters, digits and single hyphens, starting with
// a letter (e.g. my-app-3030).
func ValidateAddonID(id string) error {
	if id == "" {
		return Invalidf("addon id is missing")
	}
	if len(id) > MaxAddonIDLen || !addonIDRe.MatchString(id) {
		return Invalidf("addon id %q is malformed: use up to %d lowercase letters, digits and single hyphens, starting with a letter (e.g. my-app-3030)", id, MaxAddonIDLen)
	}
	return nil
}

// ValidateBackupID checks a backup id as passed to --backup: the addon id
// followed by -YYYYMMDD (a daily backup) or -mYYYYMMDDThhmmssZ (a manual
// one), as `backups` lists them.
func ValidateBackupID(id string) error {
	if id == "" {
		return Invalidf("backup id is missing: pass --backup ID (see `backups --app APP`)")
	}
	m := backupIDRe.FindStringSubmatch(id)
	if m == nil || len(m[1]) > MaxAddonIDLen {
		return Invalidf("backup id %q is malformed: expected <addon id>-YYYYMMDD or <addon id>-mYYYYMMDDThhmmssZ as `backups --app APP` lists them (e.g. my-app-3030-20261207)", id)
	}
	return nil
}
